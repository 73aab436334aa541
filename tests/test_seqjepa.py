"""seq-JEPA: reference architecture, order invariance of z_AGG, EMA target, loss, ablation, actions, bad input."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssl_eq.geometry import canonical_quaternion
from ssl_eq.methods import build_method, compose_config
from ssl_eq.methods.seqjepa import seqjepa_loss

SIZE, CLASSES = 32, 3
SCHEMA_3DIE = ["rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue"]


def config(*overrides: str, backbone: str = "small_cnn") -> dict:
    cfg = compose_config(["method=seqjepa", f"backbone={backbone}", "data.root=unused", f"data.image_size={SIZE}",
                          f"data.num_classes={CLASSES}", f"data.latent_schema={SCHEMA_3DIE}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def tiny(*overrides: str) -> dict:
    """small_cnn (64-d), d_model 64 + 16, online probe hidden 32."""
    return config("method.action_emb_dim=16", "method.predictor_hidden=32", "method.online_equiprobe_hidden=[32]",
                  *overrides)


def sequence_batch(b: int = 4, m: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (b, m + 1, 3, SIZE, SIZE), dtype=torch.uint8, generator=g),
            "rel_rotation_quat": canonical_quaternion(torch.randn(b, m, 4, generator=g)),
            "rel_latents": torch.rand(b, m, 4, generator=g) - 0.5,
            "label": torch.randint(0, CLASSES, (b,), generator=g)}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_architecture_dimensions():
    """ResNet-18 at 128 px: 640-d tokens, 3 x (4 heads, FF 2560, dropout 0.1, post-norm), final LN, predictor
    768 -> 1024 -> 512; the no-action ablation has no action parameters and a 512-d model."""
    model = build_method(config("data.image_size=128", "method.action=rotcolor", backbone="resnet18"))
    assert model.rep_dim == 512 and model.d_model == 640 and model.action_dim == 6
    enc = model.action_encoder
    assert (enc.proj.in_features, enc.proj.out_features, enc.proj.bias) == (6, 128, None) and not enc.bn.affine
    layers = model.aggregator.encoder.layers
    assert len(layers) == 3 and all(not l.norm_first and l.self_attn.num_heads == 4 and l.linear1.out_features == 2560
                                    and l.dropout.p == 0.1 for l in layers)
    assert model.aggregator.encoder.norm.normalized_shape == (640,)
    assert torch.equal(model.aggregator.agg_token, torch.zeros(1, 1, 640))
    lin1, bn, _, lin2 = model.predictor
    assert (lin1.in_features, lin1.out_features, lin1.bias, bn.affine) == (768, 1024, None, True)
    assert (lin2.in_features, lin2.out_features) == (1024, 512) and lin2.bias is not None
    # one transformer layer: attention 4*640² + 4*640, FF 2*640*2560 + 2560 + 640, 2 LayerNorms
    per_layer = 4 * 640 * 640 + 4 * 640 + 2 * 640 * 2560 + 2560 + 640 + 4 * 640
    assert n_params(model.aggregator) == 3 * per_layer + 2 * 640 + 640
    assert model.online_classifier.classification_head.in_features == 640
    assert not any(p.requires_grad for p in model.backbone_target.parameters())
    assert n_params(model.backbone_target) == n_params(model.backbone) == 11_176_512  # ResNet-18 without fc
    model.eval()
    b = sequence_batch(2, 3)
    x = torch.randn(2, 4, 3, 64, 64)  # the stem accepts any size; 64 px keeps the CPU test fast
    with torch.no_grad():
        out = model.step_loss(x, b)
    assert out.aggregate.shape == (2, 640) and len(out.reps) == 3 and out.reps[0].shape == (2, 512)

    ablation = build_method(config("data.image_size=128", "method=seqjepa_no_action", backbone="resnet18"))
    assert ablation.action_encoder is None and ablation.d_model == 512
    assert ablation.aggregator.encoder.layers[0].linear1.out_features == 2048
    assert ablation.predictor[0].in_features == 512
    assert n_params(ablation) < n_params(model) and not any("action" in n for n, _ in ablation.named_parameters())


def test_permuting_observed_tokens_leaves_z_agg_unchanged_in_eval_mode():
    torch.manual_seed(0)
    model = build_method(tiny("method.seq_len=4")).eval()
    z, actions = torch.randn(3, 4, 64), torch.randn(3, 3, 4)
    with torch.no_grad():
        agg = model.aggregate(z, actions)
        # tokens move as units: (z_i, a_i) pairs, the last view keeps its zeroed action slot
        e = torch.cat([model.action_encoder(actions), torch.zeros(3, 1, 16)], 1)
        tokens = torch.cat([z, e], -1)
        perm = torch.tensor([3, 1, 0, 2])
        permuted = model.aggregator(tokens[:, perm])
        other = model.aggregate(z, actions.flip(1))
    assert agg.shape == (3, 80)
    assert (permuted - agg).abs().max() < 1e-5
    assert (other - agg).abs().max() > 1e-3  # the actions matter
    model.train()
    with torch.no_grad():
        assert (model.aggregator(tokens) - agg).abs().max() > 1e-4  # dropout acts in train mode


def test_loss_decreases_ema_gets_no_gradient_and_follows_schedule():
    torch.manual_seed(0)
    model = build_method(tiny())
    batch = sequence_batch(4)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    target_before = [p.clone() for p in model.backbone_target.parameters()]
    losses = []
    for _ in range(15):
        views, vec = model.augment_views(batch["images"])
        out = model.step_loss(views, {**batch, "aug_action": vec})
        probe_loss, logs, _ = model.online_probes(out.reps, batch, out.aggregate)
        opt.zero_grad()
        (out.loss + probe_loss).backward()
        assert all(p.grad is None for p in model.backbone_target.parameters())
        opt.step()
        losses.append(out.loss.item())
    assert min(losses[-3:]) < losses[0] - 1e-3, losses
    assert 0 <= losses[0] <= 2
    assert {"online/cls_top1", "online/rotation_r2"} <= set(logs)
    assert all(torch.equal(a, b) for a, b in zip(target_before, model.backbone_target.parameters()))
    model.on_train_batch_end(None, batch, 0)  # EMA step moves the target towards the online encoder
    moved = [not torch.equal(a, b) for a, b in zip(target_before, model.backbone_target.parameters())]
    assert any(moved)

    model.total_steps, model.steps_per_epoch = 1000, 10  # 100 epochs
    assert model.momentum(epoch=0) == pytest.approx(0.996)
    assert model.momentum(epoch=50) == pytest.approx(0.998)
    assert model.momentum(epoch=99) == pytest.approx(1 - 0.004 * (1 + torch.cos(torch.tensor(0.99 * torch.pi))) / 2)
    assert model.momentum(epoch=99) > 0.99999
    step_model = build_method(tiny("method.momentum.unit=step"))
    step_model.total_steps = 101
    assert [round(step_model.momentum(step=s), 6) for s in (0, 50, 100)] == [0.996, 0.998, 1.0]


def test_loss_is_one_minus_cosine():
    p, t = torch.randn(5, 8), torch.randn(5, 8)
    loss, terms = seqjepa_loss(p, t)
    assert torch.allclose(loss, 1 - torch.nn.functional.cosine_similarity(p, t).mean(), atol=1e-6)
    assert torch.allclose(seqjepa_loss(t, t)[0], torch.tensor(0.0), atol=1e-6)


@pytest.mark.parametrize("action,dim", [("rot", 4), ("rotcolor", 6), ("all", 8)])
def test_3diebench_action_types(action, dim):
    model = build_method(tiny(f"method.action={action}"))
    batch = sequence_batch(4)
    a = model.actions(batch)
    assert a.shape == (4, 3, dim) and torch.equal(a[..., :4], batch["rel_rotation_quat"])
    if dim == 6:
        assert torch.equal(a[..., 4:], batch["rel_latents"][..., [0, 3]])
    views, _ = model.augment_views(batch["images"])
    assert model.step_loss(views, batch).aggregate.shape == (4, 80)


def test_bad_input_names_option_and_valid_values():
    with pytest.raises(ValueError, match=r"method.seq_len: M \(observed views\) must be >= 1, got 0"):
        build_method(tiny("method.seq_len=0"))
    with pytest.raises(ValueError, match=r"method.action='rotcolor' needs latents \['floor_hue', 'spot_hue'\].*"
                                         r"valid action types for it: \['aug', 'rot'\]"):
        build_method(tiny("method.action=rotcolor", "data.latent_schema=[rot_x,rot_y,rot_z]"))
    with pytest.raises(ValueError, match=r"method.action: unknown action type 'colour'; valid: \['all', 'aug'"):
        build_method(tiny("method.action=colour"))
    with pytest.raises(ValueError, match=r"method.action='aug' needs action columns .* augment.transforms"):
        build_method(tiny("method.action=aug"))
    with pytest.raises(ValueError, match=r"data.num_views=3 contradicts method.seq_len=3"):
        build_method(tiny("data.num_views=3"))
    model = build_method(tiny())
    with pytest.raises(ValueError, match=r"batch has 3 views per item; method.seq_len=3 needs M \+ 1 = 4"):
        model.step_loss(torch.randn(2, 3, 3, SIZE, SIZE), sequence_batch(2, 2))


def test_aggregate_from_cached_features_equals_image_pass_and_m_val_differs_from_m_train():
    """The probe's z_AGG over M_val views reads cached per-view features (no image pass) and equals the
    aggregate of freshly encoded images; M_val may differ from M_train; too large an M_val is named."""
    from ssl_eq.datasets.relative import relative_transform
    from ssl_eq.probes.sequence import aggregate_features, fixed_sequences

    torch.manual_seed(0)
    model = build_method(tiny("method.seq_len=2", "method.action=rotcolor")).eval()
    k, v = 3, 5
    images = torch.randint(0, 256, (k, v, 3, SIZE, SIZE), dtype=torch.uint8)
    latents = torch.rand(k, v, 7) * 2 - 1
    with torch.no_grad():
        feats = {"rep/full": model.representations(model.preprocess(images.flatten(0, 1)))["full"].unflatten(0, (k, v)),
                 "latents": latents}
    seqs = fixed_sequences(k, v, 4, 2, seed=0)
    assert seqs.shape == (6, 5) and all(len(set(r[1:].tolist())) == 4 for r in seqs)
    cached = aggregate_features(model, feats, SCHEMA_3DIE, seqs, chunk=4)
    o, vi = seqs[:, :1], seqs[:, 1:]
    with torch.no_grad():
        z = model.representations(model.preprocess(images[o, vi].flatten(0, 1)))["full"].unflatten(0, (6, 4))
        lat = latents[o, vi]
        direct = model.aggregate(z, model.actions(relative_transform(lat[:, :-1], lat[:, 1:])))
    assert cached.shape == (6, 80) and torch.allclose(cached, direct, atol=1e-5)
    # a run trained on the reference's conventions gets its actions in them (scipy sign: some w < 0; raw hues)
    conv = {"quaternion_sign": "scipy", "colour_targets": "raw"}
    with torch.no_grad():
        ref = model.aggregate(z, model.actions(relative_transform(lat[:, :-1], lat[:, 1:], **conv)))
    assert torch.allclose(aggregate_features(model, feats, SCHEMA_3DIE, seqs, chunk=4, conventions=conv), ref,
                          atol=1e-5)
    assert not torch.allclose(ref, direct, atol=1e-3)
    single = aggregate_features(model, feats, SCHEMA_3DIE, fixed_sequences(k, v, 1, 1, seed=0), chunk=4)
    assert single.shape == (3, 80)
    with pytest.raises(ValueError, match=r"probes.agg_linear.m_val: 6 views per sequence, but the dataset has 5 "
                                         r"views per object; valid: 1..5"):
        fixed_sequences(k, v, 6, 1, seed=0)


def test_experiment_configs_hold_the_reference_settings():
    """What the reference code ran (Adam, wd 0, lr 4e-4 constant after warm-up) and what its script asked for."""
    ran = compose_config(["experiment=seqjepa_3diebench", "data.root=x"])
    assert (ran.data.image_size, ran.data.batch_size, ran.trainer.max_epochs, ran.method.seq_len) == (128, 512, 1000, 3)
    assert (ran.method.optim.name, ran.method.optim.lr, ran.method.optim.weight_decay) == ("adam", 4e-4, 0.0)
    assert ran.method.optim.final_lr_factor == 1.0 and ran.method.optim.warmup_steps == 20 * (41920 // 512)
    assert (ran.method.momentum.start, ran.method.momentum.unit) == (0.996, "epoch")
    assert list(ran.augment.normalize.mean) == [0.5016, 0.5037, 0.5060] and ran.trainer.precision == "32-true"
    script = compose_config(["experiment=seqjepa_3diebench_adamw", "data.root=x"])
    assert (script.method.optim.name, script.method.optim.weight_decay, script.method.optim.final_lr_factor) == \
        ("adamw", 1e-3, 0.0)
    assert script.data.batch_size == 512 and script.method.action == "rot"
