"""Config values checked before anything is written: types against the default config, ranges of key options.

A typo (`data.batch_size=four`, `method.optim.lr=fast`) is refused by `ssl-eq pretrain` with the key, the
expected type and an example, before a run folder or its config.yaml exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# keys whose default does not show every accepted type
ACCEPTS: dict[str, tuple[type, ...]] = {
    "trainer.devices": (int, str, list),             # 2, "auto", "0,1", [0, 1]
    "trainer.precision": (str, int),                 # "bf16-mixed", 32
    "trainer.limit_val_batches": (int, float),
    "trainer.check_val_every_n_epoch": (int, type(None)),
}
TYPE_NAMES = {bool: "true / false", int: "an integer", float: "a number", str: "a string", list: "a list [...]",
              dict: "a mapping {...}", type(None): "null"}


@dataclass(frozen=True)
class Range:
    kind: type                 # int or float
    low: float | None = None
    low_open: bool = False     # low itself excluded
    nullable: bool = False

    def describe(self) -> str:
        bound = "" if self.low is None else f" {'>' if self.low_open else '>='} {self.low}"
        return f"{TYPE_NAMES[self.kind]}{bound}" + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False
        return self.low is None or (value > self.low if self.low_open else value >= self.low)


# key options of `ssl-eq pretrain`: a value outside its range is refused before the run starts
RANGES: dict[str, Range] = {
    "seed": Range(int, 0),
    "data.batch_size": Range(int, 1),
    "data.num_workers": Range(int, 0),
    "data.num_views": Range(int, 2, nullable=True),  # null: the method's own (seq-JEPA: method.seq_len + 1)
    "data.image_size": Range(int, 8, nullable=True),
    "trainer.max_steps": Range(int, -1),
    "trainer.max_epochs": Range(int, -1),
    "trainer.num_nodes": Range(int, 1),
    "trainer.log_every_n_steps": Range(int, 1),
    "trainer.gradient_clip_val": Range(float, 0, low_open=True, nullable=True),
    "checkpoint.every_n_steps": Range(int, 1),
    "checkpoint.last_every_n_steps": Range(int, 1),
    "checkpoint.keep": Range(int, 1, nullable=True),
    "method.optim.lr": Range(float, 0, low_open=True),
    "method.optim.weight_decay": Range(float, 0),
    "method.optim.warmup_steps": Range(int, 0),
    "method.optim.final_lr_factor": Range(float, 0),
}


def _fits(value: Any, default: Any) -> bool:
    """Does `value` have the type of `default` (an int is a float; null defaults take anything)?"""
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        kinds = (int,) if isinstance(default, int) else (int, float)
        return isinstance(value, kinds) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list) and (not default or all(_fits(v, default[0]) for v in value))
    return isinstance(value, dict) if isinstance(default, dict) else True


def _kind(default: Any) -> str:
    if isinstance(default, list):
        return "a list" + (f" of {_kind(default[0]).removeprefix('an ').removeprefix('a ')}s" if default else "")
    return TYPE_NAMES.get(type(default), type(default).__name__)


def type_errors(config: dict[str, Any], default: dict[str, Any], prefix: str = "") -> list[str]:
    """Every leaf of `config` whose type differs from the same key of `default` -> one message per key."""
    errors = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in default or value == "???" or (isinstance(value, str) and value.startswith("${")):
            continue
        ref = default[key]
        if isinstance(ref, dict) and isinstance(value, dict):
            errors += type_errors(value, ref, f"{name}.")
            continue
        accepted = ACCEPTS.get(name)
        ok = isinstance(value, accepted) and not (isinstance(value, bool) and bool not in accepted) \
            if accepted else _fits(value, ref)
        if not ok:
            want = " or ".join(TYPE_NAMES[t] for t in accepted) if accepted else _kind(ref)
            errors.append(f"{name}={value!r}: expected {want} (default: {ref!r})")
    return errors


def range_errors(config: dict[str, Any]) -> list[str]:
    """Every key of RANGES present in `config` whose value is outside its range."""
    errors = []
    for key, rule in RANGES.items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part, "???") if isinstance(node, dict) else "???"
        if node != "???" and not rule.accepts(node):
            errors.append(f"{key}={node!r}: expected {rule.describe()}")
    return errors


def _plain(config: Any) -> Any:
    """A DictConfig as plain containers, interpolations resolved where they can be (not those to a ??? value)."""
    if not isinstance(config, (DictConfig, ListConfig)):
        return config
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation to a missing value: compare it unresolved
        return OmegaConf.to_container(config, resolve=False)


def check_config(config: DictConfig | dict[str, Any], default: DictConfig | dict[str, Any] | None = None) -> None:
    """ValueError listing every bad value: types against `default` (when given), then RANGES."""
    plain = [_plain(c) for c in (config, default)]
    errors = type_errors(plain[0], plain[1]) if plain[1] is not None else []
    typed = {e.split("=", 1)[0] for e in errors}
    errors += [e for e in range_errors(plain[0]) if e.split("=", 1)[0] not in typed]
    if errors:
        raise ValueError("bad config value" + ("s" if len(errors) > 1 else "") + ":\n  " + "\n  ".join(errors)
                         + "\nfix the override(s) on the command line (`ssl-eq pretrain --cfg ...` prints the "
                         "composed config); nothing was written")
