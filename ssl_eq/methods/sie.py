"""SIE (Garrido et al., 2023): split invariant / equivariant representation with a
hypernetwork predictor conditioned on the relative rotation between two views.

Representation (B, D) = [inv (B, Di) | equi (B, De)]; each part has its own projector.
The predictor maps view 1's equivariant embedding (B, Ee) and the relative-rotation
quaternion (B, 4) wxyz to view 2's equivariant embedding. The objective is the reference's `SIE` class
(with the variance hinge on the predictions). Variants are configs (ssl_eq/configs/method/sie_*.yaml): without the
predictor-variance term (`sie_novar`, the paper's ablation), only-equivariant (split.inv = 0), a deeper
hypernetwork, and an MLP predictor on [quaternion; embedding].
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssl_eq.methods.base import BaseMethod, StepOutput
from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.blocks.losses import gathered_variance, invariance_loss, variance_covariance
from ssl_eq.methods.blocks.predictors import PREDICTORS
from ssl_eq.methods.registry import register_method


def sie_loss(inv1: Tensor, equi1: Tensor, inv2: Tensor, equi2: Tensor, pred2: Tensor, *, invariance: float,
             equivariance: float, variance: float, predictor_variance: float, covariance: float
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """SIE objective -> (total (), weighted terms {name: ()}).

    inv* (B, Ei) (Ei may be 0: no invariance term), equi* (B, Ee), pred2 (B, Ee) = predictor(equi1, action).
    invariance * MSE(inv1, inv2) + equivariance * MSE(pred2, equi2)
    + variance * (hinge(z1) + hinge(z2)) / 2 + covariance * (cov(z1) + cov(z2)) on z = [inv | equi]
    + predictor_variance * hinge(pred2) / 2, where hinge = mean relu(1 - sqrt(var + 1e-4)) per dimension.
    Hinges and covariances use the embeddings gathered across ranks (global-batch statistics).
    predictor_variance = 0 leaves that term out (the reference's SIENoVar).
    """
    terms = {"equivariance": equivariance * invariance_loss(pred2, equi2)}
    if inv1.shape[1] > 0:
        terms["invariance"] = invariance * invariance_loss(inv1, inv2)
    var, cov = variance_covariance(torch.cat([inv1, equi1], 1), torch.cat([inv2, equi2], 1))
    terms.update(variance=variance * var, covariance=covariance * cov)
    if predictor_variance:
        # halved like each view's hinge in `variance` (the reference's weighting)
        terms["predictor_variance"] = predictor_variance * 0.5 * gathered_variance(pred2)
    return sum(terms.values()), terms


@register_method("sie")
class SIE(BaseMethod):
    has_predictor = True
    action_key = "rel_rotation_quat"
    required_keys = ("images", "rel_rotation_quat")

    def build_heads(self) -> None:
        m = self.cfg.method
        if self.equi_dim == 0:
            raise ValueError("method.split.equi: SIE needs an equivariant part (equi > 0)")
        bn = bool(m.head_batch_norm)
        self.projector_inv = mlp(self.inv_dim, m.projector_inv, batch_norm=bn) if self.inv_dim else None
        self.projector_equi = mlp(self.equi_dim, m.projector_equi, batch_norm=bn)
        self.equi_emb_dim = int(m.projector_equi[-1]) if len(m.projector_equi) else self.equi_dim
        p = m.predictor
        if p.type not in PREDICTORS:
            raise ValueError(f"method.predictor.type: unknown predictor {p.type!r}; valid: {sorted(PREDICTORS)}")
        self.predictor = PREDICTORS[p.type].from_config(self.equi_emb_dim, m)

    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        equi = self.projector_equi(reps["equi"])
        inv = self.projector_inv(reps["inv"]) if self.projector_inv is not None else equi[:, :0]
        return {"inv": inv, "equi": equi}

    def predict(self, equi_emb: Tensor, batch_actions: dict[str, Tensor]) -> Tensor:
        return self.predictor(equi_emb, batch_actions[self.action_key].to(equi_emb.dtype))

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        e1, e2 = (self.project(self.split(r)) for r in reps)
        pred2 = self.predict(e1["equi"], batch)
        loss, terms = sie_loss(e1["inv"], e1["equi"], e2["inv"], e2["equi"], pred2, **self.cfg.method.loss)
        return StepOutput(loss, terms, reps)
