"""seq-JEPA end to end: `ssl-eq pretrain` on native sequences and on image folders (augmentations as actions),
the image-dataset layouts, augmentation actions, and a 2-rank CPU DDP run that trains one model."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssl_eq.datasets import make_synthetic_dataset
from ssl_eq.datasets.images import cifar100, image_folder, tiny_imagenet
from ssl_eq.methods import build_method, compose_config, pretrain

TINY = ["method=seqjepa", "backbone=small_cnn", "backbone.widths=[8,16]", "data.image_size=32", "data.batch_size=4",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "checkpoint.last_every_n_steps=1", "checkpoint.every_n_steps=100",
        "method.action_emb_dim=8", "method.predictor_hidden=16", "method.online_equiprobe_hidden=[16]"]
AUG = ["augment=seqjepa_aug", "method.action=aug", "data.format=image_folder"]


@pytest.fixture(scope="module")
def native_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_objects=16, views=4, size=32)


def write_image_folder(root: Path, per_class: int = 4, classes: int = 2, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size + 3 * i, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_pretrain_on_native_sequences_with_validation(native_root, tmp_path):
    run = tmp_path / "run"
    summary = pretrain(compose_config([*TINY, f"data.root={native_root}", f"run_dir={run}", "trainer.max_steps=3"]))
    assert summary["status"] == "completed" and summary["global_step"] == 3
    metrics = summary["metrics"]
    assert {"train/prediction", "val/loss", "val/online/cls_top1", "val/online/rotation_r2"} <= set(metrics)
    assert 0 <= metrics["val/loss"] <= 2


def test_pretrain_on_image_folder_with_augmentations_as_actions(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    summary = pretrain(compose_config([*TINY, *AUG, f"data.root={root}", f"run_dir={tmp_path / 'run'}",
                                       "trainer.max_steps=2", "method.seq_len=2"]))
    assert summary["status"] == "completed" and summary["global_step"] == 2
    assert "val/online/cls_top1" in summary["metrics"]
    with pytest.raises(ValueError, match=r"method.action='rot' needs latents \['rot_x', 'rot_y', 'rot_z'\].*"
                                         r"valid action types for it: \['aug'\]"):
        pretrain(compose_config([*TINY, "data.format=image_folder", f"data.root={root}",
                                 f"run_dir={tmp_path / 'bad'}"]))


def test_seq_len_larger_than_views_is_refused(native_root, tmp_path):
    with pytest.raises(ValueError, match=r"sequence items need 5 views but the dataset has 4 per object.*"
                                         r"valid M for seq-JEPA is 1..3"):
        pretrain(compose_config([*TINY, f"data.root={native_root}", f"run_dir={tmp_path}", "method.seq_len=4"]))


def test_image_dataset_layouts_and_errors(tmp_path):
    src = image_folder(write_image_folder(tmp_path / "folder"), 24)
    assert src.class_names == ["class0", "class1"] and len(src.split_indices("val")) == 8
    imgs = src.read_views(src.split_indices("train")[:3], [0, 0, 0])
    assert imgs.shape == (3, 3, 24, 24) and imgs.dtype == torch.uint8
    with pytest.raises(FileNotFoundError, match=r"data.root \(data.format=image_folder\): expected .*nowhere"):
        image_folder(tmp_path / "nowhere", 24)
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty/train: no images .* in class sub-folders"):
        image_folder(tmp_path / "empty", 24)

    base = tmp_path / "cifar" / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 4)):
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n))}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    c = cifar100(tmp_path / "cifar")
    assert len(c) == 10 and c.image_size == 32 and len(c.class_names) == 100
    assert torch.equal(c.read_views(np.array([7]), [0])[0].flatten(),
                       torch.from_numpy(pickle.load(open(base / "test", "rb"))["data"][1]))
    assert list(c.labels[c.split_indices("val")]) == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        cifar100(tmp_path)

    tin = tmp_path / "tin"
    (tin / "val" / "images").mkdir(parents=True)
    (tin / "wnids.txt").write_text("n01\nn02\n")
    for w in ("n01", "n02"):
        (tin / "train" / w / "images").mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tin / "train" / w / "images" / f"{w}_0.JPEG")
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tin / "val" / "images" / "val_0.JPEG")
    (tin / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t10\t10\n")
    t = tiny_imagenet(tin)
    assert t.class_names == ["n01", "n02"] and list(t.labels) == [0, 1, 1] and t.image_size == 64
    assert t.read_views(t.split_indices("val"), [0]).float().mean() > 190


def test_augmentation_vectors_are_the_applied_parameters_and_actions_their_scaled_differences():
    cfg = compose_config([*TINY, *AUG, "data.root=unused", "data.num_classes=2", "data.latent_schema=[]"])
    model = build_method(OmegaConf.to_container(cfg, resolve=True))
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 3, 48, 48), dtype=torch.uint8).expand(-1, 4, -1, -1, -1)
    views, vec = model.augment_views(images)
    assert views.shape == (3, 4, 3, 32, 32) and vec.shape == (3, 4, 9)
    obs = model.augment(images[:, :3].flatten(0, 1), params=model.augment.sequential._params)
    # re-applying the recorded Kornia parameters reproduces the observed views; the vector is read from them
    assert torch.allclose((obs.images.unflatten(0, (3, 3)) - model.mean[None]) / model.std[None], views[:, :3], atol=1e-5)
    crop = model.augment.sequential._params[0].data["src"]  # (N, 4, 2) pixel corners in the resized image
    x0, y0 = crop[:, 0, 0], crop[:, 0, 1]
    h = crop[:, 2, 1] - y0 + 1
    flat = vec[:, :3].flatten(0, 1)
    assert torch.allclose(flat[:, 0], y0 / 32) and torch.allclose(flat[:, 1], x0 / 32)
    assert torch.allclose(flat[:, 2], h / 32)
    jitter = model.augment.sequential._params[2].data
    applied = jitter["batch_prob"] > 0.5
    assert torch.allclose(flat[applied, 4], (jitter["brightness_factor"][applied] - 1) / 0.4)
    assert torch.allclose(flat[applied, 7], jitter["hue_factor"][applied] / 0.1)
    assert torch.all(flat[~applied, 4:8] == 0)
    assert torch.allclose(flat[:, 8], model.augment.sequential._params[4].data["sigma"] / 2.0)  # blur p = 1
    assert vec.abs().max() <= 1 + 1e-6
    actions = model.actions({"aug_action": vec})
    assert actions.shape == (3, 3, 9) and torch.allclose(actions, vec[:, 1:] - vec[:, :-1])


DDP_SCRIPT = """
import sys, torch
from ssl_eq.methods import compose_config, pretrain
from ssl_eq.methods.seqjepa import SeqJEPA
def dump(self):
    torch.save({k: v.detach().clone() for k, v in self.named_parameters()},
               f"{sys.argv[1]}/rank{self.global_rank}.pt")
SeqJEPA.on_train_end = dump
pretrain(compose_config(sys.argv[2:]))
"""


def test_ddp_two_cpu_ranks_train_one_model(native_root, tmp_path):
    """Both ranks hold identical parameters (online, EMA target, probes) after 2 steps, and the encoder moved.
    (BatchNorm running statistics are buffers: DDP broadcasts rank 0's at each forward, SyncBN syncs them on CUDA.)"""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    overrides = [*TINY, f"data.root={native_root}", f"run_dir={tmp_path / 'run'}", "trainer.max_steps=2",
                 "trainer.devices=2", "trainer.strategy=ddp", "trainer.limit_val_batches=0", "backbone.norm=group"]
    done = subprocess.run([sys.executable, str(script), str(tmp_path), *overrides], capture_output=True, text=True,
                          timeout=240, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert set(a) == set(b) and any(k.startswith("backbone_target.") for k in a)
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), rtol=1e-4, atol=1e-6), name
    init = build_method(OmegaConf.to_container(compose_config(overrides[:-4] + ["backbone.norm=group",
                                                                               "data.num_classes=2"]), resolve=True))
    assert not torch.allclose(a["backbone.features.0.weight"], init.state_dict()["backbone.features.0.weight"])
    assert not torch.allclose(a["backbone_target.features.0.weight"], init.state_dict()["backbone.features.0.weight"])


def test_probe_a_tiny_seqjepa_run(native_root, tmp_path):
    """`ssl-eq probe` on a seq-JEPA checkpoint: z_AGG over M_val = 1, 3, 4 (trained with M = 2), single-view
    classification, pair rotation / colour, individual-view rotation; M_val beyond the views is reported."""
    from ssl_eq.probes.runner import load_probe_config, run_probes

    run = tmp_path / "run"
    pretrain(compose_config([*TINY, f"data.root={native_root}", f"run_dir={run}", "trainer.max_steps=2",
                             "method.seq_len=2", "method.action=rotcolor"]))
    cfg = load_probe_config(epochs=1)
    cfg["probes"]["agg_linear"]["m_val"] = [1, 3, 5]
    path = tmp_path / "probe.yaml"
    OmegaConf.save(cfg, path)
    report = run_probes(run, probes="agg_linear,linear,rotation,colour,view_rotation", config=path)
    agg = report["probes"]["agg_linear"]                     # M_val 5 > 4 views: the largest the data allows, noted
    assert agg["status"] == "ok" and "agg_linear/agg_m5/top1" not in report["metrics"]
    assert "the dataset has 4 views per object, so M_val [1, 3, 4] (the largest it allows)" in agg["notes"][0]
    m = report["metrics"]
    assert {"agg_linear/agg_m1/top1", "agg_linear/agg_m3/top1", "linear/full/top1", "rotation/full/r2_uniform",
            "colour/full/r2_uniform", "view_rotation/full/r2_uniform"} <= set(m)
    assert all(0 <= m[f"agg_linear/agg_m{k}/top1"] <= 100 for k in (1, 3, 4))
    from ssl_eq.reports.report import write_report

    md = write_report([run], tmp_path / "report")["md"].read_text()
    assert "probe: agg_linear" in md and "agg_m3/top1" in md and "seqjepa" in md
