"""Relative transformations, view / pair / sequence datasets, samplers, datamodule."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ssl_eq.datasets import (EpochSampler, FixedPairDataset, NativeDataset, PairDataset, SequenceDataset,
                             ViewDataset, make_synthetic_dataset, relative_transform, sequence_actions)
from ssl_eq.datasets.synthetic import sample_latents
from ssl_eq.geometry import euler_xyz_to_matrix, quaternion_to_matrix


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return NativeDataset(make_synthetic_dataset(tmp_path_factory.mktemp("d"), num_objects=12, views=6, size=16,
                                                variant="3diebench-t"))


def test_relative_rotation_matches_scipy():
    lat = sample_latents(np.random.default_rng(0), (64, 2), "3diebench-t").astype(np.float64)
    a1, a2 = lat[:, 0], lat[:, 1]
    ref = Rotation.from_euler("xyz", a1[:, :3]).inv() * Rotation.from_euler("xyz", a2[:, :3])
    out = relative_transform(torch.from_numpy(a1), torch.from_numpy(a2))
    assert np.allclose(out["rel_rotation_matrix"].numpy(), ref.as_matrix(), atol=1e-5)
    q_ref = ref.as_quat()[:, [3, 0, 1, 2]]  # scipy xyzw -> wxyz
    q_ref *= np.sign(q_ref[:, :1])
    assert np.allclose(out["rel_rotation_quat"].numpy(), q_ref, atol=1e-5)
    assert (out["rel_rotation_quat"][:, 0] >= 0).all()
    euler_back = Rotation.from_euler("xyz", out["rel_rotation_euler"].numpy()).as_matrix()
    assert np.allclose(euler_back, ref.as_matrix(), atol=1e-5)
    assert np.allclose(out["rel_rotation_euler"].numpy(), ref.as_euler("xyz"), atol=1e-4)


def test_scipy_quaternion_sign_matches_scipy_on_3diebench_latents():
    """`quaternion_sign="scipy"` is scipy's (R1.inv() * R2).as_quat() to the sign, including the pairs with w < 0
    (scipy composes the stored quaternions, it does not convert the composed matrix); "canonical" is its w >= 0 form."""
    lat = sample_latents(np.random.default_rng(1), (20000, 2), "3diebench").astype(np.float64)
    ref = Rotation.from_euler("xyz", lat[:, 0, :3]).inv() * Rotation.from_euler("xyz", lat[:, 1, :3])
    q_ref = ref.as_quat()[:, [3, 0, 1, 2]]  # scipy xyzw -> wxyz
    negative = q_ref[:, 0] < 0
    assert 0.03 < negative.mean() < 0.06  # sie.md §2: ~4.4 % of 3DIEBench pairs
    a1, a2 = torch.from_numpy(lat[:, 0]), torch.from_numpy(lat[:, 1])
    scipy_q = relative_transform(a1, a2, quaternion_sign="scipy")["rel_rotation_quat"].numpy()
    assert np.abs(scipy_q - q_ref).max() < 1e-5
    canonical = relative_transform(a1, a2)["rel_rotation_quat"].numpy()
    assert np.abs(canonical - q_ref * np.where(negative, -1, 1)[:, None]).max() < 1e-5
    wide = sample_latents(np.random.default_rng(2), (500, 2), "3diebench").astype(np.float64) * 2  # |angles| ≤ π
    ref = Rotation.from_euler("xyz", wide[:, 0, :3]).inv() * Rotation.from_euler("xyz", wide[:, 1, :3])
    out = relative_transform(torch.from_numpy(wide[:, 0]), torch.from_numpy(wide[:, 1]), quaternion_sign="scipy")
    assert np.abs(out["rel_rotation_quat"].numpy() - ref.as_quat()[:, [3, 0, 1, 2]]).max() < 1e-5


def test_conventions_reach_pair_and_sequence_items(ds):
    lat = torch.tensor([[0.0, 0.0, 0.0, 0.9, 0.1, 0.2, 0.05], [0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.95]])
    assert torch.allclose(relative_transform(lat[0], lat[1], colour_targets="raw")["rel_latents"][[0, 3]],
                          torch.tensor([-0.8, 0.9]))
    assert torch.allclose(relative_transform(lat[0], lat[1])["rel_latents"][[0, 3]], torch.tensor([0.2, -0.1]),
                          atol=1e-6)
    item = PairDataset(ds, split=None, seed=0, quaternion_sign="scipy", colour_targets="raw")[(0, 2)]
    expect = relative_transform(item["latents"][0], item["latents"][1], "scipy", "raw")
    assert all(torch.allclose(item[k], v) for k, v in expect.items())
    seq = SequenceDataset(ds, num_views=4, quaternion_sign="scipy")[1]
    assert torch.allclose(seq["rel_rotation_quat"], sequence_actions(seq["latents"], "scipy")["rel_rotation_quat"])
    with pytest.raises(ValueError, match="data.quaternion_sign"):
        PairDataset(ds, quaternion_sign="positive")


def test_conventions_are_pretrain_options_reaching_the_datamodule(tmp_path):
    from ssl_eq.datasets import SSLDataModule
    from ssl_eq.methods import compose_config

    assert compose_config().data.quaternion_sign == "canonical" and compose_config().data.colour_targets == "wrapped"
    paper = compose_config(["experiment=sie_3diebench"]).data
    assert (paper.quaternion_sign, paper.colour_targets) == ("scipy", "raw")
    root = make_synthetic_dataset(tmp_path / "d", num_objects=4, views=3, size=8)
    dm = SSLDataModule(root, kind="pair", batch_size=2, quaternion_sign="scipy", colour_targets="raw")
    dm.setup()
    assert dm.train_set.conventions == dm.val_set.conventions == {"quaternion_sign": "scipy", "colour_targets": "raw"}
    with pytest.raises(ValueError, match="data.colour_targets"):
        SSLDataModule(root, colour_targets="modulo")


def test_relative_other_latents_and_translation():
    lat1 = torch.tensor([[0.3, -0.2, 1.0, 0.95, 0.1, 6.2, 0.05, 0.1, -0.2, 0.3]])
    lat2 = torch.tensor([[-0.5, 0.4, 0.2, 0.05, 0.7, 0.1, 0.9, -0.4, 0.5, 0.0]])
    out = relative_transform(lat1, lat2)
    assert torch.allclose(out["rel_latents"], torch.tensor([[0.1, 0.6, 0.1 - 6.2 + 2 * np.pi, -0.15]]), atol=1e-5)
    r1, r2 = Rotation.from_euler("xyz", lat1[0, :3]), Rotation.from_euler("xyz", lat2[0, :3])
    t1, t2 = lat1[0, 7:].numpy(), lat2[0, 7:].numpy()
    assert np.allclose(out["rel_translation_object"][0], t2 - t1, atol=1e-6)
    assert np.allclose(out["rel_translation_base"][0], r2.apply(t2) - r1.apply(t1), atol=1e-5)
    assert "rel_translation_base" not in relative_transform(lat1[:, :7], lat2[:, :7])


def test_sequence_actions_compose_to_first_last(ds):
    item = SequenceDataset(ds, num_views=5)[3]
    assert item["images"].shape == (5, 3, 16, 16) and item["rel_rotation_quat"].shape == (4, 4)
    composed = torch.eye(3)
    for q in item["rel_rotation_quat"]:
        composed = composed @ quaternion_to_matrix(q)
    rots = euler_xyz_to_matrix(item["latents"][:, :3])
    assert torch.allclose(composed, rots[0].T @ rots[-1], atol=1e-5)
    assert torch.allclose(sequence_actions(item["latents"])["rel_rotation_matrix"], item["rel_rotation_matrix"])


def test_pair_item_contract(ds):
    item = PairDataset(ds)[0]
    expect = {"images": ((2, 3, 16, 16), torch.uint8), "latents": ((2, 10), torch.float32),
              "label": ((), torch.int64), "object_index": ((), torch.int64), "view_indices": ((2,), torch.int64),
              "rel_rotation_quat": ((4,), torch.float32), "rel_rotation_matrix": ((3, 3), torch.float32),
              "rel_rotation_euler": ((3,), torch.float32), "rel_latents": ((4,), torch.float32),
              "rel_translation_object": ((3,), torch.float32), "rel_translation_base": ((3,), torch.float32),
              "rel_matrix_object": ((4, 4), torch.float32), "rel_matrix_base": ((4, 4), torch.float32)}
    assert {k: (tuple(v.shape), v.dtype) for k, v in item.items()} == expect
    obj, views = int(item["object_index"]), item["view_indices"].numpy()
    assert torch.equal(item["images"], torch.from_numpy(ds.get_views(obj, views)).permute(0, 3, 1, 2))
    assert np.allclose(item["latents"].numpy(), ds.latents[obj, views])
    view = ViewDataset(ds, split="val")[7]
    assert view["images"].shape == (3, 16, 16) and view["latents"].shape == (10,) and view["view_index"] == 1


def test_pairs_distinct_fresh_each_epoch_and_reproducible(ds):
    pairs = PairDataset(ds, split=None, seed=3)
    seen = []
    for epoch in range(4):
        vi = np.stack([pairs[(epoch, i)]["view_indices"].numpy() for i in range(len(pairs))])
        assert np.all(vi[:, 0] != vi[:, 1])
        seen.append(vi)
    assert not np.array_equal(seen[0], seen[1])
    pairs.set_epoch(2)
    assert np.array_equal(pairs[5]["view_indices"].numpy(), seen[2][5])
    fixed = FixedPairDataset(ds, split=None, seed=3)
    assert np.array_equal(fixed[(0, 4)]["view_indices"], fixed[(9, 4)]["view_indices"])


def test_every_object_once_per_epoch_and_ddp_ranks_disjoint(ds):
    pairs = PairDataset(ds, split="train")  # 9 objects
    single = EpochSampler(pairs, seed=1)
    single.set_epoch(1)
    idx = [i for _, i in single]
    assert sorted(idx) == list(range(len(pairs)))
    single.set_epoch(2)
    assert [i for _, i in single] != idx and all(e == 2 for e, _ in single)
    for world, drop_last in ((3, False), (2, True), (4, False)):
        parts = []
        for rank in range(world):
            s = EpochSampler(pairs, num_replicas=world, rank=rank, seed=1, drop_last=drop_last)
            s.set_epoch(5)
            parts.append([i for _, i in s])
        flat = [i for p in parts for i in p]
        assert len({len(p) for p in parts}) == 1  # equal share per rank: no DDP hang
        if len(pairs) % world == 0:
            assert len(flat) == len(set(flat)) == len(pairs)  # disjoint and covering
        elif drop_last:
            assert len(flat) == len(set(flat))  # disjoint
        else:
            assert set(flat) == set(range(len(pairs)))  # covering (padded with repeats, as torch does)


def test_datamodule_batches(ds):
    from ssl_eq.datasets import SSLDataModule

    dm = SSLDataModule(ds.root, kind="sequence", num_views=3, batch_size=4, num_workers=0, pin_memory=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 3, 16, 16) and batch["images"].dtype == torch.uint8
    assert batch["rel_rotation_quat"].shape == (4, 2, 4)
    assert len(dm.train_dataloader()) == 9 // 4  # drop_last on train
    val = [b for b in dm.val_dataloader()]
    assert sum(len(b["label"]) for b in val) == 3
    ranks = [SSLDataModule(ds.root, kind="view", batch_size=64, pin_memory=False, num_replicas=2, rank=r)
             .val_dataloader() for r in range(2)]
    got = [torch.stack([b["object_index"] * 6 + b["view_index"] for b in r]).flatten().tolist() for r in ranks]
    assert not set(got[0]) & set(got[1]) and len(got[0]) + len(got[1]) == 3 * 6
    with pytest.raises(ValueError, match="kind must be one of"):
        SSLDataModule(ds.root, kind="triplet")


def _batches(loader) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.items()} for b in loader]


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_thread_loader_equals_dataloader(tmp_path, encoding):
    """Worker threads yield exactly the batches torch's worker processes yield, in sampler order, and the
    sampler's epoch (set by Lightning through `.sampler`) changes the pairs."""
    from torch.utils.data import DataLoader, default_collate

    from ssl_eq.datasets import SSLDataModule, ThreadLoader, collate

    root = make_synthetic_dataset(tmp_path / encoding, num_objects=10, views=5, size=16, encoding=encoding,
                                  objects_per_shard=3)
    src = NativeDataset(root)
    pairs = PairDataset(src, split=None)
    sampler = EpochSampler(pairs, seed=3)
    sampler.set_epoch(2)
    ours = ThreadLoader(pairs, batch_size=4, sampler=sampler, num_workers=2, prefetch_factor=1)
    ref = DataLoader(pairs, batch_size=4, sampler=sampler, num_workers=2, collate_fn=collate)
    got, want = _batches(ours), _batches(ref)
    assert len(got) == len(want) == len(ours) == 3  # 10 items, batch 4, no drop_last
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in g)
    assert torch.cat([b["object_index"] for b in got]).tolist() == [i for _, i in sampler]
    ours.sampler.set_epoch(3)
    assert not all(torch.equal(a["view_indices"], b["view_indices"]) for a, b in zip(_batches(ours), got))
    it = iter(ours)
    first = next(it)
    assert first["images"].shape == (4, 2, 3, 16, 16) and first["images"].dtype == torch.uint8
    it.close()  # the consumer stops early: the worker threads finish and exit
    assert not [t for t in threading.enumerate() if t.name.startswith("ssl_eq-loader")]
    items = pairs.__getitems__([(2, 0), (2, 5), (2, 9)])  # any collate_fn sees the items one by one
    assert len(items) == 3 and torch.equal(items[-1]["images"], items.batch["images"][2])
    by_default = default_collate(items)
    assert all(torch.equal(by_default[k], v) for k, v in collate(items).items())

    dms = [SSLDataModule(root, kind="view", batch_size=8, num_workers=1, pin_memory=False, loader=kind)
           for kind in ("threads", "processes")]
    a, b = (_batches(dm.val_dataloader()) for dm in dms)
    assert isinstance(dms[0].val_dataloader(), ThreadLoader) and len(a) == len(b) > 0
    assert all(torch.equal(x["images"], y["images"]) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="loader must be one of"):
        SSLDataModule(root, loader="fibers")
    with pytest.raises(TypeError, match="__getitems__"):
        ThreadLoader(list(range(4)))
