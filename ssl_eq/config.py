"""Where the Hydra configuration tree lives (`configs/` at the repository root)."""
from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The `configs/` folder; `SSL_EQ_CONFIG_DIR` overrides it (e.g. for a non-editable install)."""
    env = os.environ.get("SSL_EQ_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "configs"
    if not path.is_dir():
        raise FileNotFoundError(f"config folder not found: {path} (set SSL_EQ_CONFIG_DIR)")
    return path
