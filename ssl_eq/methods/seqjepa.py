"""seq-JEPA (Ghaemi et al., NeurIPS 2025): a transformer aggregates M observed (view, action) tokens into
z_AGG (the invariant representation); a predictor conditioned on the next action predicts the EMA target
encoder's output of the one held-out view. The per-view encoder output is the equivariant representation.

Items hold M + 1 views (`method.seq_len` = M observed, the last one the target) and the M actions between
consecutive views. Token i = [z_i (D) ; e(a_i) (E)] with the last token's action part zeroed after the
action encoder's BatchNorm; the predictor sees [z_AGG ; e(a_M)] (a_M = observed-last -> target, encoded in
a separate call). Only the encoder has an EMA target (parameters, not buffers), updated after every optimiser
step. `method.action_cond: false` is the reference's no-action ablation: D-wide tokens, predictor on z_AGG.
Facts: docs/reference/seq-jepa.md (§1 architecture, §2 loss / EMA); deviations: README "seq-JEPA".
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_eq.augment import AugmentPipeline, Augmented
from ssl_eq.methods.base import BaseMethod, StepOutput
from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.blocks.sequence import ActionEncoder, SequenceAggregator
from ssl_eq.methods.registry import register_method

_NEG_COS = NegativeCosineSimilarity()
REL_HUES = [0, 3]  # Δfloor_hue, Δspot_hue in rel_latents [Δfloor_hue, Δspot_θ, Δspot_φ, Δspot_hue]


def seqjepa_loss(pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """pred (B, D), target (B, D) -> 1 - mean cosine similarity (target detached), terms {"prediction"}."""
    loss = 1 + _NEG_COS(pred, target.detach())
    return loss, {"prediction": loss}


@dataclass(frozen=True)
class ActionSpec:
    """An action type: its width, the latents it needs and how to read it from a batch of transitions."""
    dim: int
    latents: tuple[str, ...]
    read: Callable[[dict[str, Tensor]], Tensor]  # transition keys (B, T, ...) -> (B, T, dim)


def _quat(b: dict[str, Tensor]) -> Tensor:
    return b["rel_rotation_quat"]


ROTATION = ("rot_x", "rot_y", "rot_z")
# 3DIEBench actions from the relative transforms of `ssl_eq.datasets.relative` (quaternion wxyz as the dataset
# provides it; hue differences wrapped to [-0.5, 0.5)); "aug" reads the augmentation vectors (see `aug_actions`)
ACTIONS: dict[str, ActionSpec] = {
    "rot": ActionSpec(4, ROTATION, _quat),
    "rotcolor": ActionSpec(6, (*ROTATION, "floor_hue", "spot_hue"),
                           lambda b: torch.cat([_quat(b), b["rel_latents"][..., REL_HUES]], -1)),
    "all": ActionSpec(8, (*ROTATION, "floor_hue", "spot_theta", "spot_phi", "spot_hue"),
                      lambda b: torch.cat([_quat(b), b["rel_latents"]], -1)),
    "aug": ActionSpec(0, (), lambda b: b["aug_action"].diff(dim=1)),
}


@register_method("seqjepa")
class SeqJEPA(BaseMethod):
    batch_kind = "sequence"

    @classmethod
    def item_views(cls, data_cfg: DictConfig, method_cfg: DictConfig) -> int:
        """M observed views + 1 target view; data.num_views must be null or equal to that."""
        m = int(method_cfg.seq_len)
        if m < 1:
            raise ValueError(f"method.seq_len: M (observed views) must be >= 1, got {m}")
        if data_cfg.get("num_views") not in (None, m + 1):
            raise ValueError(f"data.num_views={data_cfg.num_views} contradicts method.seq_len={m} (seq-JEPA loads "
                             f"M + 1 = {m + 1} views per item); set data.num_views=null")
        return m + 1

    # ------------------------------------------------------------------ construction
    def build_heads(self) -> None:
        m = self.cfg.method
        self.seq_len = int(m.seq_len)
        self.item_views(self.cfg.data, m)
        self.augment_target = (AugmentPipeline(self.image_size, list(self.cfg.augment.target_transforms))
                               if self.cfg.augment.get("target_transforms") is not None else None)
        self.aug_columns: dict[str, list[int]] = {}
        self.action_spec = self._action_spec(m) if bool(m.action_cond) else None
        d, e = self.rep_dim, int(m.action_emb_dim) if self.action_spec else 0
        self.d_model = d + e
        self.action_encoder = ActionEncoder(self.action_dim, e) if self.action_spec else None
        a = m.aggregator
        self.aggregator = SequenceAggregator(self.d_model, int(a.num_layers), int(a.num_heads),
                                             int(a.ff_mult) * self.d_model, float(a.dropout))
        hidden = int(m.predictor_hidden)
        self.predictor = nn.Sequential(  # hidden <= 0: Linear(no bias) + BN, as the reference
            nn.Linear(self.d_model + e, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d),
        ) if hidden > 0 else nn.Sequential(nn.Linear(self.d_model + e, d, bias=False), nn.BatchNorm1d(d))
        self.steps_per_epoch = 1  # set from the trainer in on_train_start (for the per-epoch EMA schedule)
        self.backbone_target = copy.deepcopy(self.backbone)
        deactivate_requires_grad(self.backbone_target)

    def _action_spec(self, m: DictConfig) -> ActionSpec:
        """The configured action type, checked against the dataset's latents / the augmentation pipelines."""
        if m.action not in ACTIONS:
            raise ValueError(f"method.action: unknown action type {m.action!r}; valid: {sorted(ACTIONS)}")
        spec = ACTIONS[m.action]
        schema = self.cfg.data.get("latent_schema")
        missing = [n for n in spec.latents if schema is not None and n not in schema]
        if missing:
            valid = sorted(k for k, s in ACTIONS.items() if set(s.latents) <= set(schema))
            raise ValueError(f"method.action={m.action!r} needs latents {missing}, which the dataset lacks (its "
                             f"latent schema is {list(schema)}); valid action types for it: {valid}")
        if m.action == "aug":
            cols = list(m.aug_action_columns)
            for key, pipe in (("transforms", self.augment), ("target_transforms", self.augment_target)):
                if pipe is None:
                    continue
                absent = [c for c in cols if c not in pipe.action_names]
                if absent:
                    raise ValueError(f"method.action='aug' needs action columns {absent} (method.aug_action_columns) "
                                     f"that augment.{key} does not record; it records {list(pipe.action_names)}")
                self.aug_columns[key] = [pipe.action_names.index(c) for c in cols]
        return spec

    @property
    def action_dim(self) -> int:
        if self.action_spec is None:
            return 0
        return len(self.cfg.method.aug_action_columns) if self.cfg.method.action == "aug" else self.action_spec.dim

    @property
    def online_classifier_dim(self) -> int:
        return self.d_model

    @property
    def aug_action_dim(self) -> int:
        return len(self.aug_columns.get("transforms", []))

    def build_online_rotation(self, in_dim: int) -> nn.Module:
        """The reference's online equivariance probe: MLP on [z_0 ; z_1] -> relative rotation (B, 4)."""
        return mlp(in_dim, [*self.cfg.method.online_equiprobe_hidden, 4], last_bias=True, batch_norm=False)

    # ------------------------------------------------------------------ augmentation as actions
    def _view_vector(self, out: Augmented, pipe: AugmentPipeline, key: str) -> Tensor:
        """(N, A) recorded action -> (N, P) the `aug_action_columns`, each divided by its known range."""
        if key not in self.aug_columns:
            return out.action[:, :0]
        return (out.action / pipe.action_scale.to(out.action.dtype))[:, self.aug_columns[key]]

    def augment_views(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 (B, M+1, 3, H, W) -> views (B, M+1, 3, S, S) and per-view scaled parameter vectors (B, M+1, P):
        the M observed views through augment.transforms, the target through augment.target_transforms
        (the same pipeline when that is null)."""
        b, m = images.shape[0], self.seq_len
        obs = self.augment(images[:, :m].flatten(0, 1).contiguous())  # NCHW uint8: the float passes vectorise
        pipe, key = (self.augment_target, "target_transforms") if self.augment_target is not None \
            else (self.augment, "transforms")
        tgt = pipe(images[:, m].contiguous())
        x = torch.cat([obs.images.unflatten(0, (b, m)), tgt.images[:, None]], 1)
        vec = torch.cat([self._view_vector(obs, self.augment, "transforms").unflatten(0, (b, m)),
                         self._view_vector(tgt, pipe, key)[:, None]], 1)
        return (x - self.mean[None]) / self.std[None], vec

    # ------------------------------------------------------------------ model API
    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        """No projector: the target is the encoder output itself, so the per-view embedding is the representation."""
        return {"inv": reps["inv"], "equi": reps["equi"]}

    def actions(self, transitions: dict[str, Tensor]) -> Tensor | None:
        """Transition keys (rel_* (B, T, ...) or aug_action (B, T+1, P)) -> actions (B, T, A); None without
        action conditioning."""
        return None if self.action_spec is None else self.action_spec.read(transitions).float()

    def aggregate(self, z: Tensor, actions: Tensor | None) -> Tensor:
        """z (B, M, D) encoder outputs of M views + the M-1 actions between them (B, M-1, A) -> z_AGG (B, d_model).

        The last token's action part is zero, as for the observed-last view in training. In eval mode the action
        BatchNorm uses its running statistics, so this needs no other views (probing over any M_val).
        """
        if self.action_encoder is None:
            return self.aggregator(z)
        e = z.new_zeros(*z.shape[:2], self.action_encoder.proj.out_features)
        if z.shape[1] > 1:
            e[:, :-1] = self.action_encoder(actions.to(z.dtype))
        return self.aggregator(torch.cat([z, e], -1))

    def forward_sequence(self, z: Tensor, actions: Tensor | None) -> tuple[Tensor, Tensor]:
        """z (B, M, D) observed encoder outputs, actions (B, M, A) (a_i: view i -> i+1, a_M-1 -> target) ->
        (z_AGG (B, d_model), prediction (B, D) of the target's encoder output)."""
        if self.action_encoder is None:
            agg = self.aggregator(z)
            return agg, self.predictor(agg)
        actions = actions.to(z.dtype)
        e = self.action_encoder(actions)                      # BN statistics include the last action ...
        e = torch.cat([e[:, :-1], torch.zeros_like(e[:, -1:])], 1)  # ... which is zeroed after it
        agg = self.aggregator(torch.cat([z, e], -1))
        e_next = self.action_encoder(actions[:, -1])           # separate call, its own batch statistics
        return agg, self.predictor(torch.cat([agg, e_next], -1))

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        b, v = views.shape[:2]
        m = self.seq_len
        if v != m + 1:
            raise ValueError(f"seq-JEPA batch has {v} views per item; method.seq_len={m} needs M + 1 = {m + 1}")
        z = self.encode(views[:, :m].flatten(0, 1)).unflatten(0, (b, m))  # one pass over the B*M observed views
        with torch.no_grad():
            x_t = views[:, m]
            target = self.backbone_target(self.layout(x_t))
        agg, pred = self.forward_sequence(z, self.actions(batch))
        loss, terms = seqjepa_loss(pred, target)
        return StepOutput(loss, terms, list(z.unbind(1)), aggregate=agg)

    # ------------------------------------------------------------------ EMA target
    def momentum(self, epoch: int | None = None, step: int | None = None) -> float:
        """EMA decay τ at `epoch` / `step` (default: the current ones): cosine from momentum.start to
        momentum.end over training, by epoch (the reference: constant within an epoch,
        τ(e) = 1 − (1 − τ₀)(cos(π e / E) + 1) / 2 for E epochs) or by step (over total_steps)."""
        mom = self.cfg.method.momentum
        start, end = float(mom.start), float(mom.end)
        if mom.unit == "epoch":
            epochs = max(1, math.ceil(self.total_steps / self.steps_per_epoch))
            return cosine_schedule(self.current_epoch if epoch is None else epoch, epochs + 1, start, end)
        if mom.unit == "step":
            return cosine_schedule(self.global_step if step is None else step, self.total_steps, start, end)
        raise ValueError(f"method.momentum.unit: expected 'epoch' or 'step', got {mom.unit!r}")

    def on_train_start(self) -> None:
        self.steps_per_epoch = max(1, int(self.trainer.num_training_batches))

    def on_train_batch_end(self, outputs, batch: dict[str, Tensor], batch_idx: int) -> None:
        """EMA update of the target encoder's parameters after each optimiser step."""
        update_momentum(self.backbone, self.backbone_target, self.momentum())
