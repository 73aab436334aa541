"""Object sources: procedural generator, mesh folders, ShapeNet layout, selection and bad input."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ssl_eq.renderers.sources import SOURCES, MeshData, MeshLoadError, ObjectRef, make_source, select_objects
from ssl_eq.renderers.sources.primitives import box, cylinder, ellipsoid, frustum, prism, rotation, torus
from ssl_eq.renderers.sources.procedural import CLASSES, generate

FIXTURE_MUG = Path(__file__).resolve().parent / "data" / "blender-3diebench" / "mug.obj"
K = len(CLASSES)


# ---------------------------------------------------------------- helpers

def surface_samples(mesh: MeshData, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) points uniformly distributed on the mesh surface."""
    tri = mesh.verts[mesh.faces].astype(np.float64)
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    f = rng.choice(len(tri), n, p=area / area.sum())
    r = rng.random((n, 2))
    s = np.sqrt(r[:, 0])
    w = np.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], 1)
    return (tri[f] * w[:, :, None]).sum(1)


def face_areas(mesh: MeshData) -> np.ndarray:
    tri = mesh.verts[mesh.faces].astype(np.float64)
    return np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2


def assert_normalised(mesh: MeshData) -> None:
    lo, hi = mesh.verts.min(0), mesh.verts.max(0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    assert np.linalg.norm(hi - lo) == pytest.approx(1.0, abs=1e-5)
    assert mesh.verts.dtype == np.float32 and mesh.faces.dtype == np.int64 and mesh.face_colors.dtype == np.float32
    assert mesh.face_colors.shape == mesh.faces.shape
    assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.verts)


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    t = verts[faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


# ---------------------------------------------------------------- registry, selection

def test_registry_and_unknown_source():
    assert set(SOURCES) == {"procedural", "mesh-folder", "shapenet"}
    with pytest.raises(ValueError, match=r"unknown object source 'blender'.*mesh-folder, procedural, shapenet"):
        make_source("blender")


def test_select_objects_balanced_deterministic():
    refs = [ObjectRef(f"{c}{i}", c, "90000000", None) for c, n in (("b", 5), ("a", 2), ("c", 6)) for i in range(n)]
    sel = select_objects(refs, 7)
    assert sel == select_objects(refs, 7)
    counts = {c: sum(r.class_name == c for r in sel) for c in "abc"}
    assert counts == {"a": 2, "b": 3, "c": 2}         # round-robin a, b, c, a, b, c, b (a exhausted)
    assert sel == [r for r in refs if r in sel]        # original order kept
    assert select_objects(refs, 100) == refs
    with pytest.raises(ValueError, match="num_objects"):
        select_objects(refs, 0)


# ---------------------------------------------------------------- primitives

@pytest.mark.parametrize("mesh, volume", [
    (box((1, 2, 3), (5, 0, 0), rotation("z", 30)), 6.0),
    (cylinder((0, 0, 0), (1, 1, 1), 0.5, segments=200), np.pi * 0.25 * np.sqrt(3)),
    (frustum((0, 0, 0), (0, 0, 2), 1.0, 0.0, segments=200), np.pi * 2 / 3),
    (ellipsoid((1, 1, 1), (1, 2, 3), rings=100, segments=200), 4 / 3 * np.pi * 6),
    (torus((0, 0, 0), 1.0, 0.25, rotation("x", 40), segments=200, tube_segments=50), 2 * np.pi ** 2 * 0.25 ** 2),
    (prism([(0, 0), (0, 1), (1, 0)], 2.0, (0, 0, 3), rotation("y", 90)), 1.0),   # clockwise polygon
])
def test_primitives_closed_with_outward_winding(mesh, volume):
    verts, faces = mesh
    assert signed_volume(verts, faces) == pytest.approx(volume, rel=0.01)


# ---------------------------------------------------------------- procedural

def test_procedural_classes_ids_and_balance():
    assert K >= 10
    src = make_source("procedural", num_objects=2 * K + 3, seed=1)
    refs = src.objects()
    assert len(refs) == 2 * K + 3
    counts = {c: sum(r.class_name == c for r in refs) for c in CLASSES}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert refs[K + 1].object_id == f"proc-{refs[K + 1].class_name}-{K + 1:06d}"
    assert len({r.object_id for r in refs}) == len(refs)
    synsets = {r.class_name: r.synset for r in refs}
    assert len(set(synsets.values())) == K and all(len(s) == 8 and s.isdigit() for s in synsets.values())
    assert src.describe()["classes"] == list(CLASSES)
    assert len(make_source("procedural").objects()) > 0


def test_procedural_deterministic_and_varied():
    a, b = make_source("procedural", num_objects=2 * K, seed=3), make_source("procedural", num_objects=2 * K, seed=3)
    for ref in a.objects()[:K]:
        ma, mb = a.load(ref), b.load(ref)
        for x, y in ((ma.verts, mb.verts), (ma.faces, mb.faces), (ma.face_colors, mb.face_colors)):
            np.testing.assert_array_equal(x, y)
    other_seed = make_source("procedural", num_objects=K, seed=4)
    for ref, twin in zip(a.objects()[:K], a.objects()[K:]):   # same class, different instance / seed
        m, m2, m3 = a.load(ref), a.load(twin), other_seed.load(ref)
        rng = np.random.default_rng(0)
        tree = cKDTree(surface_samples(m, 20000, rng))
        noise = tree.query(surface_samples(m, 1000, rng))[0].mean()      # same surface, other samples
        for n in (m2, m3):
            dist = tree.query(surface_samples(n, 1000, rng))[0].mean()
            assert dist > 2 * noise, f"{ref.class_name}: instances differ by {dist:.4f}, noise {noise:.4f}"
            assert not np.allclose(np.unique(m.face_colors, axis=0)[:1], np.unique(n.face_colors, axis=0)[:1])


@pytest.mark.parametrize("class_name", list(CLASSES))
def test_procedural_normalised_and_modest(class_name):
    mesh = generate(class_name, 0, 5)
    assert_normalised(mesh)
    assert 150 <= len(mesh.faces) <= 3000
    assert (face_areas(mesh) > 0).all()


SYMMETRIES = {f"rot_{ax}{deg}": rotation(ax, deg) for ax in "xyz" for deg in (90, 180)}
SYMMETRIES.update({f"mirror_{ax}": np.diag([-1.0 if i == k else 1.0 for i in range(3)]) for k, ax in enumerate("xyz")})
#: a surface point "moved" if it is farther than this (bbox diagonal 1) from the untransformed surface
MOVED_DISTANCE = 0.03
#: fraction of surface points that must move under every symmetry (observed minimum over 180 instances: 0.028)
MIN_MOVED_FRACTION = 0.015


@pytest.mark.parametrize("class_name", list(CLASSES))
def test_procedural_asymmetric(class_name):
    rng = np.random.default_rng(0)
    for index in (0, 1):
        mesh = generate(class_name, 7, index)
        dense = surface_samples(mesh, 15000, rng)
        probe = surface_samples(mesh, 800, rng)
        tree = cKDTree(dense)
        assert (tree.query(probe)[0] > MOVED_DISTANCE).mean() == 0      # the metric's noise floor
        for name, r in SYMMETRIES.items():
            moved = max((tree.query(probe @ r.T)[0] > MOVED_DISTANCE).mean(),
                        (cKDTree(dense @ r.T).query(probe)[0] > MOVED_DISTANCE).mean())
            assert moved > MIN_MOVED_FRACTION, f"{class_name} #{index} is nearly invariant under {name}: {moved:.3f}"


def nearest_class_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class means on even-indexed samples of each class, score on the rest."""
    train = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        train[np.flatnonzero(labels == c)[::2]] = True
    classes = np.unique(labels)
    means = np.stack([features[train & (labels == c)].mean(0) for c in classes])
    pred = classes[np.argmin(((features[~train, None] - means[None]) ** 2).sum(-1), 1)]
    return float((pred == labels[~train]).mean())


def test_procedural_colour_does_not_reveal_class():
    src = make_source("procedural", num_objects=20 * K, seed=0)
    colour, shape, labels = [], [], []
    for ref in src.objects():
        mesh = src.load(ref)
        w = face_areas(mesh)
        colour.append((mesh.face_colors * w[:, None]).sum(0) / w.sum())
        shape.append(np.sort(np.ptp(mesh.verts, 0)))
        labels.append(list(CLASSES).index(ref.class_name))
    labels = np.array(labels)
    chance = 1 / K
    assert nearest_class_mean_accuracy(np.array(colour), labels) < chance + 0.12   # colour: near chance
    assert nearest_class_mean_accuracy(np.array(shape), labels) > 0.5              # the probe itself works


def test_procedural_bad_options():
    for n in (0, -3):
        with pytest.raises(ValueError, match=r"num_objects \(--objects\) must be an integer >= 1"):
            make_source("procedural", num_objects=n)
    with pytest.raises(ValueError, match="does not take a source root"):
        make_source("procedural", root="/tmp")
    with pytest.raises(ValueError, match="does not take an object list"):
        make_source("procedural", object_list="x.txt")


# ---------------------------------------------------------------- mesh files

CUBE_OBJ = """mtllib cube.mtl
v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 2\nv 1 0 2\nv 1 1 2\nv 0 1 2
usemtl red
f 1 3 2\nf 1 4 3\nf 5 6 7\nf 5 7 8
usemtl blue
f 1 2 6\nf 1 6 5\nf 2 3 7\nf 2 7 6\nf 3 4 8\nf 3 8 7\nf 4 1 5\nf 4 5 8
"""
CUBE_MTL = "newmtl red\nKd 1.0 0.0 0.0\nnewmtl blue\nKd 0.0 0.0 1.0\n"
TETRA_PLY = """ply
format ascii 1.0
element vertex 4
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
element face 4
property list uchar int vertex_indices
end_header
0 0 0 255 0 0
3 0 0 255 0 0
0 1 0 255 0 0
0 0 1 255 0 0
3 0 2 1
3 0 1 3
3 0 3 2
3 1 2 3
"""
PYRAMID_OFF = "OFF\n5 4 0\n0 0 0\n2 0 0\n2 2 0\n0 2 0\n1 1 4\n3 0 1 4\n3 1 2 4\n3 2 3 4\n3 3 0 4\n"


def make_mesh_folder(root: Path) -> Path:
    (root / "mug").mkdir(parents=True)
    shutil.copy(FIXTURE_MUG, root / "mug" / "mug.obj")
    (root / "cube").mkdir()
    (root / "cube" / "cube.obj").write_text(CUBE_OBJ)
    (root / "cube" / "cube.mtl").write_text(CUBE_MTL)
    (root / "cube" / "tetra.ply").write_text(TETRA_PLY)
    (root / "pyramid").mkdir()
    (root / "pyramid" / "pyramid.off").write_text(PYRAMID_OFF)
    return root


def test_mesh_folder_loads_obj_ply_off_with_colours(tmp_path, caplog):
    root = make_mesh_folder(tmp_path / "meshes")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no meshes here")
    with caplog.at_level(logging.WARNING):
        src = make_source("mesh-folder", root=root)
    assert "empty" in caplog.text and "dropped" in caplog.text
    refs = src.objects()
    assert [r.object_id for r in refs] == ["cube-cube", "cube-tetra", "mug-mug", "pyramid-pyramid"]
    assert len({r.synset for r in refs}) == 3 and all(len(r.synset) == 8 and r.synset.isdigit() for r in refs)
    assert src.describe()["dropped_classes"] == ["empty"]
    meshes = {r.object_id: src.load(r) for r in refs}
    for m in meshes.values():
        assert_normalised(m)
    cube = meshes["cube-cube"]
    np.testing.assert_allclose(cube.face_colors[:4], [[1, 0, 0]] * 4)         # Kd of "red"
    np.testing.assert_allclose(cube.face_colors[4:], [[0, 0, 1]] * 8)         # Kd of "blue"
    np.testing.assert_allclose(meshes["cube-tetra"].face_colors, [[1, 0, 0]] * 4)   # PLY vertex colours
    np.testing.assert_allclose(meshes["pyramid-pyramid"].face_colors, [[0.6, 0.6, 0.6]] * 4)  # no colour: grey
    np.testing.assert_allclose(np.ptp(cube.verts, 0), np.array([1, 1, 2]) / np.sqrt(6), atol=1e-6)  # kept z-up
    assert len(meshes["mug-mug"].faces) == 4736
    assert [r.object_id for r in make_source("mesh-folder", root=root, num_objects=2).objects()] == \
        ["cube-cube", "mug-mug"]


def write_glb(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """Minimal binary glTF 2.0: one triangle mesh (positions + uint32 indices), no material."""
    import json
    import struct

    pos, idx = verts.astype("<f4").tobytes(), faces.astype("<u4").tobytes()
    gltf = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "buffers": [{"byteLength": len(pos) + len(idx)}],
            "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(pos)},
                            {"buffer": 0, "byteOffset": len(pos), "byteLength": len(idx)}],
            "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(verts), "type": "VEC3",
                           "min": verts.min(0).tolist(), "max": verts.max(0).tolist()},
                          {"bufferView": 1, "componentType": 5125, "count": faces.size, "type": "SCALAR"}]}
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    body = pos + idx
    chunks = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(body), 0x004E4942) + body
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks)


def test_mesh_folder_glb(tmp_path):
    verts, faces = box((1.0, 2.0, 4.0))
    (tmp_path / "boxes").mkdir()
    write_glb(tmp_path / "boxes" / "b.glb", verts, faces)
    src = make_source("mesh-folder", root=tmp_path)
    mesh = src.load(src.objects()[0])
    assert_normalised(mesh)
    assert len(mesh.faces) == 12
    np.testing.assert_allclose(np.sort(np.ptp(mesh.verts, 0)), np.array([1, 2, 4]) / np.sqrt(21), atol=1e-5)
    np.testing.assert_allclose(mesh.face_colors, 0.6)


def test_mesh_folder_corrupt_mesh_raises_mesh_load_error(tmp_path):
    (tmp_path / "junk").mkdir()
    bad = {"broken.obj": "v 0 0 0\nv 1 0 0\nf 1 2 9\n", "garbage.ply": "not a ply file\n",
           "empty.off": "", "flat.obj": "v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n"}
    for name, text in bad.items():
        (tmp_path / "junk" / name).write_text(text)
    src = make_source("mesh-folder", root=tmp_path)
    assert len(src.objects()) == len(bad)
    for ref in src.objects():
        with pytest.raises(MeshLoadError) as err:
            src.load(ref)
        assert err.value.path == ref.path and ref.path in str(err.value) and err.value.reason
    (tmp_path / "junk" / "broken.obj").unlink()
    with pytest.raises(MeshLoadError, match="file not found"):
        src.load(next(r for r in src.objects() if r.path.endswith("broken.obj")))


def test_mesh_folder_bad_roots(tmp_path):
    with pytest.raises(ValueError, match=r"'mesh-folder' needs a source root \(--source-root\)"):
        make_source("mesh-folder")
    with pytest.raises(FileNotFoundError, match="source root .* not found: .*nowhere"):
        make_source("mesh-folder", root=tmp_path / "nowhere")
    (tmp_path / "file.obj").write_text("v 0 0 0\n")
    with pytest.raises(NotADirectoryError, match="not a folder: .*file.obj"):
        make_source("mesh-folder", root=tmp_path / "file.obj")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="no class folder holds a mesh file"):
        make_source("mesh-folder", root=tmp_path)
    with pytest.raises(ValueError, match="does not take an object list"):
        make_source("mesh-folder", root=tmp_path, object_list="x.npy")


# ---------------------------------------------------------------- ShapeNet layout

# a y-up box: 0.2 wide (x), 1.0 tall (y), 0.4 deep (z)
SHAPENET_OBJ = CUBE_OBJ.replace("mtllib cube.mtl", "mtllib model_normalized.mtl")


def make_shapenet(root: Path, models: dict[str, list[str]]) -> Path:
    for synset, ids in models.items():
        for i in ids:
            d = root / synset / i / "models"
            d.mkdir(parents=True)
            lines = [(" ".join(f"{float(c) * s}" for c, s in zip(l.split()[1:], (0.2, 1.0, 0.2))) if l.startswith("v ")
                      else None) for l in SHAPENET_OBJ.splitlines()]
            text = "\n".join(f"v {l}" if l else orig for l, orig in zip(lines, SHAPENET_OBJ.splitlines()))
            (d / "model_normalized.obj").write_text(text + "\n")
            (d / "model_normalized.mtl").write_text(CUBE_MTL)
    return root


def test_shapenet_layout_orientation_and_names(tmp_path, caplog):
    root = make_shapenet(tmp_path / "sn", {"02691156": ["b2", "a1"], "03797390": ["c3", "a1"]})
    (root / "03797390" / "d4").mkdir()                                    # a model folder without its model
    with caplog.at_level(logging.WARNING):
        src = make_source("shapenet", root=root)
    assert "lack" in caplog.text
    refs = src.objects()
    assert [(r.synset, r.object_id) for r in refs] == [
        ("02691156", "a1"), ("02691156", "b2"), ("03797390", "a1-03797390"), ("03797390", "c3")]
    assert refs[0].class_name == "02691156"
    mesh = src.load(refs[0])
    assert_normalised(mesh)
    ext = np.ptp(mesh.verts, 0)
    assert np.argmax(ext) == 2 and ext[1] == pytest.approx(0.4 / np.sqrt(0.04 + 1 + 0.16), abs=1e-5)  # y-up -> z-up
    np.testing.assert_allclose(mesh.face_colors[:4], [[1, 0, 0]] * 4)
    (root / "taxonomy.json").write_text('[{"synsetId": "02691156", "name": "airplane,aeroplane,plane"},'
                                        ' {"synsetId": "03797390", "name": "mug"}]')
    refs = make_source("shapenet", root=root, num_objects=2).objects()
    assert [(r.class_name, r.object_id) for r in refs] == [("airplane", "a1"), ("mug", "a1-03797390")]


@pytest.mark.parametrize("kind", ["npy_pairs", "npy_strings", "txt"])
def test_shapenet_object_lists(tmp_path, kind):
    root = make_shapenet(tmp_path / "sn", {"02691156": ["a1", "b2"], "03797390": ["c3"]})
    wanted = [("03797390", "c3"), ("02691156", "b2")]
    if kind == "npy_pairs":
        path = tmp_path / "objects.npy"
        np.save(path, np.array(wanted))
    elif kind == "npy_strings":
        path = tmp_path / "train_images.npy"
        np.save(path, np.array([f"/{s}/{i}" for s, i in wanted]))
    else:
        path = tmp_path / "objects.txt"
        path.write_text("# synset/id or synset id\n03797390/c3\n\n02691156 b2\n")
    src = make_source("shapenet", root=root, object_list=path)
    assert [(r.synset, r.object_id) for r in src.objects()] == wanted
    assert src.describe()["object_list"] == str(path.resolve())
    assert_normalised(src.load(src.objects()[0]))


def test_shapenet_bad_input(tmp_path):
    root = make_shapenet(tmp_path / "sn", {"02691156": ["a1"]})
    listed = tmp_path / "list.txt"
    listed.write_text("02691156/a1\n02691156/zz9\n04379243/q\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt: 2 listed model\(s\) missing .*02691156/zz9"):
        make_source("shapenet", root=root, object_list=listed)
    listed.write_text("02691156/a1/extra\n")
    with pytest.raises(ValueError, match="entry 0: expected 'synset/id'"):
        make_source("shapenet", root=root, object_list=listed)
    with pytest.raises(FileNotFoundError, match="object list not found"):
        make_source("shapenet", root=root, object_list=tmp_path / "nope.npy")
    bad_npy = tmp_path / "bad.npy"
    np.save(bad_npy, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"expected shape \(N, 2\)"):
        make_source("shapenet", root=root, object_list=bad_npy)
    with pytest.raises(FileNotFoundError, match="source root"):
        make_source("shapenet", root=tmp_path / "missing")
    (tmp_path / "hollow" / "02691156" / "a1").mkdir(parents=True)
    with pytest.raises(ValueError, match="no model found"):
        make_source("shapenet", root=tmp_path / "hollow")
