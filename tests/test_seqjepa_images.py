"""seq-JEPA on image datasets (method.action=aug): `ssl-eq probe` classifies the original images, aggregates
z_AGG over M_val augmented views and regresses the augmentation parameters per group; `ssl-eq report` shows them."""
from __future__ import annotations

import json

import pytest
import torch

from ssl_eq.cli import main
from ssl_eq.probes.images import AUG_GROUPS, scaled_params
from test_seqjepa_train import AUG, TINY, write_image_folder


@pytest.fixture(scope="module")
def aug_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqjepa_images")
    data = write_image_folder(root / "imgs", per_class=6, classes=2, size=36)
    run = root / "run"
    assert main(["pretrain", *TINY, *AUG, f"data.root={data}", f"run_dir={run}", "trainer.max_steps=20",
                 "method.seq_len=2", "trainer.limit_val_batches=0"]) == 0
    return root, run


def test_probe_on_an_aug_run_writes_classification_agg_and_augmentation_results(aug_run, capsys):
    root, run = aug_run
    assert main(["probe", str(run), "--probes", "linear,agg_linear,aug_params,rotation", "--epochs", "2"]) == 0
    assert "augmented views per image" in capsys.readouterr().out
    report = json.loads((run / "probe" / "probe.json").read_text())
    probes = report["probes"]
    assert {n: probes[n]["status"] for n in ("linear", "agg_linear", "aug_params")} == dict.fromkeys(
        ("linear", "agg_linear", "aug_params"), "ok"), probes
    assert probes["rotation"]["status"] == "skipped"          # image datasets have no latents
    metrics = report["metrics"]
    assert {"linear/full/top1", "agg_linear/agg_m1/top1", "agg_linear/agg_m3/top1", "agg_linear/agg_m5/top1",
            *(f"aug_params/{g}/r2_uniform" for g in AUG_GROUPS)} <= set(metrics)
    assert 0 <= metrics["agg_linear/agg_m3/top1"] <= 100 and report["dataset"]["objects"] == {"train": 12, "val": 12}
    aug = torch.load(run / "probe" / "features_aug_val.pt", weights_only=True)["features"]
    assert aug["aug/rep"].shape[:2] == (12, 5) and aug["aug/params"].shape == (12, 5, 9)
    assert not torch.equal(aug["aug/rep"][:, 0], aug["aug/rep"][:, 1])   # the views are different augmentations
    assert main(["report", str(run), "--out", str(root / "report")]) == 0
    md = (root / "report" / "report.md").read_text()
    assert "agg_m3" in md and "crop" in md and "blur" in md and "top1" in md


def test_reference_scaling_is_jitter_factors_l2_normalised_over_views():
    names = ["crop_y0", "crop_x0", "crop_h", "crop_w", "brightness", "contrast", "saturation", "hue", "blur_sigma"]
    raw = torch.rand(3, 4, 9)
    raw[:, :, 4:8] -= 0.5                                    # jitter offsets (0 = not applied)
    scale = torch.tensor([1, 1, 1, 1, 0.4, 0.4, 0.2, 0.1, 2.0])
    assert torch.equal(scaled_params(raw, names, scale, "toolkit"), raw / scale)
    ref = scaled_params(raw, names, scale, "reference", views=3)
    factors = raw[:, :3].clone()
    factors[..., 4:7] += 1                                   # the reference records brightness / contrast / saturation factors
    assert ref.shape == (3, 3, 9)
    assert torch.allclose(ref, factors / factors.norm(dim=1, keepdim=True))
    assert torch.allclose(ref.norm(dim=1), torch.ones(3, 9))  # per image and parameter, over its views
    with pytest.raises(ValueError, match="probes.aug_params.scaling"):
        scaled_params(raw, names, scale, "l2")
