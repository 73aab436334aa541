"""`ssl-eq import-checkpoint` / `export-checkpoint`: files laid out as each reference writes them (tensor names,
shapes and top-level keys from tests/data/checkpoints/*.json, copied from the fact sheet; random values) import
into runs whose representations equal the same weights loaded by name; toolkit runs survive export -> import
bit for bit; a renamed / missing / reshaped tensor is refused with its name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from ssl_eq.backbones import build_backbone
from ssl_eq.checkpoints import export_checkpoint, import_checkpoint
from ssl_eq.cli import main
from ssl_eq.methods.blocks.capsules import PrimaryCapsules, SelfRouting
from ssl_eq.methods.run import build_method, compose_config, load_run

LAYOUTS = Path(__file__).parent / "data" / "checkpoints"


def layout(name: str) -> dict:
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def reference_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the layout with its name and shape: random values (positive BN variances), int64 counters,
    zeros for the reference-only evaluator / online probes (never read by an import)."""
    spec, g = layout(name), torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spec["tensors"].items():
        if spec["non_float32"].get(key) == "int64":
            state[key] = torch.tensor(11)
        elif any(s in key for s in ("evaluator.", "online_linprobe", "online_equiprobe")):
            state[key] = torch.zeros(shape)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * (0.5 if key.endswith(("bias", "running_mean")) else 0.05)
    return state


def write_reference_file(name: str, path: Path, state: dict[str, torch.Tensor] | None = None,
                         flat: bool = False) -> Path:
    """The file as the reference's torch.save writes it (top-level keys of the layout, or a flat state dict)."""
    spec = layout(name)
    state = reference_state(name) if state is None else state
    if flat or not spec["model_key"]:
        payload = state
    else:
        fields = {"epoch": spec.get("epoch_value", 100), "min_loss": 0.25, "run_id": "wandbid-no-id_seqjepa-3diebench",
                  "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
                  "lr_scheduler": {"T_max": 1000, "last_epoch": 3}}
        payload = {k: fields[k] for k in spec["top_level_keys"] if k != "model"}
        payload["model"] = state
    torch.save(payload, path)
    return path


def strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (reference file, its state): built once per module (the published sizes are large)."""
    root, cache = tmp_path_factory.mktemp("reference_files"), {}

    def get(name: str, flat: bool = False):
        if (name, flat) not in cache:
            state = reference_state(name)
            cache[name, flat] = write_reference_file(name, root / f"{name}{'_flat' if flat else ''}.pth", state,
                                                     flat), state
        return cache[name, flat]
    return get


@pytest.fixture(scope="module")
def imported(files, tmp_path_factory):
    """(name, format) -> (run folder imported from the file, the import record, the file's state), once each."""
    root, cache = tmp_path_factory.mktemp("imported"), {}

    def get(name: str, fmt: str | None = None, flat: bool = False):
        if (name, fmt, flat) not in cache:
            path, state = files(name, flat)
            run = root / f"{name}_{fmt}_{flat}"
            cache[name, fmt, flat] = run, import_checkpoint(path, run, fmt=fmt), state
        return cache[name, fmt, flat]
    return get


def images(size: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


# ---------------------------------------------------------------------------------------------- published layouts
def test_sie_model_pth_gives_the_reference_representations_embeddings_and_predictions(imported):
    run, record, state = imported("sie")                            # format detected from the tensors
    assert record["format"] == "sie" and record["dropped"] == ["evaluator"] and record["reference_epoch"] == 2000
    assert "4 projector Linear biases folded" in record["notes"][0]
    model = load_run(run)
    cfg = model.cfg.method
    assert (cfg.split.inv, cfg.split.equi, list(cfg.projector_equi)) == (256, 256, [1024, 1024, 1024])
    ref = strip(state, "module.")
    backbone, _ = build_backbone("resnet18_sie")
    backbone.load_state_dict(strip(ref, "backbone."))
    x = images(64)
    with torch.no_grad():
        rep = backbone.eval()(x)
        ours = model.representations(x)
        assert torch.equal(ours["full"], rep) and torch.equal(ours["equi"], rep[:, 256:])
        # the reference projector: Linear WITH bias -> BN -> ReLU -> Linear with bias -> BN -> ReLU -> Linear
        proj = nn.Sequential(nn.Linear(256, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 1024),
                             nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 1024, bias=False)).eval()
        proj.load_state_dict(strip(ref, "projector_equi."))
        emb = proj(rep[:, 256:])
        assert close(model.embeddings(x)["equi"], emb)
        # the reference hypernetwork reads quaternions x, y, z, w; the toolkit's actions are w, x, y, z
        quat_xyzw = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
        weights = (quat_xyzw @ ref["predictor.hypernet.net.0.weight"].T).view(2, 1024, 1024)
        expected = torch.bmm(weights, emb[:, :, None])[..., 0]
        pred = model.predict(emb, {"rel_rotation_quat": quat_xyzw[:, [3, 0, 1, 2]]})
        assert close(pred, expected)


def test_sie_final_weights_is_the_backbone_alone(files, tmp_path):
    path, state = files("sie_backbone")
    assert import_checkpoint(path, tmp_path / "run")["initialised_fresh"] == [
        "online_classifier", "online_rotation", "predictor", "projector_equi", "projector_inv"]
    model = load_run(tmp_path / "run")
    backbone, _ = build_backbone("resnet18_sie")
    backbone.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(model.representations(images(32))["full"], backbone.eval()(images(32)))


@pytest.mark.parametrize("name, flat", [("equicaps_3x3", False), ("equicaps_4x4", True)])
def test_equicaps_files_give_the_reference_backbone_and_capsules(imported, name, flat):
    run, record, state = imported(name, flat=flat)  # model.pth layout, or flat like final_weights.pth / releases
    assert record["format"] == name
    model = load_run(run)
    n = 3 if name == "equicaps_3x3" else 4
    assert (model.cfg.method.pose_size, model.cfg.method.num_capsules, model.image_size) == (n, 32, 256)
    ref = strip(state, "module.")
    backbone, _ = build_backbone("resnet18_sie")
    backbone.load_state_dict(strip(ref, "backbone."))
    primary, routing = PrimaryCapsules(512, 32, n * n), SelfRouting(8 * 8 * 32, 32, n * n)
    primary.load_state_dict({k: v for k, v in strip(ref, "projector.").items() if not k.startswith("fc.")})
    routing.load_state_dict({"W1": ref["projector.fc.W1"], "W2": ref["projector.fc.W2"],
                             "b2": ref["projector.fc.b2"][0, 0]})
    x = images(256, 1)
    with torch.no_grad():
        fmap = backbone.eval().forward_features(x)
        act, pose = routing(*primary.eval()(fmap))
        ours = model.representations(x)
        assert torch.equal(ours["full"], fmap.mean((2, 3)))
        assert close(ours["inv"], act) and close(ours["equi"], pose.flatten(1))


def test_seqjepa_files_give_the_reference_encoder_actions_and_aggregate(imported):
    run, record, state = imported("seqjepa_rotcolor")
    assert record["format"] == "seqjepa" and record["dropped"] == ["online_equiprobe", "online_linprobe"]
    model = load_run(run)
    d_a = 6
    assert (model.cfg.method.action, model.cfg.method.seq_len, model.cfg.method.aggregator.num_layers) == \
        ("rotcolor", 4, 3)
    encoder = torchvision.models.resnet18(zero_init_residual=True)
    encoder.fc = nn.Identity()
    encoder.load_state_dict(strip(state, "encoder."))
    proj = nn.Sequential(nn.Linear(d_a, 128, bias=False), nn.BatchNorm1d(128, affine=False))
    proj.load_state_dict(strip(state, "action_proj."))
    layer = nn.TransformerEncoderLayer(640, 4, 2560, batch_first=True)
    transformer = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    transformer.load_state_dict(strip(state, "transformer_encoder.transformer_encoder."))
    norm = nn.LayerNorm(640)
    norm.load_state_dict(strip(state, "transformer_encoder.norm."))
    x = images(128, 3)
    action_ref = torch.randn(2, d_a)                             # x, y, z, w[, Δfloor hue, Δlight hue]
    with torch.no_grad():
        z = encoder.eval()(x)
        assert close(model.representations(x)["full"], z)
        assert close(model.action_encoder.eval()(action_ref[:, [3, 0, 1, 2, *range(4, d_a)]]), proj.eval()(action_ref))
        tokens = torch.cat([z[:2][None], torch.cat([proj(action_ref[:1]), torch.zeros(1, 128)])[None]], -1)
        expected = norm(transformer.eval()(torch.cat([state["agg_token"], tokens], 1)))[:, 0]
        assert close(model.aggregate(z[:2][None], action_ref[None, :1, [3, 0, 1, 2, *range(4, d_a)]]), expected)


def test_sie_repository_vicreg_file_gives_the_reference_projector(files, tmp_path):
    """The SIE repository's VICReg baseline: backbone + one Projector (Linear with bias, BN, ReLU, ..., Linear)."""
    g = torch.Generator().manual_seed(3)
    backbone = {f"module.backbone.{k}": v for k, v in files("sie_backbone")[1].items()}
    head = {"0.weight": (64, 512), "0.bias": (64,), "1.weight": (64,), "1.bias": (64,), "1.running_mean": (64,),
            "1.running_var": (64,), "3.weight": (32, 64), "3.bias": (32,), "4.weight": (32,), "4.bias": (32,),
            "4.running_mean": (32,), "4.running_var": (32,), "6.weight": (16, 32)}
    proj = {f"module.projector.{k}": torch.rand(s, generator=g) + 0.5 if "var" in k else torch.randn(s, generator=g)
            for k, s in head.items()}
    proj.update({"module.projector.1.num_batches_tracked": torch.tensor(3),
                 "module.projector.4.num_batches_tracked": torch.tensor(3)})
    evaluator = {"module.evaluator.classifier_repr.weight": torch.zeros(55, 512)}
    torch.save({"epoch": 7, "model": {**backbone, **proj, **evaluator}, "optimizer": {}}, tmp_path / "model.pth")
    record = import_checkpoint(tmp_path / "model.pth", tmp_path / "run")
    assert record["format"] == "sie_vicreg" and record["dropped"] == ["evaluator"]
    model = load_run(tmp_path / "run")
    assert list(model.cfg.method.projector) == [64, 32, 16]
    reference = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32),
                              nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16, bias=False)).eval()
    reference.load_state_dict(strip(proj, "module.projector."))
    rep = torch.randn(4, 512)
    with torch.no_grad():
        assert close(model.project({"full": rep, "inv": rep, "equi": rep[:, :0]})["inv"], reference(rep))


def test_seqjepa_without_ema_copies_the_encoder_into_the_target(files, tmp_path):
    state = {k: v for k, v in files("seqjepa_rotcolor")[1].items() if not k.startswith("target_encoder.")}
    record = import_checkpoint(write_reference_file("seqjepa_rotcolor", tmp_path / "f.pth", state), tmp_path / "run")
    assert "without --ema" in record["notes"][0]
    model = load_run(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.state_dict().values(),
                                                  model.backbone_target.state_dict().values()))


def test_export_at_the_published_configuration_has_every_reference_tensor(imported, tmp_path):
    """What the reference loaders need: the layout's names and shapes exactly (EquiCaps and seq-JEPA load strict)."""
    for name, fmt in (("sie", None), ("equicaps_3x3", None), ("seqjepa", "seqjepa")):
        run, record, _ = imported(name, fmt)
        fmt = record["format"]
        out = tmp_path / f"{name}.pth"
        export_checkpoint(run, fmt, out)
        payload = torch.load(out, map_location="cpu", weights_only=True)   # what torch >= 2.6 loads by default
        spec = layout(name)
        assert {k: list(v.shape) for k, v in payload["model"].items()} == spec["tensors"]
        assert set(spec["top_level_keys"]) - {"optimizer", "lr_scheduler"} <= set(payload)
        assert all(v.dtype == (torch.int64 if k in spec["non_float32"] else torch.float32)
                   for k, v in payload["model"].items())


# ------------------------------------------------------------------------------------------------ round trips
TINY = {
    "sie": ["experiment=sie_3diebench", "method.projector_inv=[32,32]", "method.projector_equi=[16,24]"],
    "sie_deep": ["experiment=sie_3diebench", "method=sie_deep_hypernet", "method.projector_equi=[16,8]",
                 "method.projector_inv=[8]"],
    "vicreg": ["experiment=sie_3diebench", "method=vicreg", "method.projector=[32,32,16]"],
    "equimod": ["experiment=sie_3diebench", "method=equimod", "method.projector_inv=[16,16]",
                "method.projector_equi=[8,8]"],
    "equicaps_3x3": ["experiment=equicaps_3diebench", "method.num_capsules=4", "method.routing.kernel_size=1",
                     "data.image_size=32"],
    "equicaps_4x4": ["experiment=equicaps_3diebench_t", "method.num_capsules=4", "method.routing.kernel_size=1",
                     "data.image_size=32", "method.frame=base"],
    "seqjepa": ["experiment=seqjepa_3diebench", "method.action=rotcolor", "method.seq_len=2",
                "method.aggregator.num_layers=1", "method.aggregator.num_heads=8", "method.predictor_hidden=64",
                "backbone.stem=small", "data.image_size=32"],
}


def toolkit_run(path: Path, overrides: list[str], seed: int = 0) -> Path:
    """A run folder (config.yaml + checkpoints/last.ckpt as `pretrain` writes them) with random weights and BN
    statistics, so that nothing can be right by initialisation."""
    cfg = compose_config([*overrides, "data.root=unused", "data.num_classes=7", f"run_dir={path}"])
    model = build_method(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.1)
            else:
                t.fill_(5)
    config = OmegaConf.to_container(cfg, resolve=True)
    (path / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"config": config}, "epoch": 3},
               path / "checkpoints" / "last.ckpt")
    OmegaConf.save(cfg, path / "config.yaml")
    return path


@pytest.mark.parametrize("run, fmt", [("sie", "sie"), ("sie_deep", "sie"), ("vicreg", "sie_vicreg"),
                                      ("equimod", "sie_equimod"), ("equicaps_3x3", "equicaps_3x3"),
                                      ("equicaps_4x4", "equicaps_4x4"), ("seqjepa", "seqjepa")])
def test_export_then_import_is_bit_identical(tmp_path, run, fmt):
    src = toolkit_run(tmp_path / "src", TINY[run])
    out = tmp_path / ("final_weights.pth" if fmt == "sie_backbone" else "model.pth")
    assert main(["export-checkpoint", str(src), "--format", fmt, "--out", str(out)]) == 0
    assert main(["import-checkpoint", str(out), "--out", str(tmp_path / "back")]) == 0   # detected
    assert json.loads((tmp_path / "back" / "source.json").read_text())["format"] == fmt
    a, b = load_run(src), load_run(tmp_path / "back")
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert OmegaConf.to_container(a.cfg.method) == OmegaConf.to_container(b.cfg.method)


def test_sie_backbone_round_trip_keeps_the_backbone(tmp_path, capsys):
    src = toolkit_run(tmp_path / "src", TINY["sie"])
    assert main(["export-checkpoint", str(src), "--format", "sie_backbone", "--out", str(tmp_path / "b.pth")]) == 2
    assert "final_weights" in capsys.readouterr().err    # SIE's eval scripts pick the layout by the file name
    out = tmp_path / "final_weights.pth"
    assert main(["export-checkpoint", str(src), "--format", "sie_backbone", "--out", str(out)]) == 0
    payload = torch.load(out, weights_only=True)
    assert "conv1.weight" in payload and not any(k.startswith(("backbone.", "module.")) for k in payload)
    assert main(["import-checkpoint", str(out), "--out", str(tmp_path / "back")]) == 0
    a, b = load_run(src).backbone.state_dict(), load_run(tmp_path / "back").backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_refuses_a_run_of_another_method(tmp_path, capsys):
    src = toolkit_run(tmp_path / "src", TINY["equicaps_3x3"])
    assert main(["export-checkpoint", str(src), "--format", "equicaps_4x4", "--out", str(tmp_path / "x.pth")]) == 2
    assert "3×3 poses" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
    assert main(["export-checkpoint", str(src), "--format", "seqjepa", "--out", str(tmp_path / "x.pth")]) == 2
    assert "method 'seqjepa'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("edit, names", [
    ("rename", ["unknown tensors layer2.0.conv9.weight", "missing tensors layer2.0.conv1.weight"]),
    ("drop", ["missing tensors layer3.1.bn2.running_var"]),
    ("reshape", ["mis-shaped tensors layer4.0.conv2.weight (512, 512, 1, 1) (model: (512, 512, 3, 3))"]),
])
def test_a_renamed_missing_or_reshaped_tensor_is_refused_by_name(files, tmp_path, capsys, edit, names):
    _, state = files("sie_backbone")
    state = dict(state)
    if edit == "rename":
        state["layer2.0.conv9.weight"] = state.pop("layer2.0.conv1.weight")
    elif edit == "drop":
        del state["layer3.1.bn2.running_var"]
    else:
        state["layer4.0.conv2.weight"] = state["layer4.0.conv2.weight"][..., :1, :1].clone()
    path = tmp_path / "final_weights.pth"
    torch.save(state, path)
    assert main(["import-checkpoint", "--format", "sie_backbone", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and all(n in err for n in names), err
    assert not (tmp_path / "run").exists()


def test_refusals_name_the_problem(files, tmp_path, capsys):
    path, state = files("equicaps_3x3")
    assert main(["import-checkpoint", "--format", "equicaps_4x4", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "use --format equicaps_3x3" in capsys.readouterr().err
    bad = {**{k: v for k, v in state.items() if k != "module.projector.fc.b2"},
           "module.projector.fc.b2": state["module.projector.fc.b2"][0]}           # (1, 2048, 32): not (1, 1, N, K)
    torch.save({"model": bad}, tmp_path / "bad.pth")
    assert main(["import-checkpoint", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "b")]) == 2
    assert "projector.fc.b2" in capsys.readouterr().err
    torch.save({"model": {"a.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    assert main(["import-checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "c")]) == 2
    assert "matches no known format; give --format" in capsys.readouterr().err
    (tmp_path / "text.pth").write_text("not a checkpoint")
    assert main(["import-checkpoint", str(tmp_path / "text.pth"), "--out", str(tmp_path / "d")]) == 2
    assert "text.pth: not a readable PyTorch checkpoint" in capsys.readouterr().err
