"""Rotation, quaternion and colour conventions shared by the whole toolkit.

Quaternions are (w, x, y, z) inside ssl_eq, with the sign made canonical (w >= 0)
unless a convention says otherwise (`ssl_eq.datasets.relative`: "scipy" keeps the
sign scipy's quaternion algebra gives); `quat_wxyz_to_xyzw` / `quat_xyzw_to_wxyz`
convert at the 3DIEBench / scipy boundary. Euler angles are extrinsic x-then-y-then-z
(Blender ``XYZ`` mode, scipy ``from_euler("xyz", a)``): R = Rz(a_z) Ry(a_y) Rx(a_x).
All functions are batched over leading dimensions and differentiable.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def euler_xyz_to_matrix(angles: Tensor) -> Tensor:
    """(..., 3) extrinsic-xyz Euler angles (radians) -> (..., 3, 3) rotation matrices."""
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    rows = [
        cy * cz, sx * sy * cz - cx * sz, cx * sy * cz + sx * sz,
        cy * sz, sx * sy * sz + cx * cz, cx * sy * sz - sx * cz,
        -sy, sx * cy, cx * cy,
    ]
    return torch.stack(rows, -1).reshape(angles.shape[:-1] + (3, 3))


def matrix_to_euler_xyz(matrix: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) extrinsic-xyz Euler angles, a_y in [-pi/2, pi/2]."""
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
    """(..., 3, 3) rotation matrices -> (..., 4) canonical wxyz quaternions (numerically stable branch choice)."""
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # four candidate solutions (|w|, |x|, |y|, |z| largest); pick the best-conditioned one
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    r = torch.sqrt(sq.clamp_min(1e-12))
    cands = torch.stack([
        torch.stack([r[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], r[..., 1] ** 2, m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], r[..., 2] ** 2, m[..., 2, 1] + m[..., 1, 2]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], r[..., 3] ** 2], -1),
    ], -2) / (2 * r[..., None])
    best = sq.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    return canonical_quaternion(q)


def euler_xyz_to_quaternion(angles: Tensor) -> Tensor:
    """(..., 3) extrinsic-xyz Euler angles -> (..., 4) wxyz q_z ⊗ q_y ⊗ q_x, q_a = (cos a/2, sin a/2 · axis).

    The sign is not canonicalised: it is the one scipy's ``Rotation.from_euler("xyz", a)`` stores.
    """
    c, s = torch.cos(angles / 2).unbind(-1), torch.sin(angles / 2).unbind(-1)
    zero = torch.zeros_like(c[0])
    qx = torch.stack([c[0], s[0], zero, zero], -1)
    qy = torch.stack([c[1], zero, s[1], zero], -1)
    qz = torch.stack([c[2], zero, zero, s[2]], -1)
    return quaternion_multiply(qz, quaternion_multiply(qy, qx))


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product p ⊗ q of (..., 4) wxyz quaternions (the rotation q first, then p) -> (..., 4)."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack([pw * qw - px * qx - py * qy - pz * qz, pw * qx + px * qw + py * qz - pz * qy,
                        pw * qy - px * qz + py * qw + pz * qx, pw * qz + px * qy - py * qx + pz * qw], -1)


def quaternion_conjugate(q: Tensor) -> Tensor:
    """(..., 4) wxyz -> (w, −x, −y, −z): the inverse rotation of a unit quaternion, same w."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """(..., 4) wxyz quaternions (any norm) -> (..., 3, 3) rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


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
    """Hue h in [0, 1] (any shape), saturation, value -> (..., 3) RGB in [0, 1] (same formula as colorsys)."""
    h = torch.as_tensor(h, dtype=torch.float32) if not torch.is_tensor(h) else h
    s = torch.as_tensor(s, dtype=h.dtype, device=h.device).expand_as(h)
    v = torch.as_tensor(v, dtype=h.dtype, device=h.device).expand_as(h)
    k = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)
    t = torch.remainder(k + h[..., None] * 6.0, 6.0)
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(t, 4.0 - t), 0.0, 1.0)


def spherical_to_cartesian(r: Tensor | float, theta: Tensor, phi: Tensor) -> Tensor:
    """Spherical (radius, polar angle from +z, azimuth from +x) -> (..., 3) cartesian, z up."""
    st = torch.sin(theta)
    return torch.stack([r * st * torch.cos(phi), r * st * torch.sin(phi), r * torch.cos(theta)], -1)
