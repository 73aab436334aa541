"""Probe heads (linear / MLP) trained with Adam on frozen, cached features.

`train_head` draws fresh examples every epoch from a `ViewTuples` (cached per-view features, vectorised
indexing) and can choose its epoch on held-out train objects: with `holdout_fraction` > 0 a random part of the
train objects is set aside (fixed examples), the head is scored on it after every epoch, training stops after
`patience` epochs without improvement, and the head of the epoch with the lowest held-out loss is the one
evaluated. With `holdout_fraction` 0 the last epoch's head is evaluated (the papers' scripts).
`start_from_mean`: the output layer starts as the constant prediction of the training targets' mean (weights 0,
bias = mean; log class frequencies for classification), and this "epoch 0" head is a selection candidate: features
that carry nothing usable on held-out objects then score the mean baseline instead of the head's overfitting.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ssl_eq.probes.sampling import ViewTuples, split_objects
from ssl_eq.utils import threads

STD_EPS = 1e-6
PREDICT_CHUNK = 4096


@dataclass
class HeadConfig:
    """Optimisation of one probe head (values come from ssl_eq/configs/probe/*.yaml)."""
    hidden: list[int] = field(default_factory=list)   # [] = linear head
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    standardize: bool = True                           # z-score inputs with the training statistics
    seed: int = 0
    holdout_fraction: float = 0.0                      # > 0: choose the epoch on this part of the train objects
    patience: int | None = None                        # stop after this many epochs without held-out improvement
    start_from_mean: bool = False                      # output layer starts as the mean prediction (epoch 0)


@dataclass
class FitResult:
    """Outputs (M, out_dim) on the evaluation rows and how the epoch was chosen."""
    pred: Tensor
    epoch: int                 # 1-based epoch of the evaluated head (0: the initial mean prediction)
    epochs_run: int
    holdout_loss: float | None  # held-out loss at `epoch` (None without selection)
    train_examples: int         # examples drawn per epoch
    holdout_examples: int

    def summary(self) -> dict[str, float | int | None]:
        return {"epoch": self.epoch, "epochs_run": self.epochs_run, "holdout_loss": self.holdout_loss,
                "train_examples_per_epoch": self.train_examples, "holdout_examples": self.holdout_examples,
                "eval_examples": len(self.pred)}


def make_head(in_dim: int, out_dim: int, hidden: list[int]) -> nn.Module:
    """Linear head when `hidden` is empty, else an MLP with ReLU between Linear layers."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class FittedHead:
    """A trained probe head with its input standardisation: `predict(x (N, D)) -> (N, out_dim)`."""
    head: nn.Module
    hidden: list[int]
    mean: Tensor | None = None                         # (D,) training mean when standardised
    std: Tensor | None = None                          # (D,) training std when standardised

    def predict(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.mean is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        with torch.no_grad():
            return self.head.to(x.device).eval()(x)

    def save(self, path: str | Path, **meta: Any) -> Path:
        """Atomically write the head (state dict, sizes, standardisation) and JSON-able `meta` to `path`."""
        from ssl_eq.utils.io import save_torch_atomic

        linear = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        payload = {"state_dict": self.head.state_dict(), "in_dim": linear[0].in_features,
                   "out_dim": linear[-1].out_features, "hidden": list(self.hidden), "mean": self.mean,
                   "std": self.std, "meta": meta}
        return save_torch_atomic(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple["FittedHead", dict[str, Any]]:
        """(head, meta) from a file written by `save`."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        head = make_head(payload["in_dim"], payload["out_dim"], payload["hidden"])
        head.load_state_dict(payload["state_dict"])
        return cls(head.eval(), payload["hidden"], payload["mean"], payload["std"]), payload["meta"]


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": nn.functional.mse_loss,
    "cross_entropy": nn.functional.cross_entropy,
}


def _start_from_mean(head: nn.Module, targets: Tensor, loss: str, out_dim: int) -> None:
    """Set the last Linear of `head` to the constant prediction of (N, out_dim) / (N,) class `targets`."""
    last = head[-1]
    if loss == "cross_entropy":
        freq = torch.bincount(targets, minlength=out_dim).float() / len(targets)
        bias = freq.clamp_min(1e-6).log()
    else:
        bias = targets.float().mean(0)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias.to(last.bias.device))


def predict(head: nn.Module, examples: ViewTuples, rows: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """(N, 1 + arity) rows -> (N, out_dim) CPU outputs of `head` in eval mode, in chunks."""
    head.eval()
    with torch.no_grad():
        return torch.cat([head(examples.inputs(r).to(device)).cpu() for r in rows.split(PREDICT_CHUNK)])


class _Selection:
    """Scores a head on fixed held-out examples and keeps the state of the epoch with the lowest loss."""

    def __init__(self, holdout: ViewTuples, gen: torch.Generator, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 device: torch.device | str):
        self.holdout, self.loss_fn, self.device = holdout, loss_fn, device
        self.rows = holdout.draw(gen)
        self.targets = holdout.target(self.rows)
        self.loss, self.epoch, self.state = float("inf"), 0, None

    def update(self, head: nn.Module, epoch: int) -> None:
        loss = float(self.loss_fn(predict(head, self.holdout, self.rows, self.device), self.targets))
        if loss < self.loss:
            self.loss, self.epoch, self.state = loss, epoch, copy.deepcopy(head.state_dict())


def train_head(train: ViewTuples, evaluation: ViewTuples, eval_rows: Tensor, out_dim: int, loss: str,
               cfg: HeadConfig, on_epoch: Callable[[int, float], None] | None = None,
               device: torch.device | str = "cpu",
               on_fitted: Callable[[FittedHead], None] | None = None) -> FitResult:
    """Train a head on examples drawn afresh from `train` every epoch; return its outputs on `eval_rows` of
    `evaluation` (same features layout, e.g. the val split).

    Targets: (N, out_dim) float for "mse", (N,) int64 class indices for "cross_entropy".
    `on_epoch(epoch, mean_train_loss)` is called after each epoch (TensorBoard logging), `on_fitted(head)` once
    with the selected head and its input standardisation (to persist it).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown probe loss {loss!r}; expected one of {sorted(LOSSES)}")
    loss_fn = LOSSES[loss]
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    holdout = None
    if cfg.holdout_fraction > 0:
        kept, held = split_objects(train.object_ids, cfg.holdout_fraction, gen)
        # held-out examples are drawn as the evaluation ones are (same number per object), once
        train, holdout = train.subset(kept), replace(train.subset(held), per_object=evaluation.per_object)
    mean = std = None
    if cfg.standardize:
        mean, std = train.feature_stats(STD_EPS)
        train, evaluation = train.standardized(mean, std), evaluation.standardized(mean, std)
        holdout = holdout.standardized(mean, std) if holdout is not None else None
    selection = _Selection(holdout, gen, loss_fn, device) if holdout is not None else None
    head = make_head(train.features.shape[-1] * train.arity, out_dim, cfg.hidden).to(device)
    # fused: one kernel per parameter instead of ~10 passes (~20 % of a demo probe's time); same update up to rounding
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    rows = train.draw(gen)
    targets = train.target(rows)
    if cfg.start_from_mean:
        _start_from_mean(head, targets, loss, out_dim)
        if selection is not None:
            selection.update(head, 0)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        if epoch > 1:  # fresh examples every epoch
            rows = train.draw(gen)
            targets = train.target(rows)
        total = 0.0
        for idx in torch.randperm(len(rows), generator=gen).split(cfg.batch_size):
            threads.tick()
            opt.zero_grad(set_to_none=True)
            batch_loss = loss_fn(head(train.inputs(rows[idx]).to(device)), targets[idx].to(device))
            batch_loss.backward()
            opt.step()
            total += float(batch_loss.detach()) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch - 1, total / len(rows))
        if selection is not None:
            selection.update(head, epoch)
            if cfg.patience is not None and epoch - selection.epoch >= cfg.patience:
                break
    if selection is not None and selection.state is not None:
        head.load_state_dict(selection.state)
    if on_fitted is not None:  # the head's input is the arity views' features side by side
        on_fitted(FittedHead(head, list(cfg.hidden), *(None if s is None else s.repeat(train.arity)
                                                        for s in (mean, std))))
    return FitResult(pred=predict(head, evaluation, eval_rows, device),
                     epoch=selection.epoch if selection is not None else epoch, epochs_run=epoch,
                     holdout_loss=selection.loss if selection is not None else None, train_examples=len(rows),
                     holdout_examples=len(selection.rows) if selection is not None else 0)


def fit_head(x_train: Tensor, y_train: Tensor, x_val: Tensor, out_dim: int, loss: str, cfg: HeadConfig,
             on_epoch: Callable[[int, float], None] | None = None,
             on_fitted: Callable[[FittedHead], None] | None = None) -> Tensor:
    """Train a head on fixed (N, D) features -> targets, return its outputs on (M, D) `x_val` -> (M, out_dim).

    y_train: (N, out_dim) float for "mse", (N,) int64 class indices for "cross_entropy". Every epoch visits every
    training row (`train_head` with one "view" per row); `on_fitted` as in `train_head`.
    """
    train = ViewTuples(x_train[:, None], target=lambda rows: y_train[rows[:, 0]])
    val = ViewTuples(x_val[:, None], target=lambda rows: rows[:, 0])
    return train_head(train, val, val.draw(torch.Generator()), out_dim, loss, cfg, on_epoch,
                      on_fitted=on_fitted).pred
