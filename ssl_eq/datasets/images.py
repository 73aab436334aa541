"""Single-image datasets read from disk as it is (no download): an ImageFolder tree, CIFAR-100 in
torchvision's on-disk layout, TinyImageNet's layout.

Each is a view *source* (see `ssl_eq.datasets.views`) with one view per object and no latents, so a pair or a
sequence of an image is the image repeated (`RepeatedViewDataset`) and its views differ only by the
on-device augmentation, whose recorded parameters are the actions (seq-JEPA's augmentations as actions).

Layouts (listing and parsing are torchvision's `find_classes` / `make_dataset` and `CIFAR100`):
- image_folder:  ROOT/<split>/<class>/**/<image>.{jpg,jpeg,png,bmp,webp}; splits "train" and "val"; images are
  resized to `image_size` when read (classes: the sorted sub-folders of ROOT/train).
- cifar100:      ROOT/cifar-100-python/{train,test,meta} (torchvision's pickles, read without its md5 check, so a
  subset works); split "val" is "test"; 32 px.
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
from torchvision.datasets import CIFAR100
from torchvision.datasets.folder import find_classes, make_dataset
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
            try:
                img = decode_image(str(files[i]), mode=ImageReadMode.RGB)
            except RuntimeError as e:
                raise ValueError(f"{files[i]}: not a readable image ({str(e).splitlines()[0]}); delete or replace "
                                 f"the file") from e
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
    train = _require(root / "train", "image_folder train split")
    try:
        classes, class_to_idx = find_classes(train)
    except FileNotFoundError:
        classes, class_to_idx = [], {}
    split_files = {split: [(Path(f), c) for f, c in make_dataset(root / split, class_to_idx, IMAGE_EXTENSIONS,
                                                                  allow_empty=True)]
                   for split in SPLITS if (root / split).is_dir() and classes}
    if not split_files.get("train"):
        raise ValueError(f"{train}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders "
                         f"<class>/<image>; found classes {classes}")
    return _from_files(root, int(image_size), classes, split_files)


class _LocalCIFAR100(CIFAR100):
    """torchvision's CIFAR-100 reader on the files as they are: no download, no md5 check (md5 None: subsets work;
    a file that does not parse is named by `cifar100`)."""

    train_list = [["train", None]]
    test_list = [["test", None]]
    meta = {**CIFAR100.meta, "md5": None}


def cifar100(root: str | Path, image_size: int | None = None) -> ImageSource:
    base = _require(Path(root) / "cifar-100-python", "data.root (data.format=cifar100, torchvision layout)")
    for name in ("train", "test", "meta"):
        _require(base / name, "CIFAR-100 file")
    parts = {}
    for split, train in (("train", True), ("val", False)):
        try:
            parts[split] = _LocalCIFAR100(str(root), train=train)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"{_bad_cifar_file(base)}: not a CIFAR-100 python pickle ({type(e).__name__}: {e}); "
                             f"replace it with the file of cifar-100-python.tar.gz") from e
    images = np.concatenate([p.data for p in parts.values()]).transpose(0, 3, 1, 2)  # (N, 32, 32, 3) -> NCHW
    labels = np.concatenate([np.asarray(p.targets) for p in parts.values()])
    n_train = len(parts["train"].targets)
    splits = {"train": np.arange(n_train), "val": np.arange(n_train, len(labels))}
    data = torch.from_numpy(np.ascontiguousarray(images))
    return ImageSource(Path(root), 32, parts["train"].classes, labels, splits,
                       lambda objs: data[torch.from_numpy(objs)])


def _bad_cifar_file(base: Path) -> Path:
    """The first of base/{train,test,meta} that is not a pickle of the keys torchvision reads (else the folder)."""
    keys = {"train": ("data", "fine_labels"), "test": ("data", "fine_labels"), "meta": ("fine_label_names",)}
    for name, need in keys.items():
        try:
            with open(base / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")  # as torchvision reads it
            if not all(k in entry for k in need) or ("data" in need and np.asarray(entry["data"]).size
                                                     != 3072 * len(entry["fine_labels"])):
                return base / name
        except Exception:  # noqa: BLE001 - any failure to read it names this file
            return base / name
    return base


def tiny_imagenet(root: str | Path, image_size: int | None = None) -> ImageSource:
    root = _require(Path(root), "data.root (data.format=tiny_imagenet)")
    wnids_file = _require(root / "wnids.txt", "TinyImageNet class list")
    wnids = wnids_file.read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train = [(f, index[w]) for w in wnids for f in sorted((root / "train" / w / "images").glob("*.JPEG"))]
    annotations = _require(root / "val" / "val_annotations.txt", "TinyImageNet val labels")
    val = []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{annotations} line {number}: expected tab-separated <file> <wnid> <box>, got {line!r}")
        if fields[1] not in index:
            raise ValueError(f"{annotations} line {number}: wnid {fields[1]!r} is not one of the {len(wnids)} in "
                             f"{wnids_file}; add it there or drop the line")
        val.append((root / "val" / "images" / fields[0], index[fields[1]]))
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
