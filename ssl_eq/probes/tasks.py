"""The probes, one function each, registered by name in `PROBES`.

A probe takes a `ProbeContext` (cached train / val features, latent schema, model) and its config section,
and returns a `ProbeResult`: flat metrics named "<part>/<metric>" with their definitions and its PNGs.
It raises `ProbeSkipped` when it cannot apply (no predictor, latents absent, all parts width 0).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ssl_eq.datasets.relative import relative_quaternion
from ssl_eq.probes import metrics as M
from ssl_eq.probes import per_object as PO
from ssl_eq.probes import plots
from ssl_eq.probes.context import ProbeContext, ProbeResult, ProbeSkipped, head_config, loss_logger
from ssl_eq.probes.features import frozen_eval
from ssl_eq.probes.heads import FittedHead, train_head
from ssl_eq.probes.images import probe_aug_params
from ssl_eq.probes.sampling import PAIR, ViewTuples
from ssl_eq.probes.sequence import probe_agg_linear
from ssl_eq.probes.targets import (ROTATION, TRANSLATION, absolute_rotation, columns, hue_differences,
                                   pair_actions, rotation_angle_deg)

# seeds of the fixed draws, offsets from the probe seed: evaluation rows (val split), mean-baseline rows (train)
VAL_SEED_OFFSET = 1
BASELINE_SEED_OFFSET = 2
Target = Callable[[Tensor], Tensor]  # (N, 1 + arity) index rows -> (N, ...) targets


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


def _per_object(cfg: dict, key: str) -> int | None:
    value = cfg.get(key)
    return None if value is None else int(value)


class _Task:
    """One probe's examples: `target(split)` builds the Target of a split's features; `arity` views per example;
    `train_per_object` (fresh each epoch) / `val_per_object` (fixed, seeded) examples per object (None: every view)."""

    def __init__(self, ctx: ProbeContext, cfg: dict, target: Callable[[dict[str, Tensor]], Target], arity: int):
        self.ctx, self.cfg, self.arity = ctx, cfg, arity
        self.targets = {"train": target(ctx.train), "val": target(ctx.val)}
        self.per_object = {"train": _per_object(cfg, "train_per_object"), "val": _per_object(cfg, "val_per_object")}
        val = self.examples("val", "latents")  # the features only give the (K, V) layout here
        self.val_rows = val.draw(torch.Generator().manual_seed(ctx.seed + VAL_SEED_OFFSET))
        self.y_val = val.target(self.val_rows)
        self.val_objects = _object_ids(ctx.val, self.val_rows[:, 0])

    def examples(self, split: str, key: str) -> ViewTuples:
        feats = {"train": self.ctx.train, "val": self.ctx.val}[split]
        return ViewTuples(feats[key], self.targets[split], self.arity, self.per_object[split])

    def train_targets(self) -> Tensor:
        """Targets of one fixed draw of training examples (for the mean-prediction baseline)."""
        train = self.examples("train", "latents")
        return train.target(train.draw(torch.Generator().manual_seed(self.ctx.seed + BASELINE_SEED_OFFSET)))

    def fit(self, key: str, out_dim: int, loss: str, tag: str, result: ProbeResult,
            on_fitted: Callable[[FittedHead], None] | None = None) -> Tensor:
        """Train a head on feature `key` -> (M, out_dim) outputs on the fixed val rows; records the selection."""
        fit = train_head(self.examples("train", key), self.examples("val", key), self.val_rows, out_dim, loss,
                         head_config(self.cfg, self.ctx.seed), loss_logger(self.ctx, tag), self.ctx.device,
                         on_fitted)
        result.selection[tag] = fit.summary()
        return fit.pred


def _object_ids(feats: dict[str, Tensor], rows: Tensor) -> Tensor:
    """(N,) object indices into a split's features -> (N,) dataset object ids (`object_index`, else the indices)."""
    ids = feats.get("object_index")
    return rows if ids is None else ids[rows]


def _regression_metrics(result: ProbeResult, prefix: str, pred: Tensor, target: Tensor) -> None:
    result.add(f"{prefix}/r2_pooled", M.r2_pooled(pred, target), "r2_pooled")
    result.add(f"{prefix}/r2_uniform", M.r2_uniform(pred, target), "r2_uniform")


def _mean_baseline(result: ProbeResult, prefix: str, y_tr: Tensor, y_va: Tensor, varying: bool = False) -> None:
    """Pooled, uniform and (with `varying`) varying-output uniform R² of predicting the (N, K) training targets'
    per-output mean for every val target."""
    mean = y_tr.mean(0).expand_as(y_va)
    result.add(f"{prefix}r2_pooled_mean_baseline", M.r2_pooled(mean, y_va), "r2_pooled_mean_baseline")
    result.add(f"{prefix}r2_uniform_mean_baseline", M.r2_uniform(mean, y_va), "r2_uniform_mean_baseline")
    if varying:
        result.add(f"{prefix}r2_uniform_varying_mean_baseline", M.r2_uniform_varying(mean, y_va),
                   "r2_uniform_varying_mean_baseline")


def probe_linear(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Linear classification of views' representation parts (train objects -> val objects); views per object
    per epoch `train_per_object` (None: all), val views `val_per_object` (None: all)."""
    result = ProbeResult()
    num_classes = len(ctx.class_names)
    task = _Task(ctx, cfg, lambda feats: (lambda rows: feats["labels"][rows[:, 0]]), arity=1)
    per_class, confusions = {}, {}
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        logits = task.fit(key, num_classes, "cross_entropy", f"linear/{part}", result)
        result.add(f"{part}/top1", M.topk_accuracy(logits, task.y_val, 1), "top1")
        result.add(f"{part}/top5", M.topk_accuracy(logits, task.y_val, 5), "top5")
        result.per_object[part] = PO.accuracy(logits.argmax(1) == task.y_val, task.val_objects)
        confusions[part] = M.confusion_matrix(logits.argmax(1), task.y_val, num_classes)
        per_class[part] = M.per_class_accuracy(logits.argmax(1), task.y_val, num_classes).numpy()
    result.plots.append(str(plots.per_class_bars(per_class, ctx.class_names, ctx.out_dir / "linear_per_class.png",
                                                 "Linear probe: per-class val accuracy")))
    for part, conf in confusions.items():
        path = plots.confusion_plot(conf.numpy(), ctx.class_names, ctx.out_dir / f"linear_confusion_{part}.png",
                                    f"Linear probe on the {part} representation: confusion (val)")
        result.plots.append(str(path))
    return result


def _rotation_regression(ctx: ProbeContext, cfg: dict, name: str, task: _Task, title: str,
                         save: bool = False) -> ProbeResult:
    """Shared body of the relative / individual-view rotation probes: regress (N, 4) quaternions, report both
    R²s, the R² over the varying outputs, the mean baseline and the geodesic error. `save` persists each part's
    head as `<name>_head_<part>` (ctx.save_head)."""
    result = ProbeResult()
    y_train = task.train_targets()
    _mean_baseline(result, "", y_train, task.y_val, varying=True)
    scatter = {}
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        keep = (lambda head: ctx.save_head(f"{name}_head_{part}", head, feature=key)) if save else None
        pred = task.fit(key, 4, "mse", f"{name}/{part}", result, on_fitted=keep)
        _regression_metrics(result, part, pred, task.y_val)
        result.add(f"{part}/r2_uniform_varying", M.r2_uniform_varying(pred, task.y_val), "r2_uniform_varying")
        result.add(f"{part}/geodesic_deg", M.geodesic_error_deg(pred, task.y_val).mean(), "geodesic_deg")
        scatter[part] = (rotation_angle_deg(task.y_val).numpy(), rotation_angle_deg(pred).numpy())
        result.per_object[part] = PO.regression(pred, task.y_val, y_train.mean(0), task.val_objects)
    result.plots.append(str(plots.angle_scatter(scatter, ctx.out_dir / f"{name}_angles.png", title)))
    return result


def _relative_rotation_target(ctx: ProbeContext) -> Callable[[dict[str, Tensor]], Target]:
    columns(ctx.latent_schema, ROTATION, "relative rotation")
    return lambda feats: (lambda rows: relative_quaternion(feats["latents"][rows[:, 0], rows[:, 1]],
                                                           feats["latents"][rows[:, 0], rows[:, 2]],
                                                           ctx.quaternion_sign))


def probe_rotation(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Relative rotation R_a⁻¹R_b (quaternion) from the concatenated representations of view pairs: fresh
    random pairs every epoch, fixed val pairs."""
    task = _Task(ctx, cfg, _relative_rotation_target(ctx), arity=PAIR)
    return _rotation_regression(ctx, cfg, "rotation", task,
                                "Relative rotation probe (val pairs): rotation angle of R_a⁻¹R_b", save=True)


def probe_view_rotation(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Absolute rotation (quaternion) of each view from that view's representation alone (seq-JEPA)."""
    def target(feats: dict[str, Tensor]) -> Target:
        quats = absolute_rotation(feats["latents"], ctx.latent_schema, ctx.quaternion_sign)
        return lambda rows: quats[rows[:, 0], rows[:, 1]]

    return _rotation_regression(ctx, cfg, "view_rotation", _Task(ctx, cfg, target, arity=1),
                                "Individual-view rotation probe (val views): rotation angle")


def probe_colour(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """(Δ floor hue, Δ spot hue) of view pairs, linear head on the concatenated representations (SIE)."""
    result = ProbeResult()
    task = _Task(ctx, cfg, lambda feats: (lambda rows: hue_differences(feats["latents"], rows, ctx.latent_schema,
                                                                       ctx.colour_targets)), arity=PAIR)
    _mean_baseline(result, "", task.train_targets(), task.y_val)
    for key in _parts(ctx, cfg, result):
        part = key.split("/")[1]
        _regression_metrics(result, part, task.fit(key, 2, "mse", f"colour/{part}", result), task.y_val)
    return result


def probe_translation(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Relative translation of view pairs in the object and the base frame (EquiCaps, 3DIEBench-T)."""
    result = ProbeResult()
    columns(ctx.latent_schema, TRANSLATION, "translation prediction (3DIEBench-T)")
    keys = _parts(ctx, cfg, result)
    for frame in ("object", "base"):
        def target(feats: dict[str, Tensor], key: str = f"rel_translation_{frame}") -> Target:
            return lambda rows: pair_actions(feats["latents"], rows, ctx.latent_schema)[key]

        task = _Task(ctx, cfg, target, arity=PAIR)
        _mean_baseline(result, f"{frame}/", task.train_targets(), task.y_val)
        for key in keys:
            part = key.split("/")[1]
            pred = task.fit(key, 3, "mse", f"translation/{frame}/{part}", result)
            _regression_metrics(result, f"{frame}/{part}", pred, task.y_val)
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
            actions = pair_actions(latents, pairs, ctx.latent_schema, **ctx.run_conventions)
            pred = model.predict(emb[objects, 0], actions).float()
        ranks = M.retrieval_ranks(pred, emb[objects], targets)
        if split == "val":
            result.per_object[split] = PO.accuracy(ranks == 1, _object_ids(feats, objects))
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
    "agg_linear": probe_agg_linear,
    "aug_params": probe_aug_params,
}
