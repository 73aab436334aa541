"""seq-JEPA (hafezgh/seq-jepa, main_transformed_views.py): `ckpt_wandb-<id>_epoch_<N>.pth`, {model, optimizer,
min_loss, epoch, run_id[, lr_scheduler]}, no prefix (no DDP wrapper).

docs/checkpoints.md "seq-JEPA": encoder / target_encoder are the toolkit's backbone / backbone_target (a file
trained without --ema has no target encoder: the encoder is copied); the action projection's input columns are
x, y, z, w[, extras] in the file and w, x, y, z[, extras] in the toolkit. The online probes are the reference's
own (dropped on import; an export writes them, zeros, since --is-eval loads strict=True). The head count, M_train
and the image size are not in the file (defaults: 4 heads, M 3 for rot / 4 for rotcolor, 128 px).
"""
from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from ssl_eq.checkpoints.base import CheckpointFormat, Rule, columns, register_format, zeros_like_shapes
from ssl_eq.checkpoints.sie import NUM_CLASSES, XYZW_TO_WXYZ, WXYZ_TO_XYZW

ACTIONS = {4: "rot", 6: "rotcolor", 8: "all"}          # d_a -> method.action
SEQ_LEN = {"rot": 3, "rotcolor": 4}                     # the published M_train (seq-jepa.md)
LAYERS = "transformer_encoder.transformer_encoder.layers."


@register_format
class SeqJEPAFormat(CheckpointFormat):
    name = "seqjepa"
    description = "seq-JEPA ckpt_wandb-<id>_epoch_<N>.pth: {model, optimizer, min_loss, epoch, run_id, ...}"
    experiment = "seqjepa_3diebench"
    method = "seqjepa"
    prefix = ""
    signature = ("encoder.conv1.weight", "agg_token", "transformer_encoder.norm.weight", "predictor.0.weight")
    rules = (
        Rule("encoder.", "backbone."),
        Rule("target_encoder.", "backbone_target."),
        Rule("agg_token", "aggregator.agg_token"),
        Rule("action_proj.0.weight", "action_encoder.proj.weight", columns(XYZW_TO_WXYZ), columns(WXYZ_TO_XYZW)),
        Rule("action_proj.1.", "action_encoder.bn."),
        Rule(LAYERS, "aggregator.encoder.layers."),
        Rule("transformer_encoder.norm.", "aggregator.encoder.norm."),
        Rule("predictor.", "predictor."),
        Rule("online_linprobe.", None),
        Rule("online_equiprobe.", None),
    )

    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        d_model = tensors["agg_token"].shape[-1]
        layers = {m.group(1) for k in tensors if (m := re.match(re.escape(LAYERS) + r"(\d+)\.", k))}
        out = [f"method.aggregator.num_layers={len(layers)}",
               f"method.aggregator.ff_mult={tensors[LAYERS + '0.linear1.weight'].shape[0] // d_model}"
               if layers else "method.aggregator.num_layers=0",
               f"method.predictor_hidden={tensors['predictor.0.weight'].shape[0] if 'predictor.3.weight' in tensors else 0}"]
        proj = tensors.get("action_proj.0.weight")
        if proj is None:
            out.append("method.action_cond=false")
        else:
            action = ACTIONS.get(proj.shape[1])
            if action is None:
                raise ValueError(f"action_proj.0.weight has {proj.shape[1]} input columns; seq-JEPA's actions "
                                 f"have {sorted(ACTIONS)} (rot, rotcolor, all)")
            out += [f"method.action={action}", f"method.action_emb_dim={proj.shape[0]}",
                    *([f"method.seq_len={SEQ_LEN[action]}"] if action in SEQ_LEN else [])]
        if tensors["encoder.conv1.weight"].shape[-1] == 3:
            out.append("backbone.stem=small")   # the reference's CIFAR stem (3×3 conv, no max-pool)
        return out

    def before_import(self, tensors: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
        """A file trained without --ema has no target encoder: it starts as a copy of the encoder."""
        if any(k.startswith("target_encoder.") for k in tensors):
            return tensors
        notes.append("no target_encoder (trained without --ema): backbone_target copied from the encoder")
        return {**tensors, **{"target_" + k: v.clone() for k, v in tensors.items() if k.startswith("encoder.")}}

    def after_export(self, tensors: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
        """The reference's online probes: linprobe (55, d_model), equiprobe 2D-1024-1024-d_a (zeros)."""
        d, d_a = model.rep_dim, model.action_dim if model.action_encoder is not None else 4
        shapes = {"online_linprobe.0.weight": (NUM_CLASSES, model.d_model), "online_linprobe.0.bias": (NUM_CLASSES,),
                  "online_equiprobe.0.weight": (1024, 2 * d), "online_equiprobe.0.bias": (1024,),
                  "online_equiprobe.2.weight": (1024, 1024), "online_equiprobe.2.bias": (1024,),
                  "online_equiprobe.4.weight": (d_a, 1024), "online_equiprobe.4.bias": (d_a,)}
        return {**tensors, **zeros_like_shapes(shapes)}

    def file_fields(self, model: Any, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "min_loss": float("inf"), "run_id": f"ssl_eq-{model.cfg.run_dir}"}

    def check_model(self, model: Any) -> None:
        super().check_model(model)
        if model.cfg.backbone.name != "resnet18" or model.cfg.method.action == "aug":
            raise ValueError(f"format {self.name!r} holds seq-JEPA on a torchvision ResNet-18 with 3DIEBench "
                             f"actions (main_transformed_views.py); the run has backbone {model.cfg.backbone.name!r}, "
                             f"action {model.cfg.method.action!r}")
