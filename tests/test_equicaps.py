"""EquiCaps: capsule layers, loss, relative 4×4 matrices (equicaps.md §1-3); EquiMod / AugSelf targets."""
from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from ssl_eq.cli import main
from ssl_eq.datasets.relative import relative_transform, rigid_matrix
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.geometry import euler_xyz_to_matrix
from ssl_eq.methods import build_method, compose_config
from ssl_eq.methods.augself import TARGETS
from ssl_eq.methods.blocks.capsules import PrimaryCapsules, SelfRouting, WeightedVotes
from ssl_eq.methods.equicaps import cross_entropy, equicaps_loss

WEIGHTS = {"invariance": 0.1, "equivariance": 5.0, "variance": 10.0, "covariance": 1.0, "memax": 1.0,
           "log_clamp": 1e-8}
# fact sheet §1 parameter counts (3×3, 4×4)
REFERENCE_COUNTS = {3: {"conv_a": 147_456, "conv_pose": 1_327_104, "W1": 5_308_416, "W2": 589_824, "b2": 65_536},
                    4: {"conv_a": 147_456, "conv_pose": 2_359_296, "W1": 16_777_216, "W2": 1_048_576, "b2": 65_536}}


def random_latents(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 2, 10) 3DIEBench-T latents: rotations U[-π/2, π/2], hues / light in [0, 1), translations U[-0.5, 0.5]."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, 2, 10, generator=g)
    lat[..., :3] = (lat[..., :3] - 0.5) * math.pi
    lat[..., 7:] -= 0.5
    return lat


def reference_routing(a: torch.Tensor, u: torch.Tensor, layer: SelfRouting) -> tuple[torch.Tensor, torch.Tensor]:
    """The fact sheet's single-pass self-routing written out per input / output capsule (loops, tiny sizes)."""
    n_in, k, p = layer.W1.shape[0], layer.num_outputs, layer.pose_size
    b = a.shape[0]
    a_out, pose_out = torch.zeros(b, k), torch.zeros(b, k, p)
    for s in range(b):
        votes = torch.stack([layer.W1[i].view(k, p, p) @ u[s, i] for i in range(n_in)])        # (N, K, P)
        r = torch.stack([torch.softmax(layer.W2[i] @ u[s, i] + layer.b2[i], 0) for i in range(n_in)])
        for j in range(k):
            w = a[s] * r[:, j]
            a_out[s, j] = w.sum() / a[s].sum()
            pose_out[s, j] = (w[:, None] / w.sum() * votes[:, j]).sum(0)
    return a_out, pose_out


@pytest.mark.parametrize("n", [3, 4])
def test_reference_size_init_is_uniform_and_counts_match(n):
    torch.manual_seed(0)
    k, p = 32, n * n
    primary, routing = PrimaryCapsules(512, k, p), SelfRouting(8 * 8 * k, k, p)
    counts = {"conv_a": primary.conv_a.weight.numel(), "conv_pose": primary.conv_pose.weight.numel(),
              **{name: getattr(routing, name).numel() for name in ("W1", "W2", "b2")}}
    assert counts == REFERENCE_COUNTS[n]
    assert routing.W1.std().item() == pytest.approx(math.sqrt(2 / (k * p * p)), rel=0.01)  # Kaiming, fan_in K·P·P
    with torch.no_grad():
        a, u = primary(torch.randn(2, 512, 8, 8))
        assert a.shape == (2, 2048) and u.shape == (2, 2048, p) and bool(((a > 0) & (a < 1)).all())
        act, pose = routing(a, u)
    assert pose.shape == (2, k, p)
    assert torch.equal(act, torch.full_like(act, 1 / k))  # uniform routing: exactly 1/K
    _, terms = equicaps_loss(act, pose.view(2, k, n, n), act, pose.view(2, k, n, n),
                             torch.eye(n).expand(2, n, n), **WEIGHTS)
    assert terms["invariance"].item() == pytest.approx(0.1 * math.log(32), rel=1e-6)
    assert abs(terms["memax"].item()) < 1e-5


def test_tiny_routing_is_one_pass_and_sums_to_one():
    """K = 4 capsules on a 2×2 map: random routing weights, activations sum to 1, the vectorised layer equals
    the single-pass formula, and checkpointing changes neither outputs nor gradients."""
    torch.manual_seed(1)
    k, p = 4, 9
    layer = SelfRouting(2 * 2 * k, k, p)
    with torch.no_grad():
        layer.W2.normal_()
        layer.b2.normal_()
    a, u = torch.rand(3, 16), torch.randn(3, 16, p)
    act, pose = layer(a, u)
    torch.testing.assert_close(act.sum(-1), torch.ones(3), rtol=0, atol=1e-6)
    ref_act, ref_pose = reference_routing(a, u, layer)
    torch.testing.assert_close(act, ref_act, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pose, ref_pose, rtol=1e-5, atol=1e-5)

    grads = []
    for ckpt in (False, True):
        layer.checkpoint = ckpt
        layer.zero_grad()
        out_a, out_p = layer(a, u)
        (out_a.square().sum() + out_p.sin().sum()).backward()
        grads.append([t.grad.clone() for t in (layer.W1, layer.W2, layer.b2)])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1)
    with pytest.raises(ValueError, match="expects 16 input capsules, got 8"):
        layer(a[:, :8], u[:, :8])


def test_weighted_votes_equal_the_plain_einsums():
    """The fused weighted sum of votes: same values and gradients as the two einsums it replaces (float32), and
    gradcheck in float64."""
    torch.manual_seed(2)
    b, n, k, p = 3, 5, 4, 9
    w, u, w1 = torch.rand(b, n, k), torch.randn(b, n, p), torch.randn(n, k * p, p)

    def plain(w, u, w1):
        return torch.einsum("bnk,bnkp->bkp", w, torch.einsum("nop,bnp->bno", w1, u).unflatten(-1, (k, p)))

    grads = []
    for fn in (plain, WeightedVotes.apply):
        args = [t.clone().requires_grad_() for t in (w, u, w1)]
        out = fn(*args)
        out.sin().sum().backward()
        grads.append([out.detach(), *(t.grad for t in args)])
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    torch.autograd.gradcheck(WeightedVotes.apply, [t.double().requires_grad_() for t in (w, u, w1)])


@pytest.mark.parametrize("frame", ["object", "base"])
def test_relative_4x4_matrix_matches_fact_sheet(frame):
    lat = random_latents(16)
    rel = relative_transform(lat[:, 0], lat[:, 1])
    r1, r2 = euler_xyz_to_matrix(lat[:, 0, :3]), euler_xyz_to_matrix(lat[:, 1, :3])
    t1, t2 = lat[:, 0, 7:, None], lat[:, 1, 7:, None]
    r1t = r1.transpose(-1, -2)
    trans = r1t @ (t2 - t1) if frame == "object" else r1t @ r2 @ t2 - t1
    m = rel[f"rel_matrix_{frame}"]
    torch.testing.assert_close(m[:, :3, :3], r1t @ r2, atol=1e-6, rtol=0)
    torch.testing.assert_close(m[:, :3, 3:], trans, atol=1e-6, rtol=0)
    torch.testing.assert_close(m[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(16, 4), atol=0, rtol=0)
    assert "rel_matrix_object" not in relative_transform(lat[:, 0, :7], lat[:, 1, :7])  # 3DIEBench: no translation


@pytest.mark.parametrize("n, frame", [(3, "object"), (4, "object"), (4, "base")])
def test_equivariant_toy_encoder_has_zero_equivariance_loss(n, frame):
    """Poses A_k·M_v (per-capsule A_k, the view's absolute matrix in the dataset's convention) are exactly
    equivariant: loss 0 on every pair; the other frame's (4×4) or a shuffled transformation gives > 0."""
    b, k = 8, 5
    lat = random_latents(b, seed=2)
    r = euler_xyz_to_matrix(lat[..., :3])
    t = lat[..., 7:]
    absolute = r if n == 3 else rigid_matrix(r, t if frame == "object" else (r @ t[..., None])[..., 0])  # (B, 2, n, n)
    a_k = torch.randn(k, n, n, generator=torch.Generator().manual_seed(3))
    poses = a_k @ absolute.unsqueeze(2)                                                               # (B, 2, K, n, n)
    act = torch.softmax(torch.randn(b, 2, k), -1)
    keys = relative_transform(lat[:, 0], lat[:, 1])
    rel = keys["rel_rotation_matrix"] if n == 3 else keys[f"rel_matrix_{frame}"]

    def equi(m: torch.Tensor) -> float:
        _, terms = equicaps_loss(act[:, 0], poses[:, 0], act[:, 1], poses[:, 1], m, **WEIGHTS)
        return terms["equivariance"].item()

    assert equi(rel) < 1e-10
    assert equi(rel[torch.roll(torch.arange(b), 1)]) > 1e-3
    if n == 4:
        assert equi(keys[f"rel_matrix_{'base' if frame == 'object' else 'object'}"]) > 1e-4


def test_cross_entropy_is_finite_for_zero_activations():
    target = torch.tensor([[0.5, 0.5, 0.0]])
    prob = torch.tensor([[1.0, 0.0, 0.0]])  # the reference's log(prob ** -target) is inf here
    ce = cross_entropy(target, prob, 1e-8)
    assert torch.isfinite(ce) and ce.item() == pytest.approx(-0.5 * math.log(1e-8))


def equicaps_config(*overrides: str) -> dict:
    cfg = compose_config(["method=equicaps_4x4", "backbone=small_cnn", "data.root=unused", "data.image_size=32",
                          "data.num_classes=3", "method.num_capsules=4", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_bad_input_names_the_option():
    with pytest.raises(ValueError, match="method.frame: expected 'object' or 'base', got 'world'"):
        build_method(equicaps_config("method.frame=world"))
    with pytest.raises(ValueError, match=r"method.pose_size=4 .* needs translation latents"):
        build_method(equicaps_config("data.latent_schema=[rot_x,rot_y,rot_z,floor_hue,spot_theta,spot_phi,spot_hue]"))
    with pytest.raises(ValueError, match=r"method.routing.kernel_size=8: .* 4×4 map at data.image_size=32"):
        build_method(equicaps_config("method.routing.kernel_size=8"))
    with pytest.raises(ValueError, match="backbone.name: EquiCaps needs a backbone exposing its last feature map"):
        build_method(equicaps_config("backbone=resnet18"))
    model = build_method(equicaps_config("method.frame=base"))
    assert model.data_requirements["keys"] == ["images", "rel_matrix_base", "rel_rotation_matrix"]
    views = torch.randn(2, 2, 3, 32, 32)
    with pytest.raises(KeyError, match="needs batch key 'rel_matrix_base'"):
        model.step_loss(views, {"rel_rotation_matrix": torch.eye(3).expand(2, 3, 3)})


@pytest.mark.parametrize("pose_size, kernel", [(3, 8), (4, 8)])
def test_reference_model_shapes_at_256px(pose_size, kernel):
    """resnet18_sie at 256 px: the 8×8 map feeds 2048 primary capsules; pooled 512-d "full", 32 activations
    (exactly 1/32 at init) as "inv", 32 flattened n×n poses as "equi"."""
    torch.manual_seed(0)
    cfg = compose_config([f"method=equicaps_{pose_size}x{pose_size}", "backbone=resnet18_sie", "data.root=unused",
                          "data.image_size=256", "data.num_classes=55", f"method.routing.kernel_size={kernel}"])
    model = build_method(OmegaConf.to_container(cfg, resolve=True)).eval()
    assert model.routing.W1.shape[0] == 2048
    with torch.no_grad():
        reps = model.representations(torch.randn(1, 3, 256, 256))
    assert reps["full"].shape == (1, 512) and reps["equi"].shape == (1, 32 * pose_size ** 2)
    assert torch.equal(reps["inv"], torch.full((1, 32), 1 / 32))


def test_augself_targets():
    lat = random_latents(4)
    batch = {**relative_transform(lat[:, 0], lat[:, 1]), "aug_action": torch.randn(4, 2, 6)}
    assert torch.equal(TARGETS["rotation"][0](batch), batch["rel_rotation_quat"])
    hue = TARGETS["rotation_hue"][0](batch)
    assert hue.shape == (4, 6) and torch.equal(hue[:, 4:], batch["rel_latents"][:, [0, 3]])
    assert torch.equal(TARGETS["augmentation"][0](batch), batch["aug_action"][:, 1] - batch["aug_action"][:, 0])


def test_experiment_configs_hold_the_reference_defaults():
    for name, pose in (("equicaps_3diebench", 3), ("equicaps_3diebench_t", 4)):
        c = compose_config([f"experiment={name}", "data.root=unused"])
        assert (c.method.name, c.method.pose_size, c.method.frame, c.backbone.name) == ("equicaps", pose, "object",
                                                                                       "resnet18_sie")
        assert (c.method.optim.name, c.method.optim.lr, c.method.optim.weight_decay) == ("adam", 1e-3, 1e-6)
        assert (c.method.optim.warmup_steps, c.method.optim.final_lr_factor) == (0, 1.0)  # constant lr
        assert (c.data.batch_size, c.data.image_size, c.trainer.max_epochs) == (256, 256, 2000)
        assert c.method.routing.kernel_size == 8 and c.method.routing.checkpoint and c.trainer.sync_batchnorm
        assert list(c.augment.normalize.mean) == [0.5016, 0.5037, 0.5060] and not c.augment.transforms
        assert dict(c.method.loss) == WEIGHTS


def test_tiny_4x4_run_pretrains_probes_and_reports(tmp_path, capsys):
    """3DIEBench-T synthetic data -> 4×4 EquiCaps (2 steps) -> translation / linear probes on the pooled map and
    the capsule parts -> report row; a 3DIEBench dataset (no translation) is refused naming the option."""

    data_t = make_synthetic_dataset(tmp_path / "data_t", num_objects=12, views=4, size=32, variant="3diebench-t")
    run = tmp_path / "run"
    common = ["method=equicaps_4x4", "backbone=small_cnn", "method.num_capsules=4", "trainer.max_steps=2",
              "data.batch_size=4", "trainer.enable_progress_bar=false", "method.frame=base"]
    assert main(["pretrain", *common, f"data.root={data_t}", f"run_dir={run}"]) == 0
    assert main(["probe", str(run), "--epochs", "1", "--probes", "linear,translation"]) == 0
    metrics = json.loads((run / "probe" / "probe.json").read_text())["metrics"]
    assert {"translation/object/full/r2_pooled", "translation/base/full/r2_pooled", "linear/full/top1",
            "linear/inv/top1", "linear/equi/top1"} <= set(metrics)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "| equicaps |" in (tmp_path / "report" / "report.md").read_text()

    data = make_synthetic_dataset(tmp_path / "data", num_objects=12, views=4, size=32)
    capsys.readouterr()
    assert main(["pretrain", *common, f"data.root={data}", f"run_dir={tmp_path / 'run2'}"]) != 0
    assert "method.pose_size=4 (EquiCaps 4×4, frame 'base') needs translation latents" in capsys.readouterr().err
