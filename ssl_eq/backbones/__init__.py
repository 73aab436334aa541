"""Encoders mapping images (B, 3, H, W) to a flat representation (B, D).

`build_backbone(name, **kwargs) -> (module, D)`; the registry `BACKBONES` holds
torchvision ResNets (stem chosen for the image size), the SIE / EquiCaps ResNet-18
(`resnet18_sie`, ssl_eq.backbones.resnet_sie) and a small CPU-friendly conv net for
demos and tests.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet

from ssl_eq.backbones.cpu_fast import cpu_fast_layers
from ssl_eq.backbones.resnet_sie import ResNetSIE

BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {}


def register_backbone(name: str):
    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


def _resnet(arch: Callable[..., resnet.ResNet], stem: str, zero_init_residual: bool) -> tuple[nn.Module, int]:
    """torchvision ResNet without its classifier.

    stem "imagenet": 7x7/2 conv + max-pool (128-256 px inputs, as in SIE);
    stem "small": 3x3/1 conv, no max-pool (32-64 px inputs, CIFAR-style).
    """
    net = arch(weights=None, zero_init_residual=zero_init_residual)
    if stem == "small":
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem != "imagenet":
        raise ValueError(f"backbone.stem: expected 'imagenet' or 'small', got {stem!r}")
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return cpu_fast_layers(net), dim


@register_backbone("resnet18")
def resnet18(stem: str = "imagenet", zero_init_residual: bool = True) -> tuple[nn.Module, int]:
    return _resnet(resnet.resnet18, stem, zero_init_residual)


@register_backbone("resnet50")
def resnet50(stem: str = "imagenet", zero_init_residual: bool = True) -> tuple[nn.Module, int]:
    return _resnet(resnet.resnet50, stem, zero_init_residual)


@register_backbone("resnet18_sie")
def resnet18_sie(zero_init_residual: bool = True) -> tuple[nn.Module, int]:
    net = ResNetSIE((2, 2, 2, 2), zero_init_residual)
    return net, net.out_dim


# norm name -> (channels -> layer); "group" (one group: per-sample statistics) needs no batch statistics,
# so it trains identically on one process or split over DDP ranks on CPU, where SyncBatchNorm is unavailable
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "group": lambda c: nn.GroupNorm(1, c),
}


class SmallConvNet(nn.Module):
    """Conv-norm-ReLU stages, each halving the resolution, then global average pooling.

    (B, 3, H, W) -> (B, widths[-1]); a few thousand parameters per stage, fast on CPU.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"backbone.norm: unknown norm {norm!r}; valid: {sorted(NORMS)}")
        layers: list[nn.Module] = []
        c_in = 3
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), NORMS[norm](c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, widths[-1], H / 2^stages, W / 2^stages) last feature map."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


@register_backbone("small_cnn")
def small_cnn(widths: tuple[int, ...] | list[int] = (16, 32, 64), norm: str = "batch") -> tuple[nn.Module, int]:
    widths = tuple(int(w) for w in widths)
    return SmallConvNet(widths, norm), widths[-1]


def build_backbone(name: str, **kwargs) -> tuple[nn.Module, int]:
    """Build a registered backbone; returns (module, representation width D)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone.name: unknown backbone {name!r}; valid: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)
