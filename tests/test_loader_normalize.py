"""uint8 -> normalised float32 (`ssl_eq.datasets.normalize`): the plain formula's values in any layout, pooled
output buffers never handed out while a view of them lives, ThreadLoader(normalize=...) and the model's
preprocess on the fast path."""
from __future__ import annotations

import pytest
import torch

import ssl_eq.datasets.normalize as normalize_module
from ssl_eq.datasets import NativeDataset, PairDataset, ThreadLoader, ViewDataset, make_synthetic_dataset
from ssl_eq.datasets.normalize import Normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def plain(images: torch.Tensor) -> torch.Tensor:
    """The formula the reference loader's Normalize and BaseMethod.preprocess compute."""
    return (images.float() / 255.0 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def every_value() -> torch.Tensor:
    """uint8 (2, 3, 16, 16): every value 0..255 in every channel, different per channel (channels-last memory)."""
    v = torch.arange(256, dtype=torch.uint8).view(16, 16)
    return torch.stack([torch.stack([v, v.flip(0), v.t()]), torch.stack([v.t(), v, v.flip(1)])])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("out_format", [torch.preserve_format, torch.contiguous_format, torch.channels_last])
def test_every_uint8_value_matches_the_plain_formula(layout, out_format):
    images = every_value().contiguous(memory_format=layout)
    out = Normalize(MEAN, STD)(images, memory_format=out_format)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert (out - plain(images)).abs().max().item() <= 1e-6
    expected = layout if out_format == torch.preserve_format else out_format
    assert out.is_contiguous(memory_format=expected)


def test_same_values_channels_last_and_contiguous():
    images = torch.randint(0, 256, (5, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    norm = Normalize(torch.tensor(MEAN), torch.tensor(STD))  # tensors as the model's buffers hold them
    a = norm(images)
    b = norm(images.contiguous(memory_format=torch.channels_last))
    c = norm(images, memory_format=torch.channels_last)
    assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
    assert torch.equal(a, b) and torch.equal(a, c)


def test_blocks_pairs_and_odd_layouts(monkeypatch):
    """(B, 2, 3, H, W) pair batches (channels-last and planar) and a non-dense input, converted in several blocks,
    as in one."""
    pairs = torch.randint(0, 256, (7, 2, 12, 12, 3), dtype=torch.uint8).permute(0, 1, 4, 2, 3)  # channels-last
    whole = Normalize(MEAN, STD)(pairs)
    monkeypatch.setattr(normalize_module, "BLOCK_ELEMENTS", 3 * 12 * 12 * 2 * 2)  # two pairs per block
    blocked = Normalize(MEAN, STD)(pairs)
    assert torch.equal(blocked, whole) and blocked.stride() == pairs.float().stride()
    planar = Normalize(MEAN, STD)(pairs.contiguous())
    assert torch.equal(planar, whole) and planar.is_contiguous()
    assert (whole - plain(pairs)).abs().max().item() <= 1e-6
    strided = pairs[:, :, :, ::2, 1:]  # neither contiguous nor channels-last
    assert (Normalize(MEAN, STD)(strided) - plain(strided)).abs().max().item() <= 1e-6
    assert Normalize(MEAN, STD)(pairs[:0]).shape == pairs[:0].shape


def test_pooled_buffer_reused_only_when_nothing_refers_to_it():
    norm = Normalize(MEAN, STD, buffers=2)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    first = norm(images)
    address = first.data_ptr()
    view = first[1:]
    del first
    second = norm(images)
    assert second.data_ptr() != address  # `view` still holds the first buffer
    third = norm(images)  # pool full, both lent: a fresh tensor
    assert len({second.data_ptr(), third.data_ptr(), address}) == 3 and len(norm._pool) == 2
    expected = view.clone()
    del second
    fourth = norm(images.flip(0))
    assert fourth.data_ptr() != address and torch.equal(view, expected)
    del view
    assert norm(images).data_ptr() == address
    assert (fourth - plain(images.flip(0))).abs().max().item() <= 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="3 values"):
        Normalize((0.5, 0.5), STD)
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize(MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(TypeError, match="uint8"):
        Normalize(MEAN, STD)(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        Normalize(MEAN, STD)(torch.zeros(1, 4, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("kind", ["view", "pair"])
def test_thread_loader_normalize(tmp_path, kind):
    root = make_synthetic_dataset(tmp_path / "ds", num_objects=6, views=4, size=16, objects_per_shard=4)
    items = (PairDataset if kind == "pair" else ViewDataset)(NativeDataset(root), split=None)
    raw = list(ThreadLoader(items, batch_size=4, num_workers=2))
    norm = list(ThreadLoader(items, batch_size=4, num_workers=2, normalize=(MEAN, STD)))
    assert len(raw) == len(norm) > 1
    for r, n in zip(raw, norm):
        assert r["images"].dtype == torch.uint8 and n["images"].dtype == torch.float32
        assert n["images"].stride() == r["images"].float().stride()  # channels-last, as read
        assert (n["images"] - plain(r["images"])).abs().max().item() <= 1e-6
        assert torch.equal(n["latents"], r["latents"])
    with pytest.raises(ValueError, match="std must be positive"):
        ThreadLoader(items, normalize=(MEAN, (0.0, 1.0, 1.0)))
    with pytest.raises(TypeError, match="dicts with 'images'"):
        next(iter(ThreadLoader(items, batch_size=2, num_workers=0, normalize=(MEAN, STD),
                               collate_fn=lambda b: [x["images"] for x in b])))


@pytest.mark.parametrize("channels_last", [False, True])
def test_preprocess_fast_path_matches_the_formula(channels_last):
    from test_methods import tiny_config

    from ssl_eq.methods import build_method

    model = build_method(tiny_config("vicreg", f"trainer.channels_last={channels_last}"))
    size = model.augment.image_size
    images = torch.randint(0, 256, (6, size, size, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # as the reader
    x = model.preprocess(images)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert x.is_contiguous(memory_format=fmt)
    assert (x - (images.float() / 255.0 - model.mean) / model.std).abs().max().item() <= 1e-6
    bigger = torch.randint(0, 256, (2, 3, size + 8, size + 8), dtype=torch.uint8)  # resized: the float path
    assert model.preprocess(bigger).shape == (2, 3, size, size)
