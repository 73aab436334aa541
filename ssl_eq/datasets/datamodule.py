"""`SSLDataModule`: train / val loaders of view, pair or sequence items from a native dataset or, with
`data_format` image_folder / cifar100 / tiny_imagenet, from single images (`ssl_eq.datasets.images`: a pair or
sequence is one image repeated, its views made different by the on-device augmentation).

Images leave as uint8 (B, [M,] 3, H, W); the model converts / normalises them on the device. Under DDP each
rank gets an `EpochSampler` (a DistributedSampler) for its own disjoint part; Lightning sees a
DistributedSampler and does not re-wrap it, and calls its `set_epoch` every epoch.

Exact resume: the train loader is stateful (Lightning's `state_dict` / `load_state_dict` loader interface,
kept in the checkpoint's fit-loop state): it records the epoch and the batches it has handed out, and a
resumed run continues that epoch at the next batch instead of starting it again. Item content depends only on
(seed, epoch, index), so the resumed run sees the same data in the same order.
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_eq.datasets.images import IMAGE_FORMATS, RepeatedViewDataset
from ssl_eq.datasets.loader import ThreadLoader
from ssl_eq.datasets.native import NativeDataset
from ssl_eq.datasets.relative import DEFAULT_COLOUR_TARGETS, DEFAULT_QUATERNION_SIGN, check_conventions
from ssl_eq.datasets.views import (EpochSampler, FixedPairDataset, FixedSequenceDataset, PairDataset,
                                   SequenceDataset, ViewDataset, collate)
from ssl_eq.utils.identity import dataset_digest

# kind -> (train dataset factory, deterministic val dataset factory); factories take (source, split, dm)
# for multi-view (native) sources; single-image sources use SINGLE_IMAGE_KINDS
DATASET_KINDS: dict[str, tuple[Callable[..., Dataset], Callable[..., Dataset]]] = {
    "view": (lambda src, split, dm: ViewDataset(src, split),
             lambda src, split, dm: ViewDataset(src, split)),
    "pair": (lambda src, split, dm: PairDataset(src, split, seed=dm.seed, **dm.conventions),
             lambda src, split, dm: FixedPairDataset(src, split, seed=dm.seed, **dm.conventions)),
    "sequence": (lambda src, split, dm: SequenceDataset(src, split, num_views=dm.num_views, seed=dm.seed,
                                                        **dm.conventions),
                 lambda src, split, dm: FixedSequenceDataset(src, split, num_views=dm.num_views, seed=dm.seed,
                                                             **dm.conventions)),
}
SINGLE_IMAGE_KINDS: dict[str, Callable[..., Dataset]] = {
    "view": lambda src, split, dm: ViewDataset(src, split),
    "pair": lambda src, split, dm: RepeatedViewDataset(src, split, num_views=2),
    "sequence": lambda src, split, dm: RepeatedViewDataset(src, split, num_views=dm.num_views),
}
SOURCES: dict[str, Callable[..., object]] = {
    "native": lambda root, image_size: NativeDataset(root),
    **IMAGE_FORMATS,
}


class ResumableEpochSampler(EpochSampler):
    """An EpochSampler that can start one epoch part-way: the first `skip` items of epoch `skip_epoch` are left out
    once (a resumed run)."""

    skip_epoch, skip = -1, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        items = super().__iter__()
        if self.epoch == self.skip_epoch:
            items = itertools.islice(items, self.skip, None)
        self.skip_epoch = -1
        return items


class ResumableLoader:
    """Mixin for a loader over a ResumableEpochSampler: Lightning's stateful-loader interface.

    state_dict: {"epoch", "batches" handed out this epoch}; load_state_dict makes the next iteration of that
    epoch start after those batches (the sampler skips their items, nothing is read for them).
    """

    sampler: ResumableEpochSampler
    batch_size: int
    _yielded = 0

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batches handed out in it): the last batch's place in the run, the same after a resume."""
        return int(self.sampler.epoch), int(self._yielded)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._yielded)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.skip_epoch, self.sampler.skip = int(state["epoch"]), int(state["batches"]) * self.batch_size

    def __iter__(self) -> Iterator[Any]:
        self._yielded = self.sampler.skip // self.batch_size if self.sampler.epoch == self.sampler.skip_epoch else 0
        for batch in super().__iter__():  # type: ignore[misc]
            self._yielded += 1
            yield batch


class ResumableThreadLoader(ResumableLoader, ThreadLoader):
    """The thread loader of the train split, resumable mid-epoch."""


class ResumableDataLoader(ResumableLoader, DataLoader):
    """torch's DataLoader (worker processes) of the train split, resumable mid-epoch."""


def _threads(cls: type) -> Callable[..., ThreadLoader]:
    return lambda dm, ds, sampler, drop_last: cls(ds, batch_size=dm.batch_size, sampler=sampler,
                                                  num_workers=dm.num_workers, pin_memory=dm.pin_memory,
                                                  drop_last=drop_last)


def _processes(cls: type) -> Callable[..., DataLoader]:
    return lambda dm, ds, sampler, drop_last: cls(
        ds, batch_size=dm.batch_size, sampler=sampler, num_workers=dm.num_workers, collate_fn=collate,
        pin_memory=dm.pin_memory, drop_last=drop_last, persistent_workers=dm.persistent_workers and dm.num_workers > 0)


# loader -> (train factory, val factory), each (datamodule, dataset, sampler, drop_last) -> loader: worker threads
# (default, fastest for native shards, ssl_eq.datasets.loader) or torch's worker processes
LOADERS: dict[str, tuple[Callable[..., DataLoader | ThreadLoader], Callable[..., DataLoader | ThreadLoader]]] = {
    "threads": (_threads(ResumableThreadLoader), _threads(ThreadLoader)),
    "processes": (_processes(ResumableDataLoader), _processes(DataLoader)),
}


class SSLDataModule(pl.LightningDataModule):
    """Loaders for dataset `root` (native format). kind: "view" | "pair" | "sequence" (num_views per item).

    Arguments mirror the `data` section of ssl_eq/configs/pretrain.yaml; pin_memory None pins when CUDA is available.
    `num_replicas` / `rank` default to the attached trainer's world size / global rank (1 / 0 without one).
    `quaternion_sign` / `colour_targets`: conventions of the actions in pair / sequence batches
    (`ssl_eq.datasets.relative`).
    """

    def __init__(self, root: str | os.PathLike, kind: str = "pair", batch_size: int = 64, num_workers: int = 0,
                 num_views: int = 3, seed: int = 0, pin_memory: bool | None = None, persistent_workers: bool = True,
                 drop_last: bool = True, train_split: str = "train", val_split: str = "val",
                 num_replicas: int | None = None, rank: int | None = None, loader: str = "threads",
                 quaternion_sign: str = DEFAULT_QUATERNION_SIGN, colour_targets: str = DEFAULT_COLOUR_TARGETS,
                 data_format: str = "native", image_size: int | None = None):
        super().__init__()
        if data_format not in SOURCES:
            raise ValueError(f"data.format: unknown dataset format {data_format!r}; valid: {sorted(SOURCES)}")
        self.data_format, self.image_size = data_format, image_size
        if kind not in DATASET_KINDS:
            raise ValueError(f"kind must be one of {sorted(DATASET_KINDS)}, got {kind!r}")
        if loader not in LOADERS:
            raise ValueError(f"loader must be one of {sorted(LOADERS)}, got {loader!r}")
        check_conventions(quaternion_sign, colour_targets)
        self.conventions = {"quaternion_sign": quaternion_sign, "colour_targets": colour_targets}
        self.loader = loader
        self.root, self.kind, self.batch_size, self.num_workers = root, kind, batch_size, num_workers
        self.num_views, self.seed = num_views, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers, self.drop_last = persistent_workers, drop_last
        self.train_split, self.val_split = train_split, val_split
        self.num_replicas, self.rank = num_replicas, rank
        self.source: Any = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.source is None:
            self.source = SOURCES[self.data_format](self.root, self.image_size)
            if self.kind == "sequence" and self.source.views > 1 and not 1 <= self.num_views <= self.source.views:
                raise ValueError(f"{self.root}: sequence items need {self.num_views} views but the dataset has "
                                 f"{self.source.views} per object (data.num_views, or method.seq_len M for seq-JEPA, "
                                 f"which loads M + 1): valid M for seq-JEPA is 1..{self.source.views - 1}")
            train_factory, val_factory = DATASET_KINDS[self.kind]
            if self.source.views == 1:
                train_factory = val_factory = SINGLE_IMAGE_KINDS[self.kind]
            self.train_set = train_factory(self.source, self.train_split, self)
            self.val_set = val_factory(self.source, self.val_split, self)

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        replicas = self.num_replicas if self.num_replicas is not None else (trainer.world_size if trainer else 1)
        rank = self.rank if self.rank is not None else (trainer.global_rank if trainer else 0)
        return replicas, rank

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader | ThreadLoader:
        replicas, rank = self._ranks()
        sampler = (ResumableEpochSampler if train else EpochSampler)(
            dataset, num_replicas=replicas, rank=rank, shuffle=train, seed=self.seed, drop_last=train and self.drop_last)
        return LOADERS[self.loader][0 if train else 1](self, dataset, sampler, train and self.drop_last)

    def train_dataloader(self) -> DataLoader | ThreadLoader:
        self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | ThreadLoader:
        self.setup("validate")
        return self._loader(self.val_set, train=False)

    @property
    def info(self) -> dict[str, Any]:
        """What a method needs to know about the data: image size, latent schema, classes, views, and the
        content digest of a native dataset (None for other formats)."""
        self.setup()
        src = self.source
        manifest = getattr(src, "manifest", None)
        return {"image_size": src.image_size, "latent_schema": src.latent_schema, "variant": src.variant,
                "num_classes": len(src.class_names), "views": src.views,
                "digest": dataset_digest(manifest) if isinstance(manifest, dict) else None}
