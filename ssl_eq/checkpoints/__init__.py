"""Import / export of the reference codes' checkpoint files (SIE, EquiCaps, seq-JEPA) as toolkit run folders.

`import_checkpoint(FILE, RUN)` writes a run folder that `load_run`, `ssl-eq probe`, `orbit` and `report` use
unchanged; `export_checkpoint(RUN, FORMAT, FILE)` writes a run in a reference layout. One module per reference
registers its formats (`ssl_eq.checkpoints.base.register_format`). Names are imported on first use, so
`import ssl_eq.checkpoints` (e.g. by the CLI) loads neither torch nor Lightning.
"""
from __future__ import annotations

from ssl_eq.utils.lazy import lazy_attributes

_EXPORTS = {"available_formats": "base", "get_format": "base", "export_checkpoint": "convert",
            "import_checkpoint": "convert"}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes("ssl_eq.checkpoints", _EXPORTS)
