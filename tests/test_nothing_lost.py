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
