"""`ssl-eq render`: resumable, sharded generation of a native 3DIEBench-style dataset.

Objects are cut into file shards of `objects_per_shard`; job `shard_index` of `num_shards` renders
the file shards i with i % num_shards == shard_index, so any number of processes / GPUs / nodes
can share one dataset. Each file shard is written to a temporary folder and renamed when complete,
a complete shard is never rewritten, and the manifest is merged (under a file lock) once every
shard exists. Latents come from (seed, object id) alone, so results never depend on sharding,
batching or resume order.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import native
from ..utils import threads
from ..utils.lock import folder_entries, folder_lock
from ..utils.io import read_json, read_json_object, write_json_atomic
from .scene import CAMERA_PRESETS, ROTATION_AXES, VARIANTS, RenderSettings, SceneSpec, sample_latents
from .sources import MeshLoadError, ObjectRef, make_source, select_objects

log = logging.getLogger(__name__)

RENDER_CONFIG = "render_config.json"
SKIPPED_DIR = "skipped"
# options that change how, not what, is rendered: they may differ between runs of one dataset
EXECUTION_KEYS = ("out", "device", "batch_size", "num_shards", "shard_index", "overwrite", "progress")
# options added after datasets were rendered without them: left out of the identity while unset (such datasets resume)
LATER_KEYS = ("up_axis",)
# anti-aliasing when --supersample is not given: (largest image size, factor), first match; above: 1.
# Thin parts are sub-pixel strokes at small sizes; see BENCHMARKS.md for the rendering cost.
AUTO_SUPERSAMPLE = ((64, 2),)


@dataclass
class RenderConfig:
    out: str
    source: str = "procedural"
    source_root: str | None = None
    object_list: str | None = None
    up_axis: str | None = None             # mesh files' up axis (y | z); None: the source's default
    objects: int | None = 200
    views: int = 50
    size: int = 128
    supersample: int | None = None         # None: AUTO_SUPERSAMPLE by image size
    variant: str = "3diebench"
    camera: str = "3diebench"              # CAMERA_PRESETS name
    camera_distance: float | None = None   # overrides the preset's distance (scene units)
    fov: float | None = None               # overrides the preset's field of view (degrees)
    rotation_axes: str = ROTATION_AXES     # Euler axes that are sampled; the others are exactly 0
    rotation_range: float = 90.0           # degrees: each sampled Euler angle ~ U[-range, range]
    encoding: str = "raw"
    jpeg_quality: int = 95
    seed: int = 0
    val_fraction: float = 0.2
    split_file: str | None = None
    objects_per_shard: int = 64
    device: str = "auto"
    batch_size: int = 64
    num_shards: int = 1
    shard_index: int | None = None
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.supersample is None:
            self.supersample = next((k for size, k in AUTO_SUPERSAMPLE if self.size <= size), 1)
        if self.camera not in CAMERA_PRESETS:
            raise ValueError(f"--camera must be one of {sorted(CAMERA_PRESETS)}, got {self.camera!r}")
        for name in ("camera_distance", "fov", "rotation_range", "val_fraction"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        if not 0 < self.rotation_range <= 180:
            raise ValueError(f"--rotation-range is in degrees and must be in (0, 180], got {self.rotation_range}")
        try:
            self.scene()
        except ValueError as e:
            raise ValueError(f"render options --camera-distance / --fov / --rotation-axes: {e}") from None
        if self.variant not in VARIANTS:
            raise ValueError(f"--variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        if self.encoding not in native.ENCODINGS:
            raise ValueError(f"--encoding must be one of {list(native.ENCODINGS)}, got {self.encoding!r}")
        if self.objects is not None and (isinstance(self.objects, bool) or not isinstance(self.objects, int)
                                         or self.objects < 1):
            raise ValueError(f"--objects must be an integer >= 1 for every source (a number above the source's "
                             f"object count renders them all), got {self.objects!r}")
        for name in ("views", "size", "batch_size", "objects_per_shard", "num_shards", "supersample"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 8 <= self.size <= 4096:
            raise ValueError(f"--size must be in [8, 4096] pixels, got {self.size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index must be in [0, {self.num_shards}), got {self.shard_index}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality must be in [1, 100], got {self.jpeg_quality}")

    def scene(self) -> SceneSpec:
        """The scene these options describe: the 3DIEBench one with camera and rotation group replaced."""
        cam = dict(CAMERA_PRESETS[self.camera])
        if self.camera_distance is not None:
            cam["camera_radius"] = float(self.camera_distance)
        if self.fov is not None:
            cam["fov_degrees"] = float(self.fov)
        return SceneSpec(**cam, rotation_axes=self.rotation_axes, rotation_range=math.radians(self.rotation_range))

    def settings(self) -> RenderSettings:
        return RenderSettings(image_size=self.size, supersample=self.supersample, scene=self.scene())

    def identity(self) -> dict:
        """What defines the dataset's content (compared against an existing output folder)."""
        return {k: v for k, v in asdict(self).items()
                if k not in EXECUTION_KEYS and not (k in LATER_KEYS and v is None)}


def resolve_shard_index(cfg: RenderConfig) -> None:
    """Take the shard index from SLURM's array task id when --shard-index is not given."""
    if cfg.shard_index is None:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task is not None and cfg.num_shards > 1:
            cfg.shard_index = int(task) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            cfg.validate()


def _prepare_output(cfg: RenderConfig) -> Path:
    """Check --out against this config and write its render_config.json; parallel shard jobs (a SLURM array, the
    demo's workers) starting together take turns here (a lock on the folder itself), so none sees another's
    half-written config."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _check_and_claim_output(cfg, out)
    finally:
        os.close(fd)


def _check_and_claim_output(cfg: RenderConfig, out: Path) -> Path:
    cfg_path = out / RENDER_CONFIG
    if cfg_path.exists():
        old = read_json_object(cfg_path, "render config")
        if old == cfg.identity():
            return out
        if not cfg.overwrite:
            diff = sorted(k for k in set(old) | set(cfg.identity()) if old.get(k) != cfg.identity().get(k))
            raise FileExistsError(f"{out} holds a dataset rendered with a different config (differs in: "
                                  f"{', '.join(diff)}); use another --out, or --overwrite to replace it")
    elif folder_entries(out) and not cfg.overwrite:
        raise FileExistsError(f"--out {out} is not empty and holds no {RENDER_CONFIG}; refusing to write into it "
                              f"(use an empty folder, or --overwrite)")
    if cfg.overwrite:
        for name in (native.MANIFEST_NAME, RENDER_CONFIG):
            (out / name).unlink(missing_ok=True)
        for name in (native.SHARDS_DIR, SKIPPED_DIR, "preview.png"):
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    write_json_atomic(cfg_path, cfg.identity())
    return out


def _out_of_space(error: OSError, out: Path, shard: str) -> OSError | None:
    """A failed shard write as out of space naming the folder, when it is one (None otherwise): numpy reports
    a short write ("N requested and M written") without an errno."""
    short_write = error.errno is None and "requested and" in str(error)
    if error.errno not in (errno.ENOSPC, errno.EDQUOT) and not short_write:
        return None
    return OSError(errno.ENOSPC, f"writing {shard}: No space left on device (out of space; nothing partial was "
                                 f"left, complete shards are kept)", str(out))


def _read_split_file(path: str) -> set[str]:
    """Validation object ids: one per line (`id`, `synset/id` or `/synset/id`), or a .npy of such strings."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--split-file not found: {p}")
    items = np.load(p, allow_pickle=False).tolist() if p.suffix == ".npy" else p.read_text().split()
    return {str(s).strip("/").split("/")[-1] for s in items if str(s).strip()}


class RenderJob:
    """One process's share of a dataset render (see module docstring)."""

    def __init__(self, cfg: RenderConfig) -> None:
        cfg.validate()
        resolve_shard_index(cfg)
        self.cfg = cfg
        self.source = make_source(cfg.source, root=cfg.source_root, object_list=cfg.object_list, up_axis=cfg.up_axis,
                                  num_objects=cfg.objects if cfg.source == "procedural" else None, seed=cfg.seed)
        refs = self.source.objects()
        self.refs: list[ObjectRef] = select_objects(refs, cfg.objects) if cfg.objects is not None else refs
        self.class_names = sorted({r.class_name for r in self.refs})
        self.label_of = {c: i for i, c in enumerate(self.class_names)}
        self.synset_of = {r.class_name: r.synset for r in self.refs}
        k = cfg.objects_per_shard
        self.shards = [self.refs[i:i + k] for i in range(0, len(self.refs), k)]
        self.val_ids = self._val_ids()

    def my_shards(self) -> list[int]:
        index = self.cfg.shard_index or 0
        return [i for i in range(len(self.shards)) if i % self.cfg.num_shards == index]

    def _done(self, out: Path, index: int) -> bool:
        """Complete: the shard folder exists, or every object of the shard was skipped."""
        if native.is_shard_complete(out, index):
            return True
        skipped = out / SKIPPED_DIR / f"{native.shard_name(index)}.json"
        return skipped.exists() and read_json_object(skipped, "skip record").get("num_rendered") == 0

    def run(self) -> dict:
        """Render this process's shards under the output folder's lock (one writer per shard)."""
        cfg = self.cfg
        if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
            raise NotADirectoryError(f"--out {cfg.out} exists and is not a folder")
        shard = f"render-shard-{cfg.shard_index or 0}-of-{cfg.num_shards}" if cfg.num_shards > 1 else "render"
        with folder_lock(Path(cfg.out), shard, what="render output folder"):
            return self._run()

    def _run(self) -> dict:
        from .renderer import MeshTensors, SceneRenderer, resolve_device

        cfg = self.cfg
        out = _prepare_output(cfg)
        for i in self.my_shards():
            for problem in native.remove_damaged_shard(out, i):
                log.warning("re-rendering damaged %s: %s", native.shard_name(i), problem)
        todo = [i for i in self.my_shards() if not self._done(out, i)]
        device = resolve_device(cfg.device)
        renderer = SceneRenderer(cfg.settings(), device)
        total = sum(len(self.shards[i]) for i in todo) * cfg.views
        bar = tqdm(total=total, unit="img", desc=f"render {out.name}", disable=not cfg.progress, file=sys.stderr,
                   dynamic_ncols=True)
        for index in todo:
            skipped, meshes, kept = [], [], []
            for ref in self.shards[index]:
                try:
                    meshes.append(MeshTensors.from_mesh(self.source.load(ref), device))
                    kept.append(ref)
                except MeshLoadError as e:
                    skipped.append({"object_id": ref.object_id, "path": e.path, "reason": e.reason})
                    bar.write(f"skipping {ref.object_id}: {e}")
                    bar.update(cfg.views)
            write_json_atomic(out / SKIPPED_DIR / f"{native.shard_name(index)}.json",
                              {"num_rendered": len(kept), "skipped": skipped})
            if kept:
                images, latents = self._render_shard(renderer, meshes, kept, bar)
                try:
                    native.write_shard(out, index, images=images, latents=latents.astype(np.float32),
                                       labels=np.array([self.label_of[r.class_name] for r in kept], np.int64),
                                       object_ids=[r.object_id for r in kept], encoding=cfg.encoding,
                                       jpeg_quality=cfg.jpeg_quality)
                except OSError as e:
                    if (full := _out_of_space(e, out, native.shard_name(index))) is None:
                        raise
                    raise full from e
            bar.set_postfix(shards=f"{index + 1}/{len(self.shards)}")
        bar.close()
        merged = self.merge_manifest(out)
        return {"out": str(out), "rendered_shards": todo, "manifest": merged}

    def _render_shard(self, renderer, meshes, refs: list[ObjectRef], bar) -> tuple[np.ndarray, np.ndarray]:
        """All views of the shard's objects -> images uint8 (K, V, H, W, 3), latents float64 (K, V, D)."""
        cfg = self.cfg
        latents = np.stack([sample_latents(cfg.seed, r.object_id, cfg.views, cfg.variant, cfg.scene()) for r in refs])
        k, v = latents.shape[:2]
        flat_lat = torch.as_tensor(latents.reshape(k * v, -1), dtype=torch.float32)
        mesh_index = torch.arange(k).repeat_interleave(v)
        images = np.empty((k * v, cfg.size, cfg.size, 3), np.uint8)
        for start in range(0, k * v, cfg.batch_size):
            threads.tick()
            sl = slice(start, start + cfg.batch_size)
            images[sl] = renderer.render(meshes, mesh_index[sl], flat_lat[sl])["images"].cpu().numpy()
            bar.update(len(flat_lat[sl]))
        return images.reshape(k, v, cfg.size, cfg.size, 3), latents

    def merge_manifest(self, out: Path) -> bool:
        """Write manifest.json once every shard is complete (any job may do it; a file lock serialises)."""
        if not all(self._done(out, i) for i in range(len(self.shards))):
            return False
        with open(out / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            skipped, rendered = [], []
            shards = []
            for i in range(len(self.shards)):
                info = read_json(out / SKIPPED_DIR / f"{native.shard_name(i)}.json")
                skipped += info["skipped"]
                if native.is_shard_complete(out, i):
                    meta = read_json(native.shard_dir(out, i) / native.SHARD_META)
                    rendered += meta["object_ids"]
                    shards.append({"name": native.shard_name(i), "index": i, "num_objects": meta["num_objects"]})
            kept = [r for r in self.refs if r.object_id in set(rendered)]
            empty = sorted(set(self.class_names) - {r.class_name for r in kept})
            if empty:
                log.warning("%d class(es) have no valid mesh and no rendered object: %s (see 'skipped' in %s)",
                            len(empty), ", ".join(empty), out / native.MANIFEST_NAME)
            split = self._split(kept)
            cfg = self.cfg
            native.write_manifest(out, {
                "config": cfg.identity(), "source": self.source.describe(), "variant": cfg.variant,
                "latent_schema": VARIANTS[cfg.variant], "image_size": cfg.size, "views": cfg.views,
                "encoding": cfg.encoding, "class_names": self.class_names,
                "synsets": [self.synset_of[c] for c in self.class_names], "num_objects": len(rendered),
                "shards": shards, "split": split, "skipped": skipped,
                "empty_classes": empty,
                "render_settings": asdict(cfg.settings()),
            })
        return True

    def _val_ids(self) -> set[str] | None:
        """The --split-file's validation ids, checked against the objects (before anything is rendered)."""
        if not self.cfg.split_file:
            return None
        val = _read_split_file(self.cfg.split_file)
        missing = val - {r.object_id for r in self.refs}
        if missing:
            raise ValueError(f"--split-file {self.cfg.split_file} names {len(missing)} objects not in the "
                             f"dataset, e.g. {sorted(missing)[:3]}")
        return val

    def _split(self, refs: list[ObjectRef]) -> dict[str, list[str]]:
        if self.val_ids is not None:
            return {"train": [r.object_id for r in refs if r.object_id not in self.val_ids],
                    "val": [r.object_id for r in refs if r.object_id in self.val_ids]}
        return native.stratified_split([r.object_id for r in refs], [self.label_of[r.class_name] for r in refs],
                                       self.cfg.val_fraction, seed=self.cfg.seed)
