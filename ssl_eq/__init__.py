"""ssl_eq: invariant / equivariant self-supervised learning toolkit.

Python API (README "Python API"; names load on first use, so `import ssl_eq` stays light):
`load_run(run_dir, device=)` -> a frozen `Encoder` (`.embed`, `.embeddings`, `.predict`, `.action`);
`open_dataset(root, kind=, split=)`; `render`, `probe`, `report`, `analyse_orbits` (the CLI commands, returning results;
`ssl_eq.orbit` is the sub-package);
`compose_config(overrides)` + `pretrain(cfg)` (pretraining).
"""
from __future__ import annotations

from ssl_eq.utils.lazy import lazy_attributes

__version__ = "0.1.0"

_EXPORTS = {
    "Encoder": "api", "load_run": "api", "open_dataset": "api", "render": "api", "probe": "api", "report": "api",
    "analyse_orbits": "api", "OrbitResult": "api",
    "compose_config": "methods.run", "pretrain": "methods.run",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes("ssl_eq", _EXPORTS)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
