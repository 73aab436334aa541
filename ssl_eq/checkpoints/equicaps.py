"""EquiCaps (AberdeenML/EquiCaps): `model.pth` ({epoch, model, optimizer}), `model_epoch_N.pth`,
`final_weights.pth` and the released files (flat); every one the whole DDP model with the `module.` prefix.

docs/checkpoints.md "EquiCaps": `projector.{conv_a, bn_a, conv_pose, bn_pose}` are the toolkit's primary capsules,
`projector.fc` its self-routing layer (b2 (1, 1, N, K) in the file, (N, K) in the toolkit). The eval scripts load
strict=True, so an export writes every `evaluator.*` tensor (zeros: the scripts never use them).
"""
from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ssl_eq.checkpoints.base import CheckpointFormat, LayoutError, Rule, register_format, zeros_like_shapes
from ssl_eq.checkpoints.sie import NUM_CLASSES, _mlp_shapes


def evaluator_shapes(rep: int, k: int, p: int) -> dict[str, tuple[int, ...]]:
    """OnlineEvaluatorCaps tensors for 55 classes, K capsules of P pose entries."""
    c, e, kp = NUM_CLASSES, "evaluator", k * p
    return {f"{e}.classifier_repr.weight": (c, rep), f"{e}.classifier_repr.bias": (c,),
            **_mlp_shapes(f"{e}.predictor_angles_repr", [2 * rep] * 3 + [4]),
            f"{e}.classifier_emb_inv.weight": (c, k), f"{e}.classifier_emb_inv.bias": (c,),
            f"{e}.classifier_emb_equiv.weight": (c, kp), f"{e}.classifier_emb_equiv.bias": (c,),
            **_mlp_shapes(f"{e}.predictor_angles_inv_emb", [2 * k] * 3 + [4]),
            **_mlp_shapes(f"{e}.predictor_angles_equi_emb", [2 * kp] * 3 + [4]),
            f"{e}.classifier_emb_inv_caps.W2": (k, c, p), f"{e}.classifier_emb_inv_caps.b2": (1, 1, k, c),
            f"{e}.classifier_emb.weight": (c, k + kp), f"{e}.classifier_emb.bias": (c,),
            **_mlp_shapes(f"{e}.predictor_angles_emb", [2 * (k + kp)] * 3 + [4])}


class EquiCapsFormat(CheckpointFormat):
    pose_size: int = 3
    method = "equicaps"
    accepts_flat = True
    signature = ("backbone.conv1.weight", "projector.conv_a.weight", "projector.conv_pose.weight", "projector.fc.W1")
    rules = (
        Rule("backbone.", "backbone."),
        *(Rule(f"projector.{m}.", f"primary.{m}.") for m in ("conv_a", "bn_a", "conv_pose", "bn_pose")),
        Rule("projector.fc.W1", "routing.W1"),
        Rule("projector.fc.W2", "routing.W2"),
        Rule("projector.fc.b2", "routing.b2", lambda t: t[0, 0] if t.dim() == 4 and t.shape[:2] == (1, 1) else t,
             lambda t: t.reshape(1, 1, *t.shape)),
        Rule("evaluator.", None),
    )

    def _sizes(self, tensors: dict[str, Tensor]) -> tuple[int, int, int]:
        """(K capsules, P pose entries, routing kernel k) from the capsule tensors."""
        k = tensors["projector.conv_a.weight"].shape[0]
        p = tensors["projector.conv_pose.weight"].shape[0] // k
        kernel = math.isqrt(tensors["projector.fc.W1"].shape[0] // k)
        return k, p, kernel

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        return super().matches(tensors) and self._sizes(tensors)[1] == self.pose_size ** 2

    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        k, p, kernel = self._sizes(tensors)
        if p != self.pose_size ** 2:
            n = math.isqrt(p)
            raise LayoutError(f"projector.conv_pose.weight holds {p}-entry poses ({n}×{n}), not the "
                              f"{self.pose_size}×{self.pose_size} poses of format {self.name!r}; use --format "
                              f"equicaps_{n}x{n}")
        return [f"method.num_capsules={k}", f"method.routing.kernel_size={kernel}", f"data.image_size={32 * kernel}"]

    def after_export(self, tensors: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
        return {**tensors, **zeros_like_shapes(evaluator_shapes(model.rep_dim, model.inv_dim, self.pose_size ** 2))}

    def check_model(self, model: Any) -> None:
        super().check_model(model)
        m = model.cfg.method
        if int(m.pose_size) != self.pose_size or model.cfg.backbone.name != "resnet18_sie":
            raise ValueError(f"format {self.name!r} holds {self.pose_size}×{self.pose_size} poses on backbone "
                             f"resnet18_sie; the run has {m.pose_size}×{m.pose_size} poses on "
                             f"{model.cfg.backbone.name!r}")


@register_format
class EquiCaps3x3(EquiCapsFormat):
    name = "equicaps_3x3"
    description = "EquiCaps 3×3: model.pth / model_epoch_N.pth / final_weights.pth / release .pth (module. prefix)"
    experiment = "equicaps_3diebench"
    pose_size = 3


@register_format
class EquiCaps4x4(EquiCapsFormat):
    name = "equicaps_4x4"
    description = "EquiCaps 4×4 (3DIEBench-T): the 3×3 files with 4×4 poses; the frame is not in the file"
    experiment = "equicaps_3diebench_t"
    pose_size = 4
