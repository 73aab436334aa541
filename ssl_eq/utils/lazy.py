"""Package attributes imported on first use (PEP 562 module `__getattr__`), so importing a package, e.g. by the
CLI to read its sub-commands, loads none of torch, Lightning or torchmetrics."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name -> `package.<exports[name]>`'s attribute `name`, imported when
    first asked for (AttributeError, naming the package, for any other name)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
