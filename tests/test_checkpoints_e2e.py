"""End to end: SIE's model.pth (the reference layout at the published sizes, random values) on a tiny rendered
dataset -> `ssl-eq import-checkpoint` -> `probe` -> `orbit` -> `report`, with no other step."""
from __future__ import annotations

import json

import torch

from ssl_eq.cli import main
from ssl_eq.renderers.job import RenderConfig, RenderJob
from test_checkpoints import write_reference_file


def test_imported_sie_checkpoint_probes_orbits_and_reports(tmp_path, capsys):
    data = tmp_path / "data"
    RenderJob(RenderConfig(out=str(data), objects=24, views=3, size=32, device="cpu", progress=False,
                           objects_per_shard=12)).run()
    file = write_reference_file("sie", tmp_path / "model.pth")
    run = tmp_path / "runs" / "sie_published"
    assert main(["import-checkpoint", str(file), "--out", str(run), "--data", str(data), "data.image_size=32"]) == 0
    assert "imported sie checkpoint" in capsys.readouterr().out
    source = json.loads((run / "source.json").read_text())
    assert source["format"] == "sie" and len(source["sha256"]) == 64 and source["reference_epoch"] == 2000
    assert main(["probe", str(run), "--protocol", "sie_reference", "--probes", "linear,rotation,predictor",
                 "--epochs", "1"]) == 0
    probe = json.loads((run / "probe" / "probe.json").read_text())
    assert all(probe["probes"][p]["status"] == "ok" for p in ("linear", "rotation", "predictor")), probe["probes"]
    assert probe["method_name"] == "sie" and "rotation/equi/r2_pooled" in probe["metrics"]
    assert main(["orbit", str(run), "--out", str(tmp_path / "orbit"), "--objects", "2", "--steps", "4",
                 "--latent", "rot_z", "--device", "cpu"]) == 0
    orbits = json.loads((run / "orbit" / "orbit.json").read_text())["orbits"]
    assert [k for k in orbits if k.startswith("rot_z/full")], list(orbits)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "sie_published" in md and "## Orbit analysis" in md
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["imported_from"]["format"] == "sie"
