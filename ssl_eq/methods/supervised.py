"""Supervised ceiling: the same backbone trained end to end on the labels and the relative transformation.

Not self-supervised: it gives the upper bound the papers quote ("supervised-level R²") for a probe of the same
representation. A linear classifier on the invariant part (the full representation when it is empty) is trained
with cross-entropy on the labels of both views; an MLP on [equi1; equi2] (full where empty) regresses the
relative-rotation quaternion (B, 4) wxyz and, optionally, other relative latents of the pair batch
(`method.targets`: batch key -> loss weight).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_eq.methods.base import BaseMethod, StepOutput
from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.registry import register_method

# width of each regression target of the pair batch (docs/architecture.md, batch keys)
TARGET_DIMS = {"rel_rotation_quat": 4, "rel_rotation_euler": 3, "rel_latents": 4,
               "rel_translation_object": 3, "rel_translation_base": 3}


def supervised_loss(logits: Tensor, labels: Tensor, preds: dict[str, Tensor], targets: dict[str, Tensor], *,
                    label_weight: float, target_weights: dict[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """logits (N, C) with labels (N,); preds / targets {key: (B, K)} -> total, weighted terms
    label_weight * CE + sum_key weight_key * MSE(pred_key, target_key)."""
    terms = {"labels": label_weight * F.cross_entropy(logits, labels)}
    terms.update({k: target_weights[k] * F.mse_loss(preds[k], targets[k]) for k in preds})
    return sum(terms.values()), terms


@register_method("supervised")
class Supervised(BaseMethod):
    required_keys = ("images", "label", "rel_rotation_quat")

    def build_heads(self) -> None:
        m = self.cfg.method
        self.target_weights = {str(k): float(w) for k, w in m.targets.items()}
        unknown = sorted(set(self.target_weights) - set(TARGET_DIMS))
        if unknown:
            raise ValueError(f"method.targets: unknown target(s) {unknown}; valid: {sorted(TARGET_DIMS)}")
        cls_dim, pair_dim = self.inv_dim or self.rep_dim, 2 * (self.equi_dim or self.rep_dim)
        self.classifier = nn.Linear(cls_dim, int(self.cfg.data.num_classes))
        self.regressors = nn.ModuleDict({k: mlp(pair_dim, [*m.regressor_hidden, TARGET_DIMS[k]], last_bias=True,
                                                batch_norm=bool(m.head_batch_norm)) for k in self.target_weights})

    @property
    def data_requirements(self) -> dict[str, Any]:
        return {"kind": self.batch_kind, "keys": list(dict.fromkeys((*self.required_keys, *self.target_weights)))}

    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        """No projector: the embeddings are the representation parts."""
        return {"inv": reps["inv"], "equi": reps["equi"]}

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        reps = self.encode_views(views)
        parts = [self.split(r) for r in reps]
        cls_key, pair_key = ("inv" if self.inv_dim else "full"), ("equi" if self.equi_dim else "full")
        logits = self.classifier(torch.cat([p[cls_key] for p in parts]))
        pair = torch.cat([parts[0][pair_key], parts[1][pair_key]], -1)
        preds = {k: head(pair) for k, head in self.regressors.items()}
        targets = {k: batch[k].to(pair.dtype) for k in preds}
        loss, terms = supervised_loss(logits, batch["label"].repeat(len(parts)), preds, targets,
                                      label_weight=float(self.cfg.method.label_weight),
                                      target_weights=self.target_weights)
        return StepOutput(loss, terms, reps)
