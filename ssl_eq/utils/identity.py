"""Identity of a checkpoint's *weights*: the same model saved twice gets the same digest.

A file hash changes whenever Lightning rewrites a checkpoint (optimizer state, timestamps, callback
state), so results keyed by it are thrown away although the model did not change. This digest covers
only the model's `state_dict`: every tensor's name, dtype, shape and bytes, in name order.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import torch

DIGEST_KIND = "weights-sha256"  # recorded beside the digest so older file-hash keys are recognised as such


def state_dict_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest of a state dict (name, dtype, shape and raw bytes of each tensor, sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim: as (1,)
    return h.hexdigest()


def weights_digest(checkpoint: str | Path) -> str:
    """Digest of the model weights stored in a Lightning checkpoint (`state_dict`) or a bare state dict."""
    blob = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{checkpoint}: not a checkpoint with a state_dict of tensors")
    return state_dict_digest(state)


def dataset_digest(manifest: Mapping) -> str:
    """Identity of a dataset's *content*: sha256 of its manifest (objects, shards, split, render settings) as
    canonical JSON. The dataset's path is not part of it, so a moved dataset keeps its identity."""
    import json

    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()
