"""What every probe sees and returns (`ProbeContext`, `ProbeResult`, `ProbeSkipped`) and the helpers the probe
modules share; the probes themselves live in `ssl_eq.probes.tasks` (generic) and `ssl_eq.probes.sequence` (z_AGG)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from ssl_eq.datasets.relative import DEFAULT_COLOUR_TARGETS, DEFAULT_QUATERNION_SIGN
from ssl_eq.probes import metrics as M
from ssl_eq.probes.heads import HeadConfig


class ProbeSkipped(Exception):
    """The probe does not apply to this run / dataset; the message says why."""


@dataclass
class ProbeContext:
    """What every probe sees. Features are object-major dicts, see `ssl_eq.probes.features`.

    quaternion_sign / colour_targets: conventions of the probe targets; run_conventions: those the model was
    trained with (`data.*` of the run config), used for the actions fed to its predictor.
    """
    train: dict[str, Tensor]
    val: dict[str, Tensor]
    latent_schema: list[str]
    class_names: list[str]
    out_dir: Path
    model: Any = None
    seed: int = 0
    log_scalar: Callable[[str, float, int], None] = lambda tag, value, step: None
    quaternion_sign: str = DEFAULT_QUATERNION_SIGN
    colour_targets: str = DEFAULT_COLOUR_TARGETS
    run_conventions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    save_head: Callable[..., None] = lambda name, head, **meta: None  # persist a head as RUN/probe/<name>.pt


@dataclass
class ProbeResult:
    metrics: dict[str, float] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    selection: dict[str, dict] = field(default_factory=dict)  # head tag -> FitResult.summary()
    per_object: dict[str, dict] = field(default_factory=dict)  # part -> `per_object` entry (report bootstrap)

    def add(self, name: str, value: float | Tensor, definition_key: str) -> None:
        self.metrics[name] = float(value)
        self.definitions[name] = M.DEFINITIONS[definition_key]


def head_config(cfg: dict, seed: int) -> HeadConfig:
    patience = cfg.get("patience")
    return HeadConfig(hidden=list(cfg.get("hidden", [])), epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                      weight_decay=float(cfg["weight_decay"]), batch_size=int(cfg["batch_size"]),
                      standardize=bool(cfg.get("standardize", False)), seed=seed,
                      holdout_fraction=float(cfg.get("holdout_fraction") or 0.0),
                      patience=None if patience is None else int(patience),
                      start_from_mean=bool(cfg.get("start_from_mean", False)))


def loss_logger(ctx: ProbeContext, tag: str) -> Callable[[int, float], None]:
    return lambda epoch, loss: ctx.log_scalar(f"probe_train/{tag}/loss", loss, epoch)
