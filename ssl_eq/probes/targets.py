"""Fixed evaluation pairs and the probe targets computed from object-major latents (K, V, D).

Relative transforms come from `ssl_eq.datasets.relative` (the one place they are computed): rotation
R_a⁻¹R_b (canonical wxyz), hue differences wrapped, 3DIEBench-T translation in the object frame (t_b − t_a)
and the base frame (R_b t_b − R_a t_a, as in EquiCaps).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssl_eq.datasets.relative import relative_transform
from ssl_eq.geometry import euler_xyz_to_matrix, matrix_to_quaternion

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


def fixed_pairs(num_objects: int, views: int, pairs_per_object: int, seed: int) -> Tensor:
    """Deterministic (P, 3) int64 rows (object, view_a, view_b), view_a ≠ view_b, P = K · pairs_per_object."""
    if views < 2:
        raise ValueError(f"pairs need at least 2 views per object, the dataset has {views}")
    gen = torch.Generator().manual_seed(seed)
    obj = torch.arange(num_objects).repeat_interleave(pairs_per_object)
    a = torch.randint(views, (len(obj),), generator=gen)
    b = (a + torch.randint(1, views, (len(obj),), generator=gen)) % views
    return torch.stack([obj, a, b], 1)


def absolute_rotation(latents: Tensor, schema: list[str]) -> Tensor:
    """(..., D) latents -> (..., 4) canonical wxyz quaternion of each view's object rotation."""
    return matrix_to_quaternion(euler_xyz_to_matrix(latents[..., columns(schema, ROTATION, "rotation")]))


def pair_actions(latents: Tensor, pairs: Tensor, schema: list[str]) -> dict[str, Tensor]:
    """Relative transforms (`ssl_eq.datasets.relative.relative_transform`, PairDataset key names) of (P, 3)
    pairs over (K, V, D) latents: rel_rotation_quat (P, 4), ..., rel_translation_* (P, 3) for 3DIEBench-T."""
    columns(schema, ROTATION, "relative rotation")
    return relative_transform(latents[pairs[:, 0], pairs[:, 1]], latents[pairs[:, 0], pairs[:, 2]])


def hue_differences(latents: Tensor, pairs: Tensor, schema: list[str]) -> Tensor:
    """(P, 2) wrapped (Δ floor hue, Δ spot hue) of each pair, as in SIE's colour probe."""
    columns(schema, HUES, "colour prediction")
    return pair_actions(latents, pairs, schema)["rel_latents"][:, list(REL_LATENT_HUES)]


def rotation_angle_deg(quat: Tensor) -> Tensor:
    """(..., 4) wxyz quaternions (any norm) -> (...) rotation angle in degrees, in [0, 180]."""
    q = quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.rad2deg(2 * torch.acos(q[..., 0].abs().clamp(max=1.0)))
