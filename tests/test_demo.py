"""`ssl-eq demo`: the size it renders is the size it trains and probes at; --methods."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_eq.cli import build_parser
from ssl_eq.demo import DEFAULT_METHODS, demo_experiments, parse_methods, pretrain_argv, render_argv, run_dirs
from ssl_eq.methods import compose_config
from ssl_eq.methods.run import _fill_data_info


@pytest.mark.parametrize("method", demo_experiments())
def test_size_64_trains_and_probes_at_64(method):
    args = build_parser().parse_args(["demo", "--size", "64", "--methods", method])
    render = render_argv(args, Path("d"))
    assert render[render.index("--size") + 1] == "64"
    cfg = compose_config(pretrain_argv(args, method, Path("d"), Path("r"))[1:])
    _fill_data_info(cfg, {"image_size": 64, "num_classes": 12, "latent_schema": ["rot_x"], "variant": "3diebench"})
    assert cfg.data.image_size == 64 and cfg.method.name == method
    # without the demo's override the demo config takes the dataset's size (probing checks they agree)
    cfg = compose_config([f"experiment=demo_{method}", "data.root=d"])
    _fill_data_info(cfg, {"image_size": 64, "num_classes": 12, "latent_schema": ["rot_x"], "variant": "3diebench"})
    assert cfg.data.image_size == 64


def test_methods_option():
    assert parse_methods(DEFAULT_METHODS) == ["sie", "vicreg", "supervised"]
    assert parse_methods(" vicreg ,sie") == ["vicreg", "sie"]
    with pytest.raises(ValueError, match="demo_<method>.yaml"):
        parse_methods("sie,nosuch")


@pytest.mark.parametrize("method", demo_experiments())
def test_steps_come_from_the_demo_config_unless_given(method):
    args = build_parser().parse_args(["demo", "--methods", method])
    cfg = compose_config(pretrain_argv(args, method, Path("d"), Path("r"))[1:])
    assert cfg.trainer.max_steps == compose_config([f"experiment=demo_{method}", "data.root=d"]).trainer.max_steps > 0
    args = build_parser().parse_args(["demo", "--methods", method, "--steps", "7"])
    assert compose_config(pretrain_argv(args, method, Path("d"), Path("r"))[1:]).trainer.max_steps == 7


def test_every_method_with_a_demo_config_can_join():
    assert {"sie", "vicreg", "supervised", "seqjepa", "equicaps"} <= set(demo_experiments())
    assert parse_methods("sie,vicreg,supervised,seqjepa,equicaps")[-2:] == ["seqjepa", "equicaps"]


def test_seeds_option_trains_each_method_once_per_seed():
    args = build_parser().parse_args(["demo", "--methods", "sie", "--seeds", "2"])
    plan = run_dirs(args, "sie", Path("out"))
    assert plan == [(0, Path("out/runs/sie_s0")), (1, Path("out/runs/sie_s1"))]
    cfgs = [compose_config(pretrain_argv(args, "sie", Path("d"), run, seed)[1:]) for seed, run in plan]
    assert [c.seed for c in cfgs] == [0, 1] and cfgs[1].run_dir == "out/runs/sie_s1"
    # one seed keeps the single run folder of earlier demos
    assert run_dirs(build_parser().parse_args(["demo"]), "sie", Path("out")) == [(0, Path("out/runs/sie"))]
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        run_dirs(build_parser().parse_args(["demo", "--seeds", "0"]), "sie", Path("out"))


def test_jobs_option():
    from ssl_eq.demo import parse_jobs
    from ssl_eq.utils.threads import allowed_cpus

    assert parse_jobs("auto", 3) == min(allowed_cpus(), 3) and parse_jobs("auto", 1) == 1 and parse_jobs("4", 2) == 4
    with pytest.raises(ValueError, match="--jobs: expected 'auto' or a positive integer, got '0'"):
        parse_jobs("0", 2)


def test_parallel_trainings_each_run_with_their_share_of_the_cpus_and_log_to_their_own_file(tmp_path, capsys,
                                                                                              monkeypatch):
    from ssl_eq.cli import main
    from ssl_eq.utils.threads import ENV, allowed_cpus

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--objects", "90", "--views", "2", "--steps", "3", "--probe-epochs", "1",
                 "--methods", "sie,vicreg", "--jobs", "2", "--out", "out"]) == 0
    printed = capsys.readouterr().out
    threads = max(1, allowed_cpus() // 2)
    assert f"render-0, render-1: 2 commands at a time ({ENV}={threads} each)" in printed
    assert f"sie, vicreg: 2 commands at a time ({ENV}={threads} each)" in printed
    assert "dataset complete" in (tmp_path / "out" / "logs" / "render-1.log").read_text() + (
        tmp_path / "out" / "logs" / "render-0.log").read_text()
    for run in ("sie", "vicreg"):
        assert f"[{run}] pretrain done" in printed and f"[{run}] probe done" in printed
        log = (tmp_path / "out" / "logs" / f"{run}.log").read_text()
        assert log.index("$ ssl-eq pretrain experiment=demo_" + run) < log.index("$ ssl-eq probe out/runs/" + run)
        summary = json.loads((tmp_path / "out" / "runs" / run / "metrics.json").read_text())
        assert summary["status"] == "completed"
        assert summary["threads"]["setting"] == str(threads)
        assert (tmp_path / "out" / "runs" / run / "probe" / "probe.json").is_file()
    assert (tmp_path / "out" / "report" / "report.md").is_file() and (tmp_path / "out" / "data" / "preview.png").is_file()


def test_a_failed_parallel_training_names_its_command_and_log(tmp_path):
    from ssl_eq.demo import run_parallel

    bad = [["pretrain", "experiment=demo_nosuch", "data.root=d", "run_dir=r"], ["probe", "runs/bad"]]
    with pytest.raises(SystemExit, match=r"ssl-eq pretrain experiment=demo_nosuch .*its output: .*bad\.log"):
        run_parallel([bad], ["bad"], 2, tmp_path / "logs")
    assert "demo_nosuch" in (tmp_path / "logs" / "bad.log").read_text()
