"""`ssl-eq render`: determinism, sharding, resume after a kill, bad input."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssl_eq.cli import main as cli
from ssl_eq.datasets import native
from ssl_eq.renderers import job as job_mod
from ssl_eq.renderers.job import RenderConfig, RenderJob

SMALL = dict(objects=6, views=2, size=24, device="cpu", objects_per_shard=2, progress=False, val_fraction=0.5)


def run(out, **kw):
    return RenderJob(RenderConfig(out=str(out), **{**SMALL, **kw})).run()


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "shards").rglob("*.npy"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    run(out)
    return out


def test_complete_dataset_and_manifest(reference):
    m = native.read_manifest(reference)
    assert m["num_objects"] == 6 and m["views"] == 2 and m["image_size"] == 24
    assert len(m["shards"]) == 3 and len(m["class_names"]) == 6 and len(m["synsets"]) == 6
    assert sorted(m["split"]["train"] + m["split"]["val"]) == sorted(
        sum((json.loads((reference / "shards" / s["name"] / "shard.json").read_text())["object_ids"]
             for s in m["shards"]), []))
    imgs = np.load(reference / "shards" / "shard-00000" / "images.npy")
    lat = np.load(reference / "shards" / "shard-00000" / "latents.npy")
    assert imgs.shape == (2, 2, 24, 24, 3) and imgs.dtype == np.uint8 and lat.shape == (2, 2, 7)
    assert imgs.std() > 5                                     # not blank


def test_same_seed_is_byte_identical_and_seed_matters(reference, tmp_path):
    run(tmp_path / "again")
    assert shard_bytes(tmp_path / "again") == shard_bytes(reference)
    run(tmp_path / "other", seed=1)
    assert shard_bytes(tmp_path / "other") != shard_bytes(reference)


def test_shards_rendered_separately_equal_one_run(reference, tmp_path):
    out = tmp_path / "split"
    first = run(out, num_shards=2, shard_index=0)
    assert first["manifest"] is False and not (out / "manifest.json").exists()
    assert run(out, num_shards=2, shard_index=1)["manifest"] is True
    assert shard_bytes(out) == shard_bytes(reference)
    assert native.read_manifest(out)["split"] == native.read_manifest(reference)["split"]


def test_slurm_array_index_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    result = run(tmp_path / "slurm", num_shards=2)
    assert result["rendered_shards"] == [1]


def test_killed_mid_shard_then_resumed_is_identical(reference, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    from ssl_eq.renderers.renderer import SceneRenderer
    real, calls = SceneRenderer.render, {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:                                    # first batch of shard 1
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(SceneRenderer, "render", dying)
    with pytest.raises(KeyboardInterrupt):
        run(out, batch_size=2)
    assert native.list_complete_shards(out) == [0, 1] or native.list_complete_shards(out) == [0]
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]   # no partial shard left
    done_before = {p: (out / "shards" / p / "images.npy").stat().st_mtime_ns
                   for p in ("shard-00000",)}
    monkeypatch.setattr(SceneRenderer, "render", real)
    result = run(out, batch_size=2)
    assert 0 not in result["rendered_shards"]                  # complete shards are never rewritten
    assert (out / "shards" / "shard-00000" / "images.npy").stat().st_mtime_ns == done_before["shard-00000"]
    assert shard_bytes(out) == shard_bytes(reference)


def test_full_disk_mid_shard_keeps_earlier_shards(reference, tmp_path, monkeypatch):
    out = tmp_path / "full"
    real = native._save_npy

    def save(path, array):
        if "shard-00001" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, array)

    monkeypatch.setattr(native, "_save_npy", save)
    with pytest.raises(OSError, match="shard-00001.*No space left"):
        run(out)
    assert native.list_complete_shards(out) == [0]
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(native, "_save_npy", real)
    run(out)
    assert shard_bytes(out) == shard_bytes(reference)


def test_different_config_refused_unless_overwrite(reference, tmp_path, capsys):
    out = tmp_path / "cfg"
    shutil.copytree(reference, out)
    before = shard_bytes(out)
    with pytest.raises(FileExistsError, match="differs in: views"):
        run(out, views=3)
    assert shard_bytes(out) == before                          # nothing lost
    run(out, views=3, overwrite=True)
    assert native.read_manifest(out)["views"] == 3
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        run(tmp_path / "junk")
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "--size"),
    (["--views", "0"], "--views"),
    (["--variant", "3diebench-x"], "--variant"),
    (["--encoding", "png"], "--encoding"),
    (["--num-shards", "2", "--shard-index", "2"], "--shard-index"),
    (["--source", "mesh-folder", "--source-root", "/nonexistent/meshes"], "/nonexistent/meshes"),
    (["--source", "nope"], "--source"),
])
def test_bad_arguments_give_clear_errors(tmp_path, capsys, args, message):
    code = cli(["render", "--out", str(tmp_path / "x"), "--objects", "2", "--views", "1", "--no-progress",
                "--no-preview", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_corrupt_mesh_is_skipped_and_listed(tmp_path, blender_fixtures, capsys):
    root = tmp_path / "meshes"
    for cls in ("mug", "cup"):
        (root / cls).mkdir(parents=True)
        shutil.copy(blender_fixtures / "mug.obj", root / cls / "good.obj")
    (root / "cup" / "broken.obj").write_text("v 0 0 0\nf 1 2 3\nthis is not a mesh\n")
    (root / "bowl").mkdir()
    (root / "bowl" / "broken.obj").write_text("f 1 2 3\n")
    result = RenderJob(RenderConfig(out=str(tmp_path / "ds"), source="mesh-folder", source_root=str(root),
                                    objects=None, views=1, size=16, device="cpu", progress=False)).run()
    m = native.read_manifest(result["out"])
    assert m["num_objects"] == 2
    assert {s["object_id"] for s in m["skipped"]} == {"cup-broken", "bowl-broken"}
    assert all("broken.obj" in s["path"] for s in m["skipped"])
    assert m["skipped"][0]["reason"]
    assert m["empty_classes"] == ["bowl"]                     # every mesh of the class failed
    assert "bowl" in capsys.readouterr().err


def test_jpeg_encoding_and_translation_variant(tmp_path):
    out = tmp_path / "t"
    run(out, encoding="jpeg", variant="3diebench-t", objects=2, objects_per_shard=2)
    shard = out / "shards" / "shard-00000"
    assert (shard / "jpeg_data.npy").exists() and not (shard / "images.npy").exists()
    assert np.load(shard / "latents.npy").shape == (2, 2, 10)
    assert np.load(shard / "jpeg_offsets.npy").shape == (5,)


def test_dataset_info_and_preview_commands(reference, tmp_path, capsys):
    assert cli(["dataset", "preview", str(reference), "--out", str(tmp_path / "sheet.png"), "--objects", "3"]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "sheet.png").size[0] > 100
    assert cli(["dataset", "info", str(reference)]) == 0
    assert "6" in capsys.readouterr().out
