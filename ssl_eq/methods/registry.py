"""Method registry: name -> BaseMethod subclass.

Each method module registers its class with `@register_method(name)`; `get_method` imports every
top-level module of this package once, so adding a method is adding one file (plus
ssl_eq/configs/method/<name>.yaml). Shared building blocks live in the sub-package `ssl_eq.methods.blocks`,
which discovery does not scan; infrastructure modules (base, run, ...) are imported and register nothing.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Callable, TypeVar

if TYPE_CHECKING:
    from ssl_eq.methods.base import BaseMethod

METHODS: dict[str, type["BaseMethod"]] = {}
T = TypeVar("T")


def register_method(name: str) -> Callable[[T], T]:
    def deco(cls):
        if METHODS.get(name, cls) is not cls:
            raise ValueError(f"method {name!r} registered twice ({METHODS[name].__module__}, {cls.__module__})")
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def _discover() -> None:
    import ssl_eq.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.ispkg:
            importlib.import_module(f"ssl_eq.methods.{info.name}")


def available_methods() -> list[str]:
    _discover()
    return sorted(METHODS)


def get_method(name: str) -> type["BaseMethod"]:
    _discover()
    if name not in METHODS:
        raise ValueError(f"method.name: unknown method {name!r}; valid: {sorted(METHODS)}")
    return METHODS[name]
