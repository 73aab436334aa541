"""`ssl-eq pretrain`: a Hydra application over ssl_eq/configs/pretrain.yaml.

Hydra's own command line (`--cfg job|hydra|all`, `--info`, `-m/--multirun`, `--help`, `hydra/launcher=...`),
run through Hydra's `Hydra.run` / `Hydra.multirun` so that errors stay one line (cli.describe_error) and the
exit code tells success / bad input / NaN stop. Every job's config is composed and checked before Hydra
writes anything. A single run writes into `run_dir`; a sweep writes one run folder per job,
`hydra.sweep.dir/<the job's swept overrides>` (budgets and paths excluded), so re-running a sweep resumes
its jobs.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_eq.config import config_dir, parse_overrides
from ssl_eq.methods.run import ROOT_CONFIG, compose_config, finish_config, is_hydra_override, quote_value

LR_BACKOFF = 10  # the NaN advice suggests a learning rate this many times lower
NAN_EXIT = 3


@dataclass
class JobResult:
    """What one pretraining job returns to the launcher (picklable: submitit sends it back)."""
    run_dir: str
    summary: dict[str, Any] | None = None
    error: str | None = None                # one line (cli.describe_error) when the job failed
    exception: BaseException | None = None  # a single in-process run re-raises it (--debug shows the traceback)
    nan: bool = False


def fork_advice(cfg: DictConfig) -> str:
    """The NaN guard's advice for run `cfg` (ssl_eq.methods.resume.nan_advice)."""
    from ssl_eq.methods.resume import nan_advice

    return nan_advice(cfg, LR_BACKOFF)


def pretrain_job(cfg: DictConfig) -> JobResult:
    """Hydra's task function: one pretraining run; in a sweep its run folder is the job's output folder."""
    from hydra.core.hydra_config import HydraConfig

    from ssl_eq.cli import describe_error
    from ssl_eq.methods.base import NonFiniteLossError
    from ssl_eq.methods.run import pretrain

    hydra = HydraConfig.get()
    cfg = finish_config(cfg, list(hydra.overrides.task))
    sweep = OmegaConf.select(hydra, "job.num", default=None) is not None  # a launcher numbers a sweep's jobs
    if sweep:
        cfg.run_dir = hydra.runtime.output_dir
    try:
        if sweep:
            check_sweep_ranks(cfg)
        return JobResult(str(cfg.run_dir), summary=pretrain(cfg))
    except Exception as e:  # noqa: BLE001 - reported per job; a single run re-raises it
        nan = isinstance(e, NonFiniteLossError)
        line = f"stopped: {e}\n{fork_advice(cfg)}" if nan else describe_error(e)
        keep = None if sweep else e
        return JobResult(str(cfg.run_dir), error=line, exception=keep, nan=nan)


def check_sweep_ranks(cfg: DictConfig) -> None:
    """A sweep job trains on several devices only where the cluster starts one process per rank (SLURM):
    Lightning's own process launcher re-runs the command line, which for a sweep is the whole sweep."""
    several = str(cfg.trainer.devices) not in ("1", "auto") or int(cfg.trainer.num_nodes) > 1
    if several and "SLURM_NTASKS" not in os.environ:
        raise ValueError(f"trainer.devices={cfg.trainer.devices} trainer.num_nodes={cfg.trainer.num_nodes} in a "
                         f"sweep needs hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node="
                         f"{cfg.trainer.devices} (one process per rank); run multi-device jobs on their own "
                         f"(without -m) here")


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """A -m command's overrides -> each job's overrides (Hydra's basic sweeper expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(parse_overrides(overrides), None) for job in batch]


def check_jobs(jobs: list[list[str]], multirun: bool) -> list[DictConfig]:
    """Compose and check every job's config before anything is written (ValueError naming the key)."""
    from ssl_eq.utils.budget import check_train_batch
    from ssl_eq.utils.finite import check_finite

    cfgs = []
    for job in jobs:
        if multirun and any(o.lstrip("+~").partition("=")[0] == "run_dir" for o in job):
            raise ValueError("run_dir is set per job in a sweep (-m): its folder is hydra.sweep.dir/<the job's "
                             "overrides>; choose the sweep folder with hydra.sweep.dir=DIR")
        cfg = compose_config(job)
        if cfg.data.get("root") in (None, "???"):
            raise ValueError("data.root is required: ssl-eq pretrain data.root=DATASET_DIR ...")
        check_finite(cfg)
        if cfg.data.image_size:  # null: the dataset's own size, checked by the data module
            check_train_batch(batch_size=int(cfg.data.batch_size), views=int(cfg.data.num_views or 2),
                              image_size=int(cfg.data.image_size))
        run = [o.value() for o in parse_overrides(job) if o.key_or_group == "hydra.run.dir"]
        if run and Path(str(run[-1])).resolve() != Path(cfg.run_dir).resolve():  # equal in Lightning's DDP ranks
            raise ValueError(f"hydra.run.dir={run[-1]}: a run's folder is run_dir (hydra.run.dir follows it); "
                             f"give run_dir={run[-1]}")
        cfgs.append(cfg)
    return cfgs


def check_job_folders(hydra: Any, config_name: str, jobs: list[list[str]]) -> None:
    """Two jobs of a sweep must not share a run folder (they differ only in excluded keys such as max_steps)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    seen: dict[str, list[str]] = {}
    for job in jobs:
        cfg = hydra.compose_config(config_name=config_name, overrides=job, run_mode=RunMode.MULTIRUN,
                                   with_log_configuration=False)
        HydraConfig.instance().set_config(cfg)
        folder = str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
        if folder in seen:
            raise ValueError(f"sweep jobs {seen[folder]} and {job} would share the run folder {folder}: their "
                             f"overrides differ only in keys that do not name a folder "
                             f"(hydra.job.config.override_dirname.exclude_keys)")
        seen[folder] = job


def name_folders_by_swept_keys(hydra: Any, config_name: str, overrides: list[str]) -> list[str]:
    """`overrides` + the Hydra override that names each job's folder by its swept keys only (`seed=0,...`): the
    fixed ones are added to hydra.job.config.override_dirname.exclude_keys (file names stay short)."""
    from hydra.types import RunMode

    parsed = [o for o in parse_overrides(overrides) if not is_hydra_override(o)]
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    cfg = hydra.compose_config(config_name=config_name, overrides=overrides, run_mode=RunMode.MULTIRUN,
                               with_log_configuration=False)
    exclude = [*cfg.hydra.job.config.override_dirname.exclude_keys,
               *sorted({o.key_or_group for o in parsed} - swept)]
    return [*overrides, "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in exclude) + "]"]


def _create_hydra(args: Any) -> Any:
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    search_path = create_config_search_path(f"file://{config_dir()}")
    if args.config_dir:
        search_path.prepend(provider="command-line", path=f"file://{Path(args.config_dir).resolve()}")
    return Hydra.create_main_hydra2(task_name="pretrain", config_search_path=search_path)


def _report(results: list[JobResult]) -> int:
    """One line per job; the exit code: 0 all completed, 3 a NaN stop, 2 another failure."""
    for r in results:
        if r.error is None:
            s = r.summary or {}
            print(f"{s.get('method')}: {s.get('status')} at step {s.get('global_step')}; run folder {r.run_dir}")
        else:
            print(f"ssl-eq pretrain: {r.run_dir}: {r.error}", file=sys.stderr)
    failed = [r for r in results if r.error is not None]
    if failed:
        print(f"ssl-eq pretrain: {len(failed)} of {len(results)} jobs failed", file=sys.stderr)
    return 0 if not failed else NAN_EXIT if all(r.nan for r in failed) else 2


def main(argv: list[str]) -> int:
    """`ssl-eq pretrain ARGV`; raises the error of a failed single run (ssl_eq.cli prints it in one line)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    debug = "--debug" in argv
    parser = get_args_parser()
    parser.prog = "ssl-eq pretrain"
    try:  # Hydra's parser exits on --version and on a bad flag (2, with its message)
        args = parser.parse_args([a for a in argv if a != "--debug"])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    args.overrides = [quote_value(o) for o in args.overrides]  # e.g. resume_from=RUN/checkpoints/step=40.ckpt
    config_name = args.config_name or ROOT_CONFIG
    if not (args.help or args.hydra_help or args.info or args.shell_completion):
        jobs = sweep_jobs(args.overrides) if args.multirun else [args.overrides]
        cfgs = check_jobs(jobs, args.multirun) if args.cfg is None else [compose_config(args.overrides)]
    hydra = _create_hydra(args)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures the root logger: restored afterwards
    try:
        if args.help:
            hydra.app_help(config_name=config_name, args_parser=parser, args=args)
        elif args.hydra_help:
            hydra.hydra_help(config_name=config_name, args_parser=parser, args=args)
        elif args.cfg == "job":  # the config that would train (experiment leftovers dropped), not Hydra's raw one
            cfg = cfgs[0]
            print(OmegaConf.to_yaml(OmegaConf.select(cfg, args.package) if args.package else cfg,
                                    resolve=args.resolve))
        elif args.cfg:
            hydra.show_cfg(config_name=config_name, overrides=args.overrides, cfg_type=args.cfg,
                           package=args.package, resolve=args.resolve)
        elif args.info:
            hydra.show_info(args.info, config_name=config_name, overrides=args.overrides)
        elif args.shell_completion:
            hydra.shell_completion(config_name=config_name, overrides=args.overrides)
        elif args.multirun:
            overrides = name_folders_by_swept_keys(hydra, config_name, args.overrides)
            check_job_folders(hydra, config_name, [[*job, overrides[-1]] for job in jobs])
            returns = hydra.multirun(config_name=config_name, task_function=pretrain_job, overrides=overrides)
            return _report([ret.return_value for batch in returns for ret in batch])
        else:
            run_dir = Path(cfgs[0].run_dir)
            fresh = not run_dir.exists()
            result = hydra.run(config_name=config_name, task_function=pretrain_job,
                               overrides=args.overrides).return_value
            if result.error is not None and fresh and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # Hydra made the folder; a run that failed to start leaves none
            if result.exception is not None and (debug or not result.nan):
                raise result.exception
            return _report([result])
        return 0
    except HydraException as e:
        raise ValueError(str(e).strip().splitlines()[0]) from e
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level
