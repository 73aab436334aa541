"""Composing the pretraining config, running `pretrain` into a run folder, and `load_run`.

Run folder (docs/architecture.md "Runs and models"): RUN/config.yaml (resolved),
RUN/checkpoints/last.ckpt + periodic step=N.ckpt, RUN/tb/ (TensorBoard), RUN/metrics.json.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_eq.config import (CONFIG_GROUPS, SECTION_GROUPS, config_dir, group_options, has_key,
                           parse_overrides)
from ssl_eq.methods.config_check import check_config
from ssl_eq.methods.base import BaseMethod
from ssl_eq.methods.registry import get_method
from ssl_eq.methods.resume import (CHECKPOINT_DIR, LAST, AtomicCheckpointIO, ExactResume, OptimizerSettings, WallClock,
                                   check_fork, differs, failure_status, optimizer_settings, read_checkpoint, run_lock,
                                   trained_nothing, write_summary)
from ssl_eq.utils.device import resolve_precision
from ssl_eq.utils.finite import check_finite
from ssl_eq.utils.io import read_json_object, write_atomic, write_json_atomic

ROOT_CONFIG = "pretrain"
# sections of config.yaml that may differ when re-running into an existing run folder (to resume / extend)
RESUMABLE_SECTIONS = ("trainer", "checkpoint", "resume_from", "run_dir", "logger", "callbacks", "threads")
# keys of the `trainer` section read by the model, not passed to pl.Trainer
MODEL_TRAINER_KEYS = ("channels_last",)
# pl.Trainer arguments that other sections own
TRAINER_OWNED = {"logger": "choose loggers with logger=NAME or logger=[NAME,NAME] (options: {logger})",
                 "callbacks": "add callbacks with +callbacks.NAME._target_=CLASS (options: callbacks={callbacks})",
                 "default_root_dir": "set run_dir=DIR"}
# a logger's package that is not a dependency of ssl_eq
LOGGER_PACKAGES = {"WandbLogger": "wandb", "MLFlowLogger": "mlflow", "NeptuneLogger": "neptune",
                   "CometLogger": "comet_ml"}

log = logging.getLogger(__name__)


def is_hydra_override(override: Any) -> bool:
    return override.key_or_group.startswith(("hydra.", "hydra/")) or override.key_or_group == "hydra"


def _compose(overrides: list[str]) -> DictConfig:
    """pretrain.yaml composed with `overrides`, inside a running Hydra app (a sweep job) or on its own."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=ROOT_CONFIG, overrides=overrides)
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None, job_name="pretrain"):
        return compose(config_name=ROOT_CONFIG, overrides=overrides)


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """ssl_eq/configs/pretrain.yaml composed with Hydra-style overrides (`method=sie`, `trainer.max_steps=10`).

    Raises ValueError naming the unknown group option / key and listing the valid ones. `hydra...`
    overrides are accepted and ignored (they configure the `ssl-eq pretrain` application).
    """
    from hydra.errors import HydraException

    parsed = parse_overrides([quote_value(o) for o in overrides])
    _check_group_options(parsed)
    task = [o.input_line for o in parsed if not is_hydra_override(o)]
    try:
        cfg = _compose(task)
    except HydraException as e:
        raise ValueError(_explain_override_error(task, e)) from e
    return finish_config(cfg, task)


def _check_group_options(parsed: list[Any]) -> None:
    """Each `group=option` (or `group=[a,b]`) names existing options of the group."""
    for o in parsed:
        if o.key_or_group not in CONFIG_GROUPS or o.is_delete() or o.is_sweep_override():
            continue
        value = o.value()
        for option in value if isinstance(value, list) else [value]:
            if option is not None and str(option) not in group_options(o.key_or_group):
                raise ValueError(f"unknown {o.key_or_group} {option!r}; valid: {group_options(o.key_or_group)}")


def finish_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A composed config made ready to run: keys an experiment set for another option of a group dropped,
    values checked (ValueError listing every bad one), loggers checked importable."""
    _drop_experiment_leftovers(cfg, overrides)
    check_config(cfg, _group_defaults(overrides))
    _check_loggers(cfg)
    return cfg


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return [prefix.rstrip(".")]
    return [p for k in node.keys() for p in _leaf_paths(node._get_node(k), f"{prefix}{k}.")] or [prefix.rstrip(".")]


def _drop_experiment_leftovers(cfg: DictConfig, overrides: list[str]) -> None:
    """`experiment=E backbone=B`: E's keys for its own backbone that B does not have (e.g. small_cnn's `widths`
    under resnet18) are dropped with a log line; one given on the command line is refused, naming it."""
    parsed = [o for o in parse_overrides(overrides) if not o.is_delete()]
    if not any(o.key_or_group == "experiment" and o.value() for o in parsed):
        return
    choices = [o.input_line for o in parsed if o.key_or_group in SECTION_GROUPS]
    if not choices:
        return
    alone = _compose(choices)
    given = [o.key_or_group for o in parsed if o.key_or_group not in CONFIG_GROUPS]
    for o in parsed:
        group = o.key_or_group
        if group not in SECTION_GROUPS:
            continue
        for path in _leaf_paths(cfg[group]):
            key = f"{group}.{path}"
            if not path or has_key(alone, key):
                continue
            if any(g == key or g.startswith(key + ".") or key.startswith(g + ".") for g in given):
                raise ValueError(f"unknown config key {key!r}: {group} {o.value()!r} has no such key; valid keys "
                                 f"there: {sorted(alone[group].keys())}")
            parent, _, leaf = key.rpartition(".")
            with open_dict(cfg):
                del OmegaConf.select(cfg, parent)[leaf]
            log.warning("%s dropped: the experiment sets it for another %s than %r", key, group, o.value())


def _check_loggers(cfg: DictConfig) -> None:
    """Every logger's package is installed (wandb, mlflow are optional extras)."""
    import importlib.util

    for name, spec in (cfg.get("logger") or {}).items():
        package = LOGGER_PACKAGES.get(str(spec.get("_target_", "")).rpartition(".")[2])
        if package and importlib.util.find_spec(package) is None:
            raise ValueError(f"logger={name} needs the {package} package (pip install {package}); or use "
                             f"logger=tensorboard, logger=csv or logger=none")


def quote_value(override: str) -> str:
    """`key=value` with the value quoted when Hydra's grammar would reject it bare but it can only be a string:
    a path holding '=' (`resume_from=RUN/checkpoints/step=40.ckpt`) or non-ASCII characters."""
    key, sep, value = override.partition("=")
    if not sep or not value or value[0] in "'\"[{" or (value.isascii() and "=" not in value):
        return override
    quote = "'" if "'" not in value else '"'
    return f"{key}={quote}{value}{quote}"


def _group_defaults(overrides: list[str]) -> DictConfig:
    """The config composed with only the config-group choices of `overrides` (its values are the defaults)."""
    groups = [o for o in overrides if o.lstrip("+~").partition("=")[0] in CONFIG_GROUPS]
    return _compose(groups)


def _explain_override_error(overrides: list[str], error: Exception) -> str:
    """Name the first override whose key does not exist and list the keys valid at that level."""
    base = _group_defaults(overrides)
    for o in overrides:
        key = o.partition("=")[0]
        if key.startswith(("+", "~")) or key.lstrip("+~") in CONFIG_GROUPS:
            continue
        node: Any = base
        for depth, part in enumerate(key.split(".")):
            if not isinstance(node, DictConfig) or part not in node.keys():  # `in node` is False for a ??? value
                parent = ".".join(key.split(".")[:depth]) or "<root>"
                valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
                return f"unknown config key {key!r} (no {part!r} in {parent}); valid keys there: {valid}"
            if OmegaConf.is_missing(node, part):
                break
            node = node[part]
    return f"bad overrides {overrides}: {str(error).splitlines()[0]}"


def build_method(config: dict[str, Any] | DictConfig) -> BaseMethod:
    """Instantiate the registered method named by config["method"]["name"] from a resolved config."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return get_method(config["method"]["name"])(config)


def load_run(run_dir: str | Path, map_location: str | torch.device = "cpu") -> BaseMethod:
    """The trained model of run folder `run_dir` (from checkpoints/last.ckpt), in eval mode."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR / LAST
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint in run folder {run_dir}: expected {ckpt}")
    state = read_checkpoint(ckpt)
    config = state.get("hyper_parameters", {}).get("config")
    if config is None:
        raise ValueError(f"{ckpt}: no 'config' in the checkpoint's hyper_parameters (not an ssl_eq run?)")
    model = build_method(config)
    model.load_state_dict(state["state_dict"])
    return model.to(map_location).eval()


def _devices_per_node(devices: Any) -> int:
    """trainer.devices for CUDA (N, -1 / "auto" = all, [ids] or "0,1") -> number of GPUs per node."""
    if devices in (-1, "-1", "auto"):
        return torch.cuda.device_count()
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return len(devices) if isinstance(devices, (list, tuple)) else int(devices)


def trainer_kwargs(trainer_cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """pl.Trainer arguments from the `trainer` config section (all keys but MODEL_TRAINER_KEYS; others must be
    pl.Trainer arguments, else ValueError listing them).

    sync_batchnorm is kept only on CUDA with more than one rank: SyncBatchNorm needs GPU tensors (it breaks
    DDP over gloo on CPU) and a single rank has nothing to sync. Otherwise it is switched off, with a log line.
    """
    import inspect

    import pytorch_lightning as pl
    from pytorch_lightning.utilities import rank_zero_info

    t = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    kwargs = {k: v for k, v in t.items() if k not in MODEL_TRAINER_KEYS}
    valid = set(inspect.signature(pl.Trainer).parameters) - set(TRAINER_OWNED)
    owned = sorted(set(kwargs) & set(TRAINER_OWNED))
    if owned:
        advice = TRAINER_OWNED[owned[0]].format(logger=", ".join(group_options("logger")),
                                                callbacks=", ".join(group_options("callbacks")))
        raise ValueError(f"trainer.{owned[0]}: not set in the trainer section; {advice}")
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"trainer.{unknown[0]}: not an argument of pytorch_lightning.Trainer; valid: "
                         f"{sorted(valid | set(MODEL_TRAINER_KEYS))}")
    if kwargs.get("sync_batchnorm"):
        accel = kwargs.get("accelerator", "auto")
        cuda = accel in ("cuda", "gpu") or (accel == "auto" and torch.cuda.is_available())
        world = _devices_per_node(kwargs.get("devices", 1)) * int(kwargs.get("num_nodes", 1)) if cuda else 1
        if not cuda or world == 1:
            kwargs["sync_batchnorm"] = False
            reason = f"accelerator {accel!r} is not CUDA" if not cuda else "a single rank"
            rank_zero_info(f"trainer.sync_batchnorm=true ignored: {reason} (BN statistics stay per rank)")
    return kwargs


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The `logger` section's loggers (each `NAME: {_target_: CLASS, ...}`), instantiated by Hydra."""
    from hydra.utils import instantiate

    return [instantiate(spec) for spec in (cfg.get("logger") or {}).values() if spec]


def build_callbacks(cfg: DictConfig, run_dir: Path, run_callbacks: list[Any]) -> list[Any]:
    """Checkpointing (periodic step=N.ckpt, the newest `checkpoint.keep`; last.ckpt, the resume point), the
    step progress bar, `run_callbacks` and the `callbacks` section's (instantiated by Hydra)."""
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    from ssl_eq.methods.callbacks import StepProgressBar

    ckpt = cfg.checkpoint
    keep = ckpt.get("keep")
    periodic = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="step={step}", auto_insert_metric_name=False,
                               every_n_train_steps=ckpt.every_n_steps, save_top_k=-1 if keep is None else keep,
                               monitor="step", mode="max")
    last = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, every_n_train_steps=ckpt.last_every_n_steps,
                           save_top_k=0, save_last=True)
    progress = [StepProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    extra = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    if not cfg.get("logger"):  # nothing to log to: LearningRateMonitor would refuse the run
        extra = [c for c in extra if not isinstance(c, LearningRateMonitor)]
    return [periodic, last, *progress, *run_callbacks, *extra]


def log_final_hparams(trainer: Any, cfg: DictConfig, metrics: dict[str, torch.Tensor]) -> None:
    """TensorBoard's HParams tab: the run's config with its final metrics (as final/<metric>)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    final = {f"final/{k}": float(v) for k, v in metrics.items() if v.numel() == 1}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True), metrics=final)
            logger.finalize("success")


def _start_checkpoint(cfg: DictConfig, last: Path) -> tuple[Path | None, OptimizerSettings | None]:
    """The checkpoint a run starts from (checked readable): its own last.ckpt, else `resume_from` (a fork),
    with the callback applying a fork's new optimiser settings."""
    if last.is_file():
        read_checkpoint(last)
        return last, None
    source = cfg.get("resume_from")
    if not source:
        return None, None
    source = Path(str(source))
    if not source.is_file():
        raise FileNotFoundError(f"resume_from={source}: no such checkpoint file (give RUN/checkpoints/last.ckpt "
                                f"or RUN/checkpoints/step=N.ckpt)")
    state, config = read_checkpoint(source), OmegaConf.to_container(cfg, resolve=True)
    check_fork(state, config, source)
    return source, optimizer_settings(state, config)


def _fill_data_info(cfg: DictConfig, info: dict[str, Any]) -> None:
    """Record what the model needs to know about its data (kept in config.yaml and the checkpoint)."""
    data = cfg.data
    data.image_size = int(data.image_size or info["image_size"])
    data.num_classes = int(info["num_classes"])
    data.latent_schema = list(info["latent_schema"])
    data.variant = info["variant"]
    data.digest = info.get("digest")


def _check_run_folder(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume into a folder that was trained with a different config (outside RESUMABLE_SECTIONS).

    A folder without checkpoints holds nothing trained: its config.yaml is replaced.
    """
    old_path = run_dir / "config.yaml"
    if not old_path.is_file() or not any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
        return
    old, new = OmegaConf.load(old_path), OmegaConf.to_container(cfg, resolve=True)
    old = OmegaConf.to_container(old, resolve=True)
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_SECTIONS and differs(k, old, new))
    if diff:
        raise ValueError(f"run folder {run_dir} holds a run with a different config (sections {diff} differ "
                         f"from {old_path}); pick a new run_dir, or to continue this run with other optimiser "
                         f"settings fork it: resume_from={run_dir / CHECKPOINT_DIR / LAST} run_dir=NEW_RUN")


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train `cfg.method` on `cfg.data.root` into `cfg.run_dir`, resuming from last.ckpt when present.

    The run folder is locked while the run writes it (RUN/.ssl_eq.lock; a second writer is refused).
    """
    with run_lock(Path(cfg.run_dir)):
        return _pretrain(cfg)


def fixed_threads(cfg: DictConfig) -> Any:
    """cfg.threads, except that a deterministic run does not follow the load: "auto" becomes every allowed CPU
    (the thread count changes float summation order)."""
    from ssl_eq.utils.threads import allowed_cpus

    threads = cfg.get("threads", "auto")
    return allowed_cpus() if cfg.trainer.get("deterministic") and str(threads) == "auto" else threads


def _pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train `cfg.method` on `cfg.data.root` into `cfg.run_dir`, resuming from last.ckpt when present.

    Validation runs as configured in `trainer` and once more at the end if the last one was at an earlier step,
    so metrics.json holds the final val/... metrics (none when the val split is empty or limit_val_batches=0).
    Returns the metrics.json summary (a resumed run keeps the earlier metrics it does not update and adds
    up wall_s). Raises NonFiniteLossError on a NaN / inf loss; any failure is recorded in metrics.json.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.utilities import rank_zero_info

    from ssl_eq.datasets import SSLDataModule
    from ssl_eq.methods.callbacks import ThreadTicks
    from ssl_eq.utils.memory import keep_large_blocks
    from ssl_eq.utils.threads import thread_policy

    if OmegaConf.is_missing(cfg.data, "root"):
        raise ValueError("data.root is required: ssl-eq pretrain data.root=DATASET_DIR ...")
    check_config(cfg)
    check_finite(cfg)
    # "auto" precision is recorded as what it chose (config.yaml, the checkpoint)
    cfg.trainer.precision = resolve_precision(str(cfg.trainer.precision), str(cfg.trainer.accelerator))
    method_cls = get_method(cfg.method.name)
    run_dir = Path(cfg.run_dir)
    last = run_dir / CHECKPOINT_DIR / LAST
    summary_file = run_dir / "metrics.json"
    start_from, optim_change = _start_checkpoint(cfg, last)
    previous = read_json_object(summary_file, "run summary") if last.is_file() and summary_file.is_file() else {}
    clock = WallClock(previous.get("wall_s", 0.0))
    trainer = pl.Trainer(**trainer_kwargs(cfg.trainer), default_root_dir=run_dir, num_sanity_val_steps=0,
                         plugins=[AtomicCheckpointIO()], logger=build_loggers(cfg) or False,
                         callbacks=build_callbacks(cfg, run_dir, [clock, ExactResume(cfg.seed), ThreadTicks(),
                                                                  *([optim_change] if optim_change else [])]))
    world = trainer.world_size
    if cfg.data.batch_size % world:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} (global) is not divisible by the "
                         f"{world} ranks (trainer.devices x trainer.num_nodes)")
    dm = SSLDataModule(cfg.data.root, kind=method_cls.batch_kind, batch_size=cfg.data.batch_size // world,
                       num_workers=cfg.data.num_workers, num_views=method_cls.item_views(cfg.data, cfg.method),
                       seed=cfg.seed, data_format=cfg.data.format, image_size=cfg.data.image_size,
                       train_split=cfg.data.train_split, val_split=cfg.data.val_split, loader=cfg.data.loader,
                       pin_memory=cfg.data.pin_memory, persistent_workers=cfg.data.persistent_workers,
                       drop_last=cfg.data.drop_last, quaternion_sign=cfg.data.quaternion_sign,
                       colour_targets=cfg.data.colour_targets)
    _fill_data_info(cfg, dm.info)
    # --- (libs, issue 24) the keys the method needs as configured (augself's method.target, equimod's
    # method.action, ...), checked before anything is written; the options that chose them are named
    missing = sorted(set(build_method(cfg).data_requirements["keys"]) - set(dm.train_set[0]))
    if missing:
        options = [f"method.{k}={v}" for k, v in cfg.method.items() if isinstance(v, str) and k != "name"]
        raise ValueError(f"dataset {cfg.data.root} (variant {cfg.data.variant}, latents {cfg.data.latent_schema}) "
                         f"lacks {missing}, needed by method {cfg.method.name!r} with "
                         f"{', '.join(options) or 'its defaults'}; choose an option the data can serve (e.g. an "
                         f"augmentation target) or a dataset with these latents")
    # --- (libs) end
    n_train = len(dm.train_set)
    if n_train // world < dm.batch_size:  # each rank drops its incomplete last batch: no step at all
        raise ValueError(f"split {cfg.data.train_split!r} of {cfg.data.root} has {n_train} items, fewer than one "
                         f"batch per rank ({dm.batch_size} on each of {world} ranks, data.batch_size="
                         f"{cfg.data.batch_size}); lower data.batch_size or use more objects")
    if trainer.limit_val_batches and len(dm.val_set) == 0:
        rank_zero_info(f"validation skipped: split {dm.val_split!r} of {cfg.data.root} is empty")
        trainer.limit_val_batches = 0
    _check_run_folder(run_dir, cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_method(cfg)  # before config.yaml: a bad method option leaves no run folder behind
    if trainer.is_global_zero:
        write_atomic(run_dir / "config.yaml", lambda p: OmegaConf.save(cfg, p, resolve=True))
    status = "completed"
    metrics: dict[str, torch.Tensor] = {}
    if trainer.is_global_zero:  # a killed process leaves "running": the report does not show it as completed
        write_json_atomic(summary_file, {**previous, "method": cfg.method.name, "status": "running"})
    keep_large_blocks()
    with thread_policy(fixed_threads(cfg)) as policy:
        try:
            rank_zero_info(policy.describe())
            trainer.fit(model, datamodule=dm, ckpt_path=str(start_from) if start_from else None)
            if not trained_nothing(start_from, last, trainer.global_step):  # a finished run's last.ckpt stays
                trainer.save_checkpoint(last)
            if trainer.limit_val_batches and model.validated_at_step != trainer.global_step:
                metrics.update(trainer.callback_metrics)  # validate() resets them
                trainer.validate(model, datamodule=dm, verbose=False)  # final val metrics of the trained model
            metrics.update(trainer.callback_metrics)
            log_final_hparams(trainer, cfg, metrics)
        except BaseException as e:
            status = failure_status(e, trainer)
            if status == "interrupted":
                raise KeyboardInterrupt(f"interrupted at step {trainer.global_step}") from e
            raise
        finally:
            metrics.update(trainer.callback_metrics)
            summary = {
                "method": cfg.method.name, "status": status, "global_step": trainer.global_step,
                "epoch": trainer.current_epoch, "wall_s": round(clock.total(), 3), "threads": policy.summary(),
                "metrics": {**previous.get("metrics", {}),
                            **{k: float(v) for k, v in metrics.items() if v.numel() == 1}},
            }
            if status != "completed" and trainer.global_step < previous.get("global_step", 0):
                summary = previous  # failed before the checkpoint was restored: the earlier record stands
            if trainer.is_global_zero:
                write_summary(summary_file, summary, failing=status != "completed")
    return summary
