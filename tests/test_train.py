"""End to end: `ssl-eq pretrain` run folders, load_run, resume, NaN stop, bad input, DDP on 2 CPU ranks."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_eq.datasets.synthetic import make_synthetic_dataset
from ssl_eq.methods import NonFiniteLossError, compose_config, load_run, pretrain
from ssl_eq.methods.sie import SIE

TINY = ["backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "checkpoint.last_every_n_steps=1", "checkpoint.every_n_steps=2"]
SIE_TINY = ["method=sie", "method.split.inv=8", "method.split.equi=8", "method.projector_inv=[16,16]",
            "method.projector_equi=[16,16]"]


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


def test_nan_loss_stops_and_keeps_last_checkpoint(data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    step_loss = SIE.step_loss

    def nan_at_3(self, views, batch):
        out = step_loss(self, views, batch)
        if self.global_step == 3:
            out.terms["covariance"] = out.terms["covariance"] * float("nan")
            out.loss = sum(out.terms.values())
        return out

    monkeypatch.setattr(SIE, "step_loss", nan_at_3)
    with pytest.raises(NonFiniteLossError, match=r"at step 3; last finite loss: [0-9.]+; non-finite term\(s\): covariance"):
        pretrain(run_cfg(data_root, run, "trainer.max_steps=6"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert json.loads((run / "metrics.json").read_text())["status"].startswith("failed: NonFiniteLossError")


def test_bad_input(data_root, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not divisible by the 2 ranks"):
        pretrain(run_cfg(data_root, tmp_path / "a", "data.batch_size=7", "trainer.devices=2", "trainer.strategy=ddp"))
    with pytest.raises(ValueError, match="data.root is required"):
        pretrain(compose_config([*TINY, *SIE_TINY, f"run_dir={tmp_path / 'b'}"]))
    monkeypatch.setattr(SIE, "required_keys", ("images", "rel_rotation_quat", "rel_translation_object"))
    with pytest.raises(ValueError, match=r"lacks \['rel_translation_object'\], needed by method 'sie'"):
        pretrain(run_cfg(data_root, tmp_path / "c"))


def test_ddp_two_cpu_ranks_matches_single_process(data_root, tmp_path):
    """Same global batch on 1 process and on 2 gloo ranks (per-sample norms: SyncBatchNorm needs a GPU)."""
    common = ["backbone.norm=group", "method.head_batch_norm=false", "trainer.sync_batchnorm=false",
              "trainer.max_steps=3", f"data.root={data_root}", *TINY, *SIE_TINY]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = [sys.executable, "-m", "ssl_eq.cli", "pretrain"]
    single = subprocess.run([*cli, *common, f"run_dir={tmp_path / 'single'}"], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([*cli, *common, f"run_dir={tmp_path / 'ddp'}", "trainer.devices=2", "trainer.strategy=ddp"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Starting with 2 processes" in ddp.stdout + ddp.stderr
    a = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 3
    for name, p in a["state_dict"].items():
        assert torch.allclose(p, b["state_dict"][name], rtol=1e-3, atol=1e-5), name
    moved = [n for n, p in a["state_dict"].items() if "backbone" in n and p.is_floating_point()]
    assert moved  # compared tensors include the trained encoder
