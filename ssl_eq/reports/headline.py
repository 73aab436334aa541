"""The report's headline: one row per seed group with bootstrap intervals, and the verdicts read from them.

Runs whose config.yaml differ only in `seed` (and their run folder) and that were probed with the same protocol
form a seed group; a group's number is the mean over its seeds, its interval the bootstrap over the val objects
the seeds share (`stats`), and the per-seed values and their std are shown beside it. A run is "above
baseline" only when the interval of (its R² − its mean-prediction baseline) lies above 0; a gap between two
groups is stated only when both are above baseline and the paired interval excludes 0.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ssl_eq.reports import stats as S

CEILING_METHOD = "supervised"
ROTATION_PARTS = ("equi", "full")  # the equivariant part where a method has one, else the full one
NOT_GROUPED = ("seed", "run_dir", "resume_from", "threads")  # config keys that may differ within a seed group


@dataclass(frozen=True)
class Quantity:
    """A headline number: probe, part ("rot": the group's rotation part), per-object metric, probe.json key."""
    label: str
    probe: str
    part: str
    metric: str
    key: str          # probe.json "metrics" key, "{part}" filled in
    definition: str   # probe.json "definitions" suffix


TOP1_INV = Quantity("top-1 inv (%)", "linear", "inv", "top1", "linear/inv/top1", "top1")
TOP1_FULL = Quantity("top-1 full (%)", "linear", "full", "top1", "linear/full/top1", "top1")
R2_POOLED = Quantity("rotation R² pooled", "rotation", "rot", "r2_pooled", "rotation/{part}/r2_pooled", "r2_pooled")
BASE_POOLED = Quantity("its mean baseline", "rotation", "rot", "r2_pooled_mean_baseline",
                       "rotation/r2_pooled_mean_baseline", "r2_pooled_mean_baseline")
R2_VARYING = Quantity("rotation R² uniform (varying outputs)", "rotation", "rot", "r2_uniform_varying",
                      "rotation/{part}/r2_uniform_varying", "r2_uniform_varying")
BASE_VARYING = Quantity("its mean baseline", "rotation", "rot", "r2_uniform_varying_mean_baseline",
                        "rotation/r2_uniform_varying_mean_baseline", "r2_uniform_varying_mean_baseline")
GEODESIC = Quantity("geodesic error (°, lower is better)", "rotation", "rot", "geodesic_deg",
                    "rotation/{part}/geodesic_deg", "geodesic_deg")
HIT1 = Quantity("predictor Hit@1", "predictor", "val", "hit@1", "predictor/val/hit@1", "hit@k")
BASELINES = {R2_POOLED: BASE_POOLED, R2_VARYING: BASE_VARYING}


@dataclass
class Group:
    """Runs differing only in their seed (one run: a group of one)."""
    runs: list[Any]  # report.RunInfo

    @property
    def name(self) -> str:
        if len(self.runs) == 1:
            return self.runs[0].name
        stems = {re.sub(rf"[_-]s(eed)?{r.seed}$", "", r.path.name) for r in self.runs}  # demo: <method>_s<k>
        stale = " (stale)" if any(r.stale for r in self.runs) else ""
        if len(stems) == 1:
            return f"{stems.pop()} ({len(self.runs)} seeds){stale}"
        return f"{self.runs[0].name} (+{len(self.runs) - 1} seeds)"

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def is_ceiling(self) -> bool:
        return self.method == CEILING_METHOD

    def part(self) -> str | None:
        """The rotation part read in every run of the group (equi where all have one, else full)."""
        return next((p for p in ROTATION_PARTS
                     if all(_value(r, R2_POOLED, p) is not None for r in self.runs)), None)

    def values(self, q: Quantity) -> list[float] | None:
        """Per-seed values of q from probe.json, None unless every seed has it."""
        part = self.part() if q.part == "rot" else q.part
        vals = [_value(r, q, part) for r in self.runs] if part else [None]
        return None if any(v is None for v in vals) else vals

    def terms(self, q: Quantity) -> list[S.Term] | None:
        """Per-object entries of q for every seed, None unless every seed's probe.json has them."""
        part = self.part() if q.part == "rot" else q.part
        entries = [r.probe.get("probes", {}).get(q.probe, {}).get("per_object", {}).get(part)
                   for r in self.runs] if part else [None]
        return None if any(e is None for e in entries) else [(e, q.metric) for e in entries]

    def interval(self, q: Quantity) -> S.Interval | None:
        terms = self.terms(q)
        return S.group_mean(terms) if terms else None

    def baseline_gap(self, q: Quantity) -> S.Interval | None:
        terms, base = self.terms(q), self.terms(BASELINES[q])
        return S.paired_gap(terms, base) if terms and base else None


def _value(run: Any, q: Quantity, part: str) -> float | None:
    return run.probe.get("metrics", {}).get(q.key.format(part=part))


def _without_run_dir(value: Any, run_dir: str) -> Any:
    """value with every string that lies under `run_dir` (e.g. the loggers' save_dir, interpolated from
    ${run_dir}) re-rooted at "${run_dir}", so that two seeds' configs compare equal."""
    if isinstance(value, dict):
        return {k: _without_run_dir(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_run_dir(v, run_dir) for v in value]
    if run_dir and isinstance(value, str) and (value == run_dir or value.startswith(run_dir.rstrip("/") + "/")):
        return "${run_dir}" + value[len(run_dir.rstrip("/")):]
    return value


def _group_key(run: Any) -> str:
    config = run.config or {}
    cfg = {k: _without_run_dir(v, str(config.get("run_dir") or ""))
           for k, v in config.items() if k not in NOT_GROUPED}
    if not cfg:
        return f"run:{run.path}"  # no config: a group of its own
    return json.dumps([cfg, run.probe.get("protocol")], sort_keys=True, default=str)


def seed_groups(runs: list[Any]) -> list[Group]:
    """Runs grouped by config minus `seed` / `run_dir` (and the paths under run_dir) and by probe protocol, in
    first-seen order; the supervised ceiling groups last."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(_group_key(r), Group([])).runs.append(r)
    return sorted(groups.values(), key=lambda g: g.is_ceiling)


def cell(group: Group, q: Quantity, per_seed: bool = True) -> str:
    """"mean [lo, hi]" (interval over val objects), with `per_seed` "± std (seeds: a, b)" for several seeds;
    "–" if missing."""
    vals = group.values(q)
    if vals is None:
        return S.sig3(None)
    mean, std = S.seed_spread(vals)
    iv = group.interval(q)
    text = S.fmt_interval(iv) if iv else f"{S.sig3(mean)} (no interval)"
    if std is not None and per_seed:
        text += f" ± {S.sig3(std)} sd (seeds: {', '.join(S.sig3(v) for v in vals)})"
    return text


def verdict(group: Group, q: Quantity = R2_POOLED) -> str:
    if group.values(q) is None:
        return "no rotation probe"
    if group.values(BASELINES[q]) is None:
        return "no baseline recorded"
    return S.baseline_verdict(group.baseline_gap(q))


def above_baseline(group: Group, q: Quantity = R2_POOLED) -> bool:
    gap = group.baseline_gap(q)
    return gap is not None and gap.lo > 0


def reading(groups: list[Group], q: Quantity = R2_POOLED) -> list[str]:
    """Verdict lines: each self-supervised group against its baseline, the gap between the best equivariant-part
    group and the best full-representation group (only when both are above baseline), and the distance of the
    best self-supervised group to the supervised ceiling."""
    rated = [g for g in groups if g.values(q) is not None]
    if not rated:
        return ["No relative-rotation probe results in these runs."]
    lines = [f"{g.name} ({g.method}, {g.part()}): {verdict(g, q)}" for g in rated]
    ssl = [g for g in rated if not g.is_ceiling]
    best = {p: max((g for g in ssl if g.part() == p), key=lambda g: S.seed_spread(g.values(q))[0], default=None)
            for p in ROTATION_PARTS}
    eq, full = best["equi"], best["full"]
    if eq is not None and full is not None:
        weak = [g.name for g in (eq, full) if not above_baseline(g, q)]
        if weak:
            lines.append(f"gap {eq.name} (equi) vs {full.name} (full): not assessed, {' and '.join(weak)} "
                         f"{'is' if len(weak) == 1 else 'are'} not above baseline")
        else:
            terms_a, terms_b = eq.terms(q), full.terms(q)
            gap = S.paired_gap(terms_a, terms_b) if terms_a and terms_b else None
            lines.append(S.gap_verdict(f"{eq.name} (equi)", f"{full.name} (full)", gap))
    ceilings = [g for g in rated if g.is_ceiling]
    if ceilings and ssl:
        ceiling = max(ceilings, key=lambda g: S.seed_spread(g.values(q))[0])
        top = max(ssl, key=lambda g: S.seed_spread(g.values(q))[0])
        terms_a, terms_b = ceiling.terms(q), top.terms(q)
        gap = S.paired_gap(terms_a, terms_b) if terms_a and terms_b else None
        lines.append(S.gap_verdict(f"supervised ceiling {ceiling.name}", top.name, gap))
    elif not ceilings:
        lines.append("no supervised ceiling run in this report")
    return lines
