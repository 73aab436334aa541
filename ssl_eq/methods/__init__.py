"""Pretraining methods: a registry of LightningModules sharing `BaseMethod` (one file per method).

Names are imported on first use, so `import ssl_eq.methods` (e.g. by the CLI) loads neither torch nor
Lightning. `load_run(run_dir)` rebuilds a trained model from a run folder.
"""
from __future__ import annotations

from ssl_eq.utils.lazy import lazy_attributes

_EXPORTS = {
    "BaseMethod": "base", "NonFiniteLossError": "base", "StepOutput": "base",
    "METHODS": "registry", "get_method": "registry", "register_method": "registry", "available_methods": "registry",
    "build_method": "run", "load_run": "run", "compose_config": "run", "pretrain": "run",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes("ssl_eq.methods", _EXPORTS)
