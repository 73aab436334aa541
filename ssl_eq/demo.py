"""`ssl-eq demo`: the whole pipeline on the embedded procedural objects, sized for a laptop CPU.

render (procedural, small close-up images) -> pretrain each method (tiny conv net) -> probe -> report.
Every step is the public CLI command a researcher would run at full scale, printed before it runs;
re-running resumes (complete shards and finished runs are kept). Each method `m` of --methods trains with
ssl_eq/configs/experiment/demo_<m>.yaml; the supervised method is the ceiling row of the report. With --seeds N
each method trains N times (seed=0..N-1, runs/<m>_s<k>); the report groups them (mean ± std over seeds).

--jobs J renders J shards at once, then runs J of the trainings' commands at once (every pretrain before any probe,
a probe once its pretrain is done), in J worker processes with CPUs / J torch threads each (SSL_EQ_THREADS),
output in logs/<name>.log: a demo step is hundreds of tiny ops whose second thread adds only ~40 %, so two
one-thread runs side by side do ~1.4x the work of one two-thread run (BENCHMARKS.md "Demo time").
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import config_dir

DEFAULT_METHODS = "sie,vicreg,supervised"
# the scene of the default demo (README "What `make demo` does", BENCHMARKS.md "Quality vs budget"): rotation about
# z within ±120°, a one-parameter group that a supervised net learns across objects at this scale and that SIE's
# linear hypernetwork can follow (over a full turn the canonical quaternion wraps for half of the pairs).
# steps None: each method's demo config sets its own budget (trainer.max_steps).
DEFAULTS = dict(objects=600, views=8, size=32, steps=None, probe_epochs=30, camera="closeup", rotation_axes="z",
                rotation_range=120.0)


def demo_experiments() -> list[str]:
    """Methods that have a demo config (ssl_eq/configs/experiment/demo_<method>.yaml)."""
    return sorted(p.stem[len("demo_"):] for p in (config_dir() / "experiment").glob("demo_*.yaml"))


def parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    missing = [m for m in methods if m not in demo_experiments()]
    if not methods or missing:
        raise ValueError(f"--methods {spec!r}: no demo config for {missing or 'an empty list'}; expected a comma "
                         f"list of {demo_experiments()} (ssl_eq/configs/experiment/demo_<method>.yaml)")
    return methods


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "demo": "render -> pretrain SIE, VICReg & a supervised ceiling -> probe -> report, on CPU",
}


def register(sub: argparse._SubParsersAction) -> None:
    from .renderers.scene import CAMERA_PRESETS

    d = DEFAULTS
    p = sub.add_parser("demo", help=COMMANDS["demo"], description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="output folder (dataset, runs, report)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma list of methods with a demo config (default {DEFAULT_METHODS})")
    p.add_argument("--objects", type=int, default=d["objects"], help="procedural objects to render")
    p.add_argument("--views", type=int, default=d["views"], help="views per object")
    p.add_argument("--size", type=int, default=d["size"], help="image size in pixels (rendered, trained, probed)")
    p.add_argument("--camera", default=d["camera"], choices=sorted(CAMERA_PRESETS),
                   help="camera preset of ssl-eq render")
    p.add_argument("--rotation-axes", default=d["rotation_axes"], help="Euler axes sampled (ssl-eq render)")
    p.add_argument("--rotation-range", type=float, default=d["rotation_range"],
                   help="degrees: Euler angles ~ U[-range, range] (ssl-eq render)")
    p.add_argument("--steps", type=int, default=d["steps"],
                   help="pretraining steps of every method (default: each demo config's trainer.max_steps)")
    p.add_argument("--probe-epochs", type=int, default=d["probe_epochs"], help="epochs of each probe")
    p.add_argument("--seeds", type=int, default=1,
                   help="train each method this many times (seed=0..N-1); the report shows mean ± std over seeds")
    p.add_argument("--jobs", default="auto",
                   help="commands run at once in worker processes (the render's shards, then the pretrains, each "
                        "probe once its run is trained), each with CPUs / jobs threads; auto: one per CPU this "
                        "process may use, at most one per run; 1: one after the other in this process")
    p.add_argument("--device", default="auto", help="render device: auto | cpu | cuda")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run_demo)


def _step(argv: list[str]) -> None:
    from .cli import main

    print(f"\n$ ssl-eq {shlex.join(argv)}", flush=True)
    t = time.time()
    code = main(argv)
    if code:
        raise SystemExit(f"demo step failed (exit {code}): ssl-eq {shlex.join(argv)}")
    print(f"  ({time.time() - t:.0f} s)", flush=True)


def parse_jobs(value: str, runs: int) -> int:
    """--jobs: "auto" -> one per CPU this process may use, at most `runs`; else a positive integer."""
    from .utils.threads import allowed_cpus, parse_setting

    jobs = parse_setting(value, "--jobs")
    return max(1, min(allowed_cpus(), runs)) if jobs is None else jobs


PROGRESS_EVERY = 30.0  # s between two progress lines of the running jobs


def _last_line(log: Path, width: int = 100) -> str:
    """The last progress text of a log (tqdm rewrites its line with carriage returns)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return parts[-1][:width] if parts else ""


class _Scheduler:
    """Runs the commands of several chains (a run's pretrain, then its probe) on `jobs` worker threads: a free
    worker takes the earliest step of any chain that is not running (so every pretrain starts before any probe, and
    a probe as soon as its pretrain is done and a worker is free), in the worker's `serve()` process, its output
    appended to its run's log. The first failure stops the rest (their processes are terminated)."""

    def __init__(self, chains: list[list[list[str]]], logs: list[Path], env: dict[str, str], workers: int) -> None:
        self.chains, self.logs, self.env = chains, logs, env
        self.next = [0] * len(chains)            # index of each chain's next command
        self.busy: dict[int, float] = {}         # chain -> start time of its running command
        self.procs: set[subprocess.Popen] = set()
        self.error: SystemExit | None = None
        self.stopped = False
        self.workers = workers                   # worker threads still running
        self.cond = threading.Condition()

    def _take(self) -> int | None:
        """Under the lock: the chain whose next command a free worker runs; None when nothing is left."""
        while not self.stopped:
            ready = [c for c, chain in enumerate(self.chains) if c not in self.busy and self.next[c] < len(chain)]
            if ready:
                c = min(ready, key=lambda c: self.next[c])
                self.busy[c] = time.time()
                return c
            if not self.busy:
                return None
            self.cond.wait()
        return None

    def worker(self) -> None:
        """One worker thread: its commands run one after the other in one `serve()` process (the imports, ~5 s of
        CPU per command, are paid once per worker)."""
        proc: subprocess.Popen | None = None
        while True:
            with self.cond:
                c = self._take()
                if c is None:
                    self.workers -= 1
                    self.cond.notify_all()
                    break
                argv, log = self.chains[c][self.next[c]], self.logs[c]
                print(f"[{log.stem}] $ ssl-eq {shlex.join(argv)}", flush=True)
                if proc is None:  # until its first command redirects them, its messages go to this log
                    with open(log, "a") as err:
                        proc = subprocess.Popen([sys.executable, "-m", "ssl_eq.demo", "--serve"], text=True,
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=self.env)
                    self.procs.add(proc)
            proc.stdin.write(json.dumps([argv, str(log)]) + "\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()  # its exit code; nothing when the process died
            code = int(answer) if answer.strip() else (proc.poll() or 1)
            with self.cond:
                took = time.time() - self.busy.pop(c)
                if code and not self.stopped:
                    self.error = SystemExit(f"demo step failed (exit {code}): ssl-eq {shlex.join(argv)}; its output: "
                                            f"{log}\n{_last_line(log, 400)}")
                    self.stop()
                elif not code:
                    self.next[c] += 1
                    print(f"[{log.stem}] {argv[0]} done ({took:.0f} s)", flush=True)
                self.cond.notify_all()
        if proc is not None:
            proc.stdin.close()
            proc.wait()

    def stop(self) -> None:
        """Under the lock: no command starts after this one, the running ones are terminated."""
        self.stopped = True
        for proc in self.procs:
            proc.terminate()
        self.cond.notify_all()


def run_parallel(chains: list[list[list[str]]], names: list[str], jobs: int, logs: Path) -> None:
    """Run the chains of commands (a render shard; a run's pretrain, then its probe) on `jobs` workers
    (`_Scheduler`), each command with CPUs / jobs torch threads unless SSL_EQ_THREADS is set; output in
    logs/<name>.log; prints each start and end, and every PROGRESS_EVERY s the running commands' last progress line.
    A failure or Ctrl-C stops the others (re-running the demo resumes)."""
    from .utils.threads import ENV, allowed_cpus

    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV: os.environ.get(ENV, str(max(1, allowed_cpus() // jobs)))}
    print(f"\n{', '.join(names)}: {jobs} commands at a time ({ENV}={env[ENV]} each); output in {logs}/", flush=True)
    files = [logs / f"{name}.log" for name in names]
    for f in files:
        f.write_text("")
    scheduler = _Scheduler(chains, files, env, jobs)
    workers = [threading.Thread(target=scheduler.worker, daemon=True) for _ in range(jobs)]
    for w in workers:
        w.start()
    try:
        with scheduler.cond:
            while not scheduler.cond.wait_for(lambda: scheduler.workers == 0, timeout=PROGRESS_EVERY):
                for c in scheduler.busy:
                    print(f"[{files[c].stem}] {_last_line(files[c])}", flush=True)
    finally:
        with scheduler.cond:
            scheduler.stop()
        for w in workers:
            w.join()
    if scheduler.error is not None:
        raise scheduler.error


def serve() -> None:
    """Worker process of run_parallel (`python -m ssl_eq.demo --serve`): for each line [argv, log] (JSON) on stdin,
    run `ssl-eq ARGV` in this process with its output (file descriptors 1 and 2) appended to `log`, then answer its
    exit code on a line of the original stdout."""
    from .cli import main

    answer = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        argv, log = json.loads(line)
        with open(log, "a") as f:
            f.write(f"\n$ ssl-eq {shlex.join(argv)}\n")
            f.flush()
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        answer.write(f"{code}\n")
        answer.flush()


def render_argv(args: argparse.Namespace, data: Path) -> list[str]:
    return ["render", "--out", str(data), "--objects", str(args.objects), "--views", str(args.views),
            "--size", str(args.size), "--camera", args.camera, "--rotation-axes", args.rotation_axes,
            "--rotation-range", f"{args.rotation_range:g}", "--device", args.device, "--objects-per-shard", "60"]


def run_dirs(args: argparse.Namespace, method: str, out: Path) -> list[tuple[int, Path]]:
    """(seed, run folder) of each training of `method`: runs/<method> for one seed, runs/<method>_s<k> for more."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seeds == 1:
        return [(0, out / "runs" / method)]
    return [(k, out / "runs" / f"{method}_s{k}") for k in range(args.seeds)]


def pretrain_argv(args: argparse.Namespace, method: str, data: Path, run_dir: Path, seed: int = 0) -> list[str]:
    """The model sees the rendered size (data.image_size), whatever the demo config says; --steps, when given,
    replaces every config's trainer.max_steps."""
    argv = ["pretrain", f"experiment=demo_{method}", f"data.root={data}", f"run_dir={run_dir}",
            f"data.image_size={args.size}", f"seed={seed}"]
    return argv + ([f"trainer.max_steps={args.steps}"] if args.steps is not None else [])


def run_demo(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    out = Path(args.out)
    plan = [(method, seed, run_dir) for method in methods for seed, run_dir in run_dirs(args, method, out)]
    data, report = out / "data", out / "report"
    chains = [[pretrain_argv(args, method, data, run_dir, seed),
               ["probe", str(run_dir), "--epochs", str(args.probe_epochs)]] for method, seed, run_dir in plan]
    jobs = parse_jobs(args.jobs, len(chains))
    start = time.time()
    if jobs == 1:
        for argv in [render_argv(args, data), *(argv for chain in chains for argv in chain)]:
            _step(argv)
    else:  # the render's shards in `jobs` processes (the last to finish writes the manifest), then the trainings
        run_parallel([[render_argv(args, data) + ["--num-shards", str(jobs), "--shard-index", str(k)]]
                      for k in range(jobs)], [f"render-{k}" for k in range(jobs)], jobs, out / "logs")
        run_parallel(chains, [run_dir.name for _, _, run_dir in plan], jobs, out / "logs")
    runs = [str(run_dir) for _, _, run_dir in plan]
    _step(["report", *runs, "--out", str(report), "--title", "ssl_eq demo (procedural objects, CPU)"])
    print(f"\ndemo finished in {(time.time() - start) / 60:.1f} min")
    print(f"report: {report / 'report.md'} and {report / 'report.html'}")
    print(f"dataset contact sheet: {data / 'preview.png'}")
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
