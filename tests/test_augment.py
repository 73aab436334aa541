"""Kornia pipeline: fixed-length actions, and re-applying recorded parameters reproduces the batch."""
from __future__ import annotations

import pytest
import torch

from ssl_eq.augment import TRANSFORMS, AugmentPipeline

ALL = [{"name": n} for n in TRANSFORMS]


def test_replay_reproduces_batch_and_action():
    torch.manual_seed(0)
    pipe = AugmentPipeline(24, ALL)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = pipe(x)
    b = pipe(x, params=a.params)
    c = pipe(x)
    assert a.images.shape == (8, 3, 24, 24)
    assert a.action.shape == (8, pipe.action_dim) == (8, len(pipe.action_names))
    assert torch.equal(a.images, b.images) and torch.equal(a.action, b.action)
    assert not torch.equal(a.images, c.images)  # fresh draws differ


def test_action_zero_where_not_applied_and_crop_box():
    pipe = AugmentPipeline(16, [{"name": "random_resized_crop", "scale": [0.25, 0.5]}, {"name": "horizontal_flip", "p": 0.0},
                                {"name": "color_jitter", "p": 0.0}])
    out = pipe(torch.rand(6, 3, 16, 16))
    assert torch.all(out.action[:, 4:] == 0)
    area = out.action[:, 2] * out.action[:, 3]
    assert torch.all((area > 0.2) & (area < 0.6))


def test_default_is_resize_only():
    pipe = AugmentPipeline(16, [])
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = pipe(x)
    assert out.action.shape == (2, 0) and out.images.shape == (2, 3, 16, 16)
    assert torch.allclose(out.images.mean(), x.float().mean() / 255, atol=1e-2)


def test_unknown_transform_names_valid_ones():
    with pytest.raises(ValueError, match=r"augment.transforms\[0\].name: unknown transform 'warp'"):
        AugmentPipeline(16, [{"name": "warp"}])
