"""Action-conditioned predictors: view 1's equivariant embedding + the action -> view 2's embedding.

`PREDICTORS` maps `method.predictor.type` to a class built with `from_config(emb_dim, method_cfg)`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_eq.methods.blocks.heads import mlp
from ssl_eq.methods.blocks.sequence import ActionEncoder


class HyperNetPredictor(nn.Module):
    """Action (B, A) -> weights of a linear map (B, Ee, Ee), applied to z (B, Ee).

    hidden = [] is SIE's linear hypernetwork (one Linear(A, Ee*Ee), no bias); hidden = [4, 4] is
    the paper's deeper variant (Linear-ReLU layers of width 4 before the output layer). As in SIE's
    reference code, there is no normalisation layer.
    """

    def __init__(self, emb_dim: int, action_dim: int, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        dims = [action_dim, *[int(h) for h in hidden]]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b, bias=False), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], emb_dim * emb_dim, bias=False))
        self.hypernet = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, emb_dim: int, method: DictConfig) -> "HyperNetPredictor":
        """From ssl_eq/configs/method/sie*.yaml: method.action_dim, method.predictor.hidden."""
        return cls(emb_dim, int(method.action_dim), list(method.predictor.hidden))

    def weights(self, action: Tensor) -> Tensor:
        """(B, A) -> (B, Ee, Ee) predicted linear maps."""
        return self.hypernet(action).view(-1, self.emb_dim, self.emb_dim)

    def forward(self, z: Tensor, action: Tensor) -> Tensor:
        """(B, Ee), (B, A) -> (B, Ee) = W(action) @ z.

        The linear hypernetwork (no hidden layer) is linear in the action, W(a) = Σₖ aₖ Wₖ, so W(a) z =
        Σₖ aₖ (Wₖ z): A matrix products of the whole batch instead of B materialised (Ee, Ee) maps (the same
        function; memory O(A·Ee²) instead of O(B·Ee²)).
        """
        if len(self.hypernet) == 1:
            basis = self.hypernet[0].weight.view(self.emb_dim, self.emb_dim, -1)   # W[i, j, k] = (Wₖ)ᵢⱼ
            per_action = torch.einsum("ijk,bj->bki", basis, z)                      # (B, A, Ee): Wₖ z
            return torch.einsum("bk,bki->bi", action, per_action)
        return torch.bmm(self.weights(action), z.unsqueeze(-1)).squeeze(-1)


class MLPPredictor(nn.Module):
    """[action; z] (B, A + Ee) -> (B, Ee): Linear (with bias) hidden layers, each followed by (BN and) ReLU, then a
    Linear with bias.

    hidden = [] without batch_norm is SIE's reference MLP predictor (`tf_num_layers=1`): one Linear(A + Ee, Ee) on
    the action concatenated before the embedding; hidden = [Ee] * (n - 1) is its n-layer version.
    """

    def __init__(self, emb_dim: int, action_dim: int, hidden: Sequence[int] = (), batch_norm: bool = False) -> None:
        super().__init__()
        self.net = mlp(action_dim + emb_dim, [*hidden, emb_dim], last_bias=True, batch_norm=batch_norm)

    @classmethod
    def from_config(cls, emb_dim: int, method: DictConfig) -> "MLPPredictor":
        """From ssl_eq/configs/method/sie*.yaml: method.action_dim, method.predictor.hidden, method.predictor.batch_norm."""
        p = method.predictor
        return cls(emb_dim, int(method.action_dim), list(p.hidden), bool(p.batch_norm))

    def forward(self, z: Tensor, action: Tensor) -> Tensor:
        """(B, Ee), (B, A) -> (B, Ee)."""
        return self.net(torch.cat([action.to(z.dtype), z], -1))


class ActionEmbeddingPredictor(nn.Module):
    """seq-JEPA's EquiMod predictor: e(a) = BN(Linear(a)), then BN(Linear([e(a); z])) (B, Ee).

    Linears without bias, BatchNorms without affine parameters (docs/reference/equicaps.md §8).
    """

    def __init__(self, emb_dim: int, action_dim: int) -> None:
        super().__init__()
        self.embed = ActionEncoder(action_dim, emb_dim)
        self.net = nn.Sequential(nn.Linear(2 * emb_dim, emb_dim, bias=False), nn.BatchNorm1d(emb_dim, affine=False))

    @classmethod
    def from_config(cls, emb_dim: int, method: DictConfig) -> "ActionEmbeddingPredictor":
        """From ssl_eq/configs/method/equimod_seqjepa.yaml: method.action_dim."""
        return cls(emb_dim, int(method.action_dim))

    def forward(self, z: Tensor, action: Tensor) -> Tensor:
        """(B, Ee), (B, A) -> (B, Ee)."""
        return self.net(torch.cat([self.embed(action.to(z.dtype)), z], -1))


# method.predictor.type -> predictor class, built with `from_config(emb_dim, method_cfg)`
PREDICTORS: dict[str, type[HyperNetPredictor | MLPPredictor | ActionEmbeddingPredictor]] = {
    "hypernetwork": HyperNetPredictor, "mlp": MLPPredictor, "action_embedding": ActionEmbeddingPredictor}
