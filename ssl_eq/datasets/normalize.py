"""uint8 images -> normalised float32, (x / 255 - mean) / std, in two passes instead of the plain formula's four.

The plain formula makes four passes over float32 memory (convert, / 255, - mean, / std), each writing a fresh
tensor. `Normalize` converts once into its output (`copy_`) and applies the per-channel affine map
x * scale + shift in place (`addcmul`), over rows in memory order (a (3, 1, 1) broadcast over channels-last
memory would run its inner loop over 3 channels); on CPU a block at a time (`BLOCK_ELEMENTS`), so the second pass
reads from cache. With `buffers` > 0 the outputs come from a pool of CPU buffers, each reused once nothing refers to
its memory any more: a fresh 50 MB batch (64 views at 256 px) costs more in page faults than the two passes.
Values are within 1e-6 of the plain formula (4.8e-7 at most for ImageNet's mean / std: float32 rounding of scale,
shift and the multiply-add; tests/test_loader_normalize.py checks every uint8 value of every channel).
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

# CPU blocks: under torch's intra-op grain size (32,768 elements) each op runs in the calling thread (an OpenMP
# team started from or beside loader threads waits for descheduled threads on a busy machine: 32 px batches were
# 4x slower); at most MAX_BLOCKS per call, so big batches (256 px) do not pay Python's per-op cost per few rows
BLOCK_ELEMENTS, MAX_BLOCKS = 32_767, 16


class Normalize:
    """uint8 (..., 3, H, W) -> float32 (..., 3, H, W) = (images / 255 - mean) / std on the images' device.

    mean / std: 3 values each (RGB). The per-channel scale 1 / (255 std) and shift -mean / std are cached per
    device and image width as rows of W interleaved RGB triples (3 W,). `buffers`: how many CPU output buffers
    to keep for reuse (0: a fresh tensor per call); one is reused only when no tensor or view of it is left.
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, buffers: int = 0):
        self.mean = tuple(float(m) for m in torch.as_tensor(mean).reshape(-1))
        self.std = tuple(float(s) for s in torch.as_tensor(std).reshape(-1))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (one per RGB channel), got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        self._rows: dict[tuple[torch.device, int], tuple[Tensor, Tensor]] = {}
        self.buffers, self._lock = buffers, threading.Lock() if buffers else None  # no lock: deep-copyable
        self._pool: list[tuple[np.ndarray, Callable[[], np.ndarray | None]]] = []  # (buffer, its lent view or None)

    def rows(self, device: torch.device, width: int) -> tuple[Tensor, Tensor]:
        """float32 scale and shift rows (3 * width,): channel c of pixel j at 3 j + c."""
        key = (device, width)
        if key not in self._rows:
            mean, std = torch.tensor(self.mean, dtype=torch.float64), torch.tensor(self.std, dtype=torch.float64)
            scale, shift = 1.0 / (255.0 * std), -mean / std
            self._rows[key] = tuple(t.to(torch.float32).repeat(width).to(device) for t in (scale, shift))
        return self._rows[key]

    def __call__(self, images: Tensor, memory_format: torch.memory_format = torch.preserve_format) -> Tensor:
        """`memory_format`: the output's layout (default: the input's, e.g. channels-last from the native reader)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"Normalize takes uint8 images, got {images.dtype}")
        if images.dim() < 3 or images.shape[-3] != 3:
            raise ValueError(f"Normalize takes (..., 3, H, W) images, got shape {tuple(images.shape)}")
        out = self._output(images, memory_format)
        if images.device.type != "cpu":
            self._affine_(out.copy_(images))
        elif _channels_last(images) and _channels_last(out):  # the native reader's layout: blocks of RGB rows
            w = images.shape[-1]
            scale, shift = self.rows(images.device, w)
            src, dst = (t.movedim(-3, -1).reshape(-1, 3 * w) for t in (images, out))
            step = max(1, max(BLOCK_ELEMENTS, images.numel() // MAX_BLOCKS) // (3 * w))
            for rows, rows_in in zip(dst.split(step), src.split(step)):
                torch.addcmul(shift, rows.copy_(rows_in), scale, out=rows)
        else:  # blocks of whole items
            step = max(1, images.shape[0] if images.dim() == 3 else
                       max(BLOCK_ELEMENTS, images.numel() // MAX_BLOCKS) * images.shape[0] // max(images.numel(), 1))
            for i in range(0, images.shape[0], step):
                self._affine_(out[i:i + step].copy_(images[i:i + step]))
        return out

    def _output(self, images: Tensor, memory_format: torch.memory_format) -> Tensor:
        """An uninitialised float32 tensor shaped and laid out like `images` (or in `memory_format`). Pooled: a
        buffer is handed out through a fresh numpy view, which torch.from_numpy's storage keeps alive, so the
        buffer is free again once a weak reference to that view is dead (no tensor or view of it left)."""
        if not self.buffers or images.device.type != "cpu":
            return torch.empty_like(images, dtype=torch.float32, memory_format=memory_format)
        like = torch.empty_like(images, dtype=torch.float32, memory_format=memory_format, device="meta")
        with self._lock:
            free = [i for i, (buf, lent) in enumerate(self._pool) if buf.size == like.numel() and lent() is None]
            if not free and len(self._pool) >= self.buffers:
                return torch.empty_like(images, dtype=torch.float32, memory_format=memory_format)
            if not free:
                self._pool.append((np.empty(like.numel(), np.float32), lambda: None))
                free = [len(self._pool) - 1]
            buf = self._pool[free[0]][0]
            view = buf[:]
            self._pool[free[0]] = (buf, weakref.ref(view))
            return torch.from_numpy(view).as_strided(like.shape, like.stride())

    def _affine_(self, x: Tensor) -> None:
        """x (..., 3, H, W) float32 <- x * scale + shift, in place."""
        h, w = x.shape[-2:]
        scale, shift = self.rows(x.device, w)
        if _channels_last(x):  # rows of W RGB triples
            rows = x.movedim(-3, -1).view(-1, 3 * w)
            torch.addcmul(shift, rows, scale, out=rows)
        elif x.is_contiguous():  # planar: rows of H * W per channel
            rows = x.view(-1, 3, h * w)
            torch.addcmul(shift[:3, None], rows, scale[:3, None], out=rows)
        else:
            torch.addcmul(shift[:3, None, None], x, scale[:3, None, None], out=x)


def _channels_last(x: Tensor) -> bool:
    """(..., 3, H, W) laid out as dense (..., H, W, 3) memory."""
    return x.stride(-3) == 1 and x.movedim(-3, -1).is_contiguous()
