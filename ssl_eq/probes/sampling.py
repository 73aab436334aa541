"""Probe examples drawn from cached object-major features (K, V, D) by vectorised indexing (no feature pass).

An example is one view (classification, per-view targets) or an ordered pair of two distinct views of one
object (relative targets); its input is the views' features concatenated, its target a function of the index
rows (object, view[, view]). Each `draw` gives fresh rows, so a training loop that draws once per epoch sees a
new random view / pair per object every epoch, as the SIE / EquiCaps evaluation scripts do, from one cache.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

PAIR = 2  # views per example of the relative probes


@dataclass(frozen=True)
class ViewTuples:
    """Examples of `arity` views of one object, drawn from `objects` (None: all K objects).

    features: (K, V, D) per-view features; target: (N, 1 + arity) index rows -> (N, ...) targets.
    per_object: examples per object and draw; None = every view of every object (arity 1 only).
    mean / std: (D,) per-view standardisation applied by `inputs` (None: raw features).
    """
    features: Tensor
    target: Callable[[Tensor], Tensor]
    arity: int = 1
    per_object: int | None = None
    objects: Tensor | None = None
    mean: Tensor | None = None
    std: Tensor | None = None

    def __post_init__(self) -> None:
        views = self.features.shape[1]
        if self.arity not in (1, PAIR):
            raise ValueError(f"examples are single views or pairs, got arity {self.arity}")
        if self.arity == PAIR and views < PAIR:
            raise ValueError(f"pairs need at least 2 views per object, the features have {views}")
        if self.arity == PAIR and self.per_object is None:
            raise ValueError("pair examples need a number of pairs per object (per_object), not every view")
        if self.per_object is not None and self.per_object < 1:
            raise ValueError(f"examples per object must be >= 1 or null (every view), got {self.per_object}")

    @property
    def object_ids(self) -> Tensor:
        """(K',) the objects examples are drawn from."""
        return torch.arange(self.features.shape[0]) if self.objects is None else self.objects

    def draw(self, gen: torch.Generator) -> Tensor:
        """(N, 1 + arity) int64 rows (object, view[, other view]); pairs are uniform over ordered distinct views."""
        objs, views = self.object_ids, self.features.shape[1]
        if self.per_object is None:
            return torch.stack([objs.repeat_interleave(views), torch.arange(views).repeat(len(objs))], 1)
        obj = objs.repeat_interleave(self.per_object)
        a = torch.randint(views, (len(obj),), generator=gen)
        if self.arity == 1:
            return torch.stack([obj, a], 1)
        b = (a + torch.randint(1, views, (len(obj),), generator=gen)) % views
        return torch.stack([obj, a, b], 1)

    def inputs(self, rows: Tensor) -> Tensor:
        """(N, 1 + arity) rows -> (N, arity · D) float32 inputs (standardised per view when mean / std are set)."""
        x = self.features[rows[:, :1], rows[:, 1:]].float()  # (N, arity, D)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.flatten(1)

    def subset(self, objects: Tensor) -> ViewTuples:
        """The same examples restricted to (K',) `objects`."""
        return replace(self, objects=objects)

    def standardized(self, mean: Tensor, std: Tensor) -> ViewTuples:
        return replace(self, mean=mean, std=std)

    def feature_stats(self, eps: float) -> tuple[Tensor, Tensor]:
        """(D,) mean and std (clamped to `eps`) of the features of every view of `objects`."""
        f = self.features[self.object_ids].flatten(0, 1).float()
        return f.mean(0), f.std(0).clamp_min(eps)


def split_objects(objects: Tensor, fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(K,) objects -> (kept, held out): a random `fraction` of them (at least one of each) held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction}")
    if len(objects) < 2:
        raise ValueError(f"a held-out part needs at least 2 train objects, got {len(objects)}")
    n = min(max(round(fraction * len(objects)), 1), len(objects) - 1)
    perm = objects[torch.randperm(len(objects), generator=gen)]
    return perm[n:].sort().values, perm[:n].sort().values
