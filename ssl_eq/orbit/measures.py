"""Per-frame measures along orbits, as pure functions of tensors shaped (N objects, S frames, ...).

`DEFINITIONS` holds the text written into orbit.json; `summarise` and `area_under_curve` reduce them.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ssl_eq.probes.metrics import geodesic_error_deg, retrieval_ranks

DEFINITIONS: dict[str, str] = {
    "invariance": "‖z_t − z_ref‖ / d̄: distance of frame t's invariant representation to the reference frame's "
                  "(the object's view 0), d̄ = mean distance between different objects' invariant representations "
                  "at the same frame (0 = invariant, 1 = as different as another object)",
    "invariance_to_mean": "‖z_t − mean_t z‖ / d̄: distance to the orbit's mean invariant representation, same d̄",
    "equivariance": "‖n(p_t) − n(e_t)‖², n = L2 normalisation: the predictor's output p_t from the reference "
                    "frame's equivariant embedding and the action reference → t vs frame t's embedding e_t "
                    "(the probes' pred_mse, in [0, 4])",
    "rank": "rank (1 = best, by cosine) of frame t's embedding among all frames of the orbit for the query p_t",
    "hit1": "Hit@1 along the orbit: fraction of objects whose p_t is nearest (cosine) to frame t among the orbit",
    "probe": "geodesic error (degrees) of the trained relative-rotation probe's prediction for (reference, t) vs "
             "the true R_ref⁻¹R_t",
    "pose_error": "the method's own pose error of the transformation applied without a predictor "
                  "(model.pose_error, capsule methods)",
}


def reference_distance(x: Tensor, reference: int) -> Tensor:
    """(N, S, E) -> (N, S) L2 distance of every frame to frame `reference` of the same orbit."""
    return (x - x[:, reference:reference + 1]).norm(dim=-1)


def mean_distance(x: Tensor) -> Tensor:
    """(N, S, E) -> (N, S) L2 distance of every frame to its orbit's mean."""
    return (x - x.mean(1, keepdim=True)).norm(dim=-1)


def inter_object_distance(x: Tensor) -> Tensor:
    """(N, S, E), N >= 2 -> () mean L2 distance between different objects at the same frame."""
    n = x.shape[0]
    d = torch.cdist(x.transpose(0, 1).double(), x.transpose(0, 1).double())  # (S, N, N)
    return (d.sum() / (d.shape[0] * n * (n - 1))).to(x.dtype)


def normalise(dist: Tensor, scale: Tensor) -> Tensor:
    """dist (...) / scale; where scale is 0 (all objects coincide), 0 stays 0 and anything else is NaN."""
    if scale > 0:
        return dist / scale
    return torch.where(dist == 0, torch.zeros_like(dist), torch.full_like(dist, float("nan")))


def invariance_curves(inv: Tensor, reference: int) -> tuple[dict[str, Tensor], float]:
    """(N, S, Di) invariant representations -> ({"invariance", "invariance_to_mean"}: (N, S), d̄)."""
    scale = inter_object_distance(inv)
    return {"invariance": normalise(reference_distance(inv, reference), scale),
            "invariance_to_mean": normalise(mean_distance(inv), scale)}, float(scale)


def predictor_curves(pred: Tensor, emb: Tensor) -> dict[str, Tensor]:
    """pred, emb (N, S, E): p_t and e_t -> {"equivariance", "rank", "hit1"}: (N, S)."""
    n, s, e = emb.shape
    err = (torch.nn.functional.normalize(pred, dim=-1) - torch.nn.functional.normalize(emb, dim=-1)).pow(2).sum(-1)
    ranks = retrieval_ranks(pred.reshape(n * s, e), emb.repeat_interleave(s, 0), torch.arange(s).repeat(n))
    ranks = ranks.reshape(n, s).to(pred.dtype)
    return {"equivariance": err, "rank": ranks, "hit1": (ranks == 1).to(pred.dtype)}


def probe_curve(pred_quat: Tensor, true_quat: Tensor) -> Tensor:
    """(N, S, 4) predicted (any norm) and true relative rotations -> (N, S) geodesic error in degrees."""
    return geodesic_error_deg(pred_quat.flatten(0, 1), true_quat.flatten(0, 1)).reshape(pred_quat.shape[:2])


def pca_2d(x: Tensor) -> Tensor:
    """(N, S, E) -> (N, S, 2): each orbit centred on its own mean (so the orbits' shapes overlay instead of
    sitting apart by object), then projected on the two leading principal components of all N·S points."""
    flat = (x - x.mean(1, keepdim=True)).reshape(-1, x.shape[-1]).double()
    if flat.shape[1] == 0:
        return x.new_zeros(x.shape[:2] + (2,))
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    coords = flat @ v[:2].T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 2 - coords.shape[1])], 1)
    return coords.to(x.dtype).reshape(x.shape[:2] + (2,))


def summarise(values: np.ndarray) -> dict[str, list]:
    """(N, S) per-object values -> {"mean", "q25", "q75"} over objects, each (S,), NaN-aware."""
    with warnings.catch_warnings():  # an all-NaN column (collapsed model) gives NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"mean": np.nanmean(values, 0).tolist(), "q25": np.nanquantile(values, 0.25, 0).tolist(),
                "q75": np.nanquantile(values, 0.75, 0).tolist()}


def area_under_curve(curve: np.ndarray, offsets: np.ndarray, closed: bool, period: float) -> float:
    """Trapezoidal area under an (S,) curve over the orbit parameter, divided by the parameter span, i.e. the
    curve's mean over the orbit (a closed orbit wraps from its last frame back to the first)."""
    x, y = np.asarray(offsets, float), np.asarray(curve, float)
    if closed:
        x, y = np.append(x, x[0] + period), np.append(y, y[0])
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))
