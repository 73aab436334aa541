"""Read mesh files (.obj with .mtl, .ply, .off, .glb) into normalised `MeshData` with PyTorch3D's readers.

Colours, per face: OBJ faces take their material's diffuse colour (Kd) multiplied by its
texture map sampled once per face (PyTorch3D texture atlas of size 1), faces without a
material take `NEUTRAL_GREY`; PLY/OFF/GLB take the mean of their vertex colours or of their
texture sampled at the face's vertices when present, else `NEUTRAL_GREY`.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch

from .base import NEUTRAL_GREY, MeshData, MeshLoadError, normalize_verts

MESH_SUFFIXES = (".obj", ".ply", ".off", ".glb")
#: OBJ texture atlas resolution: one sample per face is all a per-face albedo needs
ATLAS_SIZE = 1


@functools.lru_cache(maxsize=1)
def _io():
    from pytorch3d.io import IO
    from pytorch3d.io.experimental_gltf_io import MeshGlbFormat

    io = IO()
    io.register_meshes_format(MeshGlbFormat())
    return io


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


_READERS = {".obj": _read_obj, ".ply": _read_generic, ".off": _read_generic, ".glb": _read_generic}


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # missing .mtl / texture images: handled as untextured
            verts, faces, colors = reader(path)
    except Exception as e:  # PyTorch3D readers raise many types (ValueError, IndexError, struct.error, ...)
        raise MeshLoadError(str(path), f"cannot read mesh ({type(e).__name__}: {e})") from e
    if len(faces) == 0:
        raise MeshLoadError(str(path), "mesh has no faces")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise MeshLoadError(str(path), f"face indices out of range for {len(verts)} vertices")
    if up_axis_rotation is not None:
        verts = verts @ np.asarray(up_axis_rotation).T
    return MeshData(normalize_verts(verts, str(path)), faces, colors)
