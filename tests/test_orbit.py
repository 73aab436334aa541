"""`ssl-eq orbit`: orbit latents, frames rendered through the renderer, measures on hand-built encoders, and the
command end to end on a tiny rendered dataset and a 2-step SIE run (PNGs, orbit.json, report, bad input)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_eq.cli import main
from ssl_eq.datasets.native import NativeDataset
from ssl_eq.geometry import euler_xyz_to_matrix, geodesic_angle
from ssl_eq.orbit.frames import render_frames, select_orbit_objects
from ssl_eq.orbit.latents import LATENT_ORBITS, GridPlan, grid_latents, orbit_latents, plan_orbit
from ssl_eq.orbit.measures import area_under_curve
from ssl_eq.orbit.runner import measure_orbit
from ssl_eq.renderers.job import RenderConfig, RenderJob
from ssl_eq.renderers.scene import LATENT_NAMES_3DIEBENCH, SceneSpec

TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
        "method.split.inv=8", "method.split.equi=8", "method.projector_inv=[16,16]", "method.projector_equi=[16,16]"]
SCENE = SceneSpec().to_dict()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """24 procedural objects (2 per class, so 12 val objects) x 3 views at 32 px."""
    out = tmp_path_factory.mktemp("orbit") / "data"
    RenderJob(RenderConfig(out=str(out), objects=24, views=3, size=32, device="cpu", progress=False,
                           objects_per_shard=12)).run()
    return out


@pytest.fixture(scope="module")
def orbit_objects(dataset):
    ds = NativeDataset(dataset)
    return ds, select_orbit_objects(ds.manifest, dataset, 3)


@pytest.mark.parametrize("latent", list(LATENT_ORBITS))
@pytest.mark.parametrize("range_", ["full", "dataset"])
def test_orbit_latents_change_only_the_swept_latent_by_the_step(latent, range_):
    plan = plan_orbit(latent, range_, 7, SCENE)
    view0 = np.random.default_rng(0).uniform(0, 1, (2, 10))
    lat = orbit_latents(view0, list(LATENT_ORBITS).index(latent), plan.offsets)
    col = list(LATENT_ORBITS).index(latent)
    others = np.delete(lat, col, axis=2)
    assert np.array_equal(others, np.repeat(np.delete(view0, col, axis=1)[:, None], 7, 1))
    assert np.array_equal(lat[:, plan.reference_index], view0)          # the reference frame is view 0 exactly
    steps = np.diff(lat[:, :, col], axis=1)
    assert np.allclose(steps, steps[0, 0], rtol=0, atol=1e-12) and steps[0, 0] > 0
    spec = LATENT_ORBITS[latent]
    if plan.closed:  # a whole circle: S steps of period / S
        assert steps[0, 0] == pytest.approx(spec.period / 7) and spec.period is not None
    else:            # end to end over the span
        assert lat[0, -1, col] - lat[0, 0, col] == pytest.approx(spec.train_width(SCENE) * (1 if range_ == "dataset"
                                                                                             else 2))


def test_orbit_plan_ranges_and_bad_steps():
    assert plan_orbit("rot_z", "dataset", 5, SCENE).offsets.tolist() == pytest.approx(
        [-math.pi / 2, -math.pi / 4, 0, math.pi / 4, math.pi / 2])
    assert plan_orbit("floor_hue", "dataset", 4, SCENE).closed  # hues are trained on their whole circle
    with pytest.raises(ValueError, match="--steps must be an integer >= 2"):
        plan_orbit("rot_z", "full", 1, SCENE)
    with pytest.raises(ValueError, match="unknown latent 'rot_w'"):
        plan_orbit("rot_w", "full", 4, SCENE)
    # the area under a closed curve is its mean over the circle
    assert area_under_curve(np.array([0.0, 1.0, 2.0, 1.0]), np.arange(4) * 0.25, True, 1.0) == pytest.approx(1.0)


def test_reference_frame_equals_dataset_view0_pixel_for_pixel(orbit_objects):
    ds, objects = orbit_objects
    val = set(ds.manifest["split"]["val"])
    assert len(objects.refs) == 3 and all(r.object_id in val for r in objects.refs)
    plan = plan_orbit("rot_y", "full", 4, SCENE)
    latents = orbit_latents(objects.view0, 1, plan.offsets)
    frames, kept = render_frames(objects, latents, "cpu", batch_size=5)   # batches cut across objects
    assert kept == [0, 1, 2] and frames.shape == (3, 4, 32, 32, 3) and frames.dtype == torch.uint8
    for k, ref in enumerate(objects.refs):
        i = ds.index_of(ref.object_id)
        assert np.array_equal(frames[k, plan.reference_index].numpy(), ds.get_views(i, [0])[0])
        assert np.allclose(objects.view0[k], ds.latents[i, 0], atol=1e-6)
        assert not np.array_equal(frames[k, 0].numpy(), frames[k, plan.reference_index].numpy())  # it moved


class LookupModel(torch.nn.Module):
    """Hand-built encoder that 'reads' the rendered object's rotation: each frame maps to the rotation matrix
    of the latents it was rendered from (looked up by its pixels). inv = R (9) or a constant; equi = R; the
    predictor applies the action exactly: p = R_ref · R_rel; pose_error = angle between R_ref · R_rel and R."""

    has_predictor = True
    action_key = "rel_rotation_quat"

    def __init__(self, frames: torch.Tensor, latents: np.ndarray, constant: bool = False):
        super().__init__()
        rot = euler_xyz_to_matrix(torch.as_tensor(latents[..., :3])).float().flatten(-2)     # (N, S, 9)
        self.table = {f.numpy().tobytes(): r for f, r in zip(frames.flatten(0, 1), rot.flatten(0, 1))}
        self.constant = constant

    def preprocess(self, images):
        return images

    def _rot(self, x):
        return torch.stack([self.table[img.permute(1, 2, 0).contiguous().numpy().tobytes()] for img in x])

    def representations(self, x):
        r = self._rot(x)
        inv = torch.ones_like(r) if self.constant else r
        return {"full": torch.cat([inv, r], 1), "inv": inv, "equi": r}

    def embeddings(self, x):
        return self.representations(x)

    def predict(self, equi, actions):
        from ssl_eq.geometry import quaternion_to_matrix

        return (equi.reshape(-1, 3, 3) @ quaternion_to_matrix(actions[self.action_key])).flatten(1)

    def pose_error(self, x_ref, x, actions):
        pred = self.predict(self._rot(x_ref), actions).reshape(-1, 3, 3)
        return torch.rad2deg(geodesic_angle(pred.double(), self._rot(x).reshape(-1, 3, 3).double()))


@pytest.mark.parametrize("latent", LATENT_NAMES_3DIEBENCH)
def test_constant_encoder_is_invariant_along_every_orbit(orbit_objects, latent):
    _, objects = orbit_objects
    plan = plan_orbit(latent, "full", 4, SCENE)
    latents = orbit_latents(objects.view0, LATENT_NAMES_3DIEBENCH.index(latent), plan.offsets)
    frames, _ = render_frames(objects, latents, "cpu")
    curves, pca, part, scale, _ = measure_orbit(LookupModel(frames, latents, constant=True), frames, latents, plan,
                                                {}, "cpu", 64)
    assert scale == 0.0
    assert torch.equal(curves["invariance"], torch.zeros(3, 4))
    assert torch.equal(curves["invariance_to_mean"], torch.zeros(3, 4))
    assert pca.shape == (3, 4, 2) and part == "equi"


def test_rotation_reading_encoder_error_rises_with_the_angle(orbit_objects):
    _, objects = orbit_objects
    plan = plan_orbit("rot_z", "full", 12, SCENE)
    latents = orbit_latents(objects.view0, 2, plan.offsets)
    frames, _ = render_frames(objects, latents, "cpu")
    curves, _, _, scale, _ = measure_orbit(LookupModel(frames, latents), frames, latents, plan, {}, "cpu", 64)
    inv = curves["invariance"].mean(0)
    ref = plan.reference_index
    assert scale > 0 and inv[ref] == 0
    assert (inv[:ref].diff() < 0).all() and (inv[ref:].diff() > 0).all()   # rises with |Δ| on both sides
    # the exact predictor: zero equivariance error, every frame retrieved first, zero pose error
    assert curves["equivariance"].abs().max() < 1e-5
    assert torch.equal(curves["hit1"], torch.ones(3, 12)) and torch.equal(curves["rank"], torch.ones(3, 12))
    assert curves["pose_error"].abs().max() < 0.1  # degrees; float32 acos near 1



def test_predictor_actions_follow_the_run_conventions(orbit_objects):
    """A run trained on scipy-signed quaternions is fed scipy-signed actions along the orbit (some w < 0)."""
    from omegaconf import OmegaConf

    from ssl_eq.datasets.relative import relative_transform

    class Recording(LookupModel):
        def predict(self, equi, actions):
            self.seen.append(actions[self.action_key])
            return super().predict(equi, actions)

    _, objects = orbit_objects
    plan = plan_orbit("rot_x", "full", 12, SCENE)
    latents = orbit_latents(objects.view0, 0, plan.offsets)
    frames, _ = render_frames(objects, latents, "cpu")
    model = Recording(frames, latents)
    model.cfg, model.seen = OmegaConf.create({"data": {"quaternion_sign": "scipy", "colour_targets": "raw"}}), []
    measure_orbit(model, frames, latents, plan, {}, "cpu", 64)
    lat = torch.as_tensor(latents)
    want = relative_transform(lat[:, plan.reference_index:plan.reference_index + 1].expand_as(lat), lat,
                              quaternion_sign="scipy")["rel_rotation_quat"].flatten(0, 1)
    seen = torch.cat(model.seen).reshape(-1, *want.shape)   # the equivariance and the pose-error passes
    assert (want[:, 0] < 0).any() and len(seen) == 2
    assert all(torch.allclose(s.double(), want.double(), atol=1e-6) for s in seen)

@pytest.fixture(scope="module")
def sie_run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "sie"
    assert main(["pretrain", "method=sie", *TINY, f"data.root={dataset}", f"run_dir={run}"]) == 0
    assert main(["probe", str(run), "--probes", "rotation", "--epochs", "1"]) == 0
    return run


def _not_blank(png: Path) -> bool:
    img = np.asarray(Image.open(png).convert("RGB"))
    return img.shape[0] > 200 and img.shape[1] > 200 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50


def test_orbit_command_writes_json_pngs_and_report(sie_run, tmp_path, capsys):
    other = tmp_path / "sie_copy"
    shutil.copytree(sie_run, other, ignore=shutil.ignore_patterns("orbit"))
    out = tmp_path / "out"
    assert main(["orbit", str(sie_run), str(other), "--out", str(out), "--objects", "3", "--steps", "6",
                 "--latent", "rot_z", "--device", "cpu", "--html"]) == 0
    assert "area under each curve" in capsys.readouterr().out
    for run in (sie_run, other):
        data = json.loads((run / "orbit" / "orbit.json").read_text())
        assert set(data["orbits"]) == {"rot_z/full@dataset"} and data["definitions"]["invariance"]
        orbit = data["orbits"]["rot_z/full@dataset"]
        band = orbit["train_band"]  # the training width (±rotation_range) inside the full circle
        assert orbit["source"] == "dataset" and band[0] == -band[1] and 0 < band[1] < 180
        assert len(orbit["parameter"]) == 6 and len(orbit["objects"]) == 3 and orbit["closed"]
        assert {"invariance", "equivariance", "hit1", "rank", "probe_equi", "probe_inv", "probe_full"} <= \
            set(orbit["curves"])
        for name, curve in orbit["curves"].items():
            assert len(curve["mean"]) == 6 and np.array(curve["per_object"]).shape == (3, 6)
            assert orbit["auc"][name] is not None
        assert orbit["curves"]["invariance"]["mean"][orbit["reference_index"]] == 0
        assert all(0 <= e <= 180 for e in orbit["curves"]["probe_equi"]["mean"])
        assert np.array(orbit["pca"]["coords"]).shape == (3, 6, 2)
        assert all(_not_blank(run / "orbit" / p) for p in orbit["plots"])
        assert Image.open(run / "orbit" / orbit["frames"]).size == (6 * 32, 3 * 32)  # objects x steps frames
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"rot_z_full__dataset_{f}.png" for f in ("curves", "pca", "polar")]
    assert "orbit-data" in (out / "orbit_explorer.html").read_text()
    assert all(_not_blank(out / p) for p in pngs)
    assert main(["report", str(sie_run), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Orbit analysis" in md and "| sie | sie | rot_z/full@dataset |" in md
    assert "sie__orbit_rot_z_full__dataset_polar.png" in md


def test_orbits_over_different_sources_coexist(sie_run, tmp_path):
    """The same latent over the dataset's val objects and over another source: two entries, two sets of files,
    two rows and titles in the report (an orbit over --source used to replace the in-distribution one)."""
    run = tmp_path / "sie"
    shutil.copytree(sie_run, run, ignore=shutil.ignore_patterns("orbit"))
    args = ["--latent", "rot_z", "--steps", "4", "--objects", "2", "--device", "cpu"]
    assert main(["orbit", str(run), "--out", str(tmp_path / "o1"), *args]) == 0
    assert main(["orbit", str(run), "--out", str(tmp_path / "o2"), "--source", "procedural", *args]) == 0
    orbits = json.loads((run / "orbit" / "orbit.json").read_text())["orbits"]
    assert set(orbits) == {"rot_z/full@dataset", "rot_z/full@procedural"}
    assert orbits["rot_z/full@procedural"]["source"] == "procedural"
    assert orbits["rot_z/full@procedural"]["objects"] != orbits["rot_z/full@dataset"]["objects"]
    for stem in ("rot_z_full__dataset", "rot_z_full__procedural"):
        assert all((run / "orbit" / f"{stem}_{f}.png").is_file() for f in ("curves", "polar", "pca", "frames"))
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| sie | sie | rot_z/full@dataset |" in md and "| sie | sie | rot_z/full@procedural |" in md
    assert "orbit rot_z/full@procedural (curves)" in md
    page = (tmp_path / "report" / "report.html").read_text()
    assert '"rot_z/full@procedural"' in page and "orbit-explorer" in page  # both in the explorer's data


def test_grid_latents_sweep_both_latents_row_major():
    plan = GridPlan(plan_orbit("rot_z", "full", 4, SCENE), plan_orbit("spot_hue", "full", 3, SCENE))
    view0 = np.arange(14, dtype=float).reshape(2, 7) / 10
    lat = grid_latents(view0, (2, 6), plan)
    assert lat.shape == (2, 12, 7) and plan.shape == (4, 3)
    assert plan.reference_index == 2 * 3 + 1  # (Δ rot_z, Δ spot_hue) = (0, 0)
    assert np.allclose(lat[:, plan.reference_index], view0)
    assert np.allclose(lat[0, 3:6, 2] - view0[0, 2], plan.first.offsets[1])  # row 1: the second Δ rot_z
    assert np.allclose(lat[0, 3:6, 6] - view0[0, 6], plan.second.offsets)   # along it, every Δ spot_hue
    assert np.allclose(np.delete(lat, [2, 6], axis=2), np.delete(view0, [2, 6], axis=1)[:, None])


def test_two_parameter_orbit_is_a_grid_with_heatmaps(sie_run, tmp_path):
    run = tmp_path / "sie"
    shutil.copytree(sie_run, run, ignore=shutil.ignore_patterns("orbit"))
    assert main(["orbit", str(run), "--out", str(tmp_path / "o"), "--latent", "rot_z,spot_hue", "--steps", "3",
                 "--objects", "2", "--device", "cpu", "--html"]) == 0
    orbit = json.loads((run / "orbit" / "orbit.json").read_text())["orbits"]["rot_z,spot_hue/full@dataset"]
    assert orbit["grid"]["shape"] == [3, 3] and orbit["grid"]["latents"] == ["rot_z", "spot_hue"]
    assert np.array(orbit["curves"]["invariance"]["per_object"]).shape == (2, 9)
    assert orbit["curves"]["invariance"]["mean"][orbit["reference_index"]] == 0
    assert orbit["plots"] == ["rot_z+spot_hue_full__dataset_heatmap.png"]
    assert _not_blank(run / "orbit" / orbit["plots"][0])
    assert '"grid": {"latents": ["rot_z", "spot_hue"]' in (tmp_path / "o" / "orbit_explorer.html").read_text()
    assert main(["orbit", str(run), "--out", str(tmp_path / "o"), "--latent", "rot_z,rot_z"]) == 2


def test_orbit_bad_input_reports_and_analyses_the_other_runs(sie_run, tmp_path, capsys):
    gone = tmp_path / "gone"
    shutil.copytree(sie_run, gone, ignore=shutil.ignore_patterns("orbit"))
    (gone / "config.yaml").write_text((gone / "config.yaml").read_text().replace(
        str(json.loads((sie_run / "probe" / "probe.json").read_text())["dataset"]["root"]), str(tmp_path / "nowhere")))
    good = tmp_path / "good"
    shutil.copytree(sie_run, good, ignore=shutil.ignore_patterns("orbit"))
    args = ["--out", str(tmp_path / "out"), "--objects", "2", "--steps", "3", "--device", "cpu"]
    assert main(["orbit", str(gone), str(good), "--latent", "rot_x", *args]) == 1
    err = capsys.readouterr().err
    assert "gone: its dataset is not available here" in err and "nowhere" in err and "--data DIR" in err
    assert (good / "orbit" / "orbit.json").is_file() and not (gone / "orbit").exists()
    moved = json.loads((sie_run / "probe" / "probe.json").read_text())["dataset"]["root"]    # the dataset, moved
    assert main(["orbit", str(gone), "--latent", "rot_x", "--data", moved, *args]) == 0
    assert (gone / "orbit" / "orbit.json").is_file()

    assert main(["orbit", str(good), "--latent", "trans_x", "--latent", "rot_y", "--range", "dataset", *args]) == 1
    err = capsys.readouterr().err
    assert "has no latent 'trans_x'" in err and "variant 3diebench" in err
    # rot_y was still analysed, and merged into the run's orbit.json beside rot_x
    assert set(json.loads((good / "orbit" / "orbit.json").read_text())["orbits"]) == {"rot_x/full@dataset", "rot_y/dataset@dataset"}

    assert main(["orbit", str(good), "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert "--steps must be an integer >= 2" in capsys.readouterr().err
    assert main(["orbit", str(good), "--latent", "rot_w", "--out", str(tmp_path / "o")]) == 2
    assert "unknown latent 'rot_w'" in capsys.readouterr().err


def test_orbit_source_not_renderable_is_a_clear_error(tmp_path):
    from ssl_eq.datasets.synthetic import make_synthetic_dataset
    from ssl_eq.datasets.native import read_manifest

    data = make_synthetic_dataset(tmp_path / "synth", num_objects=4, views=2, size=16)
    with pytest.raises(ValueError, match="source 'synthetic', which the renderer cannot re-render; pass --source"):
        select_orbit_objects(read_manifest(data), data, 2)


def test_fitted_rotation_head_is_saved_and_reloads_exactly(tmp_path):
    from ssl_eq.probes.heads import FittedHead, HeadConfig, fit_head

    gen = torch.Generator().manual_seed(0)
    x_tr, y_tr, x_va = torch.randn(64, 6, generator=gen) * 3 + 1, torch.randn(64, 4, generator=gen), \
        torch.randn(16, 6, generator=gen)
    kept = []
    out = fit_head(x_tr, y_tr, x_va, 4, "mse", HeadConfig(hidden=[8], epochs=2, batch_size=16), on_fitted=kept.append)
    path = kept[0].save(tmp_path / "rotation_head_equi.pt", checkpoint_sha256="abc", feature="rep/equi")
    head, meta = FittedHead.load(path)
    assert meta == {"checkpoint_sha256": "abc", "feature": "rep/equi"}
    assert torch.allclose(head.predict(x_va), out, atol=1e-6)  # the standardisation travels with the head
