"""Probe heads (linear / MLP) trained with Adam on frozen, cached features."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn


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
        from ssl_eq.utils.io import atomic_path

        linear = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        payload = {"state_dict": self.head.state_dict(), "in_dim": linear[0].in_features,
                   "out_dim": linear[-1].out_features, "hidden": list(self.hidden), "mean": self.mean,
                   "std": self.std, "meta": meta}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)

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


def fit_head(x_train: Tensor, y_train: Tensor, x_val: Tensor, out_dim: int, loss: str, cfg: HeadConfig,
             on_epoch: Callable[[int, float], None] | None = None,
             on_fitted: Callable[[FittedHead], None] | None = None) -> Tensor:
    """Train a head on (N, D) features -> targets, return its outputs on (M, D) `x_val` -> (M, out_dim).

    y_train: (N, out_dim) float for "mse", (N,) int64 class indices for "cross_entropy".
    `on_epoch(epoch, mean_train_loss)` is called after each epoch (TensorBoard logging), `on_fitted(head)` once
    with the trained head and its input standardisation (to persist it).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown probe loss {loss!r}; expected one of {sorted(LOSSES)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x_train, x_val = x_train.float(), x_val.float()
    mean = std = None
    if cfg.standardize:
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    head = make_head(x_train.shape[1], out_dim, cfg.hidden)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = LOSSES[loss]
    n = x_train.shape[0]
    for epoch in range(cfg.epochs):
        head.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            opt.zero_grad(set_to_none=True)
            batch_loss = loss_fn(head(x_train[idx]), y_train[idx])
            batch_loss.backward()
            opt.step()
            total += float(batch_loss.detach()) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / n)
    head.eval()
    if on_fitted is not None:
        on_fitted(FittedHead(head, list(cfg.hidden), mean, std))
    with torch.no_grad():
        return head(x_val)
