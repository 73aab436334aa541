"""The online validation R² under 2-process CPU DDP (gloo) is the single-process value over the whole val split,
and Lightning prints no "sync_dist" advice for it (it is a torchmetrics Metric, synced by Lightning)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ssl_eq.datasets.synthetic import make_synthetic_dataset

# lr = 1e-30: no weight moves (beyond 1e-30), so both runs validate the same model and only the metric's
# reduction can differ; 24 objects -> 6 val objects, an even split over 2 ranks (no sampler padding)
RUN = ["backbone=small_cnn", "backbone.widths=[8,16]", "backbone.norm=group", "data.image_size=32",
       "data.batch_size=4", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
       "trainer.max_steps=2", "method=sie", "method.split.inv=8", "method.split.equi=8",
       "method.projector_inv=[16,16]", "method.projector_equi=[16,16]", "method.head_batch_norm=false",
       "method.optim.lr=1e-30"]


def _pretrain(out: Path, data: Path, *extra: str) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """tests/ddp_record.py pretrain -> (output, metrics.json's metrics, rank 0's final weights)."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_record.py")), str(out / "rec"),
                           "pretrain", *RUN, f"data.root={data}", f"run_dir={out / 'run'}", *extra],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "run" / "metrics.json").read_text())["metrics"]
    return done.stdout + done.stderr, metrics, torch.load(out / "rec" / "final_rank0.pt")


def test_online_rotation_r2_under_ddp_equals_single_process(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_objects=24, views=4, size=32)
    out1, single, w1 = _pretrain(tmp_path / "single", data)
    out2, ddp, w2 = _pretrain(tmp_path / "ddp", data, "trainer.devices=2", "trainer.strategy=ddp")
    assert "Starting with 2 processes" in out2
    assert all(torch.allclose(w1[k], w2[k], rtol=0, atol=1e-20) for k in w1)  # the same model validated
    assert abs(ddp["val/online/rotation_r2"] - single["val/online/rotation_r2"]) < 1e-5, (single, ddp)
    assert abs(ddp["val/online/rotation_mse"] - single["val/online/rotation_mse"]) < 1e-5
    assert "sync_dist" not in out1 + out2
