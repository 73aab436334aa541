"""Issue #11, "nothing lost, every error actionable": one test per bad input / interruption, in one place.

Data loss: (1) probe runs merge into probe.json, (2) export-3diebench refuses a foreign folder and resumes,
(3) atomic writes honour the umask, (4) `--objects 0` has one rule, (5) a typo after `data.root=` is named,
(6) wall_s survives kills. Errors: system errors, bad config values, malformed files, truncated shards,
broken last.ckpt, following the NaN advice (fork), report on a non-run / failed run.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_eq.cli import describe_error, main
from ssl_eq.datasets import native
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import compose_config, pretrain
from ssl_eq.methods import resume as resume_mod
from ssl_eq.methods.sie import SIE
from ssl_eq.utils.io import write_json_atomic, write_npy_atomic

TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "checkpoint.last_every_n_steps=1", "checkpoint.every_n_steps=2",
        "trainer.limit_val_batches=0", "method=sie", "method.split.inv=8", "method.split.equi=8",
        "method.projector_inv=[16,16]", "method.projector_equi=[16,16]"]


def overrides(data: Path, run: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.root={data}", f"run_dir={run}", *extra]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_objects=16, views=3, size=32)


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory) -> Path:
    """A completed 4-step run with step=2.ckpt, step=4.ckpt and last.ckpt (copy it before changing it)."""
    run = tmp_path_factory.mktemp("runs") / "done"
    assert pretrain(compose_config(overrides(data_root, run, "trainer.max_steps=4")))["status"] == "completed"
    return run


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("probe"))
    return dst


# ---------------------------------------------------------------------------------------------- data loss
def test_1_probe_rerun_merges_into_probe_json(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    assert main(["probe", str(run), "--probes", "linear,rotation", "--epochs", "1"]) == 0
    first = json.loads((run / "probe" / "probe.json").read_text())
    assert main(["probe", str(run), "--probes", "linear", "--epochs", "2"]) == 0
    merged = json.loads((run / "probe" / "probe.json").read_text())
    assert list(merged["probes"]) == ["linear", "rotation"]                    # rotation kept, order stable
    assert merged["probes"]["rotation"] == first["probes"]["rotation"]        # untouched, with its own config
    assert merged["probes"]["rotation"]["config"]["epochs"] == 1
    assert merged["probes"]["linear"]["config"]["epochs"] == 2                # replaced by the re-run
    assert all(r["created"] and r["checkpoint_digest"] == merged["checkpoint_digest"]
               for r in merged["probes"].values())
    rotation_metrics = {k: v for k, v in first["metrics"].items() if k.startswith("rotation/")}
    assert rotation_metrics and rotation_metrics.items() <= merged["metrics"].items()
    assert any(k.startswith("linear/") for k in merged["metrics"]) and set(merged["definitions"]) == set(merged["metrics"])

    # results of another checkpoint are not mixed in: dropped with a warning
    stale = {**merged, "checkpoint_digest": "0" * 64}
    (run / "probe" / "probe.json").write_text(json.dumps(stale))
    assert main(["probe", str(run), "--probes", "linear", "--epochs", "1"]) == 0
    after = json.loads((run / "probe" / "probe.json").read_text())
    assert list(after["probes"]) == ["linear"] and "were dropped" in after["warnings"][-1]


def _export_files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def test_2_export_refuses_a_foreign_folder_and_resumes(tmp_path, capsys):
    a = make_synthetic_dataset(tmp_path / "a", num_objects=4, views=2, size=16)
    b = make_synthetic_dataset(tmp_path / "b", num_objects=3, views=2, size=16, seed=1)
    out = tmp_path / "out"
    assert main(["dataset", "export-3diebench", str(a), str(out), "--workers", "1"]) == 0
    files = _export_files(out)
    assert main(["dataset", "export-3diebench", str(a), str(out), "--workers", "1"]) == 0
    assert _export_files(out) == files                                        # the same export again: no-op

    assert main(["dataset", "export-3diebench", str(b), str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and "refusing to mix" in err
    assert _export_files(out) == files                                        # nothing touched

    # a killed export (split files not yet written, one object incomplete) is completed by the same command
    for p in out.glob("*_images.npy"):
        p.unlink()
    obj = next(out.glob("*/*/latent_1.npy"))
    obj.unlink()
    assert main(["dataset", "export-3diebench", str(a), str(out), "--workers", "1"]) == 0
    assert _export_files(out).keys() == files.keys()

    assert main(["dataset", "export-3diebench", str(b), str(out), "--workers", "1", "--overwrite"]) == 0
    ids_b = set(native.NativeDataset(b).object_ids)
    assert {p.name for p in out.glob("*/*") if p.is_dir()} == ids_b          # only b's objects remain

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert main(["dataset", "export-3diebench", str(a), str(junk)]) == 2
    assert "not empty" in capsys.readouterr().err and (junk / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_3_atomic_writes_and_shards_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        write_npy_atomic(tmp_path / "a.npy", np.zeros(3))
        folder = native.write_shard(tmp_path / "ds", 0, images=np.zeros((1, 1, 8, 8, 3), np.uint8),
                                    latents=np.zeros((1, 1, 7), np.float32), labels=np.zeros(1, np.int64),
                                    object_ids=["o"])
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "a.npy") == 0o666 & ~umask
    assert mode(folder) == 0o777 & ~umask
    assert {mode(p) for p in folder.iterdir()} == {0o666 & ~umask}


@pytest.mark.parametrize("source", ["procedural", "mesh-folder"])
def test_4_objects_zero_is_refused_by_every_source(tmp_path, capsys, source):
    extra = ["--source-root", str(tmp_path)] if source == "mesh-folder" else []
    assert main(["render", "--out", str(tmp_path / "ds"), "--source", source, *extra, "--objects", "0",
                 "--views", "1", "--size", "16", "--no-progress", "--no-preview"]) == 2
    assert "--objects must be an integer >= 1 for every source" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_5_typo_after_data_root_is_named(data_root, capsys):
    assert main(["pretrain", "experiment=demo_sie", f"data.root={data_root}", "trainer.max_stepz=3"]) == 2
    assert "unknown config key 'trainer.max_stepz'" in capsys.readouterr().err


def test_6_wall_time_survives_kills(data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    step_loss, ticks = SIE.step_loss, iter(range(0, 10**6, 100))

    def killed_at_2(self, views, batch):
        if self.global_step == 2:
            raise RuntimeError("simulated kill")
        return step_loss(self, views, batch)

    monkeypatch.setattr(resume_mod, "_now", lambda: float(next(ticks)))  # 100 s per clock read
    monkeypatch.setattr(SIE, "step_loss", killed_at_2)
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(compose_config(overrides(data_root, run, "trainer.max_steps=4")))
    (run / "metrics.json").unlink()  # SIGKILL: the process never reached its `finally`
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["WallClock"]["wall_s"]
    assert saved >= 100
    monkeypatch.undo()
    summary = pretrain(compose_config(overrides(data_root, run, "trainer.max_steps=4")))
    assert summary["global_step"] == 4 and summary["wall_s"] > saved  # the killed process's time is counted


# ---------------------------------------------------------------------------------------------- errors
def test_system_errors_name_the_file_and_what_to_do(tmp_path, monkeypatch, capsys):
    full = describe_error(OSError(errno.ENOSPC, "No space left on device", "/data/ds/manifest.json"))
    assert "/data/ds/manifest.json" in full and "disk is full" in full and "re-run the same command" in full
    assert "read-only" in describe_error(OSError(errno.EROFS, "Read-only file system", "/ro/x"))
    assert "unexpected AttributeError" in describe_error(AttributeError("x")) and "--debug" in describe_error(
        AttributeError("x"))

    real = native._save_npy

    def disk_full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(native, "_save_npy", disk_full)
    args = ["render", "--out", str(tmp_path / "ds"), "--objects", "1", "--views", "1", "--size", "16", "--device",
            "cpu", "--no-progress", "--no-preview"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "shard-00000" in err and "disk is full" in err and "Traceback" not in err
    with pytest.raises(OSError):
        main([*args, "--debug"])
    monkeypatch.setattr(native, "_save_npy", real)

    (tmp_path / "a_file").write_text("")
    assert main(["render", "--out", str(tmp_path / "a_file" / "ds"), "--objects", "1", "--views", "1",
                 "--no-progress", "--no-preview"]) == 2
    assert "a_file" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=four", "data.batch_size='four': expected an integer"),
    ("method.optim.lr=fast", "method.optim.lr='fast': expected a number"),
    ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1"),
    ("method.optim.lr=-1", "method.optim.lr=-1: expected a number > 0"),
    ("trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar='maybe': expected true / false"),
    ("backbone.widths=[8,wide]", "backbone.widths=[8, 'wide']: expected a list of integers"),
])
def test_bad_config_values_are_refused_before_the_run_folder(data_root, tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert main(["pretrain", *overrides(data_root, run, override)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run.exists()


def test_failed_start_leaves_no_config_that_refuses_the_corrected_command(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *overrides(data_root, run, "method.optim.name=adamm", "trainer.max_steps=1")]) == 2
    assert "unknown optimiser 'adamm'" in capsys.readouterr().err and (run / "config.yaml").is_file()
    assert main(["pretrain", *overrides(data_root, run, "trainer.max_steps=1")]) == 0  # nothing trained: replaced
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_malformed_files_are_named(data_root, finished_run, tmp_path, capsys):
    ds = tmp_path / "ds"
    shutil.copytree(data_root, ds)
    (ds / "shards" / "shard-00000" / "shard.json").write_text("[1, 2]")
    assert main(["dataset", "info", str(ds)]) == 2
    assert "shard-00000/shard.json" in capsys.readouterr().err

    run = copy_run(finished_run, tmp_path / "run")
    (run / "metrics.json").write_text("[]")
    assert main(["pretrain", *overrides(data_root, run, "trainer.max_steps=4")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.json'}: run summary must be a JSON object" in err

    (tmp_path / "render").mkdir()
    (tmp_path / "render" / "render_config.json").write_text('"x"')
    assert main(["render", "--out", str(tmp_path / "render"), "--objects", "1", "--views", "1", "--no-progress",
                 "--no-preview"]) == 2
    assert "render_config.json: render config must be a JSON object" in capsys.readouterr().err


def test_truncated_shards_are_found_named_and_repaired_by_a_re_render(tmp_path, capsys):
    out = tmp_path / "ds"
    cmd = ["render", "--out", str(out), "--objects", "2", "--views", "2", "--size", "16", "--objects-per-shard", "1",
           "--device", "cpu", "--no-progress", "--no-preview"]
    assert main(cmd) == 0
    good = {p: p.read_bytes() for p in sorted((out / "shards").rglob("*.npy"))}
    images, latents = out / "shards" / "shard-00000" / "images.npy", out / "shards" / "shard-00001" / "latents.npy"
    for f in (images, latents):
        f.write_bytes(f.read_bytes()[:-10])
    capsys.readouterr()
    assert main(["dataset", "info", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(images) in err and str(latents) in err and "truncated" in err and "Re-run the render" in err
    with pytest.raises(ValueError, match=r"shard-00000/images.npy: .* bytes") as info:
        native.NativeDataset(out)
    assert "mmap length" not in str(info.value)
    assert main(cmd) == 0                                                     # the re-render repairs both
    assert "re-rendering damaged shard-00000" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted((out / "shards").rglob("*.npy"))} == good
    assert main(["dataset", "info", str(out)]) == 0


def test_loader_names_a_file_cut_after_opening(data_root, tmp_path):
    ds_dir = tmp_path / "ds"
    shutil.copytree(data_root, ds_dir)
    ds = native.NativeDataset(ds_dir)
    images = ds_dir / "shards" / "shard-00000" / "images.npy"
    images.write_bytes(images.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{images}: cannot read the array .*Re-run the render"):
        ds.read_views([0], [0])


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_broken_last_ckpt_is_named_with_the_way_out(data_root, finished_run, tmp_path, capsys, damage):
    run = copy_run(finished_run, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    before = (run / "metrics.json").read_text()
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    assert main(["pretrain", *overrides(data_root, run, "trainer.max_steps=6")]) == 2
    err = capsys.readouterr().err
    assert f"{last}: not a readable checkpoint" in err and "step=2.ckpt, step=4.ckpt" in err
    assert f"cp '{run / 'checkpoints' / 'step=4.ckpt'}' '{last}'" in err and "resume_from=" in err
    assert (run / "metrics.json").read_text() == before                      # still "completed", not failed at 0
    assert main(["probe", str(run), "--epochs", "1"]) == 2
    assert f"{last}: not a readable checkpoint" in capsys.readouterr().err
    shutil.copyfile(run / "checkpoints" / "step=4.ckpt", last)               # the advice works
    assert pretrain(compose_config(overrides(data_root, run, "trainer.max_steps=6")))["global_step"] == 6


def test_after_the_nan_guard_a_fork_with_a_lower_lr_continues(data_root, tmp_path, monkeypatch, capsys):
    run, fork = tmp_path / "run", tmp_path / "fork"
    step_loss = SIE.step_loss

    def nan_at_3(self, views, batch):
        out = step_loss(self, views, batch)
        if self.global_step == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SIE, "step_loss", nan_at_3)
    assert main(["pretrain", *overrides(data_root, run, "trainer.max_steps=6")]) == 3
    err = capsys.readouterr().err
    assert f"resume_from={run}/checkpoints/last.ckpt run_dir={run}_lr0.0001 method.optim.lr=0.0001" in err
    monkeypatch.undo()
    original = (run / "checkpoints" / "last.ckpt").read_bytes()

    cfg = compose_config(overrides(data_root, fork, "trainer.max_steps=6", "method.optim.lr=1e-4",
                                   "method.optim.weight_decay=2e-6", f"resume_from={run}/checkpoints/last.ckpt"))
    summary = pretrain(cfg)
    assert summary["status"] == "completed" and summary["global_step"] == 6
    state = torch.load(fork / "checkpoints" / "last.ckpt", weights_only=False)
    groups = state["optimizer_states"][0]["param_groups"]
    assert all(g["lr"] == pytest.approx(1e-4) and g["initial_lr"] == pytest.approx(1e-4) for g in groups)
    assert all(g["weight_decay"] == pytest.approx(2e-6) for g in groups)
    assert state["lr_schedulers"][0]["base_lrs"] == [pytest.approx(1e-4)] * len(groups)
    assert state["optimizer_states"][0]["state"]  # Adam moments carried over from the parent run
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == original      # the parent is untouched
    assert pretrain(cfg)["global_step"] == 6                                  # re-running the fork resumes it

    with pytest.raises(ValueError, match=r"other settings of \['backbone.widths'\]"):
        pretrain(compose_config(overrides(data_root, tmp_path / "bad", "backbone.widths=[8,8]",
                                          f"resume_from={run}/checkpoints/last.ckpt")))
    with pytest.raises(FileNotFoundError, match="resume_from=.*no such checkpoint"):
        pretrain(compose_config(overrides(data_root, tmp_path / "bad", f"resume_from={tmp_path}/nope.ckpt")))


def test_report_refuses_a_non_run_and_shows_a_failed_run_as_failed(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert main(["report", str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 2
    assert "photos is not a run folder" in capsys.readouterr().err

    run = tmp_path / "crashed"
    run.mkdir()
    (run / "config.yaml").write_text("method:\n  name: sie\n")
    (run / "metrics.json").write_text(json.dumps({"status": "failed: NonFiniteLossError: nan", "global_step": 3,
                                                  "metrics": {"train/loss": 123.456}}))
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "crashed (failed)" in md and "123.5" not in md and "training failed: NonFiniteLossError" in md
