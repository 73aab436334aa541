"""Where the Hydra configuration tree lives: `ssl_eq/configs/`, shipped inside the package."""
from __future__ import annotations

import os
from pathlib import Path


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
