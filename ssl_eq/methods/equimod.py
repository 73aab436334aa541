"""EquiMod (Devillers & Lefort, ICLR 2023): an invariant projection trained by SimCLR (or VICReg) plus an
equivariant projection whose prediction for view 2, conditioned on the transformation, is contrasted with
view 2's equivariant embedding (docs/reference/equicaps.md §8).

Both projectors read the whole backbone representation (B, D). Forms (ssl_eq/configs/method/):
- `equimod` (SIE repository's 3DIEBench baseline): 2048-2048-2048 projectors, hypernetwork predictor
  W(a)·z, NT-Xent τ 0.1, L = L_inv + 4.5·L_equi;
- `equimod_seqjepa` (seq-JEPA repository): 1024-1024-128 projectors ending in BN(affine=False), predictor
  BN(Linear([BN(Linear(a)); z])), τ 0.5, equivariance weight 1;
- `equimod_vicreg` (SIE's VICRegEquiMod): VICReg on the invariant pair + equivariance ·
  [invariance·MSE(prediction, z₂) + variance / covariance on the equivariant embeddings].
Actions (`method.action`): "rotation" = the relative-rotation quaternion (3DIEBench), "augmentation" = the
difference of the applied Kornia parameter vectors (image datasets).
"""
from __future__ import annotations

from typing import Any, Callable

from lightly.loss import NTXentLoss
from omegaconf import OmegaConf
from torch import Tensor, nn

from ssl_eq.methods.base import BaseMethod, StepOutput
from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.blocks.losses import invariance_loss, variance_covariance
from ssl_eq.methods.blocks.predictors import PREDICTORS
from ssl_eq.methods.registry import register_method

# method.action -> (batch -> (B, A) action of view 1 -> view 2, batch key it needs)
ACTIONS: dict[str, tuple[Callable[[dict[str, Tensor]], Tensor], str]] = {
    "rotation": (lambda batch: batch["rel_rotation_quat"], "rel_rotation_quat"),
    "augmentation": (lambda batch: batch["aug_action"][:, 1] - batch["aug_action"][:, 0], "aug_action"),
}
ROTATION_ACTION_DIM = 4  # wxyz quaternion


def equimod_simclr_loss(inv1: Tensor, inv2: Tensor, pred2: Tensor, equi2: Tensor, criterion: NTXentLoss, *,
                        equivariance: float) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, E) each -> NT-Xent(inv1, inv2) + equivariance · NT-Xent(pred2, equi2), terms {"invariance",
    "equivariance"}. pred2 = predictor(view 1's equivariant embedding, action)."""
    terms = {"invariance": criterion(inv1, inv2), "equivariance": equivariance * criterion(pred2, equi2)}
    return sum(terms.values()), terms


def equimod_vicreg_loss(inv1: Tensor, inv2: Tensor, equi1: Tensor, equi2: Tensor, pred2: Tensor, *,
                        invariance: float, variance: float, covariance: float, equivariance: float
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, E) each -> VICReg(inv1, inv2) + equivariance · [invariance · MSE(pred2, equi2) + variance /
    covariance of (equi1, equi2)], as SIE's VICRegEquiMod; terms per part."""
    var_i, cov_i = variance_covariance(inv1, inv2)
    var_e, cov_e = variance_covariance(equi1, equi2)
    terms = {
        "invariance": invariance * invariance_loss(inv1, inv2),
        "variance": variance * var_i,
        "covariance": covariance * cov_i,
        "equivariance": equivariance * invariance * invariance_loss(pred2, equi2),
        "equi_variance": equivariance * variance * var_e,
        "equi_covariance": equivariance * covariance * cov_e,
    }
    return sum(terms.values()), terms


@register_method("equimod")
class EquiMod(BaseMethod):
    """EquiMod on SimCLR; `equimod_vicreg` (below) swaps the objective."""

    has_predictor = True

    @property
    def action_key(self) -> str:  # type: ignore[override]
        return ACTIONS[self.cfg.method.action][1]

    @property
    def data_requirements(self) -> dict[str, Any]:
        keys = {*self.required_keys, self.action_key} - {"aug_action"}  # aug_action is made on the device
        return {"kind": self.batch_kind, "keys": sorted(keys)}

    def build_heads(self) -> None:
        m = self.cfg.method
        if m.action not in ACTIONS:
            raise ValueError(f"method.action: unknown action {m.action!r}; valid: {sorted(ACTIONS)}")
        if m.predictor.type not in PREDICTORS:
            raise ValueError(f"method.predictor.type: unknown predictor {m.predictor.type!r}; "
                             f"valid: {sorted(PREDICTORS)}")
        action_dim = ROTATION_ACTION_DIM if m.action == "rotation" else self.augment.action_dim
        if action_dim == 0:
            raise ValueError("method.action=augmentation: the augment config applies no random transform "
                             "(augment.transforms is empty); use augment=simclr or method.action=rotation")
        self.projector_inv = self._projector(m.projector_inv)
        self.projector_equi = self._projector(m.projector_equi)
        emb_dim = int(m.projector_equi[-1])
        self.predictor = PREDICTORS[m.predictor.type].from_config(emb_dim,
                                                                  OmegaConf.merge(m, {"action_dim": action_dim}))
        if "temperature" in m.loss:
            self.criterion = NTXentLoss(temperature=float(m.loss.temperature), gather_distributed=True)

    def _projector(self, widths: list[int]) -> nn.Module:
        """mlp(D -> widths) (Linear-BN-ReLU, last Linear without bias), then BN(affine=False) if configured."""
        head = mlp(self.rep_dim, widths, batch_norm=bool(self.cfg.method.head_batch_norm))
        if self.cfg.method.projector_out_bn:
            head = nn.Sequential(head, nn.BatchNorm1d(int(widths[-1]), affine=False))
        return head

    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"inv": self.projector_inv(reps["full"]), "equi": self.projector_equi(reps["full"])}

    def predict(self, equi_emb: Tensor, batch_actions: dict[str, Tensor]) -> Tensor:
        return self.predictor(equi_emb, ACTIONS[self.cfg.method.action][0](batch_actions).to(equi_emb.dtype))

    def objective(self, e1: dict[str, Tensor], e2: dict[str, Tensor], pred2: Tensor
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        return equimod_simclr_loss(e1["inv"], e2["inv"], pred2, e2["equi"], self.criterion,
                                   equivariance=float(self.cfg.method.loss.equivariance))

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        e1, e2 = (self.project(self.split(r)) for r in reps)
        loss, terms = self.objective(e1, e2, self.predict(e1["equi"], batch))
        return StepOutput(loss, terms, reps)


@register_method("equimod_vicreg")
class EquiModVICReg(EquiMod):
    """EquiMod on VICReg (SIE repository's VICRegEquiMod)."""

    def objective(self, e1: dict[str, Tensor], e2: dict[str, Tensor], pred2: Tensor
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        return equimod_vicreg_loss(e1["inv"], e2["inv"], e1["equi"], e2["equi"], pred2, **self.cfg.method.loss)
