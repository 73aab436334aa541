"""End to end on a real tiny checkpoint: synthetic dataset -> `ssl-eq pretrain` (2 steps) -> `ssl-eq probe`."""
from __future__ import annotations

import json
import shutil

import pytest

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def sie_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = make_synthetic_dataset(root / "data", num_objects=12, views=4, size=32)
    run = root / "run_sie"
    assert main(["pretrain", "experiment=demo_sie", f"data.root={data}", f"run_dir={run}", "trainer.max_steps=2",
                 "data.batch_size=4", "trainer.enable_progress_bar=false"]) == 0
    return root, run


def test_probe_a_tiny_sie_run(sie_run, capsys):
    root, run = sie_run
    assert main(["probe", str(run), "--epochs", "2"]) == 0
    report = json.loads((run / "probe" / "probe.json").read_text())
    assert report["probes"]["linear"]["status"] == "ok"
    assert {"linear/inv/top1", "rotation/equi/r2_pooled", "rotation/equi/r2_uniform", "predictor/val/mrr",
            "colour/equi/r2_pooled", "view_rotation/full/geodesic_deg", "rotation/r2_pooled_mean_baseline",
            "rotation/r2_uniform_varying_mean_baseline", "rotation/equi/r2_uniform_varying",
            "colour/r2_pooled_mean_baseline"} <= set(report["metrics"])
    # canonical quaternions have mean w > 0: the constant mean prediction already earns a positive pooled R²
    assert 0.05 < report["metrics"]["rotation/r2_pooled_mean_baseline"] < 0.8
    assert report["probes"]["translation"]["status"] == "skipped"  # 3DIEBench has no translation latents
    assert report["config"]["probes"]["linear"]["epochs"] == 2
    assert all(report["definitions"][k] for k in report["metrics"])
    # per-object sums (the report's bootstrap) reproduce every headline number of probe.json
    from ssl_eq.reports.stats import bootstrap
    probes, metrics = report["probes"], report["metrics"]
    for probe, part, metric, key in (("linear", "inv", "top1", "linear/inv/top1"),
                                     ("rotation", "equi", "r2_pooled", "rotation/equi/r2_pooled"),
                                     ("rotation", "equi", "r2_uniform_varying", "rotation/equi/r2_uniform_varying"),
                                     ("rotation", "equi", "r2_pooled_mean_baseline", "rotation/r2_pooled_mean_baseline"),
                                     ("rotation", "equi", "geodesic_deg", "rotation/equi/geodesic_deg"),
                                     ("predictor", "val", "hit@1", "predictor/val/hit@1")):
        entry = probes[probe]["per_object"][part]
        assert len(entry["objects"]) == report["dataset"]["objects"]["val"]
        assert bootstrap([(entry, metric)], draws=1).value == pytest.approx(metrics[key], rel=1e-4, abs=1e-4), key
    assert list((run / "probe" / "tb").glob("events.out.tfevents*"))
    # a second pass reuses the cached features
    capsys.readouterr()
    assert main(["probe", str(run), "--probes", "linear", "--epochs", "1"]) == 0
    assert "reusing" in capsys.readouterr().out


def test_probe_protocols_record_protocol_and_conventions(sie_run, capsys):
    _, run = sie_run
    assert main(["probe", str(run), "--protocol", "sie_reference", "--probes", "linear,rotation,colour",
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "protocol sie_reference: quaternion sign scipy, colour targets raw" in out
    report = json.loads((run / "probe" / "probe.json").read_text())
    assert report["protocol"] == "sie_reference" and report["headline_r2"] == "r2_pooled"
    assert report["method_name"] == "sie"
    assert report["conventions"] == {"quaternion_sign": "scipy", "colour_targets": "raw", "feature_batchnorm": "eval",
                                     "run": {"quaternion_sign": "canonical", "colour_targets": "wrapped"}}
    rotation = report["probes"]["rotation"]
    assert rotation["config"]["train_per_object"] == 1 and rotation["selection"]["rotation/equi"]["epoch"] == 1
    assert main(["probe", str(run), "--probes", "linear", "--epochs", "1"]) == 0  # default protocol
    report = json.loads((run / "probe" / "probe.json").read_text())
    assert report["protocol"] == "default" and report["conventions"]["quaternion_sign"] == "canonical"
    assert main(["probe", str(run), "--protocol", "papers"]) == 2
    assert "unknown protocol" in capsys.readouterr().err


def test_probe_bad_inputs(sie_run, tmp_path, capsys):
    root, run = sie_run
    empty = tmp_path / "no_ckpt"
    empty.mkdir()
    assert main(["probe", str(empty)]) == 2
    assert "no checkpoint" in capsys.readouterr().err

    other = make_synthetic_dataset(tmp_path / "data64", num_objects=4, views=2, size=16)
    assert main(["probe", str(run), "--data", str(other), "--epochs", "1"]) == 2
    assert "image_size 16 does not match" in capsys.readouterr().err

    assert main(["probe", str(run), "--probes", "linear,bogus"]) == 2
    assert "unknown probe" in capsys.readouterr().err

    import torch

    broken = tmp_path / "unknown_method"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("probe"))
    ckpt = broken / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    state["hyper_parameters"]["config"]["method"]["name"] = "no_such_method"
    torch.save(state, ckpt)
    assert main(["probe", str(broken), "--epochs", "1"]) == 2
    assert "no_such_method" in capsys.readouterr().err


def test_probe_on_a_dataset_with_another_latent_schema_warns_and_runs(sie_run, tmp_path, capsys):
    _, run = sie_run
    probe_run = tmp_path / "run_copy"
    shutil.copytree(run, probe_run, ignore=shutil.ignore_patterns("probe"))
    data_t = make_synthetic_dataset(tmp_path / "data_t", num_objects=8, views=3, size=32, variant="3diebench-t")
    assert main(["probe", str(probe_run), "--data", str(data_t), "--probes", "translation", "--epochs", "1"]) == 0
    report = json.loads(next((probe_run / "probe").glob("data-*/probe.json")).read_text())  # another dataset's
    assert report["warnings"] and "latent schema" in report["warnings"][0]
    assert {"translation/object/full/r2_pooled", "translation/base/full/r2_uniform"} <= set(report["metrics"])
