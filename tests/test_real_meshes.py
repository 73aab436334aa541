"""Issue #24 "Real meshes": meshes nobody here wrote, from Debian's assimp-testmodels 5.2.5 (BSD-3-clause, see
tests/data/meshes-assimp/COPYRIGHT): STL through trimesh, glTF scene graphs with node transforms, glTF's y-up
turned z-up (`--up-axis`), a texture the package ships without (kept untextured with a warning), a corrupt OFF
skipped, and the whole folder rendered with every class in `dataset info` / `dataset preview`."""
from __future__ import annotations

import importlib
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from ssl_eq.cli import main
from ssl_eq.datasets.native import read_manifest
from ssl_eq.renderers.sources import MeshLoadError, make_source

ASSIMP = Path(__file__).parent / "data" / "meshes-assimp"
CLASSES = ["box", "cube", "cylinder", "sphere", "spider", "transforms"]


def load(name: str, root: Path = ASSIMP, up_axis: str | None = None):
    src = make_source("mesh-folder", root=root, up_axis=up_axis)
    return src.load(next(r for r in src.objects() if r.object_id == name))


def extent(mesh) -> np.ndarray:
    return np.ptp(mesh.verts, 0)


@pytest.mark.parametrize("name, path", [("spider-Spider_binary", "spider/Spider_binary.stl"),
                                        ("sphere-sphereWithHole", "sphere/sphereWithHole.stl")])
def test_binary_and_ascii_stl_are_read_through_trimesh(name, path):
    data = (ASSIMP / path).read_bytes()
    faces = data.count(b"endfacet") if data.startswith(b"solid") else struct.unpack("<I", data[80:84])[0]
    mesh = load(name)
    assert len(mesh.faces) == faces and np.isclose(np.linalg.norm(extent(mesh)), 1, atol=1e-5)
    np.testing.assert_allclose(mesh.face_colors, 0.6)                       # STL has no colour: neutral grey


def gltf_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of a glTF scene whose nodes translate and scale, from the file's JSON (accessor min / max)."""
    g = json.loads(path.read_text())
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)

    def visit(i: int, at: np.ndarray, scale: np.ndarray) -> None:
        nonlocal lo, hi
        node = g["nodes"][i]
        at = at + scale * np.asarray(node.get("translation", [0, 0, 0]))
        scale = scale * np.asarray(node.get("scale", [1, 1, 1]))
        if "mesh" in node:
            for prim in g["meshes"][node["mesh"]]["primitives"]:
                acc = g["accessors"][prim["attributes"]["POSITION"]]
                lo, hi = np.minimum(lo, at + scale * acc["min"]), np.maximum(hi, at + scale * acc["max"])
        for child in node.get("children", []):
            visit(child, at, scale)

    for root in g["scenes"][g.get("scene", 0)]["nodes"]:
        visit(root, np.zeros(3), np.ones(3))
    return lo, hi


def test_a_multi_node_gltf_is_assembled_with_its_node_transforms_and_turned_z_up():
    lo, hi = gltf_bounds(ASSIMP / "transforms" / "TextureTransformTest.gltf")  # 12 nodes, nested translations
    x, y, z = hi - lo                                                        # glTF: y up, the panel faces +z
    expected = np.array([x, z, y]) / np.linalg.norm([x, y, z])               # y-up -> z-up: (x, y, z) -> (x, -z, y)
    np.testing.assert_allclose(extent(load("transforms-TextureTransformTest")), expected, atol=1e-4)
    as_z_up = extent(load("transforms-TextureTransformTest", up_axis="z"))   # --up-axis z: the file's frame as is
    np.testing.assert_allclose(as_z_up, np.array([x, y, z]) / np.linalg.norm([x, y, z]), atol=1e-4)


def test_a_texture_that_cannot_be_decoded_falls_back_to_the_base_colour(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        mesh = load("transforms-TextureTransformTest")                      # UV.png is not in the package
    assert "TextureTransformTest.gltf: a texture cannot be read or decoded" in caplog.text
    assert len(mesh.faces) == 24

    good = load("box-BoxTextured")                                           # CesiumLogoFlat.png sampled
    glb = (ASSIMP / "box" / "BoxTextured.glb").read_bytes()
    png = glb.index(b"\x89PNG")
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "BoxTextured.glb").write_bytes(glb[:png + 16] + bytes(200) + glb[png + 216:])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        broken = load("box-BoxTextured", root=tmp_path)
    assert "BoxTextured.glb: a texture cannot be read or decoded" in caplog.text
    np.testing.assert_allclose(broken.verts, good.verts)
    assert np.ptp(broken.face_colors) == 0 and not np.allclose(broken.face_colors, good.face_colors)


def test_a_file_pytorch3d_cannot_parse_is_read_by_trimesh():
    path = ASSIMP / "cylinder" / "empty_mat.obj"            # a Blender export with an unnamed material
    assert len(load("cylinder-empty_mat").faces) == sum(line.startswith("f ") for line in path.read_text().splitlines())


def test_compressed_gltf_geometry_is_refused_with_the_reason(tmp_path):
    glb = (ASSIMP / "box" / "BoxTextured.glb").read_bytes()
    (length,) = struct.unpack("<I", glb[12:16])
    gltf = json.loads(glb[20:20 + length])
    gltf["extensionsUsed"] = ["KHR_draco_mesh_compression"]               # as in assimp's draco/2CylinderEngine
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js + glb[20 + length:]
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "BoxTextured.glb").write_bytes(glb[:8] + struct.pack("<I", 12 + len(body)) + body)
    with pytest.raises(MeshLoadError, match="compressed with KHR_draco_mesh_compression, which trimesh cannot decode"):
        load("box-BoxTextured", root=tmp_path)


def test_a_corrupt_real_file_is_a_mesh_load_error():
    with pytest.raises(MeshLoadError, match=r"invalid.off: cannot read mesh .*counts"):
        load("cube-invalid")


def test_up_axis_is_refused_where_it_means_nothing(tmp_path, capsys):
    assert main(["render", "--out", str(tmp_path / "p"), "--up-axis", "y", "--objects", "2", "--views", "1",
                 "--size", "8", "--device", "cpu", "--no-progress", "--no-preview"]) == 2
    assert "source 'procedural' does not take an up axis" in capsys.readouterr().err


def test_the_real_mesh_folder_renders_and_every_class_is_shown(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ds"
    assert main(["render", "--out", str(out), "--source", "mesh-folder", "--source-root", str(ASSIMP), "--objects",
                 "20", "--views", "2", "--size", "16", "--device", "cpu", "--val-fraction", "0.3", "--no-progress",
                 "--no-preview"]) == 0
    manifest = read_manifest(out)
    assert [s["object_id"] for s in manifest["skipped"]] == ["cube-invalid"] and manifest["num_objects"] == 7
    assert sorted(manifest["source"]["classes"]) == CLASSES
    capsys.readouterr()
    assert main(["dataset", "info", str(out)]) == 0
    assert "source: mesh-folder, mesh up axis by format (glTF / GLB: y" in capsys.readouterr().out

    contact_sheet = importlib.import_module("ssl_eq.reports.contact_sheet")
    shown = {}
    sheet = contact_sheet.contact_sheet
    monkeypatch.setattr(contact_sheet, "contact_sheet", lambda images, captions, *a, **k: shown.update(
        rows=[c[0].split(" v")[0] for c in captions]) or sheet(images, captions, *a, **k))
    monkeypatch.setattr(contact_sheet, "MIN_PREVIEW_ROWS", 2)                # fewer rows than classes
    assert main(["dataset", "preview", str(out), "--out", str(tmp_path / "p.png")]) == 0
    assert sorted(set(shown["rows"])) == CLASSES and (tmp_path / "p.png").is_file()


def test_a_dataset_rendered_before_up_axis_existed_resumes(tmp_path, capsys):
    out = tmp_path / "ds"
    cmd = ["render", "--out", str(out), "--objects", "2", "--views", "1", "--size", "8", "--device", "cpu",
           "--no-progress", "--no-preview"]
    assert main(cmd) == 0
    assert "up_axis" not in json.loads((out / "render_config.json").read_text())  # as written before the option
    capsys.readouterr()
    assert main(cmd) == 0 and "different config" not in capsys.readouterr().err
