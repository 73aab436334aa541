"""The native sharded dataset format (docs/architecture.md, "Native dataset format"), format_version 1.

Writer side: `write_shard` builds a shard in a hidden temporary folder and renames it into place, so a
folder named `shards/shard-NNNNN/` is always complete; `write_manifest` writes `manifest.json` atomically.
Reader side: `NativeDataset` memory-maps every shard's arrays (opened lazily, once per process, so it is
safe with forked DataLoader workers and DDP) and indexes objects globally across shards.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from ssl_eq.utils.io import make_temp_dir, read_json, read_json_object, write_json_atomic

FORMAT = "ssl_eq-native"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
SHARD_META = "shard.json"
ENCODINGS = ("raw", "jpeg")
# how stored JPEG views relate to the render: "rgb" the same colours, "bgr" red and blue swapped (original
# 3DIEBench files kept byte for byte); readers give the render's colours either way
STORED_CHANNEL_ORDERS = ("rgb", "bgr")
DEFAULT_JPEG_QUALITY = 95

LATENT_SCHEMAS: dict[str, list[str]] = {
    "3diebench": ["rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue"],
    "3diebench-t": ["rot_x", "rot_y", "rot_z", "floor_hue", "spot_theta", "spot_phi", "spot_hue",
                    "trans_x", "trans_y", "trans_z"],
}
MANIFEST_KEYS = (
    "format", "format_version", "created", "ssl_eq_version", "config", "source", "variant", "latent_schema",
    "image_size", "views", "encoding", "class_names", "synsets", "num_objects", "shards", "split", "skipped",
)
SPLITS = ("train", "val")
REPAIR_HINT = ("Re-run the render / import-3diebench command that made the dataset: it replaces damaged shards "
               "(`ssl-eq dataset info DIR` lists them all)")


def shard_name(index: int) -> str:
    """Shard index -> folder name, e.g. 3 -> "shard-00003"."""
    return f"shard-{int(index):05d}"


def shard_dir(root: str | os.PathLike, index: int) -> Path:
    """Final folder of shard `index` under dataset `root`."""
    return Path(root) / SHARDS_DIR / shard_name(index)


def is_shard_complete(root: str | os.PathLike, index: int) -> bool:
    """True when shard `index` was renamed into place (a complete shard always holds shard.json)."""
    return (shard_dir(root, index) / SHARD_META).is_file()


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, expected file size in bytes) from a .npy header; ValueError when the header is unreadable."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        return shape, dtype, f.tell() + math.prod(shape) * dtype.itemsize


def shard_problems(folder: str | os.PathLike, meta: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with a complete shard's files (empty list: sound), checked against its own shard.json.

    Each array file's size must match its .npy header and its leading dimensions the shard's object / view
    counts, so a truncated `images.npy` / `latents.npy` (copy cut short, disk full, bad sector) is found
    without reading the data.
    """
    folder = Path(folder)
    try:
        meta = meta if meta is not None else read_json_object(folder / SHARD_META, "shard metadata")
        k, v, encoding = int(meta["num_objects"]), int(meta["views"]), meta["encoding"]
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
        return [f"{folder / SHARD_META}: unreadable shard metadata ({e})"]
    expected: dict[str, tuple[int, ...]] = {"latents.npy": (k, v), "labels.npy": (k,), "object_ids.npy": (k,)}
    if encoding == "raw":
        expected["images.npy"] = (k, v, int(meta["image_size"]), int(meta["image_size"]), 3)
    else:
        expected.update({"jpeg_offsets.npy": (k * v + 1,), "jpeg_data.npy": ()})
    problems, shapes = [], {}
    for name, lead in expected.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            shape, _, size = _npy_layout(path)
        except (ValueError, OSError) as e:
            problems.append(f"{path}: not a readable .npy file ({e})")
            continue
        actual = path.stat().st_size
        if actual != size:
            problems.append(f"{path}: {actual} bytes, its header {shape} needs {size} (truncated or damaged)")
        elif tuple(shape[:len(lead)]) != lead:
            problems.append(f"{path}: shape {shape}, {SHARD_META} says it starts with {lead}")
        shapes[name] = shape
    if encoding == "jpeg" and not problems:
        end = int(np.load(folder / "jpeg_offsets.npy")[-1])
        if end != shapes["jpeg_data.npy"][0]:
            problems.append(f"{folder / 'jpeg_data.npy'}: holds {shapes['jpeg_data.npy'][0]} bytes of JPEG data, "
                            f"jpeg_offsets.npy ends at {end}")
    return problems


def open_array(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load (memory-mapped when `mmap`) with errors that name the file and say how to repair it
    (numpy alone says e.g. "mmap length is greater than file size")."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read the array ({e}); the shard is damaged. {REPAIR_HINT}") from e


def remove_damaged_shard(root: str | os.PathLike, index: int) -> list[str]:
    """Delete shard `index` when its files are damaged (so that it is written again) -> the problems found."""
    folder = shard_dir(root, index)
    problems = shard_problems(folder) if is_shard_complete(root, index) else []
    if problems:
        shutil.rmtree(folder)
    return problems


def list_complete_shards(root: str | os.PathLike) -> list[int]:
    """Sorted indices of the complete shards under `root/shards/` (temporary folders are ignored)."""
    shards = Path(root) / SHARDS_DIR
    if not shards.is_dir():
        return []
    indices = []
    for p in shards.iterdir():
        if p.name.startswith("shard-") and p.name[len("shard-"):].isdigit() and (p / SHARD_META).is_file():
            indices.append(int(p.name[len("shard-"):]))
    return sorted(indices)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_jpeg_views(images: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 -> (data uint8 (total_bytes,), offsets int64 (N + 1,)), item i = data[off[i]:off[i+1]]."""
    from torchvision.io import encode_jpeg

    chw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    encoded = encode_jpeg(list(chw.contiguous()), quality=quality)
    sizes = np.array([0] + [e.numel() for e in encoded], dtype=np.int64)
    data = torch.cat(encoded).numpy() if encoded else np.zeros(0, np.uint8)
    return data, np.cumsum(sizes)


def _clean_stale_temps(shards: Path, name: str) -> None:
    for p in shards.glob(f".{name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def write_shard(
    root: str | os.PathLike,
    index: int,
    *,
    images: np.ndarray,
    latents: np.ndarray,
    labels: np.ndarray,
    object_ids: Sequence[str],
    encoding: str = "raw",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    jpeg_bytes: Sequence[bytes] | None = None,
    channel_order: str = "rgb",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write shard `index` atomically and return its final folder.

    images uint8 (K, V, H, W, 3); latents float32 (K, V, D); labels int64 (K,); object_ids K strings;
    `jpeg_bytes` (encoding "jpeg"): the K*V views' JPEG files (object-major), stored byte for byte instead of
    encoding `images` (the decoded files); `channel_order` (STORED_CHANNEL_ORDERS, "bgr" only with
    `jpeg_bytes`): how those files' colours relate to the render;
    `extra`: additional JSON-able keys stored in shard.json (e.g. the importer's skipped objects).
    Raises FileExistsError if the shard is already complete (complete shards are never rewritten).
    An OSError while writing (e.g. disk full) leaves no shard under the final name and is re-raised
    naming the shard and the cause.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    images = np.asarray(images)
    latents = np.asarray(latents, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.asarray(list(object_ids), dtype=str)
    if images.dtype != np.uint8 or images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (K, V, H, W, 3), got {images.dtype} {images.shape}")
    k, v = images.shape[:2]
    if latents.ndim != 3 or latents.shape[:2] != (k, v):
        raise ValueError(f"latents must be (K={k}, V={v}, D), got {latents.shape}")
    if labels.shape != (k,) or ids.shape != (k,):
        raise ValueError(f"labels and object_ids must have length K={k}, got {labels.shape} and {ids.shape}")
    if jpeg_bytes is not None and (encoding != "jpeg" or len(jpeg_bytes) != k * v):
        raise ValueError(f"jpeg_bytes needs encoding 'jpeg' and K*V={k * v} files, got encoding {encoding!r} and "
                         f"{len(jpeg_bytes)} files")
    if channel_order not in STORED_CHANNEL_ORDERS or (channel_order != "rgb" and jpeg_bytes is None):
        raise ValueError(f"channel_order must be 'rgb', or 'bgr' for stored jpeg_bytes; got {channel_order!r}")

    name = shard_name(index)
    final = shard_dir(root, index)
    if final.exists():
        raise FileExistsError(f"shard {final} already exists; complete shards are never rewritten")
    shards = final.parent
    shards.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(shards, name)
    tmp = make_temp_dir(f".{name}.tmp-", shards)
    try:
        if encoding == "raw":
            _save_npy(tmp / "images.npy", np.ascontiguousarray(images))
        else:
            if jpeg_bytes is None:
                data, offsets = encode_jpeg_views(images.reshape((k * v,) + images.shape[2:]), jpeg_quality)
            else:
                data = np.frombuffer(b"".join(jpeg_bytes), np.uint8)
                offsets = np.cumsum([0] + [len(b) for b in jpeg_bytes], dtype=np.int64)
            _save_npy(tmp / "jpeg_data.npy", data)
            _save_npy(tmp / "jpeg_offsets.npy", offsets)
        _save_npy(tmp / "latents.npy", latents)
        _save_npy(tmp / "labels.npy", labels)
        _save_npy(tmp / "object_ids.npy", ids)
        meta = {"index": int(index), "num_objects": int(k), "views": int(v), "image_size": int(images.shape[2]),
                "encoding": encoding, "channel_order": channel_order, "object_ids": ids.tolist(), **(extra or {})}
        write_json_atomic(tmp / SHARD_META, meta)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError as e:
            if final.exists():
                raise FileExistsError(f"shard {final} was completed by another writer") from e
            raise
        _fsync_dir(shards)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise OSError(e.errno, f"could not write shard {final}: {e.strerror or e}") from e
        raise
    return final


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate `root/manifest.json`; errors name the file and what was expected."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a dataset folder: {root} does not exist or is not a directory")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"not an ssl_eq native dataset: {path} is missing "
                                f"(convert an original 3DIEBench folder with `ssl-eq dataset import-3diebench`)")
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: expected format {FORMAT!r}, got {got!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown format_version {manifest.get('format_version')!r}; this ssl_eq reads "
                         f"format_version {FORMAT_VERSION}")
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(manifest: dict[str, Any], path: Path | str) -> None:
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: missing manifest keys {missing}")
    if manifest["variant"] not in LATENT_SCHEMAS:
        raise ValueError(f"{path}: variant must be one of {sorted(LATENT_SCHEMAS)}, got {manifest['variant']!r}")
    if list(manifest["latent_schema"]) != LATENT_SCHEMAS[manifest["variant"]]:
        raise ValueError(f"{path}: latent_schema {manifest['latent_schema']} does not match variant "
                         f"{manifest['variant']!r} (expected {LATENT_SCHEMAS[manifest['variant']]})")
    if manifest["encoding"] not in ENCODINGS:
        raise ValueError(f"{path}: encoding must be one of {ENCODINGS}, got {manifest['encoding']!r}")
    order = manifest.get("channel_order", "rgb")
    if order not in STORED_CHANNEL_ORDERS or (order != "rgb" and manifest["encoding"] != "jpeg"):
        raise ValueError(f"{path}: channel_order must be one of {STORED_CHANNEL_ORDERS} ('bgr' with encoding 'jpeg' "
                         f"only), got {order!r} with encoding {manifest['encoding']!r}")
    if not isinstance(manifest["split"], dict) or any(s not in manifest["split"] for s in SPLITS):
        raise ValueError(f"{path}: 'split' must be {{'train': [object ids], 'val': [object ids]}}")


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Atomically write `root/manifest.json`. `format`, `format_version`, `created`, `ssl_eq_version`,
    `skipped` and `channel_order` ("rgb") are filled in when absent; every other key of the contract is required."""
    from ssl_eq import __version__

    full = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "ssl_eq_version": __version__, "skipped": [], "channel_order": "rgb", **manifest}
    path = Path(root) / MANIFEST_NAME
    _check_manifest(full, path)
    return write_json_atomic(path, full)


def stratified_split(object_ids: Sequence[str], labels: Sequence[int], val_fraction: float,
                     seed: int = 0) -> dict[str, list[str]]:
    """Stratified random split {"train": ids, "val": ids} with round(val_fraction * N) val objects in total
    (half up, at most N - 1): each class gets the floor of its share val_fraction * n_c, and the objects left
    over go to the classes with the largest remainders (ties in random order), so a dataset with few objects
    per class still gets the val split asked for."""
    ids = np.asarray(list(object_ids), dtype=str)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    total = min(int(np.floor(val_fraction * len(ids) + 0.5)), max(len(ids) - 1, 0))
    share = val_fraction * counts
    n_val = np.floor(share).astype(np.int64)
    tie_break = rng.permutation(len(classes))
    by_remainder = np.lexsort((tie_break, -(share - n_val)))  # largest remainder first
    n_val[by_remainder[:total - n_val.sum()]] += 1
    val_mask = np.zeros(len(ids), bool)
    for c, n in zip(classes, n_val):
        val_mask[rng.permutation(np.flatnonzero(labels == c))[:n]] = True
    return {"train": ids[~val_mask].tolist(), "val": ids[val_mask].tolist()}


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Uninitialised CPU tensor for a batch; inside a DataLoader worker it is allocated in shared memory, so
    handing it to the main process costs no copy (what default_collate does for the tensors it stacks)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = math.prod(shape)
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, (numel,)).view(shape)


class NativeDataset:
    """Random access to a native dataset: N objects x V views, global object index over the shards.

    Latents (N, V, D) float32, labels (N,) and object ids (N,) are held in memory; images stay in
    memory-mapped shard files, opened lazily once per process (fork / DataLoader-worker / DDP safe).
    `decode_device` ("cpu" | "cuda" | "auto"): where JPEG shards are decoded (use "cuda" only in the main
    process, e.g. num_workers=0; "auto" picks cuda when available).
    """

    def __init__(self, root: str | os.PathLike, decode_device: str = "cpu"):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.variant: str = self.manifest["variant"]
        self.latent_schema: list[str] = list(self.manifest["latent_schema"])
        self.views: int = int(self.manifest["views"])
        self.image_size: int = int(self.manifest["image_size"])
        self.encoding: str = self.manifest["encoding"]
        self.channel_order: str = self.manifest.get("channel_order", "rgb")  # of the stored JPEGs; reads swap back
        self.class_names: list[str] = list(self.manifest["class_names"])
        self.synsets: list[str] = list(self.manifest["synsets"])
        if decode_device == "auto":
            decode_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.decode_device = decode_device
        self._shard_dirs = [shard_dir(self.root, s["index"]) for s in self.manifest["shards"]]
        latents, labels, ids, counts = [], [], [], []
        for d in self._shard_dirs:
            meta = self._check_shard(d)
            lat = open_array(d / "latents.npy", mmap=True)
            if lat.shape != (meta["num_objects"], self.views, len(self.latent_schema)):
                raise ValueError(f"{d / 'latents.npy'}: expected shape ({meta['num_objects']}, {self.views}, "
                                 f"{len(self.latent_schema)}) for variant {self.variant!r}, got {lat.shape}")
            latents.append(np.asarray(lat, dtype=np.float32))
            labels.append(open_array(d / "labels.npy"))
            ids.append(open_array(d / "object_ids.npy"))
            counts.append(meta["num_objects"])
        d_lat = len(self.latent_schema)
        self.latents = np.concatenate(latents) if latents else np.zeros((0, self.views, d_lat), np.float32)
        self.labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
        self.object_ids: list[str] = np.concatenate(ids).tolist() if ids else []
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._index = {oid: i for i, oid in enumerate(self.object_ids)}
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def _check_shard(self, d: Path) -> dict[str, Any]:
        if not (d / SHARD_META).is_file():
            raise FileNotFoundError(f"{self.root / MANIFEST_NAME} lists shard {d.name}, but {d / SHARD_META} "
                                    f"is missing (shard incomplete or deleted)")
        meta = read_json_object(d / SHARD_META, "shard metadata")
        expected = {"views": self.views, "image_size": self.image_size, "encoding": self.encoding,
                    "channel_order": self.channel_order}
        meta.setdefault("channel_order", "rgb")  # shards written before channel_order was recorded
        for key, value in expected.items():
            if meta.get(key) != value:
                raise ValueError(f"{d / SHARD_META}: {key} is {meta.get(key)!r}, the manifest says {value!r}")
        problems = shard_problems(d, meta)
        if problems:
            raise ValueError(f"damaged shard {d}: {'; '.join(problems)}. {REPAIR_HINT}")
        return meta

    def __len__(self) -> int:
        return len(self.object_ids)

    def __getstate__(self) -> dict[str, Any]:  # memory maps are reopened in the receiving process
        return {**self.__dict__, "_handles": {}}

    def index_of(self, object_id: str) -> int:
        """Global object index of `object_id` (KeyError naming the dataset if absent)."""
        try:
            return self._index[object_id]
        except KeyError:
            raise KeyError(f"object {object_id!r} is not in dataset {self.root}") from None

    def split_indices(self, split: str) -> np.ndarray:
        """(n,) int64 global indices of the objects of manifest split `split` ("train" | "val")."""
        if split not in self.manifest["split"]:
            raise KeyError(f"{self.root / MANIFEST_NAME}: no split {split!r} (has {sorted(self.manifest['split'])})")
        ids = self.manifest["split"][split]
        missing = [o for o in ids if o not in self._index]
        if missing:
            raise ValueError(f"{self.root / MANIFEST_NAME}: split {split!r} names {len(missing)} objects not present "
                             f"in the shards, e.g. {missing[:5]}")
        return np.array([self._index[o] for o in ids], dtype=np.int64)

    def _locate(self, objs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) global object indices -> (shard positions (n,), indices within the shard (n,))."""
        objs = np.asarray(objs, dtype=np.int64).reshape(-1)
        if objs.size and (objs.min() < 0 or objs.max() >= len(self)):
            raise IndexError(f"object index out of range [0, {len(self)}): {objs[(objs < 0) | (objs >= len(self))]}")
        shard = np.searchsorted(self._starts, objs, side="right") - 1
        return shard, objs - self._starts[shard]

    def _shard(self, s: int) -> Any:
        if self._pid != os.getpid():  # forked: do not share file handles with the parent
            self._handles, self._pid = {}, os.getpid()
        if s not in self._handles:
            d = self._shard_dirs[s]
            if self.encoding == "raw":
                self._handles[s] = open_array(d / "images.npy", mmap=True)
            else:
                self._handles[s] = (open_array(d / "jpeg_data.npy", mmap=True), open_array(d / "jpeg_offsets.npy"))
        return self._handles[s]

    def read_latents(self, obj: int | np.ndarray, view_idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Object index (scalar or (n,)) and (n,) view indices -> (n, D) float32 latents."""
        return self.latents[np.asarray(obj), np.asarray(view_idx)]

    def read_views(self, objs: Sequence[int] | np.ndarray, view_idx: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Parallel (n,) object and view indices -> uint8 (n, 3, H, W) (on `decode_device` for JPEG shards).

        Reads are grouped by shard: one memory-map gather (raw) or one batched decode (JPEG) per call.
        """
        objs, view_idx = np.broadcast_arrays(np.asarray(objs).reshape(-1), np.asarray(view_idx).reshape(-1))
        shard, local = self._locate(objs)
        if self.encoding == "jpeg":
            return self._decode(shard, local, view_idx)
        out = batch_tensor((len(objs), self.image_size, self.image_size, 3))
        dst = out.numpy()
        for i, (s, k, v) in enumerate(zip(shard.tolist(), local.tolist(), view_idx.tolist())):
            dst[i] = self._shard(s)[k, v]  # one copy, memory map -> batch
        return out.permute(0, 3, 1, 2)  # (n, 3, H, W) in channels-last memory, as the GPU wants it

    def _decode(self, shard: np.ndarray, local: np.ndarray, view_idx: np.ndarray) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        blobs = []
        for s, k, v in zip(shard.tolist(), local.tolist(), view_idx.tolist()):
            data, offsets = self._shard(s)
            item = k * self.views + v
            blobs.append(torch.from_numpy(np.array(data[offsets[item]:offsets[item + 1]])))
        try:
            decoded = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=self.decode_device) if blobs else []
        except RuntimeError:
            for blob, s, k, v in zip(blobs, shard, local, view_idx):  # find the culprit for a useful message
                try:
                    decode_jpeg(blob, mode=ImageReadMode.RGB)
                except RuntimeError as e:
                    oid = self.object_ids[int(self._starts[s] + k)]
                    raise ValueError(f"{self._shard_dirs[s] / 'jpeg_data.npy'}: object {oid!r} view {v} is not a "
                                     f"valid JPEG ({e})") from e
            raise
        shape = (len(blobs), 3, self.image_size, self.image_size)
        out = batch_tensor(shape) if self.decode_device == "cpu" else \
            torch.empty(shape, dtype=torch.uint8, device=self.decode_device)
        if self.channel_order == "bgr":
            decoded = [d.flip(0) for d in decoded]
        if decoded:
            torch.stack(decoded, out=out)
        return out

    def get_views(self, obj: int, view_idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Views of object `obj` -> uint8 (n, H, W, 3) numpy array."""
        view_idx = np.asarray(view_idx).reshape(-1)
        return self.read_views(np.full(len(view_idx), obj), view_idx).permute(0, 2, 3, 1).cpu().numpy()


def dataset_info(root: str | os.PathLike) -> dict[str, Any]:
    """Summary of a native dataset: counts, classes, latent ranges, size on disk.

    Raises ValueError listing every damaged shard (files cut short or not matching their shard.json).
    """
    manifest = read_manifest(root)
    damaged = [p for s in manifest["shards"] for p in shard_problems(shard_dir(root, s["index"]))]
    if damaged:
        raise ValueError(f"{root}: {len(damaged)} damaged shard file(s):\n  " + "\n  ".join(damaged)
                         + f"\n{REPAIR_HINT}")
    ds = NativeDataset(root)
    flat = ds.latents.reshape(-1, len(ds.latent_schema))
    size = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())
    counts = np.bincount(ds.labels, minlength=len(ds.class_names))
    return {
        "root": str(root), "variant": ds.variant, "encoding": ds.encoding, "image_size": ds.image_size,
        "views": ds.views, "num_objects": len(ds), "num_images": len(ds) * ds.views,
        "split": {s: len(ds.manifest["split"][s]) for s in SPLITS}, "skipped": len(ds.manifest["skipped"]),
        "classes": {f"{n} ({s})": int(c) for n, s, c in zip(ds.class_names, ds.synsets, counts)},
        "latent_ranges": {n: [float(flat[:, i].min()), float(flat[:, i].max())] if len(flat) else None
                          for i, n in enumerate(ds.latent_schema)},
        "size_on_disk_bytes": size, "manifest": str(Path(root) / MANIFEST_NAME),
        "render": _render_summary(ds.manifest),
    }


def _render_summary(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Camera geometry, rotation group and anti-aliasing of a rendered dataset (None: imported, no render settings)."""
    settings, config = manifest.get("render_settings"), manifest.get("config", {})
    if not settings:
        return None
    scene = settings["scene"]
    return {"camera": config.get("camera", "3diebench"), "camera_distance": scene["camera_radius"],
            "camera_theta": scene["camera_theta"], "camera_phi": scene["camera_phi"],
            "fov_degrees": scene["fov_degrees"],
            "rotation_axes": scene.get("rotation_axes", "xyz"),
            "rotation_range_degrees": float(np.degrees(scene["rotation_range"])),
            "supersample": settings["supersample"], "source": (manifest.get("source") or {}).get("name"),
            "up_axis": (manifest.get("source") or {}).get("up_axis")}
