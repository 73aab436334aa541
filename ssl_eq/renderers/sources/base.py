"""Object-source contract (docs/architecture.md "Object sources"): references, mesh data, registry.

A source lists its objects (`ObjectRef`, deterministic order) without loading them, and
loads one at a time as `MeshData` in the world frame of the 3DIEBench scene (z up),
normalised like ShapeNet's models: bounding-box centre at the origin, bbox diagonal 1.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: synset-like names of non-ShapeNet classes start with this digit (WordNet synsets start with 0)
SYNSET_PREFIX = "9"
SYNSET_DIGITS = 8
#: albedo of meshes without colour information
NEUTRAL_GREY = (0.6, 0.6, 0.6)
#: a file's up axis (`--up-axis`) -> the rotation (3, 3) that turns it z-up, the scene's frame (None: already z-up);
#: y-up: (x, y, z) -> (x, -z, y), as Blender's OBJ importer turns ShapeNet's models for 3DIEBench
UP_AXIS_ROTATIONS: dict[str, np.ndarray | None] = {
    "z": None, "y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])}


class MeshLoadError(Exception):
    """A mesh file could not be turned into `MeshData`; the render job skips the object."""

    def __init__(self, path: str | None, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ObjectRef:
    object_id: str      # unique, filesystem-safe (ShapeNet: model id)
    class_name: str     # human name ("mug", "02691156" for ShapeNet without taxonomy)
    synset: str         # 8-digit synset-like folder name for the 3DIEBench layout
    path: str | None    # mesh file, None for procedural objects


@dataclass
class MeshData:
    """verts (N, 3) float32, faces (F, 3) int64, face_colors (F, 3) float32 albedo in [0, 1]."""
    verts: np.ndarray
    faces: np.ndarray
    face_colors: np.ndarray

    def __post_init__(self) -> None:
        self.verts = np.ascontiguousarray(self.verts, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        self.face_colors = np.ascontiguousarray(np.clip(self.face_colors, 0.0, 1.0), dtype=np.float32)
        if self.verts.ndim != 2 or self.verts.shape[1] != 3:
            raise ValueError(f"MeshData.verts must be (N, 3), got {self.verts.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"MeshData.faces must be (F, 3), got {self.faces.shape}")
        if self.face_colors.shape != self.faces.shape:
            raise ValueError(f"MeshData.face_colors must be (F, 3) = {self.faces.shape}, got {self.face_colors.shape}")


class ObjectSource:
    """Base class of the registered sources; subclasses set `name` and implement the three methods."""
    name: str

    def objects(self) -> list[ObjectRef]:
        """All objects of this source, deterministic order."""
        raise NotImplementedError

    def load(self, ref: ObjectRef) -> MeshData:
        """The normalised mesh of one object; raises `MeshLoadError(path, reason)`."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able description stored in the dataset manifest."""
        raise NotImplementedError


#: name -> factory(root, num_objects, object_list, seed) -> ObjectSource
SOURCES: dict[str, Callable[..., ObjectSource]] = {}


def register_source(name: str):
    """Class decorator: register an `ObjectSource` subclass (with a `from_options` classmethod) under `name`."""
    def deco(cls):
        cls.name = name
        SOURCES[name] = cls.from_options
        return cls
    return deco


def make_source(name: str, root=None, num_objects: int | None = None, object_list=None, seed: int = 0,
                up_axis: str | None = None) -> ObjectSource:
    """Build the source registered as `name` (see `SOURCES`); options a source does not use are refused.
    `up_axis` ("y" | "z", None: the source's default) is the mesh files' up axis."""
    if name not in SOURCES:
        raise ValueError(f"unknown object source {name!r}; valid sources: {', '.join(sorted(SOURCES))}")
    check_num_objects(num_objects)
    if up_axis is not None and up_axis not in UP_AXIS_ROTATIONS:
        raise ValueError(f"--up-axis must be one of {', '.join(UP_AXIS_ROTATIONS)}, got {up_axis!r}")
    return SOURCES[name](root=root, num_objects=num_objects, object_list=object_list, seed=seed, up_axis=up_axis)


def check_num_objects(num_objects: int | None) -> None:
    if num_objects is not None and (not isinstance(num_objects, (int, np.integer)) or num_objects < 1):
        raise ValueError(f"num_objects (--objects) must be an integer >= 1, got {num_objects!r}")


def refuse_option(source: str, option: str, value) -> None:
    """Error for an option the source `source` does not take."""
    if value is not None:
        raise ValueError(f"source {source!r} does not take {option} (got {value!r})")


def select_objects(refs: list[ObjectRef], n: int) -> list[ObjectRef]:
    """Class-balanced deterministic subset of `n` refs, kept in their original order.

    Classes are visited round-robin in sorted class-name order, each giving its next object
    (in `refs` order) until `n` are taken; a class that runs out is skipped. n >= len(refs) keeps all.
    """
    check_num_objects(n)
    if n >= len(refs):
        return list(refs)
    by_class: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        by_class.setdefault(ref.class_name, []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return [refs[i] for i in sorted(chosen)]


def synsets_for(names: list[str], salt: str = "") -> dict[str, str]:
    """Stable 8-digit synset-like names ("9" + 7 digits of a CRC32 hash) for class names.

    Names are processed in sorted order; a collision re-hashes the later name with a counter,
    so a name's synset depends only on the names sorted before it that collide (rare).
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    modulus = 10 ** (SYNSET_DIGITS - len(SYNSET_PREFIX))
    for name in sorted(names):
        attempt = 0
        while True:
            key = f"{salt}{name}" + (f"#{attempt}" if attempt else "")
            synset = f"{SYNSET_PREFIX}{zlib.crc32(key.encode()) % modulus:0{SYNSET_DIGITS - len(SYNSET_PREFIX)}d}"
            if synset not in taken:
                break
            attempt += 1
        taken.add(synset)
        out[name] = synset
    return out


def normalize_verts(verts: np.ndarray, path: str | None = None) -> np.ndarray:
    """(N, 3) -> (N, 3) float32 with the bbox centre at the origin and bbox diagonal 1 (idempotent)."""
    verts = np.asarray(verts, dtype=np.float64)
    if len(verts) == 0:
        raise MeshLoadError(path, "mesh has no vertices")
    if not np.isfinite(verts).all():
        raise MeshLoadError(path, "mesh has non-finite vertex coordinates")
    lo, hi = verts.min(0), verts.max(0)
    diag = np.linalg.norm(hi - lo)
    if diag <= 0:
        raise MeshLoadError(path, "mesh is degenerate (all vertices coincide)")
    return ((verts - (lo + hi) / 2) / diag).astype(np.float32)


def check_root(root, source: str) -> Path:
    """The source root as a `Path`; clear errors for a missing option, a missing path or a non-folder."""
    if root is None:
        raise ValueError(f"source {source!r} needs a source root (--source-root)")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"source root (--source-root) not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"source root (--source-root) is not a folder: {root}")
    return root


def safe_id(text: str) -> str:
    """Filesystem-safe object id: characters other than letters, digits, '_', '-' and '.' become '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)
