"""Issue #24 "Messages": each bad input ends in one line naming the file / option and what to do.

Partial and broken probe YAML, `preview --objects 0`, `probe --device cuda` without a GPU, a truncated feature
cache (rebuilt), an empty val split, a damaged first object in `import-3diebench` (skipped and listed), the fork
command `resume_from=.../step=N.ckpt` unquoted, and non-ASCII paths in overrides.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_eq.cli import main
from ssl_eq.datasets.native import read_manifest
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.datasets.threedie import export_3diebench
from ssl_eq.methods import compose_config, pretrain

TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "checkpoint.every_n_steps=2", "trainer.limit_val_batches=0", "method=sie", "method.split.inv=8",
        "method.split.equi=8", "method.projector_inv=[16,16]", "method.projector_equi=[16,16]"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_objects=12, views=2, size=32)


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "done"
    assert pretrain(compose_config([*TINY, f"data.root={data_root}", f"run_dir={run}", "trainer.max_steps=2"]))[
        "status"] == "completed"
    return run


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "please report it" not in err, err
    return err


def test_partial_and_broken_probe_yaml_are_named(run, tmp_path, capsys):
    partial = tmp_path / "partial.yaml"
    partial.write_text("probes:\n  linear:\n    epochs: 1\n")
    assert main(["probe", str(run), "--config", str(partial)]) == 2
    err = one_line_error(capsys)
    assert f"{partial}: missing or malformed 'seed'" in err and "start from a copy of" in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: 0\nprobes: [linear\n  epochs: :\n")
    assert main(["probe", str(run), "--config", str(broken)]) == 2
    assert f"{broken}, line 3 column 9: not valid YAML" in one_line_error(capsys)
    assert not (run / "probe").exists()                                       # nothing ran


def test_preview_counts_and_missing_gpu_are_refused_up_front(data_root, run, tmp_path, capsys):
    assert main(["dataset", "preview", str(data_root), "--out", str(tmp_path / "p.png"), "--objects", "0"]) == 2
    assert "argument --objects: expected an integer >= 1, got 0" in capsys.readouterr().err
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU message cannot be shown")
    for cmd in (["probe", str(run)], ["orbit", str(run), "--out", str(tmp_path / "orbit")]):
        assert main([*cmd, "--device", "cuda"]) == 2
        assert "--device cuda: no CUDA device is available (use --device cpu or auto)" in one_line_error(capsys)


def test_a_truncated_feature_cache_is_rebuilt(run, tmp_path, capsys):
    work = shutil.copytree(run, tmp_path / "run")
    assert main(["probe", str(work), "--probes", "linear", "--epochs", "1"]) == 0
    cache = work / "probe" / "features_train.pt"
    good = torch.load(cache, weights_only=True)["features"]
    cache.write_bytes(cache.read_bytes()[:3000])
    capsys.readouterr()
    assert main(["probe", str(work), "--probes", "linear", "--epochs", "1"]) == 0
    assert f"warning: {cache}: unreadable feature cache" in capsys.readouterr().err  # warnings go to stderr
    rebuilt = torch.load(cache, weights_only=True)["features"]
    assert all(torch.equal(good[k], rebuilt[k]) for k in good)


def test_an_empty_val_split_is_named(run, tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "noval", num_objects=8, views=2, size=32, val_fraction=0)
    assert main(["probe", str(run), "--data", str(data), "--probes", "linear"]) == 2
    err = one_line_error(capsys)
    assert f"{data}: the 'val' split has no objects" in err and "--val-fraction" in err


def test_a_damaged_first_object_is_skipped_by_the_import(data_root, tmp_path, capsys):
    orig = export_3diebench(data_root, tmp_path / "orig", workers=1, progress=False)
    first = orig / str(np.load(orig / "train_images.npy")[0]).lstrip("/")
    (first / "latent_0.npy").write_bytes(b"garbage")
    (first / "image_0.jpg").unlink()
    assert main(["dataset", "import-3diebench", str(orig), str(tmp_path / "out"), "--workers", "1"]) == 0
    assert f"skipped {first.name}:" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "out")
    assert [s["object_id"] for s in manifest["skipped"]] == [first.name] and manifest["num_objects"] == 11


@pytest.mark.parametrize("name", ["forks", "données é"])
def test_fork_paths_with_equals_signs_and_non_ascii_paths_are_accepted(data_root, run, tmp_path, name):
    data = shutil.copytree(data_root, tmp_path / name / "dätä")
    fork = tmp_path / name / "rün=2"
    step2 = run / "checkpoints" / "step=2.ckpt"                              # as the README prints it, unquoted
    cfg = compose_config([*TINY, f"data.root={data}", f"run_dir={fork}", f"resume_from={step2}",
                          "trainer.max_steps=3"])
    assert (cfg.data.root, cfg.run_dir, cfg.resume_from) == (str(data), str(fork), str(step2))
    assert pretrain(cfg)["global_step"] == 3
