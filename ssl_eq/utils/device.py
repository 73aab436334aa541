"""`--device` values: one rule for every command (render, orbit, probe)."""
from __future__ import annotations

import torch


def resolve_device(device: str, option: str = "--device") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is an error that says so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{option} {device}: no CUDA device is available (use {option} cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"{option} must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)
