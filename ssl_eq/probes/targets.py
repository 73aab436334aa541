"""Probe targets computed from object-major latents (K, V, D) and (N, 1 + arity) index rows.

Relative transforms come from `ssl_eq.datasets.relative` (the one place they are computed, in the named
quaternion-sign / colour-target conventions): rotation R_a⁻¹R_b, hue differences, 3DIEBench-T translation in the
object frame (t_b − t_a) and the base frame (R_b t_b − R_a t_a, as in EquiCaps).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssl_eq.datasets.relative import DEFAULT_COLOUR_TARGETS, DEFAULT_QUATERNION_SIGN, relative_transform
from ssl_eq.geometry import euler_xyz_to_matrix, euler_xyz_to_quaternion, matrix_to_quaternion

ROTATION = ("rot_x", "rot_y", "rot_z")
TRANSLATION = ("trans_x", "trans_y", "trans_z")
HUES = ("floor_hue", "spot_hue")
REL_LATENT_HUES = (0, 3)  # Δfloor_hue, Δspot_hue in rel_latents [Δfloor_hue, Δspot_θ, Δspot_φ, Δspot_hue]


class MissingLatents(LookupError):
    """The dataset's latent schema lacks what a probe needs."""


def columns(schema: list[str], names: tuple[str, ...], why: str) -> list[int]:
    """Indices of `names` in the latent schema; MissingLatents naming what is absent and why it is needed."""
    missing = [n for n in names if n not in schema]
    if missing:
        raise MissingLatents(f"{why} needs latents {missing}, the dataset's latent schema is {schema}")
    return [schema.index(n) for n in names]


def absolute_rotation(latents: Tensor, schema: list[str], quaternion_sign: str = DEFAULT_QUATERNION_SIGN) -> Tensor:
    """(..., D) latents -> (..., 4) wxyz quaternion of each view's object rotation ("canonical": w >= 0;
    "scipy": scipy's `from_euler("xyz")` sign)."""
    angles = latents[..., columns(schema, ROTATION, "rotation")].float()
    if quaternion_sign == "scipy":
        return euler_xyz_to_quaternion(angles)
    return matrix_to_quaternion(euler_xyz_to_matrix(angles))


def pair_actions(latents: Tensor, rows: Tensor, schema: list[str], quaternion_sign: str = DEFAULT_QUATERNION_SIGN,
                 colour_targets: str = DEFAULT_COLOUR_TARGETS) -> dict[str, Tensor]:
    """Relative transforms (`ssl_eq.datasets.relative.relative_transform`, PairDataset key names) of (P, 3)
    rows (object, view_a, view_b) over (K, V, D) latents: rel_rotation_quat (P, 4), ..., rel_translation_* (P, 3)
    for 3DIEBench-T."""
    columns(schema, ROTATION, "relative rotation")
    return relative_transform(latents[rows[:, 0], rows[:, 1]], latents[rows[:, 0], rows[:, 2]], quaternion_sign,
                              colour_targets)


def hue_differences(latents: Tensor, rows: Tensor, schema: list[str],
                    colour_targets: str = DEFAULT_COLOUR_TARGETS) -> Tensor:
    """(P, 2) (Δ floor hue, Δ spot hue) of each pair row, wrapped or raw (SIE's colour probe: raw)."""
    columns(schema, HUES, "colour prediction")
    return pair_actions(latents, rows, schema, colour_targets=colour_targets)["rel_latents"][:, list(REL_LATENT_HUES)]


def rotation_angle_deg(quat: Tensor) -> Tensor:
    """(..., 4) wxyz quaternions (any norm) -> (...) rotation angle in degrees, in [0, 180]."""
    q = quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.rad2deg(2 * torch.acos(q[..., 0].abs().clamp(max=1.0)))
