"""`ssl-eq report` on run folders built here, and the reusable contact sheet."""
from __future__ import annotations

import json

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.reports import contact_sheet


def _make_run(root, name: str, method: str, top1: float | None, data) -> str:
    run = root / name
    (run / "probe").mkdir(parents=True)
    (run / "config.yaml").write_text(f"method:\n  name: {method}\ndata:\n  root: {data}\n")
    (run / "metrics.json").write_text(json.dumps({"train": {"loss": 1.5}, "steps": 3}))
    metrics = {"rotation/equi/r2_pooled": 0.42}
    if top1 is not None:
        metrics["linear/inv/top1"] = top1
    (run / "probe" / "probe.json").write_text(json.dumps({
        "method": method, "metrics": metrics,
        "definitions": {k: f"definition of {k}" for k in metrics},
        "probes": {"translation": {"status": "skipped", "reason": "needs latents ['trans_x']"}},
    }))
    writer = SummaryWriter(str(run / "tb"))
    for step in range(4):
        writer.add_scalar("train/loss", 2.0 - 0.1 * step + (method == "vicreg"), step)
    writer.close()
    return str(run)


def test_report_on_two_runs_writes_both_files_with_both_rows(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_objects=4, views=3, size=16)
    runs = [_make_run(tmp_path, "run_sie", "sie", 55.5, data), _make_run(tmp_path, "run_vicreg", "vicreg", None, data)]
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    page = (tmp_path / "out" / "report.html").read_text()
    for text in (md, page):
        assert "run_sie" in text and "run_vicreg" in text
        assert "from the papers, at their scale" in text and "80.48" in text
        assert "needs latents" in text
    lines = md.splitlines()
    linear = lines.index("### probe: linear")  # table: title, blank, header, rule, one row per run
    assert lines[linear + 4] == "| run_sie | sie | 55.50 |"
    assert lines[linear + 5] == "| run_vicreg | vicreg | – |"  # missing top-1 is a dash
    assert "| run_vicreg | vicreg | 0.42 |" in lines
    assert page.count("data:image/png;base64,") == 2  # training curves + dataset contact sheet, embedded
    assert (tmp_path / "out" / "assets" / "dataset_contact_sheet.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_report_on_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_contact_sheet_checks_its_input(tmp_path):
    images = np.zeros((2, 3, 8, 8, 3), np.uint8)
    out = contact_sheet(images, [["a", "b", "c"], ["d", "e", "f"]], tmp_path / "sheet.png")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(images, [["a"]], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="uint8"):
        contact_sheet(images.astype(np.float32), None, tmp_path / "bad.png")
