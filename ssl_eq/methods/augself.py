"""SimCLR + AugSelf (Lee et al., NeurIPS 2021), in the SIE repository's 3DIEBench form
(docs/reference/equicaps.md §8): SimCLR plus an MLP head on the two views' concatenated backbone
representations [h₁; h₂] (B, 2D) regressing the transformation between them.

Targets (`method.target`): "rotation" = the relative-rotation quaternion (B, 4) (SIE's SimCLRAugSelf),
"rotation_hue" = quaternion + (Δ floor hue, Δ spot hue) (B, 6) (SIE's RotColor), "augmentation" = the
difference of the applied Kornia parameter vectors (B, A) (the original AugSelf on image data).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import Tensor

from ssl_eq.methods.base import InvariantOnlyMethod, StepOutput
from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.registry import register_method

REL_LATENT_HUES = [0, 3]  # Δfloor_hue, Δspot_hue in rel_latents


def _augmentation(batch: dict[str, Tensor]) -> Tensor:
    return batch["aug_action"][:, 1] - batch["aug_action"][:, 0]


# method.target -> (batch -> (B, T) target, batch keys it needs from the loader, T; None = the augmentation's A)
TARGETS: dict[str, tuple[Callable[[dict[str, Tensor]], Tensor], tuple[str, ...], int | None]] = {
    "rotation": (lambda b: b["rel_rotation_quat"], ("rel_rotation_quat",), 4),
    "rotation_hue": (lambda b: torch.cat([b["rel_rotation_quat"], b["rel_latents"][:, REL_LATENT_HUES]], -1),
                     ("rel_rotation_quat", "rel_latents"), 4 + len(REL_LATENT_HUES)),
    "augmentation": (_augmentation, (), None),
}


def augself_loss(z1: Tensor, z2: Tensor, pred: Tensor, target: Tensor, criterion: NTXentLoss, *,
                 augself: float) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, E) x2 projections, (B, T) head prediction and target -> NT-Xent + augself · MSE, terms
    {"ntxent", "augself"}."""
    terms = {"ntxent": criterion(z1, z2), "augself": augself * F.mse_loss(pred, target.to(pred.dtype))}
    return sum(terms.values()), terms


@register_method("augself")
class AugSelf(InvariantOnlyMethod):
    @property
    def data_requirements(self) -> dict[str, Any]:
        return {"kind": self.batch_kind, "keys": sorted({*self.required_keys, *TARGETS[self.cfg.method.target][1]})}

    def build_heads(self) -> None:
        m = self.cfg.method
        if m.target not in TARGETS:
            raise ValueError(f"method.target: unknown target {m.target!r}; valid: {sorted(TARGETS)}")
        target_dim = TARGETS[m.target][2] or self.augment.action_dim
        if target_dim == 0:
            raise ValueError("method.target=augmentation: the augment config applies no random transform "
                             "(augment.transforms is empty); use augment=simclr or method.target=rotation")
        self.projector = mlp(self.inv_dim, m.projector, batch_norm=bool(m.head_batch_norm))
        self.head = mlp(2 * self.rep_dim, [*m.head, target_dim], last_bias=True, batch_norm=False)
        self.criterion = NTXentLoss(temperature=float(m.loss.temperature), gather_distributed=True)

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        z1, z2 = self.project_views(reps)
        pred = self.head(torch.cat(reps[:2], -1))
        loss, terms = augself_loss(z1, z2, pred, TARGETS[self.cfg.method.target][0](batch), self.criterion,
                                   augself=float(self.cfg.method.loss.augself))
        return StepOutput(loss, terms, reps)
