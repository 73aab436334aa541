"""MLP heads built from lightly's ProjectionHead blocks, and representation-space helpers."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from lightly.models.modules.heads import ProjectionHead
from lightly.utils.dist import gather
from torch import Tensor, nn


def mlp(in_dim: int, widths: Sequence[int], last_bias: bool = False, batch_norm: bool = True) -> nn.Module:
    """(N, in_dim) -> (N, widths[-1]): Linear-BN-ReLU for each hidden width, then a plain Linear.

    The VICReg / SIE expander layout (`"2048-2048-2048"` is widths [2048, 2048, 2048]).
    An empty `widths` is the identity; batch_norm=False drops the BN layers (hidden Linears get a bias).
    """
    widths = [int(w) for w in widths]
    if not widths:
        return nn.Identity()
    dims = [in_dim, *widths]
    blocks = [(dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]) if batch_norm else None, nn.ReLU())
              for i in range(len(widths) - 1)]
    blocks.append((dims[-2], dims[-1], None, None, last_bias))
    return ProjectionHead(blocks)


def gather_cat(x: Tensor) -> Tensor:
    """(N, ...) per rank -> (N * world, ...) with gradients flowing back to each rank's slice."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return torch.cat(gather(x), 0)
    return x
