"""SIE's objective against the formulas of the reference (reference/sie.md §1), written out here with plain torch
ops on a tiny fixed input: every term and the total of `sie`, `sie_novar` and `sie_only_equi`."""
from __future__ import annotations

import pytest
import torch

from ssl_eq.methods import build_method, compose_config
from ssl_eq.methods.sie import sie_loss

# the reference README command's coefficients
SIM_COEFF, EQUI_FACTOR, STD_COEFF, COV_COEFF = 10.0, 0.45, 10.0, 1.0
B, EI, EE = 6, 3, 4


def fixed_input() -> dict[str, torch.Tensor]:
    """Embeddings of a batch of 6 pairs; per-dimension scales put some stds below 1 (active hinge), some above."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.3, 1.5, 0.8, 2.0, 0.1, 1.1, 0.6])

    def emb(dims: slice) -> torch.Tensor:
        return torch.randn(B, 7, generator=g)[:, dims] * scale[dims]
    return {"inv1": emb(slice(0, EI)), "equi1": emb(slice(EI, EI + EE)), "inv2": emb(slice(0, EI)),
            "equi2": emb(slice(EI, EI + EE)), "pred2": emb(slice(EI, EI + EE)) * 1.7}


def ref_std(e: torch.Tensor) -> torch.Tensor:
    """Per-dimension sqrt(unbiased variance + 1e-4) of the centred batch."""
    c = e - e.sum(0) / e.shape[0]
    return torch.sqrt((c * c).sum(0) / (e.shape[0] - 1) + 1e-4)


def ref_cov(e: torch.Tensor) -> torch.Tensor:
    """Σ off-diagonal(C)² / D with C = cᵀc / (batch - 1) on the centred batch c."""
    c = e - e.sum(0) / e.shape[0]
    cov = c.T @ c / (e.shape[0] - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return (off * off).sum() / e.shape[1]


def ref_hinge(e: torch.Tensor) -> torch.Tensor:
    """mean relu(1 - std) / 2 over the dimensions."""
    return torch.clamp(1 - ref_std(e), min=0).mean() / 2


def reference_terms(x: dict[str, torch.Tensor], *, only_equi: bool, pred_var: bool) -> dict[str, torch.Tensor]:
    """The reference's SIE / SIENoVar / SIEOnlyEqui losses, weighted terms keyed like ssl_eq's."""
    inv1, inv2 = (x["inv1"][:, :0], x["inv2"][:, :0]) if only_equi else (x["inv1"], x["inv2"])
    a, b = torch.cat([inv1, x["equi1"]], 1), torch.cat([inv2, x["equi2"]], 1)
    terms = {
        "equivariance": (SIM_COEFF if only_equi else EQUI_FACTOR * SIM_COEFF) * ((x["pred2"] - x["equi2"]) ** 2).mean(),
        "variance": STD_COEFF * (ref_hinge(a) + ref_hinge(b)),
        "covariance": COV_COEFF * (ref_cov(a) + ref_cov(b)),
    }
    if not only_equi:
        terms["invariance"] = SIM_COEFF * ((inv1 - inv2) ** 2).mean()
    if pred_var:
        terms["predictor_variance"] = STD_COEFF * ref_hinge(x["pred2"])
    return terms


@pytest.mark.parametrize("method, only_equi, pred_var", [
    ("sie", False, True), ("sie_novar", False, False), ("sie_only_equi", True, True)])
def test_sie_loss_matches_the_reference_formulas(method, only_equi, pred_var):
    cfg = compose_config([f"method={method}"]).method
    assert (cfg.split.inv == 0) == only_equi
    x = fixed_input()
    if only_equi:
        x["inv1"], x["inv2"] = x["inv1"][:, :0], x["inv2"][:, :0]
    total, terms = sie_loss(x["inv1"], x["equi1"], x["inv2"], x["equi2"], x["pred2"], **cfg.loss)
    expected = reference_terms(fixed_input(), only_equi=only_equi, pred_var=pred_var)
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(terms[name], value, rtol=1e-5, atol=1e-6), (name, terms[name], value)
    assert torch.allclose(total, sum(expected.values()), rtol=1e-5, atol=1e-6)
    # the input exercises every term: active and inactive hinges, non-zero covariances
    assert all(v > 1e-3 for v in expected.values())
    assert (ref_std(x["equi1"]) > 1).any() and (ref_std(x["equi1"]) < 1).any()


def test_sie_3diebench_experiment_has_the_published_defaults():
    """experiment=sie_3diebench is the reference README command (sie.md §1 "Matching already", §2, §3)."""
    cfg = compose_config(["experiment=sie_3diebench", "data.root=unused", "data.num_classes=55"])
    m = cfg.method
    assert (cfg.backbone.name, m.name) == ("resnet18_sie", "sie")
    assert dict(m.split) == {"inv": 256, "equi": 256}
    assert list(m.projector_inv) == list(m.projector_equi) == [1024, 1024, 1024] and m.head_batch_norm
    assert m.predictor.type == "hypernetwork" and list(m.predictor.hidden) == []
    assert dict(m.loss) == {"invariance": SIM_COEFF, "equivariance": EQUI_FACTOR * SIM_COEFF, "variance": STD_COEFF,
                            "predictor_variance": STD_COEFF, "covariance": COV_COEFF}
    o = m.optim
    assert (o.name, o.lr, o.weight_decay, o.warmup_steps, o.final_lr_factor) == ("adam", 1e-3, 1e-6, 0, 1.0)
    assert (cfg.data.batch_size, cfg.data.image_size, cfg.trainer.max_epochs, cfg.trainer.max_steps) == \
        (1024, 256, 2000, -1)
    assert list(cfg.augment.transforms) == []
    assert list(cfg.augment.normalize.mean) == [0.5016, 0.5037, 0.5060]
    assert list(cfg.augment.normalize.std) == [0.1030, 0.0999, 0.0969]
    model = build_method(cfg)
    assert sum(p.numel() for p in model.backbone.parameters()) == 11_180_736
    assert (model.inv_dim, model.equi_dim) == (256, 256)
