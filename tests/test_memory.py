"""glibc malloc settings of the long commands (ssl_eq.utils.memory): large freed blocks are reused instead of
page-faulted in again, the environment and SSL_EQ_MALLOC=0 win. Step-time gains are in BENCHMARKS.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# allocate, touch and free a 40 MB tensor (~9,800 pages) 20 times after 10 warm-up rounds (the heap takes
# ~7 rounds to settle into reusing two blocks); how many rounds page-faulted the block in again, and what was applied
LOOP = """
import json, resource, sys, torch
from ssl_eq.utils.memory import keep_large_blocks
applied = keep_large_blocks() if sys.argv[1] == "apply" else {}
faulted = 0
for i in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(10_000_000).fill_(1.0)
    faulted += i >= 10 and resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before > 5000
print(json.dumps({"faulted": faulted, "applied": applied}))
"""


def loop(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_large_freed_blocks_are_reused_instead_of_faulted_in_again():
    plain, kept = loop("plain"), loop("apply")
    assert kept["applied"] == {"MALLOC_MMAP_THRESHOLD_": 256 << 20, "MALLOC_TRIM_THRESHOLD_": 512 << 20}
    assert plain["faulted"] == 20  # glibc's default: every 40 MB block is its own mmap, returned on free
    assert kept["faulted"] <= 2


def test_ssl_eq_malloc_0_and_glibcs_own_variables_win():
    assert loop("apply", SSL_EQ_MALLOC="0")["applied"] == {}
    assert loop("apply", MALLOC_TRIM_THRESHOLD_="1000000")["applied"] == {"MALLOC_MMAP_THRESHOLD_": 256 << 20}
