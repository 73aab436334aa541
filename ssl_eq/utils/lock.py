"""One writer per output folder: a lock file holding the writer's pid, host and start time.

`folder_lock(folder)` creates FOLDER/.ssl_eq.lock (or `.ssl_eq-<name>.lock`, e.g. one per render shard)
atomically (a complete file hard-linked into place, so a reader never sees it half-written) and removes it on
exit. A second writer is refused with `FolderLockedError` naming the holder. A lock left by a killed process
(same host, pid no longer alive) is taken over; a lock of another host is never taken over (its pid cannot be
checked from here): the message says which file to delete once that process is known to be gone.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

LOCK_PREFIX = ".ssl_eq"
LOCK_SUFFIX = ".lock"


class FolderLockedError(OSError):
    """Another live process writes the folder; the message names it (pid, host, start) and the lock file."""


def lock_path(folder: Path, name: str = "") -> Path:
    return folder / f"{LOCK_PREFIX}{'-' + name if name else ''}{LOCK_SUFFIX}"


def is_lock_file(path: Path) -> bool:
    """A lock file of this module (ignored when a folder is checked for being empty)."""
    return path.name.startswith(LOCK_PREFIX) and path.name.endswith(LOCK_SUFFIX)


def folder_entries(folder: Path) -> list[Path]:
    """The entries of `folder` other than lock files."""
    return [p for p in folder.iterdir() if not is_lock_file(p)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _is_stale(holder: dict[str, Any]) -> bool:
    """Left by a dead process of this host (a lock without a readable pid is never written by this module)."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def _remove_if_same(path: Path, holder: dict[str, Any]) -> None:
    """Delete the stale lock `path` unless another process replaced it meanwhile (takeovers are serialised by
    an flock on the stale file; the inode check catches a lock re-created after another takeover)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino and _read_holder(path) == holder:
                os.unlink(path)
    finally:
        os.close(fd)


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (started {holder.get('started', '?')}, "
            f"{holder.get('command', '?')})")


def acquire(folder: Path, name: str = "", what: str = "folder") -> Path:
    """Create the lock file of `folder` for this process -> its path; FolderLockedError if a live process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder, name)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv) or "python"}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    try:
        for _ in range(10):  # a few rounds of stale-lock takeover races at most
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                pass
            holder = _read_holder(path)
            if holder is None:  # released meanwhile
                continue
            if not _is_stale(holder):
                raise FolderLockedError(
                    f"{what} {folder} is being written by {_describe(holder)}; wait for it to finish, or if that "
                    f"process is gone delete {path}")
            print(f"taking over the stale lock {path} of {_describe(holder)} (that process is gone)")
            _remove_if_same(path, holder)
        raise FolderLockedError(f"{what} {folder}: could not take its lock {path} (other processes keep claiming it)")
    finally:
        tmp.unlink(missing_ok=True)


def release(path: Path) -> None:
    """Remove a lock file this process holds (a lock now held by another process is left alone)."""
    holder = _read_holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str = "", what: str = "folder", enabled: bool = True
                ) -> Iterator[Path | None]:
    """Hold the lock of `folder` (named `name`) for the block; `enabled=False` (e.g. a non-zero DDP rank) holds none.
    A folder the lock created is removed again if it is still empty at the end."""
    if not enabled:
        yield None
        return
    folder = Path(folder)
    created = not folder.exists()
    path = acquire(folder, name, what)
    try:
        yield path
    finally:
        release(path)
        if created:  # a refused or failed first run leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
