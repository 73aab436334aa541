"""Issue #24 "Data loss / wrong result" and "Broken state after an error": each case is a test that failed on
the code before the fix (nothing deleted, overwritten, mixed or silently wrong)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_eq.cli import main
from ssl_eq.datasets import NativeDataset, make_synthetic_dataset


REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# 1. export --overwrite never deletes the source dataset nor anything the export did not write
@pytest.mark.parametrize("layout", ["same", "parent", "inside"])
def test_1_export_overwrite_never_deletes_the_source(tmp_path, capsys, layout):
    parent = tmp_path / "parent"
    ds = make_synthetic_dataset(parent / "proc", num_objects=3, views=2, size=16)
    (parent / "notes.txt").write_text("mine")
    out = {"same": ds, "parent": parent, "inside": ds / "export"}[layout]
    before = _tree(parent)
    assert main(["dataset", "export-3diebench", str(ds), str(out), "--workers", "1", "--overwrite"]) == 2
    assert "source dataset" in capsys.readouterr().err
    assert _tree(parent) == before
    assert len(NativeDataset(ds)) == 3


def test_1_overwrite_replaces_only_the_earlier_exports_files(tmp_path, capsys):
    a = make_synthetic_dataset(tmp_path / "a", num_objects=3, views=2, size=16)
    b = make_synthetic_dataset(tmp_path / "b", num_objects=2, views=2, size=16, seed=1)
    out = tmp_path / "out"
    assert main(["dataset", "export-3diebench", str(a), str(out), "--workers", "1"]) == 0
    (out / "README.txt").write_text("mine")                           # a file the export did not write
    obj_dir = next(p for p in out.glob("*/*") if p.is_dir())
    (obj_dir / "notes.md").write_text("also mine")
    assert main(["dataset", "export-3diebench", str(b), str(out), "--workers", "1", "--overwrite"]) == 0
    assert (out / "README.txt").read_text() == "mine" and (obj_dir / "notes.md").read_text() == "also mine"
    assert not list(obj_dir.glob("image_*.jpg"))                      # a's images are gone, b's are there
    assert {p.parent.name for p in out.glob("*/*/latent_1.npy")} == set(NativeDataset(b).object_ids)

    foreign = tmp_path / "foreign"                                    # no export record: nothing replaced
    (foreign / "n01" / "obj").mkdir(parents=True)
    (foreign / "n01" / "obj" / "image_0.jpg").write_bytes(b"original data")
    assert main(["dataset", "export-3diebench", str(a), str(foreign), "--workers", "1", "--overwrite"]) == 2
    assert "holds no" in capsys.readouterr().err
    assert (foreign / "n01" / "obj" / "image_0.jpg").read_bytes() == b"original data"


# 7. export's --jpeg-quality has render's bounds
@pytest.mark.parametrize("quality", ["500", "-5", "0"])
def test_7_export_jpeg_quality_bounds(tmp_path, capsys, quality):
    ds = make_synthetic_dataset(tmp_path / "ds", num_objects=2, views=2, size=16)
    assert main(["dataset", "export-3diebench", str(ds), str(tmp_path / "out"), "--jpeg-quality", quality]) == 2
    assert "--jpeg-quality must be in [1, 100]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---- pretraining helpers (a tiny SIE run on a tiny synthetic dataset)
TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=16", "data.batch_size=4",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "checkpoint.last_every_n_steps=1", "checkpoint.every_n_steps=2",
        "method=sie", "method.split.inv=8", "method.split.equi=8", "method.projector_inv=[16,16]",
        "method.projector_equi=[16,16]"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_objects=10, views=3, size=16)


def tiny_cfg(data: Path, run: Path, *overrides: str):
    from ssl_eq.methods import compose_config
    return compose_config([*TINY, f"data.root={data}", f"run_dir={run}", *overrides])


def _checkpoint_files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "checkpoints").glob("*.ckpt"))}


# 2. re-running a finished pretrain command leaves its checkpoints as they are
def test_2_rerunning_a_finished_run_does_not_rewrite_it(tiny_data, tmp_path):
    from ssl_eq.methods import pretrain
    run = tmp_path / "run"
    pretrain(tiny_cfg(tiny_data, run, "trainer.max_steps=3"))
    before = _checkpoint_files(run)
    summary = pretrain(tiny_cfg(tiny_data, run, "trainer.max_steps=3"))
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert _checkpoint_files(run) == before
    assert not (run / ".ssl_eq.lock").exists()                       # the lock is released


# 5. one writer per run folder: a live holder is named, a dead one's lock is taken over
def _hold_lock(folder: Path, name: str = "") -> subprocess.Popen:
    """A process that takes `folder`'s lock and keeps it until its stdin closes (then exits without releasing)."""
    code = ("import sys; from pathlib import Path; from ssl_eq.utils.lock import acquire; "
            f"acquire(Path({str(folder)!r}), {name!r}); print('held', flush=True); sys.stdin.read(); import os; "
            "os._exit(0)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_5_second_writer_refused_and_stale_lock_taken_over(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        args = ["pretrain", *TINY, f"data.root={tiny_data}", f"run_dir={run}", "trainer.max_steps=2"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {holder.pid} on host {socket.gethostname()}" in err
        assert sorted(p.name for p in run.iterdir()) == [".ssl_eq.lock"]        # nothing written
    finally:
        holder.stdin.close()
        holder.wait()
    assert main(args) == 0                                                      # the dead holder's lock is taken
    assert "taking over the stale lock" in capsys.readouterr().out
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / ".ssl_eq.lock").exists()


def test_5_export_and_render_folders_are_locked(tiny_data, tmp_path, capsys):
    out, render = tmp_path / "export", tmp_path / "render"
    holders = [_hold_lock(out), _hold_lock(render, "render-shard-0-of-2")]
    try:
        assert main(["dataset", "export-3diebench", str(tiny_data), str(out), "--workers", "1"]) == 2
        assert f"export folder {out} is being written by pid {holders[0].pid}" in capsys.readouterr().err
        shard = ["render", "--out", str(render), "--objects", "2", "--views", "1", "--size", "16", "--no-progress",
                 "--device", "cpu", "--objects-per-shard", "1", "--num-shards", "2", "--shard-index"]
        assert main([*shard, "0"]) == 2
        assert f"render output folder {render} is being written by pid {holders[1].pid}" in capsys.readouterr().err
        assert main([*shard, "1"]) == 0                                      # another shard of the same folder
    finally:
        for h in holders:
            h.stdin.close()
            h.wait()
    assert main(["dataset", "export-3diebench", str(tiny_data), str(out), "--workers", "1"]) == 0
    assert main([*shard, "0"]) == 0 and (render / "manifest.json").is_file()


# 2, 3. probe results are keyed by the weights and the dataset's content, not by file bytes or paths
def test_2_3_probe_results_survive_a_rewrite_and_a_moved_dataset(tiny_data, tmp_path, capsys):
    import json
    import shutil

    import torch

    from ssl_eq.methods import pretrain
    data, run = Path(shutil.copytree(tiny_data, tmp_path / "data")), tmp_path / "run"
    pretrain(tiny_cfg(data, run, "trainer.max_steps=2", "trainer.limit_val_batches=0"))
    probe = ["probe", str(run), "--epochs", "1"]
    assert main([*probe, "--probes", "linear"]) == 0
    linear = json.loads((run / "probe" / "probe.json").read_text())["probes"]["linear"]

    ckpt = run / "checkpoints" / "last.ckpt"                           # same weights, new bytes
    state = torch.load(ckpt, weights_only=False)
    state["rewritten"] = True
    torch.save(state, ckpt)
    assert main([*probe, "--probes", "rotation"]) == 0
    report = json.loads((run / "probe" / "probe.json").read_text())
    assert report["probes"]["linear"] == linear and report["probes"]["rotation"]["status"] == "ok"

    moved = Path(shutil.move(str(data), tmp_path / "moved"))            # the same dataset, moved
    assert main([*probe, "--probes", "colour", "--data", str(moved)]) == 0
    report = json.loads((run / "probe" / "probe.json").read_text())
    assert set(report["probes"]) == {"linear", "rotation", "colour"} and report["probes"]["linear"] == linear

    other = make_synthetic_dataset(tmp_path / "other", num_objects=10, views=3, size=16, seed=7)
    assert main([*probe, "--probes", "linear", "--data", str(other)]) == 0
    assert json.loads((run / "probe" / "probe.json").read_text()) == report   # the run's own results stand
    elsewhere, = (run / "probe").glob("data-*/probe.json")
    assert list(json.loads(elsewhere.read_text())["probes"]) == ["linear"] and str(elsewhere) in capsys.readouterr().out


# 4. probe config files are checked before anything runs; a failed probe never replaces a good result
@pytest.fixture(scope="module")
def probed_run(tiny_data, tmp_path_factory) -> Path:
    from ssl_eq.methods import pretrain
    run = tmp_path_factory.mktemp("probed") / "run"
    pretrain(tiny_cfg(tiny_data, run, "trainer.max_steps=2", "trainer.limit_val_batches=0"))
    assert main(["probe", str(run), "--epochs", "1", "--probes", "linear"]) == 0
    return run


@pytest.mark.parametrize("edit, key", [("epochs: 300", "probes.linear.epochs='three'"),
                                       ("lr: 1.0e-3", "probes.linear.lr=nan"),
                                       ("batch_size: 256", "extraction.batch_size=0"),
                                       ("linear:", "probes.lineer: unknown probe")])
def test_4_bad_probe_config_refused_before_anything_runs(probed_run, tmp_path, capsys, edit, key):
    from ssl_eq.config import config_dir
    text = (config_dir() / "probe" / "default.yaml").read_text()
    new = {"epochs: 300": "epochs: three", "lr: 1.0e-3": "lr: .nan", "batch_size: 256": "batch_size: 0",
           "linear:": "lineer:"}[edit]
    bad = tmp_path / "probe.yaml"
    bad.write_text(text.replace(edit, new, 1))
    before = _tree(probed_run / "probe")
    capsys.readouterr()
    assert main(["probe", str(probed_run), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and key in err
    assert _tree(probed_run / "probe") == before


def test_4_a_failed_probe_keeps_the_earlier_good_result(probed_run, monkeypatch, capsys):
    import json

    from ssl_eq.probes.tasks import PROBES

    good = json.loads((probed_run / "probe" / "probe.json").read_text())["probes"]["linear"]
    assert good["status"] == "ok"

    def broken(ctx, section):
        raise RuntimeError("out of luck")

    monkeypatch.setitem(PROBES, "linear", broken)
    assert main(["probe", str(probed_run), "--epochs", "1", "--probes", "linear"]) == 0
    report = json.loads((probed_run / "probe" / "probe.json").read_text())
    assert report["probes"]["linear"] == good and "out of luck" in report["failed"]["linear"]["reason"]
    assert "linear: error this time - RuntimeError: out of luck" in capsys.readouterr().out


# 6. exact resume: killed at several points and resumed, an epoch-bounded run with random augmentations ends at
# the same step with bit-identical weights (same data order: stateful loader; same draws: per-batch seeds)
# bit-identical weights need one thread count throughout (auto follows the load, and with it the summation order)
FIXED_THREADS = "threads=1"
RANDOM_AUG = "augment.transforms=[{name:horizontal_flip,p:0.5},{name:color_jitter,brightness:0.4,contrast:0.4," \
             "saturation:0.2,hue:0.1,p:0.8}]"


def test_6_killed_and_resumed_run_is_bit_identical(tiny_data, tmp_path, monkeypatch):
    import torch

    from ssl_eq.methods import load_run, pretrain
    from ssl_eq.methods.sie import SIE

    overrides = ("trainer.max_epochs=3", "data.batch_size=2", RANDOM_AUG, FIXED_THREADS)
    whole = pretrain(tiny_cfg(tiny_data, tmp_path / "whole", *overrides))
    assert whole["global_step"] == 9                                  # 7 train objects: 3 batches of 2 x 3 epochs

    # killed mid-epoch 0, in the validation at the end of epoch 0, then mid-epoch 2 of the resumed run
    kills, step_loss = {1, 3, 7}, SIE.step_loss

    def killed(self, views, batch):
        if self.global_step in kills:
            kills.discard(self.global_step)
            raise RuntimeError("simulated kill")
        return step_loss(self, views, batch)

    monkeypatch.setattr(SIE, "step_loss", killed)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="simulated kill"):
            pretrain(tiny_cfg(tiny_data, tmp_path / "killed", *overrides))
    assert not kills
    resumed = pretrain(tiny_cfg(tiny_data, tmp_path / "killed", *overrides))
    assert resumed["global_step"] == whole["global_step"] and resumed["epoch"] == whole["epoch"]
    a, b = load_run(tmp_path / "whole").state_dict(), load_run(tmp_path / "killed").state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


# ---- broken state after an error
def _fill_disk_after(monkeypatch, folder: Path, good_writes: int) -> None:
    """Simulate a full disk: files opened for writing in `folder` after `good_writes` of them get half their
    bytes written, then ENOSPC (as a full file system does)."""
    import builtins
    import errno
    import io

    real_open, count = builtins.open, [0]

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, Path)) and Path(file).parent == folder and ("w" in mode or "a" in mode):
            count[0] += 1
            if count[0] > good_writes:
                return Full(f)
        return f

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)


def test_full_disk_during_pretraining_leaves_no_truncated_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    import torch
    run = tmp_path / "run"
    args = ["pretrain", *TINY, f"data.root={tiny_data}", f"run_dir={run}", "trainer.max_steps=6",
            "trainer.limit_val_batches=0"]
    with monkeypatch.context() as m:
        _fill_disk_after(m, run / "checkpoints", good_writes=3)
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "out of space" in err and str(run / "checkpoints") in err
    assert not list((run / "checkpoints").glob(".*tmp"))                        # no temp file left behind
    for ckpt in (run / "checkpoints").glob("*.ckpt"):                          # every checkpoint is whole
        assert torch.load(ckpt, weights_only=False)["global_step"] > 0
    assert main(args) == 0                                                      # space freed: the run resumes
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


@pytest.mark.parametrize("override, key", [("method.optim.lr=inf", "method.optim.lr"),
                                           ("method.loss.invariance=nan", "method.loss.invariance")])
def test_nonfinite_config_values_refused_before_anything_is_written(tiny_data, tmp_path, capsys, override, key):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, f"data.root={tiny_data}", f"run_dir={run}", override]) == 2
    err = capsys.readouterr().err
    assert key in err and "finite" in err
    assert not run.exists()


def test_nonfinite_render_option_refused(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["render", "--out", str(out), "--objects", "1", "--views", "1", "--size", "16", "--device", "cpu",
                 "--camera-distance", "nan"]) == 2
    assert "--camera-distance must be a finite number" in capsys.readouterr().err and not out.exists()


def test_method_option_error_leaves_no_config(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, f"data.root={tiny_data}", f"run_dir={run}", "method.split.inv=5"]) == 2
    assert "method.split" in capsys.readouterr().err
    assert not (run / "config.yaml").exists()


def test_bad_split_file_refused_before_rendering(tmp_path, capsys, monkeypatch):
    from ssl_eq.renderers.job import RenderJob
    rendered = []
    monkeypatch.setattr(RenderJob, "_render_shard", lambda *a: rendered.append(1) or (_ for _ in ()).throw(
        AssertionError("rendered before the split file was checked")))
    split = tmp_path / "val.txt"
    split.write_text("no_such_object\n")
    assert main(["render", "--out", str(tmp_path / "ds"), "--objects", "2", "--views", "1", "--size", "16",
                 "--device", "cpu", "--split-file", str(split)]) == 2
    assert "names 1 objects not in the dataset" in capsys.readouterr().err and not rendered


def test_ctrl_c_recorded_as_interrupted(tiny_data, tmp_path, monkeypatch, capsys):
    import json
    import signal

    from ssl_eq.methods.sie import SIE
    step_loss = SIE.step_loss

    def ctrl_c(self, views, batch):
        if self.global_step == 2:
            raise KeyboardInterrupt
        return step_loss(self, views, batch)

    run = tmp_path / "run"
    monkeypatch.setattr(SIE, "step_loss", ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert main(["pretrain", *TINY, f"data.root={tiny_data}", f"run_dir={run}", "trainer.max_steps=4"]) == 130
    finally:
        signal.signal(signal.SIGINT, handler)                   # Lightning ignores SIGINT after a Ctrl-C
    assert "re-run the same command to resume" in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"


def test_moved_dataset_resumes_with_a_new_data_root(tiny_data, tmp_path, capsys):
    import shutil
    data, run = Path(shutil.copytree(tiny_data, tmp_path / "data")), tmp_path / "run"
    args = ["pretrain", *TINY, f"run_dir={run}", "trainer.limit_val_batches=0"]
    assert main([*args, f"data.root={data}", "trainer.max_steps=2"]) == 0
    moved = Path(shutil.move(str(data), tmp_path / "moved"))
    assert main([*args, f"data.root={moved}", "trainer.max_steps=4"]) == 0      # same content: it resumes
    assert "at step 4" in capsys.readouterr().out
    other = make_synthetic_dataset(tmp_path / "other", num_objects=10, views=3, size=16, seed=3)
    assert main([*args, f"data.root={other}", "trainer.max_steps=6"]) == 2      # another dataset: refused
    assert "sections ['data'] differ" in capsys.readouterr().err


def test_nan_guard_names_a_visible_cause_and_no_missing_checkpoint(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", *TINY, f"data.root={tiny_data}", f"run_dir={run}", "trainer.max_steps=4"]
    assert main([*args, "method.loss.invariance=1e39"]) == 3                  # overflows float32: NaN at step 0
    err = capsys.readouterr().err
    assert "cause: loss weight method.loss.invariance=1e+39 is not a finite float32 number" in err
    assert "resume_from" not in err and "last.ckpt" not in err
    from ssl_eq.methods.app import fork_advice                               # a lr NaN before the first save
    assert "no checkpoint was saved" in fork_advice(tiny_cfg(tiny_data, tmp_path / "never_saved"))


def test_6_sigkilled_run_resumes_bit_identical(tiny_data, tmp_path, capsys):
    import time

    import torch

    from ssl_eq.methods import load_run, pretrain
    overrides = ("trainer.max_epochs=3", "data.batch_size=2", RANDOM_AUG, FIXED_THREADS)
    whole = pretrain(tiny_cfg(tiny_data, tmp_path / "whole", *overrides))
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ssl_eq.cli", "pretrain", *TINY, f"data.root={tiny_data}",
                             f"run_dir={run}", *overrides], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (run / "checkpoints" / "step=4.ckpt").exists():
        time.sleep(0.1)
    proc.kill()                                                          # SIGKILL: no handler, no cleanup
    proc.wait()
    resumed = pretrain(tiny_cfg(tiny_data, run, *overrides))            # takes over the dead process's lock
    assert resumed["global_step"] == whole["global_step"] == 9
    a, b = load_run(tmp_path / "whole").state_dict(), load_run(run).state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_full_disk_during_probing_is_named_and_keeps_probe_json(probed_run, monkeypatch, capsys):
    import errno

    from ssl_eq.probes.tasks import PROBES
    from ssl_eq.utils import io

    def full(ctx, section):                              # a probe saving its head on a full disk
        return io.save_torch_atomic({"w": 1}, ctx.out_dir / "rotation_head_equi.pt")

    real_write = io.write_atomic

    def no_space(path, write):
        def half(p):
            write(p)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, half)

    def results():  # the probe's files (TensorBoard adds an event file per run)
        return {k: v for k, v in _tree(probed_run / "probe").items() if not k.startswith("tb/")}

    before = results()
    monkeypatch.setitem(PROBES, "rotation", full)
    monkeypatch.setattr(io, "write_atomic", no_space)
    assert main(["probe", str(probed_run), "--epochs", "1", "--probes", "rotation"]) == 2
    err = capsys.readouterr().err
    assert "out of space writing rotation_head_equi.pt" in err and str(probed_run / "probe") in err
    assert results() == before                                        # nothing partial, probe.json as it was
