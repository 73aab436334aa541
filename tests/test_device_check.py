"""tools/device_check.sh --dry-run: every step of the GPU check rehearsed on the CPU (tiny sizes)."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "DEVICE_CHECK_BUDGET": "3600",
           "DEVICE_CHECK_SLACK": "10"}
    proc = subprocess.run(["bash", str(REPO / "tools" / "device_check.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600)
    log = (tmp_path / "device_check.log").read_text()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in ("environment", "carried wheels cover the missing packages", "PyTorch3D sources",
                 "CUDA tests (cpu stand-in)", "render benchmark", "training benchmark", "loader benchmark"):
        assert f"OK    {step}" in log, f"step {step!r} did not pass:\n{proc.stderr[-3000:]}"
    rows = (tmp_path / "device_rows.md").read_text()
    assert "DRY RUN" in rows and "render benchmark" in rows and "vicreg" in rows and "native raw shards" in rows
    # every CUDA-marked test ran (none skipped or failed) with the CPU standing in
    cuda_tests = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                 "-m", "cuda", "tests/test_cuda.py"], cwd=REPO, capture_output=True, text=True)
    collected = re.search(r"(\d+) tests? collected", cuda_tests.stdout)
    assert collected and re.search(rf"^{collected.group(1)} passed in ", log, re.M), cuda_tests.stdout[-500:]
