"""Issue #24 "Bounds": sizes that cannot fit are refused up front, in one line naming the options and the limit,
before any folder is written; a render above LARGE_RENDER_IMAGES asks for --yes."""
from __future__ import annotations

import pytest

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import compose_config, pretrain
from ssl_eq.utils import budget


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "please report it" not in err, err
    return err


@pytest.mark.parametrize("args, message", [
    (["--views", "1000000"], "one shard (64 objects x --views 1000000 x 128x128 px): at least 2.9 TiB needed, "
                             "but memory has"),
    (["--objects", "100000000"], "--objects 100000000 x --views 50 = 5,000,000,000 images (raw, 128 px): at least "
                                 "223.5 TiB needed, but the disk of"),
    (["--objects", "200000", "--size", "8", "--encoding", "jpeg"],
     "--objects 200000 x --views 50: 10,000,000 images, >= 152.6 MiB on disk, ~2.8 h at 1000 img/s"),
])
def test_render_sizes_that_cannot_fit_are_refused_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "ds"
    assert main(["render", "--out", str(out), "--device", "cpu", "--no-progress", *args]) == 2
    err = one_line_error(capsys)
    assert message in err and ("--yes" in err) == ("jpeg" in args)
    assert not out.exists()


def test_a_large_render_that_fits_starts_with_yes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(budget, "LARGE_RENDER_IMAGES", 3)
    cmd = ["render", "--out", str(tmp_path / "ds"), "--objects", "2", "--views", "2", "--size", "8", "--device", "cpu",
           "--no-progress", "--no-preview"]
    assert main(cmd) == 2 and "4 images" in one_line_error(capsys)
    assert main([*cmd, "--yes"]) == 0
    assert "render: up to 4 images, >= 768 B on disk" in capsys.readouterr().out


def test_pretrain_and_orbit_sizes_that_cannot_fit_are_refused(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "synth", num_objects=8, views=2, size=32)
    run = tmp_path / "run"
    assert main(["pretrain", f"data.root={data}", f"run_dir={run}", "data.image_size=100000"]) == 2
    assert ("one batch (data.batch_size 256 x 2 views x 3 x 100000x100000 float32): at least 55.9 TiB needed, "
            "but memory has") in one_line_error(capsys)
    assert not run.exists()

    tiny = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=4",
            "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=1",
            "trainer.limit_val_batches=0", "method.split.inv=8", "method.split.equi=8", "method.projector_inv=[16,16]",
            "method.projector_equi=[16,16]"]
    assert pretrain(compose_config([*tiny, f"data.root={data}", f"run_dir={run}"]))["status"] == "completed"
    assert main(["orbit", str(run), "--out", str(tmp_path / "orbit"), "--steps", "1000000000", "--source",
                 "procedural", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "orbit frames (--objects 8 x --steps 1000000000 x 32x32 px): at least 22.4 TiB needed" in err
    assert "lower --steps or --objects" in err and "Traceback" not in err
