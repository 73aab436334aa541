"""Rotation, quaternion and colour conventions shared by the whole toolkit.

Quaternions are (w, x, y, z) inside ssl_eq, with the sign made canonical (w >= 0)
unless a convention says otherwise (`ssl_eq.datasets.relative`: "scipy" keeps the
sign scipy's quaternion algebra gives); `quat_wxyz_to_xyzw` / `quat_xyzw_to_wxyz`
convert at the 3DIEBench / scipy boundary. Euler angles are extrinsic x-then-y-then-z
(Blender ``XYZ`` mode, scipy ``from_euler("xyz", a)``): R = Rz(a_z) Ry(a_y) Rx(a_x).
All functions are batched over leading dimensions and differentiable. The conversions and products are
kornia's (`kornia.geometry.conversions`, `kornia.geometry.quaternion`, `kornia.color`), checked against scipy /
colorsys in tests/test_library_equivalence.py.
"""
from __future__ import annotations

import math

import kornia.color
import torch
from kornia.geometry.conversions import (quaternion_from_euler, quaternion_to_rotation_matrix,
                                         rotation_matrix_to_quaternion)
from kornia.geometry.quaternion import Quaternion
from torch import Tensor


def euler_xyz_to_matrix(angles: Tensor) -> Tensor:
    """(..., 3) extrinsic-xyz Euler angles (radians) -> (..., 3, 3) rotation matrices.

    Through kornia's quaternion in float64: in float32 that path is 3x less exact (4.7e-7) than the closed form."""
    return quaternion_to_rotation_matrix(euler_xyz_to_quaternion(angles.double())).to(angles.dtype)


def matrix_to_euler_xyz(matrix: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) extrinsic-xyz Euler angles, a_y in [-pi/2, pi/2].

    Hand-written: at gimbal lock scipy's as_euler("xyz") sets a_z = 0 (as here); kornia's euler_from_quaternion
    sets a_x = 0 instead."""
    sy = (-matrix[..., 2, 0]).clamp(-1.0, 1.0)
    a_y = torch.asin(sy)
    a_x = torch.atan2(matrix[..., 2, 1], matrix[..., 2, 2])
    a_z = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])
    # gimbal lock (|cos a_y| ~ 0): put all of the in-plane angle into a_x
    lock = (1.0 - sy.abs()) < 1e-6
    if lock.any():
        alt_x = torch.atan2(-matrix[..., 1, 2], matrix[..., 1, 1])
        a_x = torch.where(lock, alt_x, a_x)
        a_z = torch.where(lock, torch.zeros_like(a_z), a_z)
    return torch.stack([a_x, a_y, a_z], -1)


def canonical_quaternion(q: Tensor) -> Tensor:
    """(..., 4) wxyz quaternions -> unit quaternions with w >= 0."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) canonical wxyz quaternions."""
    return canonical_quaternion(rotation_matrix_to_quaternion(matrix))


def euler_xyz_to_quaternion(angles: Tensor) -> Tensor:
    """(..., 3) extrinsic-xyz Euler angles -> (..., 4) wxyz q_z ⊗ q_y ⊗ q_x, q_a = (cos a/2, sin a/2 · axis).

    The sign is not canonicalised: it is the one scipy's ``Rotation.from_euler("xyz", a)`` stores.
    """
    return torch.stack(quaternion_from_euler(*angles.unbind(-1)), -1)


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product p ⊗ q of (..., 4) wxyz quaternions (the rotation q first, then p) -> (..., 4)."""
    return (Quaternion(p) * Quaternion(q)).data


def quaternion_conjugate(q: Tensor) -> Tensor:
    """(..., 4) wxyz -> (w, −x, −y, −z): the inverse rotation of a unit quaternion, same w."""
    return Quaternion(q).conj().data


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """(..., 4) wxyz quaternions (any norm: kornia normalises) -> (..., 3, 3) rotation matrices."""
    return quaternion_to_rotation_matrix(q)


def quat_wxyz_to_xyzw(q: Tensor) -> Tensor:
    """(..., 4) wxyz -> (..., 4) xyzw (scipy / 3DIEBench order)."""
    return torch.cat([q[..., 1:], q[..., :1]], -1)


def quat_xyzw_to_wxyz(q: Tensor) -> Tensor:
    """(..., 4) xyzw (scipy / 3DIEBench order) -> (..., 4) wxyz."""
    return torch.cat([q[..., 3:], q[..., :3]], -1)


def relative_rotation(r1: Tensor, r2: Tensor) -> Tensor:
    """(..., 3, 3) x2 -> R1^-1 R2, the rotation taking view 1's pose to view 2's (3DIEBench convention)."""
    return r1.transpose(-1, -2) @ r2


def geodesic_angle(r1: Tensor, r2: Tensor) -> Tensor:
    """(..., 3, 3) x2 -> (...) angle in radians of R1^T R2."""
    cos = ((relative_rotation(r1, r2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return torch.acos(cos)


def wrap_angle(d: Tensor) -> Tensor:
    """Angle differences (radians) wrapped to [-pi, pi)."""
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


def wrap_unit(d: Tensor) -> Tensor:
    """Hue differences (hue in [0, 1)) wrapped to [-0.5, 0.5)."""
    return torch.remainder(d + 0.5, 1.0) - 0.5


def hsv_to_rgb(h: Tensor, s: Tensor | float, v: Tensor | float) -> Tensor:
    """Hue h in [0, 1] (any shape), saturation, value -> (..., 3) RGB in [0, 1] (same values as colorsys)."""
    h = torch.as_tensor(h, dtype=torch.float32) if not torch.is_tensor(h) else h
    s = torch.as_tensor(s, dtype=h.dtype, device=h.device).expand_as(h)
    v = torch.as_tensor(v, dtype=h.dtype, device=h.device).expand_as(h)
    hsv = torch.stack([h * (2 * math.pi), s, v], -1).reshape(-1, 3, 1, 1)  # kornia: (N, 3, H, W), hue in radians
    return kornia.color.hsv_to_rgb(hsv).reshape(h.shape + (3,))


def spherical_to_cartesian(r: Tensor | float, theta: Tensor, phi: Tensor) -> Tensor:
    """Spherical (radius, polar angle from +z, azimuth from +x) -> (..., 3) cartesian, z up."""
    st = torch.sin(theta)
    return torch.stack([r * st * torch.cos(phi), r * st * torch.sin(phi), r * torch.cos(theta)], -1)
