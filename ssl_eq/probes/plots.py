"""Probe figures (matplotlib, Agg backend, written atomically as PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssl_eq.utils.io import atomic_path  # noqa: E402

DPI = 110
MAX_SCATTER_POINTS = 4000
MAX_TICK_LABELS = 30


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def angle_scatter(series: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
                  label: str = "rotation angle (deg)") -> Path:
    """One panel per series name: predicted (N,) vs true (N,) values with the y = x diagonal."""
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (name, (true, pred)) in zip(axes[0], series.items()):
        keep = rng.permutation(len(true))[:MAX_SCATTER_POINTS]
        ax.scatter(true[keep], pred[keep], s=6, alpha=0.5)
        lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set(title=name, xlabel=f"true {label}", ylabel=f"predicted {label}")
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title)
    return _save(fig, path)


def per_class_bars(acc: dict[str, np.ndarray], class_names: list[str], path: Path, title: str) -> Path:
    """Grouped bars: accuracy (%) per class (C,) for each representation part."""
    c = len(class_names)
    width = 0.8 / max(len(acc), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * c * len(acc) + 2), 4))
    for i, (name, values) in enumerate(acc.items()):
        ax.bar(np.arange(c) + (i - (len(acc) - 1) / 2) * width, np.nan_to_num(values), width, label=name)
    ax.set_xticks(np.arange(c))
    ax.set_xticklabels(class_names if c <= MAX_TICK_LABELS else [], rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="val accuracy (%)", ylim=(0, 100), title=title)
    ax.legend()
    return _save(fig, path)


def confusion_plot(confusion: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """(C, C) counts (rows = true) drawn row-normalised, so each row shows where that class goes."""
    rows = confusion.sum(1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    c = len(class_names)
    size = min(4 + 0.3 * c, 14)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ticks = class_names if c <= MAX_TICK_LABELS else []
    ax.set_xticks(range(len(ticks)))
    ax.set_xticklabels(ticks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(ticks)))
    ax.set_yticklabels(ticks, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return _save(fig, path)
