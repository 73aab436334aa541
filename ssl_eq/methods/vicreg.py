"""VICReg (Bardes et al., 2022) on pairs of views: the whole representation is invariant."""
from __future__ import annotations

from torch import Tensor

from ssl_eq.methods.base import InvariantOnlyMethod, StepOutput
from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.blocks.losses import invariance_loss, variance_covariance
from ssl_eq.methods.registry import register_method


def vicreg_loss(z1: Tensor, z2: Tensor, inv_weight: float, var_weight: float, cov_weight: float
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, E) x2 -> total loss, weighted terms {"invariance", "variance", "covariance"}."""
    var, cov = variance_covariance(z1, z2)
    terms = {"invariance": inv_weight * invariance_loss(z1, z2), "variance": var_weight * var,
             "covariance": cov_weight * cov}
    return sum(terms.values()), terms


@register_method("vicreg")
class VICReg(InvariantOnlyMethod):
    def build_heads(self) -> None:
        self.projector = mlp(self.inv_dim, self.cfg.method.projector, batch_norm=self.cfg.method.head_batch_norm)
        self.emb_dim = int(self.cfg.method.projector[-1])

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        z1, z2 = self.project_views(reps)
        w = self.cfg.method.loss
        loss, terms = vicreg_loss(z1, z2, w.invariance, w.variance, w.covariance)
        return StepOutput(loss, terms, reps)
