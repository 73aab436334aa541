"""Close-up camera, restricted rotation groups and automatic anti-aliasing of `ssl-eq render`."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_eq.cli import main as cli
from ssl_eq.datasets import native
from ssl_eq.datasets.threedie import export_3diebench
from ssl_eq.renderers.job import RenderConfig, RenderJob
from ssl_eq.renderers.scene import SceneSpec, sample_latents

SMALL = dict(views=2, size=24, device="cpu", objects_per_shard=4, progress=False, val_fraction=0.5)


def test_closeup_object_fills_the_frame_for_every_class():
    from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer
    from ssl_eq.renderers.sources import make_source

    src = make_source("procedural", num_objects=12, seed=0)
    refs = src.objects()
    assert len({r.class_name for r in refs}) == 12                  # one object per procedural class
    meshes = [MeshTensors.from_mesh(src.load(r), "cpu") for r in refs]
    views = 3
    coverage = {}
    for camera in ("3diebench", "closeup"):
        cfg = RenderConfig(out="unused", camera=camera, size=32, supersample=1)
        cfg.validate()
        lat = np.concatenate([sample_latents(0, r.object_id, views, spec=cfg.scene()) for r in refs])
        out = SceneRenderer(cfg.settings(), "cpu").render(meshes, torch.arange(len(refs)).repeat_interleave(views),
                                                         torch.as_tensor(lat, dtype=torch.float32))
        coverage[camera] = out["mask"].float().mean((1, 2)).view(len(refs), views).mean(1)
    assert coverage["closeup"].min() > 0.05                          # every class, averaged over its views
    assert (coverage["closeup"] > 2 * coverage["3diebench"]).all()
    assert coverage["closeup"].mean() > 2.5 * coverage["3diebench"].mean()


def test_rotation_axes_and_range():
    default = sample_latents(5, "obj", 200)
    z = sample_latents(5, "obj", 200, spec=SceneSpec(rotation_axes="z", rotation_range=math.pi))
    assert np.array_equal(z[:, :2], np.zeros((200, 2))) and not np.signbit(z[:, :2]).any()   # exactly +0
    assert np.abs(z[:, 2]).max() > math.pi / 2 and np.abs(z[:, 2]).max() <= math.pi
    assert np.array_equal(z[:, 3:], default[:, 3:])                 # other latents: same stream as the default
    xz = sample_latents(5, "obj", 200, spec=SceneSpec(rotation_axes="xz"))
    assert np.array_equal(xz[:, [0, 2]], default[:, [0, 2]]) and (xz[:, 1] == 0).all()
    with pytest.raises(ValueError, match="rotation_axes"):
        SceneSpec(rotation_axes="w")
    with pytest.raises(ValueError, match="degrees"):
        RenderConfig(out="x", rotation_range=400).validate()


def test_restricted_group_recorded_in_manifest_and_exported(tmp_path, capsys):
    out = tmp_path / "ds"
    RenderJob(RenderConfig(out=str(out), objects=4, camera="closeup", rotation_axes="z", rotation_range=180,
                           **SMALL)).run()
    m = native.read_manifest(out)
    scene = m["render_settings"]["scene"]
    assert m["config"]["camera"] == "closeup" and scene["rotation_axes"] == "z"
    assert scene["rotation_range"] == pytest.approx(math.pi) and scene["fov_degrees"] < 30
    assert m["render_settings"]["supersample"] == 2                  # automatic anti-aliasing at 24 px
    lat = native.NativeDataset(out).latents
    assert (lat[..., :2] == 0).all() and np.abs(lat[..., 2]).max() > 0
    assert cli(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "closeup" in text and "axes z" in text and "180 deg" in text
    orig = export_3diebench(out, tmp_path / "orig", workers=1)
    files = sorted(orig.rglob("latent_*.npy"))
    assert len(files) == 8
    for f in files:
        v = np.load(f)
        assert v.dtype == np.float64 and v.shape == (7,) and v[0] == 0 and v[1] == 0


def test_explicit_camera_overrides_preset():
    cfg = RenderConfig(out="x", camera="closeup", camera_distance=3.0, supersample=1)
    cfg.validate()
    assert cfg.scene().camera_radius == 3.0 and cfg.scene().fov_degrees == pytest.approx(23.0739)
    assert RenderConfig(out="x").scene() == SceneSpec()               # default: the 3DIEBench scene
    big = RenderConfig(out="x", size=128)
    big.validate()
    assert big.supersample == 1
    with pytest.raises(ValueError, match="--camera"):
        RenderConfig(out="x", camera="fisheye").validate()
