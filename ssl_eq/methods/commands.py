"""`ssl-eq pretrain`: Hydra-style overrides over ssl_eq/configs/pretrain.yaml."""
from __future__ import annotations

import argparse
import sys

EPILOG = """\
overrides (Hydra syntax, any number):
  method=NAME          {method}
  backbone=NAME        {backbone}
  augment=NAME         {augment}
  experiment=NAME      {experiment}
  data.root=DIR        native dataset folder (required)
  run_dir=DIR          run folder; re-running the same command resumes from DIR/checkpoints/last.ckpt
  resume_from=CKPT     fork: start a new run_dir from another run's checkpoint (method.optim.lr / weight_decay
                       may change), e.g. resume_from=runs/sie/checkpoints/step=1000.ckpt run_dir=runs/sie_lr1e-4
  KEY=VALUE            any key of the composed config, e.g. trainer.max_steps=100 data.batch_size=256
                       method.optim.lr=1e-3 trainer.devices=2 trainer.strategy=ddp trainer.precision=bf16-mixed
use --cfg to print the composed config and exit.
example: ssl-eq pretrain method=sie data.root=data/3diebench trainer.max_steps=1000 run_dir=runs/sie
"""


CONFIG_GROUPS = ("method", "backbone", "augment", "experiment")
LR_BACKOFF = 10  # the NaN advice suggests a learning rate this many times lower


def group_options(group: str) -> list[str]:
    """Names of the YAML files in ssl_eq/configs/<group>/."""
    from ssl_eq.config import config_dir

    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _epilog() -> str:
    try:
        opts = {g: ", ".join(group_options(g)) for g in CONFIG_GROUPS}
    except FileNotFoundError as e:
        opts = {g: f"({e})" for g in CONFIG_GROUPS}
    return EPILOG.format(**opts)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="self-supervised pretraining (SIE, VICReg, SimCLR, BYOL, ...)",
        description="Pretrain a registered method on a native dataset; writes a run folder "
                    "(config.yaml, checkpoints/, tb/, metrics.json).",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=run, accepts_overrides=True)


def fork_advice(cfg) -> str:
    """The NaN guard's advice for run `cfg` (ssl_eq.methods.resume.nan_advice)."""
    from ssl_eq.methods.resume import nan_advice

    return nan_advice(cfg, LR_BACKOFF)


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from ssl_eq.methods.base import NonFiniteLossError
    from ssl_eq.methods.run import compose_config, pretrain
    from ssl_eq.utils.budget import check_train_batch

    cfg = compose_config(args.overrides)
    if cfg.data.image_size:  # null: the dataset's own size, checked by the data module
        check_train_batch(batch_size=int(cfg.data.batch_size), views=int(cfg.data.num_views or 2),
                          image_size=int(cfg.data.image_size))
    if args.cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    try:
        summary = pretrain(cfg)
    except NonFiniteLossError as e:
        if args.debug:
            raise
        print(f"ssl-eq pretrain: stopped: {e}\n{fork_advice(cfg)}", file=sys.stderr)
        return 3
    print(f"{summary['method']}: {summary['status']} at step {summary['global_step']}; run folder {cfg.run_dir}")
    return 0
