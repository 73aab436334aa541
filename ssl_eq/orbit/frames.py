"""Objects, view-0 latents and rendered frames of orbits, through the renderer's public API.

A run's dataset manifest names its object source, seed, views, variant and render settings; the objects are
rebuilt from that source and each object's view-0 latents are re-derived exactly as `ssl-eq render` does
(`sample_latents(seed, object_id, views, variant)[0]`), so the reference frame of an orbit equals the dataset's
view 0 pixel for pixel. `--source` renders other objects of another source in the same scene instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_eq.renderers.scene import RenderSettings, SceneSpec, sample_latents
from ssl_eq.renderers.sources import SOURCES, MeshLoadError, ObjectRef, ObjectSource, make_source, select_objects


@dataclass
class OrbitObjects:
    """The objects an orbit analysis renders: refs (N), view-0 latents (N, D) float64, scene and settings."""

    source: ObjectSource
    refs: list[ObjectRef]
    view0: np.ndarray
    settings: RenderSettings
    latent_schema: list[str]
    describe: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Identity of the rendered frames (runs sharing it share the renders)."""
        return repr((self.describe, [r.object_id for r in self.refs], self.view0.tobytes(), self.settings))


def render_settings(manifest: dict[str, Any]) -> RenderSettings:
    """The RenderSettings a native dataset was rendered with (manifest `render_settings`, else its size)."""
    rs = manifest.get("render_settings")
    if rs is None:
        cfg = manifest.get("config", {})
        return RenderSettings(image_size=int(manifest["image_size"]), supersample=int(cfg.get("supersample", 1)))
    return RenderSettings(**{k: v for k, v in rs.items() if k != "scene"}, scene=SceneSpec(**rs["scene"]))


def select_orbit_objects(manifest: dict[str, Any], dataset: Path, num_objects: int, source: str | None = None,
                         source_root: str | None = None) -> OrbitObjects:
    """`num_objects` class-balanced val objects of the dataset (or objects of `source` when given) with their
    view-0 latents. Raises ValueError / FileNotFoundError naming what is missing and what to do."""
    cfg = manifest.get("config", {})
    variant = manifest["variant"]
    if not all(k in cfg for k in ("seed", "views")):
        raise ValueError(f"{dataset}: its manifest config has no render seed / views (dataset not made by "
                         "`ssl-eq render`), so view-0 latents cannot be re-derived")
    if source is None:
        name = cfg.get("source")
        if name not in SOURCES:
            raise ValueError(f"{dataset}: its objects come from source {manifest['source'].get('name')!r}, which "
                             f"the renderer cannot re-render; pass --source {{{','.join(sorted(SOURCES))}}} "
                             "(and --source-root) to render other objects in the same scene")
        try:
            src = make_source(name, root=cfg.get("source_root"), object_list=cfg.get("object_list"),
                              up_axis=cfg.get("up_axis"),
                              num_objects=cfg.get("objects") if name == "procedural" else None, seed=cfg["seed"])
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            raise FileNotFoundError(f"{dataset}: the dataset's {name} source is not available here ({e}); pass "
                                    "--source / --source-root to render objects of a source that is") from e
        by_id = {r.object_id: r for r in src.objects()}
        val = manifest["split"]["val"]
        missing = [o for o in val if o not in by_id]
        if missing:
            raise FileNotFoundError(f"{dataset}: {len(missing)} val objects are not in its {name} source any more, "
                                    f"e.g. {missing[:3]}; pass --source / --source-root")
        if not val:
            raise ValueError(f"{dataset}: the val split is empty; pass --source to render other objects")
        refs = select_objects([by_id[o] for o in val], num_objects)
    else:
        src = make_source(source, root=source_root, seed=int(cfg["seed"]))
        refs = select_objects(src.objects(), num_objects)
    view0 = np.stack([sample_latents(int(cfg["seed"]), r.object_id, int(cfg["views"]), variant)[0] for r in refs])
    return OrbitObjects(src, refs, view0, render_settings(manifest), list(manifest["latent_schema"]),
                        src.describe())


def render_frames(objects: OrbitObjects, latents: np.ndarray, device: str = "auto",
                  batch_size: int = 128) -> tuple[torch.Tensor, list[int]]:
    """latents (N, S, D) -> (uint8 frames (K, S, H, W, 3) on the CPU, indices of the K objects whose mesh
    loaded). All frames of several objects go through one renderer call per `batch_size` frames."""
    from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer, resolve_device

    dev = resolve_device(device)
    meshes, kept = [], []
    for i, ref in enumerate(objects.refs):
        try:
            meshes.append(MeshTensors.from_mesh(objects.source.load(ref), dev))
            kept.append(i)
        except MeshLoadError as e:
            objects.notes.append(f"object {ref.object_id} skipped: {e}")
    if len(kept) < 2:
        raise ValueError(f"fewer than 2 objects could be loaded ({objects.notes}); orbit measures compare objects")
    renderer = SceneRenderer(objects.settings, dev)
    n, s = len(kept), latents.shape[1]
    flat = torch.as_tensor(latents[kept].reshape(n * s, -1))
    mesh_index = torch.arange(n).repeat_interleave(s)
    size = objects.settings.image_size
    out = torch.empty((n * s, size, size, 3), dtype=torch.uint8)
    for start in range(0, n * s, batch_size):
        sl = slice(start, start + batch_size)
        out[sl] = renderer.render(meshes, mesh_index[sl], flat[sl])["images"].cpu()
    return out.reshape(n, s, size, size, 3), kept
