"""Frozen-feature extraction (eval mode, BatchNorm statistics untouched) and its on-disk cache.

`batchnorm="train"` reproduces the reference eval scripts' quirk (they call `net.train()` on the frozen
backbone): BatchNorm normalises with each extraction batch's statistics; the running statistics are restored.

Features are stored object-major: every tensor has shape (K, V, ...) for K objects × V views, so pairs,
sequences and per-object retrieval are plain indexing. Keys: ``rep/full``, ``rep/inv``, ``rep/equi``
(representations), ``emb/inv``, ``emb/equi`` (projector embeddings), ``latents`` (K, V, D), ``labels`` (K,),
``object_index`` (K,).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from ssl_eq.utils import threads
from ssl_eq.utils.io import save_torch_atomic

log = logging.getLogger(__name__)

REPRESENTATION_PARTS = ("full", "inv", "equi")
EMBEDDING_PARTS = ("inv", "equi")
_HASH_CHUNK = 1 << 20


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put every sub-module in eval mode under no_grad, then restore each module's own training flag.

    Eval mode makes BatchNorm use (and not update) its running statistics, so extraction leaves them unchanged.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, training in modes.items():
            m.train(training)


@contextlib.contextmanager
def frozen_batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Like `frozen_eval`, but BatchNorm layers normalise with the batch's statistics (train mode); their
    running statistics are restored on exit, so the model is unchanged."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    with frozen_eval(model):
        for m in norms:
            m.train()
        try:
            yield model
        finally:
            for m, state in zip(norms, saved):
                m.load_state_dict(state)


BATCHNORM_MODES = {"eval": frozen_eval, "train": frozen_batch_statistics}


def extract_features(model: Any, batches: Iterable[dict[str, Tensor]], device: str | torch.device = "cpu",
                     embeddings: bool = True, batchnorm: str = "eval") -> dict[str, Tensor]:
    """Run a frozen model over view batches and arrange the outputs object-major.

    model: a `ssl_eq.methods` model (preprocess, representations, embeddings), an nn.Module.
    batches: ViewDataset batches with `images` uint8 (B, 3, H, W), `latents` (B, D), `label` (B,),
      `object_index` (B,), `view_index` (B,); every object must appear with the same views.
    batchnorm: "eval" (running statistics) or "train" (each batch's statistics, the reference scripts' quirk).
    Returns float32 CPU tensors (K, V, ·) per part (see module docstring); width-0 parts are kept as (K, V, 0).
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"extraction.batchnorm: expected one of {sorted(BATCHNORM_MODES)}, got {batchnorm!r}")
    chunks: dict[str, list[Tensor]] = {}
    with BATCHNORM_MODES[batchnorm](model):
        for batch in batches:
            threads.tick()
            x = model.preprocess(batch["images"].to(device))
            outs = {f"rep/{k}": v for k, v in model.representations(x).items() if k in REPRESENTATION_PARTS}
            if embeddings:
                outs.update({f"emb/{k}": v for k, v in model.embeddings(x).items() if k in EMBEDDING_PARTS})
            outs.update(latents=batch["latents"], label=batch["label"], object_index=batch["object_index"],
                        view_index=batch["view_index"])
            for k, v in outs.items():
                chunks.setdefault(k, []).append(v.detach().cpu())
    if not chunks:
        raise ValueError("no views to extract features from (empty split?)")
    flat = {k: torch.cat(v) for k, v in chunks.items()}
    return arrange_object_major(flat)


def arrange_object_major(flat: dict[str, Tensor]) -> dict[str, Tensor]:
    """(N, ·) per-view tensors with `object_index`, `view_index`, `label` -> (K, V, ·) tensors sorted by object, view."""
    objects, obj_row = torch.unique(flat["object_index"], return_inverse=True)
    views, view_col = torch.unique(flat["view_index"], return_inverse=True)
    k, v = len(objects), len(views)
    if k * v != len(obj_row):
        raise ValueError(f"features: {len(obj_row)} views for {k} objects × {v} view indices; every object must "
                         "have the same views")
    slot = obj_row * v + view_col
    order = torch.empty_like(slot)
    order[slot] = torch.arange(len(slot))
    out: dict[str, Tensor] = {}
    for key, t in flat.items():
        if key in ("object_index", "view_index", "label"):
            continue
        t = t[order]
        out[key] = (t.float() if t.is_floating_point() else t).reshape(k, v, *t.shape[1:])
    out["labels"] = flat["label"][order].reshape(k, v)[:, 0].long()
    out["object_index"] = objects
    return out


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file (the checkpoint identity of results written before `checkpoint_digest`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def load_cached(path: Path, key: dict[str, Any]) -> dict[str, Tensor] | None:
    """Features stored at `path` when their cache key equals `key`, else None."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged cache (killed write, full disk) is rebuilt, not fatal
        log.warning("%s: unreadable feature cache (%s); extracting the features again", path, type(e).__name__)
        return None
    return stored["features"] if isinstance(stored, dict) and stored.get("key") == key else None


def save_cached(path: Path, key: dict[str, Any], features: dict[str, Tensor]) -> None:
    """Atomically store features with their cache key (weights digest + dataset content digest, split, settings)."""
    save_torch_atomic({"key": key, "features": features}, path)
