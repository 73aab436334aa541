"""Sequence probes (seq-JEPA): linear classification of z_AGG aggregated over M_val views.

z_AGG needs no new image pass: the cached per-view encoder outputs `rep/full` (K, V, D) of M_val fixed views
per sequence and the actions between them (from the cached latents, computed as in training) go through the
frozen, eval-mode action encoder + transformer (`model.aggregate`). M_val may differ from the M the model was
trained with (the paper's (M_train, M_val) rows). Per-view probes (single-view classification, relative
rotation / colour on pairs, individual-view rotation) are the generic ones of `ssl_eq.probes.tasks` on `full`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_eq.datasets.relative import relative_transform
from ssl_eq.probes import metrics as M
from ssl_eq.probes.context import ProbeContext, ProbeResult, ProbeSkipped, head_config, loss_logger
from ssl_eq.probes.features import frozen_eval
from ssl_eq.probes.heads import fit_head
from ssl_eq.probes.images import aug_aggregate
from ssl_eq.probes.targets import columns

AGG_KEY = "rep/full"  # per-view encoder outputs the aggregate is computed from


def fixed_sequences(num_objects: int, views: int, m_val: int, per_object: int, seed: int) -> Tensor:
    """Deterministic (P, 1 + m_val) int64 rows (object, view_1..view_m) of distinct views, P = K · per_object."""
    if not 1 <= m_val <= views:
        raise ValueError(f"probes.agg_linear.m_val: {m_val} views per sequence, but the dataset has {views} views "
                         f"per object; valid: 1..{views}")
    gen = torch.Generator().manual_seed(seed)
    obj = torch.arange(num_objects).repeat_interleave(per_object)
    order = torch.rand(len(obj), views, generator=gen).argsort(1)[:, :m_val]
    return torch.cat([obj[:, None], order], 1)


def aggregate_features(model: Any, feats: dict[str, Tensor], schema: list[str], sequences: Tensor,
                       chunk: int, conventions: dict[str, str] | None = None) -> Tensor:
    """z_AGG (P, Da) of (P, 1 + M) `sequences` over cached (K, V, D) encoder outputs and (K, V, L) latents;
    the actions follow `conventions` (the run's `quaternion_sign` / `colour_targets`, as it was trained)."""
    spec = model.action_spec
    if spec is not None and not spec.latents:
        raise ProbeSkipped("the model's actions are augmentations (method.action=aug); the cached views have none")
    if spec is not None:
        columns(schema, spec.latents, f"the aggregate over actions {model.cfg.method.action!r}")
    obj, views = sequences[:, :1], sequences[:, 1:]
    out = []
    with frozen_eval(model):
        for i in range(0, len(sequences), chunk):
            o, v = obj[i:i + chunk], views[i:i + chunk]
            z = feats[AGG_KEY][o, v].to(model.device)                        # (p, M, D)
            lat = feats["latents"][o, v]                                      # (p, M, L)
            rel = relative_transform(lat[:, :-1], lat[:, 1:], **(conventions or {}))
            actions = model.actions(rel)                                      # (p, M-1, A) or None
            out.append(model.aggregate(z, None if actions is None else actions.to(model.device)).float().cpu())
    return torch.cat(out)


def probe_agg_linear(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Linear classification of z_AGG over each configured M_val (train objects -> val objects)."""
    model = ctx.model
    if model is None or not hasattr(model, "aggregate"):
        raise ProbeSkipped("the model has no sequence aggregate (seq-JEPA only)")
    result = ProbeResult()
    n, chunk = int(cfg["sequences_per_object"]), int(cfg["chunk"])
    # views per object: the dataset's, or the augmented views of each image (method.action=aug)
    views = min(f["aug/rep" if "aug/rep" in f else AGG_KEY].shape[1] for f in (ctx.train, ctx.val))
    m_vals = sorted({min(int(m), views) for m in cfg["m_val"]})
    if max(int(m) for m in cfg["m_val"]) > views:
        result.notes.append(f"probes.agg_linear.m_val {list(cfg['m_val'])}: the dataset has {views} views per "
                            f"object, so M_val {m_vals} (the largest it allows)")
    for m_val in m_vals:
        split_x = {}
        for name, feats, seed in (("train", ctx.train, ctx.seed), ("val", ctx.val, ctx.seed + 1)):
            if "aug/rep" in feats:  # augmentations as actions: each image's own augmented views
                split_x[name] = aug_aggregate(model, feats, m_val, chunk), feats["labels"]
                continue
            seqs = fixed_sequences(*feats[AGG_KEY].shape[:2], m_val, n, seed)
            split_x[name] = (aggregate_features(model, feats, ctx.latent_schema, seqs, chunk, ctx.run_conventions),
                             feats["labels"][seqs[:, 0]])
        (x_tr, y_tr), (x_va, y_va) = split_x["train"], split_x["val"]
        logits = fit_head(x_tr, y_tr, x_va, len(ctx.class_names), "cross_entropy", head_config(cfg, ctx.seed),
                          loss_logger(ctx, f"agg_linear/m{m_val}"))
        result.add(f"agg_m{m_val}/top1", M.topk_accuracy(logits, y_va, 1), "top1")
        result.add(f"agg_m{m_val}/top5", M.topk_accuracy(logits, y_va, 5), "top5")
    result.notes.append(f"z_AGG of {n} fixed sequences per object, M_val in {m_vals}, "
                        f"trained with M = {model.seq_len}")
    return result

