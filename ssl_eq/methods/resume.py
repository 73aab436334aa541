"""Resuming and forking runs: checkpoint checks, wall time kept in the checkpoint, new optimiser settings.

A run resumes from RUN/checkpoints/last.ckpt. A fork starts a new run folder from another run's checkpoint
(`resume_from=OLD/checkpoints/step=N.ckpt run_dir=NEW`): Lightning restores weights, optimiser moments, step
and loop state, then `OptimizerSettings` applies the new config's learning rate / weight decay, the one way
to follow the NaN guard's advice to lower the learning rate.
"""
from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ssl_eq.utils.io import save_torch_atomic, write_json_atomic
from ssl_eq.utils.lock import folder_lock

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
PERIODIC = re.compile(r"step=(\d+)\.ckpt")
# method.optim keys a fork may change: applied to the restored optimiser (the rest must match the checkpoint)
FORKABLE_OPTIM_KEYS = ("lr", "weight_decay")
# config sections that define the model: a fork must match its checkpoint in these
MODEL_SECTIONS = ("method", "backbone", "augment")

_now = time.monotonic  # the clock of WallClock (a test may replace it)


class CheckpointError(ValueError):
    """A checkpoint file cannot be read; the message names it and says how to resume from another one."""


def periodic_checkpoints(ckpt_dir: Path) -> list[Path]:
    """RUN/checkpoints/step=N.ckpt files, oldest step first."""
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("step=*.ckpt") if (m := PERIODIC.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def resume_advice(ckpt: Path) -> str:
    """How to go on when `ckpt` (a run's last.ckpt) is unusable: the periodic checkpoints and the commands."""
    periodic = periodic_checkpoints(ckpt.parent)
    if not periodic:
        return (f"{ckpt.parent} holds no periodic checkpoint (step=N.ckpt): delete {ckpt} to train the run again "
                f"from step 0")
    newest = periodic[-1]
    return (f"periodic checkpoints in {ckpt.parent}: {', '.join(p.name for p in periodic)}. To resume from the newest, "
            f"copy it over the broken file (cp '{newest}' '{ckpt}') and re-run the same command, or fork a new "
            f"run folder from it: ssl-eq pretrain <same overrides> resume_from='{newest}' run_dir=NEW_RUN")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """torch.load a Lightning checkpoint (memory-mapped, so cheap) -> its dict; CheckpointError naming the file
    and the way out when it is truncated, garbled or not a checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        if not isinstance(state, dict) or "state_dict" not in state:
            raise ValueError(f"holds a {type(state).__name__} without 'state_dict', not a Lightning checkpoint")
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError / UnpicklingError / EOFError / ... here
        advice = resume_advice(path) if path.name == LAST else "use another checkpoint"
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); {advice}") from e
    return state


def check_fork(state: dict[str, Any], config: dict[str, Any], source: Path) -> None:
    """A fork's config must build the checkpoint's model: only method.optim.{lr, weight_decay} may differ."""
    old = (state.get("hyper_parameters") or {}).get("config")
    if old is None:
        raise CheckpointError(f"{source}: no 'config' in the checkpoint's hyper_parameters (not an ssl_eq run?)")
    diffs = []
    for section in MODEL_SECTIONS:
        a, b = dict(old.get(section) or {}), dict(config.get(section) or {})
        if section == "method":
            a["optim"] = {k: v for k, v in (a.get("optim") or {}).items() if k not in FORKABLE_OPTIM_KEYS}
            b["optim"] = {k: v for k, v in (b.get("optim") or {}).items() if k not in FORKABLE_OPTIM_KEYS}
        diffs += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        raise ValueError(f"resume_from={source}: the checkpoint was trained with other settings of {diffs}; a fork "
                         f"keeps the model and may change only method.optim.{{{', '.join(FORKABLE_OPTIM_KEYS)}}} and "
                         f"the trainer / checkpoint / data sections (give the same method / backbone / augment options)")


def differs(section: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Does config section `section` of a run folder's config.yaml (`old`) differ from the new run's? The data
    section may name another data.root when the dataset's content digest is the same (the dataset moved); a
    config.yaml from before digests were recorded is compared without one."""
    a, b = old.get(section), new.get(section)
    if section != "data" or not isinstance(a, dict) or not isinstance(b, dict):
        return a != b
    a, b = dict(a), dict(b)
    if "digest" not in a:
        b.pop("digest", None)
    if a.get("root") != b.get("root") and a.get("digest") is not None and a.get("digest") == b.get("digest"):
        a.pop("root"), b.pop("root")
    return a != b


def nan_advice(cfg: Any, lr_backoff: float) -> str:
    """What to do after a NaN / inf loss in run `cfg`: the cause when the config shows one (a loss weight that is
    not a finite float32), else a lower learning rate or gradient clipping. A fork from last.ckpt is proposed
    only when that checkpoint exists."""
    import math

    f32_max = float(torch.finfo(torch.float32).max)
    loss = cfg.method.get("loss") or {}
    bad = [f"method.loss.{k}={v!r}" for k, v in loss.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not (math.isfinite(v) and abs(v) <= f32_max)]
    if bad:
        return (f"cause: loss weight {', '.join(bad)} is not a finite float32 number; fix it and re-run the same "
                f"command")
    lr = float(cfg.method.optim.lr) / lr_backoff
    last = Path(str(cfg.run_dir)) / CHECKPOINT_DIR / LAST
    if not last.is_file():
        return (f"no checkpoint was saved before the failure ({last} does not exist): re-run the same command with "
                f"a lower learning rate, method.optim.lr={lr:g}, or with trainer.gradient_clip_val=VALUE")
    return (f"to continue with a lower learning rate, fork the run from its last good checkpoint into a new folder:\n"
            f"  ssl-eq pretrain <same overrides> resume_from={last} run_dir={cfg.run_dir}_lr{lr:g} "
            f"method.optim.lr={lr:g}\n"
            f"or to clip gradients in place: ssl-eq pretrain <same overrides> trainer.gradient_clip_val=VALUE")


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager:
    """The run folder's lock, held by rank 0 only (DDP ranks re-run the same command in child processes)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return folder_lock(run_dir, what="run folder", enabled=getattr(rank_zero_only, "rank", 0) == 0)


def trained_nothing(start_from: Path | None, last: Path, global_step: int) -> bool:
    """True when the run resumed from its own last.ckpt and took no step (it had finished): rewriting it would
    give the same weights new bytes."""
    return start_from == last and last.is_file() and read_checkpoint(last).get("global_step") == global_step


class ExactResume(pl.Callback):
    """What makes a resumed run continue exactly as the uninterrupted one would have:

    - the train loader's position: Lightning saves a stateful loader's state (ssl_eq.datasets.datamodule's
      resumable loaders) in the fit-loop state, but restores it only into loaders built after the loops are
      restored; a method that reads trainer.estimated_stepping_batches in configure_optimizers builds them
      before, so this callback applies the saved state at train start (same epoch: continue after its batches);
    - randomness: torch's RNG is seeded at every training batch from (seed, rank, the loader's epoch and batch
      position), so the on-device augmentation (Kornia draws from torch's global RNG) and any other draw of a
      step depend on the step alone, with no RNG state to carry.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._loader_states: list[dict[str, Any]] = []

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self._loader_states = list((fit_loop.get("state_dict") or {}).get("combined_loader") or [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        stateful = [dl for dl in loaders if callable(getattr(dl, "load_state_dict", None))]
        for loader, state in zip(stateful, self._loader_states):
            loader.load_state_dict(state)
        self._loader_states = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        import numpy as np

        # the loader's own (epoch, batches handed out): Lightning's epoch and batch_idx can be off after a restart
        # at an epoch's end (a run killed during validation)
        position = getattr(trainer.train_dataloader, "position", None) or (trainer.current_epoch, batch_idx)
        entropy = [self.seed, trainer.global_rank, *position]
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (temp file + rename): a full disk leaves no
    truncated step=N.ckpt and is reported as out of space, naming the checkpoint folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_torch_atomic(checkpoint, path)


def interrupted(error: BaseException, trainer: pl.Trainer) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or the SystemExit Lightning raises after handling one."""
    return isinstance(error, KeyboardInterrupt) or (isinstance(error, SystemExit) and trainer.interrupted)


def failure_status(error: BaseException, trainer: pl.Trainer) -> str:
    """metrics.json status of a run that stopped on `error`."""
    return "interrupted" if interrupted(error, trainer) else f"failed: {type(error).__name__}: {error}"


def write_summary(path: Path, summary: dict[str, Any], failing: bool) -> None:
    """Write metrics.json; when the run is already failing (e.g. the disk is full), a failed write must not hide
    that error: the earlier metrics.json (status "running") stays."""
    try:
        write_json_atomic(path, summary)
    except OSError:
        if not failing:
            raise


class WallClock(pl.Callback):
    """Wall time of a run summed over resumes, stored in every checkpoint (a killed process loses at most the
    time since its last checkpoint). `previous_s`: the time recorded in metrics.json by an earlier process.

    Kept instead of Lightning's `Timer`: that one counts from `on_train_start` only (not the data set-up and
    model build a budget includes) and restores nothing for a process killed before its first checkpoint,
    whose time metrics.json still holds."""

    def __init__(self, previous_s: float = 0.0) -> None:
        self.previous_s = float(previous_s)
        self.restored_s = 0.0
        self.start = _now()

    def total(self) -> float:
        return max(self.previous_s, self.restored_s) + _now() - self.start

    def state_dict(self) -> dict[str, float]:
        return {"wall_s": self.total()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored_s = float(state_dict.get("wall_s", 0.0))


class OptimizerSettings(pl.Callback):
    """Scale a restored optimiser and its schedule by new / old method.optim lr and weight decay (a fork).

    Lightning restores param groups and scheduler base values from the checkpoint; scaling (rather than setting)
    keeps both the schedule's current factor and any rule a method uses to derive its learning rate.
    """

    def __init__(self, lr_scale: float, wd_scale: float = 1.0, weight_decay: float | None = None) -> None:
        self.lr_scale = lr_scale
        self.wd_scale = wd_scale
        self.weight_decay = weight_decay  # set on every group (when the checkpoint had none to scale)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [lr * self.lr_scale for lr in config.scheduler.base_lrs]
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] *= self.lr_scale
                if "initial_lr" in group:
                    group["initial_lr"] *= self.lr_scale
                group["weight_decay"] = group.get("weight_decay", 0.0) * self.wd_scale \
                    if self.weight_decay is None else self.weight_decay


def optimizer_settings(state: dict[str, Any], config: dict[str, Any]) -> OptimizerSettings | None:
    """The callback that applies `config`'s method.optim lr / weight decay to a run restored from `state`
    (None when they are those the checkpoint was trained with)."""
    old = state["hyper_parameters"]["config"]["method"]["optim"]
    new = config["method"]["optim"]
    lr_scale = float(new["lr"]) / float(old["lr"])
    old_wd, new_wd = float(old["weight_decay"]), float(new["weight_decay"])
    if lr_scale == 1.0 and old_wd == new_wd:
        return None
    if old_wd > 0:
        return OptimizerSettings(lr_scale, wd_scale=new_wd / old_wd)
    return OptimizerSettings(lr_scale, weight_decay=new_wd)
