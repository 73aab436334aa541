"""Probe metrics as pure functions of tensors; `DEFINITIONS` holds the text written into probe.json.

Two R² conventions coexist in the literature (docs/reference_numbers.md) and both are reported, named:
`r2_pooled` (EquiCaps, also SIE's evaluation scripts) and `r2_uniform` (seq-JEPA, scikit-learn's
``r2_score(..., multioutput="uniform_average")``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

from ssl_eq.geometry import canonical_quaternion

VARYING_REL_TOL = 1e-6
DEFINITIONS: dict[str, str] = {
    "r2_pooled": "pooled R² (EquiCaps / SIE scripts): 1 − Σ(y−ŷ)² / Σ(y−ȳ)² over all samples and outputs, "
                 "ȳ = one grand mean over all outputs (it credits predicting each output's mean, e.g. mean w > 0 of "
                 "canonical quaternions, so it exceeds the uniform R² for uninformative features)",
    "r2_uniform": "uniform-average R² (seq-JEPA, scikit-learn r2_score): mean over outputs j of "
                  "1 − Σᵢ(yᵢⱼ−ŷᵢⱼ)² / Σᵢ(yᵢⱼ−ȳⱼ)²",
    "r2_pooled_mean_baseline": "pooled R² of the constant prediction of each output's training mean: the pooled "
                               "R² that features without any information reach (the uniform R² of that baseline "
                               "is ~0); read the pooled R² of a probe against it",
    "r2_uniform_mean_baseline": "uniform-average R² of the constant prediction of each output's training mean "
                                "(~0, slightly negative: the train and val means differ)",
    "r2_uniform_varying": "uniform-average R² over the outputs whose val targets vary (variance above 1e-6 of the "
                          "largest output variance): for restricted rotation groups (e.g. about z only) whose "
                          "quaternions have constant components, which scikit-learn scores 0 unless predicted "
                          "exactly; equals r2_uniform when every output varies",
    "r2_uniform_varying_mean_baseline": "r2_uniform_varying of the constant prediction of each output's training "
                                        "mean (~0): the baseline of r2_uniform_varying",
    "geodesic_deg": "mean geodesic angle in degrees between the normalised predicted and the true rotation "
                    "quaternion: 2·acos(|⟨q̂/‖q̂‖, q⟩|)",
    "top1": "top-1 accuracy (%) of the linear classifier on the validation objects' views",
    "top5": "top-5 accuracy (%): true class among the 5 highest logits",
    "mrr": "mean reciprocal rank (SIE): from view 0 of an object and the relative rotation to view k, the "
           "predictor's L2-normalised output is ranked by cosine similarity among the L2-normalised equivariant "
           "embeddings of all views of that object; MRR = mean of 1/rank over objects and k",
    "hit@k": "Hit@k (SIE): fraction of (object, k) queries whose target view is among the k nearest by cosine",
    "pre": "PRE, prediction rotation error (SIE eval_prediction_errors.py): the predicted embedding's nearest "
           "neighbour (cosine) among all views of the split gives a retrieved rotation q_nn; "
           "PRE = mean of 1 − ⟨q_true, q_nn⟩² (= mean sin²(θ/2), θ the angle between the rotations)",
    "pred_mse": "mean over queries of the squared L2 distance between the L2-normalised predicted and target "
                "equivariant embeddings",
}


def r2_pooled(pred: Tensor, target: Tensor) -> Tensor:
    """Pooled R²: 1 − SS_res / SS_tot, SS_tot around the single grand mean of `target`.

    Hand-written: no library has the grand-mean R² (torchmetrics' variance_weighted centres each output on its mean).

    pred, target: (N, K) -> scalar. SS_res = Σᵢⱼ (yᵢⱼ − ŷᵢⱼ)², SS_tot = Σᵢⱼ (yᵢⱼ − ȳ)², ȳ = mean over all i, j.
    """
    ss_res = ((target - pred) ** 2).sum()
    ss_tot = ((target - target.mean()) ** 2).sum()
    return 1.0 - ss_res / ss_tot


def r2_uniform(pred: Tensor, target: Tensor) -> Tensor:
    """Uniform-average R² (scikit-learn `r2_score`, multioutput="uniform_average").

    pred, target: (N, K) or (N,) -> scalar. Mean over outputs j of 1 − Σᵢ(yᵢⱼ−ŷᵢⱼ)² / Σᵢ(yᵢⱼ−ȳⱼ)².
    As in scikit-learn, an output with zero variance scores 1 if predicted exactly, else 0.
    Hand-written: torchmetrics' r2_score calls an output exact when Σ(y−ŷ)² < 1e-4 (absolute), which scores a
    constant quaternion component predicted within 1e-3 as 1 instead of 0 (tests/test_library_equivalence.py).
    """
    if target.ndim == 1:
        pred, target = pred[:, None], target[:, None]
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    constant = ss_tot == 0
    per_output = 1.0 - ss_res / torch.where(constant, torch.ones_like(ss_tot), ss_tot)
    per_output = torch.where(constant, (ss_res == 0).to(per_output.dtype), per_output)
    return per_output.mean()


def varying_outputs(target: Tensor, rel_tol: float = VARYING_REL_TOL) -> Tensor:
    """(N, K) targets -> (K,) bool: outputs whose variance exceeds `rel_tol` times the largest output variance."""
    var = target.var(0, unbiased=False)
    return var > rel_tol * var.max()


def r2_uniform_varying(pred: Tensor, target: Tensor, rel_tol: float = VARYING_REL_TOL) -> Tensor:
    """`r2_uniform` of (N, K) predictions over the outputs that vary (`varying_outputs`) -> scalar."""
    keep = varying_outputs(target, rel_tol)
    return r2_uniform(pred[:, keep], target[:, keep])


def geodesic_error_deg(pred_quat: Tensor, true_quat: Tensor) -> Tensor:
    """Per-sample rotation angle in degrees between (N, 4) predicted (any norm) and true quaternions -> (N,).

    θ = 2·acos(|⟨q̂/‖q̂‖, q/‖q‖⟩|) (q and −q are the same rotation), evaluated in the well-conditioned form
    θ = 4·atan2(‖q̂ − q‖, ‖q̂ + q‖) with q's sign aligned to q̂, in float64, so the identity gives exactly 0.
    Hand-written: the library forms (acos of a dot product or trace) resolve only ~sqrt(eps) near 0 (7e-4 rad in
    float32); the atan2 form is exact there.
    """
    a = canonical_quaternion(pred_quat.double())
    b = canonical_quaternion(true_quat.double())
    b = torch.where((a * b).sum(-1, keepdim=True) < 0, -b, b)
    theta = 4.0 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))
    return torch.rad2deg(theta).to(pred_quat.dtype)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Percentage of rows of (N, C) `logits` whose (N,) label is among the k largest logits -> scalar."""
    num_classes = logits.shape[1]
    return multiclass_accuracy(logits, labels, num_classes, average="micro", top_k=min(k, num_classes)) * 100.0


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(N,) predicted and true class indices -> (C, C) counts, rows = true class, columns = predicted."""
    return multiclass_confusion_matrix(pred, labels, num_classes)


def per_class_accuracy(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(N,) predicted and true class indices -> (C,) accuracy (%) per true class (NaN for classes absent from the
    data, where torchmetrics reports 0)."""
    acc = multiclass_accuracy(pred, labels, num_classes, average="none") * 100.0
    present = torch.bincount(labels.long(), minlength=num_classes) > 0
    return torch.where(present, acc, torch.full_like(acc, math.nan))


def retrieval_ranks(queries: Tensor, candidates: Tensor, target_index: Tensor) -> Tensor:
    """Rank (1 = best) of the target among each query's candidates by cosine similarity.

    Hand-written: torchmetrics' RetrievalMRR / HitRate count only candidates with a score > 0 as retrieved, so a
    target of negative cosine similarity would be dropped instead of ranked.

    queries (Q, E), candidates (Q, M, E) (each query ranks its own M candidates), target_index (Q,) -> (Q,) int.
    Ties count in the target's favour only if strictly fewer candidates score higher.
    """
    q = torch.nn.functional.normalize(queries, dim=-1)
    c = torch.nn.functional.normalize(candidates, dim=-1)
    sims = torch.einsum("qe,qme->qm", q, c)
    target_sim = sims.gather(1, target_index[:, None])
    return (sims > target_sim).sum(1) + 1


def mrr_hits(ranks: Tensor, ks: tuple[int, ...] = (1, 2, 5, 10)) -> dict[str, float]:
    """(Q,) ranks -> {"mrr": mean 1/rank, "hit@k": fraction with rank ≤ k for each k}."""
    ranks = ranks.float()
    out = {"mrr": float((1.0 / ranks).mean())}
    out.update({f"hit@{k}": float((ranks <= k).float().mean()) for k in ks})
    return out


def prediction_rotation_error(pred_emb: Tensor, bank_emb: Tensor, bank_quat: Tensor, true_quat: Tensor,
                               chunk: int = 4096) -> Tensor:
    """SIE's PRE: mean over queries of 1 − ⟨q_true, q_nn⟩², q_nn the rotation of the nearest bank embedding.

    pred_emb (Q, E), bank_emb (N, E), bank_quat (N, 4) and true_quat (Q, 4) unit quaternions -> scalar.
    Nearest neighbour by cosine similarity over the whole bank (all views of the split), `chunk` queries at a time.
    """
    bank = torch.nn.functional.normalize(bank_emb, dim=-1)
    queries = torch.nn.functional.normalize(pred_emb, dim=-1)
    nearest = torch.cat([(q @ bank.T).argmax(1) for q in queries.split(chunk)])
    return (1.0 - (bank_quat[nearest] * true_quat).sum(-1) ** 2).mean()
