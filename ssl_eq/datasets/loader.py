"""`ThreadLoader`: a DataLoader-like iterable whose workers are threads of this process.

The native reader copies from memory maps (numpy) and decodes JPEGs (torchvision) without holding the GIL,
so threads run in parallel, and a finished batch needs no inter-process transfer. torch's worker processes
hand every batch over in a fresh shared-memory segment whose first touch costs more than reading raw
shards (BENCHMARKS.md, loader: ~5x fewer views/s at 256 px on 2 cores). Works with any dataset that has
`__getitems__` (ViewDataset / PairDataset / SequenceDataset) and any sampler (EpochSampler under DDP).

Images leave as uint8 unless `normalize=(mean, std)` asks for normalised float32 made in the worker threads
(`ssl_eq.datasets.normalize`); training keeps uint8 and normalises on its device (`BaseMethod.preprocess`,
`augment_views`).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler, SequentialSampler

from ssl_eq.datasets.normalize import Normalize
from ssl_eq.datasets.views import collate
from ssl_eq.utils.threads import single_thread


class ThreadLoader:
    """Yields collate(dataset.__getitems__(indices)) for the batches of `sampler`, in order.

    num_workers threads read ahead up to `prefetch_factor` batches each (0 workers: read in the caller's
    thread). `pin_memory` pins each batch in its worker thread. `sampler` (default: random if `shuffle`,
    else sequential) is exposed as `.sampler`, so Lightning calls its `set_epoch` every epoch.
    `normalize` (mean, std), 3 values each: batch["images"] becomes float32 (images / 255 - mean) / std, same
    shape and memory layout (needs a collate_fn that returns a dict with uint8 "images"), written into pooled
    buffers that are reused once the consumer has let go of a batch (`Normalize(buffers=...)`).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, sampler: Sampler | None = None,
                 num_workers: int = 2, prefetch_factor: int = 2, pin_memory: bool = False, drop_last: bool = False,
                 collate_fn: Callable[[Any], Any] = collate,
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None):
        if not callable(getattr(dataset, "__getitems__", None)):
            raise TypeError(f"ThreadLoader needs a dataset with __getitems__ (batched reads), got {type(dataset)}")
        if num_workers < 0 or prefetch_factor < 1:
            raise ValueError(f"num_workers must be >= 0 and prefetch_factor >= 1, got {num_workers}, "
                             f"{prefetch_factor}")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler = sampler if sampler is not None else (
            RandomSampler(dataset) if shuffle else SequentialSampler(dataset))
        self.batch_sampler = BatchSampler(self.sampler, batch_size, drop_last)
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.pin_memory, self.collate_fn = pin_memory, collate_fn
        # output buffers reused: one per batch in flight or queued, plus two the consumer may hold
        self.normalize = None if normalize is None else Normalize(*normalize, buffers=num_workers * prefetch_factor + 2)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def _load(self, indices: list[Any]) -> Any:
        batch = self.collate_fn(self.dataset.__getitems__(indices))
        if self.normalize is not None:
            if not isinstance(batch, dict) or "images" not in batch:
                raise TypeError(f"ThreadLoader(normalize=...) needs batches that are dicts with 'images', got "
                                f"{type(batch).__name__} from collate_fn {self.collate_fn!r}")
            batch["images"] = self.normalize(batch["images"])
        if self.pin_memory:
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batch

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            yield from map(self._load, self.batch_sampler)
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="ssl_eq-loader",
                                initializer=single_thread) as pool:
            pending: deque[Future] = deque()
            try:
                for indices in self.batch_sampler:
                    pending.append(pool.submit(self._load, indices))
                    if len(pending) >= self.num_workers * self.prefetch_factor:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # the consumer stopped early: drop what is queued, let running reads finish
                for f in pending:
                    f.cancel()
