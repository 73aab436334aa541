"""`mesh-folder` source: ``ROOT/<class>/<file>.obj|.ply|.off|.glb``, any meshes.

Meshes are turned from their file's up axis to the scene's z up, then normalised (bbox centre at the origin, bbox
diagonal 1). The up axis is `--up-axis` (y | z) when given, else per format: glTF / GLB are y-up by their
specification, other formats are read as z-up (like the 3DIEBench fixture mug). Class folders are visited in sorted order, files
in sorted order. A class folder without any mesh file is dropped with a warning; the source
refuses to build when no class is left. Corrupt meshes are found at `load()` time
(`MeshLoadError`), where the render job skips them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .base import UP_AXIS_ROTATIONS, MeshData, ObjectRef, ObjectSource, check_root, refuse_option, register_source, \
    safe_id, select_objects, synsets_for
from .meshfiles import MESH_SUFFIXES, load_mesh_file

log = logging.getLogger(__name__)

#: up axis of a file when --up-axis is not given (by suffix; other formats: z)
DEFAULT_UP_AXES = {".glb": "y", ".gltf": "y"}


@register_source("mesh-folder")
class MeshFolderSource(ObjectSource):
    def __init__(self, root, num_objects: int | None = None, up_axis: str | None = None):
        self.root = check_root(root, "mesh-folder").resolve()
        self.up_axis = up_axis
        files_by_class: dict[str, list] = {}
        self.dropped_classes: list[str] = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in MESH_SUFFIXES)
            if files:
                files_by_class[folder.name] = files
            else:
                self.dropped_classes.append(folder.name)
                log.warning("mesh-folder: class folder %s holds no mesh file (%s); class %r dropped",
                            folder, ", ".join(MESH_SUFFIXES), folder.name)
        if not files_by_class:
            raise ValueError(f"mesh-folder root {self.root}: no class folder holds a mesh file; expected "
                             f"ROOT/<class>/<file> with one of {', '.join(MESH_SUFFIXES)}")
        self.synsets = synsets_for(list(files_by_class))
        refs = []
        for name, files in files_by_class.items():
            stems = [f.stem for f in files]
            for f in files:   # the suffix joins the id only when two files of a class share a stem
                stem = f.stem if stems.count(f.stem) == 1 else f"{f.stem}_{f.suffix[1:]}"
                refs.append(ObjectRef(safe_id(f"{name}-{stem}"), name, self.synsets[name], str(f)))
        ids = [r.object_id for r in refs]
        clashes = sorted({i for i in ids if ids.count(i) > 1})
        if clashes:
            raise ValueError(f"mesh-folder root {self.root}: class/file names give the same object id "
                             f"{clashes[:5]}; rename the files")
        self._refs = select_objects(refs, num_objects) if num_objects is not None else refs

    @classmethod
    def from_options(cls, root=None, num_objects=None, object_list=None, seed=0, up_axis=None) -> "MeshFolderSource":
        refuse_option("mesh-folder", "an object list", object_list)
        return cls(root, num_objects, up_axis)

    def objects(self) -> list[ObjectRef]:
        return list(self._refs)

    def load(self, ref: ObjectRef) -> MeshData:
        axis = self.up_axis or DEFAULT_UP_AXES.get(Path(ref.path).suffix.lower(), "z")
        return load_mesh_file(ref.path, up_axis_rotation=UP_AXIS_ROTATIONS[axis])

    def describe(self) -> dict[str, Any]:
        classes = sorted({r.class_name for r in self._refs})
        return {"name": self.name, "root": str(self.root), "num_objects": len(self._refs), "up_axis": self.up_axis or "by format (glTF / GLB: y, turned z-up; others: z)",
                "classes": classes, "synsets": [self.synsets[c] for c in classes],
                "dropped_classes": self.dropped_classes}
