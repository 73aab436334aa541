"""Probe metrics, heads, extraction and the probe registry on synthetic features (no trained model needed)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_eq.datasets.native import LATENT_SCHEMAS
from ssl_eq.geometry import canonical_quaternion
from ssl_eq.probes import metrics as M
from ssl_eq.probes.features import extract_features
from ssl_eq.probes.heads import HeadConfig, fit_head
from ssl_eq.probes.runner import evaluate, load_probe_config, select_probes
from ssl_eq.probes.targets import absolute_rotation
from ssl_eq.probes.tasks import ProbeContext

SCHEMA = LATENT_SCHEMAS["3diebench"]


def test_r2_definitions_match_hand_computed_values():
    target = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    pred = torch.tensor([[1.0, 12.0], [3.0, 20.0], [3.0, 27.0]])
    # pooled: grand mean 11, SS_tot = 688, SS_res = 14
    assert M.r2_pooled(pred, target).item() == pytest.approx(1 - 14 / 688)
    # uniform: column 0 -> 1 - 1/2, column 1 -> 1 - 13/200
    assert M.r2_uniform(pred, target).item() == pytest.approx(((1 - 1 / 2) + (1 - 13 / 200)) / 2)


def test_geodesic_error_identity_and_known_angle():
    q = canonical_quaternion(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(M.geodesic_error_deg(q, q), torch.zeros(5))
    assert torch.allclose(M.geodesic_error_deg(-3 * q, q), torch.zeros(5), atol=1e-4)  # scale and sign free
    half = math.radians(45)  # 90° about z
    rot = torch.tensor([[math.cos(half), 0.0, 0.0, math.sin(half)]])
    assert M.geodesic_error_deg(rot, torch.tensor([[1.0, 0, 0, 0]])).item() == pytest.approx(90.0, abs=1e-3)


def _regress(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n = len(x) * 3 // 4
    cfg = HeadConfig(hidden=[], epochs=40, lr=1e-2, batch_size=100)
    return fit_head(x[:n], y[:n], x[n:], y.shape[1], "mse", cfg), y[n:]


def test_r2_high_for_features_encoding_rotation_and_low_for_random():
    gen = torch.Generator().manual_seed(0)
    # unit quaternions without the w >= 0 sign convention: every output has mean ~0, so a predictor of the
    # output means scores ~0 on both R² (with canonical signs the pooled R² credits predicting mean w > 0)
    quat = torch.nn.functional.normalize(torch.randn(400, 4, generator=gen), dim=-1)
    mix = torch.randn(4, 32, generator=gen)
    encoded = quat @ mix + 0.01 * torch.randn(400, 32, generator=gen)
    pred, true = _regress(encoded, quat)
    assert M.r2_pooled(pred, true) > 0.95 and M.r2_uniform(pred, true) > 0.95
    pred, true = _regress(torch.randn(400, 32, generator=gen), quat)
    assert M.r2_pooled(pred, true) <= 0.05 and M.r2_uniform(pred, true) <= 0.05


def test_pooled_r2_credits_predicting_output_means():
    target = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 4.0]])
    means = target.mean(0).expand(3, 2)
    assert M.r2_uniform(means, target).item() == pytest.approx(0.5)  # constant column: exact -> 1, other -> 0
    # grand mean 1.5: SS_tot = 3·0.25 + 2.25 + 0.25 + 6.25 = 9.5, SS_res = 8
    assert M.r2_pooled(means, target).item() == pytest.approx(1 - 8 / 9.5)


def test_topk_and_confusion():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2, 1])
    assert M.topk_accuracy(logits, labels, 1).item() == pytest.approx(100 / 3)
    assert M.topk_accuracy(logits, labels, 2).item() == pytest.approx(200 / 3)
    conf = M.confusion_matrix(logits.argmax(1), labels, 3)
    assert conf.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]


def test_mrr_and_hits_on_hand_built_three_object_example():
    views = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    candidates = views.expand(3, 3, 2)
    queries = torch.tensor([[1.0, 0.1], [1.0, 0.5], [1.0, 0.5]])
    ranks = M.retrieval_ranks(queries, candidates, torch.tensor([0, 1, 2]))
    assert ranks.tolist() == [1, 2, 3]
    out = M.mrr_hits(ranks)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert (out["hit@1"], out["hit@2"], out["hit@5"], out["hit@10"]) == pytest.approx((1 / 3, 2 / 3, 1, 1))


def test_pre_is_zero_for_exact_retrieval_and_positive_otherwise():
    quats = canonical_quaternion(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)))
    bank = torch.eye(6)
    assert M.prediction_rotation_error(bank, bank, quats, quats).item() == pytest.approx(0.0, abs=1e-6)
    assert M.prediction_rotation_error(bank.roll(1, 0), bank, quats, quats).item() > 0.01


class TinyBNModel(nn.Module):
    """Method-API stand-in: a conv + BatchNorm encoder, representations split into inv / equi halves."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(4, 3)

    def preprocess(self, images):
        return images.float() / 255

    def representations(self, x):
        z = self.net(x)
        return {"full": z, "inv": z[:, :2], "equi": z[:, 2:]}

    def embeddings(self, x):
        z = self.net(x)
        return {"inv": self.proj(z), "equi": z[:, :0]}


def _view_batches(num_objects: int, views: int, batch: int):
    gen = torch.Generator().manual_seed(0)
    items = [(o, v) for v in range(views) for o in range(num_objects)]  # not object-major on purpose
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        yield {"images": torch.randint(0, 256, (len(chunk), 3, 8, 8), generator=gen, dtype=torch.uint8),
               "latents": torch.tensor([[o, v] for o, v in chunk], dtype=torch.float32),
               "label": torch.tensor([o % 2 for o, _ in chunk]),
               "object_index": torch.tensor([10 + o for o, _ in chunk]),
               "view_index": torch.tensor([v for _, v in chunk])}


def test_extraction_leaves_batchnorm_statistics_unchanged_and_arranges_object_major():
    model = TinyBNModel().train()
    bn = model.net[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    feats = extract_features(model, _view_batches(num_objects=4, views=3, batch=5))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert torch.equal(bn.num_batches_tracked, before[2])
    assert model.training and bn.training  # modes restored
    assert feats["rep/full"].shape == (4, 3, 4) and feats["rep/inv"].shape == (4, 3, 2)
    assert feats["emb/equi"].shape == (4, 3, 0)
    assert feats["latents"][:, :, 0].tolist() == [[o] * 3 for o in range(4)]
    assert feats["latents"][:, :, 1].tolist() == [[0, 1, 2]] * 4
    assert feats["labels"].tolist() == [0, 1, 0, 1]


def _synthetic_split(num_objects: int, views: int, num_classes: int, seed: int, mix: torch.Tensor):
    """Object-major features: inv = class code, equi = linear map of the view's rotation quaternion."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.rand(num_objects, views, len(SCHEMA), generator=gen)
    latents[..., :3] = (latents[..., :3] - 0.5) * math.pi
    labels = torch.arange(num_objects) % num_classes
    codes = torch.eye(num_classes)[labels][:, None].expand(-1, views, -1) * 3
    inv = codes + 0.1 * torch.randn(num_objects, views, num_classes, generator=gen)
    equi = absolute_rotation(latents, SCHEMA) @ mix + 0.01 * torch.randn(num_objects, views, mix.shape[1],
                                                                         generator=gen)
    return {"rep/inv": inv, "rep/equi": equi, "rep/full": torch.cat([inv, equi], -1), "emb/equi": equi,
            "latents": latents, "labels": labels}


@pytest.fixture()
def context(tmp_path):
    mix = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    return ProbeContext(train=_synthetic_split(40, 6, 4, 0, mix), val=_synthetic_split(16, 6, 4, 1, mix),
                        latent_schema=SCHEMA, class_names=[f"c{i}" for i in range(4)], out_dir=tmp_path)


def _quick_config(epochs: int = 80) -> dict:
    cfg = load_probe_config(epochs=epochs)
    for section in cfg["probes"].values():
        if "hidden" in section:
            section.update(hidden=[], lr=1e-2)
    return cfg


def test_probes_on_synthetic_features(context, tmp_path):
    cfg = _quick_config()
    cfg["probes"]["linear"]["parts"] = ["inv", "equi"]
    cfg["probes"]["view_rotation"]["parts"] = ["equi"]
    out = evaluate(context, ["linear", "view_rotation", "translation"], cfg)
    assert out["probes"]["linear"]["status"] == "ok"
    assert out["metrics"]["linear/inv/top1"] > 95
    assert out["metrics"]["view_rotation/equi/r2_pooled"] > 0.95
    assert out["metrics"]["view_rotation/equi/r2_uniform"] > 0.95
    assert "linear/inv/top1" in out["definitions"]
    for plot in out["probes"]["linear"]["plots"] + out["probes"]["view_rotation"]["plots"]:
        assert (tmp_path / plot).stat().st_size > 1000
    # translation needs 3DIEBench-T latents: skipped with the reason, the other probes still reported
    skipped = out["probes"]["translation"]
    assert skipped["status"] == "skipped" and "trans_x" in skipped["reason"]


def _hamilton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


class QuaternionPredictor(nn.Module):
    """A perfect predictor when the equivariant embedding is the view's rotation quaternion: q_k = q_0 ⊗ q_rel."""
    has_predictor = True
    action_key = "rel_rotation_quat"

    def predict(self, emb, actions):
        return canonical_quaternion(_hamilton(emb, actions[self.action_key]))


def test_predictor_metrics_of_a_perfect_predictor(context):
    for split in (context.train, context.val):
        split["emb/equi"] = absolute_rotation(split["latents"], SCHEMA)
    context.model = QuaternionPredictor()
    out = evaluate(context, ["predictor"], load_probe_config())
    metrics = out["probes"]["predictor"]["metrics"]
    assert metrics["val/mrr"] == pytest.approx(1.0) and metrics["val/hit@1"] == pytest.approx(1.0)
    assert metrics["val/pre"] == pytest.approx(0.0, abs=1e-5)


def test_failures_are_isolated_and_reported(context):
    context.model = None
    context.val.pop("rep/inv")  # inconsistent features: the colour probe fails, the linear probe still runs
    cfg = _quick_config(epochs=2)
    cfg["probes"]["linear"]["parts"] = ["equi"]
    out = evaluate(context, ["predictor", "colour", "linear"], cfg)
    assert out["probes"]["predictor"]["status"] == "skipped"
    colour = out["probes"]["colour"]
    assert colour["status"] == "error" and "rep/inv" in colour["reason"]
    assert out["probes"]["linear"]["status"] == "ok" and "linear/equi/top1" in out["metrics"]


def test_select_probes():
    assert select_probes("all")[0] == "linear"
    assert select_probes("rotation,linear") == ["linear", "rotation"]
    with pytest.raises(ValueError, match="unknown probe"):
        select_probes("linear,nope")
