"""Reference checkpoint file <-> toolkit run folder.

An imported run folder: RUN/config.yaml (the toolkit config of the matching method, sized from the tensors),
RUN/checkpoints/last.ckpt (a Lightning-style checkpoint: state_dict + hyper_parameters.config, what `load_run`
reads), RUN/source.json (the file, its sha256, the format, what was dropped / folded / not in the file).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_eq.checkpoints.base import (EXTRAS_KEY, CheckpointFormat, LayoutError, available_formats, get_format,
                                    name_list)
from ssl_eq.methods.resume import CHECKPOINT_DIR, LAST, read_checkpoint
from ssl_eq.utils.io import write_atomic, write_json_atomic

SOURCE_RECORD = "source.json"
DEFAULT_NUM_CLASSES = 55  # 3DIEBench, what every reference trains on; --data sets the dataset's own


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_payload(path: Path) -> Any:
    """torch.load(weights_only=True) of a reference file; one line naming the file when it cannot be read."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError / RuntimeError / EOFError here
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first})") from e


def detect_format(payload: Any, path: Path) -> CheckpointFormat:
    """The one registered format whose layout and signature tensors the file has (ValueError otherwise)."""
    found = []
    for fmt in map(get_format, available_formats()):
        try:
            tensors, _ = fmt.unwrap(payload)
        except LayoutError:
            continue
        if fmt.matches(tensors):
            found.append(fmt.name)
    if len(found) != 1:
        what = f"matches several formats {found}" if found else "matches no known format"
        raise ValueError(f"{path}: {what}; give --format (one of {available_formats()})")
    return get_format(found[0])


def _config(fmt: CheckpointFormat, tensors: dict[str, torch.Tensor], extras: Any, out: Path, data: str | None,
            overrides: list[str]) -> DictConfig:
    """The run's config: an exported toolkit file's own, else the format's experiment sized from the tensors;
    then the user's overrides and the dataset's facts (--data)."""
    from ssl_eq.datasets import SSLDataModule
    from ssl_eq.methods.registry import get_method
    from ssl_eq.methods.run import _fill_data_info, compose_config

    if isinstance(extras, dict) and isinstance(extras.get("config"), dict):
        cfg = OmegaConf.merge(OmegaConf.create(extras["config"]), OmegaConf.from_dotlist(overrides))
    else:
        cfg = compose_config([f"experiment={fmt.experiment}", *fmt.overrides(tensors), *overrides])
    cfg.run_dir = str(out)
    if data is None:
        cfg.data.root = None
        cfg.data.num_classes = cfg.data.num_classes or DEFAULT_NUM_CLASSES
        return cfg
    cfg.data.root = str(data)
    method = get_method(cfg.method.name)
    dm = SSLDataModule(data, kind=method.batch_kind, num_views=method.item_views(cfg.data, cfg.method),
                       data_format=cfg.data.format, image_size=cfg.data.image_size)
    _fill_data_info(cfg, dm.info)
    return cfg


def _account(fmt: CheckpointFormat, path: Path, mapped: dict[str, torch.Tensor], origin: dict[str, str],
             unknown: list[str], expected: dict[str, torch.Tensor]) -> None:
    """ValueError naming every unknown, missing and mis-shaped tensor (in the file's names)."""
    unknown = unknown + [origin[k] for k in mapped if k not in expected]
    missing = [fmt.reference_name(k) for k in expected if k not in mapped and not k.startswith(fmt.not_in_file)]
    shaped = [f"{origin[k]} {tuple(t.shape)} (model: {tuple(expected[k].shape)})" for k, t in mapped.items()
              if k in expected and t.shape != expected[k].shape]
    problems = [f"{what} {name_list(names)}" for what, names in
                (("unknown tensors", unknown), ("missing tensors", missing), ("mis-shaped tensors", shaped)) if names]
    if problems:
        raise ValueError(f"{path}: not a {fmt.name} checkpoint of the configured model: {'; '.join(problems)}")


def import_checkpoint(file: str | Path, out: str | Path, fmt: str | None = None, data: str | None = None,
                      overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Write run folder `out` from reference checkpoint `file` -> the source record (RUN/source.json)."""
    from ssl_eq.methods.run import build_method

    path, out = Path(file), Path(out)
    if (out / CHECKPOINT_DIR / LAST).exists():
        raise FileExistsError(f"{out} already holds a run ({out / CHECKPOINT_DIR / LAST}); choose a new --out")
    payload = read_payload(path)
    format_ = get_format(fmt) if fmt else detect_format(payload, path)
    try:
        tensors, meta = format_.unwrap(payload)
    except LayoutError as e:
        raise ValueError(f"{path}: not a {format_.name} file ({format_.description}): {e}") from e
    absent = [s for s in format_.signature if s not in tensors]
    if absent:
        raise ValueError(f"{path}: not a {format_.name} file ({format_.description}): no tensors {name_list(absent)}")
    notes: list[str] = []
    tensors = format_.before_import(tensors, notes)
    extras = meta.get(EXTRAS_KEY)
    try:
        cfg = _config(format_, tensors, extras, out, data, list(overrides))
    except LayoutError as e:
        raise ValueError(f"{path}: {e}") from e
    model = build_method(cfg)
    expected = model.state_dict()
    mapped, origin, unknown, dropped = format_.to_toolkit(tensors)
    _account(format_, path, mapped, origin, unknown, expected)
    kept = {k: v for k, v in (extras or {}).get("state", {}).items() if k in expected}  # an export's own tensors
    model.load_state_dict({**expected, **kept, **mapped}, strict=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    fresh = sorted({k.split(".")[0] for k in expected if k not in mapped and k not in kept})
    record = {"format": format_.name, "file": str(path.resolve()), "sha256": sha256(path),
              "size_bytes": path.stat().st_size, "reference_epoch": meta.get("epoch"),
              "tensors": len(tensors), "dropped": sorted({k.split(".")[0] for k in dropped}),
              "initialised_fresh": fresh, "restored_toolkit_config": extras is not None, "notes": notes}
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": {"config": config}, "epoch": 0, "global_step": 0,
            "imported_from": record}
    write_atomic(out / CHECKPOINT_DIR / LAST, lambda p: torch.save(ckpt, p))
    write_atomic(out / "config.yaml", lambda p: OmegaConf.save(cfg, p, resolve=True))
    write_json_atomic(out / SOURCE_RECORD, record)
    return record


def export_checkpoint(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Write run `run_dir`'s model to `out` in reference layout `fmt` (what the reference's eval scripts read)."""
    from ssl_eq.methods.run import load_run

    format_ = get_format(fmt)
    format_.check_name(str(out))
    model = load_run(run_dir)
    format_.check_model(model)
    epoch = int(read_checkpoint(Path(run_dir) / CHECKPOINT_DIR / LAST).get("epoch", 0))
    state = model.state_dict()
    reference = format_.after_export(format_.to_reference(state), model)
    reference = {format_.prefix + k: v.detach().cpu().contiguous() for k, v in reference.items()}
    if format_.wrapped:
        own = {k: v.detach().cpu().clone() for k, v in state.items() if k.startswith(format_.not_in_file)}
        payload = {**format_.file_fields(model, epoch), "model": reference,
                   EXTRAS_KEY: {"config": OmegaConf.to_container(model.cfg, resolve=True), "state": own}}
    else:
        payload = reference
    return write_atomic(out, lambda p: torch.save(payload, p))
