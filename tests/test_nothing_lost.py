"""Issue #24 "Data loss / wrong result" and "Broken state after an error": each case is a test that failed on
the code before the fix (nothing deleted, overwritten, mixed or silently wrong)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ssl_eq.cli import main
from ssl_eq.datasets import NativeDataset, make_synthetic_dataset


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# 1. export --overwrite never deletes the source dataset nor anything the export did not write
@pytest.mark.parametrize("layout", ["same", "parent", "inside"])
def test_1_export_overwrite_never_deletes_the_source(tmp_path, capsys, layout):
    parent = tmp_path / "parent"
    ds = make_synthetic_dataset(parent / "proc", num_objects=3, views=2, size=16)
    (parent / "notes.txt").write_text("mine")
    out = {"same": ds, "parent": parent, "inside": ds / "export"}[layout]
    before = _tree(parent)
    assert main(["dataset", "export-3diebench", str(ds), str(out), "--workers", "1", "--overwrite"]) == 2
    assert "source dataset" in capsys.readouterr().err
    assert _tree(parent) == before
    assert len(NativeDataset(ds)) == 3


def test_1_overwrite_replaces_only_the_earlier_exports_files(tmp_path, capsys):
    a = make_synthetic_dataset(tmp_path / "a", num_objects=3, views=2, size=16)
    b = make_synthetic_dataset(tmp_path / "b", num_objects=2, views=2, size=16, seed=1)
    out = tmp_path / "out"
    assert main(["dataset", "export-3diebench", str(a), str(out), "--workers", "1"]) == 0
    (out / "README.txt").write_text("mine")                           # a file the export did not write
    obj_dir = next(p for p in out.glob("*/*") if p.is_dir())
    (obj_dir / "notes.md").write_text("also mine")
    assert main(["dataset", "export-3diebench", str(b), str(out), "--workers", "1", "--overwrite"]) == 0
    assert (out / "README.txt").read_text() == "mine" and (obj_dir / "notes.md").read_text() == "also mine"
    assert not list(obj_dir.glob("image_*.jpg"))                      # a's images are gone, b's are there
    assert {p.parent.name for p in out.glob("*/*/latent_1.npy")} == set(NativeDataset(b).object_ids)

    foreign = tmp_path / "foreign"                                    # no export record: nothing replaced
    (foreign / "n01" / "obj").mkdir(parents=True)
    (foreign / "n01" / "obj" / "image_0.jpg").write_bytes(b"original data")
    assert main(["dataset", "export-3diebench", str(a), str(foreign), "--workers", "1", "--overwrite"]) == 2
    assert "holds no" in capsys.readouterr().err
    assert (foreign / "n01" / "obj" / "image_0.jpg").read_bytes() == b"original data"


# 7. export's --jpeg-quality has render's bounds
@pytest.mark.parametrize("quality", ["500", "-5", "0"])
def test_7_export_jpeg_quality_bounds(tmp_path, capsys, quality):
    ds = make_synthetic_dataset(tmp_path / "ds", num_objects=2, views=2, size=16)
    assert main(["dataset", "export-3diebench", str(ds), str(tmp_path / "out"), "--jpeg-quality", quality]) == 2
    assert "--jpeg-quality must be in [1, 100]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
