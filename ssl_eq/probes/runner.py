"""`ssl-eq probe`: load a run, extract (or reuse) frozen features, run the selected probes, write RUN/probe/.

Results are keyed by what they depend on: the checkpoint's weights (`checkpoint_digest`, unchanged when
last.ckpt is rewritten with the same weights) and the dataset's content (`dataset.digest`, unchanged when the
dataset is moved). The run's own dataset writes RUN/probe/; another dataset gets RUN/probe/data-<digest>/
(same layout), so probing another dataset never erases the run's results.

Outputs: RUN/probe/probe.json (every metric with its definition, the protocol and conventions, the config used,
per-probe status and epoch selection),
RUN/probe/tb/ (TensorBoard scalars), RUN/probe/*.png, RUN/probe/features_<split>.pt (feature cache),
RUN/probe/rotation_head_<part>.pt (the relative-rotation heads, `FittedHead.load`; used by `ssl-eq orbit`).
probe.json merges: a run replaces the entries of the probes it ran and keeps the others (`merge_reports`).
A probe that cannot apply or fails is recorded with its reason; the others still run.
"""
from __future__ import annotations

import datetime
import errno
import logging
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ssl_eq.config import apply_overrides, config_dir, group_options
from ssl_eq.datasets.relative import DEFAULT_COLOUR_TARGETS, DEFAULT_QUATERNION_SIGN, check_conventions
from ssl_eq.probes.config_check import check_probe_config
from ssl_eq.probes.features import extract_features, load_cached, save_cached
from ssl_eq.probes.targets import MissingLatents
from ssl_eq.probes.tasks import PROBES, ProbeContext, ProbeSkipped
from ssl_eq.utils.identity import dataset_digest, weights_digest
from ssl_eq.utils.io import read_json_object, write_json_atomic
from ssl_eq.utils.tensorboard import add_pngs

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.ckpt"
RUN_CONFIG = "config.yaml"
# what every probe config file holds (key path -> type); the probes' own sections are checked by each probe
REQUIRED_SECTIONS = {"seed": int, "extraction": dict, "extraction.batch_size": int, "probes": dict}
PROBE_DIR = "probe"
PROBE_FILE = "probe.json"
DATASET_CONFIG_KEY = "data.root"  # where a run's config.yaml names its dataset folder
DEFAULT_PROTOCOL = "default"
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
RUN_CONVENTION = "run"  # probe convention value: use the run's data.* setting
# what a run's config.yaml says about its data conventions (absent in runs made before they existed)
RUN_CONVENTION_KEYS = {"quaternion_sign": ("data.quaternion_sign", DEFAULT_QUATERNION_SIGN),
                       "colour_targets": ("data.colour_targets", DEFAULT_COLOUR_TARGETS)}


def load_probe_config(epochs: int | None = None, path: str | Path | None = None,
                      protocol: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """ssl_eq/configs/probe/<protocol>.yaml (default: default.yaml) or the file `path`, as a plain dict, with
    `key=value` overrides (e.g. probes.linear.epochs=5); `epochs` overrides every probe's epochs. `protocol` in
    the result names the protocol (the file's stem if it has none)."""
    if path and protocol:
        raise ValueError("give either --config FILE or --protocol NAME, not both")
    if not path and (protocol or DEFAULT_PROTOCOL) not in group_options("probe"):
        raise ValueError(f"--protocol: unknown protocol {protocol!r}; choose from {group_options('probe')} "
                         f"(files in {config_dir() / 'probe'}) or pass --config FILE")
    path = Path(path) if path else config_dir() / "probe" / f"{protocol or DEFAULT_PROTOCOL}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"probe config not found: {path}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    _check_sections(cfg, path)
    default = OmegaConf.to_container(OmegaConf.load(config_dir() / "probe" / f"{DEFAULT_PROTOCOL}.yaml"), resolve=True)
    check_probe_config(cfg, default, path)
    cfg.setdefault("protocol", path.stem)
    cfg = apply_overrides(cfg, overrides, f"probe protocol {cfg['protocol']} ({path})")
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        for section in cfg["probes"].values():
            if "epochs" in section:
                section["epochs"] = epochs
    return cfg


def _check_sections(cfg: Any, path: Path) -> None:
    """A probe config must hold every section of REQUIRED_SECTIONS (a partial file is refused, naming the key)."""
    template = config_dir() / "probe" / f"{DEFAULT_PROTOCOL}.yaml"
    for key, kind in REQUIRED_SECTIONS.items():
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, kind):
            raise ValueError(f"{path}: missing or malformed {key!r} (a probe config needs "
                             f"{', '.join(REQUIRED_SECTIONS)}); start from a copy of {template}")


def select_probes(spec: str) -> list[str]:
    """"all" or a comma-separated list of names from PROBES -> names, in registry order."""
    if spec.strip() == "all":
        return list(PROBES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown or not names:
        raise ValueError(f"--probes: unknown probe(s) {unknown or spec!r}; choose 'all' or from {list(PROBES)}")
    return [n for n in PROBES if n in names]


def evaluate(ctx: ProbeContext, names: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """Run each named probe in isolation -> {"probes": {name: record}, "metrics": flat, "definitions": flat}.

    A record has "status" ("ok" | "skipped" | "error"), "reason" when not ok, "metrics", "definitions",
    "plots" (paths relative to ctx.out_dir), "notes" and the probe's "config".
    """
    records, flat, definitions = {}, {}, {}
    for name in names:
        section = cfg["probes"].get(name, {})
        record: dict[str, Any] = {"config": section}
        try:
            result = PROBES[name](ctx, section)
        except (ProbeSkipped, MissingLatents) as e:
            record.update(status="skipped", reason=str(e))
        except OSError as e:
            if e.errno in OUT_OF_SPACE:  # every probe would fail: stop, naming the folder
                raise
            record.update(status="error", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        except Exception as e:  # noqa: BLE001 - one failing probe must not lose the others
            record.update(status="error", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        else:
            record.update(status="ok", metrics=result.metrics, definitions=result.definitions, notes=result.notes,
                          selection=result.selection,
                          plots=[str(Path(p).relative_to(ctx.out_dir)) for p in result.plots])
            if result.per_object:  # per-object sums of the headline metrics (the report's bootstrap)
                record["per_object"] = result.per_object
            for metric, value in result.metrics.items():
                flat[f"{name}/{metric}"] = value
                definitions[f"{name}/{metric}"] = result.definitions[metric]
                ctx.log_scalar(f"probe/{name}/{metric}", value, 0)
        records[name] = record
    return {"probes": records, "metrics": flat, "definitions": definitions}


def _run_config(run_dir: Path) -> Any:
    cfg_path = run_dir / RUN_CONFIG
    return OmegaConf.load(cfg_path) if cfg_path.is_file() else OmegaConf.create()


def _dataset_from_run(run_dir: Path) -> Path | None:
    value = OmegaConf.select(_run_config(run_dir), DATASET_CONFIG_KEY, default=None)
    return Path(str(value)) if value else None


def resolve_conventions(probe_cfg: dict[str, Any], run_cfg: Any) -> dict[str, Any]:
    """{"quaternion_sign", "colour_targets"} of the probe targets ("run" -> the run's data.* value) and "run":
    the run's own (what its model was fed)."""
    run = {name: str(OmegaConf.select(run_cfg, key, default=default))
           for name, (key, default) in RUN_CONVENTION_KEYS.items()}
    check_conventions(**run, where="run config data")
    wanted = probe_cfg.get("conventions") or {}
    probe = {name: run[name] if wanted.get(name, RUN_CONVENTION) == RUN_CONVENTION else str(wanted[name])
             for name in RUN_CONVENTION_KEYS}
    check_conventions(**probe, where="probe config conventions")
    return {**probe, "run": run}


def check_compatible(model: Any, source: Any, data_dir: Path) -> list[str]:
    """Image size must match (else ValueError); a different latent schema only warns (latent probes skip)."""
    size = getattr(model, "image_size", None)
    if size is not None and int(size) != int(source.image_size):
        raise ValueError(f"{data_dir}: image_size {source.image_size} does not match the checkpoint's image_size "
                         f"{size}; probe with a dataset rendered at {size} px")
    schema = getattr(model, "latent_schema", None)
    if schema is not None and list(schema) != list(source.latent_schema):
        return [f"{data_dir}: latent schema {list(source.latent_schema)} differs from the checkpoint's "
                f"{list(schema)}; probes needing missing latents are skipped"]
    return []


def _split_features(model: Any, source: Any, split: str, cache: Path, key: dict[str, Any], cfg: dict[str, Any],
                    device: str) -> dict[str, torch.Tensor]:
    from torch.utils.data import DataLoader, Subset

    from ssl_eq.datasets.views import ViewDataset, collate

    cached = load_cached(cache, key)
    if cached is not None:
        log.info("features [%s]: reusing %s", split, cache)
        return cached
    views = ViewDataset(source, split)
    max_objects = cfg["extraction"].get("max_objects")
    batchnorm = key["batchnorm"]
    dataset = Subset(views, range(min(len(views), max_objects * source.views))) if max_objects else views
    log.info("features [%s]: extracting %d views (BatchNorm in %s mode) -> %s", split, len(dataset), batchnorm, cache)
    # batch statistics (batchnorm: train) come from shuffled batches of views, as in the reference scripts
    loader = DataLoader(dataset, batch_size=int(cfg["extraction"]["batch_size"]), shuffle=batchnorm == "train",
                        generator=torch.Generator().manual_seed(int(cfg["seed"])), collate_fn=collate)
    feats = extract_features(model, loader, device=device, batchnorm=batchnorm)
    save_cached(cache, key, feats)
    return feats


def run_probes(run_dir: str | Path, data: str | Path | None = None, probes: str = "all",
               epochs: int | None = None, device: str = "cpu", config: str | Path | None = None,
               protocol: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Probe a run folder (docs/architecture.md "Runs and models") and write RUN/probe/probe.json -> its content.

    protocol: a ssl_eq/configs/probe/ preset ("default", "sie_reference"); config: a probe YAML file instead."""
    from torch.utils.tensorboard import SummaryWriter

    from ssl_eq.methods import load_run
    from ssl_eq.probes.images import add_augmented_features, is_augmentation_model, open_source

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotADirectoryError(f"run folder not found: {run_dir}")
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint at {ckpt} (was the run trained to its first save?)")
    names = select_probes(probes)
    cfg = load_probe_config(epochs, config, protocol, overrides)
    run_cfg = _run_config(run_dir)
    conventions = resolve_conventions(cfg, run_cfg)
    data_dir = Path(data) if data else _dataset_from_run(run_dir)
    if data_dir is None:
        raise ValueError(f"{run_dir / RUN_CONFIG} names no dataset ({DATASET_CONFIG_KEY}); "
                         "pass --data DIR")
    source = open_source(run_cfg, data_dir)  # native shards, or the run's image dataset (data.format)
    model = load_run(run_dir, map_location=device)
    warnings = check_compatible(model, source, data_dir)
    for w in warnings:
        log.warning(w)

    data_id = dataset_digest(source.manifest)
    out_dir = probe_dir(run_dir, data_id)
    digest = weights_digest(ckpt)
    feats, keys = {}, {}
    for split in ("train", "val"):
        if not len(source.split_indices(split)):
            raise ValueError(f"{data_dir}: the {split!r} split has no objects; probes train on 'train' and score on "
                             f"'val': render / import the dataset with both (--val-fraction > 0 or --split-file)")
        key = {"checkpoint_digest": digest, "dataset_digest": data_id, "split": split,
               "max_objects": cfg["extraction"].get("max_objects"),
               "batchnorm": cfg["extraction"].get("batchnorm", "eval")}
        feats[split] = _split_features(model, source, split, out_dir / f"features_{split}.pt", key, cfg, device)
        keys[split] = key
    if is_augmentation_model(model):
        add_augmented_features(model, source, feats, cfg, out_dir, keys, device)

    writer = SummaryWriter(str(out_dir / "tb"))
    ctx = ProbeContext(train=feats["train"], val=feats["val"], latent_schema=list(source.latent_schema),
                       class_names=list(source.class_names), out_dir=out_dir, model=model, seed=int(cfg["seed"]),
                       log_scalar=writer.add_scalar, quaternion_sign=conventions["quaternion_sign"],
                       colour_targets=conventions["colour_targets"], run_conventions=conventions["run"],
                       device=device,
                       save_head=lambda name, head, **meta: head.save(out_dir / f"{name}.pt", checkpoint_digest=digest,
                                                                       **meta))
    try:
        results = evaluate(ctx, names, cfg)
        add_pngs(writer, [out_dir / png for r in results["probes"].values() for png in r.get("plots", [])], "probe")
    finally:
        writer.close()
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for record in results["probes"].values():
        record.update(created=created, checkpoint_digest=digest)
    report = {
        "run": str(run_dir),
        "method": type(model).__name__,
        "method_name": str(OmegaConf.select(run_cfg, "method.name", default=type(model).__name__)),
        "protocol": cfg["protocol"],
        "headline_r2": cfg.get("headline_r2", "r2_pooled"),
        "conventions": {**conventions, "feature_batchnorm": cfg["extraction"].get("batchnorm", "eval")},
        "checkpoint": str(ckpt),
        "checkpoint_digest": digest,
        "probe_dir": str(out_dir),
        "created": created,
        "dataset": {"root": str(data_dir), "digest": data_id, "variant": source.variant, "image_size": source.image_size,
                    "views": source.views, "latent_schema": list(source.latent_schema),
                    "objects": {s: int(f["labels"].shape[0]) for s, f in feats.items()}},
        "config": cfg,
        "selected": names,
        "warnings": warnings,
        **results,
    }
    report = merge_reports(read_previous_report(out_dir / PROBE_FILE), report)
    write_json_atomic(out_dir / PROBE_FILE, report)
    return report


def probe_dir(run_dir: Path, data_id: str) -> Path:
    """RUN/probe for the run's own dataset (the one its probe.json was measured on, else its config's data.root),
    RUN/probe/data-<digest[:12]> for any other dataset."""
    home = run_dir / PROBE_DIR
    recorded = ((read_previous_report(home / PROBE_FILE, quiet=True) or {}).get("dataset") or {}).get("digest")
    if recorded is None:
        from ssl_eq.datasets.native import read_manifest

        own = _dataset_from_run(run_dir)
        try:
            recorded = dataset_digest(read_manifest(own)) if own else None
        except (OSError, ValueError):
            recorded = None  # the run's dataset is not here (moved): the first dataset probed takes RUN/probe
    return home if recorded in (None, data_id) else home / f"data-{data_id[:12]}"


def read_previous_report(path: Path, quiet: bool = False) -> dict[str, Any] | None:
    """An earlier probe.json to merge into, or None (absent; unreadable ones are reported and replaced)."""
    if not path.is_file():
        return None
    try:
        old = read_json_object(path, "probe results")
        if not isinstance(old.get("probes"), dict):
            raise ValueError(f"{path}: no 'probes' mapping")
    except ValueError as e:
        if not quiet:
            log.warning("%s; its earlier results cannot be kept", e)
        return None
    return old


def merge_reports(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """probe.json after a probe run: `new`'s probes replace their own entries of `old`, the others are kept.

    Entries are kept only when they were measured on the same weights, dataset content and extraction settings;
    otherwise they are dropped with a warning (they would describe another model). A probe that fails where
    the old report has a good result of the same model keeps that result (the failure goes to `failed`). Every
    record carries its own `config`, `created` and `checkpoint_digest`; top-level `created` / `config` are the
    latest run's.
    """
    if not old:
        return new
    same = (old.get("checkpoint_digest") == new["checkpoint_digest"]
            and (old.get("dataset") or {}).get("digest") == new["dataset"]["digest"]
            and (old.get("config") or {}).get("extraction") == new["config"].get("extraction"))
    failed = [n for n, r in new["probes"].items() if same and r["status"] == "error"
              and (old["probes"].get(n) or {}).get("status") == "ok"]
    # a failed re-run never replaces a good result of the same model and data: it is listed in `failed`
    new["failed"] = {n: new["probes"][n] for n in failed}
    new["probes"] = {n: r for n, r in new["probes"].items() if n not in failed}
    kept = {n: {**r, "created": r.get("created", old.get("created"))} for n, r in old["probes"].items()
            if n not in new["probes"]}
    if not same:
        if kept:
            new["warnings"] = [*new["warnings"], f"earlier results of {sorted(kept)} were measured on another "
                               f"checkpoint, dataset or extraction setting and were dropped; re-run them"]
        return new
    order = {n: i for i, n in enumerate([*PROBES, *sorted(kept)])}
    probes = dict(sorted({**kept, **new["probes"]}.items(), key=lambda item: order.get(item[0], len(order))))

    def merged(key: str) -> dict[str, Any]:
        flat = {k: v for k, v in (old.get(key) or {}).items() if k.split("/", 1)[0] in kept}
        return dict(sorted({**flat, **new[key]}.items(), key=lambda kv: order.get(kv[0].split("/", 1)[0], len(order))))

    return {**new, "probes": probes, "metrics": merged("metrics"), "definitions": merged("definitions"),
            "warnings": list(dict.fromkeys([*old.get("warnings", []), *new["warnings"]]))}


def format_summary(report: dict[str, Any]) -> str:
    """Human-readable lines: protocol and conventions, each probe's status and metrics, then where probe.json is."""
    conv = report["conventions"]
    lines = [f"protocol {report['protocol']}: quaternion sign {conv['quaternion_sign']}, colour targets "
             f"{conv['colour_targets']}, features with BatchNorm in {conv['feature_batchnorm']} mode"]
    for name, record in report["probes"].items():
        if record["status"] != "ok":
            lines.append(f"{name}: {record['status']} - {record['reason']}")
            continue
        lines.append(f"{name}:")
        lines += [f"  {metric:<28} {value:.4f}" for metric, value in record["metrics"].items()]
        lines += [f"  note: {note}" for note in record["notes"]]
    for name, record in (report.get("failed") or {}).items():
        lines.append(f"{name}: error this time - {record['reason']} (the earlier result above is kept)")
    lines.append(f"wrote {Path(report.get('probe_dir') or Path(report['run']) / PROBE_DIR) / PROBE_FILE}")
    return "\n".join(lines)
