"""Object sources of the renderer (docs/architecture.md "Object sources").

`make_source(name, ...)` builds one of `SOURCES` ("procedural", "mesh-folder", "shapenet");
`select_objects(refs, n)` takes a class-balanced deterministic subset.
"""
from .base import SOURCES, MeshData, MeshLoadError, ObjectRef, ObjectSource, make_source, select_objects
from . import mesh_folder, procedural, shapenet  # noqa: F401  (register the sources)

__all__ = ["ObjectRef", "MeshData", "ObjectSource", "SOURCES", "make_source", "select_objects", "MeshLoadError"]
