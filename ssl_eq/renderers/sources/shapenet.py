"""`shapenet` source: ShapeNetCore v2, ``ROOT/<synset>/<model id>/models/model_normalized.obj`` (+ .mtl).

Colours: each face's material diffuse colour (Kd) times its texture map sampled once per face,
so textured models get one flat colour per face (texture detail below face size is lost).
ShapeNet models are y-up; like BlenderProc's OBJ import used for 3DIEBench, they are turned
z-up ((x, y, z) -> (x, -z, y)) and then normalised (idempotent for ShapeNet's normalised models);
`--up-axis z` reads them as they are.

Objects: every model folder holding the model file (sorted by synset, then id), or those named
by an object list, in list order: the SIE repository's ``.npy`` — an (N, 2) array of
(synset, id) or an (N,) array of ``"/synset/id"`` strings — or a text file with one
``synset/id`` or ``synset id`` per line (blank lines and ``#`` comments ignored). A listed model
that does not exist is an error. Class names are synset ids, or the first taxonomy name when
``ROOT/taxonomy.json`` exists. A model id found in several synsets becomes ``<id>-<synset>``
after its first occurrence, so object ids stay unique.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .base import UP_AXIS_ROTATIONS, MeshData, ObjectRef, ObjectSource, check_root, register_source, select_objects
from .meshfiles import load_mesh_file

log = logging.getLogger(__name__)

MODEL_FILE = Path("models") / "model_normalized.obj"
TAXONOMY_FILE = "taxonomy.json"
#: ShapeNet's models are y-up (turned z-up, as Blender's OBJ importer does)
DEFAULT_UP_AXIS = "y"
#: how many missing models an error message names
MAX_LISTED = 5


def read_object_list(path) -> list[tuple[str, str]]:
    """(synset, model id) pairs from an SIE-style .npy or a text file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"object list not found: {path}")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"object list {path}: not a plain string array ({e})") from e
        if arr.ndim == 2 and arr.shape[1] == 2:
            pairs = [(str(s), str(i)) for s, i in arr]
        elif arr.ndim == 1:
            pairs = [_split_entry(str(s), path, k) for k, s in enumerate(arr)]
        else:
            raise ValueError(f"object list {path}: expected shape (N, 2) of (synset, id) or (N,) of "
                             f"'/synset/id' strings, got {arr.shape}")
    else:
        pairs = [_split_entry(line, path, k) for k, line in enumerate(path.read_text().splitlines())
                 if line.strip() and not line.lstrip().startswith("#")]
    if not pairs:
        raise ValueError(f"object list {path} names no objects")
    return pairs


def _split_entry(entry: str, path: Path, k: int) -> tuple[str, str]:
    parts = entry.replace("/", " ").split()
    if len(parts) != 2:
        raise ValueError(f"object list {path}, entry {k}: expected 'synset/id' or 'synset id', got {entry!r}")
    return parts[0], parts[1]


def _taxonomy_names(root: Path) -> dict[str, str]:
    """synset -> first taxonomy name, empty without ROOT/taxonomy.json."""
    path = root / TAXONOMY_FILE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {e["synsetId"]: e["name"].split(",")[0].strip() for e in entries}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: expected a list of {{'synsetId', 'name'}} entries ({e})") from e


@register_source("shapenet")
class ShapeNetSource(ObjectSource):
    def __init__(self, root, num_objects: int | None = None, object_list=None, up_axis: str = DEFAULT_UP_AXIS):
        self.up_axis = up_axis
        self.root = check_root(root, "shapenet").resolve()
        self.object_list = None if object_list is None else str(Path(object_list).resolve())
        pairs = self._listed(object_list) if object_list is not None else self._scan()
        taxonomy = _taxonomy_names(self.root)
        synsets = sorted({s for s, _ in pairs})
        names = {s: taxonomy.get(s, s) for s in synsets}
        for s in synsets:   # a taxonomy name shared by several synsets falls back to the synset ids
            if list(names.values()).count(names[s]) > 1:
                names[s] = s
        seen: set[str] = set()
        refs = []
        for synset, model in pairs:
            oid = model if model not in seen else f"{model}-{synset}"
            seen.add(oid)
            refs.append(ObjectRef(oid, names[synset], synset, str(self.root / synset / model / MODEL_FILE)))
        self.names = names
        self._refs = select_objects(refs, num_objects) if num_objects is not None else refs

    def _scan(self) -> list[tuple[str, str]]:
        pairs = []
        for synset in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            models = sorted(p.name for p in synset.iterdir() if p.is_dir())
            found = [m for m in models if (synset / m / MODEL_FILE).is_file()]
            if len(found) < len(models):
                log.warning("shapenet: %d model folders in %s lack %s; skipped",
                            len(models) - len(found), synset, MODEL_FILE)
            if not found:
                log.warning("shapenet: synset folder %s holds no model; class dropped", synset)
            pairs += [(synset.name, m) for m in found]
        if not pairs:
            raise ValueError(f"shapenet root {self.root}: no model found; expected ROOT/<synset>/<id>/{MODEL_FILE}")
        return pairs

    def _listed(self, object_list) -> list[tuple[str, str]]:
        pairs = list(dict.fromkeys(read_object_list(object_list)))
        missing = [f"{s}/{m}" for s, m in pairs if not (self.root / s / m / MODEL_FILE).is_file()]
        if missing:
            raise FileNotFoundError(
                f"object list {object_list}: {len(missing)} listed model(s) missing under {self.root} "
                f"(no {MODEL_FILE}), e.g. {missing[:MAX_LISTED]}")
        return pairs

    @classmethod
    def from_options(cls, root=None, num_objects=None, object_list=None, seed=0, up_axis=None) -> "ShapeNetSource":
        return cls(root, num_objects, object_list, up_axis or DEFAULT_UP_AXIS)

    def objects(self) -> list[ObjectRef]:
        return list(self._refs)

    def load(self, ref: ObjectRef) -> MeshData:
        return load_mesh_file(ref.path, up_axis_rotation=UP_AXIS_ROTATIONS[self.up_axis])

    def describe(self) -> dict[str, Any]:
        synsets = sorted({r.synset for r in self._refs})
        return {"name": self.name, "root": str(self.root), "object_list": self.object_list,
                "num_objects": len(self._refs), "up_axis": f"{self.up_axis} (turned z-up)" if self.up_axis != "z" else "z",
                "classes": [self.names[s] for s in synsets], "synsets": synsets}
