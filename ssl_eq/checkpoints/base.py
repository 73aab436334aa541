"""Checkpoint formats of the reference codes: the base class, prefix rules and the format registry.

A format (one module per reference: `sie`, `equicaps`, `seqjepa`) says how its file is laid out (a top-level
"model" key or a flat state dict, a `module.` prefix), maps its tensor names to the toolkit's with prefix rules
(a per-tensor transform where the two differ), infers the toolkit config from the tensors' shapes and
synthesises the tensors the reference's loader needs but the toolkit has no counterpart for.
Facts: docs/checkpoints.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

Transform = Callable[[Tensor], Tensor]
TOOLKIT_ONLY = ("online_classifier.", "online_rotation.")  # toolkit tensors no reference file holds
EXTRAS_KEY = "ssl_eq"  # top-level key of an exported file: the toolkit config + toolkit-only tensors (round trip)
MAX_NAMES = 6          # names listed per kind in an error line


@dataclass(frozen=True)
class Rule:
    """Reference name (prefix when it ends with ".") -> toolkit name; toolkit None: no counterpart (dropped on
    import, synthesised on export). `to_toolkit` / `to_reference` transform the tensor (default: unchanged)."""
    reference: str
    toolkit: str | None
    to_toolkit: Transform | None = None
    to_reference: Transform | None = None

    def matches(self, name: str, side: str) -> bool:
        prefix = self.reference if side == "reference" else self.toolkit
        return prefix is not None and (name == prefix or (is_prefix(prefix) and name.startswith(prefix)))


def is_prefix(name: str) -> bool:
    """A rule name ending with "." (or empty) covers every name under it; others are exact names."""
    return name == "" or name.endswith(".")


def columns(order: list[int]) -> Transform:
    """(R, C) -> the columns in `order` (the first len(order) columns permuted, the rest kept)."""
    def permute(t: Tensor) -> Tensor:
        idx = order + list(range(len(order), t.shape[1]))
        return t[:, idx].contiguous()
    return permute


def name_list(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")


class LayoutError(ValueError):
    """A file that does not hold the tensors of its format; the message names them."""


class CheckpointFormat:
    """One reference file layout. Subclasses set the class attributes and the hooks they need."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    experiment: ClassVar[str] = ""              # toolkit experiment config of the imported run
    method: ClassVar[str] = ""                  # toolkit method.name a run must have to be exported
    prefix: ClassVar[str] = "module."           # key prefix in the file ("" when there is none)
    wrapped: ClassVar[bool] = True              # export as {"model": state, ...} (else a flat state dict)
    accepts_flat: ClassVar[bool] = False        # import also reads a flat state dict
    rules: ClassVar[tuple[Rule, ...]] = ()
    signature: ClassVar[tuple[str, ...]] = ()   # reference names (after the prefix) that identify the format
    not_in_file: ClassVar[tuple[str, ...]] = TOOLKIT_ONLY  # toolkit prefixes the file lacks: kept as initialised

    # ------------------------------------------------------------------ reading
    def unwrap(self, payload: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """torch.load result -> (state dict without the prefix, the other top-level entries). LayoutError when
        the layout is not this format's."""
        if not isinstance(payload, dict):
            raise LayoutError(f"holds a {type(payload).__name__}, not a dict")
        if isinstance(payload.get("model"), dict):
            state, meta = payload["model"], {k: v for k, v in payload.items() if k != "model"}
        elif self.accepts_flat or not self.wrapped:
            state, meta = payload, {}
        else:
            raise LayoutError(f"no 'model' entry (top-level keys: {name_list(sorted(map(str, payload)))})")
        tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
        others = sorted(str(k) for k in state if k not in tensors and k != EXTRAS_KEY)
        if others:
            raise LayoutError(f"entries that are not tensors: {name_list(others)}")
        if self.prefix:
            bare = [k for k in tensors if not k.startswith(self.prefix)]
            if bare and len(bare) < len(tensors):
                raise LayoutError(f"some keys lack the {self.prefix!r} prefix: {name_list(bare)}")
            tensors = {k[len(self.prefix):] if k.startswith(self.prefix) else k: v for k, v in tensors.items()}
        if EXTRAS_KEY in state:
            meta[EXTRAS_KEY] = state[EXTRAS_KEY]
        return tensors, meta

    def matches(self, tensors: dict[str, Tensor]) -> bool:
        """Whether a state dict (prefix removed) is this format's (auto-detection)."""
        return all(s in tensors for s in self.signature)

    # ------------------------------------------------------------------ hooks
    def overrides(self, tensors: dict[str, Tensor]) -> list[str]:
        """Config overrides (after experiment=...) that the tensors' shapes determine."""
        return []

    def before_import(self, tensors: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
        """Reference state -> reference state the rules map one to one (folds, copies); notes what it did."""
        return tensors

    def after_export(self, tensors: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
        """Mapped reference state -> the complete state the reference loader needs (synthesised tensors)."""
        return tensors

    def check_model(self, model: Any) -> None:
        """ValueError when `model` (a loaded run) cannot be written in this format."""
        if model.cfg.method.name != self.method:
            raise ValueError(f"format {self.name!r} holds method {self.method!r}; the run's method is "
                             f"{model.cfg.method.name!r}")

    def file_fields(self, model: Any, epoch: int) -> dict[str, Any]:
        """Top-level entries beside "model" in an exported file of a run trained `epoch` epochs."""
        return {"epoch": epoch}

    def check_name(self, path: str) -> None:
        """ValueError when the reference loader would misread a file of this name."""

    # ------------------------------------------------------------------ mapping
    def _rule(self, name: str, side: str) -> Rule | None:
        found = [r for r in self.rules if r.matches(name, side)]
        return max(found, key=lambda r: len(r.reference if side == "reference" else r.toolkit)) if found else None

    def to_toolkit(self, tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str], list[str], list[str]]:
        """Reference state -> (toolkit state, toolkit name -> reference name, unknown reference names, dropped
        reference names)."""
        out, origin, unknown, dropped = {}, {}, [], []
        for name, t in tensors.items():
            rule = self._rule(name, "reference")
            if rule is None:
                unknown.append(name)
            elif rule.toolkit is None:
                dropped.append(name)
            else:
                new = rule.toolkit + name[len(rule.reference):] if is_prefix(rule.reference) else rule.toolkit
                out[new], origin[new] = (rule.to_toolkit(t) if rule.to_toolkit else t), name
        return out, origin, unknown, dropped

    def reference_name(self, toolkit_name: str) -> str:
        """The file's name of a toolkit tensor (the toolkit name when no rule covers it)."""
        rule = self._rule(toolkit_name, "toolkit")
        if rule is None:
            return toolkit_name
        return rule.reference + toolkit_name[len(rule.toolkit):] if is_prefix(rule.toolkit) else rule.reference

    def to_reference(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Toolkit state (without `not_in_file`) -> reference state; ValueError naming tensors with no rule."""
        out, unmapped = {}, []
        for name, t in state.items():
            if name.startswith(self.not_in_file):
                continue
            rule = self._rule(name, "toolkit")
            if rule is None:
                unmapped.append(name)
                continue
            out[self.reference_name(name)] = (rule.to_reference(t) if rule.to_reference else t).detach().to("cpu", copy=True)
        if unmapped:
            raise ValueError(f"format {self.name!r} has no place for the run's tensors {name_list(unmapped)}")
        return out


FORMATS: dict[str, CheckpointFormat] = {}


def register_format(cls: type[CheckpointFormat]) -> type[CheckpointFormat]:
    if cls.name in FORMATS:
        raise ValueError(f"checkpoint format {cls.name!r} registered twice")
    FORMATS[cls.name] = cls()
    return cls


def _discover() -> None:
    import importlib
    import pkgutil

    import ssl_eq.checkpoints as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "convert", "commands"):
            importlib.import_module(f"ssl_eq.checkpoints.{info.name}")


def get_format(name: str) -> CheckpointFormat:
    _discover()
    if name not in FORMATS:
        raise ValueError(f"--format: unknown checkpoint format {name!r}; valid: {sorted(FORMATS)}")
    return FORMATS[name]


def available_formats() -> list[str]:
    _discover()
    return sorted(FORMATS)


def zeros_like_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """{name: shape} -> zero float32 tensors (tensors a reference loader needs but never uses)."""
    return {k: torch.zeros(s) for k, s in shapes.items()}
