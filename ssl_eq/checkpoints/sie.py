"""SIE (facebookresearch/SIE): `model.pth` (the whole DDP model) and `final_weights.pth` (the bare backbone).

docs/checkpoints.md "SIE": the projectors' hidden Linears have biases the toolkit's (lightly) projectors drop; on
import each is folded into the next BN's running mean (exact in eval and train mode), on export written as
zeros. The hypernetwork's input columns are x, y, z, w in the file and w, x, y, z in the toolkit.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from omegaconf import OmegaConf
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


BACKBONE_WIDTH = "backbone.layer4.1.bn2.weight"  # (512,): the width of SIE's ResNet-18 representation
HYPERNET = (Rule("predictor.hypernet.net.", "predictor.hypernet."),
            Rule("predictor.hypernet.net.0.weight", "predictor.hypernet.0.weight",
                 columns(XYZW_TO_WXYZ), columns(WXYZ_TO_XYZW)))


def _hypernet_hidden(tensors: dict[str, Tensor]) -> list[int]:
    hyper = sorted(k for k in tensors if k.startswith("predictor.hypernet.net.") and k.endswith(".weight"))
    return [tensors[k].shape[0] for k in hyper[:-1]]


def _in_width(tensors: dict[str, Tensor], part: str) -> int:
    key = f"{part}.0.weight"
    return tensors[key].shape[1] if key in tensors else 0


class SIERepositoryModel(CheckpointFormat):
    """A whole model of the SIE repository's main.py (`model.pth`): backbone, projectors (SIE's `Projector`:
    Linear with bias + BN + ReLU ..., last Linear without bias), maybe a hypernetwork predictor, `evaluator.*`."""

    experiment = "sie_3diebench"
    projectors: tuple[str, ...] = ()

    def before_import(self, tensors: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
        """Fold each projector Linear's bias into the following BN: running_mean ← running_mean − bias."""
        out, folded = dict(tensors), 0
        for key in [k for k in tensors if k.startswith(self.projectors) and k.endswith(".bias")]:
            part, idx, _ = key.rsplit(".", 2)
            bn_mean = f"{part}.{int(idx) + 1}.running_mean"
            if tensors[f"{part}.{idx}.weight"].dim() == 2 and bn_mean in tensors:
                out[bn_mean] = out[bn_mean] - out.pop(key)
                folded += 1
        if folded:
            notes.append(f"{folded} projector Linear biases folded into the next BatchNorm's running mean")
        return out

    def after_export(self, tensors: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
        """Zero biases before each projector BN (the reference's Linears have them), in the reference's order."""
        out = dict(tensors)
        for key in [k for k in tensors if k.startswith(self.projectors) and k.endswith(".running_mean")]:
            part, idx, _ = key.rsplit(".", 2)
            out[f"{part}.{int(idx) - 1}.bias"] = torch.zeros(out[f"{part}.{int(idx) - 1}.weight"].shape[0])
        groups = ("backbone.", *(f"{p}." for p in self.projectors), "predictor.")
        return {k: out[k] for k in sorted(out, key=lambda n: (next(i for i, g in enumerate(groups)
                                                                    if n.startswith(g)), n))}

    def check_model(self, model: Any) -> None:
        super().check_model(model)
        predictor = OmegaConf.select(model.cfg, "method.predictor.type", default="hypernetwork")
        if model.cfg.backbone.name != "resnet18_sie" or predictor != "hypernetwork":
            raise ValueError(f"format {self.name!r} holds {self.method} with backbone resnet18_sie (and a "
                             f"hypernetwork predictor); the run has backbone {model.cfg.backbone.name!r}, predictor "
                             f"{predictor!r}")

    def check_name(self, path: str) -> None:
        if "final_weights" in path:
            raise ValueError(f"{path}: SIE's eval scripts read a path containing 'final_weights' as a bare backbone; "
                             f"name the whole-model file differently (e.g. model.pth) or use --format sie_backbone")


@register_format
class SIEModel(SIERepositoryModel):
    name = "sie"
    description = "SIE main.py EXP_DIR/model.pth: {epoch, model, optimizer}, module.-prefixed whole model"
    method = "sie"
    projectors = PROJECTORS
    signature = ("backbone.conv1.weight", "projector_equi.0.weight", "predictor.hypernet.net.0.weight")
    rules = (Rule("backbone.", "backbone."), *(Rule(f"{p}.", f"{p}.layers.") for p in PROJECTORS), *HYPERNET,
             Rule("evaluator.", None))

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        """SIE's projectors split the representation (EquiMod's both read all of it)."""
        return super().matches(tensors) and BACKBONE_WIDTH in tensors and \
            _in_width(tensors, "projector_inv") + _in_width(tensors, "projector_equi") == len(tensors[BACKBONE_WIDTH])

    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        return [f"method.split.inv={_in_width(tensors, 'projector_inv')}",
                f"method.split.equi={_in_width(tensors, 'projector_equi')}",
                f"method.projector_inv={_linear_widths(tensors, 'projector_inv')}",
                f"method.projector_equi={_linear_widths(tensors, 'projector_equi')}",
                f"method.predictor.hidden={_hypernet_hidden(tensors)}"]

    def after_export(self, tensors: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
        """... and the OnlineEvaluator main.py's strict resume needs (zeros)."""
        emb_inv = model.projector_inv.layers[-1].out_features if model.projector_inv is not None else 0
        return {**super().after_export(tensors, model),
                **zeros_like_shapes(evaluator_shapes(model.rep_dim, model.inv_dim, model.equi_dim, emb_inv,
                                                     model.equi_emb_dim))}


@register_format
class SIEVICReg(SIERepositoryModel):
    """The SIE repository's VICReg baseline (`--experience VICReg`): backbone + one `Projector`. Names from its
    models.py structure (equicaps.md "Baselines"); its OnlineEvaluator is dropped and not written on export."""
    name = "sie_vicreg"
    description = "SIE repository VICReg baseline model.pth: backbone, projector, evaluator (module. prefix)"
    method = "vicreg"
    projectors = ("projector",)
    signature = ("backbone.conv1.weight", "projector.0.weight")
    rules = (Rule("backbone.", "backbone."), Rule("projector.", "projector.layers."), Rule("evaluator.", None))

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        return super().matches(tensors) and "projector.conv_a.weight" not in tensors and \
            not any(k.startswith("predictor.") for k in tensors)

    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        return ["method=vicreg", f"method.projector={_linear_widths(tensors, 'projector')}"]


@register_format
class SIEEquiMod(SIERepositoryModel):
    """The SIE repository's EquiMod baseline: two projectors on the whole representation and SIE's hypernetwork
    predictor (equicaps.md "Baselines"); its OnlineEvaluator is dropped and not written on export."""
    name = "sie_equimod"
    description = "SIE repository EquiMod baseline model.pth: backbone, projector_inv / projector_equi on the whole " \
                  "representation, hypernetwork predictor, evaluator (module. prefix)"
    method = "equimod"
    projectors = PROJECTORS
    signature = SIEModel.signature + ("projector_inv.0.weight",)
    rules = SIEModel.rules

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        return super().matches(tensors) and BACKBONE_WIDTH in tensors and \
            _in_width(tensors, "projector_inv") == _in_width(tensors, "projector_equi") == len(tensors[BACKBONE_WIDTH])

    def check_model(self, model: Any) -> None:
        super().check_model(model)
        m = model.cfg.method
        if m.projector_out_bn or m.action != "rotation":
            raise ValueError(f"format {self.name!r} holds the SIE repository's EquiMod (rotation actions, no BN after "
                             f"the projectors); the run has method.action={m.action!r}, "
                             f"method.projector_out_bn={m.projector_out_bn}")

    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        return ["method=equimod", f"method.projector_inv={_linear_widths(tensors, 'projector_inv')}",
                f"method.projector_equi={_linear_widths(tensors, 'projector_equi')}",
                f"method.predictor.hidden={_hypernet_hidden(tensors)}"]


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
