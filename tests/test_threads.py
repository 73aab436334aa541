"""The CPU thread policy (ssl_eq.utils.threads): the `auto` decision on given wait fractions, applying it in the
computing thread, loader threads kept to one thread, and what a run records; the `auto` precision. Throughput alone / beside busy
processes is measured by tools/bench_threads.py (BENCHMARKS.md), not here."""
from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from ssl_eq.utils import threads as T
from ssl_eq.utils.device import resolve_precision


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_alone_it_keeps_every_cpu_and_beside_busy_processes_it_steps_down_to_one():
    g = T.Governor(cpus=4)
    assert [g.observe(0.0, t) for t in (1, 2, 3)] == [4, 4, 4]
    assert [g.observe(0.5, t) for t in (4, 5, 6, 7)] == [3, 2, 1, 1]  # never below one
    assert g.observe(None, 8) == 1  # an idle window says nothing


def test_upward_tries_wait_longer_each_time_they_are_undone_and_reset_when_they_hold():
    g = T.Governor(cpus=2)
    assert g.observe(0.5, 0.0) == 1                       # contended: down; next try after PAUSES[0] = 2 s
    assert g.observe(0.0, 1.0) == 1                       # too early to try
    assert g.observe(0.0, 2.0) == 2                       # the try
    assert g.observe(0.4, 2.5) == 1                       # undone: the neighbour is still there
    assert g.pause == 1 and g.next_try == 2.5 + T.PAUSES[1]
    assert g.observe(0.0, 2.5 + T.PAUSES[1] - 0.1) == 1
    assert g.observe(0.0, 2.5 + T.PAUSES[1]) == 2         # second try, 4 s later
    t = 2.5 + T.PAUSES[1]
    assert g.observe(0.0, t + T.PERIOD) == 2
    assert g.observe(0.0, t + 2 * T.PERIOD) == 2          # held two windows: kept, pauses start over
    assert g.trial_since is None and g.pause == 0
    for k in range(len(T.PAUSES) + 3):                    # pauses stop growing at the last one
        g.observe(0.5, 100.0 * k)
        g.observe(0.0, g.next_try)
    assert g.pause == len(T.PAUSES) - 1


def test_a_moderate_wait_neither_adds_nor_removes_threads():
    g = T.Governor(cpus=2, start=1)
    assert [g.observe(w, t) for w, t in ((0.1, 5.0), (0.15, 50.0), (T.HIGH, 60.0))] == [1, 1, 1]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_setting_names_the_variable_and_what_it_expects(value):
    with pytest.raises(ValueError, match=r"SSL_EQ_THREADS or pretrain's threads=\): expected 'auto' or a positive"):
        T.parse_setting(value)


def test_a_fixed_count_is_applied_and_not_watched(monkeypatch):
    monkeypatch.setenv(T.ENV, "1")
    with T.thread_policy() as policy:
        assert torch.get_num_threads() == 1 and not policy.watched
        assert policy.describe() == "threads: 1 (fixed by SSL_EQ_THREADS / threads=)"
    assert policy.summary()["setting"] == "1" and set(policy.summary()["seconds_at"]) == {"1"}


def test_the_watcher_steps_down_when_the_main_thread_waits_and_tick_applies_it_in_that_thread(monkeypatch):
    """A stand-in schedstat: the main thread waits 60 % of every window; the choice reaches torch at tick()."""
    monkeypatch.setattr(T, "PERIOD", 0.02)
    start = time.monotonic()

    def sample(tid):
        assert tid == threading.main_thread().native_id
        ns = (time.monotonic() - start) * 1e9
        return int(0.4 * ns), int(0.6 * ns)

    policy = T.ThreadPolicy("auto", cpus=3, sample=sample).start()
    assert torch.get_num_threads() == 3 and policy.watched
    deadline = time.monotonic() + 10
    while policy.governor.threads > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert torch.get_num_threads() == 3  # nothing changes until the computing thread ticks
    policy.tick()
    policy.stop()
    assert torch.get_num_threads() == 1
    summary = policy.summary()
    assert summary["changes"] == 1 and set(summary["seconds_at"]) == {"1", "3"}


def test_schedstat_reads_this_threads_cpu_time():
    first = T.schedstat(threading.get_native_id())
    if first is None:
        pytest.skip("this kernel has no /proc/self/task/TID/schedstat (the policy keeps every CPU there)")
    sum(i * i for i in range(300_000))
    ran, waited = T.schedstat(threading.get_native_id())
    assert ran > first[0] and waited >= first[1]


def test_loader_threads_compute_single_threaded_without_touching_the_main_threads_count():
    from ssl_eq.datasets.loader import ThreadLoader

    class Data:
        def __len__(self):
            return 8

        def __getitems__(self, idx):
            return [{"n": torch.tensor(torch.get_num_threads())} for _ in idx]

    torch.set_num_threads(2)
    counts = [int(b["n"].max()) for b in ThreadLoader(Data(), batch_size=2, num_workers=2)]
    assert counts == [1, 1, 1, 1] and torch.get_num_threads() == 2


def test_pretrain_records_the_policy_in_its_config_and_summary(tmp_path, monkeypatch):
    from ssl_eq.datasets.synthetic import make_synthetic_dataset
    from ssl_eq.methods import compose_config, pretrain

    monkeypatch.setenv(T.ENV, "1")
    data = make_synthetic_dataset(tmp_path / "data", num_objects=8, views=2, size=16)
    cfg = compose_config([f"data.root={data}", f"run_dir={tmp_path / 'run'}", "method=vicreg", "backbone=small_cnn",
                          "backbone.widths=[8,16]", "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=2",
                          "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none",
                          "trainer.precision=auto"])
    summary = pretrain(cfg)
    assert summary["threads"]["setting"] == "1" and set(summary["threads"]["seconds_at"]) == {"1"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["threads"] == summary["threads"]
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "threads: '1'" in saved
    assert f"precision: {resolve_precision('auto', 'cpu')}" in saved  # what "auto" chose, not "auto"


@pytest.mark.parametrize("native, chosen", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, native, chosen):
    from ssl_eq.utils import device as D

    probe = "_is_avx512_bf16_supported"
    monkeypatch.setattr(torch.cpu, probe, lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert D.resolve_precision("auto", "cpu") == chosen
    assert D.resolve_precision("16-mixed", "cpu") == "16-mixed"  # any other value as it is


def test_a_deterministic_run_keeps_one_thread_count():
    from omegaconf import OmegaConf

    from ssl_eq.methods.run import fixed_threads

    cfg = OmegaConf.create({"threads": "auto", "trainer": {"deterministic": True}})
    assert fixed_threads(cfg) == T.allowed_cpus()
    cfg.trainer.deterministic = False
    assert fixed_threads(cfg) == "auto"
    cfg.threads, cfg.trainer.deterministic = "3", True
    assert fixed_threads(cfg) == "3"
