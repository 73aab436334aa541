"""The probes, one function each, registered by name in `PROBES`.

A probe takes a `ProbeContext` (cached train / val features, latent schema, model) and its config section,
and returns a `ProbeResult`: flat metrics named "<part>/<metric>" with their definitions and its PNGs.
It raises `ProbeSkipped` when it cannot apply (no predictor, latents absent, all parts width 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ssl_eq.probes import metrics as M
from ssl_eq.probes import plots
from ssl_eq.probes.features import frozen_eval
from ssl_eq.probes.heads import HeadConfig, fit_head
from ssl_eq.probes.targets import (TRANSLATION, absolute_rotation, columns, fixed_pairs, hue_differences,
                                   pair_actions, rotation_angle_deg)


class ProbeSkipped(Exception):
    """The probe does not apply to this run / dataset; the message says why."""


@dataclass
class ProbeContext:
    """What every probe sees. Features are object-major dicts, see `ssl_eq.probes.features`."""
    train: dict[str, Tensor]
    val: dict[str, Tensor]
    latent_schema: list[str]
    class_names: list[str]
    out_dir: Path
    model: Any = None
    seed: int = 0
    log_scalar: Callable[[str, float, int], None] = lambda tag, value, step: None


@dataclass
class ProbeResult:
    metrics: dict[str, float] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float | Tensor, definition_key: str) -> None:
        self.metrics[name] = float(value)
        self.definitions[name] = M.DEFINITIONS[definition_key]


def _head_config(cfg: dict, seed: int) -> HeadConfig:
    return HeadConfig(hidden=list(cfg.get("hidden", [])), epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                      weight_decay=float(cfg["weight_decay"]), batch_size=int(cfg["batch_size"]),
                      standardize=bool(cfg.get("standardize", False)), seed=seed)


def _parts(ctx: ProbeContext, cfg: dict, result: ProbeResult) -> list[str]:
    """The configured parts with non-zero width at the configured level; notes the width-0 ones."""
    level = cfg.get("level", "rep")
    keep = []
    for part in cfg["parts"]:
        key = f"{level}/{part}"
        if key not in ctx.train:
            result.notes.append(f"{key}: not produced by this model")
        elif ctx.train[key].shape[-1] == 0:
            result.notes.append(f"{key}: width 0 for this method")
        else:
            keep.append(key)
    if not keep:
        raise ProbeSkipped(f"no non-empty {level} part among {list(cfg['parts'])}")
    return keep


def _loss_logger(ctx: ProbeContext, tag: str) -> Callable[[int, float], None]:
    return lambda epoch, loss: ctx.log_scalar(f"probe_train/{tag}/loss", loss, epoch)


def _pair_inputs(feats: dict[str, Tensor], key: str, pairs: Tensor) -> Tensor:
    """(P, 2·D) concatenated features of the two views of each pair."""
    f = feats[key]
    return torch.cat([f[pairs[:, 0], pairs[:, 1]], f[pairs[:, 0], pairs[:, 2]]], 1)


def _split_pairs(ctx: ProbeContext, cfg: dict) -> tuple[Tensor, Tensor]:
    """The fixed (P, 3) evaluation pairs of the train and of the val split."""
    n = int(cfg["pairs_per_object"])
    return (fixed_pairs(*ctx.train["latents"].shape[:2], n, ctx.seed),
            fixed_pairs(*ctx.val["latents"].shape[:2], n, ctx.seed + 1))


def _regression_metrics(result: ProbeResult, prefix: str, pred: Tensor, target: Tensor) -> None:
    result.add(f"{prefix}/r2_pooled", M.r2_pooled(pred, target), "r2_pooled")
    result.add(f"{prefix}/r2_uniform", M.r2_uniform(pred, target), "r2_uniform")


def _mean_baseline(result: ProbeResult, prefix: str, y_tr: Tensor, y_va: Tensor) -> None:
    """Pooled R² of predicting the (N, K) training targets' per-output mean for every val target."""
    result.add(f"{prefix}r2_pooled_mean_baseline", M.r2_pooled(y_tr.mean(0).expand_as(y_va), y_va),
               "r2_pooled_mean_baseline")


def probe_linear(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Linear classification of every view's representation part (train objects -> val objects)."""
    result = ProbeResult()
    num_classes = len(ctx.class_names)
    per_class, confusions = {}, {}
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        v_train, v_val = ctx.train[key].shape[1], ctx.val[key].shape[1]
        x_tr, x_va = ctx.train[key].flatten(0, 1), ctx.val[key].flatten(0, 1)
        y_tr = ctx.train["labels"].repeat_interleave(v_train)
        y_va = ctx.val["labels"].repeat_interleave(v_val)
        logits = fit_head(x_tr, y_tr, x_va, num_classes, "cross_entropy", _head_config(cfg, ctx.seed),
                          _loss_logger(ctx, f"linear/{part}"))
        result.add(f"{part}/top1", M.topk_accuracy(logits, y_va, 1), "top1")
        result.add(f"{part}/top5", M.topk_accuracy(logits, y_va, 5), "top5")
        confusions[part] = M.confusion_matrix(logits.argmax(1), y_va, num_classes)
        per_class[part] = M.per_class_accuracy(confusions[part]).numpy()
    result.plots.append(str(plots.per_class_bars(per_class, ctx.class_names, ctx.out_dir / "linear_per_class.png",
                                                 "Linear probe: per-class val accuracy")))
    for part, conf in confusions.items():
        path = plots.confusion_plot(conf.numpy(), ctx.class_names, ctx.out_dir / f"linear_confusion_{part}.png",
                                    f"Linear probe on the {part} representation: confusion (val)")
        result.plots.append(str(path))
    return result


def _rotation_regression(ctx: ProbeContext, cfg: dict, name: str,
                         inputs: Callable[[str], tuple[Tensor, Tensor]], y_tr: Tensor, y_va: Tensor,
                         title: str) -> ProbeResult:
    """Shared body of the relative / individual-view rotation probes: regress (N, 4) quaternions, report both
    R²s and the geodesic error. `inputs(feature_key)` gives the (train, val) input matrices."""
    result = ProbeResult()
    _mean_baseline(result, "", y_tr, y_va)
    scatter = {}
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        x_tr, x_va = inputs(key)
        pred = fit_head(x_tr, y_tr, x_va, 4, "mse", _head_config(cfg, ctx.seed), _loss_logger(ctx, f"{name}/{part}"))
        _regression_metrics(result, part, pred, y_va)
        result.add(f"{part}/geodesic_deg", M.geodesic_error_deg(pred, y_va).mean(), "geodesic_deg")
        scatter[part] = (rotation_angle_deg(y_va).numpy(), rotation_angle_deg(pred).numpy())
    result.plots.append(str(plots.angle_scatter(scatter, ctx.out_dir / f"{name}_angles.png", title)))
    return result


def probe_rotation(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Relative rotation R_a⁻¹R_b (quaternion) from the concatenated representations of fixed view pairs."""
    p_tr, p_va = _split_pairs(ctx, cfg)
    return _rotation_regression(
        ctx, cfg, "rotation",
        inputs=lambda key: (_pair_inputs(ctx.train, key, p_tr), _pair_inputs(ctx.val, key, p_va)),
        y_tr=pair_actions(ctx.train["latents"], p_tr, ctx.latent_schema)["rel_rotation_quat"],
        y_va=pair_actions(ctx.val["latents"], p_va, ctx.latent_schema)["rel_rotation_quat"],
        title="Relative rotation probe (val pairs): rotation angle of R_a⁻¹R_b")


def probe_view_rotation(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Absolute rotation (quaternion) of each view from that view's representation alone (seq-JEPA)."""
    return _rotation_regression(
        ctx, cfg, "view_rotation",
        inputs=lambda key: (ctx.train[key].flatten(0, 1), ctx.val[key].flatten(0, 1)),
        y_tr=absolute_rotation(ctx.train["latents"], ctx.latent_schema).flatten(0, 1),
        y_va=absolute_rotation(ctx.val["latents"], ctx.latent_schema).flatten(0, 1),
        title="Individual-view rotation probe (val views): rotation angle")


def probe_colour(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """(Δ floor hue, Δ spot hue) of fixed view pairs, linear head on the concatenated representations (SIE)."""
    result = ProbeResult()
    p_tr, p_va = _split_pairs(ctx, cfg)
    y_tr = hue_differences(ctx.train["latents"], p_tr, ctx.latent_schema)
    y_va = hue_differences(ctx.val["latents"], p_va, ctx.latent_schema)
    _mean_baseline(result, "", y_tr, y_va)
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        pred = fit_head(_pair_inputs(ctx.train, key, p_tr), y_tr, _pair_inputs(ctx.val, key, p_va), 2, "mse",
                        _head_config(cfg, ctx.seed), _loss_logger(ctx, f"colour/{part}"))
        _regression_metrics(result, part, pred, y_va)
    return result


def probe_translation(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Relative translation of fixed view pairs in the object and the base frame (EquiCaps, 3DIEBench-T)."""
    result = ProbeResult()
    p_tr, p_va = _split_pairs(ctx, cfg)
    columns(ctx.latent_schema, TRANSLATION, "translation prediction (3DIEBench-T)")
    a_tr = pair_actions(ctx.train["latents"], p_tr, ctx.latent_schema)
    a_va = pair_actions(ctx.val["latents"], p_va, ctx.latent_schema)
    for frame in ("object", "base"):
        _mean_baseline(result, f"{frame}/", a_tr[f"rel_translation_{frame}"], a_va[f"rel_translation_{frame}"])
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        for frame in ("object", "base"):
            target = f"rel_translation_{frame}"
            pred = fit_head(_pair_inputs(ctx.train, key, p_tr), a_tr[target], _pair_inputs(ctx.val, key, p_va), 3,
                            "mse", _head_config(cfg, ctx.seed), _loss_logger(ctx, f"translation/{frame}/{part}"))
            _regression_metrics(result, f"{frame}/{part}", pred, a_va[target])
    return result


def probe_predictor(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """SIE predictor metrics: from view 0 and the action to view k, predict view k's equivariant embedding."""
    model = ctx.model
    if model is None or not getattr(model, "has_predictor", False):
        raise ProbeSkipped("this method has no predictor")
    result = ProbeResult()
    for split in cfg["splits"]:
        feats = {"train": ctx.train, "val": ctx.val}[split]
        emb, latents = feats["emb/equi"], feats["latents"]
        if emb.shape[-1] == 0:
            raise ProbeSkipped("the equivariant embedding has width 0")
        k, v = emb.shape[:2]
        objects = torch.arange(k).repeat_interleave(v)
        targets = torch.arange(v).repeat(k)
        pairs = torch.stack([objects, torch.zeros_like(objects), targets], 1)
        with frozen_eval(model):
            pred = model.predict(emb[objects, 0], pair_actions(latents, pairs, ctx.latent_schema)).float()
        ranks = M.retrieval_ranks(pred, emb[objects], targets)
        for name, value in M.mrr_hits(ranks, tuple(cfg["hit_ks"])).items():
            result.add(f"{split}/{name}", value, "hit@k" if name.startswith("hit@") else "mrr")
        quats = absolute_rotation(latents, ctx.latent_schema)
        result.add(f"{split}/pre", M.prediction_rotation_error(pred, emb.flatten(0, 1), quats.flatten(0, 1),
                                                               quats[objects, targets]), "pre")
        err = torch.nn.functional.normalize(pred, dim=-1) - torch.nn.functional.normalize(emb[objects, targets], dim=-1)
        result.add(f"{split}/pred_mse", (err ** 2).sum(-1).mean(), "pred_mse")
    return result


PROBES: dict[str, Callable[[ProbeContext, dict], ProbeResult]] = {
    "linear": probe_linear,
    "rotation": probe_rotation,
    "view_rotation": probe_view_rotation,
    "colour": probe_colour,
    "translation": probe_translation,
    "predictor": probe_predictor,
}


import ssl_eq.probes.sequence  # noqa: E402,F401  (registers seq-JEPA's z_AGG probes into PROBES)
