"""Where the Hydra configuration tree lives: `ssl_eq/configs/`, shipped inside the package."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def config_dir() -> Path:
    """The package's `ssl_eq/configs/` folder; `SSL_EQ_CONFIG_DIR` overrides it (your own tree of the same layout)."""
    env = os.environ.get("SSL_EQ_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent / "configs"
    if not path.is_dir():
        raise FileNotFoundError(f"config folder not found: {path} (set SSL_EQ_CONFIG_DIR to a folder with "
                                f"pretrain.yaml and the method/ backbone/ ... groups)")
    return path


# config groups of `ssl-eq pretrain` (folders of ssl_eq/configs/) that a user picks options of
CONFIG_GROUPS = ("method", "backbone", "augment", "experiment", "logger", "callbacks")
# groups whose option is a section of the composed config (an experiment may set keys of the option it picks)
SECTION_GROUPS = ("method", "backbone", "augment")


def group_options(group: str) -> list[str]:
    """Names of the YAML files in ssl_eq/configs/<group>/."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[Any]:
    """Hydra's own parser: `key=value` strings -> hydra Override objects (ValueError on a syntax error)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ValueError(f"bad override syntax: {str(e).splitlines()[0]}") from e


def has_key(cfg: Any, key: str) -> bool:
    """Does the DictConfig `cfg` have the dotted `key` (a ??? value counts)?"""
    from omegaconf import DictConfig

    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


def apply_overrides(config: dict[str, Any], overrides: list[str] | tuple[str, ...], what: str) -> dict[str, Any]:
    """`key=value` overrides (Hydra syntax, `+key=value` adds a key) applied to a plain config dict -> a new dict.

    ValueError in one line naming an unknown key (with the valid keys there) or a value whose type differs
    from the default's, `what` naming the config (e.g. "probe protocol default")."""
    from omegaconf import DictConfig, OmegaConf

    from ssl_eq.methods.config_check import type_errors

    cfg = OmegaConf.create(config)
    for o in parse_overrides(overrides):
        key = o.key_or_group
        if o.is_sweep_override() or o.is_delete():
            raise ValueError(f"{o.input_line}: {what} takes single key=value overrides")
        if not o.is_add() and not has_key(cfg, key):
            parent = key.rpartition(".")[0]
            node = OmegaConf.select(cfg, parent) if parent else cfg
            valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
            raise ValueError(f"unknown config key {key!r} of {what}; valid keys at {parent or '<root>'}: {valid}")
        OmegaConf.update(cfg, key, o.value(), force_add=o.is_add())
    result = OmegaConf.to_container(cfg)
    errors = type_errors(result, config)
    if errors:
        raise ValueError(f"bad value of {what}: {errors[0]}")
    return result
