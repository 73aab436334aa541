"""Probes on frozen features: extraction + cache, linear / rotation / colour / translation probes, PRE/MRR/H@k.

Names are imported on first use, so `import ssl_eq.probes` (e.g. by the CLI) loads neither torch nor torchmetrics.
"""
from __future__ import annotations

from ssl_eq.utils.lazy import lazy_attributes

_EXPORTS = {name: "metrics" for name in (
    "DEFINITIONS", "geodesic_error_deg", "mrr_hits", "prediction_rotation_error", "r2_pooled", "r2_uniform",
    "r2_uniform_varying", "retrieval_ranks", "topk_accuracy")}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes("ssl_eq.probes", _EXPORTS)
