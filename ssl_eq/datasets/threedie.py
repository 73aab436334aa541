"""The original 3DIEBench / 3DIEBench-T on-disk layout (docs/scene.md): read it directly, export to it, import it.

Layout: ROOT/<synset>/<object_id>/image_<k>.jpg + latent_<k>.npy (float64 (7,) or (10,)), and split files
train_images.npy / val_images.npy ("/<synset>/<object_id>" strings) with train_labels.npy / val_labels.npy.

Channel order. The original generator passed Blender's RGB render to `cv2.imwrite`, which expects BGR, so
the JPEG files hold the render with red and blue swapped: a red floor is stored blue, and PIL (or any RGB
reader, like the reference loader) sees the swapped colours, while `cv2.imread` sees the render's colours.
`channel_order` says how a folder's files relate to the render: "bgr" (default: what the original dataset
holds) or "rgb" (files hold the render's colours). Reading / importing with "bgr" swaps back, so native
datasets and `ThreeDIEBenchFolder` always give the render's colours (matching the floor / spot hue latents);
exporting with "bgr" writes what the original dataset contains, so code written for it sees the same thing.
Importing with encoding "jpeg" keeps the original files byte for byte (no second compression loss): the shards
record the files' channel order and the native reader swaps at decode time.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ssl_eq.datasets.native import (DEFAULT_JPEG_QUALITY, LATENT_SCHEMAS, SHARD_META, SPLITS,
                                    NativeDataset, batch_tensor, is_shard_complete, remove_damaged_shard, shard_dir,
                                    shard_name, write_manifest, write_shard)
from ssl_eq.utils.lock import folder_entries, folder_lock
from ssl_eq.utils.io import atomic_path, read_json, read_json_object, write_json_atomic, write_npy_atomic

# channel order of the files relative to the render -> function mapping (…, 3) between the two (an involution)
CHANNEL_ORDERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bgr": lambda a: a[..., ::-1],
    "rgb": lambda a: a,
}
DEFAULT_CHANNEL_ORDER = "bgr"
VARIANT_BY_DIM = {len(names): variant for variant, names in LATENT_SCHEMAS.items()}
DEFAULT_OBJECTS_PER_SHARD = 256
VIEW_PROBE_OBJECTS = 16  # views per object = most files found in the first objects (one may be damaged)
IMPORT_CONFIG = "render_config.json"  # the contract's config file, here recording the import options
EXPORT_RECORD = ".ssl_eq_export.json"  # in an export folder: which dataset / options it holds (resume, refuse)
EXPORTED_FILE = re.compile(r"(image_\d+\.jpg|latent_\d+\.npy|\.(image_\d+\.jpg|latent_\d+\.npy)\..*\.tmp)")


def image_file(obj_dir: Path, k: int) -> Path:
    return obj_dir / f"image_{k}.jpg"


def latent_file(obj_dir: Path, k: int) -> Path:
    return obj_dir / f"latent_{k}.npy"


def _split_files(root: Path, split: str) -> tuple[Path, Path]:
    return root / f"{split}_images.npy", root / f"{split}_labels.npy"


def _file_error(cls: type[Exception], path: Path, message: str) -> Exception:
    """An exception whose message names `path` and whose `.path` attribute holds it (for skip reports)."""
    err = cls(message)
    err.path = str(path)  # type: ignore[attr-defined]
    return err


def read_file(path: Path) -> bytes:
    """One view file's bytes; a missing file raises FileNotFoundError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _file_error(FileNotFoundError, path, f"missing image file {path}") from None


def decode_image(data: bytes, path: Path, channel_order: str) -> np.ndarray:
    """The bytes of view file `path` -> uint8 (H, W, 3) in the render's channel order; errors name the file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except OSError as e:  # PIL: truncated / not an image
        raise _file_error(ValueError, path, f"{path}: not a complete JPEG image ({e})") from e
    return np.ascontiguousarray(CHANNEL_ORDERS[channel_order](arr))


def read_image(path: Path, channel_order: str) -> np.ndarray:
    """One view file -> uint8 (H, W, 3) in the render's channel order; errors name the file."""
    return decode_image(read_file(path), path, channel_order)


def read_latent(path: Path, dim: int) -> np.ndarray:
    """One latent file -> float64 (dim,); errors name the file and the expected length."""
    if not path.is_file():
        raise _file_error(FileNotFoundError, path, f"missing latent file {path}")
    try:
        lat = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise _file_error(ValueError, path, f"{path}: not a valid .npy latent ({e})") from e
    if lat.shape != (dim,):
        raise _file_error(ValueError, path, f"{path}: expected a latent of shape ({dim},) "
                          f"({VARIANT_BY_DIM.get(dim)}), got shape {lat.shape}")
    return lat.astype(np.float64)


def _layout(obj_dirs: Sequence[Path], channel_order: str) -> tuple[str, int]:
    """(variant, image size) from view 0 of the first object in `obj_dirs` that reads; a damaged object is
    skipped (the import lists it) and only a folder where none reads is refused, naming the first one's file."""
    first_error: Exception | None = None
    for d in obj_dirs:
        try:
            dim = np.load(latent_file(d, 0), allow_pickle=False).shape
            if len(dim) != 1 or dim[0] not in VARIANT_BY_DIM:
                raise ValueError(f"{latent_file(d, 0)}: expected a latent of shape (7,) (3diebench) or (10,) "
                                 f"(3diebench-t), got shape {dim}")
            return VARIANT_BY_DIM[dim[0]], read_image(image_file(d, 0), channel_order).shape[0]
        except (OSError, ValueError, EOFError) as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error


class ThreeDIEBenchFolder:
    """Reads the original layout directly, one PIL open + one np.load per view like the reference loader.

    A source for ViewDataset / PairDataset / SequenceDataset: objects are the train split then the val split.
    """

    def __init__(self, root: str | os.PathLike, channel_order: str = DEFAULT_CHANNEL_ORDER,
                 views: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a 3DIEBench folder: {self.root} does not exist or is not a directory")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {sorted(CHANNEL_ORDERS)}, got {channel_order!r}")
        self.channel_order = channel_order
        paths, labels, self._splits = [], [], {}
        for split in SPLITS:
            img_file, lab_file = _split_files(self.root, split)
            for f in (img_file, lab_file):
                if not f.is_file():
                    raise FileNotFoundError(f"missing split file {f}: a 3DIEBench folder holds "
                                            f"{', '.join(p.name for s in SPLITS for p in _split_files(self.root, s))}")
            p, lab = np.load(img_file, allow_pickle=False), np.load(lab_file, allow_pickle=False)
            if p.ndim != 1 or lab.shape != p.shape:
                raise ValueError(f"{lab_file}: expected one label per entry of {img_file.name} ({p.shape}), "
                                 f"got shape {lab.shape}")
            self._splits[split] = np.arange(len(paths), len(paths) + len(p), dtype=np.int64)
            paths += [str(x) for x in p]
            labels.append(lab.astype(np.int64))
        bad = [p for p in paths if len(p.strip("/").split("/")) != 2]
        if bad:
            raise ValueError(f"{self.root}: split entries must be '/<synset>/<object_id>', got e.g. {bad[:3]}")
        self.object_paths: list[str] = paths
        self.synset_of = [p.strip("/").split("/")[0] for p in paths]
        self.object_ids = [p.strip("/").split("/")[1] for p in paths]
        self.labels = np.concatenate(labels)
        if not paths:
            raise ValueError(f"{self.root}: the split files list no objects")
        first = self.object_dir(0)
        probe = [self.object_dir(o) for o in range(min(len(paths), VIEW_PROBE_OBJECTS))]
        self.views = views if views is not None else max(
            max(len(list(d.glob("image_*.jpg"))), len(list(d.glob("latent_*.npy")))) for d in probe)
        if self.views == 0:
            raise FileNotFoundError(f"no image_<k>.jpg files in {first} (first object of "
                                    f"{_split_files(self.root, SPLITS[0])[0].name})")
        self.variant, self.image_size = _layout(probe, channel_order)
        self.latent_schema = LATENT_SCHEMAS[self.variant]

    def __len__(self) -> int:
        return len(self.object_paths)

    def object_dir(self, obj: int) -> Path:
        return self.root / self.object_paths[obj].strip("/")

    def split_indices(self, split: str) -> np.ndarray:
        if split not in self._splits:
            raise KeyError(f"{self.root}: no split {split!r} (has {list(self._splits)})")
        return self._splits[split]

    def read_latents(self, obj: int | np.ndarray, view_idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Object index (scalar or (n,)) and (n,) view indices -> (n, D) float32 latents."""
        d = len(self.latent_schema)
        objs, views = np.broadcast_arrays(np.asarray(obj).reshape(-1), np.asarray(view_idx).reshape(-1))
        return np.stack([read_latent(latent_file(self.object_dir(int(o)), int(k)), d)
                         for o, k in zip(objs, views)]).astype(np.float32)

    def read_views(self, objs: Sequence[int] | np.ndarray, view_idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Parallel (n,) object / view indices -> uint8 (n, 3, H, W) in the render's colours."""
        objs, view_idx = np.broadcast_arrays(np.asarray(objs).reshape(-1), np.asarray(view_idx).reshape(-1))
        out = batch_tensor((len(objs), self.image_size, self.image_size, 3))
        dst = out.numpy()
        for i, (o, k) in enumerate(zip(objs.tolist(), view_idx.tolist())):
            path = image_file(self.object_dir(o), k)
            img = read_image(path, self.channel_order)
            if img.shape != dst.shape[1:]:
                raise ValueError(f"{path}: expected a {self.image_size}x{self.image_size} RGB image, got {img.shape}")
            dst[i] = img
        return out.permute(0, 3, 1, 2)  # (n, 3, H, W) in channels-last memory

    def load_object(self, obj: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """All views of `obj` -> (images uint8 (V, H, W, 3), latents float64 (V, D), the V image files' bytes);
        errors name the file."""
        d, obj_dir = len(self.latent_schema), self.object_dir(obj)
        paths = [image_file(obj_dir, k) for k in range(self.views)]
        files = [read_file(p) for p in paths]
        images = [decode_image(f, p, self.channel_order) for f, p in zip(files, paths)]
        shapes = {im.shape for im in images}
        if shapes != {(self.image_size, self.image_size, 3)}:
            raise _file_error(ValueError, obj_dir,
                              f"{obj_dir}: expected {self.image_size}x{self.image_size} RGB images, got {shapes}")
        return np.stack(images), np.stack([read_latent(latent_file(obj_dir, k), d) for k in range(self.views)]), files


def _pool_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int,
              initializer: Callable[..., None], initargs: tuple) -> Iterator[Any]:
    """Ordered map in `workers` processes (inline when workers <= 1), initializer run once per process."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(fn, items)
        return
    # spawn, not fork: a forked child of a process that already ran torch's OpenMP pool can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                             initargs=initargs) as ex:
        yield from ex.map(fn, items, chunksize=max(1, len(items) // (4 * workers)))


_WORKER: dict[str, Any] = {}  # per-process state of the pool workers


def _init_import(root: str, channel_order: str, views: int) -> None:
    _WORKER["folder"] = ThreeDIEBenchFolder(root, channel_order, views)


def _import_one(obj: int) -> tuple[np.ndarray, np.ndarray, list[bytes]] | dict[str, str]:
    folder: ThreeDIEBenchFolder = _WORKER["folder"]
    try:
        return folder.load_object(obj)
    except (OSError, ValueError) as e:
        path = getattr(e, "path", None) or str(folder.object_dir(obj))
        return {"object_id": folder.object_ids[obj], "path": path, "reason": str(e)}


def import_3diebench(root: str | os.PathLike, out: str | os.PathLike, *, channel_order: str = DEFAULT_CHANNEL_ORDER,
                     encoding: str = "jpeg", objects_per_shard: int = DEFAULT_OBJECTS_PER_SHARD, workers: int = 1,
                     progress: bool = True) -> Path:
    """Pack an original 3DIEBench(-T) folder into a native dataset at `out`; returns `out`.

    encoding "jpeg" stores the original files byte for byte (their channel order recorded, swapped back when
    read); "raw" stores the decoded views in the render's colours.
    Resumable: complete shards are kept; re-running with the same options continues (other options refuse).
    An object with a missing / unreadable / wrong-length file is skipped, reported, and listed in `skipped`.
    """
    from tqdm import tqdm

    folder = ThreeDIEBenchFolder(root, channel_order)
    out = Path(out)
    config = {"importer": "3diebench", "root": str(Path(root).resolve()), "channel_order": channel_order,
              "encoding": encoding, "objects_per_shard": objects_per_shard, "views": folder.views,
              "variant": folder.variant}
    cfg_path = out / IMPORT_CONFIG
    if cfg_path.is_file() and read_json_object(cfg_path, "import config") != config:
        raise ValueError(f"{cfg_path} records different import options ({read_json(cfg_path)}); "
                         f"use a new output folder to import with {config}")
    write_json_atomic(cfg_path, config)
    order = np.arange(len(folder))
    chunks = [order[i:i + objects_per_shard] for i in range(0, len(order), objects_per_shard)]
    bar = tqdm(total=len(order), desc="import-3diebench", unit="obj", disable=not progress)
    for s, objs in enumerate(chunks):
        for problem in remove_damaged_shard(out, s):
            bar.write(f"re-importing damaged {shard_name(s)}: {problem}")
        if is_shard_complete(out, s):
            bar.update(len(objs))
            continue
        images, latents, files, kept, skipped = [], [], [], [], []
        for obj, res in zip(objs, _pool_map(_import_one, list(objs), workers, _init_import,
                                            (str(folder.root), channel_order, folder.views))):
            if isinstance(res, dict):
                bar.write(f"skipping object {res['object_id']}: {res['reason']}")
                skipped.append(res)
            else:
                images.append(res[0])
                latents.append(res[1])
                files += res[2]
                kept.append(int(obj))
            bar.update(1)
        keep = {"jpeg_bytes": files, "channel_order": channel_order} if encoding == "jpeg" else {}  # original files
        empty = np.zeros((0, folder.views, folder.image_size, folder.image_size, 3), np.uint8)
        write_shard(out, s, images=np.stack(images) if images else empty,
                    latents=np.stack(latents).astype(np.float32) if latents
                    else np.zeros((0, folder.views, len(folder.latent_schema)), np.float32),
                    labels=folder.labels[kept], object_ids=[folder.object_ids[o] for o in kept],
                    encoding=encoding, extra={"skipped": skipped}, **keep)
    bar.close()
    return _write_import_manifest(folder, out, config, len(chunks))


def _write_import_manifest(folder: ThreeDIEBenchFolder, out: Path, config: dict[str, Any], n_shards: int) -> Path:
    shards, skipped = [], []
    for s in range(n_shards):
        meta = read_json(shard_dir(out, s) / SHARD_META)
        shards.append({"name": shard_name(s), "index": s, "num_objects": meta["num_objects"]})
        skipped += meta.get("skipped", [])
    synset_of_label: dict[int, str] = {}
    for label, synset in zip(folder.labels.tolist(), folder.synset_of):
        if synset_of_label.setdefault(label, synset) != synset:
            raise ValueError(f"{folder.root}: label {label} is used by synsets {synset_of_label[label]} and "
                             f"{synset}; expected one synset per label")
    n_classes = max(synset_of_label) + 1
    synsets = [synset_of_label.get(c, f"unused-{c}") for c in range(n_classes)]
    gone = {s["object_id"] for s in skipped}
    split = {name: [folder.object_ids[o] for o in folder.split_indices(name) if folder.object_ids[o] not in gone]
             for name in SPLITS}
    write_manifest(out, {
        "config": config, "source": {"name": "3diebench-folder", "root": config["root"]},
        "variant": folder.variant, "latent_schema": folder.latent_schema, "image_size": folder.image_size,
        "views": folder.views, "encoding": config["encoding"], "class_names": synsets, "synsets": synsets,
        "channel_order": config["channel_order"] if config["encoding"] == "jpeg" else "rgb",
        "num_objects": sum(s["num_objects"] for s in shards), "shards": shards, "split": split,
        "skipped": skipped,
    })
    return out


def _init_export(root: str, out: str, channel_order: str, quality: int) -> None:
    _WORKER.update(ds=NativeDataset(root), out=Path(out), channel_order=channel_order, quality=quality)


def _export_one(obj: int) -> None:
    ds: NativeDataset = _WORKER["ds"]
    obj_dir = _WORKER["out"] / object_path(ds, obj).strip("/")
    if latent_file(obj_dir, ds.views - 1).is_file():  # written last: the object is complete (resumed export)
        return
    obj_dir.mkdir(parents=True, exist_ok=True)
    images = CHANNEL_ORDERS[_WORKER["channel_order"]](ds.get_views(obj, np.arange(ds.views)))
    for k in range(ds.views):
        with atomic_path(image_file(obj_dir, k)) as tmp:
            Image.fromarray(np.ascontiguousarray(images[k])).save(tmp, format="JPEG", quality=_WORKER["quality"])
        write_npy_atomic(latent_file(obj_dir, k), ds.latents[obj, k].astype(np.float64))


def object_path(ds: NativeDataset, obj: int) -> str:
    """The original layout's "/<synset>/<object_id>" string of object `obj`."""
    return f"/{ds.synsets[int(ds.labels[obj])]}/{ds.object_ids[obj]}"


def _check_apart(source: Path, out: Path) -> None:
    """Refuse an export folder that is, holds or sits inside its source dataset (an overwrite would delete it)."""
    src, dst = source.resolve(), out.resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        where = "is" if src == dst else "is inside" if src in dst.parents else "holds"
        raise ValueError(f"export folder {out} {where} the source dataset {source}; export to a separate folder")


def _exported_files(out: Path) -> Iterator[Path]:
    """The files an export writes in `out` (split files, <synset>/<object>/image_k.jpg + latent_k.npy, temp files
    of a killed export and the record), and nothing else."""
    for split in SPLITS:
        yield from (f for f in _split_files(out, split) if f.is_file())
    for f in out.glob("*/*/*"):
        if f.is_file() and EXPORTED_FILE.fullmatch(f.name):
            yield f
    if (out / EXPORT_RECORD).is_file():
        yield out / EXPORT_RECORD


def _remove_export(out: Path) -> None:
    """Delete an earlier export from `out`: only the files it wrote, then the folders they leave empty."""
    for f in list(_exported_files(out)):
        f.unlink()
    for d in sorted({p for p in out.glob("*/*") if p.is_dir()} | {p for p in out.glob("*") if p.is_dir()},
                    key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _prepare_export(out: Path, record: dict[str, Any], overwrite: bool) -> bool:
    """Claim export folder `out` for `record` -> True when it already holds this export complete.

    A non-empty folder holding anything else is refused; `overwrite` replaces an earlier export (one with an
    export record) by deleting only the files that export wrote. Other files are never deleted; the same
    export is resumed.
    """
    marker = out / EXPORT_RECORD
    if out.is_dir() and folder_entries(out):
        old = read_json(marker, "export record") if marker.is_file() else None
        if old == record:
            return all(f.is_file() for split in SPLITS for f in _split_files(out, split))
        if not isinstance(old, dict):
            raise FileExistsError(f"export folder {out} is not empty and holds no {EXPORT_RECORD} (not an earlier "
                                  f"export), so nothing in it is replaced{' even with --overwrite' * overwrite}; "
                                  f"use an empty folder")
        if not overwrite:
            raise FileExistsError(f"export folder {out} is not empty and holds an export of {old.get('dataset')}, "
                                  f"not this export of {record['dataset']} ({record['channel_order']}, quality "
                                  f"{record['jpeg_quality']}); refusing to mix two datasets: use an empty folder, or "
                                  f"--overwrite to replace the earlier export's files")
        _remove_export(out)
    write_json_atomic(marker, record)
    return False


def export_3diebench(root: str | os.PathLike, out: str | os.PathLike, *, channel_order: str = DEFAULT_CHANNEL_ORDER,
                     jpeg_quality: int = DEFAULT_JPEG_QUALITY, workers: int = 1, progress: bool = True,
                     overwrite: bool = False) -> Path:
    """Write native dataset `root` in the original 3DIEBench(-T) layout at `out` (split files written last).

    Resumable: re-running the same export completes the missing objects (a complete one is a no-op). The folder
    is locked while it is written (a second export into it is refused).
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {sorted(CHANNEL_ORDERS)}, got {channel_order!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"--jpeg-quality must be in [1, 100], got {jpeg_quality}")
    ds = NativeDataset(root)
    out = Path(out)
    _check_apart(Path(root), out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export folder {out} exists and is not a folder")
    record = {"dataset": str(Path(root).resolve()), "dataset_created": ds.manifest["created"],
              "channel_order": channel_order, "jpeg_quality": jpeg_quality}
    with folder_lock(out, what="export folder"):
        if not _prepare_export(out, record, overwrite):
            _write_export(ds, root, out, channel_order, jpeg_quality, workers, progress)
    return out


def _write_export(ds: NativeDataset, root: str | os.PathLike, out: Path, channel_order: str, jpeg_quality: int,
                  workers: int, progress: bool) -> None:
    from tqdm import tqdm

    objs = list(range(len(ds)))
    for _ in tqdm(_pool_map(_export_one, objs, workers, _init_export, (str(root), str(out), channel_order,
                                                                        jpeg_quality)),
                  total=len(objs), desc="export-3diebench", unit="obj", disable=not progress):
        pass
    for split in SPLITS:
        idx = ds.split_indices(split)
        img_file, lab_file = _split_files(out, split)
        write_npy_atomic(img_file, np.array([object_path(ds, o) for o in idx], dtype=str))
        write_npy_atomic(lab_file, ds.labels[idx].astype(np.int64))

