"""Probe metrics, heads, extraction and the probe registry on synthetic features (no trained model needed)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omegaconf import OmegaConf

from ssl_eq.datasets.native import LATENT_SCHEMAS
from ssl_eq.datasets.relative import relative_transform
from ssl_eq.geometry import canonical_quaternion, euler_xyz_to_matrix
from ssl_eq.probes import metrics as M
from ssl_eq.probes.features import extract_features
from ssl_eq.probes.heads import HeadConfig, fit_head
from ssl_eq.probes.runner import evaluate, load_probe_config, resolve_conventions, select_probes
from ssl_eq.probes.sampling import ViewTuples
from ssl_eq.probes.targets import absolute_rotation
from ssl_eq.probes.tasks import ProbeContext, _relative_rotation_target

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


def _rotation_split(num_objects: int, views: int, seed: int, encodes_rotation: bool) -> dict[str, torch.Tensor]:
    """Object-major features that are either the view's rotation matrix entries plus noise or pure noise."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.rand(num_objects, views, len(SCHEMA), generator=gen)
    latents[..., :3] = (latents[..., :3] - 0.5) * math.pi
    if encodes_rotation:
        feats = euler_xyz_to_matrix(latents[..., :3]).flatten(-2) + 0.01 * torch.randn(num_objects, views, 9,
                                                                                       generator=gen)
    else:
        feats = torch.randn(num_objects, views, 16, generator=gen)
    return {"rep/equi": feats, "latents": latents, "labels": torch.zeros(num_objects, dtype=torch.long)}


@pytest.mark.parametrize("encodes_rotation", [False, True])
def test_fresh_pairs_rotation_probe_measures_the_features(tmp_path, encodes_rotation):
    """Default protocol (fresh pairs each epoch, epoch chosen on held-out train objects, head starting from the
    mean): noise features score the mean baseline (pooled R² minus its baseline ≈ 0, uniform R² ≈ 0, not the
    overfitting head's strongly negative values); features holding each view's rotation score > 0.9."""
    ctx = ProbeContext(train=_rotation_split(120, 6, 0, encodes_rotation),
                       val=_rotation_split(40, 6, 1, encodes_rotation), latent_schema=SCHEMA, class_names=["c"],
                       out_dir=tmp_path, quaternion_sign="scipy")
    cfg = load_probe_config(epochs=20)
    cfg["probes"]["rotation"].update(parts=["equi"], hidden=[64, 64], lr=3e-3, train_per_object=4, batch_size=128)
    out = evaluate(ctx, ["rotation"], cfg)
    m = out["metrics"]
    selection = out["probes"]["rotation"]["selection"]["rotation/equi"]
    assert selection["train_examples_per_epoch"] == 108 * 4 and selection["holdout_examples"] == 12 * 10
    assert selection["eval_examples"] == 40 * 10
    if encodes_rotation:
        assert m["rotation/equi/r2_pooled"] > 0.9 and m["rotation/equi/r2_uniform"] > 0.9
        assert m["rotation/equi/geodesic_deg"] < 30
    else:
        above_baseline = m["rotation/equi/r2_pooled"] - m["rotation/r2_pooled_mean_baseline"]
        assert -0.05 <= above_baseline <= 0.05
        assert -0.05 <= m["rotation/equi/r2_uniform"] <= 0.05
        assert selection["epoch"] < selection["epochs_run"]  # stopped early, an earlier epoch chosen


def test_view_tuples_draw_fresh_distinct_pairs_by_indexing():
    feats = torch.arange(5 * 4 * 2, dtype=torch.float32).reshape(5, 4, 2)
    pairs = ViewTuples(feats, target=lambda rows: rows[:, 2] - rows[:, 1], arity=2, per_object=3)
    gen = torch.Generator().manual_seed(0)
    first, second = pairs.draw(gen), pairs.draw(gen)
    assert first.shape == (15, 3) and not torch.equal(first, second)
    assert (first[:, 1] != first[:, 2]).all() and torch.bincount(first[:, 0]).tolist() == [3] * 5
    x = pairs.inputs(first)
    assert torch.equal(x, torch.cat([feats[first[:, 0], first[:, 1]], feats[first[:, 0], first[:, 2]]], 1))
    every_view = ViewTuples(feats, target=lambda rows: rows[:, 0], objects=torch.tensor([1, 3])).draw(gen)
    assert every_view.tolist() == [[1, 0], [1, 1], [1, 2], [1, 3], [3, 0], [3, 1], [3, 2], [3, 3]]
    many = ViewTuples(feats, target=lambda rows: rows, arity=2, per_object=2000).draw(gen)
    counts = torch.bincount(many[:, 1] * 4 + many[:, 2], minlength=16).reshape(4, 4)
    assert counts.diagonal().sum() == 0 and counts.sum() - counts.diagonal().sum() == 10000
    assert counts.max() < 1.25 * counts.sum() / 12  # ordered distinct pairs, uniform
    with pytest.raises(ValueError, match="per_object"):
        ViewTuples(feats, target=lambda rows: rows, arity=2)


def test_sie_reference_protocol_preset(tmp_path):
    cfg = load_probe_config(protocol="sie_reference")
    assert cfg["protocol"] == "sie_reference" and cfg["headline_r2"] == "r2_pooled"
    assert cfg["conventions"] == {"quaternion_sign": "scipy", "colour_targets": "raw"}
    assert cfg["extraction"]["batchnorm"] == "eval"
    linear, rotation, colour = (cfg["probes"][k] for k in ("linear", "rotation", "colour"))
    assert (linear["epochs"], rotation["epochs"], colour["epochs"]) == (300, 300, 50)
    assert rotation["hidden"] == [1024, 1024] and linear["hidden"] == [] and colour["hidden"] == []
    for section in (linear, rotation, colour):
        assert section["train_per_object"] == 1 and section["val_per_object"] == 1
        assert not section["standardize"] and not section["holdout_fraction"]
    assert load_probe_config()["protocol"] == "default"
    with pytest.raises(ValueError, match="unknown protocol"):
        load_probe_config(protocol="nope")
    with pytest.raises(ValueError, match="not both"):
        load_probe_config(path=tmp_path / "x.yaml", protocol="sie_reference")


def test_sie_reference_classification_sees_one_view_per_object(context):
    cfg = load_probe_config(epochs=3, protocol="sie_reference")
    cfg["probes"]["linear"]["parts"] = ["inv"]
    out = evaluate(context, ["linear"], cfg)
    selection = out["probes"]["linear"]["selection"]["linear/inv"]
    assert selection == {"epoch": 3, "epochs_run": 3, "holdout_loss": None, "train_examples_per_epoch": 40,
                         "holdout_examples": 0, "eval_examples": 16}
    default = evaluate(context, ["linear"], _quick_config(epochs=1))["probes"]["linear"]["selection"]["linear/inv"]
    assert (default["train_examples_per_epoch"], default["eval_examples"]) == (40 * 6, 16 * 6)


def test_conventions_follow_the_run_unless_the_protocol_names_them():
    run = OmegaConf.create({"data": {"quaternion_sign": "scipy", "colour_targets": "wrapped"}})
    default = resolve_conventions(load_probe_config(), run)
    assert default == {"quaternion_sign": "scipy", "colour_targets": "wrapped",
                       "run": {"quaternion_sign": "scipy", "colour_targets": "wrapped"}}
    old_run = resolve_conventions(load_probe_config(), OmegaConf.create({}))  # runs made before the option
    assert old_run["quaternion_sign"] == "canonical" and old_run["colour_targets"] == "wrapped"
    reference = resolve_conventions(load_probe_config(protocol="sie_reference"), OmegaConf.create({}))
    assert reference["quaternion_sign"] == "scipy" and reference["colour_targets"] == "raw"
    assert reference["run"]["quaternion_sign"] == "canonical"
    with pytest.raises(ValueError, match="probe config conventions.quaternion_sign"):
        resolve_conventions({"conventions": {"quaternion_sign": "positive"}}, run)


def test_rotation_targets_use_the_probe_sign(context):
    context.quaternion_sign = "scipy"
    rows = torch.tensor([[o, a, b] for o in range(40) for a in range(6) for b in range(6) if a != b])
    target = _relative_rotation_target(context)(context.train)(rows)
    lat = context.train["latents"]
    expect = relative_transform(lat[rows[:, 0], rows[:, 1]], lat[rows[:, 0], rows[:, 2]], "scipy")
    assert torch.allclose(target, expect["rel_rotation_quat"]) and (target[:, 0] < 0).any()


def test_r2_over_varying_outputs_for_a_one_axis_group():
    """Rotations about z only: x and y of the quaternion are constant; the uniform R² over all four outputs is
    capped near 0.5 by them, the R² over the varying outputs is not."""
    angle = torch.linspace(-3, 3, 50)
    target = torch.stack([torch.cos(angle / 2), torch.zeros(50), torch.zeros(50), torch.sin(angle / 2)], 1)
    pred = target + torch.tensor([0.0, 1e-3, -1e-3, 0.0])
    assert M.r2_uniform(pred, target) == pytest.approx(0.5)
    assert M.r2_uniform_varying(pred, target) == pytest.approx(1.0)
    assert M.varying_outputs(target).tolist() == [True, False, False, True]
    full = torch.nn.functional.normalize(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert M.r2_uniform_varying(full * 0.9, full) == pytest.approx(M.r2_uniform(full * 0.9, full).item())


def test_batchnorm_train_mode_extraction_uses_batch_statistics_and_restores_the_model():
    model = TinyBNModel()
    bn = model.net[1]
    bn.running_mean.fill_(5.0)  # far from the batch statistics: eval and train mode features differ
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_mode = extract_features(model, _view_batches(num_objects=4, views=3, batch=12), batchnorm="train")
    eval_mode = extract_features(model, _view_batches(num_objects=4, views=3, batch=12))
    assert not torch.allclose(train_mode["rep/full"], eval_mode["rep/full"], atol=1e-3)
    # one batch of all 12 views: pooled BN outputs average to BN's bias (0) per channel over the batch
    assert torch.allclose(train_mode["rep/full"].flatten(0, 1).mean(0), torch.zeros(4), atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training and bn.training  # modes restored
    with pytest.raises(ValueError, match="extraction.batchnorm"):
        extract_features(model, _view_batches(2, 2, 2), batchnorm="frozen")
