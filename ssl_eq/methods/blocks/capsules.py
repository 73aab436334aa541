"""Capsule layers of EquiCaps (docs/reference/equicaps.md §1): primary capsules and self-routing.

Self-routing (Hahn et al., 2019) has no routing iterations: each input capsule i routes itself to the
output capsules j with softmax_j(W2_i[j]·u_i + b2_ij) and votes W1_i[j]·u_i (a linear map of its
flattened P-vector pose). Here the routing kernel covers the whole feature map (EquiCaps' kernel_size =
map size), so there is one output location and the N = h·w·K primary capsules (index i = position·K + type)
each have their own weights.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class PrimaryCapsules(nn.Module):
    """Feature map (B, C, h, w) -> activations (B, h·w·K) in (0, 1) and poses (B, h·w·K, P).

    Activations: Conv2d(C→K, 3×3, pad 1, no bias) - BN - sigmoid; poses: Conv2d(C→K·P, 3×3, pad 1, no bias)
    - BN, no activation; pose channel index = capsule·P + p.
    """

    def __init__(self, in_channels: int, num_capsules: int, pose_size: int) -> None:
        super().__init__()
        self.num_capsules, self.pose_size = num_capsules, pose_size
        self.conv_a = nn.Conv2d(in_channels, num_capsules, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(num_capsules)
        self.conv_pose = nn.Conv2d(in_channels, num_capsules * pose_size, 3, padding=1, bias=False)
        self.bn_pose = nn.BatchNorm2d(num_capsules * pose_size)

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.sigmoid(self.bn_a(self.conv_a(fmap)))                        # (B, K, h, w)
        pose = self.bn_pose(self.conv_pose(fmap))                               # (B, K·P, h, w)
        b = fmap.shape[0]
        a = a.permute(0, 2, 3, 1).reshape(b, -1)                                # (B, h·w·K)
        pose = pose.permute(0, 2, 3, 1).reshape(b, -1, self.pose_size)          # (B, h·w·K, P)
        return a, pose


class WeightedVotes(torch.autograd.Function):
    """Σ_i w_ij · W1_i[j] u_i without the (B, N, K, P) tensor in a layout that needs copies.

    w (B, N, K), pose u (B, N, P), W1 (N, K·P, P) -> (B, K, P). The votes are made once in (N, B, K·P) order
    (one batched GEMM over the N capsules) and kept for backward; the weighted sum over i and every gradient
    are batched GEMMs on strided views of them. Same values and gradients as
    `einsum("bnk,bnkp->bkp", w, einsum("nop,bnp->bno", W1, u).unflatten(-1, (K, P)))` (tests/test_equicaps.py).
    """

    @staticmethod
    def forward(ctx, w: Tensor, pose: Tensor, w1: Tensor) -> Tensor:
        b, n, k = w.shape
        p = pose.shape[-1]
        votes = torch.bmm(pose.transpose(0, 1), w1.transpose(1, 2))                      # (N, B, K·P)
        out = torch.bmm(w.permute(0, 2, 1).reshape(b * k, 1, n),                           # (B·K, 1, N)
                        votes.view(n, b * k, p).transpose(0, 1))                           # (B·K, N, P)
        ctx.save_for_backward(w, pose, w1, votes)
        return out.view(b, k, p)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        w, pose, w1, votes = ctx.saved_tensors
        b, n, k = w.shape
        p = pose.shape[-1]
        grad_w = grad_pose = grad_w1 = None
        if ctx.needs_input_grad[0]:                                                        # Σ_q g_bkq votes_nbkq
            grad_w = torch.bmm(votes.view(n, b * k, p).transpose(0, 1), grad.reshape(b * k, p, 1))
            grad_w = grad_w.view(b, k, n).transpose(1, 2)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_votes = (w.transpose(0, 1).unsqueeze(-1) * grad.unsqueeze(0)).view(n, b, k * p)   # (N, B, K·P)
            if ctx.needs_input_grad[1]:
                grad_pose = torch.bmm(grad_votes, w1).transpose(0, 1)
            if ctx.needs_input_grad[2]:
                grad_w1 = torch.bmm(grad_votes.transpose(1, 2), pose.transpose(0, 1))
        return grad_w, grad_pose, grad_w1


class SelfRouting(nn.Module):
    """Self-routing of N input capsules (pose size P) to K output capsules (pose size P), one pass.

    (B, N) activations, (B, N, P) poses -> (B, K) activations (summing to 1 by construction) and (B, K, P) poses.
    W1 (N, K·P, P) Kaiming-normal (PyTorch fan_in = K·P·P), W2 (N, K, P) = 0 and b2 (N, K) = 0, so at
    initialisation the routing is uniform and every output activation is exactly 1/K.
    `checkpoint=True` recomputes the forward during backward (the (B, N, K, P) votes are not kept).
    """

    def __init__(self, num_inputs: int, num_outputs: int, pose_size: int, checkpoint: bool = False) -> None:
        super().__init__()
        self.num_outputs, self.pose_size, self.checkpoint = num_outputs, pose_size, checkpoint
        self.W1 = nn.Parameter(torch.empty(num_inputs, num_outputs * pose_size, pose_size))
        self.W2 = nn.Parameter(torch.zeros(num_inputs, num_outputs, pose_size))
        self.b2 = nn.Parameter(torch.zeros(num_inputs, num_outputs))
        nn.init.kaiming_normal_(self.W1)

    def route(self, a: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        r = torch.softmax(torch.einsum("nkp,bnp->bnk", self.W2, pose) + self.b2, dim=-1)   # (B, N, K)
        # a_out = Σ_i a_i r_ij / Σ_i a_i, written as 1/K + Σ_i (a_i / Σa)(r_ij − 1/K): uniform r gives exactly 1/K
        uniform = 1.0 / self.num_outputs
        a_out = uniform + torch.einsum("bn,bnk->bk", a / a.sum(1, keepdim=True), r - uniform)
        ar = a.unsqueeze(-1) * r
        pose_out = WeightedVotes.apply(ar / ar.sum(1, keepdim=True), pose, self.W1)      # Σ_i c_ij W1_i[j] u_i
        return a_out, pose_out

    def forward(self, a: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        if a.shape[1] != self.W1.shape[0]:
            raise ValueError(f"self-routing expects {self.W1.shape[0]} input capsules, got {a.shape[1]}")
        if self.checkpoint and torch.is_grad_enabled():
            return checkpoint(self.route, a, pose, use_reentrant=False)
        return self.route(a, pose)
