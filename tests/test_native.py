"""Native format: writer atomicity, manifest validation, reader and bad input."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from ssl_eq.datasets import native
from ssl_eq.datasets.native import (FORMAT_VERSION, NativeDataset, is_shard_complete, list_complete_shards,
                                    read_manifest, shard_dir, write_shard)
from ssl_eq.datasets.synthetic import make_synthetic_dataset


def _arrays(k=2, v=3, size=8, d=7, seed=0):
    rng = np.random.default_rng(seed)
    return dict(images=rng.integers(0, 256, (k, v, size, size, 3), dtype=np.uint8),
                latents=rng.normal(size=(k, v, d)).astype(np.float32), labels=np.arange(k),
                object_ids=[f"o{i}" for i in range(k)])


def test_write_shard_complete_and_never_rewritten(tmp_path):
    arrs = _arrays()
    path = write_shard(tmp_path, 0, **arrs)
    assert path == shard_dir(tmp_path, 0) and path.name == "shard-00000"
    assert is_shard_complete(tmp_path, 0) and list_complete_shards(tmp_path) == [0]
    assert np.array_equal(np.load(path / "images.npy"), arrs["images"])
    assert json.loads((path / "shard.json").read_text())["object_ids"] == ["o0", "o1"]
    with pytest.raises(FileExistsError, match="shard-00000"):
        write_shard(tmp_path, 0, **_arrays(seed=1))
    assert np.array_equal(np.load(path / "images.npy"), arrs["images"])  # untouched


def test_write_shard_failure_leaves_no_shard(tmp_path, monkeypatch):
    calls = []

    def failing_save(path, array):
        calls.append(path.name)
        if path.name == "latents.npy":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, array)

    real_save = native._save_npy
    monkeypatch.setattr(native, "_save_npy", failing_save)
    with pytest.raises(OSError, match=r"shard-00003.*No space left"):
        write_shard(tmp_path, 3, **_arrays())
    assert "images.npy" in calls and not shard_dir(tmp_path, 3).exists()
    assert list((tmp_path / "shards").iterdir()) == [] and list_complete_shards(tmp_path) == []
    monkeypatch.setattr(native, "_save_npy", real_save)
    write_shard(tmp_path, 3, **_arrays())  # a retry succeeds
    assert list_complete_shards(tmp_path) == [3]


def test_stale_temp_ignored_by_reader_and_cleaned_by_writer(tmp_path):
    stale = tmp_path / "shards" / ".shard-00000.tmp-dead"
    stale.mkdir(parents=True)
    (stale / "shard.json").write_text("{}")
    assert list_complete_shards(tmp_path) == [] and not is_shard_complete(tmp_path, 0)
    write_shard(tmp_path, 0, **_arrays())
    assert not stale.exists() and list_complete_shards(tmp_path) == [0]


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_reader_round_trip(tmp_path, encoding):
    make_synthetic_dataset(tmp_path, num_objects=10, views=4, size=32, encoding=encoding, objects_per_shard=4)
    raw = NativeDataset(make_synthetic_dataset(tmp_path / "raw", num_objects=10, views=4, size=32,
                                               objects_per_shard=4))
    ds = NativeDataset(tmp_path)
    assert len(ds) == 10 and ds.latents.shape == (10, 4, 7) and ds.labels.tolist() == [i % 3 for i in range(10)]
    views = ds.get_views(9, [3, 0])  # object in the last shard
    assert views.shape == (2, 32, 32, 3) and views.dtype == np.uint8
    tol = 0 if encoding == "raw" else 12
    assert np.abs(views.astype(int) - raw.get_views(9, [3, 0]).astype(int)).mean() <= tol
    train, val = ds.split_indices("train"), ds.split_indices("val")
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(10))
    # synthetic latents follow the 3DIEBench ranges
    lat = ds.latents
    assert np.all(np.abs(lat[..., :3]) <= np.pi / 2) and np.all((lat[..., 3] >= 0) & (lat[..., 3] <= 1))
    assert np.all((lat[..., 4] >= 0) & (lat[..., 4] <= np.pi / 4)) and np.all(lat[..., 5] <= 2 * np.pi)


def test_synthetic_images_follow_latents(tmp_path):
    ds = NativeDataset(make_synthetic_dataset(tmp_path, num_objects=3, views=5, size=32))
    imgs = ds.get_views(0, range(5)).astype(float)
    assert np.abs(imgs[0] - imgs[1]).mean() > 5  # different latents, different pictures


def test_manifest_bad_input(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a dataset folder"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        read_manifest(tmp_path)
    root = make_synthetic_dataset(tmp_path / "d", num_objects=4, views=2, size=8)
    m = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**m, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match=r"manifest.json: unknown format_version 2"):
        read_manifest(root)
    (root / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if k != "split"}))
    with pytest.raises(ValueError, match=r"manifest.json: missing manifest keys \['split'\]"):
        read_manifest(root)
    (root / "manifest.json").write_text(json.dumps({**m, "split": {"train": ["ghost"], "val": []}}))
    with pytest.raises(ValueError, match=r"manifest.json: split 'train' names 1 objects not present.*ghost"):
        NativeDataset(root).split_indices("train")


def test_truncated_jpeg_in_shard_names_object(tmp_path):
    root = make_synthetic_dataset(tmp_path, num_objects=3, views=2, size=16, encoding="jpeg")
    data_file = shard_dir(root, 0) / "jpeg_data.npy"
    offsets = np.load(shard_dir(root, 0) / "jpeg_offsets.npy")
    data = np.load(data_file)
    data[offsets[2] + 20: offsets[3]] = 0  # object 1, view 0: wipe everything after the header
    np.save(data_file, data)
    with pytest.raises(ValueError, match=r"jpeg_data.npy: object 'synth-00001' view 0"):
        NativeDataset(root).get_views(1, [1, 0])


def test_wrong_latent_length_in_shard(tmp_path):
    root = make_synthetic_dataset(tmp_path, num_objects=3, views=2, size=8)
    np.save(shard_dir(root, 0) / "latents.npy", np.zeros((3, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"latents.npy: expected shape \(3, 2, 7\)"):
        NativeDataset(root)


@pytest.mark.parametrize("labels, fraction, n_val", [
    ([0, 3, 7, 11], 0.5, 2),                # 4 objects of 12 classes: per-class rounding gave an empty val split
    ([0, 1, 2, 3, 4, 5], 0.25, 2),          # round(1.5) half up, one object in each of two classes
    ([0] * 5 + [1] * 3 + [2] * 2 + [3], 0.3, 3),
    ([0] * 10 + [1] * 10, 0.2, 4),          # exact shares: 2 per class
    ([0, 0, 1], 0.9, 2),                    # train keeps at least one object
    ([0, 1, 2], 0.0, 0),
])
def test_stratified_split_gives_the_val_size_asked_for(labels, fraction, n_val):
    ids = [f"o{i}" for i in range(len(labels))]
    split = native.stratified_split(ids, labels, fraction, seed=1)
    assert len(split["val"]) == n_val
    assert sorted(split["train"] + split["val"]) == sorted(ids)
    of = dict(zip(ids, labels))
    for c in set(labels):  # stratified: each class gets the floor or the ceiling of its share
        share = fraction * labels.count(c)
        assert np.floor(share) <= sum(of[o] == c for o in split["val"]) <= np.ceil(share)
    assert native.stratified_split(ids, labels, fraction, seed=1) == split


def test_stratified_split_spreads_ties_over_classes():
    """Classes with equal remainders get the extra val objects in an order that depends on the seed."""
    labels = list(range(12))
    chosen = {tuple(sorted(native.stratified_split([f"o{i}" for i in labels], labels, 0.25, seed=s)["val"]))
              for s in range(5)}
    assert all(len(c) == 3 for c in chosen) and len(chosen) > 1


def test_stored_jpeg_files_and_channel_order_bad_input(tmp_path):
    arrs = _arrays()
    with pytest.raises(ValueError, match=r"jpeg_bytes needs encoding 'jpeg' and K\*V=6 files"):
        write_shard(tmp_path, 0, **arrs, encoding="jpeg", jpeg_bytes=[b"x"] * 5)
    with pytest.raises(ValueError, match="channel_order must be 'rgb', or 'bgr' for stored jpeg_bytes"):
        write_shard(tmp_path, 0, **arrs, encoding="jpeg", channel_order="bgr")
    root = make_synthetic_dataset(tmp_path / "d", num_objects=3, views=2, size=8)
    m = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**m, "channel_order": "bgr"}))
    with pytest.raises(ValueError, match=r"channel_order must be one of \('rgb', 'bgr'\).*with encoding 'raw'"):
        read_manifest(root)
