"""`ssl-eq report` on run folders built here, and the reusable contact sheet."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import compose_config, pretrain
from ssl_eq.reports import contact_sheet
from ssl_eq.reports import stats as S

from report_fixtures import probe_run, rotation_run

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
    linear = lines.index("### probe: linear")  # table: title, blank, header, rule, one row per metric
    assert lines[linear + 2] == "| metric | run_sie | run_vicreg |"  # one column per run: tables stay narrow
    assert lines[linear + 4] == "| protocol | default | default |"
    assert lines[linear + 5] == "| inv: top-1 accuracy (%) | 55.5 | – |"  # missing top-1 is a dash
    assert "inv: top-1 accuracy (%): `inv/top1`" in md  # the metric key in a footnote (a tooltip in HTML)
    assert 'title="inv/top1"' in page
    assert "| equi: R² pooled | 0.420 | 0.420 |" in lines
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
    assert train[0] == ["metric", "sie", "vicreg"]
    equivariance = next(r for r in train if r[0] == "equivariance")
    assert equivariance[2] == "–" and equivariance[1] != "–"  # VICReg has no such term
    assert any(r[0] == "online: cls_top1" for r in val)
    assert any("second line" in c for rows in tables.values() for r in rows for c in r)

    page = (tmp_path / "out" / "report.html").read_text()
    for table in re.findall(r"<table[^>]*>(.*?)</table>", page, re.S):
        widths = {len(re.findall(r"<t[hd][ >]", tr)) for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S)}
        assert len(widths) == 1, table[:300]


def _verdicts(md: str) -> list[str]:
    return [line[4:-2] for line in md.split("## Headline", 1)[1].splitlines() if line.startswith("- **")]


def test_small_runs_below_their_baseline_are_not_read_as_a_win(tmp_path):
    """The issue's case (SIE and VICReg, 10 val objects, both below the mean baseline): the reading says "not
    above baseline" for both and states no gap, although SIE's R² is the larger."""
    runs = [rotation_run(tmp_path, "sie", "sie", "equi", skill=0.02),
            rotation_run(tmp_path, "vicreg", "vicreg", "full", skill=0.0)]
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    sie_r2 = json.loads((tmp_path / "sie" / "probe" / "probe.json").read_text())["metrics"]
    assert sie_r2["rotation/equi/r2_pooled"] < sie_r2["rotation/r2_pooled_mean_baseline"]
    verdicts = _verdicts(md)
    assert verdicts[0].startswith("sie (sie, equi): not above baseline (R² − baseline -")
    assert verdicts[1].startswith("vicreg (vicreg, full): not above baseline")
    assert verdicts[2] == "gap sie (equi) vs vicreg (full): not assessed, sie and vicreg are not above baseline"
    assert "no supervised ceiling" in verdicts[3]
    assert not re.search(r"sie \(equi\) − vicreg", md)
    head = next(rows for title, rows in markdown_tables(md).items() if title.startswith("Headline"))
    sie = dict(zip(head[0], head[2]))
    # the value [its 95 % interval over the 10 val objects]; its baseline beside it
    assert re.fullmatch(r"equi: -?0\.\d+ \[-?0\.\d+, -?0\.\d+\]; baseline \S+ \[\S+, \S+\]", sie["rotation R² pooled"])
    assert sie["verdict (pooled R² vs its baseline)"].startswith("not above baseline")
    assert md.index("## What was run") < md.index("## Headline") < md.index("## Our runs")


def test_a_real_gap_is_stated_with_its_paired_interval(tmp_path):
    runs = [rotation_run(tmp_path, "sie", "sie", "equi", skill=0.9),
            rotation_run(tmp_path, "vicreg", "vicreg", "full", skill=0.5)]
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    verdicts = _verdicts((tmp_path / "out" / "report.md").read_text())
    assert verdicts[0].startswith("sie (sie, equi): above baseline by +")
    gap = re.fullmatch(r"sie \(equi\) − vicreg \(full\) = \+(\S+) \[\+(\S+), \+(\S+)\]", verdicts[2])
    assert gap and 0 < float(gap[2]) < float(gap[1]) < float(gap[3])
    # the same two runs on one seed each, but as near-identical skills: no difference shown
    runs = [rotation_run(tmp_path / "b", "sie", "sie", "equi", skill=0.6),
            rotation_run(tmp_path / "b", "vicreg", "vicreg", "full", skill=0.6, noise_seed=3)]
    assert main(["report", *runs, "--out", str(tmp_path / "out_b")]) == 0
    verdicts = _verdicts((tmp_path / "out_b" / "report.md").read_text())
    assert verdicts[2].startswith("sie (equi) vs vicreg (full): no difference shown (sie (equi) − vicreg (full) ")


def test_runs_differing_only_in_seed_are_one_row_with_mean_and_std(tmp_path):
    runs = [rotation_run(tmp_path, f"sie_s{s}", "sie", "equi", skill=0.5 + 0.2 * s, seed=s) for s in (0, 1)]
    runs.append(rotation_run(tmp_path, "vicreg", "vicreg", "full", skill=0.5))
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    head = next(rows for title, rows in markdown_tables(md).items() if title.startswith("Headline"))
    assert [r[0] for r in head[2:]] == ["sie (2 seeds)", "vicreg"]
    assert head[2][head[0].index("seeds")] == "0, 1"
    r2 = [json.loads((tmp_path / f"sie_s{s}" / "probe" / "probe.json").read_text())["metrics"]
          ["rotation/equi/r2_pooled"] for s in (0, 1)]
    mean, std = np.mean(r2), np.std(r2, ddof=1)
    cell = head[2][head[0].index("rotation R² pooled")]
    assert cell.startswith(f"equi: {S.sig3(mean)} [")
    assert f"± {S.sig3(std)} sd (seeds: {S.sig3(r2[0])}, {S.sig3(r2[1])})" in cell


def test_demo_seeds_group_although_their_configs_hold_paths_under_their_run_dirs(tmp_path):
    """The 3-seed demo's case: config.yaml is the resolved composed config, whose logger save_dir follows
    ${run_dir}; seeds still form one group, while a run with another budget stays apart."""
    from omegaconf import OmegaConf

    def demo_run(name: str, seed: int, *extra: str) -> str:
        run = rotation_run(tmp_path, name, "sie", "equi", skill=0.5, seed=seed)
        cfg = compose_config(["experiment=demo_sie", f"run_dir={run}", f"seed={seed}", *extra])
        OmegaConf.save(cfg, Path(run) / "config.yaml", resolve=True)
        return run

    runs = [demo_run(f"sie_s{s}", s) for s in range(3)] + [demo_run("sie_long", 0, "trainer.max_steps=999")]
    saved = [OmegaConf.load(Path(r) / "config.yaml") for r in runs[:2]]
    assert saved[0].logger.tensorboard.save_dir != saved[1].logger.tensorboard.save_dir  # what used to split them
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    head = next(rows for title, rows in markdown_tables(md).items() if title.startswith("Headline"))
    assert [(r[0], r[head[0].index("seeds")]) for r in head[2:]] == [("sie (3 seeds)", "0, 1, 2"), ("sie_long", "0")]


def test_report_leads_with_the_headline_and_keeps_published_sources_apart(tmp_path):
    """probe.json files without per-object values (older probes): numbers without intervals, no verdicts."""
    base = {"rotation/r2_pooled_mean_baseline": 0.27, "rotation/r2_uniform_mean_baseline": 0.49,
            "rotation/r2_uniform_varying_mean_baseline": -0.01}
    runs = [
        probe_run(tmp_path, "ceiling", "supervised", "default",
                   {**base, "linear/full/top1": 90.0, "rotation/full/r2_pooled": 0.70,
                    "rotation/full/r2_uniform": 0.60}),
        probe_run(tmp_path, "sie", "sie", "default",
                   {**base, "linear/inv/top1": 50.0, "linear/full/top1": 52.0, "rotation/equi/r2_pooled": 0.40,
                    "rotation/equi/r2_uniform": 0.60, "rotation/equi/r2_uniform_varying": 0.20,
                    "rotation/equi/geodesic_deg": 41.5, "rotation/full/r2_pooled": 0.35, "predictor/val/hit@1": 0.25}),
        probe_run(tmp_path, "vicreg", "vicreg", "default",
                   {**base, "linear/full/top1": 55.0, "rotation/full/r2_pooled": 0.25,
                    "rotation/full/r2_uniform": -0.02, "rotation/full/r2_uniform_varying": -0.05}),
    ]
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    tables = markdown_tables(md)
    head = next(rows for title, rows in tables.items() if title.startswith("Headline"))
    header = head[0]
    assert [r[0] for r in head[2:]] == ["sie", "vicreg", "ceiling"]  # the ceiling row last
    sie, vicreg, ceiling = head[2:]
    assert ceiling[1] == "supervised (ceiling)"
    assert ceiling[header.index("rotation R² pooled")] == "full: 0.700 (no interval); baseline 0.270 (no interval)"
    assert sie[header.index("rotation R² uniform (varying outputs)")] == \
        "equi: 0.200 (no interval); baseline -0.0100 (no interval)"
    assert sie[header.index("geodesic error (°, lower is better)")] == "41.5 (no interval)"
    assert sie[header.index("predictor Hit@1")] == "0.250 (no interval); chance 0.0833"
    assert vicreg[header.index("predictor Hit@1")] == "–"
    assert sie[-1].startswith("no interval (probe.json has no per-object values")
    assert md.index("## What was run") < md.index("## Headline") < md.index("## Probe protocols") < md.index(
        "## Our runs") < md.index("## Published numbers")
    protocols = next(rows for title, rows in tables.items() if title.startswith("Probe protocols"))
    assert protocols[2][:6] == ["ceiling", "default", "r2_pooled", "scipy / canonical", "raw / wrapped", "eval"]
    assert "10 fresh random per object per epoch" in protocols[2][6] and "10% held-out" in protocols[2][6]
    sie_equicaps = next(rows for title, rows in tables.items() if title.startswith("SIE and EquiCaps papers"))
    seq_jepa = next(rows for title, rows in tables.items() if title.startswith("seq-JEPA paper"))
    assert any("83.24" in r for r in sie_equicaps) and not any("80.48" in r for r in sie_equicaps)
    assert any("80.48" in r for r in seq_jepa) and not any("83.24" in r for r in seq_jepa)
    assert "pooled" in sie_equicaps[0][3] and "uniform" in seq_jepa[0][2]  # each names its R² definition


def test_stale_probe_results_are_marked(tmp_path):
    """probe.json names another checkpoint than last.ckpt (trained on after probing): the report says so and how
    to refresh; the weights digest (checkpoint_digest) is read first, the file hash of older files otherwise."""
    import torch as _torch

    from ssl_eq.utils.identity import weights_digest

    run = Path(probe_run(tmp_path, "sie", "sie", "default", {"rotation/equi/r2_pooled": 0.3}))
    (run / "checkpoints").mkdir()
    _torch.save({"state_dict": {"w": _torch.ones(3)}}, run / "checkpoints" / "last.ckpt")
    probe_file = run / "probe" / "probe.json"
    probe = json.loads(probe_file.read_text())
    for key, value, stale in (("checkpoint_digest", weights_digest(run / "checkpoints" / "last.ckpt"), False),
                              ("checkpoint_digest", "0" * 64, True), ("checkpoint_sha256", "0" * 64, True)):
        probe_file.write_text(json.dumps({**probe, key: value}))
        assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
        md = (tmp_path / "out" / "report.md").read_text()
        assert ("stale probe" in md) is stale and ("sie (stale)" in md) is stale
        if stale:
            assert f"refresh with `ssl-eq probe {run}`" in md


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
