"""`--device` values: one rule for every command (render, orbit, probe)."""
from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> bool:
    """Does `device` compute bf16 in hardware (CUDA with bf16; a CPU with AVX512-BF16 or AMX)? Elsewhere bf16 is
    emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, probe, lambda: False)() for probe in probes)


def resolve_precision(precision: str, accelerator: str) -> str:
    """trainer.precision "auto" -> "bf16-mixed" where the accelerator computes bf16 natively, else "32-true"; any
    other value as it is."""
    if precision != "auto":
        return precision
    cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if native_bf16(torch.device("cuda" if cuda else "cpu")) else "32-true"


def resolve_device(device: str, option: str = "--device") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is an error that says so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{option} {device}: no CUDA device is available (use {option} cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"{option} must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)
