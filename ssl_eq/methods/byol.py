"""BYOL (Grill et al., 2020): online predictor regresses an EMA target's projection of the other view."""
from __future__ import annotations

import copy

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor

from ssl_eq.methods.base import InvariantOnlyMethod, StepOutput
from ssl_eq.methods.registry import register_method

_NEG_COS = NegativeCosineSimilarity()


def byol_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Online predictions p (B, E) and target projections t (B, E) of views 1, 2 -> symmetric
    negative cosine similarity (in [-1, 1]), terms {"regression"}."""
    loss = 0.5 * (_NEG_COS(p1, t2.detach()) + _NEG_COS(p2, t1.detach()))
    return loss, {"regression": loss}


@register_method("byol")
class BYOL(InvariantOnlyMethod):
    def build_heads(self) -> None:
        h = self.cfg.method.heads
        self.projector = BYOLProjectionHead(self.inv_dim, int(h.hidden_dim), int(h.output_dim))
        self.predictor = BYOLPredictionHead(int(h.output_dim), int(h.hidden_dim), int(h.output_dim))
        self.backbone_target = copy.deepcopy(self.backbone)
        self.projector_target = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.backbone_target)
        deactivate_requires_grad(self.projector_target)

    def momentum(self) -> float:
        m = self.cfg.method.momentum
        return cosine_schedule(self.global_step, self.total_steps, float(m.start), float(m.end))

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """EMA update of the target before each training step (not in step_loss, which validation also calls)."""
        m = self.momentum()
        update_momentum(self.backbone, self.backbone_target, m)
        update_momentum(self.projector, self.projector_target, m)

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        p1, p2 = (self.predictor(z) for z in self.project_views(reps))
        with torch.no_grad():
            t1, t2 = (self.projector_target(self.split(self.backbone_target(views[:, i]))["inv"]) for i in range(2))
        loss, terms = byol_loss(p1, p2, t1, t2)
        return StepOutput(loss, terms, reps)
