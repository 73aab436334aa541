"""Image datasets read through torchvision (folder listing, CIFAR-100 pickles) give the files, labels and pixels of
the layouts, and bad files are named in one line (issue 24's messages)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_eq.datasets.images import cifar100, image_folder, tiny_imagenet


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, classes in (("train", ("b", "a", "c")), ("val", ("a", "b"))):  # no "c" in val
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    (root / "train" / "a" / "notes.txt").write_text("not an image")  # other extensions are not listed
    (root / "train" / "a" / "3.JPG").write_bytes((root / "train" / "a" / "0.png").read_bytes())  # extension case
    return root


def test_image_folder_lists_classes_and_files_in_sorted_order(tmp_path):
    src = image_folder(_folder(tmp_path / "f"), 16)
    assert src.class_names == ["a", "b", "c"]
    train, val = src.split_indices("train"), src.split_indices("val")
    assert src.labels[train].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert src.labels[val].tolist() == [0, 0, 0, 1, 1, 1]
    pixels = src.read_views(train[:1], [0])[0]
    ref = torch.from_numpy(np.array(Image.open(tmp_path / "f" / "train" / "a" / "0.png"))).permute(2, 0, 1)
    resized = torch.nn.functional.interpolate(ref[None].float(), size=(16, 16), mode="bilinear", antialias=True,
                                              align_corners=False)[0].round().to(torch.uint8)
    assert torch.equal(pixels, resized)


def test_a_fake_image_is_named_when_read(tmp_path):
    root = _folder(tmp_path / "f")
    fake = root / "train" / "b" / "1.png"
    fake.write_text("<html>not a png</html>")
    src = image_folder(root, 16)
    with pytest.raises(ValueError, match=rf"^{fake}: not a readable image \(.*\); delete or replace the file$"):
        src.read_views(src.split_indices("train"), np.zeros(10))


def _cifar(root: Path) -> Path:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", 5), ("test", 3)):
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": [(7 * i) % 100 for i in range(n)]}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)
    return root


def test_cifar100_rows_are_the_pickled_planes(tmp_path):
    root = _cifar(tmp_path)
    src = cifar100(root)
    rows = {n: pickle.load(open(root / "cifar-100-python" / n, "rb")) for n in ("train", "test")}
    expected = np.concatenate([rows["train"]["data"], rows["test"]["data"]]).reshape(-1, 3, 32, 32)
    assert torch.equal(src.read_views(np.arange(8), np.zeros(8)), torch.from_numpy(expected))
    assert src.labels.tolist() == rows["train"]["fine_labels"] + rows["test"]["fine_labels"]
    assert src.split_indices("val").tolist() == [5, 6, 7] and src.class_names[:2] == ["class0", "class1"]


@pytest.mark.parametrize("name, content", [("test", b"\x80\x04truncated"), ("meta", b""),
                                           ("train", pickle.dumps({"data": np.zeros((2, 100), np.uint8),
                                                                   "fine_labels": [0, 1]}))])
def test_a_corrupt_cifar100_file_is_named(tmp_path, name, content):
    root = _cifar(tmp_path)
    (root / "cifar-100-python" / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{root / 'cifar-100-python' / name}: not a CIFAR-100 python pickle "
                                         rf"\(.*\); replace it with the file of cifar-100-python.tar.gz$"):
        cifar100(root)


def test_tiny_imagenet_unknown_wnid_names_the_line(tmp_path):
    tin = tmp_path / "tin"
    (tin / "val" / "images").mkdir(parents=True)
    (tin / "wnids.txt").write_text("n01\nn02\n")
    (tin / "train" / "n01" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tin / "train" / "n01" / "images" / "a.JPEG")
    (tin / "val" / "val_annotations.txt").write_text("v0.JPEG\tn01\t0\t0\t9\t9\nv1.JPEG\tn99\t0\t0\t9\t9\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt line 2: wnid 'n99' is not one of the 2 in .*wnids.txt"):
        tiny_imagenet(tin)
    (tin / "val" / "val_annotations.txt").write_text("v0.JPEG n01\n")
    with pytest.raises(ValueError, match=r"line 1: expected tab-separated <file> <wnid> <box>"):
        tiny_imagenet(tin)


@pytest.mark.parametrize("method, option", [("augself", "method.target=rotation"),
                                            ("equimod", "method.action=rotation")])
def test_rotation_targets_on_an_image_folder_name_the_option(tmp_path, capsys, method, option):
    from ssl_eq.cli import main
    run = tmp_path / "run"
    code = main(["pretrain", f"method={method}", option, "backbone=small_cnn", "backbone.widths=[8,16]",
                 "data.image_size=16", "data.batch_size=2", "data.num_workers=0", "trainer.accelerator=cpu",
                 "trainer.max_steps=1", "data.format=image_folder", f"data.root={_folder(tmp_path / 'f')}",
                 f"run_dir={run}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and f"lacks ['rel_rotation_quat'], needed by method '{method}' with {option}" in err
    assert not (run / "config.yaml").exists()  # refused before anything is written
