"""Read mesh files into normalised `MeshData`: .obj / .ply / .off with PyTorch3D's readers (trimesh when they fail:
non-UTF-8 names, comments), .stl / .glb / .gltf with trimesh (a maintained mesh library: glTF scene graphs, STL).
glTF geometry compression (Draco, meshopt) is refused with the reason.

Colours, per face: OBJ faces take their material's diffuse colour (Kd) multiplied by its
texture map sampled once per face (PyTorch3D texture atlas of size 1), faces without a
material take `NEUTRAL_GREY`; PLY/OFF take the mean of their vertex colours or of their
texture sampled at the face's vertices when present, else `NEUTRAL_GREY`. trimesh formats take their face /
vertex colours or their texture sampled at the vertices; a texture that cannot be decoded is dropped with a
warning (the material's base colour is used). A glTF scene of several nodes is assembled with each node's
transform (trimesh's scene graph).
"""
from __future__ import annotations

import functools
import json
import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

from .base import NEUTRAL_GREY, MeshData, MeshLoadError, normalize_verts

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
#: glTF extensions that compress geometry (trimesh does not decode them)
GLTF_COMPRESSION = ("KHR_draco_mesh_compression", "EXT_meshopt_compression")
#: OBJ texture atlas resolution: one sample per face is all a per-face albedo needs
ATLAS_SIZE = 1


@functools.lru_cache(maxsize=1)
def _io():
    from pytorch3d.io import IO

    return IO()


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pytorch3d.io import load_obj

    verts, faces, aux = load_obj(path, load_textures=True, create_texture_atlas=True,
                                 texture_atlas_size=ATLAS_SIZE)
    faces_idx = faces.verts_idx.numpy()
    colors = np.tile(np.asarray(NEUTRAL_GREY, np.float32), (len(faces_idx), 1))
    if aux.material_colors and torch.is_tensor(faces.materials_idx):
        has_material = faces.materials_idx.numpy() >= 0
        atlas = aux.texture_atlas.reshape(len(faces_idx), -1, 3).mean(1).numpy()
        colors[has_material] = atlas[has_material]
    return verts.numpy(), faces_idx, colors


def _read_generic(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pytorch3d.renderer import TexturesVertex

    mesh = _io().load_mesh(path, include_textures=True)
    faces = mesh.faces_packed()
    tex = mesh.textures
    if tex is None:
        colors = np.tile(np.asarray(NEUTRAL_GREY, np.float32), (len(faces), 1))
    else:
        per_vertex = (tex.faces_verts_textures_packed(faces) if isinstance(tex, TexturesVertex)
                      else tex.faces_verts_textures_packed())      # (F, 3, C)
        colors = per_vertex[..., :3].mean(1).numpy()
    return mesh.verts_packed().numpy(), faces.numpy(), colors


def _gltf_json(path: Path) -> dict:
    """The JSON part of a .gltf / .glb file."""
    data = path.read_bytes()
    if data[:4] == b"glTF":                              # GLB: 12-byte header, then the JSON chunk (length, type)
        (length,) = struct.unpack("<I", data[12:16])
        data = data[20:20 + length]
    return json.loads(data)


def _read_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import trimesh

    if path.suffix.lower() in (".gltf", ".glb"):
        compressed = sorted(set(_gltf_json(path).get("extensionsUsed", [])) & set(GLTF_COMPRESSION))
        if compressed:   # trimesh would read the compressed bytes as vertices: garbled, silently
            raise ValueError(f"its geometry is compressed with {', '.join(compressed)}, which trimesh cannot "
                             f"decode; export it uncompressed (e.g. gltf-transform copy, or Blender)")
    scene = trimesh.load(path, force="scene")
    parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]  # node transforms applied
    if not parts:
        raise ValueError("the file holds no triangle mesh")
    colors, lost = zip(*(_trimesh_face_colors(g) for g in parts))
    if any(lost):
        log.warning("%s: a texture cannot be read or decoded; those parts are rendered untextured (their material's "
                    "base colour)", path)
    offsets = np.cumsum([0] + [len(g.vertices) for g in parts[:-1]])
    return (np.concatenate([g.vertices for g in parts]),
            np.concatenate([g.faces + o for g, o in zip(parts, offsets)]), np.concatenate(colors))


def _trimesh_face_colors(mesh) -> tuple[np.ndarray, bool]:
    """(F, 3) albedo of a trimesh mesh (face / vertex colours, else its texture sampled at the vertices) and
    whether a texture it has coordinates for was lost (missing or undecodable image)."""
    from trimesh.visual import TextureVisuals

    visual = mesh.visual
    if isinstance(visual, TextureVisuals):
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is None or visual.uv is None:
            base = np.asarray(material.main_color[:3], np.float32) / 255
            return np.tile(base, (len(mesh.faces), 1)), visual.uv is not None
        visual = visual.to_color()
    if visual.kind == "face":
        return np.asarray(visual.face_colors[:, :3], np.float32) / 255, False
    if visual.kind == "vertex":
        return np.asarray(visual.vertex_colors[mesh.faces][..., :3], np.float32).mean(1) / 255, False
    return np.tile(np.asarray(NEUTRAL_GREY, np.float32), (len(mesh.faces), 1)), False


def _off_has_counts(path: Path) -> bool:
    """Whether an OFF file has two meaningful lines (PyTorch3D's OFF reader never returns otherwise)."""
    meaningful = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith(b"#"):
                meaningful += 1
                if meaningful == 2:
                    return True
    return False


_READERS = {".obj": _read_obj, ".ply": _read_generic, ".off": _read_generic, ".stl": _read_trimesh,
            ".glb": _read_trimesh, ".gltf": _read_trimesh}


def load_mesh_file(path: str | Path, up_axis_rotation: np.ndarray | None = None) -> MeshData:
    """Read one mesh file -> `MeshData` (rotated by `up_axis_rotation` (3, 3) if given, then normalised).

    Any failure (missing/unreadable/corrupt file, no faces, bad indices) raises `MeshLoadError(path, reason)`.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise MeshLoadError(str(path), f"unsupported mesh format {path.suffix!r} (expected one of {', '.join(MESH_SUFFIXES)})")
    if not path.is_file():
        raise MeshLoadError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise MeshLoadError(str(path), "file is empty")
    if path.suffix.lower() == ".off" and not _off_has_counts(path):
        raise MeshLoadError(str(path), "truncated OFF file: no 'OFF' header followed by vertex/face counts")
    errors = []
    for read in dict.fromkeys((reader, _read_trimesh)):   # PyTorch3D's OBJ / PLY / OFF readers are strict
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # missing .mtl / texture images: handled as untextured
                verts, faces, colors = read(path)
            break
        except Exception as e:  # noqa: BLE001 - the readers raise many types (ValueError, IndexError, struct.error)
            errors.append(f"{type(e).__name__}: {e}")
    else:
        raise MeshLoadError(str(path), f"cannot read mesh ({'; trimesh: '.join(errors)})")
    if len(faces) == 0:
        raise MeshLoadError(str(path), "mesh has no faces")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise MeshLoadError(str(path), f"face indices out of range for {len(verts)} vertices")
    if up_axis_rotation is not None:
        verts = verts @ np.asarray(up_axis_rotation).T
    return MeshData(normalize_verts(verts, str(path)), faces, colors)
