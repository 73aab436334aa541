"""SimCLR (Chen et al., 2020): NT-Xent between two views, negatives gathered across ranks."""
from __future__ import annotations

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor

from ssl_eq.methods.base import InvariantOnlyMethod, StepOutput
from ssl_eq.methods.registry import register_method


def simclr_loss(z1: Tensor, z2: Tensor, criterion: NTXentLoss) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, E) x2 -> NT-Xent loss (lightly), terms {"ntxent"}."""
    loss = criterion(z1, z2)
    return loss, {"ntxent": loss}


@register_method("simclr")
class SimCLR(InvariantOnlyMethod):
    def build_heads(self) -> None:
        m = self.cfg.method
        self.projector = SimCLRProjectionHead(self.inv_dim, int(m.projector.hidden_dim), int(m.projector.output_dim),
                                              num_layers=int(m.projector.num_layers))
        self.criterion = NTXentLoss(temperature=float(m.loss.temperature), gather_distributed=True)

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        z1, z2 = self.project_views(reps)
        loss, terms = simclr_loss(z1, z2, self.criterion)
        return StepOutput(loss, terms, reps)
