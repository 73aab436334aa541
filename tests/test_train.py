"""End to end: `ssl-eq pretrain` run folders, validation, load_run, resume, NaN stop, bad input, DDP on 2 CPU ranks."""
from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_eq.cli import main
from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import NonFiniteLossError, compose_config, load_run, pretrain
from ssl_eq.methods.base import BaseMethod
from ssl_eq.methods.run import trainer_kwargs
from ssl_eq.methods.sie import SIE

TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "checkpoint.last_every_n_steps=1", "checkpoint.every_n_steps=2"]
SIE_TINY = ["method=sie", "method.split.inv=8", "method.split.equi=8", "method.projector_inv=[16,16]",
            "method.projector_equi=[16,16]"]
VAL_KEYS = {"val/loss", "val/equivariance", "val/online/cls_top1", "val/online/rotation_mse", "val/online/rotation_r2"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_objects=24, views=4, size=32)


def run_cfg(data_root: Path, run_dir: Path, *overrides: str):
    return compose_config([*TINY, *SIE_TINY, f"data.root={data_root}", f"run_dir={run_dir}", *overrides])


def test_pretrain_run_folder_and_load_run(data_root, tmp_path):
    run = tmp_path / "run"
    summary = pretrain(run_cfg(data_root, run, "trainer.max_steps=4"))
    assert summary["status"] == "completed" and summary["global_step"] == 4
    assert (run / "config.yaml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step=2.ckpt", "step=4.ckpt"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "sie" and "train/equivariance" in metrics["metrics"]
    assert "online/rotation_r2" in metrics["metrics"] and "collapse/std_equi" in metrics["metrics"]
    assert VAL_KEYS <= set(metrics["metrics"])

    model = load_run(run)
    assert not model.training and model.has_predictor and model.action_key == "rel_rotation_quat"
    assert model.image_size == 32 and model.latent_schema[:3] == ["rot_x", "rot_y", "rot_z"]
    x = model.preprocess(torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    with torch.no_grad():
        reps, embs = model.representations(x), model.embeddings(x)
        pred = model.predict(embs["equi"], {"rel_rotation_quat": torch.tensor([[1.0, 0, 0, 0]] * 3)})
    assert reps["full"].shape == (3, 16) and reps["inv"].shape == (3, 8) and reps["equi"].shape == (3, 8)
    assert embs["inv"].shape == embs["equi"].shape == pred.shape == (3, 16)


def test_train_metrics_are_logged_only_on_the_steps_the_loggers_write(data_root, tmp_path, monkeypatch):
    """Every self.log costs Lightning's bookkeeping: a training step logs only where the loggers write
    (every trainer.log_every_n_steps steps) and at the last step, whose values metrics.json holds (Lightning
    writes the last step to the loggers only on the interval, as before)."""
    logged, losses = [], []
    real_log, real_step_loss = BaseMethod.log, SIE.step_loss

    def log(self, name, value, *args, **kwargs):
        if name == "train/loss":
            logged.append(self.global_step)
        return real_log(self, name, value, *args, **kwargs)

    def step_loss(self, *args, **kwargs):
        out = real_step_loss(self, *args, **kwargs)
        if self.training:
            losses.append(float(out.loss.detach()))
        return out

    monkeypatch.setattr(BaseMethod, "log", log)
    monkeypatch.setattr(SIE, "step_loss", step_loss)
    run = tmp_path / "run"
    pretrain(run_cfg(data_root, run, "trainer.max_steps=7", "trainer.log_every_n_steps=3", "logger=csv"))
    assert logged == [2, 5, 6] and len(losses) == 7
    rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    train_rows = [dict(zip(header, r.split(","))) for r in rows[1:]]
    train_rows = [r for r in train_rows if r["train/loss"]]
    assert [int(r["step"]) for r in train_rows] == [2, 5]
    assert float(train_rows[-1]["train/loss"]) == pytest.approx(losses[5])
    assert json.loads((run / "metrics.json").read_text())["metrics"]["train/loss"] == pytest.approx(losses[-1])


def test_validation_runs_on_schedule_and_at_the_end(data_root, tmp_path, monkeypatch, caplog):
    """18 train objects / batch 8 = 2 steps per epoch: validation after epoch 1 (step 2) and once more at
    the end (step 3, mid-epoch), so metrics.json holds the final val metrics; it never updates the encoder."""
    seen = []
    on_end = SIE.on_validation_epoch_end

    def record(self):
        seen.append((self.global_step, {n: p.clone() for n, p in self.named_parameters()}))
        on_end(self)

    monkeypatch.setattr(SIE, "on_validation_epoch_end", record)
    run = tmp_path / "run"
    summary = pretrain(run_cfg(data_root, run, "trainer.max_steps=3"))
    assert [step for step, _ in seen] == [2, 3]
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert VAL_KEYS <= set(metrics) and metrics == summary["metrics"]
    assert 0 <= metrics["val/online/cls_top1"] <= 1 and metrics["val/online/rotation_r2"] <= 1
    assert "train/loss" in metrics  # training metrics are kept next to the final validation's
    final = load_run(run)
    assert all(torch.equal(p, final.state_dict()[n]) for n, p in seen[-1][1].items())
    again = pretrain(run_cfg(data_root, run, "trainer.max_steps=3"))  # re-running a finished run: nothing to train
    assert again["global_step"] == 3 and again["metrics"]["train/loss"] == metrics["train/loss"]
    assert again["wall_s"] >= summary["wall_s"]

    seen.clear()
    summary = pretrain(run_cfg(data_root, tmp_path / "off", "trainer.max_steps=3", "trainer.limit_val_batches=0"))
    assert not seen and not VAL_KEYS & set(summary["metrics"])

    no_val = make_synthetic_dataset(tmp_path / "no_val", num_objects=24, views=4, size=32)
    manifest = json.loads((no_val / "manifest.json").read_text())
    manifest["split"] = {"train": manifest["split"]["train"], "val": []}
    (no_val / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO):
        summary = pretrain(run_cfg(no_val, tmp_path / "empty", "trainer.max_steps=2"))
    assert summary["status"] == "completed" and not seen and not VAL_KEYS & set(summary["metrics"])
    assert "validation skipped: split 'val'" in caplog.text and "is empty" in caplog.text


def test_trainer_kwargs_sync_batchnorm_only_on_cuda_with_several_ranks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    base = compose_config(["data.root=unused"]).trainer
    assert base.sync_batchnorm is True  # the config default is kept; it is resolved here
    for overrides, expected in [({"accelerator": "cpu", "devices": 2}, False),
                                ({"accelerator": "gpu", "devices": 1}, False),
                                ({"accelerator": "gpu", "devices": 2}, True),
                                ({"accelerator": "auto", "devices": "auto"}, True),
                                ({"accelerator": "cuda", "devices": 1, "num_nodes": 2}, True),
                                ({"accelerator": "gpu", "devices": "0,1", "sync_batchnorm": False}, False)]:
        kwargs = trainer_kwargs({**base, **overrides})
        assert kwargs["sync_batchnorm"] is expected, overrides
        assert "channels_last" not in kwargs and kwargs["max_steps"] == base.max_steps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_kwargs({**base, "accelerator": "auto", "devices": 2})["sync_batchnorm"] is False
    with pytest.raises(ValueError, match=r"trainer.max_stepz: not an argument of pytorch_lightning.Trainer; valid: "
                                         r"\[.*'max_steps'"):
        trainer_kwargs({**base, "max_stepz": 3})  # e.g. from +trainer.max_stepz=3


def test_kill_and_resume_continues_with_same_optimizer_state(data_root, tmp_path, monkeypatch):
    run, k = tmp_path / "run", 3
    step_loss = SIE.step_loss

    def killed_after_k(self, views, batch):
        if self.global_step == k:
            raise RuntimeError("simulated kill")
        return step_loss(self, views, batch)

    monkeypatch.setattr(SIE, "step_loss", killed_after_k)
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(run_cfg(data_root, run, "trainer.max_steps=6"))
    monkeypatch.setattr(SIE, "step_loss", step_loss)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == k
    seen = {}

    def record(self):
        seen["step"] = self.global_step
        seen["optimizer"] = copy.deepcopy(self.optimizers().optimizer.state_dict())  # Adam updates in place

    monkeypatch.setattr(SIE, "on_train_start", record, raising=False)
    summary = pretrain(run_cfg(data_root, run, "trainer.max_steps=6"))
    assert seen["step"] == k and summary["global_step"] == 6
    old, new = saved["optimizer_states"][0]["state"], seen["optimizer"]["state"]
    assert old.keys() == new.keys()
    for i in old:
        assert torch.equal(old[i]["exp_avg"], new[i]["exp_avg"]) and torch.equal(old[i]["step"], new[i]["step"])


def nan_covariance_at_step_3(monkeypatch):
    """SIE's covariance term becomes NaN at global step 3."""
    step_loss = SIE.step_loss

    def nan_at_3(self, views, batch):
        out = step_loss(self, views, batch)
        if self.global_step == 3:
            out.terms["covariance"] = out.terms["covariance"] * float("nan")
            out.loss = sum(out.terms.values())
        return out

    monkeypatch.setattr(SIE, "step_loss", nan_at_3)


def test_nan_loss_stops_and_keeps_last_checkpoint(data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    nan_covariance_at_step_3(monkeypatch)
    with pytest.raises(NonFiniteLossError, match=r"at step 3; last finite loss: [0-9.]+; non-finite term\(s\): covariance"):
        pretrain(run_cfg(data_root, run, "trainer.max_steps=6"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert json.loads((run / "metrics.json").read_text())["status"].startswith("failed: NonFiniteLossError")
    assert all(torch.isfinite(p).all() for p in load_run(run).state_dict().values())  # last good checkpoint


def test_bad_input(data_root, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="not divisible by the 2 ranks"):
        pretrain(run_cfg(data_root, tmp_path / "a", "data.batch_size=7", "trainer.devices=2", "trainer.strategy=ddp"))
    # 18 train objects: no full batch of 10 per rank on 2 ranks (incomplete batches are dropped)
    with pytest.raises(ValueError, match=r"split 'train' of .* has 18 items, fewer than one batch per rank "
                                         r"\(10 on each of 2 ranks, data.batch_size=20\)"):
        pretrain(run_cfg(data_root, tmp_path / "s", "data.batch_size=20", "trainer.devices=2", "trainer.strategy=ddp"))
    assert not (tmp_path / "s").exists()
    assert main(["pretrain", "method=nope", f"data.root={data_root}"]) == 2
    assert "unknown method 'nope'; valid: [" in capsys.readouterr().err
    assert main(["pretrain", "trainer.max_stepz=1", f"data.root={data_root}"]) == 2
    assert "unknown config key 'trainer.max_stepz'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="data.root is required"):
        pretrain(compose_config([*TINY, *SIE_TINY, f"run_dir={tmp_path / 'b'}"]))
    monkeypatch.setattr(SIE, "required_keys", ("images", "rel_rotation_quat", "rel_translation_object"))
    with pytest.raises(ValueError, match=r"lacks \['rel_translation_object'\], needed by method 'sie'"):
        pretrain(run_cfg(data_root, tmp_path / "c"))


def cli_pretrain(*overrides: str, timeout: float = 240) -> str:
    """`python -m ssl_eq.cli pretrain ...` in a subprocess -> its output; fails the test on a non-zero exit."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "ssl_eq.cli", "pretrain", *overrides], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def recorded_run(out: Path, *overrides: str, timeout: float = 240) -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """`ssl-eq pretrain` through tests/ddp_record.py -> (its output, {"grad0_rank<r>" / "final_rank<r>": tensors})."""
    repo = str(Path(__file__).resolve().parents[1])  # a script imports from its own folder first: put this checkout
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_record.py")), str(out), "pretrain",
                           *overrides], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr, {p.stem: torch.load(p) for p in out.glob("*.pt")}


def test_ddp_two_cpu_ranks_sync_gradients_and_weights(data_root, tmp_path, monkeypatch):
    """What DDP must make equal: the gradient of the first step (all-reduced over 2 gloo ranks) is the gradient of
    the global batch on one process, and both ranks hold identical weights after several steps. Per-sample norms,
    so both runs compute the same function; weights are not compared across runs (Adam amplifies the rounding
    of near-zero gradient entries)."""
    common = ["backbone.norm=group", "method.head_batch_norm=false", "trainer.max_steps=3",
              "trainer.limit_val_batches=0"]
    out, ddp = recorded_run(tmp_path / "ddp", *TINY, *SIE_TINY, *common, f"data.root={data_root}",
                            f"run_dir={tmp_path / 'ddp_run'}", "trainer.devices=2", "trainer.strategy=ddp")
    assert "Starting with 2 processes" in out
    assert set(ddp) == {"grad0_rank0", "grad0_rank1", "final_rank0", "final_rank1"}
    w0, w1 = ddp["final_rank0"], ddp["final_rank1"]
    assert w0.keys() == w1.keys()
    assert [n for n in w0 if not torch.equal(w0[n], w1[n])] == []  # every rank applied the same updates

    single: dict[str, torch.Tensor] = {}

    def keep_first_gradients(self, optimizer):
        if self.global_step == 0:
            single.update({n: p.grad.detach().clone() for n, p in self.named_parameters() if p.grad is not None})
    monkeypatch.setattr(BaseMethod, "on_before_optimizer_step", keep_first_gradients)
    pretrain(run_cfg(data_root, tmp_path / "single_run", *common, "trainer.max_steps=1"))
    g0, g1 = ddp["grad0_rank0"], ddp["grad0_rank1"]
    assert single.keys() == g0.keys() == g1.keys()
    encoder = [n for n in single if "backbone" in n]
    assert encoder and all(single[n].abs().max() > 0 for n in encoder)  # the encoder trains
    for name, ref in single.items():
        assert torch.equal(g0[name], g1[name]), name
        # float sums in another order: error ~1e-6 of the tensor's scale; one rank's own gradient is off by O(1)
        torch.testing.assert_close(g0[name], ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()) + 1e-8,
                                   msg=lambda m: f"{name}: {m}")


def test_ddp_on_cpu_with_batchnorm_and_default_sync_batchnorm(data_root, tmp_path):
    """trainer.sync_batchnorm defaults to true; on CPU (gloo) it switches itself off instead of failing
    ("SyncBatchNorm layers only work with GPU modules")."""
    out = cli_pretrain(*TINY, *SIE_TINY, f"data.root={data_root}", f"run_dir={tmp_path / 'bn'}", "trainer.max_steps=2",
                       "trainer.limit_val_batches=0", "trainer.devices=2", "trainer.strategy=ddp")
    assert "Starting with 2 processes" in out and "trainer.sync_batchnorm=true ignored" in out
    state = torch.load(tmp_path / "bn" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2 and any("running_mean" in n for n in state["state_dict"])


def test_nan_loss_checked_on_the_device_stops_before_a_checkpoint_holds_it(data_root, tmp_path, monkeypatch):
    """Off the CPU the finiteness check stays on the device (no host sync per step) and is raised on the next
    logging step or checkpoint: here forced on the CPU, with a log step only every 100 steps."""
    run = tmp_path / "run"
    nan_covariance_at_step_3(monkeypatch)
    monkeypatch.setattr(SIE, "SYNC_FREE_DEVICES", ())
    with pytest.raises(NonFiniteLossError, match=r"at step 3; last finite loss: [0-9.]+; non-finite term\(s\): covariance"):
        pretrain(run_cfg(data_root, run, "trainer.max_steps=6", "trainer.log_every_n_steps=100",
                         "checkpoint.last_every_n_steps=1"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert json.loads((run / "metrics.json").read_text())["status"].startswith("failed: NonFiniteLossError")
    assert all(torch.isfinite(p).all() for p in load_run(run).state_dict().values())
