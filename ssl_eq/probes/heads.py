"""Probe heads (linear / MLP) trained with Adam on frozen, cached features.

`train_head` draws fresh examples every epoch from a `ViewTuples` (cached per-view features, vectorised
indexing) and can choose its epoch on held-out train objects: with `holdout_fraction` > 0 a random part of the
train objects is set aside (fixed examples), the head is scored on it after every epoch, training stops after
`patience` epochs without improvement, and the head of the epoch with the lowest held-out loss is the one
evaluated. With `holdout_fraction` 0 the last epoch's head is evaluated (the papers' scripts).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from ssl_eq.probes.sampling import ViewTuples, split_objects

STD_EPS = 1e-6
PREDICT_CHUNK = 4096


@dataclass
class HeadConfig:
    """Optimisation of one probe head (values come from configs/probe/*.yaml)."""
    hidden: list[int] = field(default_factory=list)   # [] = linear head
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    standardize: bool = True                           # z-score inputs with the training statistics
    seed: int = 0
    holdout_fraction: float = 0.0                      # > 0: choose the epoch on this part of the train objects
    patience: int | None = None                        # stop after this many epochs without held-out improvement


@dataclass
class FitResult:
    """Outputs (M, out_dim) on the evaluation rows and how the epoch was chosen."""
    pred: Tensor
    epoch: int                 # 1-based epoch of the evaluated head
    epochs_run: int
    holdout_loss: float | None  # held-out loss at `epoch` (None without selection)

    def summary(self) -> dict[str, float | int | None]:
        return {"epoch": self.epoch, "epochs_run": self.epochs_run, "holdout_loss": self.holdout_loss}


def make_head(in_dim: int, out_dim: int, hidden: list[int]) -> nn.Module:
    """Linear head when `hidden` is empty, else an MLP with ReLU between Linear layers."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": nn.functional.mse_loss,
    "cross_entropy": nn.functional.cross_entropy,
}


def predict(head: nn.Module, examples: ViewTuples, rows: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """(N, 1 + arity) rows -> (N, out_dim) CPU outputs of `head` in eval mode, in chunks."""
    head.eval()
    with torch.no_grad():
        return torch.cat([head(examples.inputs(r).to(device)).cpu() for r in rows.split(PREDICT_CHUNK)])


def train_head(train: ViewTuples, evaluation: ViewTuples, eval_rows: Tensor, out_dim: int, loss: str,
               cfg: HeadConfig, on_epoch: Callable[[int, float], None] | None = None,
               device: torch.device | str = "cpu") -> FitResult:
    """Train a head on examples drawn afresh from `train` every epoch; return its outputs on `eval_rows` of
    `evaluation` (same features layout, e.g. the val split).

    Targets: (N, out_dim) float for "mse", (N,) int64 class indices for "cross_entropy".
    `on_epoch(epoch, mean_train_loss)` is called after each epoch (TensorBoard logging).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown probe loss {loss!r}; expected one of {sorted(LOSSES)}")
    loss_fn = LOSSES[loss]
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    holdout, hold_rows = None, None
    if cfg.holdout_fraction > 0:
        kept, held = split_objects(train.object_ids, cfg.holdout_fraction, gen)
        train, holdout = train.subset(kept), train.subset(held)
    if cfg.standardize:
        mean, std = train.feature_stats(STD_EPS)
        train, evaluation = train.standardized(mean, std), evaluation.standardized(mean, std)
        holdout = holdout.standardized(mean, std) if holdout is not None else None
    if holdout is not None:
        hold_rows = holdout.draw(gen)
        hold_y = holdout.target(hold_rows)
    head = make_head(train.features.shape[-1] * train.arity, out_dim, cfg.hidden).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = (float("inf"), cfg.epochs, None)  # (held-out loss, epoch, head state)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        rows = train.draw(gen)
        targets = train.target(rows)
        total = 0.0
        for idx in torch.randperm(len(rows), generator=gen).split(cfg.batch_size):
            opt.zero_grad(set_to_none=True)
            batch_loss = loss_fn(head(train.inputs(rows[idx]).to(device)), targets[idx].to(device))
            batch_loss.backward()
            opt.step()
            total += float(batch_loss.detach()) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch - 1, total / len(rows))
        if holdout is None:
            continue
        held_loss = float(loss_fn(predict(head, holdout, hold_rows, device), hold_y))
        if held_loss < best[0]:
            best = (held_loss, epoch, copy.deepcopy(head.state_dict()))
        elif cfg.patience is not None and epoch - best[1] >= cfg.patience:
            break
    if best[2] is not None:
        head.load_state_dict(best[2])
    return FitResult(pred=predict(head, evaluation, eval_rows, device), epoch=best[1] if holdout is not None else epoch,
                     epochs_run=epoch, holdout_loss=best[0] if holdout is not None else None)


def fit_head(x_train: Tensor, y_train: Tensor, x_val: Tensor, out_dim: int, loss: str, cfg: HeadConfig,
             on_epoch: Callable[[int, float], None] | None = None) -> Tensor:
    """Train a head on fixed (N, D) features -> targets, return its outputs on (M, D) `x_val` -> (M, out_dim).

    y_train: (N, out_dim) float for "mse", (N,) int64 class indices for "cross_entropy". Every epoch visits every
    training row (`train_head` with one "view" per row).
    """
    train = ViewTuples(x_train[:, None], target=lambda rows: y_train[rows[:, 0]])
    val = ViewTuples(x_val[:, None], target=lambda rows: rows[:, 0])
    return train_head(train, val, val.draw(torch.Generator()), out_dim, loss, cfg, on_epoch).pred
