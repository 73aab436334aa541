"""Run folders for report tests: probe.json files as `ssl-eq probe` writes them (per-object sums included)."""
from __future__ import annotations

import json

import torch

from ssl_eq.probes import per_object as PO
from ssl_eq.reports import stats as S


def probe_run(root, name: str, method: str, protocol: str, metrics: dict[str, float], seed: int = 0,
               probes: dict | None = None, extra_config: str = "") -> str:
    run = root / name
    (run / "probe").mkdir(parents=True)
    (run / "config.yaml").write_text(f"method:\n  name: {method}\nseed: {seed}\nrun_dir: {run}\n{extra_config}")
    (run / "probe" / "probe.json").write_text(json.dumps({
        "method": method, "method_name": method, "protocol": protocol, "headline_r2": "r2_pooled",
        "conventions": {"quaternion_sign": "scipy", "colour_targets": "raw", "feature_batchnorm": "eval",
                        "run": {"quaternion_sign": "canonical", "colour_targets": "wrapped"}},
        "dataset": {"views": 12},
        "config": {"probes": {"rotation": {"train_per_object": 10, "val_per_object": 10, "holdout_fraction": 0.1,
                                           "epochs": 50}}},
        "metrics": metrics, "definitions": {k: "d" for k in metrics}, "probes": probes or {}}))
    return str(run)


def rotation_run(root, name: str, method: str, part: str, skill: float, seed: int = 0, objects: int = 10,
                  noise_seed: int | None = None) -> str:
    """A run whose probe.json holds per-object sums as `ssl-eq probe` writes them: val targets of `objects`
    objects (10 pairs each) predicted as skill · target + (1 − skill) · train mean + noise; metrics from the sums."""
    g = torch.Generator().manual_seed(1000 * seed + (noise_seed if noise_seed is not None else len(name)))
    target = torch.nn.functional.normalize(torch.randn(objects * 10, 4, generator=torch.Generator().manual_seed(7)),
                                           dim=1)
    mean = torch.nn.functional.normalize(torch.randn(objects * 10, 4, generator=torch.Generator().manual_seed(8)),
                                         dim=1).mean(0)  # the training targets' mean
    pred = skill * target + (1 - skill) * mean + 0.15 * torch.randn(target.shape, generator=g)
    ids = torch.arange(objects).repeat_interleave(10)
    entry = PO.regression(pred, target, mean, ids)
    values = {m: S.bootstrap([(entry, m)], draws=1).value for m in
              ("r2_pooled", "r2_uniform_varying", "geodesic_deg", "r2_pooled_mean_baseline",
               "r2_uniform_varying_mean_baseline")}
    metrics = {f"rotation/{part}/r2_pooled": values["r2_pooled"],
               f"rotation/{part}/r2_uniform_varying": values["r2_uniform_varying"],
               f"rotation/{part}/geodesic_deg": values["geodesic_deg"],
               "rotation/r2_pooled_mean_baseline": values["r2_pooled_mean_baseline"],
               "rotation/r2_uniform_varying_mean_baseline": values["r2_uniform_varying_mean_baseline"]}
    probes = {"rotation": {"status": "ok", "per_object": {part: entry}}}
    return probe_run(root, name, method, "default", metrics, seed=seed, probes=probes)
