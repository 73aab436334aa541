"""Loss building blocks shared by several methods (pure functions of tensors)."""
from __future__ import annotations

from lightly.loss.vicreg_loss import invariance_loss, variance_loss
from torch import Tensor

from ssl_eq.methods.blocks.heads import gather_cat

__all__ = ["invariance_loss", "covariance_term", "variance_covariance", "gathered_variance"]


def covariance_term(z: Tensor) -> Tensor:
    """(B, E) -> () VICReg covariance: sum of squared off-diagonal covariances / E.

    Same value and gradients as lightly's `covariance_loss`, which selects the off-diagonal with a boolean
    mask (nonzero + index + index_put: ~4x slower forward + backward at E = 2048); here the squared
    diagonal is subtracted from the squared total instead.
    """
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (z.shape[0] - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]


def variance_covariance(z1: Tensor, z2: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """(B, E) x2 -> VICReg variance (mean hinge on per-dim std, averaged over both views) and
    covariance (sum of squared off-diagonal covariances / E, summed over both views), each view's
    embeddings gathered across ranks first so the statistics are those of the global batch."""
    z1, z2 = gather_cat(z1), gather_cat(z2)
    var = 0.5 * (variance_loss(z1, eps) + variance_loss(z2, eps))
    cov = covariance_term(z1) + covariance_term(z2)
    return var, cov


def gathered_variance(z: Tensor, eps: float = 1e-4) -> Tensor:
    """(B, E) -> () VICReg variance hinge mean relu(1 - sqrt(var + eps)) over the dims of z gathered across
    ranks (with gradients to each rank's slice)."""
    return variance_loss(gather_cat(z), eps)
