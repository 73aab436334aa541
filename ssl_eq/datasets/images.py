"""Single-image datasets read from disk as it is (no download): an ImageFolder tree, CIFAR-100 in
torchvision's on-disk layout, TinyImageNet's layout.

Each is a view *source* (see `ssl_eq.datasets.views`) with one view per object and no latents, so a pair or a
sequence of an image is the image repeated (`RepeatedViewDataset`) and its views differ only by the
on-device augmentation, whose recorded parameters are the actions (seq-JEPA's augmentations as actions).

Layouts:
- image_folder:  ROOT/<split>/<class>/<image>.{jpg,jpeg,png,bmp,webp}; splits "train" and "val"; images are
  resized to `image_size` when read (classes: the sorted sub-folders of ROOT/train).
- cifar100:      ROOT/cifar-100-python/{train,test,meta} (torchvision's pickles); split "val" is "test"; 32 px.
- tiny_imagenet: ROOT/wnids.txt, ROOT/train/<wnid>/images/*.JPEG, ROOT/val/images/*.JPEG with
  ROOT/val/val_annotations.txt (file, wnid, box); 64 px.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from ssl_eq.datasets.views import Index, ItemBatch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: expected {path}, which does not exist (no download: put the data there)")
    return path


class ImageSource:
    """A split image dataset: `labels` (N,), `split_indices`, `read_views` -> uint8 (n, 3, S, S), no latents."""

    views = 1
    latent_schema: list[str] = []
    variant = None

    def __init__(self, root: Path, image_size: int, class_names: list[str], labels: np.ndarray,
                 splits: dict[str, np.ndarray], read: Callable[[np.ndarray], torch.Tensor]):
        self.root, self.image_size, self.class_names = root, int(image_size), class_names
        self.labels, self._splits, self._read = labels.astype(np.int64), splits, read
        self.manifest: dict[str, Any] = {"created": None}

    def __len__(self) -> int:
        return len(self.labels)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in self._splits:
            raise ValueError(f"{self.root}: unknown split {split!r}; valid: {sorted(self._splits)}")
        return self._splits[split]

    def read_views(self, objs: Sequence[int] | np.ndarray, view_idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        """(n,) objects (view indices are all 0) -> uint8 (n, 3, S, S)."""
        return self._read(np.asarray(objs, dtype=np.int64))

    def read_latents(self, obj: int | np.ndarray, view_idx: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.zeros((len(np.atleast_1d(view_idx)), 0), dtype=np.float32)


def _file_reader(files: list[Path], size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """Objects -> uint8 (n, 3, size, size): each file decoded as RGB and resized (antialiased bilinear)."""
    def read(objs: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(objs), 3, size, size, dtype=torch.uint8)
        for row, i in enumerate(objs):  # decoding is per file: images differ in size
            img = decode_image(str(files[i]), mode=ImageReadMode.RGB)
            if img.shape[-2:] != (size, size):
                img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            out[row] = img
        return out
    return read


def _from_files(root: Path, size: int, class_names: list[str], split_files: dict[str, list[tuple[Path, int]]]
                ) -> ImageSource:
    files, labels, splits = [], [], {}
    for split, items in split_files.items():
        splits[split] = np.arange(len(files), len(files) + len(items), dtype=np.int64)
        files += [f for f, _ in items]
        labels += [c for _, c in items]
    return ImageSource(root, size, class_names, np.array(labels, dtype=np.int64), splits, _file_reader(files, size))


def image_folder(root: str | Path, image_size: int | None) -> ImageSource:
    root = _require(Path(root), "data.root (data.format=image_folder)")
    if not image_size:
        raise ValueError("data.image_size is required for data.format=image_folder (images are resized to it)")
    classes = sorted(d.name for d in _require(root / "train", "image_folder train split").iterdir() if d.is_dir())
    split_files = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        split_files[split] = [(f, c) for c, name in enumerate(classes) if (root / split / name).is_dir()
                              for f in sorted((root / split / name).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not split_files["train"]:
        raise ValueError(f"{root / 'train'}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders "
                         f"<class>/<image>; found classes {classes}")
    return _from_files(root, int(image_size), classes, split_files)


def cifar100(root: str | Path, image_size: int | None = None) -> ImageSource:
    base = _require(Path(root) / "cifar-100-python", "data.root (data.format=cifar100, torchvision layout)")

    def load(name: str) -> dict[bytes, Any]:
        with open(_require(base / name, "CIFAR-100 file"), "rb") as f:
            return pickle.load(f, encoding="bytes")

    parts = {split: load(name) for split, name in (("train", "train"), ("val", "test"))}
    images = np.concatenate([p[b"data"] for p in parts.values()]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(p[b"fine_labels"]) for p in parts.values()])
    n_train = len(parts["train"][b"fine_labels"])
    splits = {"train": np.arange(n_train), "val": np.arange(n_train, len(labels))}
    names = [n.decode() for n in load("meta")[b"fine_label_names"]]
    data = torch.from_numpy(np.ascontiguousarray(images))
    return ImageSource(Path(root), 32, names, labels, splits, lambda objs: data[torch.from_numpy(objs)])


def tiny_imagenet(root: str | Path, image_size: int | None = None) -> ImageSource:
    root = _require(Path(root), "data.root (data.format=tiny_imagenet)")
    wnids = _require(root / "wnids.txt", "TinyImageNet class list").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train = [(f, index[w]) for w in wnids for f in sorted((root / "train" / w / "images").glob("*.JPEG"))]
    rows = [line.split("\t") for line in
            _require(root / "val" / "val_annotations.txt", "TinyImageNet val labels").read_text().splitlines() if line]
    val = [(root / "val" / "images" / r[0], index[r[1]]) for r in rows]
    if not train:
        raise ValueError(f"{root / 'train'}: no images at <wnid>/images/*.JPEG for the {len(wnids)} wnids")
    return _from_files(root, 64, wnids, {"train": train, "val": val})


# data.format -> source factory (root, image_size); "native" is `NativeDataset` (see the datamodule)
IMAGE_FORMATS: dict[str, Callable[[str | Path, int | None], ImageSource]] = {
    "image_folder": image_folder,
    "cifar100": cifar100,
    "tiny_imagenet": tiny_imagenet,
}


class RepeatedViewDataset(Dataset):
    """One item per image of `split`: the image repeated `num_views` times (views differ only by on-device
    augmentation). Item: images uint8 (M, 3, H, W), label, object_index."""

    def __init__(self, source: Any, split: str | None = "train", num_views: int = 2):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.source, self.split, self.num_views = source, split, num_views
        self.objects = np.arange(len(source)) if split is None else source.split_indices(split)

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, index: Index) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[Index]) -> ItemBatch:
        objs = self.objects[np.array([i[1] if isinstance(i, tuple) else i for i in indices], dtype=np.int64)]
        images = self.source.read_views(objs, np.zeros_like(objs))
        return ItemBatch({
            "images": images[:, None].expand(-1, self.num_views, -1, -1, -1).contiguous(),
            "label": torch.from_numpy(self.source.labels[objs]),
            "object_index": torch.from_numpy(objs),
        })
