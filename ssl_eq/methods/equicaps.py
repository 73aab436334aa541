"""EquiCaps (Konstantinou et al., ICCV 2025): capsule poses as a predictor-free equivariant representation.

The backbone's last feature map (B, C, h, w) feeds primary capsules (activations + n×n poses) and one
self-routing layer to K output capsules (`ssl_eq.methods.blocks.capsules`). View 1's output poses times the
known relative transformation M (3×3: R₁ᵀR₂; 4×4: M₁⁻¹M₂ in the object or the base frame) must equal
view 2's (docs/reference/equicaps.md §1-2).

Representation vector (B, C + K + K·n²) = [pooled backbone map | capsule activations | capsule poses];
`split` gives "full" = the pooled map (what the published numbers probe), "inv" = the K output activations
(sum to 1), "equi" = the K·n² output poses (capsule-major, each n×n row-major). The embeddings are the same
inv / equi parts (there is no projector).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from ssl_eq.methods.base import BaseMethod, StepOutput
from ssl_eq.methods.blocks.capsules import PrimaryCapsules, SelfRouting
from ssl_eq.methods.blocks.heads import gather_cat
from ssl_eq.methods.blocks.losses import variance_covariance
from ssl_eq.methods.registry import register_method

# pose size n -> frame -> batch key of the relative transformation (docs/architecture.md, "Batches")
MATRIX_KEYS: dict[int, dict[str, str]] = {
    3: {"object": "rel_rotation_matrix", "base": "rel_rotation_matrix"},   # 3×3 ignores translation
    4: {"object": "rel_matrix_object", "base": "rel_matrix_base"},
}
TRANSLATION_LATENTS = ("trans_x", "trans_y", "trans_z")


def cross_entropy(target: Tensor, prob: Tensor, clamp: float) -> Tensor:
    """(B, K) x2 probabilities -> () mean_b Σ_k −target·log prob (the reference's log(prob**-target), safe)."""
    return -(target * prob.clamp_min(clamp).log()).sum(-1).mean()


def frobenius_normalise(poses: Tensor) -> Tensor:
    """(B, K, n, n) -> each n×n matrix divided by its own Frobenius norm (no epsilon, as the reference)."""
    return poses / torch.linalg.matrix_norm(poses, keepdim=True)


def equicaps_loss(act1: Tensor, pose1: Tensor, act2: Tensor, pose2: Tensor, rel: Tensor, *, invariance: float,
                  equivariance: float, variance: float, covariance: float, memax: float, log_clamp: float
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """EquiCaps objective (equicaps.md §2), computed in float32.

    act* (B, K) output activations, pose* (B, K, n, n) output poses, rel (B, n, n) view 1 -> view 2.
    invariance · CE(act2 -> act1) (no stop-gradient) + equivariance · MSE(‖pose1·rel‖-normalised,
    ‖pose2‖-normalised) + VICReg variance / covariance on the gathered [act ; normalised poses] of each view
    + memax · Σ_views (log K − H(mean activation over the global batch)).
    """
    act1, act2, pose1, pose2, rel = (t.float() for t in (act1, act2, pose1, pose2, rel))
    pred = frobenius_normalise(pose1 @ rel.unsqueeze(1))
    target = frobenius_normalise(pose2)
    var, cov = variance_covariance(torch.cat([act1, pred.flatten(1)], 1), torch.cat([act2, target.flatten(1)], 1))
    k = act1.shape[1]
    mean_act = (gather_cat(a).mean(0) for a in (act1, act2))
    entropy_gap = sum(math.log(k) + (p * p.clamp_min(log_clamp).log()).sum() for p in mean_act)
    terms = {
        "invariance": invariance * cross_entropy(act2, act1, log_clamp),
        "equivariance": equivariance * F.mse_loss(pred, target),
        "variance": variance * var,
        "covariance": covariance * cov,
        "memax": memax * entropy_gap,
    }
    return sum(terms.values()), terms


@register_method("equicaps")
class EquiCaps(BaseMethod):
    required_keys = ("images", "rel_rotation_matrix")

    def _split_sizes(self, split: DictConfig) -> tuple[int, int]:
        """inv = the K output activations, equi = the K·n² output poses (method.split is not used)."""
        m = self.cfg.method
        if int(m.pose_size) not in MATRIX_KEYS:
            raise ValueError(f"method.pose_size: expected one of {sorted(MATRIX_KEYS)} (3×3 or 4×4 poses), "
                             f"got {m.pose_size}")
        if m.frame not in MATRIX_KEYS[int(m.pose_size)]:
            raise ValueError(f"method.frame: expected 'object' or 'base', got {m.frame!r}")
        return int(m.num_capsules), int(m.num_capsules) * int(m.pose_size) ** 2

    @property
    def matrix_key(self) -> str:
        return MATRIX_KEYS[int(self.cfg.method.pose_size)][self.cfg.method.frame]

    @property
    def data_requirements(self) -> dict[str, Any]:
        return {"kind": self.batch_kind, "keys": sorted({*self.required_keys, self.matrix_key})}

    def build_heads(self) -> None:
        m = self.cfg.method
        n = int(m.pose_size)
        schema = self.latent_schema
        if n == 4 and schema and not set(TRANSLATION_LATENTS) <= set(schema):
            raise ValueError(f"method.pose_size=4 (EquiCaps 4×4, frame {m.frame!r}) needs translation latents "
                             f"{list(TRANSLATION_LATENTS)} (3DIEBench-T); the dataset's latent schema is {schema}. "
                             "Use method=equicaps_3x3 or a 3DIEBench-T dataset")
        if not hasattr(self.backbone, "forward_features"):
            raise ValueError(f"backbone.name: EquiCaps needs a backbone exposing its last feature map "
                             f"(forward_features), e.g. resnet18_sie or small_cnn; got {self.cfg.backbone.name!r}")
        channels, h, w = self._feature_map_shape()
        kernel = m.routing.kernel_size
        if h != w or (kernel is not None and int(kernel) != h):
            raise ValueError(f"method.routing.kernel_size={kernel}: the routing kernel covers the whole feature map, "
                             f"but {self.cfg.backbone.name} gives a {h}×{w} map at data.image_size={self.image_size}; "
                             f"set data.image_size so the map is kernel_size×kernel_size (resnet18_sie: 32×kernel) "
                             "or kernel_size to null (the map's size)")
        k = int(m.num_capsules)
        self.primary = PrimaryCapsules(channels, k, n * n)
        self.routing = SelfRouting(h * w * k, k, n * n, checkpoint=bool(m.routing.checkpoint))

    def _feature_map_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the backbone's last map at data.image_size (one eval-mode pass, BN statistics untouched)."""
        if not self.image_size:
            raise ValueError("data.image_size: EquiCaps sizes its routing layer from the image size; set it")
        mode = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            shape = self.backbone.forward_features(torch.zeros(1, 3, self.image_size, self.image_size)).shape[1:]
        self.backbone.train(mode)
        return tuple(shape)

    def encode(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, C + K + K·n²) [pooled map | activations | poses]."""
        fmap = self.backbone.forward_features(self.layout(x))
        act, pose = self.routing(*self.primary(fmap))
        return torch.cat([fmap.mean((2, 3)), act, pose.flatten(1)], 1)

    def split(self, rep: Tensor) -> dict[str, Tensor]:
        """(B, C + K + K·n²) -> {"full": pooled (B, C), "inv": activations (B, K), "equi": poses (B, K·n²)}."""
        c = self.rep_dim
        return {"full": rep[:, :c], "inv": rep[:, c:c + self.inv_dim], "equi": rep[:, c + self.inv_dim:]}

    def representations(self, x: Tensor) -> dict[str, Tensor]:
        return self.split(self.encode(x))

    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"inv": reps["inv"], "equi": reps["equi"]}

    def poses(self, equi: Tensor) -> Tensor:
        """(B, K·n²) -> (B, K, n, n)."""
        n = int(self.cfg.method.pose_size)
        return equi.unflatten(1, (self.inv_dim, n, n))

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        if self.matrix_key not in batch:
            raise KeyError(f"EquiCaps (method.pose_size={self.cfg.method.pose_size}, method.frame="
                           f"{self.cfg.method.frame!r}) needs batch key {self.matrix_key!r}; the 4×4 matrices come "
                           f"with 3DIEBench-T pairs (latents with translation)")
        reps = self.encode_views(views)
        p1, p2 = (self.split(r) for r in reps)
        loss, terms = equicaps_loss(p1["inv"], self.poses(p1["equi"]), p2["inv"], self.poses(p2["equi"]),
                                    batch[self.matrix_key], **self.cfg.method.loss)
        return StepOutput(loss, terms, reps)
