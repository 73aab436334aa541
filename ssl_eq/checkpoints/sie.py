"""SIE (facebookresearch/SIE): `model.pth` (the whole DDP model) and `final_weights.pth` (the bare backbone).

docs/checkpoints.md "SIE": the projectors' hidden Linears have biases the toolkit's (lightly) projectors drop; on
import each is folded into the next BN's running mean (exact in eval and train mode), on export written as
zeros. The hypernetwork's input columns are x, y, z, w in the file and w, x, y, z in the toolkit.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ssl_eq.checkpoints.base import (TOOLKIT_ONLY, CheckpointFormat, Rule, columns, register_format,
                                    zeros_like_shapes)

XYZW_TO_WXYZ = [3, 0, 1, 2]
WXYZ_TO_XYZW = [1, 2, 3, 0]
PROJECTORS = ("projector_inv", "projector_equi")
NUM_CLASSES = 55  # the reference's OnlineEvaluator (num_classes default)


def _linear_widths(tensors: dict[str, Tensor], part: str) -> list[int]:
    """Out-features of a projector's Linear layers, in order (2-D weights `part.{i}.weight`)."""
    found = sorted((int(m.group(1)), t.shape[0]) for k, t in tensors.items()
                   if (m := re.fullmatch(rf"{part}\.(\d+)\.weight", k)) and t.dim() == 2)
    return [w for _, w in found]


def _mlp_shapes(name: str, dims: list[int]) -> dict[str, tuple[int, ...]]:
    """Shapes of an nn.Sequential of Linear(with bias) / ReLU with widths dims[0] -> ... -> dims[-1]."""
    out = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        out[f"{name}.{2 * i}.weight"], out[f"{name}.{2 * i}.bias"] = (b, a), (b,)
    return out


def evaluator_shapes(rep: int, inv: int, equi: int, emb_inv: int, emb_equi: int) -> dict[str, tuple[int, ...]]:
    """The reference's OnlineEvaluator tensors (55 classes), for main.py's strict resume (docs/checkpoints.md)."""
    c, e = NUM_CLASSES, "evaluator"
    emb = emb_inv + emb_equi
    return {f"{e}.classifier_repr.weight": (c, rep), f"{e}.classifier_repr.bias": (c,),
            f"{e}.classifier_inv_repr.weight": (c, inv), f"{e}.classifier_inv_repr.bias": (c,),
            **_mlp_shapes(f"{e}.predictor_angles_repr", [2 * rep, 2 * rep, 2 * rep, 4]),
            **_mlp_shapes(f"{e}.predictor_angles_equi_repr", [2 * equi, 2 * equi, 2 * equi, 4]),
            f"{e}.classifier_emb.weight": (c, emb), f"{e}.classifier_emb.bias": (c,),
            f"{e}.classifier_inv_emb.weight": (c, emb_inv), f"{e}.classifier_inv_emb.bias": (c,),
            **_mlp_shapes(f"{e}.predictor_angles_emb", [2 * emb, 2 * emb, 2 * emb, 4]),
            **_mlp_shapes(f"{e}.predictor_angles_equi_emb", [2 * emb_equi, 2 * emb_equi, 2 * emb_equi, 4])}


@register_format
class SIEModel(CheckpointFormat):
    name = "sie"
    description = "SIE main.py EXP_DIR/model.pth: {epoch, model, optimizer}, module.-prefixed whole model"
    experiment = "sie_3diebench"
    method = "sie"
    signature = ("backbone.conv1.weight", "projector_equi.0.weight", "predictor.hypernet.net.0.weight")
    rules = (
        Rule("backbone.", "backbone."),
        *(Rule(f"{p}.", f"{p}.layers.") for p in PROJECTORS),
        Rule("predictor.hypernet.net.", "predictor.hypernet."),
        Rule("predictor.hypernet.net.0.weight", "predictor.hypernet.0.weight",
             columns(XYZW_TO_WXYZ), columns(WXYZ_TO_XYZW)),
        Rule("evaluator.", None),
    )

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        return super().matches(tensors) and not any(k.startswith("projector.") for k in tensors)

    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        equi = tensors["projector_equi.0.weight"].shape[1]
        inv = tensors["projector_inv.0.weight"].shape[1] if "projector_inv.0.weight" in tensors else 0
        hyper = sorted(k for k in tensors if k.startswith("predictor.hypernet.net.") and k.endswith(".weight"))
        hidden = [tensors[k].shape[0] for k in hyper[:-1]]
        return [f"method.split.inv={inv}", f"method.split.equi={equi}",
                f"method.projector_inv={_linear_widths(tensors, 'projector_inv')}",
                f"method.projector_equi={_linear_widths(tensors, 'projector_equi')}",
                f"method.predictor.hidden={hidden}"]

    def before_import(self, tensors: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
        """Fold each projector Linear's bias into the following BN: running_mean ← running_mean − bias."""
        out, folded = dict(tensors), 0
        for key in [k for k in tensors if k.startswith(PROJECTORS) and k.endswith(".bias")]:
            part, idx, _ = key.rsplit(".", 2)
            bn_mean = f"{part}.{int(idx) + 1}.running_mean"
            if tensors[f"{part}.{idx}.weight"].dim() == 2 and bn_mean in tensors:
                out[bn_mean] = out[bn_mean] - out.pop(key)
                folded += 1
        if folded:
            notes.append(f"{folded} projector Linear biases folded into the next BatchNorm's running mean")
        return out

    def after_export(self, tensors: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
        """Zero biases before each projector BN, and the OnlineEvaluator main.py's strict resume needs."""
        out = dict(tensors)
        for key in [k for k in tensors if k.startswith(PROJECTORS) and k.endswith(".running_mean")]:
            part, idx, _ = key.rsplit(".", 2)
            lin = f"{part}.{int(idx) - 1}.weight"
            out[f"{part}.{int(idx) - 1}.bias"] = torch.zeros(out[lin].shape[0])
        ordered = {k: out[k] for k in sorted(out, key=_reference_order)}
        emb_inv = model.projector_inv.layers[-1].out_features if model.projector_inv is not None else 0
        return {**ordered, **zeros_like_shapes(evaluator_shapes(model.rep_dim, model.inv_dim, model.equi_dim,
                                                                emb_inv, model.equi_emb_dim))}

    def check_model(self, model: Any) -> None:
        super().check_model(model)
        if model.cfg.backbone.name != "resnet18_sie" or model.cfg.method.predictor.type != "hypernetwork":
            raise ValueError(f"format {self.name!r} holds SIE with backbone resnet18_sie and a hypernetwork "
                             f"predictor; the run has backbone {model.cfg.backbone.name!r}, predictor "
                             f"{model.cfg.method.predictor.type!r}")

    def check_name(self, path: str) -> None:
        if "final_weights" in path:
            raise ValueError(f"{path}: SIE's eval scripts read a path containing 'final_weights' as a bare backbone; "
                             f"name the whole-model file differently (e.g. model.pth) or use --format sie_backbone")


def _reference_order(name: str) -> tuple[int, str]:
    """backbone, projector_inv, projector_equi, predictor: the reference model's attribute order."""
    groups = ("backbone.", "projector_inv.", "projector_equi.", "predictor.")
    return next(i for i, g in enumerate(groups) if name.startswith(g)), name


@register_format
class SIEBackbone(CheckpointFormat):
    name = "sie_backbone"
    description = "SIE main.py EXP_DIR/final_weights.pth: the bare backbone state dict (no prefix)"
    experiment = "sie_3diebench"
    method = "sie"
    prefix = ""
    wrapped = False
    signature = ("conv1.weight", "layer1.0.downsample.0.weight", "layer4.1.bn2.running_var")
    rules = (Rule("", "backbone."),)
    not_in_file = ("projector_inv.", "projector_equi.", "predictor.", *TOOLKIT_ONLY)

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        return super().matches(tensors) and not any(k.startswith(("backbone.", "module.")) for k in tensors)

    def check_model(self, model: Any) -> None:
        if model.cfg.backbone.name != "resnet18_sie":
            raise ValueError(f"format {self.name!r} holds SIE's ResNet-18 (backbone resnet18_sie); the run's "
                             f"backbone is {model.cfg.backbone.name!r}")

    def file_fields(self, model: Any, epoch: int) -> dict[str, Any]:
        return {}

    def check_name(self, path: str) -> None:
        if "final_weights" not in path:
            raise ValueError(f"{path}: SIE's eval scripts read a bare backbone only from a path containing "
                             f"'final_weights' (e.g. final_weights.pth); other names are read as ckpt['model']")
