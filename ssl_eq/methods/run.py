"""Composing the pretraining config, running `pretrain` into a run folder, and `load_run`.

Run folder (docs/architecture.md "Runs and models"): RUN/config.yaml (resolved),
RUN/checkpoints/last.ckpt + periodic step=N.ckpt, RUN/tb/ (TensorBoard), RUN/metrics.json.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_eq.config import config_dir
from ssl_eq.methods.commands import CONFIG_GROUPS, group_options
from ssl_eq.methods.base import BaseMethod
from ssl_eq.methods.registry import get_method
from ssl_eq.utils.io import write_atomic, write_json_atomic

ROOT_CONFIG = "pretrain"
# sections of config.yaml that may differ when re-running into an existing run folder (to resume / extend)
RESUMABLE_SECTIONS = ("trainer", "checkpoint")


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """configs/pretrain.yaml composed with Hydra-style overrides (`method=sie`, `trainer.max_steps=10`).

    Raises ValueError naming the unknown group option / key and listing the valid ones.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    overrides = list(overrides)
    for o in overrides:
        group, _, value = o.lstrip("+~").partition("=")
        if group in CONFIG_GROUPS and value and value not in group_options(group):
            raise ValueError(f"unknown {group} {value!r}; valid: {group_options(group)}")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None, job_name="pretrain"):
            return compose(config_name=ROOT_CONFIG, overrides=overrides)
    except HydraException as e:
        raise ValueError(_explain_override_error(overrides, e)) from e


def _explain_override_error(overrides: list[str], error: Exception) -> str:
    """Name the first override whose key does not exist and list the keys valid at that level."""
    from hydra import compose, initialize_config_dir

    groups = [o for o in overrides if o.lstrip("+~").partition("=")[0] in CONFIG_GROUPS]
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None, job_name="pretrain"):
        base = compose(config_name=ROOT_CONFIG, overrides=groups)
    for o in overrides:
        key = o.partition("=")[0]
        if key.startswith(("+", "~")) or key.lstrip("+~") in CONFIG_GROUPS:
            continue
        node: Any = base
        for depth, part in enumerate(key.split(".")):
            if not isinstance(node, DictConfig) or part not in node:
                parent = ".".join(key.split(".")[:depth]) or "<root>"
                valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
                return f"unknown config key {key!r} (no {part!r} in {parent}); valid keys there: {valid}"
            node = node[part]
    return f"bad overrides {overrides}: {error}"


def build_method(config: dict[str, Any] | DictConfig) -> BaseMethod:
    """Instantiate the registered method named by config["method"]["name"] from a resolved config."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return get_method(config["method"]["name"])(config)


def load_run(run_dir: str | Path, map_location: str | torch.device = "cpu") -> BaseMethod:
    """The trained model of run folder `run_dir` (from checkpoints/last.ckpt), in eval mode."""
    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint in run folder {run_dir}: expected {ckpt}")
    state = torch.load(ckpt, map_location=map_location, weights_only=False)
    config = state.get("hyper_parameters", {}).get("config")
    if config is None:
        raise ValueError(f"{ckpt}: no 'config' in the checkpoint's hyper_parameters (not an ssl_eq run?)")
    model = build_method(config)
    model.load_state_dict(state["state_dict"])
    return model.to(map_location).eval()


def _fill_data_info(cfg: DictConfig, info: dict[str, Any]) -> None:
    """Record what the model needs to know about its data (kept in config.yaml and the checkpoint)."""
    data = cfg.data
    data.image_size = int(data.image_size or info["image_size"])
    data.num_classes = int(info["num_classes"])
    data.latent_schema = list(info["latent_schema"])
    data.variant = info["variant"]


def _check_run_folder(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume into a folder that was trained with a different config (outside RESUMABLE_SECTIONS)."""
    old_path = run_dir / "config.yaml"
    if not old_path.is_file():
        return
    old, new = OmegaConf.load(old_path), OmegaConf.to_container(cfg, resolve=True)
    old = OmegaConf.to_container(old, resolve=True)
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_SECTIONS and old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"run folder {run_dir} holds a run with a different config (sections {diff} differ "
                         f"from {old_path}); pick a new run_dir or delete the folder")


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train `cfg.method` on `cfg.data.root` into `cfg.run_dir`, resuming from last.ckpt when present.

    Returns the metrics.json summary. Raises NonFiniteLossError on a NaN / inf loss; any failure is recorded in metrics.json.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from ssl_eq.datasets import SSLDataModule

    if OmegaConf.is_missing(cfg.data, "root"):
        raise ValueError("data.root is required: ssl-eq pretrain data.root=DATASET_DIR ...")
    method_cls = get_method(cfg.method.name)
    run_dir = Path(cfg.run_dir)
    t = cfg.trainer
    trainer = pl.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, max_steps=t.max_steps, accelerator=t.accelerator,
        devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
        gradient_clip_val=t.gradient_clip_val, sync_batchnorm=t.sync_batchnorm,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic, limit_val_batches=0, num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(run_dir), name="tb", version="", default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step={step}", auto_insert_metric_name=False,
                            every_n_train_steps=cfg.checkpoint.every_n_steps, save_top_k=-1),
            ModelCheckpoint(dirpath=run_dir / "checkpoints", every_n_train_steps=cfg.checkpoint.last_every_n_steps,
                            save_top_k=0, save_last=True),
            LearningRateMonitor("step"),
        ],
    )
    world = trainer.world_size
    if cfg.data.batch_size % world:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} (global) is not divisible by the "
                         f"{world} ranks (trainer.devices x trainer.num_nodes)")
    dm = SSLDataModule(cfg.data.root, kind=method_cls.batch_kind, batch_size=cfg.data.batch_size // world,
                       num_workers=cfg.data.num_workers, num_views=cfg.data.num_views, seed=cfg.seed,
                       train_split=cfg.data.train_split)
    _fill_data_info(cfg, dm.info)
    missing = sorted(set(method_cls.required_keys) - set(dm.train_set[0]))
    if missing:
        raise ValueError(f"dataset {cfg.data.root} (variant {cfg.data.variant}, latents {cfg.data.latent_schema}) "
                         f"lacks {missing}, needed by method {cfg.method.name!r}")
    _check_run_folder(run_dir, cfg)
    if trainer.is_global_zero:
        write_atomic(run_dir / "config.yaml", lambda p: OmegaConf.save(cfg, p, resolve=True))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_method(cfg)
    last = run_dir / "checkpoints" / "last.ckpt"
    start = time.time()
    status = "completed"
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
        trainer.save_checkpoint(last)
    except BaseException as e:
        status = f"failed: {type(e).__name__}: {e}"
        raise
    finally:
        summary = {
            "method": cfg.method.name, "status": status, "global_step": trainer.global_step,
            "epoch": trainer.current_epoch, "wall_s": round(time.time() - start, 3),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        }
        if trainer.is_global_zero:
            write_json_atomic(run_dir / "metrics.json", summary)
    return summary
