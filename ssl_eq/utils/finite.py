"""Non-finite numbers (`inf`, `nan`) in a config: refused before anything runs, naming the key.

They pass every type check (a float is a float) and poison a run silently: `method.optim.lr=inf` or
`method.loss.invariance=nan` train to a NaN loss and leave a run folder behind.
"""
from __future__ import annotations

import math
from typing import Any


def nonfinite_errors(config: Any, prefix: str = "") -> list[str]:
    """One message per float leaf of `config` (nested dicts / lists) that is inf or nan: "key=value: ..."."""
    if isinstance(config, dict):
        return [e for k, v in config.items() for e in nonfinite_errors(v, f"{prefix}{k}.")]
    if isinstance(config, (list, tuple)):
        return [e for i, v in enumerate(config) for e in nonfinite_errors(v, f"{prefix[:-1]}[{i}].")]
    if isinstance(config, float) and not math.isfinite(config):
        return [f"{prefix[:-1]}={config!r}: expected a finite number"]
    return []


def check_finite(config: Any, what: str = "config") -> None:
    """ValueError listing every non-finite value of `config` (a DictConfig is resolved first)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=True)
    errors = nonfinite_errors(config)
    if errors:
        raise ValueError(f"bad {what} value{'s' if len(errors) > 1 else ''}: {'; '.join(errors)}; nothing was "
                         f"written")
