"""The LightningModule every method builds on.

It owns the backbone, the inv / equi split of the representation, on-device augmentation
and normalisation, the optimiser + warm-up/cosine schedule, online probes on detached
features (trained on training batches, evaluated with the loss terms on the val split),
collapse signals and the non-finite-loss guard. A method adds its heads (`build_heads`),
its projection (`project`) and its loss (`step_loss`, free of side effects: validation calls it too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking.online_linear_classifier import OnlineLinearClassifier
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import R2Score
from torchmetrics.functional import r2_score

from ssl_eq.augment import AugmentPipeline
from ssl_eq.backbones import build_backbone
from ssl_eq.datasets.normalize import Normalize

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "lars": LARS,
    "sgd": torch.optim.SGD,
}
# one fused kernel per parameter (CPU, CUDA, MPS) instead of ~10 elementwise passes: on CPU the Adam step of a
# ResNet-18 is ~5x faster; same update up to float rounding. Used unless method.optim.kwargs sets fused / foreach.
FUSED = {"adam", "adamw", "sgd"}


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN / inf (the last checkpoint is left untouched)."""


class SplitR2Score(R2Score):
    """torchmetrics' variance-weighted R² over a whole split (all batches, all ranks): 1 − Σ SS_res / Σₖ SS_tot,ₖ.
    NaN for a split of fewer than two samples, where R² is undefined (torchmetrics raises)."""

    def __init__(self) -> None:
        super().__init__(multioutput="variance_weighted")

    def compute(self) -> Tensor:
        return super().compute() if self.total > 1 else torch.tensor(math.nan, device=self.total.device)


@dataclass
class StepOutput:
    loss: Tensor                                           # () total loss
    terms: dict[str, Tensor]                               # () each, already weighted
    reps: list[Tensor] = field(default_factory=list)       # per view (B, D) backbone representations
    aggregate: Tensor | None = None                        # (B, Da) sequence aggregate (the online classifier's input)


class BaseMethod(pl.LightningModule):
    """Base of all methods. `config` is the full resolved pretraining config (a plain dict)."""

    name: ClassVar[str] = ""
    has_predictor: ClassVar[bool] = False
    action_key: ClassVar[str | None] = None          # batch key of the action the predictor is conditioned on
    batch_kind: ClassVar[str] = "pair"
    required_keys: ClassVar[tuple[str, ...]] = ("images",)
    # devices whose loss check costs no host sync, so a non-finite loss is raised in its own step (check_finite)
    SYNC_FREE_DEVICES: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg: DictConfig = OmegaConf.create(config)
        bb = OmegaConf.to_container(self.cfg.backbone, resolve=True)
        self.backbone, self.rep_dim = build_backbone(bb.pop("name"), **bb)
        self.inv_dim, self.equi_dim = self._split_sizes(self.cfg.method.split)
        self.augment = AugmentPipeline(self.cfg.data.image_size, list(self.cfg.augment.transforms))
        norm = self.cfg.augment.normalize
        self.register_buffer("mean", torch.tensor(list(norm.mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(norm.std)).view(1, 3, 1, 1), persistent=False)
        self.normalize = Normalize(norm.mean, norm.std)  # uint8 at image_size -> normalised, two passes
        # one memory layout for inputs and conv weights (a mismatch re-lays out the weights on every call)
        self.memory_format = (torch.channels_last if self.cfg.trainer.get("channels_last", False)
                              else torch.contiguous_format)
        self.build_heads()
        # online probes: classifier on inv (full when inv is empty), rotation regressor on equi (idem)
        num_classes = int(self.cfg.data.num_classes)
        self.online_classifier = OnlineLinearClassifier(self.online_classifier_dim, num_classes, topk=(1,))
        self.online_rotation = self.build_online_rotation(2 * (self.equi_dim or self.rep_dim))
        self.total_steps = 1
        self._last_finite_loss: float | None = None
        self._watch: dict[str, Tensor] | None = None   # the device-side finiteness check (check_finite)
        self._watch_terms: list[str] = []
        self.validated_at_step: int | None = None      # global step of the last completed validation
        self.val_rotation_r2 = SplitR2Score()  # the online rotation probe's R² over the whole val split

    # ------------------------------------------------------------------ hooks for methods
    def build_heads(self) -> None:
        """Create projectors / predictors (uses self.inv_dim, self.equi_dim, self.cfg.method)."""
        raise NotImplementedError

    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        """{"full", "inv", "equi"} representations -> {"inv": (B, Ei), "equi": (B, Ee)} embeddings."""
        raise NotImplementedError

    def step_loss(self, views: Tensor, batch: dict[str, Tensor]) -> StepOutput:
        """views (B, V, 3, S, S) preprocessed -> StepOutput with the loss and its weighted terms."""
        raise NotImplementedError

    def predict(self, equi_emb: Tensor, batch_actions: dict[str, Tensor]) -> Tensor:
        """(B, Ee) view-1 equivariant embedding + actions -> (B, Ee) predicted view-2 embedding."""
        raise NotImplementedError(f"method {self.name!r} has no predictor (has_predictor is False)")

    @property
    def online_classifier_dim(self) -> int:
        """Width of the online classifier's input: inv (full when inv is empty), or StepOutput.aggregate."""
        return self.inv_dim or self.rep_dim

    def build_online_rotation(self, in_dim: int) -> nn.Module:
        """Online relative-rotation regressor (B, in_dim) [equi_a; equi_b] -> (B, 4)."""
        return nn.Linear(in_dim, 4)

    @property
    def aug_action_dim(self) -> int:
        """Width of batch["aug_action"] per view (zeros of it stand in for augmentation during validation)."""
        return self.augment.action_dim

    @classmethod
    def item_views(cls, data_cfg: DictConfig, method_cfg: DictConfig) -> int | None:
        """Views per item of sequence batches (data.num_views); pair / view batches ignore it."""
        return data_cfg.get("num_views")

    # ------------------------------------------------------------------ public model API
    @property
    def image_size(self) -> int:
        return int(self.cfg.data.image_size)

    @property
    def latent_schema(self) -> list[str]:
        return list(self.cfg.data.get("latent_schema") or [])

    @property
    def data_requirements(self) -> dict[str, Any]:
        return {"kind": self.batch_kind, "keys": list(self.required_keys)}

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> float (B, 3, S, S): resized to image_size and normalised, on the images' device."""
        if images.dtype == torch.uint8 and images.shape[-2:] == (self.augment.image_size,) * 2:
            return self.normalize(images, memory_format=self.memory_format)
        x = (self.augment.resize(images) - self.mean) / self.std
        return self.layout(x)

    def layout(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) in the memory layout `trainer.channels_last` chose (the loader hands out channels-last)."""
        return x.contiguous(memory_format=self.memory_format)

    def setup(self, stage: str) -> None:
        """Conv weights in the same layout as the inputs."""
        self.to(memory_format=self.memory_format)

    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, S, S) preprocessed -> {"full": (B, D), "inv": (B, Di), "equi": (B, De)}."""
        return self.split(self.backbone(x))

    def embeddings(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, S, S) preprocessed -> {"inv": (B, Ei), "equi": (B, Ee)} projector outputs."""
        return self.project(self.representations(x))

    def split(self, rep: Tensor) -> dict[str, Tensor]:
        """(B, D) -> {"full", "inv": first Di dims, "equi": the next De dims}."""
        return {"full": rep, "inv": rep[:, : self.inv_dim], "equi": rep[:, self.inv_dim: self.inv_dim + self.equi_dim]}

    def _split_sizes(self, split: DictConfig) -> tuple[int, int]:
        equi = int(split.equi)
        inv = self.rep_dim - equi if split.get("inv") is None else int(split.inv)
        if inv < 0 or equi < 0 or inv + equi != self.rep_dim:
            raise ValueError(f"method.split: inv ({inv}) + equi ({equi}) must equal the backbone width "
                             f"{self.rep_dim} ({self.cfg.backbone.name})")
        return inv, equi

    # ------------------------------------------------------------------ training
    def augment_views(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 (B, V, 3, H, W) -> preprocessed views (B, V, 3, S, S) and applied-augmentation actions (B, V, A)."""
        b, v = images.shape[:2]
        out = self.augment(images.flatten(0, 1).contiguous())  # NCHW uint8: the float passes vectorise
        x = ((out.images - self.mean) / self.std).unflatten(0, (b, v))
        return x, out.action.unflatten(0, (b, v))

    def encode(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D)."""
        return self.backbone(self.layout(x))

    def encode_views(self, views: Tensor) -> list[Tensor]:
        """(B, V, 3, S, S) -> V tensors (B, D); each view is its own forward pass (its own BN statistics)."""
        return [self.encode(views[:, i]) for i in range(views.shape[1])]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        views, action = self.augment_views(batch["images"])
        out = self.step_loss(views, {**batch, "aug_action": action})
        self.check_finite(out)
        probe_loss, probe_logs, _ = self.online_probes(out.reps, batch, out.aggregate)
        if self.logs_this_step():
            self.raise_if_nonfinite()
            self.log("train/loss", out.loss, prog_bar=True)
            self.log_dict({f"train/{k}": v.detach() for k, v in out.terms.items()})
            self.log_dict(probe_logs)
            self.log_dict(self.collapse_signals(out.reps))
        return out.loss + probe_loss

    def logs_this_step(self) -> bool:
        """Whether this training step's metrics reach the loggers: every trainer.log_every_n_steps steps and the
        run's last step. Lightning drops the other steps' values, but each self.log still costs ~0.3 ms of its
        bookkeeping per metric (~10 % of a demo step), so they are not logged at all."""
        trainer = self._trainer
        if trainer is None:
            return True
        last_step = 0 < trainer.max_steps <= self.global_step + 1
        last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1 \
            and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        return last_step or last_epoch or trainer._logger_connector.should_update_logs

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss terms and online probes on un-augmented val items, logged as epoch means val/...; the rotation
        R² is computed over the whole split in on_validation_epoch_end."""
        images = batch["images"]
        b, v = images.shape[:2]
        views = self.preprocess(images.flatten(0, 1)).unflatten(0, (b, v))
        out = self.step_loss(views, {**batch, "aug_action": views.new_zeros(b, v, self.aug_action_dim)})
        _, logs, rotation = self.online_probes(out.reps, batch, out.aggregate)
        logs.pop("online/rotation_r2", None)
        if b > 1:  # batch statistics (variance, covariance) are undefined for one item
            logs.update({"loss": out.loss, **out.terms})
        self.log_dict({f"val/{k}": val for k, val in logs.items()}, sync_dist=True, batch_size=b)
        if rotation is not None:  # a Metric: Lightning syncs its sums over ranks and computes it at epoch end
            self.val_rotation_r2.update(*rotation)
            self.log("val/online/rotation_r2", self.val_rotation_r2, batch_size=b)

    def on_validation_epoch_end(self) -> None:
        self.validated_at_step = self.global_step

    def check_finite(self, out: StepOutput) -> None:
        """Raise NonFiniteLossError naming the step, the last finite loss and the term(s) that blew up.

        On the CPU at once. Elsewhere the check stays on the device, so a step waits for no host sync: the first
        non-finite step, its loss and terms and the last finite loss are kept there, and `raise_if_nonfinite`
        raises on the next logging step, before validation and before a checkpoint is written (none holds the
        weights that step's update spoilt)."""
        loss = out.loss.detach()
        if loss.device.type in self.SYNC_FREE_DEVICES:
            if torch.isfinite(loss).item():
                self._last_finite_loss = float(loss)
                return
            bad = [k for k, v in out.terms.items() if not torch.isfinite(v).all()]
            raise self.nonfinite_error(self.global_step, float(loss), self._last_finite_loss, bad)
        if self._watch is None:  # first non-finite step (-1: none), its loss, the last finite loss, its bad terms
            dev = loss.device
            self._watch = {"step": torch.full((), -1, dtype=torch.long, device=dev),
                           "loss": torch.zeros((), device=dev), "last": torch.full((), math.nan, device=dev),
                           "terms": torch.zeros(len(out.terms), dtype=torch.bool, device=dev)}
            self._watch_terms = list(out.terms)  # a method's loss terms are the same every step
        w, finite, none_yet = self._watch, torch.isfinite(loss), self._watch["step"] < 0
        first = ~finite & none_yet
        w["step"] = torch.where(first, self.global_step, w["step"])
        w["loss"] = torch.where(first, loss.float(), w["loss"])
        w["last"] = torch.where(finite & none_yet, loss.float(), w["last"])
        if out.terms:
            w["terms"] = torch.where(first, torch.stack([~torch.isfinite(v).all() for v in out.terms.values()]),
                                     w["terms"])

    def raise_if_nonfinite(self) -> None:
        """Raise NonFiniteLossError for a non-finite loss that `check_finite` recorded on the device (one sync)."""
        w = self._watch
        if w is None or int(w["step"]) < 0:
            return
        last = float(w["last"])
        bad = [name for name, b in zip(self._watch_terms, w["terms"].tolist()) if b]
        raise self.nonfinite_error(int(w["step"]), float(w["loss"]), None if math.isnan(last) else last, bad)

    @staticmethod
    def nonfinite_error(step: int, loss: float, last_finite: float | None, bad: list[str]) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"non-finite loss {loss} at step {step}; last finite loss: {last_finite}; non-finite term(s): "
            f"{', '.join(bad or ['(total only)'])}. The last checkpoint is kept; lower the learning rate "
            f"(method.optim.lr) or set trainer.gradient_clip_val and resume from it.")

    def on_validation_start(self) -> None:
        self.raise_if_nonfinite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_nonfinite()

    def online_probes(self, reps: list[Tensor], batch: dict[str, Tensor], aggregate: Tensor | None = None
                      ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Linear classifier on inv (or on `aggregate` (B, Da) when given, e.g. seq-JEPA's z_AGG) and
        relative-rotation regressor on equi of views 0 and 1 (full where a part is empty).

        reps: per view (B, D); for sequence batches rel_rotation_quat is (B, M, 4) and its first action
        (view 0 -> 1) is the target. Features are detached, so no gradient reaches the encoder. Returns the probe
        loss (), logs {"online/...": ()} and the rotation probe's (prediction, target), each (B, 4) (None without
        rotations); online/rotation_r2 is the batch's variance-weighted R² (absent for a batch of one).
        """
        parts = [self.split(r.detach()) for r in reps]
        loss = reps[0].new_zeros(())
        logs: dict[str, Tensor] = {}
        rotation = None
        if "label" in batch:
            feats = aggregate.detach() if aggregate is not None else \
                torch.cat([p["inv"] if self.inv_dim else p["full"] for p in parts])
            labels = batch["label"].repeat(feats.shape[0] // batch["label"].shape[0])
            cls_loss, topk = self.online_classifier.shared_step((feats, labels), 0)
            loss = loss + cls_loss
            logs.update({"online/cls_loss": cls_loss.detach(), **{f"online/cls_top{k}": a for k, a in topk.items()}})
        if "rel_rotation_quat" in batch and len(parts) >= 2:
            key = "equi" if self.equi_dim else "full"
            pred = self.online_rotation(torch.cat([parts[0][key], parts[1][key]], -1))
            target = batch["rel_rotation_quat"].to(pred.dtype)
            target = target[:, 0] if target.dim() == 3 else target
            rot_loss = F.mse_loss(pred, target)
            loss = loss + rot_loss
            rotation = (pred.detach().float(), target.float())
            logs["online/rotation_mse"] = rot_loss.detach()
            if len(target) > 1:
                logs["online/rotation_r2"] = r2_score(*rotation, multioutput="variance_weighted")
        return loss, logs, rotation

    def collapse_signals(self, reps: list[Tensor]) -> dict[str, Tensor]:
        """Mean per-dimension std of the L2-normalised parts (0 = collapsed, ~1/sqrt(d) = spread out)."""
        parts = self.split(reps[0].detach().float())
        return {f"collapse/std_{k}": std_of_l2_normalized(v) for k, v in parts.items() if v.shape[1] > 0}

    def configure_optimizers(self):
        o = self.cfg.method.optim
        if o.name not in OPTIMIZERS:
            raise ValueError(f"method.optim.name: unknown optimiser {o.name!r}; valid: {sorted(OPTIMIZERS)}")
        extra = OmegaConf.to_container(o.kwargs, resolve=True) if "kwargs" in o else {}
        if o.name in FUSED and not {"fused", "foreach"} & set(extra):
            extra["fused"] = True
        opt = OPTIMIZERS[o.name]([p for p in self.parameters() if p.requires_grad],
                                 lr=float(o.lr), weight_decay=float(o.weight_decay), **extra)
        self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = CosineWarmupScheduler(opt, warmup_epochs=min(int(o.warmup_steps), self.total_steps),
                                      max_epochs=self.total_steps, start_value=1.0,
                                      end_value=float(o.final_lr_factor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class InvariantOnlyMethod(BaseMethod):
    """Baselines with one projector on the invariant part (VICReg, SimCLR, BYOL): no equivariant embedding."""

    def project(self, reps: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.projector(reps["inv"])
        return {"inv": z, "equi": z[:, :0]}

    def project_views(self, reps: list[Tensor]) -> list[Tensor]:
        """Backbone outputs of each view [(B, D)] -> their invariant embeddings [(B, E)]."""
        return [self.projector(self.split(r)["inv"]) for r in reps]
