"""`ssl-eq report` on run folders built here, and the reusable contact sheet."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import compose_config, pretrain
from ssl_eq.reports import contact_sheet

TINY_RUN = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=8",
            "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
            "trainer.log_every_n_steps=1"]


def _make_run(root, name: str, method: str, top1: float | None, data) -> str:
    run = root / name
    (run / "probe").mkdir(parents=True)
    (run / "config.yaml").write_text(f"method:\n  name: {method}\ndata:\n  root: {data}\n")
    (run / "metrics.json").write_text(json.dumps({"train": {"loss": 1.5}, "steps": 3}))
    metrics = {"rotation/equi/r2_pooled": 0.42}
    if top1 is not None:
        metrics["linear/inv/top1"] = top1
    (run / "probe" / "probe.json").write_text(json.dumps({
        "method": method, "protocol": "default", "metrics": metrics,
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
    assert lines[linear + 4] == "| run_sie | sie | default | 55.50 |"
    assert lines[linear + 5] == "| run_vicreg | vicreg | default | – |"  # missing top-1 is a dash
    assert "| run_vicreg | vicreg | default | 0.42 |" in lines
    assert page.count("data:image/png;base64,") == 2  # training curves + dataset contact sheet, embedded
    assert (tmp_path / "out" / "assets" / "dataset_contact_sheet.png").is_file()
    assert "wrote" in capsys.readouterr().out


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """Each Markdown table of `text`, keyed by the heading above it, as rows of cells (header and rule rows
    included); an escaped "\\|" is not a separator."""
    tables: dict[str, list[list[str]]] = {}
    heading, rows = "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
            continue
        if rows:
            tables[f"{heading} #{len(tables)}"] = rows
            rows = []
        if line.startswith("#"):
            heading = line.lstrip("# ")
    return tables


def test_every_report_table_row_has_as_many_cells_as_its_header(tmp_path):
    """Two real pretraining runs (different metric sets: SIE has equivariance terms, VICReg not) and a probe
    error whose message holds "|" and a line break: every row of every table matches its header, in both files."""
    data = make_synthetic_dataset(tmp_path / "data", num_objects=24, views=4, size=32)
    methods = {"sie": ["method.split.inv=8", "method.split.equi=8", "method.projector_inv=[16,16]",
                       "method.projector_equi=[16,16]"], "vicreg": ["method.projector=[16,16]"]}
    runs = []
    for method, overrides in methods.items():
        runs.append(tmp_path / method)
        pretrain(compose_config([f"method={method}", *TINY_RUN, *overrides, f"data.root={data}",
                                 f"run_dir={runs[-1]}"]))
    (runs[0] / "probe").mkdir()
    (runs[0] / "probe" / "probe.json").write_text(json.dumps({
        "method": "sie", "metrics": {"linear/inv/top1": 40.0, "rotation/equi/r2_pooled": 0.25},
        "definitions": {"top1": "top-1 | accuracy"},
        "probes": {"colour": {"status": "error", "reason": "ValueError: a | b\nsecond line"}},
    }))
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0

    tables = markdown_tables((tmp_path / "out" / "report.md").read_text())
    for title, rows in tables.items():
        assert {len(r) for r in rows} == {len(rows[0])}, (title, rows)
        assert all(set(c) == {"-"} for c in rows[1]), title
    train, val = (next(rows for title, rows in tables.items() if title.startswith(f"training: {g} #"))
                  for g in ("train", "val"))
    assert [r[0] for r in train[2:]] == ["sie", "vicreg"]
    assert "equivariance" in train[0] and "online/cls_top1" in val[0]
    assert train[3][train[0].index("equivariance")] == "–"  # VICReg has no such term
    assert any("second line" in c for rows in tables.values() for r in rows for c in r)

    page = (tmp_path / "out" / "report.html").read_text()
    for table in re.findall(r"<table>(.*?)</table>", page, re.S):
        widths = {len(re.findall(r"<t[hd]>", tr)) for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S)}
        assert len(widths) == 1, table[:300]


def _probe_run(root, name: str, method: str, protocol: str, metrics: dict[str, float]) -> str:
    run = root / name
    (run / "probe").mkdir(parents=True)
    (run / "config.yaml").write_text(f"method:\n  name: {method}\n")
    (run / "probe" / "probe.json").write_text(json.dumps({
        "method": method, "method_name": method, "protocol": protocol, "headline_r2": "r2_pooled",
        "conventions": {"quaternion_sign": "scipy", "colour_targets": "raw", "feature_batchnorm": "eval",
                        "run": {"quaternion_sign": "canonical", "colour_targets": "wrapped"}},
        "dataset": {"views": 12},
        "config": {"probes": {"rotation": {"train_per_object": 10, "val_per_object": 10, "holdout_fraction": 0.1,
                                           "epochs": 50}}},
        "metrics": metrics, "definitions": {k: "d" for k in metrics}, "probes": {}}))
    return str(run)


def test_report_leads_with_the_headline_and_keeps_published_sources_apart(tmp_path):
    base = {"rotation/r2_pooled_mean_baseline": 0.27, "rotation/r2_uniform_mean_baseline": 0.49,
            "rotation/r2_uniform_varying_mean_baseline": -0.01}
    runs = [
        _probe_run(tmp_path, "ceiling", "supervised", "default",
                   {**base, "linear/full/top1": 90.0, "rotation/full/r2_pooled": 0.70,
                    "rotation/full/r2_uniform": 0.60}),
        _probe_run(tmp_path, "sie", "sie", "default",
                   {**base, "linear/inv/top1": 50.0, "linear/full/top1": 52.0, "rotation/equi/r2_pooled": 0.40,
                    "rotation/equi/r2_uniform": 0.60, "rotation/equi/r2_uniform_varying": 0.20,
                    "rotation/equi/geodesic_deg": 41.5, "rotation/full/r2_pooled": 0.35, "predictor/val/hit@1": 0.25}),
        _probe_run(tmp_path, "vicreg", "vicreg", "default",
                   {**base, "linear/full/top1": 55.0, "rotation/full/r2_pooled": 0.25,
                    "rotation/full/r2_uniform": -0.02, "rotation/full/r2_uniform_varying": -0.05}),
    ]
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    tables = markdown_tables(md)
    first_title, first = next(iter(tables.items()))
    assert first_title.startswith("Headline")
    header = first[0]
    assert [r[0] for r in first[2:]] == ["sie", "vicreg", "ceiling"]  # the ceiling row last
    sie, vicreg, ceiling = first[2:]
    assert ceiling[1] == "supervised (ceiling)" and ceiling[header.index("rotation R² pooled")] == "0.7"
    assert sie[header.index("rotation part")] == "equi" and sie[header.index("rotation R² pooled")] == "0.4"
    assert sie[header.index("mean baseline, pooled")] == "0.27" and sie[header.index("Hit@1")] == "0.25"
    # restricted rotation groups: the headline's uniform R² is over the outputs that vary (beside its baseline)
    assert sie[header.index("rotation R² uniform (varying outputs)")] == "0.2"
    assert sie[header.index("mean baseline, uniform (varying outputs)")] == "-0.01"
    assert sie[header.index("geodesic error (°)")] == "41.50"
    assert vicreg[header.index("rotation part")] == "full" and vicreg[header.index("Hit@1")] == "–"
    assert sie[header.index("Hit@1 chance")] == "0.08333"
    reading = next(line for line in md.splitlines() if line.startswith("**Reading"))
    assert ("best self-supervised sie (equi) 0.400, +0.130 vs its mean baseline 0.270; uniform R² (varying outputs) "
            "0.200") in reading
    assert "supervised ceiling (ceiling) 0.700: the best self-supervised run is 0.300 below it" in reading
    assert "gap sie (equi) − vicreg (full): +0.150 r2_pooled, +0.250 r2_uniform_varying" in reading
    assert md.index("## Headline") < md.index("## Probe protocols") < md.index("## Our runs") < md.index(
        "## Published numbers")
    protocols = next(rows for title, rows in tables.items() if title.startswith("Probe protocols"))
    assert protocols[2][:6] == ["ceiling", "default", "r2_pooled", "scipy / canonical", "raw / wrapped", "eval"]
    assert "10 fresh random per object per epoch" in protocols[2][6] and "10% held-out" in protocols[2][6]
    sie_equicaps = next(rows for title, rows in tables.items() if title.startswith("SIE and EquiCaps papers"))
    seq_jepa = next(rows for title, rows in tables.items() if title.startswith("seq-JEPA paper"))
    assert any("83.24" in r for r in sie_equicaps) and not any("80.48" in r for r in sie_equicaps)
    assert any("80.48" in r for r in seq_jepa) and not any("83.24" in r for r in seq_jepa)
    assert "pooled" in sie_equicaps[0][3] and "uniform" in seq_jepa[0][2]  # each names its R² definition


def test_report_reading_without_a_ceiling(tmp_path):
    run = _probe_run(tmp_path, "sie", "sie", "sie_reference", {"rotation/equi/r2_pooled": 0.2,
                                                               "rotation/r2_pooled_mean_baseline": 0.27})
    assert main(["report", run, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "sie (equi) 0.200, -0.070 vs its mean baseline 0.270; no supervised ceiling run in this report" in md


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
