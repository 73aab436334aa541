"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A reader (or a killed writer) never sees a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

FILE_MODE = 0o666  # what open() / mkdir() request before the umask is applied
DIR_MODE = 0o777


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE & ~current_umask())  # mkstemp creates 0600: honour the umask like open() does
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to query it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(prefix: str, dir: str | os.PathLike) -> Path:
    """`tempfile.mkdtemp` with the permissions `mkdir` would give (mkdtemp creates 0700 whatever the umask)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    tmp.chmod(DIR_MODE & ~current_umask())
    return tmp


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and atomically move the result onto `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON (keys kept in insertion order)."""
    return write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n"))


def write_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write one array as .npy (no pickling)."""
    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return write_atomic(path, _write)


def read_json_object(path: str | os.PathLike, what: str = "file") -> dict[str, Any]:
    """`read_json` for files that must hold a JSON object; anything else is a ValueError naming the file."""
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must be a JSON object {{...}}, got {type(obj).__name__}; the file is "
                         f"damaged: restore it, or delete it and re-run the command that writes it")
    return obj


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON with an error that names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` atomically. Serialised in memory first, so a full disk raises a plain OSError (ENOSPC)
    naming `path` instead of torch's "unexpected pos", and leaves no partial file under `path`."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        return write_atomic(path, lambda p: p.write_bytes(buffer.getbuffer()))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, f"out of space writing {Path(path).name} ({len(buffer.getbuffer())} bytes; "
                                   f"nothing partial was left)", str(Path(path).parent)) from e
        raise
