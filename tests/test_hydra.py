"""`ssl-eq pretrain` as a Hydra app: sweeps (basic and submitit_local launchers), --cfg / --info, loggers,
callbacks, checkpoint.keep, the step progress bar, the TensorBoard HParams tab and batch-view image."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import compose_config, pretrain

# tiny demo runs: the experiments' own method, a 2-layer small_cnn at 32 px, batch 4
TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "method.split.inv=8", "method.split.equi=8",
        "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "trainer.enable_progress_bar=false",
        "trainer.val_check_interval=2", "checkpoint.last_every_n_steps=1", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_objects=12, views=4, size=32)


def run_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def sweep(data_root: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "-m", "experiment=demo_sie,demo_vicreg", "seed=0,1", "trainer.max_steps=2",
                 f"data.root={data_root}", f"hydra.sweep.dir={out}", *TINY, *extra])


def check_sweep(out: Path) -> list[Path]:
    runs = run_folders(out)
    assert len(runs) == 4 and (out / "multirun.yaml").is_file()
    seen = set()
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        summary = json.loads((run / "metrics.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 2
        assert cfg["run_dir"] == str(run) and f"seed={cfg['seed']}" in run.name
        assert (run / "checkpoints" / "last.ckpt").is_file()
        seen.add((cfg["method"]["name"], cfg["seed"]))
    assert seen == {("sie", 0), ("sie", 1), ("vicreg", 0), ("vicreg", 1)}
    return runs


def test_sweep_gives_one_resumable_run_folder_per_job_and_the_report_reads_them(data_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep(data_root, out) == 0
    runs = check_sweep(out)
    assert all(r.name.count("experiment=demo_") == 1 and "data.root" not in r.name for r in runs)
    # the same command with a larger budget extends every job in its own folder (max_steps does not name it)
    assert sweep(data_root, out, "trainer.max_steps=3") == 0
    assert run_folders(out) == runs
    assert all(json.loads((r / "metrics.json").read_text())["global_step"] == 3 for r in runs)
    capsys.readouterr()
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "sie" in report and "vicreg" in report


def test_sweep_with_the_submitit_local_launcher(data_root, tmp_path):
    out = tmp_path / "sweep"
    assert sweep(data_root, out, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20") == 0
    check_sweep(out)
    assert (out / ".submitit").is_dir()


def test_a_bad_job_of_a_sweep_is_named_before_anything_is_written(data_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["pretrain", "-m", "method=sie,vicreg", "method.optim.lr=1e-3,fast", f"data.root={data_root}",
                 f"hydra.sweep.dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "method.optim.lr='fast'" in err[0] or "method.optim.lr='fast'" in "".join(err)
    assert not out.exists()
    assert main(["pretrain", "-m", "seed=0,1", f"run_dir={tmp_path / 'r'}", f"data.root={data_root}"]) == 2
    assert "hydra.sweep.dir" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["pretrain", "-m", "trainer.max_steps=1,2", f"data.root={data_root}",
                 f"hydra.sweep.dir={out}"]) == 2
    assert "would share the run folder" in capsys.readouterr().err and not out.exists()


def test_cfg_job_info_and_help(capsys):
    assert main(["pretrain", "--cfg", "job", "experiment=demo_sie", "data.root=D", "trainer.max_steps=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["max_steps"] == 7 and cfg["method"]["name"] == "sie" and "hydra" not in cfg
    assert main(["pretrain", "--cfg", "hydra", "hydra.sweep.dir=S"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["hydra"]["sweep"]["dir"] == "S"
    assert main(["pretrain", "--info", "defaults", "logger=[tensorboard,csv]"]) == 0
    info = capsys.readouterr().out
    assert "logger/tensorboard" in info and "logger/csv" in info and "method/sie" in info
    assert main(["pretrain", "--help"]) == 0
    text = capsys.readouterr().out
    assert "logger: csv, mlflow, none, tensorboard, wandb" in text and "experiment: demo_equicaps" in text
    assert "--multirun" in text and "hydra.sweep.dir" in text
    assert main(["pretrain", "--cfg", "job", "trainer.max_stepz=3"]) == 2
    assert "unknown config key 'trainer.max_stepz'" in capsys.readouterr().err


def test_group_override_after_an_experiment(capsys):
    cfg = compose_config(["experiment=demo_sie", "backbone=resnet18", "data.root=D"])
    assert cfg.backbone.name == "resnet18" and "widths" not in cfg.backbone and cfg.run_dir == "runs/demo_sie"
    assert cfg.method.split.inv == 64  # the experiment's other keys stay
    with pytest.raises(ValueError, match=r"unknown config key 'backbone.widths'.*resnet18"):
        compose_config(["experiment=demo_sie", "backbone=resnet18", "backbone.widths=[8,16]"])
    assert main(["pretrain", "experiment=demo_sie", "method=augself", "backbone=resnet18", "--cfg", "job"]) == 0
    assert "name: augself" in capsys.readouterr().out


def test_resnet18_after_an_experiment_trains(data_root, tmp_path):
    summary = pretrain(compose_config([
        "experiment=demo_sie", "backbone=resnet18", "backbone.stem=small", "method.split.inv=256",
        "method.split.equi=256", "method.projector_inv=[16]", "method.projector_equi=[16]", f"data.root={data_root}",
        f"run_dir={tmp_path / 'r'}", "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=1",
        "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0", "logger=none", "callbacks=none"]))
    assert summary["status"] == "completed" and summary["global_step"] == 1


def tiny_run(data_root: Path, run: Path, *extra: str) -> dict:
    return pretrain(compose_config(["experiment=demo_sie", *TINY, f"data.root={data_root}", f"run_dir={run}",
                                    "trainer.max_steps=2", *extra]))


@pytest.mark.parametrize("logger, files", [
    ("csv", {"csv"}), ("none", set()), ("[tensorboard,csv]", {"csv", "tb"})])
def test_loggers(data_root, tmp_path, logger, files):
    run = tmp_path / "run"
    assert tiny_run(data_root, run, f"logger={logger}")["status"] == "completed"
    assert {p.name for p in run.iterdir() if p.is_dir()} - {"checkpoints"} == files
    if "csv" in files:
        rows = (run / "csv" / "metrics.csv").read_text().splitlines()
        assert "train/loss" in rows[0] and len(rows) >= 2


def test_tensorboard_hparams_tab_and_batch_view_image(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    summary = tiny_run(data_root, run)
    mux = EventMultiplexer().AddRunsFromDirectory(str(run / "tb"))
    mux.Reload()
    images = [(r, t) for r, tags in mux.Runs().items() for t in tags["images"]]
    assert any(t == "train/batch_views" for _, t in images)
    r, t = next((r, t) for r, t in images if t == "train/batch_views")
    assert mux.Images(r, t)[0].width > 100
    content = mux.PluginRunToTagToContent("hparams")
    plugin = [plugin_data_pb2.HParamsPluginData.FromString(c) for tags in content.values() for c in tags.values()]
    start = next(p.session_start_info for p in plugin if p.HasField("session_start_info"))
    assert start.hparams["method/name"].string_value == "sie" and start.hparams["seed"].number_value == 0
    exp = next(p.experiment for p in plugin if p.HasField("experiment"))
    tags = {m.name.tag for m in exp.metric_infos}
    assert "final/val/loss" in tags and "final/train/loss" in tags
    finals = {t: mux.Scalars(r, t)[-1].value for r, ts in mux.Runs().items() for t in ts["scalars"]
              if t.startswith("final/")}
    assert finals["final/val/loss"] == pytest.approx(summary["metrics"]["val/loss"], rel=1e-5)


def test_checkpoint_keep_and_refused_trainer_keys(data_root, tmp_path):
    run = tmp_path / "run"
    tiny_run(data_root, run, "checkpoint.every_n_steps=1", "checkpoint.keep=1", "trainer.max_steps=3",
             "logger=none")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step=3.ckpt"]
    with pytest.raises(ValueError, match=r"trainer.logger: .*logger=NAME"):
        tiny_run(data_root, tmp_path / "b", "+trainer.logger=false")
    with pytest.raises(ValueError, match=r"checkpoint.keep=0: expected an integer >= 1 or null"):
        compose_config(["checkpoint.keep=0"])


def test_wandb_without_the_package_is_one_clear_line(capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        assert compose_config(["logger=wandb"]).logger.wandb.offline is True
        return
    assert main(["pretrain", "logger=[tensorboard,wandb]", "data.root=D", "--cfg", "job"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install wandb" in err and "logger=wandb" in err


def test_one_progress_bar_over_max_steps(data_root, tmp_path, capsys):
    tiny_run(data_root, tmp_path / "run", "trainer.enable_progress_bar=true", "trainer.max_steps=3",
             "trainer.limit_val_batches=0", "logger=none")
    out = capsys.readouterr().out
    assert "steps: 100%" in out and "3/3" in out and "Epoch" not in out and "train/loss=" in out and "img/s=" in out


def test_probe_protocol_overrides_are_checked():
    from ssl_eq.probes.runner import load_probe_config

    cfg = load_probe_config(overrides=["probes.linear.epochs=5", "probes.rotation.hidden=[64]"])
    assert cfg["probes"]["linear"]["epochs"] == 5 and cfg["probes"]["rotation"]["hidden"] == [64]
    assert load_probe_config(protocol="sie_reference", overrides=["seed=3"])["seed"] == 3
    with pytest.raises(ValueError, match=r"unknown config key 'probes.linear.epochz'.*'epochs'"):
        load_probe_config(overrides=["probes.linear.epochz=5"])
    with pytest.raises(ValueError, match=r"probes.linear.epochs='five': expected an integer"):
        load_probe_config(overrides=["probes.linear.epochs=five"])


def test_probe_and_orbit_take_overrides_on_the_command_line(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    tiny_run(data_root, run, "logger=none", "trainer.limit_val_batches=0")
    capsys.readouterr()
    assert main(["probe", str(run), "probes.linear.epochz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown config key 'probes.linear.epochz'" in err
    assert main(["probe", str(run), "--probes", "linear", "probes.linear.epochs=2", "extraction.batch_size=8"]) == 0
    probe = json.loads((run / "probe" / "probe.json").read_text())
    assert probe["config"]["probes"]["linear"]["epochs"] == 2 and probe["config"]["extraction"]["batch_size"] == 8
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plots = [Path(p).stem for r in probe["probes"].values() for p in r.get("plots", [])]
    events = EventAccumulator(str(run / "probe" / "tb"))
    events.Reload()
    assert plots and {f"probe/{p}" for p in plots} <= set(events.Tags()["images"])  # the probe's figures
    assert main(["orbit", str(run), "--out", str(tmp_path / "o"), "stepz=3"]) == 2
    assert "unknown config key 'stepz'" in capsys.readouterr().err
    assert main(["orbit", str(run), "--out", str(tmp_path / "o"), "objects=many"]) == 2
    assert "objects='many': expected an integer" in capsys.readouterr().err
    assert main(["orbit", str(run), "--out", str(tmp_path / "o"), "steps=1"]) == 2
    assert "steps" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_pngs_become_tensorboard_images(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ssl_eq.utils.tensorboard import log_pngs

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "rot_x_full_curves.png")
    plt.close(fig)
    log_pngs(tmp_path / "tb", [tmp_path / "rot_x_full_curves.png"], "orbit")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["images"] == ["orbit/rot_x_full_curves"]
    image = events.Images("orbit/rot_x_full_curves")[0]
    assert (image.width, image.height) == (100, 75)


def test_run_folder_is_run_dir_and_a_failed_start_leaves_none(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", f"data.root={tmp_path / 'no_data'}", f"run_dir={run}", "hydra.run.dir=elsewhere"]) == 2
    assert "give run_dir=elsewhere" in capsys.readouterr().err and not Path("elsewhere").exists()
    assert main(["pretrain", f"data.root={tmp_path / 'no_data'}", f"run_dir={run}", f"hydra.run.dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_data" in err and not run.exists()


def test_a_multi_device_sweep_job_outside_slurm_is_refused(monkeypatch):
    from ssl_eq.methods.app import check_sweep_ranks

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    check_sweep_ranks(compose_config(["trainer.devices=1"]))
    with pytest.raises(ValueError, match=r"trainer.devices=2 .*submitit_slurm.*tasks_per_node=2"):
        check_sweep_ranks(compose_config(["trainer.devices=2"]))
    monkeypatch.setenv("SLURM_NTASKS", "2")
    check_sweep_ranks(compose_config(["trainer.devices=2"]))


def test_views_figure_titles_each_view_with_the_action_from_the_previous_one():
    import torch

    from ssl_eq.methods.callbacks import views_figure

    images = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8)
    actions = torch.tensor([[[1.0, 0, 0, 0], [0.5, 0.5, -0.5, 0.5]]] * 2)  # (B, V-1, A): a sequence
    fig = views_figure(images, actions, "rel_rotation_quat")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 6 and "rel_rotation_quat" in titles[0]
    assert titles[1] == "+1.00 +0.00 +0.00 +0.00" and titles[5] == "+0.50 +0.50 -0.50 +0.50"
    pair = views_figure(images[:, :2], actions[:, 0], "rel_rotation_quat")  # (B, A): a pair
    assert [ax.get_title() for ax in pair.axes][3] == "+1.00 +0.00 +0.00 +0.00"


def test_run_does_not_import_the_command_module():
    import subprocess
    import sys

    code = "import sys, ssl_eq.methods.run, ssl_eq.methods.app; assert 'ssl_eq.methods.commands' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
