"""Original 3DIEBench layout: export -> import round trip, channel order, folder reader, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ssl_eq.datasets import NativeDataset, PairDataset, ThreeDIEBenchFolder, make_synthetic_dataset
from ssl_eq.datasets.native import list_complete_shards, read_manifest, shard_dir, write_manifest, write_shard
from ssl_eq.datasets.threedie import export_3diebench, import_3diebench

OPTS = dict(workers=1, progress=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("rt")
    src = make_synthetic_dataset(base / "native", num_objects=9, views=3, size=32, variant="3diebench-t")
    return src, export_3diebench(src, base / "orig", **OPTS)


def test_export_layout_is_original(exported):
    src, orig = exported
    ds = NativeDataset(src)
    names = np.load(orig / "train_images.npy")
    assert names.dtype.kind == "U" and all(n.startswith("/9000000") and n.count("/") == 2 for n in names)
    assert np.load(orig / "train_labels.npy").tolist() == ds.labels[ds.split_indices("train")].tolist()
    obj = orig / names[0].lstrip("/")
    lat = np.load(obj / "latent_2.npy")
    assert lat.dtype == np.float64 and lat.shape == (10,)
    assert sorted(p.name for p in obj.iterdir()) == [f"{k}_{i}.{e}" for k, e in (("image", "jpg"), ("latent", "npy"))
                                                     for i in range(3)]


def test_export_import_round_trip(exported, tmp_path):
    src, orig = exported
    a = NativeDataset(src)
    out = import_3diebench(orig, tmp_path / "back", objects_per_shard=4, encoding="raw", **OPTS)
    b = NativeDataset(out)
    assert b.variant == a.variant and b.manifest["skipped"] == [] and len(list_complete_shards(out)) == 3
    order = [b.index_of(o) for o in a.object_ids]
    assert np.array_equal(b.latents[order], a.latents)  # float32 -> float64 -> float32: identical
    assert np.array_equal(b.labels[order], a.labels)
    assert b.manifest["split"] == a.manifest["split"] and b.synsets == a.synsets
    diff = np.abs(b.get_views(order[4], [0, 1, 2]).astype(int) - a.get_views(4, [0, 1, 2]).astype(int))
    assert diff.mean() < 5 and np.median(diff) <= 3  # JPEG tolerance (4:2:0 chroma, sharp 32 px edges)


def _red_floor(tmp_path, size=16):
    img = np.zeros((1, 2, size, size, 3), np.uint8)
    img[..., 0] = 200  # red render
    root = tmp_path / "red"
    write_shard(root, 0, images=img, latents=np.zeros((1, 2, 7), np.float32), labels=np.zeros(1, np.int64),
                object_ids=["red"])
    write_manifest(root, {"config": {}, "source": {}, "variant": "3diebench", "latent_schema": [
        "rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue"], "image_size": size,
        "views": 2, "encoding": "raw", "class_names": ["c"], "synsets": ["01234567"], "num_objects": 1,
        "shards": [{"name": "shard-00000", "index": 0, "num_objects": 1}], "split": {"train": ["red"], "val": []}})
    return root


def test_channel_order_red_floor(tmp_path):
    root = _red_floor(tmp_path)
    orig = export_3diebench(root, tmp_path / "orig", **OPTS)  # default "bgr": what the original dataset holds
    on_disk = np.asarray(Image.open(orig / "01234567" / "red" / "image_0.jpg").convert("RGB")).mean((0, 1))
    assert on_disk[2] > 150 and on_disk[0] < 50  # PIL sees a blue floor, as cv2.imwrite of an RGB render gives
    back = NativeDataset(import_3diebench(orig, tmp_path / "back", **OPTS)).get_views(0, [0]).mean((0, 1, 2))
    assert back[0] > 150 and back[2] < 50  # red again
    assert ThreeDIEBenchFolder(orig).read_views([0], [1])[0, 0].float().mean() > 150
    rgb = export_3diebench(root, tmp_path / "rgb", channel_order="rgb", **OPTS)
    assert np.asarray(Image.open(rgb / "01234567" / "red" / "image_0.jpg"))[..., 0].mean() > 150
    assert ThreeDIEBenchFolder(rgb, channel_order="bgr").read_views([0], [0])[0, 2].float().mean() > 150


def test_import_jpeg_keeps_the_original_files(exported, tmp_path):
    """--encoding jpeg stores each view file byte for byte (no second compression); reads give the render's
    colours (the files' channel order is recorded and swapped back), like the folder reader."""
    _, orig = exported
    out = import_3diebench(orig, tmp_path / "jpeg", objects_per_shard=4, encoding="jpeg", **OPTS)
    ds, folder = NativeDataset(out), ThreeDIEBenchFolder(orig)
    metas = [json.loads((shard_dir(out, s) / "shard.json").read_text()) for s in list_complete_shards(out)]
    for s, meta in enumerate(metas):
        data, offsets = np.load(shard_dir(out, s) / "jpeg_data.npy"), np.load(shard_dir(out, s) / "jpeg_offsets.npy")
        for i, oid in enumerate(meta["object_ids"]):
            obj_dir = folder.object_dir(folder.object_ids.index(oid))
            for k in range(ds.views):
                item = i * ds.views + k
                assert data[offsets[item]:offsets[item + 1]].tobytes() == (obj_dir / f"image_{k}.jpg").read_bytes()
    assert ds.channel_order == read_manifest(out)["channel_order"] == "bgr"
    assert [m["channel_order"] for m in metas] == ["bgr"] * 3
    obj = folder.object_ids.index(ds.object_ids[5])
    mine = ds.read_views([5, 5], [0, 2]).int()
    theirs = folder.read_views([obj, obj], [0, 2]).int()  # PIL decode, swapped to the render's colours
    assert (mine - theirs).abs().max() <= 2 and (mine - theirs).abs().float().mean() < 0.1


def test_folder_as_source(exported):
    src, orig = exported
    folder = ThreeDIEBenchFolder(orig)
    assert folder.variant == "3diebench-t" and folder.views == 3 and folder.image_size == 32
    item = PairDataset(folder, split="val")[0]
    assert item["images"].shape == (2, 3, 32, 32) and item["rel_translation_base"].shape == (3,)
    assert len(folder.split_indices("train")) + len(folder.split_indices("val")) == len(folder) == 9


def test_import_skips_bad_objects_and_resumes(exported, tmp_path):
    import shutil

    _, orig = exported
    bad = tmp_path / "bad"
    shutil.copytree(orig, bad)
    names = np.load(bad / "train_images.npy")
    objs = [bad / n.lstrip("/") for n in names]
    (objs[0] / "image_1.jpg").unlink()
    data = (objs[1] / "image_0.jpg").read_bytes()
    (objs[1] / "image_0.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    np.save(objs[2] / "latent_2.npy", np.zeros(5))  # wrong length
    out = import_3diebench(bad, tmp_path / "out", objects_per_shard=4, **OPTS)
    m = read_manifest(out)
    reasons = {s["object_id"]: s for s in m["skipped"]}
    assert list(reasons) == [o.name for o in objs[:3]] and m["num_objects"] == 6
    assert reasons[objs[0].name]["path"].endswith("image_1.jpg") and "missing" in reasons[objs[0].name]["reason"]
    assert "image_0.jpg" in reasons[objs[1].name]["reason"] and "not a complete JPEG" in reasons[objs[1].name]["reason"]
    assert "latent_2.npy: expected a latent of shape (10,)" in reasons[objs[2].name]["reason"]
    assert not set(reasons) & set(m["split"]["train"])
    stamp = (out / "shards" / "shard-00000" / "shard.json").stat().st_mtime_ns
    import_3diebench(bad, tmp_path / "out", objects_per_shard=4, **OPTS)  # resume: nothing rewritten
    assert (out / "shards" / "shard-00000" / "shard.json").stat().st_mtime_ns == stamp
    assert read_manifest(out)["skipped"] == m["skipped"]
    with pytest.raises(ValueError, match="render_config.json records different import options"):
        import_3diebench(bad, tmp_path / "out", objects_per_shard=5, **OPTS)


def test_folder_bad_input(exported, tmp_path):
    import shutil

    _, orig = exported
    with pytest.raises(NotADirectoryError, match="not a 3DIEBench folder"):
        ThreeDIEBenchFolder(tmp_path / "missing")
    bad = tmp_path / "bad"
    shutil.copytree(orig, bad)
    (bad / "val_labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing split file .*val_labels.npy"):
        ThreeDIEBenchFolder(bad)
    np.save(bad / "val_labels.npy", np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"val_labels.npy: expected one label per entry"):
        ThreeDIEBenchFolder(bad)
    np.save(bad / "val_labels.npy", np.load(orig / "val_labels.npy"))
    first = bad / np.load(bad / "train_images.npy")[0].lstrip("/")
    np.save(first / "latent_1.npy", np.zeros(8))
    with pytest.raises(ValueError, match=r"latent_1.npy: expected a latent of shape \(10,\)"):
        ThreeDIEBenchFolder(bad).read_latents(0, [0, 1])
    (first / "image_2.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.raises(ValueError, match=r"image_2.jpg: not a complete JPEG"):
        ThreeDIEBenchFolder(bad).read_views([0], [2])
