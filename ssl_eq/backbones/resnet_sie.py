"""The ResNet-18 of SIE and EquiCaps (docs/reference/sie.md §3), not torchvision's.

Differences from torchvision's ResNet-18, all in the reference (a VICReg-style, "TF-same" padded ResNet):
- stem: input zero-padded (left 2, right 3, top 2, bottom 3), 7×7/2 conv without padding, BN, ReLU, then
  padded (right 1, bottom 1) with −1e4 and a 3×3/2 max-pool without padding;
- each stage's stride sits on the block's second 3×3 conv; a stride-2 conv pads its input (right 1, bottom 1)
  instead of padding 1 on every side;
- every stage's first block has a 1×1 conv + BN shortcut, layer1 included;
- init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, the last BN of each block zeroed.
State-dict keys and shapes are the reference's (torchvision's names plus layer1.0.downsample.*), so
checkpoints load both ways with strict=True. 11,180,736 parameters; (B, 3, S, S) -> (B, 512) after
global average pooling, or the (B, 512, S/32, S/32) map from `forward_features`.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ssl_eq.backbones.cpu_fast import cpu_fast_layers

# value the max-pool's extra row / column is padded with (acts as -inf without producing inf in fp16)
_POOL_PAD_VALUE = -1e4


class BasicBlockSIE(nn.Module):
    """3×3 conv (stride 1) - BN - ReLU - 3×3 conv (the stage's stride) - BN, plus an optional 1×1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=stride, padding=0 if stride == 2 else 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                        nn.BatchNorm2d(c_out)) if shortcut else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        if self.stride == 2:
            out = F.pad(out, (0, 1, 0, 1))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetSIE(nn.Module):
    """SIE / EquiCaps ResNet with BasicBlocks; `blocks` per stage ((2, 2, 2, 2) is ResNet-18)."""

    widths = (64, 128, 256, 512)

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), zero_init_residual: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0)
        c_in = 64
        for i, (c_out, n) in enumerate(zip(self.widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlockSIE(c_in, c_out, stride, shortcut=True)]
            stage += [BasicBlockSIE(c_out, c_out, 1, shortcut=False) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlockSIE):
                    nn.init.zeros_(m.bn2.weight)
        cpu_fast_layers(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 512, S/32, S/32) last feature map (8×8 at 256 px)."""
        x = self.relu(self.bn1(self.conv1(F.pad(x, (2, 3, 2, 3)))))
        x = self.maxpool(F.pad(x, (0, 1, 0, 1), value=_POOL_PAD_VALUE))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 512) globally average-pooled representation."""
        return self.avgpool(self.forward_features(x)).flatten(1)
