"""Probe config files checked before anything runs: keys, types (against the shipped default.yaml), ranges.

`epochs: three` in a copy of default.yaml is refused in one line naming the key, before features are extracted
or probe.json is touched (it used to run and record an `error` entry over a good result).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ssl_eq.methods.config_check import Range, type_errors
from ssl_eq.utils.finite import nonfinite_errors

REQUIRED = ("seed", "extraction", "probes")
# key -> rule, for the top level / `extraction` and for every key of a probe section (probes.<name>.<key>)
RANGES: dict[str, Range] = {
    "seed": Range(int, 0),
    "extraction.batch_size": Range(int, 1),
    "extraction.max_objects": Range(int, 1, nullable=True),
}
PROBE_RANGES: dict[str, Range] = {
    "epochs": Range(int, 1),
    "lr": Range(float, 0, low_open=True),
    "weight_decay": Range(float, 0),
    "batch_size": Range(int, 1),
    "train_per_object": Range(int, 1, nullable=True),
    "val_per_object": Range(int, 1, nullable=True),
    "holdout_fraction": Range(float, 0),
    "patience": Range(int, 1, nullable=True),
    "sequences_per_object": Range(int, 1),
    "chunk": Range(int, 1),
}
CHOICES = {"extraction.batchnorm": ("eval", "train")}


def _get(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part, "???") if isinstance(node, dict) else "???"
    return node


def probe_config_errors(config: Any, default: dict[str, Any]) -> list[str]:
    """Every problem of probe config `config` (a parsed YAML file) against the shipped `default` protocol."""
    if not isinstance(config, dict):
        return [f"expected a mapping of {', '.join(REQUIRED)}, got {type(config).__name__}"]
    errors = [f"{k}: missing (every probe config has {', '.join(REQUIRED)}; copy ssl_eq/configs/probe/default.yaml)"
              for k in REQUIRED if k not in config]
    probes = config.get("probes")
    if "probes" in config and not isinstance(probes, dict):
        return errors + [f"probes: expected a mapping of probe name -> settings, got {type(probes).__name__}"]
    known = default["probes"]
    errors += [f"probes.{name}: unknown probe; valid: {sorted(known)}" for name in probes or {} if name not in known]
    errors += type_errors(config, default)
    typed = {e.split("=", 1)[0] for e in errors}
    rules = {**RANGES, **{f"probes.{name}.{k}": rule for name in probes or {} for k, rule in PROBE_RANGES.items()}}
    for key, rule in rules.items():
        value = _get(config, key)
        if value != "???" and key not in typed and not rule.accepts(value):
            errors.append(f"{key}={value!r}: expected {rule.describe()}")
    for name, section in (probes or {}).items():
        fraction = section.get("holdout_fraction") if isinstance(section, dict) else None
        if isinstance(fraction, (int, float)) and not fraction < 1:
            errors.append(f"probes.{name}.holdout_fraction={fraction!r}: expected a number in [0, 1)")
    for key, choices in CHOICES.items():
        value = _get(config, key)
        if value != "???" and value not in choices:
            errors.append(f"{key}={value!r}: expected one of {list(choices)}")
    return errors + [e for e in nonfinite_errors(config) if e.split("=", 1)[0] not in {x.split("=", 1)[0] for x in errors}]


def check_probe_config(config: Any, default: dict[str, Any], path: Path) -> None:
    """ValueError naming `path` and every bad key (one line when there is one) before any probe runs."""
    errors = probe_config_errors(config, default)
    if errors:
        raise ValueError(f"{path}: bad probe config: " + "; ".join(errors) + " (nothing was run or written)")
