"""Probes on frozen features: extraction + cache, linear / rotation / colour / translation probes, PRE/MRR/H@k."""
from ssl_eq.probes.metrics import (DEFINITIONS, geodesic_error_deg, mrr_hits, prediction_rotation_error, r2_pooled,
                                   r2_uniform, r2_uniform_varying, retrieval_ranks, topk_accuracy)

__all__ = ["DEFINITIONS", "geodesic_error_deg", "mrr_hits", "prediction_rotation_error", "r2_pooled", "r2_uniform",
           "r2_uniform_varying", "retrieval_ranks", "topk_accuracy"]
