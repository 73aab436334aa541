"""Per-object sums behind the headline probe metrics, stored in probe.json so a report can resample val objects.

Every headline number (top-1, both R² and their mean baselines, the geodesic error, Hit@1) is a ratio of sums
over the val examples; keeping those sums per val object lets `ssl_eq.reports.stats` recompute the number for
any reweighting of the objects (a bootstrap over objects) without the predictions. One entry is
``{"kind": ..., "objects": [object id, ...], <sums>: [per object ...]}``:

- "accuracy": ``n`` examples and ``hits`` correct ones per object (top-1, Hit@1);
- "regression": ``n`` examples and, per output k, ``sum_y`` Σy, ``sum_y2`` Σy², ``ss_res`` Σ(y−ŷ)²,
  ``ss_base`` Σ(y−m)² (m: the training-mean prediction), ``geodesic_sum`` Σ geodesic error (°); ``varying`` the
  outputs that vary over all val targets (`metrics.varying_outputs`, fixed under resampling).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_eq.probes import metrics as M


def _by_object(values: Tensor, objects: Tensor) -> tuple[list[int], Tensor]:
    """(N, ...) values and (N,) object ids -> (sorted unique ids, (K, ...) float64 sums per object)."""
    ids, inverse = torch.unique(objects, return_inverse=True)
    sums = torch.zeros((len(ids), *values.shape[1:]), dtype=torch.float64)
    sums.index_add_(0, inverse, values.double())
    return [int(i) for i in ids], sums


def accuracy(correct: Tensor, objects: Tensor) -> dict[str, Any]:
    """(N,) bool correct and (N,) object ids -> an "accuracy" entry."""
    ids, hits = _by_object(correct.double(), objects)
    _, n = _by_object(torch.ones_like(correct, dtype=torch.float64), objects)
    return {"kind": "accuracy", "objects": ids, "n": n.tolist(), "hits": hits.tolist()}


def regression(pred: Tensor, target: Tensor, train_mean: Tensor, objects: Tensor) -> dict[str, Any]:
    """(N, K) quaternion predictions and targets, (K,) training-mean prediction, (N,) object ids -> a
    "regression" entry (with the geodesic error of each example)."""
    y, p = target.double(), pred.double()
    columns = torch.cat([y, y ** 2, (y - p) ** 2, (y - train_mean.double()) ** 2,
                         M.geodesic_error_deg(p, y)[:, None], torch.ones_like(y[:, :1])], 1)
    ids, sums = _by_object(columns, objects)
    k = y.shape[1]
    part = lambda i: sums[:, i * k:(i + 1) * k].tolist()  # noqa: E731
    return {"kind": "regression", "objects": ids, "n": sums[:, -1].tolist(), "sum_y": part(0), "sum_y2": part(1),
            "ss_res": part(2), "ss_base": part(3), "geodesic_sum": sums[:, -2].tolist(),
            "varying": M.varying_outputs(target).tolist()}
