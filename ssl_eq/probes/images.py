"""Probes of runs on single-image datasets (image folder, CIFAR-100, TinyImageNet), e.g. seq-JEPA with
`method.action=aug` (docs/reference/seq-jepa.md §5).

The per-view probes (`linear`) use the cached features of the original images, only resized and normalised (the
reference's `orig_img`). A model whose actions are its augmentations also sees each image through V random views
of its own observed-view pipeline (seeded; cached as RUN/probe/features_aug_<split>.pt): `aug/rep` (K, V, D)
encoder outputs and `aug/params` (K, V, P) the raw recorded parameters of `method.aug_action_columns`. From them:
- `agg_linear`: z_AGG over the first M_val views, the actions being the differences of the scaled parameters as
  in training (`aug_aggregate`);
- `aug_params`: per group (crop, jitter, blur) a head on [z_0 ; z_1] predicting p_1 − p_0, R² per group, with
  the parameters scaled as the toolkit feeds them (`toolkit`: each column divided by its known range) or as the
  reference's engine.py does (`reference`: jitter as factors, 1 = identity, then each parameter L2-normalised
  over the V views of its image).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from ssl_eq.probes import metrics as M
from ssl_eq.probes.features import frozen_eval, load_cached, save_cached
from ssl_eq.probes.heads import fit_head
from ssl_eq.probes.context import ProbeContext, ProbeResult, ProbeSkipped, head_config, loss_logger

log = logging.getLogger(__name__)

AUG_GROUPS = {"crop": ("crop_y0", "crop_x0", "crop_h", "crop_w"),
              "jitter": ("brightness", "contrast", "saturation", "hue"),
              "blur": ("blur_sigma",)}
JITTER_FACTORS = ("brightness", "contrast", "saturation")  # the reference records factors, the toolkit offsets
SCALINGS = ("toolkit", "reference")


def open_source(run_cfg: Any, data_dir: Path) -> Any:
    """The dataset a run is probed on: native shards, or the run's single-image format (data.format)."""
    from ssl_eq.datasets.datamodule import SOURCES

    fmt = str(OmegaConf.select(run_cfg, "data.format", default="native"))
    if fmt not in SOURCES:
        raise ValueError(f"data.format: unknown dataset format {fmt!r} in the run config; valid: {sorted(SOURCES)}")
    return SOURCES[fmt](data_dir, OmegaConf.select(run_cfg, "data.image_size", default=None))


def is_augmentation_model(model: Any) -> bool:
    """Whether the model's actions are its recorded augmentation parameters (seq-JEPA, method.action=aug)."""
    return "transforms" in (getattr(model, "aug_columns", None) or {})


def augmented_views(probe_cfg: dict[str, Any]) -> int:
    """V views per image: enough for every M_val of agg_linear and the aug_params pairs / scaling."""
    probes = probe_cfg["probes"]
    return max([2, int(probes.get("aug_params", {}).get("views", 2)),
                *(int(m) for m in probes.get("agg_linear", {}).get("m_val", []))])


def extract_augmented(model: Any, source: Any, objects: Tensor, views: int, seed: int, batch_size: int,
                      device: str) -> dict[str, Tensor]:
    """(K,) objects -> {"aug/rep": (K, V, D), "aug/params": (K, V, P)} through V seeded random views each."""
    cols = model.aug_columns["transforms"]
    reps, params = [], []
    with torch.random.fork_rng(devices=[]), frozen_eval(model):
        torch.manual_seed(seed)
        for i in range(0, len(objects), batch_size):
            obj = objects[i:i + batch_size].numpy()
            images = source.read_views(obj, [0] * len(obj)).to(device)
            outs = [model.augment(images) for _ in range(views)]
            reps.append(torch.stack([model.encode((o.images - model.mean) / model.std) for o in outs], 1).cpu())
            params.append(torch.stack([o.action[:, cols] for o in outs], 1).cpu())
    return {"aug/rep": torch.cat(reps).float(), "aug/params": torch.cat(params).float()}


def add_augmented_features(model: Any, source: Any, feats: dict[str, dict[str, Tensor]], cfg: dict[str, Any],
                           out_dir: Path, keys: dict[str, dict[str, Any]], device: str) -> None:
    """Add `aug/rep`, `aug/params` to each split's features (cached beside the plain features)."""
    views = augmented_views(cfg)
    for split, split_feats in feats.items():
        key, cache = {**keys[split], "augmented_views": views}, out_dir / f"features_aug_{split}.pt"
        aug = load_cached(cache, key)
        if aug is None:
            log.info("features [%s]: %d augmented views per image -> %s", split, views, cache)
            aug = extract_augmented(model, source, split_feats["object_index"], views,
                                    int(cfg["seed"]) + (split == "val"), int(cfg["extraction"]["batch_size"]), device)
            save_cached(cache, key, aug)
        split_feats.update(aug)


def scaled_params(raw: Tensor, names: list[str], scale: Tensor, scaling: str, views: int | None = None) -> Tensor:
    """(K, V, P) raw recorded parameters -> scaled: "toolkit" raw / scale (P,) (what the model is fed);
    "reference" (seq-JEPA engine.py): jitter offsets as factors, then each parameter L2-normalised over the first
    `views` views of its image (F.normalize(params, dim=1))."""
    if scaling == "toolkit":
        return raw / scale
    if scaling == "reference":
        factors = torch.tensor([1.0 if n in JITTER_FACTORS else 0.0 for n in names])
        return F.normalize((raw + factors)[:, :views], p=2, dim=1)
    raise ValueError(f"probes.aug_params.scaling: expected one of {list(SCALINGS)}, got {scaling!r}")


def aug_aggregate(model: Any, feats: dict[str, Tensor], m_val: int, chunk: int) -> Tensor:
    """z_AGG (K, d_model) of each image's first m_val augmented views, actions = differences of the scaled
    parameters (as in training)."""
    z_all, raw = feats["aug/rep"], feats["aug/params"]
    if m_val > z_all.shape[1]:
        raise ValueError(f"probes.agg_linear.m_val: {m_val} exceeds the {z_all.shape[1]} augmented views extracted")
    scale = model.augment.action_scale[model.aug_columns["transforms"]].cpu()
    out = []
    with frozen_eval(model):
        for i in range(0, len(z_all), chunk):
            z = z_all[i:i + chunk, :m_val].to(model.device)
            vec = scaled_params(raw[i:i + chunk, :m_val], [], scale, "toolkit")
            actions = model.actions({"aug_action": vec.to(model.device)})
            out.append(model.aggregate(z, actions).float().cpu())
    return torch.cat(out)


def probe_aug_params(ctx: ProbeContext, cfg: dict) -> ProbeResult:
    """Heads on [z_0 ; z_1] (two augmented views of an image) -> p_1 − p_0 per parameter group, R² per group."""
    if "aug/rep" not in ctx.train:
        raise ProbeSkipped("no augmented views: the model's actions are not augmentations (method.action=aug)")
    model, scaling = ctx.model, str(cfg.get("scaling", "toolkit"))
    names = list(model.cfg.method.aug_action_columns)
    scale = model.augment.action_scale[model.aug_columns["transforms"]].cpu()
    data = {}
    for split, feats in (("train", ctx.train), ("val", ctx.val)):
        p = scaled_params(feats["aug/params"], names, scale, scaling, int(cfg.get("views", 2)))
        data[split] = torch.cat([feats["aug/rep"][:, 0], feats["aug/rep"][:, 1]], 1), p[:, 1] - p[:, 0]
    (x_tr, y_tr), (x_va, y_va) = data["train"], data["val"]
    result = ProbeResult()
    for group, cols in AUG_GROUPS.items():
        idx = [names.index(c) for c in cols if c in names]
        if not idx:
            result.notes.append(f"{group}: no {list(cols)} in method.aug_action_columns")
            continue
        head = head_config({**cfg, "hidden": list(cfg["hidden"].get(group, []))}, ctx.seed)
        pred = fit_head(x_tr, y_tr[:, idx], x_va, len(idx), "mse", head, loss_logger(ctx, f"aug_params/{group}"))
        result.add(f"{group}/r2_uniform", M.r2_uniform(pred, y_va[:, idx]), "r2_uniform")
        result.add(f"{group}/r2_pooled", M.r2_pooled(pred, y_va[:, idx]), "r2_pooled")
    result.notes.append(f"targets p_1 - p_0 of two augmented views per image, {scaling} scaling")
    return result

