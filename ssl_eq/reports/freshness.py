"""Is a probe / orbit result about the run's current checkpoint? (probe.json / orbit.json against last.ckpt)

Results record the checkpoint they were computed on: `checkpoint_digest` (the weights' digest,
`ssl_eq.utils.identity.weights_digest`) or, in older files, `checkpoint_sha256` (a hash of the file).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

CHECKPOINT = Path("checkpoints") / "last.ckpt"
REFRESH = {"probe": "ssl-eq probe {run}", "orbit": "ssl-eq orbit {run} --out DIR"}


@lru_cache(maxsize=64)
def _current(ckpt: str, kind: str, mtime_ns: int) -> str:
    """The digest of one kind of a checkpoint file (cached per file and modification time)."""
    if kind == "checkpoint_digest":
        from ssl_eq.utils.identity import weights_digest
        return weights_digest(ckpt)
    from ssl_eq.probes.features import file_digest
    return file_digest(Path(ckpt))


def stale_reason(run_dir: Path, record: dict[str, Any], what: str) -> str | None:
    """None when `record` (probe.json / orbit.json) was computed on RUN/checkpoints/last.ckpt (or cannot be
    checked: no checkpoint, no identity recorded); else why it is stale and the command that refreshes it."""
    ckpt = run_dir / CHECKPOINT
    kind = next((k for k in ("checkpoint_digest", "checkpoint_sha256") if record.get(k)), None)
    if kind is None or not ckpt.is_file():
        return None
    try:
        current = _current(str(ckpt), kind, ckpt.stat().st_mtime_ns)
    except (OSError, ValueError, RuntimeError) as e:
        return f"{what} freshness unknown: {ckpt} is unreadable ({e})"
    if current == record[kind]:
        return None
    return (f"stale {what}: computed on another checkpoint than the current {CHECKPOINT} (trained on since?); "
            f"refresh with `{REFRESH[what].format(run=run_dir)}`")
