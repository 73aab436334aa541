"""Sequence blocks (seq-JEPA): an action encoder and a transformer that aggregates (view, action) tokens.

Tokens carry no positional encoding, so the aggregate is invariant to the order of the observed tokens
(in eval mode; dropout acts in train mode).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ActionEncoder(nn.Module):
    """(..., A) actions -> (..., E): Linear without bias, then BatchNorm1d without affine over all leading dims."""

    def __init__(self, action_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(action_dim, emb_dim, bias=False)
        self.bn = nn.BatchNorm1d(emb_dim, affine=False)

    def forward(self, actions: Tensor) -> Tensor:
        lead = actions.shape[:-1]
        return self.bn(self.proj(actions.reshape(-1, actions.shape[-1]))).reshape(*lead, -1)


class SequenceAggregator(nn.Module):
    """tokens (B, M, d) -> (B, d): a zero-initialised learned [AGG] token is prepended, then `num_layers`
    post-norm TransformerEncoderLayers (ReLU, `dropout`, no mask, no positional encoding) and a final
    LayerNorm; the output at the [AGG] position is the aggregate."""

    def __init__(self, d_model: int, num_layers: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"method.aggregator: d_model {d_model} is not divisible by num_heads {num_heads}")
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=ff_dim, dropout=dropout,
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.agg_token = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        x = torch.cat([self.agg_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], 1)
        return self.encoder(x)[:, 0]
