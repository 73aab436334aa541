"""The 3DIEBench scene (docs/scene.md) and its per-view latents.

Nothing here imports pytorch3d: the constants and the latent sampler are shared with the
dataset and probe code.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

LATENT_NAMES_3DIEBENCH = ["rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue"]
VARIANTS = {
    "3diebench": LATENT_NAMES_3DIEBENCH,
    "3diebench-t": LATENT_NAMES_3DIEBENCH + ["trans_x", "trans_y", "trans_z"],
}
ROTATION_AXES = "xyz"
# Camera presets (SceneSpec fields). 3diebench: the SIE generator's camera. closeup: same position and
# direction, field of view narrowed to the angle the objects' bounding sphere (radius 0.5: bbox diagonal 1)
# subtends, 2 asin(0.5 / 2.5), so the object fills the frame at every rotation and is never cut.
CAMERA_PRESETS = {
    "3diebench": {"camera_radius": 2.5, "fov_degrees": 39.5978},
    "closeup": {"camera_radius": 2.5, "fov_degrees": 23.0739},
}


@dataclass(frozen=True)
class SceneSpec:
    """Scene constants; defaults reproduce the SIE paper's BlenderProc generator."""

    floor_z: float = -1.0
    floor_half_size: float = 12.0          # "huge plane": covers the whole field of view
    floor_saturation: float = 0.6
    floor_value: float = 0.6
    sun_energy: float = 1.5                # W/m^2, pointing straight down
    ambient: float = 0.05                  # Blender's default grey world
    spot_radius: float = 4.0
    spot_theta_max: float = math.pi / 4
    spot_size: float = math.pi / 8         # full cone angle (Blender spot_size)
    spot_blend: float = 0.15               # Blender's default soft edge
    spot_energy: float = 500.0             # W, radiant intensity P / (4 pi) per sr
    spot_saturation: float = 1.0
    spot_value: float = 0.8
    camera_radius: float = 2.5
    camera_theta: float = math.pi / 4
    camera_phi: float = math.pi / 2
    fov_degrees: float = 39.5978           # 50 mm lens on a 36 mm sensor
    rotation_range: float = math.pi / 2    # radians: Euler angles ~ U[-range, range]
    rotation_axes: str = ROTATION_AXES     # axes whose angle is sampled; the others are exactly 0
    translation_range: float = 0.5         # 3DIEBench-T: t ~ U[-range, range]^3
    exposure: float = 1.0

    def __post_init__(self) -> None:
        axes = self.rotation_axes
        if not axes or any(a not in ROTATION_AXES for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"rotation_axes must be distinct letters of {ROTATION_AXES!r} (e.g. 'z', 'xz'), "
                             f"got {axes!r}")
        if not 0 < self.rotation_range <= math.pi:
            raise ValueError(f"rotation_range must be in (0, pi] radians, got {self.rotation_range}")
        if self.camera_radius <= 0 or not 0 < self.fov_degrees < 180:
            raise ValueError(f"camera distance must be > 0 and fov in (0, 180) degrees, got "
                             f"{self.camera_radius}, {self.fov_degrees}")

    def camera_position(self) -> tuple[float, float, float]:
        r, th, ph = self.camera_radius, self.camera_theta, self.camera_phi
        return (r * math.sin(th) * math.cos(ph), r * math.sin(th) * math.sin(ph), r * math.cos(th))

    def to_dict(self) -> dict:
        return asdict(self)


#: default shadow map side = max(SHADOW_MAP_MIN, SHADOW_MAP_FRACTION x S), at most S (S = image_size x supersample):
#: its shadow mask agrees with a map twice as fine on >= 99.5 % of floor pixels at 64-256 px (measured by
#: tools/measure_shadow_map.py, BENCHMARKS.md). The light's frustum is fitted to the object's bounding sphere.
SHADOW_MAP_FRACTION = 0.25
SHADOW_MAP_MIN = 32


@dataclass(frozen=True)
class RenderSettings:
    """Image-formation settings that are not scene facts."""

    image_size: int = 128
    supersample: int = 1                   # render at k x size, box-filter down (anti-aliasing)
    shadow_map_size: int | None = None     # default: see SHADOW_MAP_FRACTION (measured)
    shadow_bias: float = 0.02              # depth units (scene units) to avoid self-shadow acne
    shadow_pcf: int = 1                    # (2k+1)^2 percentage-closer-filter taps
    scene: SceneSpec = field(default_factory=SceneSpec)

    def __post_init__(self) -> None:
        if self.shadow_map_size is None:
            rendered = self.image_size * self.supersample
            side = max(SHADOW_MAP_MIN, math.ceil(SHADOW_MAP_FRACTION * rendered))
            object.__setattr__(self, "shadow_map_size", min(rendered, side))
        for name in ("image_size", "supersample", "shadow_map_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size < 8 or self.image_size > 4096:
            raise ValueError(f"image_size must be in [8, 4096], got {self.image_size}")


def object_seed(seed: int, object_id: str) -> np.random.SeedSequence:
    """Seed of one object's latents: independent of sharding, batch order and resume."""
    return np.random.SeedSequence([int(seed), zlib.crc32(object_id.encode("utf-8"))])


def sample_latents(seed: int, object_id: str, views: int, variant: str = "3diebench",
                   spec: SceneSpec = SceneSpec()) -> np.ndarray:
    """Latents of all views of one object -> float64 (views, D), D = 7 or 10 (docs/scene.md layout)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    rng = np.random.default_rng(object_seed(seed, object_id))
    r = spec.rotation_range
    # every axis is drawn (same stream for any choice of axes), the non-chosen ones are then zeroed
    chosen = np.array([a in spec.rotation_axes for a in ROTATION_AXES])
    cols = [
        np.where(chosen, rng.uniform(-r, r, (views, 3)), 0.0),
        rng.uniform(0.0, 1.0, (views, 1)),
        rng.uniform(0.0, spec.spot_theta_max, (views, 1)),
        rng.uniform(0.0, 2 * math.pi, (views, 1)),
        rng.uniform(0.0, 1.0, (views, 1)),
    ]
    if variant == "3diebench-t":
        t = spec.translation_range
        cols.append(rng.uniform(-t, t, (views, 3)))
    return np.concatenate(cols, axis=1)
