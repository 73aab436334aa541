"""Bootstrap intervals over val objects, paired gaps, seed groups and verdicts (ssl_eq.reports.stats)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_eq.probes import metrics as M
from ssl_eq.probes import per_object as PO
from ssl_eq.reports import stats as S


def _regression_entry(seed: int, objects: int = 6, per_object: int = 5, noise: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(objects * per_object, 4, generator=g)
    target[:, 1] = 0.3  # a constant output: excluded from the varying R²
    pred = target + noise * torch.randn(target.shape, generator=g)
    mean = torch.randn(4, generator=g)
    ids = torch.arange(100, 100 + objects).repeat_interleave(per_object)
    return PO.regression(pred, target, mean, ids), pred, target, mean


def test_point_values_equal_the_probe_metrics():
    entry, pred, target, mean = _regression_entry(0)
    point = {m: S.bootstrap([(entry, m)]).value for m in S.METRICS if m not in ("top1", "hit@1")}
    assert point["r2_pooled"] == pytest.approx(float(M.r2_pooled(pred, target)), abs=1e-6)
    assert point["r2_uniform_varying"] == pytest.approx(float(M.r2_uniform_varying(pred, target)), abs=1e-6)
    base = mean.expand_as(target)
    assert point["r2_pooled_mean_baseline"] == pytest.approx(float(M.r2_pooled(base, target)), abs=1e-6)
    assert point["r2_uniform_varying_mean_baseline"] == pytest.approx(float(M.r2_uniform_varying(base, target)),
                                                                      abs=1e-6)
    assert point["geodesic_deg"] == pytest.approx(float(M.geodesic_error_deg(pred, target).double().mean()),
                                                  abs=1e-4)
    acc = PO.accuracy(torch.tensor([True, False, True, True]), torch.tensor([3, 3, 7, 9]))
    assert acc["objects"] == [3, 7, 9] and acc["n"] == [2, 1, 1] and acc["hits"] == [1, 1, 1]
    assert S.bootstrap([(acc, "top1")]).value == pytest.approx(75.0)


def test_bootstrap_interval_of_two_objects_by_hand():
    """Objects with accuracy 1 and 0: a resample holds both (mean 0.5, p 1/2), twice the first (1, p 1/4) or
    twice the second (0, p 1/4): the 95 % interval is [0, 1], the point value 0.5."""
    entry = {"kind": "accuracy", "objects": [1, 2], "n": [1, 1], "hits": [1, 0]}
    iv = S.bootstrap([(entry, "hit@1")])
    assert (iv.value, iv.lo, iv.hi, iv.objects) == (0.5, 0.0, 1.0, 2)
    w = S.resample_weights(2, draws=4000)
    share = np.mean(w[1:, 0] == 1)  # one of each object
    assert share == pytest.approx(0.5, abs=0.03) and (w.sum(1) == 2).all()
    # identical objects: no spread; the seed makes reports reproducible
    same = {"kind": "accuracy", "objects": [1, 2, 3], "n": [4, 4, 4], "hits": [1, 1, 1]}
    assert S.bootstrap([(same, "top1")]) == S.Interval(25.0, 25.0, 25.0, 3)
    assert S.bootstrap([(entry, "hit@1")]) == S.bootstrap([(entry, "hit@1")])


def test_paired_gap_uses_the_shared_objects_and_cancels_shared_noise():
    """Run b = run a with one more hit on object 2: the paired gap is exactly that hit on every resample that
    holds object 2, so its interval is far narrower than the unpaired spread of each run."""
    a = {"kind": "accuracy", "objects": [1, 2, 3, 4, 5], "n": [4] * 5, "hits": [0, 1, 4, 2, 3]}
    b = {**a, "objects": [1, 2, 3, 4, 5, 6], "n": [4] * 6, "hits": [0, 2, 4, 2, 3, 4]}
    gap = S.paired_gap([(b, "hit@1")], [(a, "hit@1")])
    assert gap.objects == 5 and gap.value == pytest.approx(1 / 20)  # object 6 (only in b) is left out
    assert gap.lo >= 0 and gap.hi <= 0.25 + 1e-12
    alone = S.bootstrap([(a, "hit@1")])
    assert gap.hi - gap.lo < alone.hi - alone.lo


def test_seed_group_mean_std_by_hand():
    assert S.seed_spread([0.2, 0.4]) == (pytest.approx(0.3), pytest.approx(0.1414213562))
    assert S.seed_spread([0.5]) == (0.5, None)
    a = {"kind": "accuracy", "objects": [1, 2], "n": [2, 2], "hits": [2, 0]}
    b = {**a, "hits": [2, 2]}
    iv = S.group_mean([(a, "hit@1"), (b, "hit@1")])
    assert iv.value == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert (iv.lo, iv.hi) == (0.5, 1.0)  # resampled object 2 twice: (0 + 1) / 2; object 1 twice: 1


def test_verdicts_and_three_significant_digits():
    assert S.baseline_verdict(S.Interval(-0.014, -0.05, 0.02, 10)).startswith("not above baseline")
    assert S.baseline_verdict(S.Interval(0.1, 0.02, 0.2, 10)).startswith("above baseline by +0.100 [+0.0200, +0.200]")
    assert "no difference shown" in S.gap_verdict("sie", "vicreg", S.Interval(0.022, -0.01, 0.05, 10))
    assert S.gap_verdict("sie", "vicreg", S.Interval(0.1, 0.05, 0.2, 10)) == "sie − vicreg = +0.100 [+0.0500, +0.200]"
    assert [S.sig3(v) for v in (0.1965, -0.01592, -0.036, 55.5, 123.4, 0.0, None)] == \
        ["0.197", "-0.0159", "-0.0360", "55.5", "123", "0", "–"]
