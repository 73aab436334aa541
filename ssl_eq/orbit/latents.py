"""One-parameter orbits of a scene latent: which values the swept latent takes (numpy / torch only).

The orbit parameter is the offset Δ of the swept latent from the object's view 0; every other latent
stays at view 0. Frames are ordered by Δ and the reference frame (Δ = 0, the object's view 0) sits at
`reference_index`. Ranges:
- `full`: the whole circle for angles (2π) and hues (1), Δ ∈ [−P/2, P/2) in S equal steps (a closed orbit,
  also outside the training range: extrapolation). `spot_theta` runs over the great circle through the
  zenith at the view's azimuth (past θ ≈ 104° the spot is below the floor). Translations have no circle:
  `full` is twice the training span, Δ ∈ [−2r, 2r] (r = the scene's translation_range).
- `dataset`: an orbit as wide as the latent's training range (rotations 180°, spot θ 45°, translations 2r),
  centred on view 0, S steps end to end; hues and spot φ are trained on their whole circle, so this is `full`.
  Absolute values near the edge of the training range can leave it by up to half the width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RANGES = ("full", "dataset")
#: `full` span of a translation latent, in multiples of its training span
FULL_TRANSLATION_SPANS = 2


@dataclass(frozen=True)
class LatentOrbit:
    """How one latent is swept. `period`: the circle's length (None: not periodic); `unit`/`scale`: how Δ is
    displayed (degrees for angles); `train_width(scene)`: width of its training range for a SceneSpec dict."""

    name: str
    period: float | None
    unit: str
    scale: float
    train_key: str | None           # SceneSpec field giving the training range
    train_factor: float             # training width = factor * scene[train_key] (or the period when None)

    def train_width(self, scene: dict) -> float:
        return self.period if self.train_key is None else self.train_factor * float(scene[self.train_key])


_DEG = 180.0 / math.pi
LATENT_ORBITS: dict[str, LatentOrbit] = {o.name: o for o in (
    *(LatentOrbit(f"rot_{a}", 2 * math.pi, "deg", _DEG, "rotation_range", 2.0) for a in "xyz"),
    LatentOrbit("floor_hue", 1.0, "hue", 1.0, None, 1.0),
    LatentOrbit("spot_theta", 2 * math.pi, "deg", _DEG, "spot_theta_max", 1.0),
    LatentOrbit("spot_phi", 2 * math.pi, "deg", _DEG, None, 1.0),
    LatentOrbit("spot_hue", 1.0, "hue", 1.0, None, 1.0),
    *(LatentOrbit(f"trans_{a}", None, "scene units", 1.0, "translation_range", 2.0) for a in "xyz"),
)}


@dataclass(frozen=True)
class OrbitPlan:
    """The S offsets of one orbit: offsets (S,) float64 in latent units, ascending; offsets[reference_index] = 0.
    `closed`: the last frame is one step before the first (a whole circle); `polar_period`: the length that maps
    onto 2π in polar plots."""

    latent: str
    range: str
    offsets: np.ndarray
    reference_index: int
    closed: bool
    polar_period: float
    unit: str
    scale: float


def check_latent(name: str) -> LatentOrbit:
    if name not in LATENT_ORBITS:
        raise ValueError(f"--latent: unknown latent {name!r}; valid: {', '.join(LATENT_ORBITS)}")
    return LATENT_ORBITS[name]


def check_range_steps(range_: str, steps: int) -> None:
    if range_ not in RANGES:
        raise ValueError(f"--range must be one of {RANGES}, got {range_!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"--steps must be an integer >= 2 (frames along the orbit), got {steps!r}")


def plan_orbit(latent: str, range_: str, steps: int, scene: dict) -> OrbitPlan:
    """Offsets of the `steps` frames of `latent`'s orbit (see module docstring); `scene` a SceneSpec dict."""
    spec = check_latent(latent)
    check_range_steps(range_, steps)
    width = spec.train_width(scene)
    if spec.period is not None and (range_ == "full" or width >= spec.period):
        ref = steps // 2
        offsets = spec.period * (np.arange(steps) - ref) / steps
        return OrbitPlan(latent, range_, offsets, ref, True, spec.period, spec.unit, spec.scale)
    span = width if range_ == "dataset" else FULL_TRANSLATION_SPANS * width
    ref = (steps - 1) // 2
    offsets = span * (np.arange(steps) - ref) / (steps - 1)
    polar = spec.period if spec.period is not None else FULL_TRANSLATION_SPANS * span
    return OrbitPlan(latent, range_, offsets, ref, False, polar, spec.unit, spec.scale)


def orbit_latents(view0: np.ndarray, column: int, offsets: np.ndarray) -> np.ndarray:
    """view0 (N, D) float64 latents, the swept column and (S,) offsets -> (N, S, D): only `column` changes."""
    out = np.repeat(np.asarray(view0, np.float64)[:, None, :], len(offsets), axis=1)
    out[:, :, column] += offsets[None, :]
    return out


@dataclass(frozen=True)
class GridPlan:
    """A two-parameter orbit: every pair (Δ₁, Δ₂) of two one-parameter plans, row-major (the first latent varies
    slowest), S = S₁·S₂ frames; the reference frame is both plans' reference."""

    first: OrbitPlan
    second: OrbitPlan

    @property
    def latent(self) -> str:
        return f"{self.first.latent},{self.second.latent}"

    @property
    def range(self) -> str:
        return self.first.range

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.first.offsets), len(self.second.offsets)

    @property
    def reference_index(self) -> int:
        return self.first.reference_index * self.shape[1] + self.second.reference_index


def grid_latents(view0: np.ndarray, columns: tuple[int, int], plan: GridPlan) -> np.ndarray:
    """view0 (N, D) float64 latents, the two swept columns -> (N, S₁·S₂, D), row-major over (Δ₁, Δ₂)."""
    s1, s2 = plan.shape
    out = np.repeat(np.asarray(view0, np.float64)[:, None, :], s1 * s2, axis=1)
    out[:, :, columns[0]] += np.repeat(plan.first.offsets, s2)[None, :]
    out[:, :, columns[1]] += np.tile(plan.second.offsets, s1)[None, :]
    return out
