"""Orbit figures (matplotlib, Agg, PNG written atomically). Each takes one orbit of one or more runs:
`results` maps a run name to its orbit record (the orbit.json entry: parameter, curves, pca, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssl_eq.utils.io import atomic_path  # noqa: E402

DPI = 110
PANEL_INCHES = (4.2, 3.2)
MAX_COLUMNS = 3
LINE_STYLES = ("-", "--", ":")
MIN_STRIP_PANELS = 2   # the frame strip is at least this many panels wide
POLAR_TICKS = 8
STRIP_FRAMES = 8
BAND_ALPHA = 0.25
#: curves drawn (in this order; probe_<part> curves go where "probe" is), with their titles (direction of better)
PLOTTED = {"invariance": "invariance error (1 = another object) ↓ better",
           "equivariance": "predictor error ‖n(p)−n(e)‖² ↓ better",
           "hit1": "predictor Hit@1 along the orbit ↑ better", "probe": "relative-rotation probe error (deg) ↓ better",
           "pose_error": "capsule pose error ↓ better"}
FIXED_LIMITS = {"hit1": (0.0, 1.05), "probe": (0.0, 180.0)}
PROBE_CHANCE_DEG = 90.0  # the reference level of an uninformed rotation probe
OBJECT_ALPHA = 0.3


def chance_lines(key: str, record: dict[str, Any]) -> list[tuple[float, str]]:
    """(y, label) reference lines of a panel: what an uninformed model scores."""
    return {"invariance": [(1.0, "another object")], "hit1": [(1.0 / record["steps"], "chance 1/steps")],
            "probe": [(PROBE_CHANCE_DEG, f"chance ≈{PROBE_CHANCE_DEG:.0f}°")]}.get(key, [])


def shared_limits(results: dict[str, dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Panel key -> (ymin, ymax) over every run's curves (per-object values included), so that the figures of
    one orbit are comparable across runs."""
    limits = {}
    for key, curves in panels(results):
        if key in FIXED_LIMITS:
            limits[key] = FIXED_LIMITS[key]
            continue
        values = np.concatenate([np.ravel(np.asarray(r["curves"][c][f], float)) for r in results.values()
                                 for c in curves if c in r["curves"] for f in ("mean", "q25", "q75", "per_object")
                                 if f in r["curves"][c]])
        values = values[np.isfinite(values)]
        hi = float(values.max()) if values.size else 1.0
        if key == "invariance":
            hi = max(hi, 1.0)  # keep the "another object" level in view
        limits[key] = (min(0.0, float(values.min()) if values.size else 0.0), hi * 1.05 or 1.0)
    return limits


def frames_sheet(frames: np.ndarray, path: Path) -> Path:
    """(N, S, H, W, 3) uint8 frames -> one PNG, a row of S frames per object (no gaps: frame (n, s) sits at
    x = s·W, y = n·H; the explorer crops it)."""
    from PIL import Image

    n, s, h, w, _ = frames.shape
    sheet = frames.transpose(0, 2, 1, 3, 4).reshape(n * h, s * w, 3)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(sheet)).save(tmp, format="png")
    return Path(path)


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return Path(path)


def panels(results: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(PLOTTED key, curve names) of each panel: one per measure any run has; the probe parts share a panel."""
    names = {c for r in results.values() for c in r["curves"]}
    out = []
    for key in PLOTTED:
        members = sorted(n for n in names if n == key or (key == "probe" and n.startswith("probe_")))
        if members:
            out.append((key, members))
    return out


def _series(results: dict[str, dict[str, Any]], curves: list[str]):
    """(run name, record, curve, legend label, line style) of every line of one panel."""
    for name, record in results.items():
        for k, curve in enumerate(curves):
            if curve in record["curves"]:
                label = name if len(curves) == 1 else f"{name}, {curve.removeprefix('probe_')} part"
                yield name, record, curve, label, LINE_STYLES[k % len(LINE_STYLES)]


def _x(record: dict[str, Any]) -> np.ndarray:
    return np.asarray(record["parameter"]) * record["scale"]


def _colours(results: dict[str, Any]) -> dict[str, str]:
    """One colour per run, the same in every panel."""
    return {name: f"C{i % 10}" for i, name in enumerate(results)}


def _grid(n: int) -> tuple[int, int]:
    cols = min(max(n, 1), MAX_COLUMNS)
    return (max(n, 1) + cols - 1) // cols, cols


def _strip(frames: np.ndarray, record: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """(S, H, W, 3) frames of one object -> one row image of up to STRIP_FRAMES evenly spaced frames, indices."""
    s = len(frames)
    idx = sorted(set(np.linspace(0, s - 1, min(STRIP_FRAMES, s)).round().astype(int).tolist())
                 | {record["reference_index"]})
    gap = np.full((frames.shape[1], max(frames.shape[2] // 16, 1), 3), 255, np.uint8)
    row = np.concatenate([p for i in idx for p in (frames[i], gap)][:-1], axis=1)
    return row, idx


def curves_figure(results: dict[str, dict[str, Any]], frames: np.ndarray | None, path: Path, title: str,
                  limits: dict[str, tuple[float, float]] | None = None) -> Path:
    """Error vs orbit parameter, one panel per measure (mean over objects, 25–75 % band, for one run also each
    object's curve; one colour per run; training range shaded, chance levels dashed; y limits `limits` per
    panel, default `shared_limits`), above a strip of the first object's rendered frames (S, H, W, 3) uint8
    when given."""
    groups = panels(results)
    colour = _colours(results)
    limits = limits or shared_limits(results)
    rows, cols = _grid(len(groups))
    strip_rows = 0 if frames is None else 1
    fig = plt.figure(figsize=(PANEL_INCHES[0] * max(cols, MIN_STRIP_PANELS), PANEL_INCHES[1] * (rows + 0.8 * strip_rows)))
    grid = fig.add_gridspec(rows + strip_rows, cols, height_ratios=[3] * rows + [2] * strip_rows)
    first = next(iter(results.values()))
    for j, (key, curves) in enumerate(groups):
        ax = fig.add_subplot(grid[j // cols, j % cols])
        for name, record, curve, label, style in _series(results, curves):
            c = record["curves"][curve]
            x = _x(record)
            ax.plot(x, np.asarray(c["mean"], float), marker=".", ls=style, color=colour[name],
                    label=f"{label} (AUC {record['auc'][curve]:.3g})")
            if key != "hit1":  # a 0/1 value per object: its quartiles say nothing
                ax.fill_between(x, np.asarray(c["q25"], float), np.asarray(c["q75"], float), color=colour[name],
                                alpha=BAND_ALPHA, lw=0)
                if len(results) == 1:
                    for obj in np.asarray(c.get("per_object", []), float):
                        ax.plot(x, obj, color=colour[name], lw=0.6, alpha=OBJECT_ALPHA)
        band = first.get("train_band")
        if isinstance(band, list):  # None (NaN after `_nan`): the orbit stays inside the training range
            ax.axvspan(*band, color="tab:green", alpha=0.08, lw=0, label="training range")
        for y, label in chance_lines(key, first):
            ax.axhline(y, color="k", lw=0.8, ls="--", alpha=0.6)
            ax.annotate(label, (1, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7)
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel=f"Δ {first['latent']} ({first['unit']})", title=PLOTTED[key], ylim=limits.get(key))
        ax.title.set_fontsize(10)
        ax.legend(fontsize=7)
    if frames is None:
        fig.suptitle(f"{title}\nmean over {len(first['objects'])} objects, band: 25–75 %")
        fig.tight_layout()
        return _save(fig, path)
    strip_ax = fig.add_subplot(grid[rows, :])
    row, idx = _strip(frames, first)
    strip_ax.imshow(row, interpolation="nearest")
    width = row.shape[1] / len(idx)
    strip_ax.set_xticks([(k + 0.5) * width for k in range(len(idx))])
    strip_ax.set_xticklabels([f"{_x(first)[i]:.3g}" + (" (view 0)" if i == first["reference_index"] else "")
                              for i in idx], fontsize=7)
    strip_ax.set_yticks([])
    strip_ax.set_xlabel(f"frames of {first['objects'][0]} (Δ {first['latent']}, {first['unit']})", fontsize=9)
    fig.suptitle(f"{title}\nmean over {len(first['objects'])} objects, band: 25–75 %")
    fig.tight_layout()
    return _save(fig, path)


def polar_figure(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """NERO-style polar plots: angle = orbit parameter (a whole circle for closed orbits), radius = mean error;
    one curve per run (closed for closed orbits), one panel per measure."""
    groups = panels(results)
    colour = _colours(results)
    rows, cols = _grid(len(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols, (PANEL_INCHES[0] + 1.0) * rows),
                             subplot_kw={"projection": "polar"}, squeeze=False)
    record = next(iter(results.values()))
    ticks = np.arange(POLAR_TICKS) * 2 * np.pi / POLAR_TICKS
    turn = record["polar_period"] * record["scale"]
    tick_labels = [f"{v:.3g}" for v in np.where(ticks <= np.pi, ticks, ticks - 2 * np.pi) / (2 * np.pi) * turn]
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, (key, curves) in zip(axes.flat, groups):
        for name, record, curve, label, style in _series(results, curves):
            theta = 2 * np.pi * np.asarray(record["parameter"]) / record["polar_period"]
            r = np.asarray(record["curves"][curve]["mean"], float)
            if record["closed"]:
                theta, r = np.append(theta, theta[0] + 2 * np.pi), np.append(r, r[0])
            ax.plot(theta, r, label=label, ls=style, color=colour[name])
        ax.set_title(PLOTTED[key], fontsize=9, pad=14)
        ax.set_theta_zero_location("N")
        ax.set_theta_direction(-1)
        ax.set_xticks(ticks)
        ax.set_xticklabels(tick_labels, fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
    legend = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 4), fontsize=8)
    fig.suptitle(f"{title}\nangle: Δ {record['latent']} in {record['unit']} (0 = view 0 at the top, clockwise); "
                 f"radius: mean over objects")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return _save(fig, path)


def pca_figure(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """One panel per run: each object's orbit (centred on its own mean) on the first two principal components of
    the equivariant part, points coloured by the orbit parameter, the reference frame (view 0) starred."""
    fig, axes = plt.subplots(1, len(results), figsize=(PANEL_INCHES[0] * len(results), PANEL_INCHES[0]),
                             squeeze=False)
    for ax, (name, record) in zip(axes[0], results.items()):
        pts = np.asarray(record["pca"]["coords"], float)  # (N, S, 2)
        x = _x(record)
        cmap = "twilight" if record["closed"] else "viridis"
        for obj in pts:
            line = np.vstack([obj, obj[:1]]) if record["closed"] else obj
            ax.plot(line[:, 0], line[:, 1], color="grey", lw=0.7, alpha=0.6)
            sc = ax.scatter(obj[:, 0], obj[:, 1], c=x, cmap=cmap, s=14, zorder=3)
            ref = obj[record["reference_index"]]
            ax.scatter([ref[0]], [ref[1]], marker="*", s=90, c="k", zorder=4)
        fig.colorbar(sc, ax=ax, label=f"Δ {record['latent']} ({record['unit']})")
        ax.set(title=f"{name}: {record['pca']['part']} part", xlabel="PC 1", ylabel="PC 2")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def grid_figure(results: dict[str, dict[str, Any]], path: Path, title: str,
                limits: dict[str, tuple[float, float]] | None = None) -> Path:
    """Two-parameter orbits: one heatmap of the mean over objects per measure (rows) and run (columns), axes the
    two latents' offsets, the reference frame (view 0) starred; colour limits shared within a measure."""
    groups = [(key, curve) for key, curves in panels(results) for curve in curves]
    limits = limits or shared_limits(results)
    fig, axes = plt.subplots(len(groups), len(results), figsize=(PANEL_INCHES[0] * len(results),
                                                                 PANEL_INCHES[1] * len(groups)), squeeze=False)
    for row, (key, curve) in zip(axes, groups):
        for ax, (name, record) in zip(row, results.items()):
            g = record["grid"]
            p1, p2 = (np.asarray(p, float) for p in g["parameters"])
            if curve not in record["curves"]:
                ax.axis("off")
                continue
            values = np.asarray(record["curves"][curve]["mean"], float).reshape(g["shape"])
            im = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis", vmin=limits[key][0],
                           vmax=limits[key][1], extent=(p2[0], p2[-1], p1[0], p1[-1]))
            ax.scatter([p2[g["reference"][1]]], [p1[g["reference"][0]]], marker="*", s=90, c="w", edgecolors="k")
            ax.set(xlabel=f"Δ {g['latents'][1]} ({g['units'][1]})", ylabel=f"Δ {g['latents'][0]} ({g['units'][0]})",
                   title=f"{name}: {curve}")
            ax.title.set_fontsize(9)
            fig.colorbar(im, ax=ax, label=PLOTTED[key], fraction=0.046)
    fig.suptitle(f"{title}\nmean over {len(next(iter(results.values()))['objects'])} objects; ★ view 0")
    fig.tight_layout()
    return _save(fig, path)
