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


def test_resnet18_sie_matches_the_reference_layout():
    """sie.md §3: 11,180,736 parameters, torchvision's key names plus layer1.0.downsample, stride on conv2."""
    from torchvision.models import resnet18

    net, d = build_backbone("resnet18_sie")
    assert d == 512
    assert sum(p.numel() for p in net.parameters()) == 11_180_736
    ours = {k: v.shape for k, v in net.state_dict().items()}
    tv = {k: v.shape for k, v in resnet18().state_dict().items() if not k.startswith("fc.")}
    assert sorted(set(ours) - set(tv)) == [f"layer1.0.downsample.{k}" for k in
                                           ("0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean",
                                            "1.running_var", "1.weight")]
    assert not set(tv) - set(ours) and all(ours[k] == tv[k] for k in tv)
    for i in range(1, 5):
        first = getattr(net, f"layer{i}")[0]
        stride = 1 if i == 1 else 2
        assert first.downsample is not None and first.conv1.stride == (1, 1)
        assert first.conv2.stride == (stride, stride) and first.conv2.padding == ((0, 0) if stride == 2 else (1, 1))
        assert torch.count_nonzero(first.bn2.weight) == 0  # zero_init_residual
    assert net.conv1.padding == (0, 0) and net.maxpool.padding == 0


@pytest.mark.parametrize("size,cells", [(64, 2), (128, 4), (256, 8)])
def test_resnet18_sie_shapes(size, cells):
    net, _ = build_backbone("resnet18_sie")
    net.eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        fmap = net.forward_features(x)
        assert fmap.shape == (1, 512, cells, cells)
        assert torch.allclose(net(x), fmap.mean((2, 3)), atol=1e-6)


def test_resnet18_sie_state_dict_round_trip(tmp_path):
    net, _ = build_backbone("resnet18_sie")
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    other, _ = build_backbone("resnet18_sie", zero_init_residual=False)
    result = other.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
