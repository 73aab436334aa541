"""Relative transformations between views (view 1 -> view 2): the one place they are computed.

All functions take latents (..., D) in the 3DIEBench layout (docs/scene.md) and are batched torch ops.
Rotation: R_rel = R1^-1 R2 (the reference loader's convention), as a matrix, a wxyz quaternion and
extrinsic-xyz Euler angles. Other latents: differences of floor hue, spot θ, spot φ and spot hue, φ
differences wrapped to [-π, π). 3DIEBench-T: the object matrix is R·T(t), so the centre sits at R·t;
"object frame" difference t2 - t1, "base frame" R2 t2 - R1 t1.

Two conventions are named options (`data.quaternion_sign`, `data.colour_targets`, and the probes' own):
- quaternion sign: "canonical" (w >= 0) or "scipy", the sign of scipy's `(R1.inv() * R2).as_quat()` as the SIE /
  EquiCaps / seq-JEPA loaders use it. scipy composes the stored quaternions (it does not convert the composed
  matrix): conj(q1) ⊗ q2 with q = q_z ⊗ q_y ⊗ q_x from `from_euler("xyz")`, so ~4.4 % of 3DIEBench pairs
  have w < 0.
- colour targets: hue differences "wrapped" to [-0.5, 0.5) or "raw" in (-1, 1) (the SIE colour probe).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ssl_eq.geometry import (euler_xyz_to_matrix, euler_xyz_to_quaternion, matrix_to_euler_xyz, matrix_to_quaternion,
                             quaternion_conjugate, quaternion_multiply, relative_rotation, wrap_angle, wrap_unit)

ROT = slice(0, 3)
TRANS = slice(7, 10)
TRANSLATION_DIM = 10  # latent length of 3DIEBench-T
HUE_COLUMNS = (3, 6)  # floor_hue, spot_hue


def _identity(d: Tensor) -> Tensor:
    return d


# sign convention -> (latents 1 (..., D), latents 2 (..., D), R1^-1 R2 (..., 3, 3)) -> (..., 4) wxyz
QUATERNION_SIGNS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "canonical": lambda lat1, lat2, rel: matrix_to_quaternion(rel),
    "scipy": lambda lat1, lat2, rel: quaternion_multiply(quaternion_conjugate(euler_xyz_to_quaternion(lat1[..., ROT])),
                                                         euler_xyz_to_quaternion(lat2[..., ROT])),
}
# colour-target convention -> what is applied to hue differences
COLOUR_TARGETS: dict[str, Callable[[Tensor], Tensor]] = {"wrapped": wrap_unit, "raw": _identity}
DEFAULT_QUATERNION_SIGN = "canonical"
DEFAULT_COLOUR_TARGETS = "wrapped"


def check_conventions(quaternion_sign: str, colour_targets: str, where: str = "data") -> None:
    """ValueError naming `where.quaternion_sign` / `where.colour_targets` when a value is not a known convention."""
    for option, value, known in (("quaternion_sign", quaternion_sign, QUATERNION_SIGNS),
                                 ("colour_targets", colour_targets, COLOUR_TARGETS)):
        if value not in known:
            raise ValueError(f"{where}.{option}: expected one of {sorted(known)}, got {value!r}")


def relative_quaternion(lat1: Tensor, lat2: Tensor, quaternion_sign: str = DEFAULT_QUATERNION_SIGN) -> Tensor:
    """(..., D) x2 latents -> (..., 4) wxyz quaternion of R1^-1 R2 in the named sign convention."""
    check_conventions(quaternion_sign, DEFAULT_COLOUR_TARGETS)
    lat1, lat2 = lat1.float(), lat2.float()
    rel = relative_rotation(euler_xyz_to_matrix(lat1[..., ROT]), euler_xyz_to_matrix(lat2[..., ROT]))
    return QUATERNION_SIGNS[quaternion_sign](lat1, lat2, rel)


def relative_latents(lat1: Tensor, lat2: Tensor, colour_targets: str = DEFAULT_COLOUR_TARGETS) -> Tensor:
    """(..., D) x2 -> (..., 4) [Δfloor_hue, Δspot_theta, Δspot_phi, Δspot_hue]; hues per `colour_targets`,
    φ wrapped."""
    hue = COLOUR_TARGETS[colour_targets]
    wraps = ((HUE_COLUMNS[0], hue), (4, _identity), (5, wrap_angle), (HUE_COLUMNS[1], hue))
    return torch.stack([wrap(lat2[..., c] - lat1[..., c]) for c, wrap in wraps], -1)


def relative_transform(lat1: Tensor, lat2: Tensor, quaternion_sign: str = DEFAULT_QUATERNION_SIGN,
                       colour_targets: str = DEFAULT_COLOUR_TARGETS) -> dict[str, Tensor]:
    """(..., D) x2 latents -> the batch keys of docs/architecture.md describing view 1 -> view 2.

    rel_rotation_matrix (..., 3, 3), rel_rotation_quat (..., 4) wxyz (sign per `quaternion_sign`),
    rel_rotation_euler (..., 3), rel_latents (..., 4) (hues per `colour_targets`); for D = 10 (3DIEBench-T) also
    rel_translation_object / rel_translation_base (..., 3) and EquiCaps' 4×4 matrices rel_matrix_object /
    rel_matrix_base (..., 4, 4) (`relative_pose_matrices`).
    """
    check_conventions(quaternion_sign, colour_targets)
    lat1, lat2 = lat1.float(), lat2.float()
    r1, r2 = euler_xyz_to_matrix(lat1[..., ROT]), euler_xyz_to_matrix(lat2[..., ROT])
    rel = relative_rotation(r1, r2)
    out = {
        "rel_rotation_quat": QUATERNION_SIGNS[quaternion_sign](lat1, lat2, rel),
        "rel_rotation_matrix": rel,
        "rel_rotation_euler": matrix_to_euler_xyz(rel),
        "rel_latents": relative_latents(lat1, lat2, colour_targets),
    }
    if lat1.shape[-1] == TRANSLATION_DIM:
        t1, t2 = lat1[..., TRANS], lat2[..., TRANS]
        out["rel_translation_object"] = t2 - t1
        out["rel_translation_base"] = (r2 @ t2[..., None] - r1 @ t1[..., None])[..., 0]
        out.update(relative_pose_matrices(r1, r2, t1, t2))
    return out


def rigid_matrix(rot: Tensor, trans: Tensor) -> Tensor:
    """(..., 3, 3), (..., 3) -> (..., 4, 4) homogeneous [[R, t], [0, 1]]."""
    top = torch.cat([rot, trans[..., None]], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def rigid_inverse(mat: Tensor) -> Tensor:
    """(..., 4, 4) rigid [[R, t], [0, 1]] -> [[Rᵀ, −Rᵀt], [0, 1]]."""
    rot_t = mat[..., :3, :3].transpose(-1, -2)
    return rigid_matrix(rot_t, -(rot_t @ mat[..., :3, 3:])[..., 0])


def relative_pose_matrices(r1: Tensor, r2: Tensor, t1: Tensor, t2: Tensor) -> dict[str, Tensor]:
    """EquiCaps' 4×4 relative transformations M₁⁻¹M₂ (docs/reference/equicaps.md §3), each (..., 4, 4).

    rel_matrix_object: M_k = [R_k | t_k] -> [[R₁ᵀR₂, R₁ᵀ(t₂ − t₁)], [0, 1]];
    rel_matrix_base:   M_k = [R_k | R_k t_k] (the rendered pose R·T(t)) -> [[R₁ᵀR₂, R₁ᵀR₂t₂ − t₁], [0, 1]]
    r* (..., 3, 3) absolute rotations, t* (..., 3) translation latents.
    """
    frames = {"object": (t1, t2), "base": ((r1 @ t1[..., None])[..., 0], (r2 @ t2[..., None])[..., 0])}
    return {f"rel_matrix_{name}": rigid_inverse(rigid_matrix(r1, a)) @ rigid_matrix(r2, b)
            for name, (a, b) in frames.items()}


def sequence_actions(latents: Tensor, quaternion_sign: str = DEFAULT_QUATERNION_SIGN,
                     colour_targets: str = DEFAULT_COLOUR_TARGETS) -> dict[str, Tensor]:
    """(..., M, D) latents of a sequence -> actions between consecutive views, each (..., M-1, ...)."""
    return relative_transform(latents[..., :-1, :], latents[..., 1:, :], quaternion_sign, colour_targets)
