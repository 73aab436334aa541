"""Import / export of the reference codes' checkpoint files (SIE, EquiCaps, seq-JEPA) as toolkit run folders.

`import_checkpoint(FILE, RUN)` writes a run folder that `load_run`, `ssl-eq probe`, `orbit` and `report` use
unchanged; `export_checkpoint(RUN, FORMAT, FILE)` writes a run in a reference layout. One module per reference
registers its formats (`ssl_eq.checkpoints.base.register_format`).
"""
from ssl_eq.checkpoints.base import available_formats, get_format
from ssl_eq.checkpoints.convert import export_checkpoint, import_checkpoint

__all__ = ["available_formats", "export_checkpoint", "get_format", "import_checkpoint"]
