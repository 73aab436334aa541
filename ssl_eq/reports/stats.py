"""Uncertainty of the report's headline numbers: bootstrap over val objects, paired gaps, seed groups, verdicts.

A headline number is recomputed from the per-object sums probe.json stores (`ssl_eq.probes.per_object`) for
`DRAWS` resamplings of the val objects (with replacement, a fixed `SEED`: reports are reproducible). Every
quantity that combines several runs (a seed group's mean, the gap between two groups, a run minus its
baseline) is computed on the *same* resampled objects (the objects all of them share): a paired bootstrap.
The interval is the 2.5 / 97.5 percentile of the resampled values (95 %).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

DRAWS = 2000
SEED = 0
LEVEL = 0.95
Term = tuple[dict[str, Any], str]  # (per-object entry of probe.json, metric name of METRICS)


def _acc(e: dict, w: np.ndarray) -> np.ndarray:
    return (w @ np.asarray(e["hits"])) / (w @ np.asarray(e["n"]))


def _r2_pooled(residual: str) -> Callable[[dict, np.ndarray], np.ndarray]:
    """Pooled R² (`metrics.r2_pooled`) from sums: SS_tot = Σy² − (Σy)² / (N·K) over all outputs."""
    def fn(e: dict, w: np.ndarray) -> np.ndarray:
        k = len(e["varying"])
        count = (w @ np.asarray(e["n"])) * k
        s1, s2 = w @ np.asarray(e["sum_y"]).sum(1), w @ np.asarray(e["sum_y2"]).sum(1)
        return 1.0 - (w @ np.asarray(e[residual]).sum(1)) / (s2 - s1 ** 2 / count)
    return fn


def _r2_varying(residual: str) -> Callable[[dict, np.ndarray], np.ndarray]:
    """Uniform R² over the varying outputs (`metrics.r2_uniform_varying`): mean over them of 1 − SS_res / SS_tot."""
    def fn(e: dict, w: np.ndarray) -> np.ndarray:
        keep = np.asarray(e["varying"], dtype=bool)
        count = (w @ np.asarray(e["n"]))[:, None]
        s1, s2 = w @ np.asarray(e["sum_y"])[:, keep], w @ np.asarray(e["sum_y2"])[:, keep]
        return (1.0 - (w @ np.asarray(e[residual])[:, keep]) / (s2 - s1 ** 2 / count)).mean(1)
    return fn


METRICS: dict[str, Callable[[dict, np.ndarray], np.ndarray]] = {
    "top1": lambda e, w: 100.0 * _acc(e, w),
    "hit@1": _acc,
    "r2_pooled": _r2_pooled("ss_res"),
    "r2_pooled_mean_baseline": _r2_pooled("ss_base"),
    "r2_uniform_varying": _r2_varying("ss_res"),
    "r2_uniform_varying_mean_baseline": _r2_varying("ss_base"),
    "geodesic_deg": lambda e, w: (w @ np.asarray(e["geodesic_sum"])) / (w @ np.asarray(e["n"])),
}


@dataclass(frozen=True)
class Interval:
    """A point value (on all shared objects) with its bootstrap interval [lo, hi] over `objects` val objects."""
    value: float
    lo: float
    hi: float
    objects: int

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def resample_weights(n: int, draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    """(1 + draws, n) object weights: row 0 all ones (the point value), then counts of n objects drawn with
    replacement."""
    idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    counts = np.zeros((draws, n))
    np.add.at(counts, (np.arange(draws)[:, None], idx), 1.0)
    return np.vstack([np.ones((1, n)), counts])


def restrict(entry: dict[str, Any], ids: Sequence[int]) -> dict[str, Any]:
    """The per-object entry with its per-object lists reordered to the object ids `ids` (all present)."""
    where = {o: i for i, o in enumerate(entry["objects"])}
    rows = [where[o] for o in ids]
    return {k: ([v[i] for i in rows] if isinstance(v, list) and k not in ("varying",) else v)
            for k, v in entry.items()} | {"objects": list(ids)}


def bootstrap(terms: list[Term], combine: Callable[[np.ndarray], np.ndarray] = lambda v: v[0],
              draws: int = DRAWS, seed: int = SEED) -> Interval | None:
    """Interval of `combine` over the terms' metrics, (T, R) -> (R,), every term on the same resampled objects
    (those all terms share); None when they share none."""
    shared = set.intersection(*(set(e["objects"]) for e, _ in terms))
    if not shared:
        return None
    ids = sorted(shared)
    w = resample_weights(len(ids), draws, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = combine(np.stack([METRICS[m](restrict(e, ids), w) for e, m in terms]))
    lo, hi = np.nanpercentile(values[1:], [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Interval(float(values[0]), float(lo), float(hi), len(ids))


def group_mean(terms: list[Term]) -> Interval | None:
    """Mean over a seed group's runs, resampling the objects they share."""
    return bootstrap(terms, lambda v: v.mean(0))


def paired_gap(a: list[Term], b: list[Term]) -> Interval | None:
    """mean(a) − mean(b) (e.g. two seed groups, or a run and its baseline) on the same resampled objects."""
    return bootstrap([*a, *b], lambda v: v[:len(a)].mean(0) - v[len(a):].mean(0))


def seed_spread(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation (ddof 1); None for a single seed)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def sig3(value: float | None) -> str:
    """Three significant digits, no exponent for the magnitudes a report shows ("–" for None / NaN)."""
    if value is None or not np.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    digits = max(0, 2 - int(np.floor(np.log10(abs(value)))))
    text = f"{value:.{digits}f}"
    return "0" if float(text) == 0 else text


def fmt_interval(iv: Interval | None, signed: bool = False) -> str:
    """"0.197 [0.151, 0.240]" (signed: "+0.022 [−0.010, +0.051]")."""
    if iv is None:
        return "–"
    f = (lambda x: ("+" if x > 0 else "") + sig3(x)) if signed else sig3
    return f"{f(iv.value)} [{f(iv.lo)}, {f(iv.hi)}]"


def baseline_verdict(gap: Interval | None) -> str:
    """Verdict of (R² − its mean baseline)'s interval: above the baseline only when the interval is above 0."""
    if gap is None:
        return "no interval (probe.json has no per-object values; re-run `ssl-eq probe`)"
    if gap.lo > 0:
        return f"above baseline by {fmt_interval(gap, signed=True)}"
    return f"not above baseline (R² − baseline {fmt_interval(gap, signed=True)})"


def gap_verdict(a: str, b: str, gap: Interval | None) -> str:
    """"a − b: +x [lo, hi]" when the interval excludes 0, else "no difference shown"."""
    if gap is None:
        return f"{a} vs {b}: no interval (no per-object values on shared objects)"
    if gap.excludes_zero():
        return f"{a} − {b} = {fmt_interval(gap, signed=True)}"
    return f"{a} vs {b}: no difference shown ({a} − {b} {fmt_interval(gap, signed=True)})"
