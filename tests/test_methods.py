"""Methods on synthetic tensors: losses decrease on a fixed batch, declared shapes, SIE predictor."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from ssl_eq.datasets.relative import relative_transform
from ssl_eq.geometry import canonical_quaternion
from ssl_eq.methods import NonFiniteLossError, StepOutput, build_method, compose_config
from ssl_eq.methods.commands import group_options
from ssl_eq.methods.blocks.predictors import HyperNetPredictor, MLPPredictor
from ssl_eq.methods.sie import sie_loss

SIZE, BATCH, CLASSES = 32, 16, 3
# shrink every width that a method config may declare (the configs hold the paper sizes)
TINY_WIDTHS = {"projector": [32, 32], "projector_inv": [32, 32], "projector_equi": [32, 32], "head": [32]}
TINY_CAPSULES = 4


def tiny_config(method: str, *overrides: str) -> dict:
    cfg = compose_config([f"method={method}", "backbone=small_cnn", "data.root=unused", f"data.image_size={SIZE}",
                          f"data.num_classes={CLASSES}", *overrides])
    m = cfg.method
    for key, widths in TINY_WIDTHS.items():
        if key in m and OmegaConf.is_list(m[key]):
            m[key] = widths
    for key in ("projector", "heads"):
        if key in m and OmegaConf.is_dict(m[key]):
            m[key].update({k: 32 for k in ("hidden_dim", "output_dim") if k in m[key]})
    if m.split.inv is not None:  # paper split of ResNet-18's 512 -> the same proportion of small_cnn's 64
        m.split = {"inv": m.split.inv // 8, "equi": m.split.equi // 8}
    if "num_capsules" in m:
        m.num_capsules = TINY_CAPSULES
    return OmegaConf.to_container(cfg, resolve=True)


def fixed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.rand(BATCH, 2, 10, generator=g) - 0.5  # 3DIEBench-T layout: rotations, hues, light, translation
    return {
        **relative_transform(latents[:, 0], latents[:, 1]),
        "images": torch.randint(0, 256, (BATCH, 2, 3, SIZE, SIZE), dtype=torch.uint8, generator=g),
        "rel_rotation_quat": canonical_quaternion(torch.randn(BATCH, 4, generator=g)),
        "label": torch.randint(0, CLASSES, (BATCH,), generator=g),
    }


@pytest.mark.parametrize("method", [m for m in group_options("method") if not m.startswith("seqjepa")])
def test_loss_decreases_and_shapes(method):
    """Pair methods (seq-JEPA's sequence batches: tests/test_seqjepa.py)."""
    torch.manual_seed(0)
    model = build_method(tiny_config(method))
    model.total_steps = 20
    batch = fixed_batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(model.total_steps):
        views, _ = model.augment_views(batch["images"])
        out = model.step_loss(views, batch)
        assert isinstance(out, StepOutput) and torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert min(losses[-3:]) < losses[0] - 1e-3, losses

    model.eval()
    x = model.preprocess(batch["images"][:, 0])
    reps, embs = model.representations(x), model.embeddings(x)
    assert reps["full"].shape == (BATCH, model.rep_dim)
    assert reps["inv"].shape == (BATCH, model.inv_dim) and reps["equi"].shape == (BATCH, model.equi_dim)
    if model.name != "equicaps":  # EquiCaps: inv / equi are the capsule outputs beside the pooled map ("full")
        assert model.inv_dim + model.equi_dim == model.rep_dim
    assert embs["inv"].shape[0] == embs["equi"].shape[0] == BATCH
    assert (embs["inv"].shape[1] == 0) == (model.inv_dim == 0)
    # EquiMod's equivariant projector reads the whole representation: an equi embedding without an equi part
    assert (embs["equi"].shape[1] == 0) == (model.equi_dim == 0 and not model.has_predictor)
    assert model.data_requirements["kind"] == "pair" and "images" in model.data_requirements["keys"]
    if model.has_predictor:
        assert model.action_key in model.data_requirements["keys"]
        assert model.predict(embs["equi"], batch).shape == embs["equi"].shape
    else:
        with pytest.raises(NotImplementedError):
            model.predict(embs["equi"], batch)


def test_baselines_use_full_representation_as_invariant():
    model = build_method(tiny_config("vicreg"))
    assert (model.inv_dim, model.equi_dim) == (model.rep_dim, 0)


def test_bad_split_is_reported():
    cfg = tiny_config("sie")
    cfg["method"]["split"] = {"inv": 10, "equi": 10}
    with pytest.raises(ValueError, match="method.split.*must equal the backbone width 64"):
        build_method(cfg)


def quat_left_matrix(q: torch.Tensor) -> torch.Tensor:
    """(B, 4) wxyz -> (B, 4, 4) L(q) with L(q) p = q * p (Hamilton product): linear in q, a rotation action."""
    w, x, y, z = q.unbind(-1)
    rows = [w, -x, -y, -z, x, w, -z, y, y, z, w, -x, z, -y, x, w]
    return torch.stack(rows, -1).view(-1, 4, 4)


def test_hypernetwork_map_changes_with_rotation():
    torch.manual_seed(0)
    pred = HyperNetPredictor(emb_dim=8, action_dim=4)
    q = canonical_quaternion(torch.randn(2, 4))
    w = pred.weights(q)
    assert w.shape == (2, 8, 8)
    assert (w[0] - w[1]).abs().max() > 1e-3
    assert pred.hypernet[-1].bias is None  # SIE: linear map without bias


def test_linear_hypernetwork_applies_the_per_sample_maps_without_materialising_them():
    """SIE's reference materialises W(q) = Linear(q).view(Ee, Ee) per sample and multiplies; the predictor's batched
    form Σₖ qₖ (Wₖ z) must give the same predictions and the same gradients."""
    torch.manual_seed(0)
    pred = HyperNetPredictor(emb_dim=16, action_dim=4)
    z = torch.randn(5, 16, requires_grad=True)
    q = canonical_quaternion(torch.randn(5, 4))
    reference = torch.bmm(pred.weights(q), z.unsqueeze(-1)).squeeze(-1)
    ref_grads = torch.autograd.grad(reference.square().sum(), [z, pred.hypernet[0].weight])
    out = pred(z, q)
    grads = torch.autograd.grad(out.square().sum(), [z, pred.hypernet[0].weight])
    assert torch.allclose(out, reference, rtol=1e-5, atol=1e-5)
    assert all(torch.allclose(g, r, rtol=1e-4, atol=1e-4) for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("variant, overrides, layers", [
    ("sie", [], ["Linear"]),
    ("sie_deep_hypernet", [], ["Linear", "ReLU", "Linear", "ReLU", "Linear"]),
    ("sie_mlp_predictor", [], ["Linear"]),
    ("sie_mlp_predictor", ["method.predictor.hidden=[32]"], ["Linear", "ReLU", "Linear"]),
    ("sie_mlp_predictor", ["method.predictor.hidden=[32]", "method.predictor.batch_norm=true"],
     ["Linear", "BatchNorm1d", "ReLU", "Linear"]),
])
@pytest.mark.parametrize("head_bn", [True, False])
def test_predictor_layers_follow_the_config(variant, overrides, layers, head_bn):
    """SIE's hypernetworks (linear, deeper) are bias-free Linear(-ReLU) stacks without normalisation, and its MLP
    predictor is one Linear unless method.predictor says otherwise; method.head_batch_norm (projectors) changes
    neither."""
    model = build_method(tiny_config(variant, f"method.head_batch_norm={head_bn}", *overrides))
    leaves = [m for m in model.predictor.modules() if not list(m.children())]
    assert [type(m).__name__ for m in leaves] == layers
    if isinstance(model.predictor, HyperNetPredictor):
        assert all(m.bias is None for m in leaves if isinstance(m, torch.nn.Linear))
        assert [m.out_features for m in leaves if isinstance(m, torch.nn.Linear)][:-1] == [4] * (len(layers) // 2)
    else:
        assert isinstance(model.predictor, MLPPredictor)
        with_bias = [m.bias is not None for m in leaves if isinstance(m, torch.nn.Linear)]
        assert with_bias[-1] and all(with_bias) == ("BatchNorm1d" not in layers)  # a Linear before BN has no bias
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.projector_equi.modules()) == head_bn
    with pytest.raises(TypeError):
        HyperNetPredictor(8, 4, batch_norm=True)


def test_mlp_predictor_is_the_reference_linear_on_quaternion_then_embedding():
    """sie_mlp_predictor = SIE's MLPPredictor(tf_num_layers=1): Linear(4 + Ee, Ee) on [q ; z], q first."""
    torch.manual_seed(0)
    model = build_method(tiny_config("sie_mlp_predictor"))
    (linear,) = [m for m in model.predictor.modules() if isinstance(m, torch.nn.Linear)]
    emb = model.equi_emb_dim
    assert (linear.in_features, linear.out_features) == (4 + emb, emb)
    z, q = torch.randn(5, emb), canonical_quaternion(torch.randn(5, 4))
    expected = q @ linear.weight[:, :4].T + z @ linear.weight[:, 4:].T + linear.bias
    assert torch.allclose(model.predictor(z, q), expected, atol=1e-5)


def test_online_probes_train_only_themselves_and_return_the_rotation_pairs():
    torch.manual_seed(0)
    model = build_method(tiny_config("sie"))
    batch = fixed_batch()
    views, _ = model.augment_views(batch["images"])
    reps = model.encode_views(views)
    loss, logs, (pred, target) = model.online_probes(reps, batch)
    loss.backward()
    assert set(logs) == {"online/cls_loss", "online/cls_top1", "online/rotation_mse", "online/rotation_r2"}
    assert all(p.grad is None for p in model.backbone.parameters())  # detached: the encoder gets nothing
    assert model.online_classifier.classification_head.weight.grad.abs().sum() > 0
    assert model.online_rotation.weight.grad.abs().sum() > 0
    assert pred.shape == target.shape == (BATCH, 4) and not pred.requires_grad
    expected = 1 - (pred - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum()
    assert torch.allclose(logs["online/rotation_r2"], expected, atol=1e-5)


def test_hypernetwork_learns_quaternion_action():
    """Targets z2 = q * z1 (quaternion product, a linear action of rotations): the hypernetwork recovers it."""
    torch.manual_seed(0)
    pred = HyperNetPredictor(emb_dim=4, action_dim=4)
    opt = torch.optim.Adam(pred.parameters(), lr=1e-2)
    for _ in range(300):
        q, z1 = canonical_quaternion(torch.randn(64, 4)), torch.randn(64, 4)
        z2 = (quat_left_matrix(q) @ z1[..., None])[..., 0]
        loss = torch.nn.functional.mse_loss(pred(z1, q), z2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q, z1 = canonical_quaternion(torch.randn(256, 4)), torch.randn(256, 4)
    err = torch.nn.functional.mse_loss(pred(z1, q), (quat_left_matrix(q) @ z1[..., None])[..., 0])
    assert err < 1e-3


def test_sie_loss_terms_and_only_equivariant():
    g = torch.Generator().manual_seed(0)
    inv1, inv2, e1, e2, p2 = (torch.randn(8, 6, generator=g) for _ in range(5))
    w = dict(invariance=10.0, equivariance=4.5, variance=10.0, predictor_variance=10.0, covariance=1.0)
    loss, terms = sie_loss(inv1, e1, inv2, e2, p2, **w)
    assert set(terms) == {"invariance", "equivariance", "variance", "predictor_variance", "covariance"}
    assert math.isclose(terms["invariance"].item(), 10 * torch.mean((inv1 - inv2) ** 2).item(), rel_tol=1e-5)
    assert math.isclose(terms["equivariance"].item(), 4.5 * torch.mean((p2 - e2) ** 2).item(), rel_tol=1e-5)
    assert math.isclose(loss.item(), sum(t.item() for t in terms.values()), rel_tol=1e-5)
    _, terms0 = sie_loss(inv1[:, :0], e1, inv2[:, :0], e2, p2, **w)
    assert "invariance" not in terms0
    _, novar = sie_loss(inv1, e1, inv2, e2, p2, **{**w, "predictor_variance": 0.0})
    assert set(novar) == set(terms) - {"predictor_variance"}


def test_nan_guard_names_step_and_term():
    model = build_method(tiny_config("vicreg"))
    ok = StepOutput(torch.tensor(2.5), {"invariance": torch.tensor(2.5)})
    model.check_finite(ok)
    bad = StepOutput(torch.tensor(float("nan")), {"invariance": torch.tensor(1.0), "covariance": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLossError, match=r"at step 0; last finite loss: 2.5; non-finite term\(s\): covariance"):
        model.check_finite(bad)


def test_unknown_method_and_key_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown method 'nope'; valid: \[.*'sie'.*'vicreg'"):
        compose_config(["method=nope"])
    with pytest.raises(ValueError, match=r"unknown config key 'trainer.max_stepz'.*valid keys there: \[.*'max_steps'"):
        compose_config(["trainer.max_stepz=3"])
