"""Drop-in layers that route a ResNet's CPU work to PyTorch's fast kernels: same values, same state dict.

Measured on a 2-core x86 CPU, one thread, ResNet-18 forward + backward on 24 views of 64 px (BENCHMARKS.md
"Training step vs 63d3562"):
- `MaxPool2dNHWC`: the CPU max-pool forward vectorises over channels only in channels-last memory, its backward
  in NCHW; the stem's pool of (24, 64, 32, 32) went from ~12.5 to ~4.6 ms forward + backward.
- `Conv2dGemmGrad`: oneDNN's weight-gradient kernel is slow on maps of a few pixels (a 512 -> 512 3×3 conv on
  2×2 maps: ~11 ms against ~4 ms as one GEMM over the im2col columns, forward 3.6 ms); that GEMM instead took
  the backbone's forward + backward from ~225 to ~207 ms. Larger maps keep oneDNN (the GEMM loses from 4×4 up).
`cpu_fast_layers(net)` switches a built network's nn.MaxPool2d / nn.Conv2d modules to these classes (they add
no parameters or buffers, so weights and checkpoints are untouched); on other devices, under autocast, or
without gradients they run as their base class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

_CL = torch.channels_last
GEMM_MAX_PIXELS = 4  # output maps up to this many pixels take the GEMM weight gradient (2×2 at 64 px in layer4)


class _PoolNHWCForward(torch.autograd.Function):
    """Forward by the channels-last kernel, backward by the NCHW one (each layout's fast direction on CPU)."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int],
                ceil_mode: bool) -> Tensor:
        y, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=_CL), kernel, stride, padding,
                                                        dilation, ceil_mode)
        ctx.save_for_backward(x, idx.contiguous())
        ctx.args = (kernel, stride, padding, dilation, ceil_mode)
        return y.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, idx = ctx.saved_tensors
        g = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.args, idx)
        return g, None, None, None, None, None


class MaxPool2dNHWC(nn.MaxPool2d):
    """nn.MaxPool2d whose forward pools an NCHW CPU tensor in channels-last memory (output NCHW).

    Values, indices and gradients are the NCHW kernel's (ties too: both kernels keep the window's first maximum).
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H', W') in x's memory layout."""
        if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous(memory_format=_CL) or self.return_indices:
            return super().forward(x)
        if not (x.requires_grad and torch.is_grad_enabled()):
            return super().forward(x.contiguous(memory_format=_CL)).contiguous()
        args = [[a, a] if isinstance(a, int) else list(a)
                for a in (self.kernel_size, self.stride, self.padding, self.dilation)]
        return _PoolNHWCForward.apply(x, *args, self.ceil_mode)


class _GemmWeightGrad(torch.autograd.Function):
    """conv2d (no bias, one group) whose weight gradient is one GEMM over the im2col columns; the input gradient
    stays oneDNN's."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.args = (stride, padding, dilation)
        return F.conv2d(x, w, None, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        stride, padding, dilation = ctx.args
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad, x, w, None, list(stride), list(padding), list(dilation),
                                                     False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            o, b = w.shape[0], x.shape[0]
            cols = F.unfold(x, w.shape[2:], dilation, padding, stride)          # (B, C·kh·kw, L)
            g = grad.reshape(b, o, -1).transpose(0, 1).reshape(o, -1)          # (O, B·L)
            gw = (g @ cols.transpose(0, 1).reshape(cols.shape[1], -1).T).view_as(w)
        return gx, gw, None, None, None


class Conv2dGemmGrad(nn.Conv2d):
    """nn.Conv2d whose weight gradient, for a float CPU batch with output maps of <= GEMM_MAX_PIXELS pixels, is
    one GEMM over the im2col columns instead of oneDNN's kernel (same gradient up to float summation order)."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, O, H', W')."""
        if (x.device.type != "cpu" or x.dim() != 4 or self.bias is not None or self.groups != 1
                or self.padding_mode != "zeros" or isinstance(self.padding, str) or x.dtype != self.weight.dtype
                or not (torch.is_grad_enabled() and self.weight.requires_grad)
                or torch.is_autocast_enabled("cpu")):
            return super().forward(x)
        size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                zip(x.shape[2:], self.padding, self.dilation, self.kernel_size, self.stride)]
        if size[0] * size[1] > GEMM_MAX_PIXELS:
            return super().forward(x)
        return _GemmWeightGrad.apply(x, self.weight, self.stride, self.padding, self.dilation)


# class swaps of `cpu_fast_layers`: subclasses without state of their own, so a module keeps its tensors
_SWAPS = {nn.MaxPool2d: MaxPool2dNHWC, nn.Conv2d: Conv2dGemmGrad}


def cpu_fast_layers(net: nn.Module) -> nn.Module:
    """Switch net's plain nn.MaxPool2d / nn.Conv2d modules to the classes above, in place; returns net."""
    for m in net.modules():
        if type(m) in _SWAPS:
            m.__class__ = _SWAPS[type(m)]
    return net
