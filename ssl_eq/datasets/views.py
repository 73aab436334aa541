"""View / pair / sequence datasets and the epoch-aware distributed sampler (docs/architecture.md, "Batches").

A *source* is a `NativeDataset` or a `ThreeDIEBenchFolder`: it has `views`, `labels` (N,), `__len__`,
`split_indices(split)`, `read_views(objs, views) -> uint8 (n, 3, H, W)` and `read_latents(obj, views) -> (n, D)`.

Random views are drawn from an RNG seeded by (seed, epoch, item index), so an item is reproducible and the
same whichever worker or rank loads it. The epoch reaches the workers through the sampler: `EpochSampler`
yields (epoch, index) pairs, which `__getitem__` accepts besides plain indices (plain indices use the
epoch last given to `set_epoch`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, default_collate

from ssl_eq.datasets.relative import (DEFAULT_COLOUR_TARGETS, DEFAULT_QUATERNION_SIGN, check_conventions,
                                      relative_transform, sequence_actions)

Index = int | tuple[int, int]


def _objects(source: Any, split: str | None) -> np.ndarray:
    return np.arange(len(source), dtype=np.int64) if split is None else source.split_indices(split)


class ViewDataset(Dataset):
    """Every view of every object of `split` (None: all objects). Item: images uint8 (3, H, W), latents (D,),
    label, object_index, view_index."""

    def __init__(self, source: Any, split: str | None = "train"):
        self.source, self.split = source, split
        self.objects = _objects(source, split)

    def __len__(self) -> int:
        return len(self.objects) * self.source.views

    def __getitem__(self, index: Index) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[Index]) -> ItemBatch:
        """Batched read used by the DataLoader (pass `collate_fn=collate` to skip re-stacking the items)."""
        flat = np.array([i[1] if isinstance(i, tuple) else i for i in indices], dtype=np.int64)  # (epoch, index)
        objs, views = self.objects[flat // self.source.views], flat % self.source.views
        return ItemBatch({
            "images": self.source.read_views(objs, views).cpu(),
            "latents": torch.from_numpy(self.source.read_latents(objs, views).astype(np.float32)),
            "label": torch.from_numpy(self.source.labels[objs].astype(np.int64)),
            "object_index": torch.from_numpy(objs),
            "view_index": torch.from_numpy(views),
        })


class ItemBatch(Sequence):
    """What `__getitems__` returns: `.batch`, a dict of (B, ...) tensors, which `collate` hands on as it is, seen
    as a sequence of B item dicts (views into the batch tensors, cut on access) so any collate_fn works."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch
        self._len = next(iter(batch.values())).shape[0]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:  # type: ignore[override]
        if not -self._len <= i < self._len:
            raise IndexError(f"item {i} of a batch of {self._len}")
        return {k: v[i] for k, v in self.batch.items()}


def collate(items: list[Any]) -> Any:
    """DataLoader collate_fn: the ready batch of an `ItemBatch`, else torch's default_collate."""
    return items.batch if isinstance(items, ItemBatch) else default_collate(items)


class MultiViewDataset(Dataset):
    """One item per object of `split`: `num_views` distinct views in random order plus the actions between
    consecutive views. `fixed=True` draws the same views every epoch (evaluation).

    Item: images uint8 (M, 3, H, W), latents (M, D), label, object_index, view_indices (M,), and the keys of
    `relative_transform`, each (M-1, ...), in the `quaternion_sign` / `colour_targets` conventions
    (`ssl_eq.datasets.relative`).
    """

    def __init__(self, source: Any, split: str | None = "train", num_views: int = 3, seed: int = 0,
                 fixed: bool = False, quaternion_sign: str = DEFAULT_QUATERNION_SIGN,
                 colour_targets: str = DEFAULT_COLOUR_TARGETS):
        if not 2 <= num_views <= source.views:
            raise ValueError(f"num_views must be in [2, {source.views}] (views per object), got {num_views}")
        check_conventions(quaternion_sign, colour_targets)
        self.conventions = {"quaternion_sign": quaternion_sign, "colour_targets": colour_targets}
        self.source, self.split, self.num_views = source, split, num_views
        self.seed, self.fixed, self.epoch = seed, fixed, 0
        self.objects = _objects(source, split)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices (the sampler passes its own epoch with each index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.objects)

    def view_indices(self, index: int, epoch: int) -> np.ndarray:
        """(M,) distinct view indices of item `index` at `epoch` (epoch ignored when fixed)."""
        rng = np.random.default_rng((self.seed, 0 if self.fixed else epoch, index))
        return rng.choice(self.source.views, self.num_views, replace=False)

    def __getitem__(self, index: Index) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[Index]) -> ItemBatch:
        """Batched read: one gather / decode for all views of all items, actions computed batched."""
        pairs = [i if isinstance(i, tuple) else (self.epoch, i) for i in indices]  # (epoch, index)
        objs = self.objects[np.array([i for _, i in pairs], dtype=np.int64)]
        views = np.stack([self.view_indices(i, e) for e, i in pairs]).astype(np.int64)  # (B, M)
        flat_objs = np.repeat(objs, self.num_views)
        b, m = views.shape
        latents = torch.from_numpy(self.source.read_latents(flat_objs, views.reshape(-1)).astype(np.float32))
        latents = latents.reshape(b, m, -1)
        images = self.source.read_views(flat_objs, views.reshape(-1)).cpu()
        batch = {
            "images": images.reshape((b, m) + images.shape[1:]),
            "latents": latents,
            "label": torch.from_numpy(self.source.labels[objs].astype(np.int64)),
            "object_index": torch.from_numpy(objs),
            "view_indices": torch.from_numpy(views),
        }
        batch.update(self._actions(latents))
        return ItemBatch(batch)

    def _actions(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, M, D) -> actions between consecutive views, each (B, M-1, ...)."""
        return sequence_actions(latents, **self.conventions)


class SequenceDataset(MultiViewDataset):
    """M random distinct views per object and the M-1 actions between consecutive views (fresh each epoch)."""


class PairDataset(MultiViewDataset):
    """Two different random views per object (fresh each epoch) and the transformation view 1 -> view 2:
    images (2, 3, H, W), latents (2, D), view_indices (2,), rel_rotation_quat (4,), ... (no leading M-1 axis)."""

    def __init__(self, source: Any, split: str | None = "train", seed: int = 0, fixed: bool = False,
                 **conventions: str):
        super().__init__(source, split, num_views=2, seed=seed, fixed=fixed, **conventions)

    def _actions(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 2, D) -> view 1 -> view 2 transformation, each (B, ...)."""
        return relative_transform(latents[:, 0], latents[:, 1], **self.conventions)


class FixedPairDataset(PairDataset):
    """PairDataset whose pairs depend only on `seed` (same every epoch): for evaluation."""

    def __init__(self, source: Any, split: str | None = "val", seed: int = 0, **conventions: str):
        super().__init__(source, split, seed=seed, fixed=True, **conventions)


class FixedSequenceDataset(SequenceDataset):
    """SequenceDataset whose sequences depend only on `seed` (same every epoch): for evaluation."""

    def __init__(self, source: Any, split: str | None = "val", num_views: int = 3, seed: int = 0, **conventions: str):
        super().__init__(source, split, num_views=num_views, seed=seed, fixed=True, **conventions)


class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (each rank a disjoint 1/world_size part, padded to equal length when
    drop_last is False; shuffled by seed + epoch) that yields (epoch, index) so datasets in worker processes
    know the epoch. Works without torch.distributed: pass num_replicas / rank (defaults 1 / 0)."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        return ((self.epoch, int(i)) for i in super().__iter__())

    def __len__(self) -> int:
        return self.num_samples

