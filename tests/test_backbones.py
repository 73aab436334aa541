"""Backbone registry: output widths and stems."""
from __future__ import annotations

import pytest
import torch

from ssl_eq.backbones import build_backbone


@pytest.mark.parametrize("name,kwargs,size,dim", [
    ("small_cnn", {}, 32, 64), ("small_cnn", {"norm": "group", "widths": [8, 16]}, 32, 16),
    ("resnet18", {"stem": "small"}, 32, 512), ("resnet18", {}, 64, 512)])
def test_backbone_widths(name, kwargs, size, dim):
    net, d = build_backbone(name, **kwargs)
    assert d == dim
    assert net(torch.rand(2, 3, size, size)).shape == (2, dim)


def test_unknown_backbone_and_stem():
    with pytest.raises(ValueError, match="unknown backbone 'vit'"):
        build_backbone("vit")
    with pytest.raises(ValueError, match="backbone.stem"):
        build_backbone("resnet18", stem="huge")
