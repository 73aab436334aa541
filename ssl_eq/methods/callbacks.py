"""Lightning callbacks of `ssl-eq pretrain`: one step-based progress bar, a TensorBoard grid of a batch's views."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf
from pytorch_lightning.loggers import TensorBoardLogger

from ssl_eq.utils import threads

VIEWS_TAG = "train/batch_views"


class StepProgressBar(TQDMProgressBar):
    """One bar over the run's optimiser steps (trainer.max_steps; the epochs' steps when it is -1), starting at
    the restored step of a resumed run, with the loss, the prog-bar metrics and the throughput in images/s.

    An epoch here is one pass over the training objects (one pair or sequence per object), often a few steps:
    a per-epoch bar (Lightning's default) would restart every few steps.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(trainer.estimated_stepping_batches))
        bar.initial = bar.n = trainer.global_step
        bar.set_description("steps")

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        """The bar spans the whole run: nothing to reset."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is None or not self._should_update(step, bar.total):
            return
        bar.n = step
        metrics = self.get_metrics(trainer, pl_module)
        fmt = bar.format_dict
        rate = (fmt["n"] - fmt["initial"]) / fmt["elapsed"] if fmt["elapsed"] > 0 else 0.0  # steps/s this process
        if rate and isinstance(batch, dict) and "images" in batch:
            images = batch["images"].shape[0] * batch["images"].shape[1] * trainer.world_size  # (B, V, 3, S, S)
            metrics["img/s"] = f"{rate * images:.0f}"
        bar.set_postfix(metrics, refresh=False)
        bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The bar stays open across epochs (closed in on_train_end)."""


def views_figure(images: torch.Tensor, actions: torch.Tensor | None, action_name: str | None) -> Any:
    """images uint8 (B, V, 3, S, S), actions (B, A) or (B, V-1, A) between consecutive views -> a matplotlib
    figure: one row per item, its views left to right, each view after the first titled with its action."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, v = images.shape[:2]
    fig, axes = plt.subplots(b, v, figsize=(1.9 * v, 1.9 * b), squeeze=False)
    for i in range(b):
        steps = None if actions is None else actions[i].reshape(-1, actions.shape[-1]).float()
        for j in range(v):
            ax = axes[i, j]
            ax.imshow(images[i, j].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if j and steps is not None and j - 1 < len(steps):
                ax.set_title(" ".join(f"{a:+.2f}" for a in steps[j - 1].tolist()), fontsize=6)
            elif j == 0 and i == 0:
                ax.set_title(f"view 0 → ({action_name or 'no action'})", fontsize=6)
    fig.tight_layout()
    return fig


class ThreadTicks(pl.Callback):
    """Applies the thread policy's current choice (ssl_eq.utils.threads) before every training / validation step."""

    def on_train_batch_start(self, *args: Any) -> None:
        threads.tick()

    def on_validation_batch_start(self, *args: Any) -> None:
        threads.tick()


class BatchViews(pl.Callback):
    """TensorBoard image `train/batch_views`: the first `items` items of the first training batch of a fit,
    with the action between consecutive views (the method's action key, else the relative rotation)."""

    def __init__(self, items: int = 8) -> None:
        self.items = items
        self.logged = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.logged or not trainer.is_global_zero:
            return
        self.logged = True
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not writers or not isinstance(batch, dict) or "images" not in batch:
            return
        import matplotlib.pyplot as plt

        key = getattr(pl_module, "action_key", None) or "rel_rotation_quat"
        actions = batch.get(key)
        fig = views_figure(batch["images"][: self.items], None if actions is None else actions[: self.items],
                           key if actions is not None else None)
        for writer in writers:
            writer.add_figure(VIEWS_TAG, fig, global_step=trainer.global_step, close=False)
        plt.close(fig)
