"""Quality vs budget: the demo's methods at several (objects x steps) budgets -> R² of relative rotation on
held-out objects, its mean baseline, SIE's Hit@1 and top-1, as a Markdown table and a PNG.

Each budget renders (once per object count) the demo's scene, pretrains every method for `steps` and probes
it with the demo's probe epochs, exactly the commands `ssl-eq demo` runs. CPU-seconds (this process's user +
system time) are recorded per step, so budgets can be compared on a shared machine. Re-running resumes.

    python tools/bench_quality.py --budgets 300x1500,600x3000,1200x3000,1200x6000 --out bench_quality_out
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssl_eq.utils.io import write_atomic, write_json_atomic  # noqa: E402
from ssl_eq.demo import DEFAULT_METHODS, DEFAULTS, _step, parse_methods, pretrain_argv, render_argv  # noqa: E402

# (column, probe.json metric) per method; the rotation R² is read from the equivariant part when the method has
# one, else from the full representation
PART = {"vicreg": "full"}
COLUMNS = [("r2_pooled", "rotation/{part}/r2_pooled"), ("mean_baseline", "rotation/r2_pooled_mean_baseline"),
           ("r2_uniform_varying", "rotation/{part}/r2_uniform_varying"), ("hit@1", "predictor/val/hit@1"),
           ("top1_inv", "linear/inv/top1")]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str]) -> float:
    start = cpu_seconds()
    _step(argv)
    return cpu_seconds() - start


def run_budget(args: argparse.Namespace, objects: int, steps: int, methods: list[str]) -> list[dict]:
    demo = argparse.Namespace(**{**vars(args), "objects": objects, "steps": steps})
    data = Path(args.out) / f"data_o{objects}"
    render_cpu = timed(render_argv(demo, data))
    rows = []
    for method in methods:
        run_dir = Path(args.out) / "runs" / f"o{objects}_s{steps}" / method
        train_cpu = timed(pretrain_argv(demo, method, data, run_dir))
        probe_cpu = timed(["probe", str(run_dir), "--epochs", str(args.probe_epochs)])
        metrics = json.loads((run_dir / "probe" / "probe.json").read_text())["metrics"]
        part = PART.get(method, "equi")
        row = {"method": method, "objects": objects, "steps": steps, "part": part,
               "render_cpu_s": render_cpu, "train_cpu_s": train_cpu, "probe_cpu_s": probe_cpu}
        row.update({col: metrics.get(key.format(part=part)) for col, key in COLUMNS})
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    cols = ["method", "objects", "steps", "part", *(c for c, _ in COLUMNS),
            "render_cpu_s", "train_cpu_s", "probe_cpu_s"]
    fmt = lambda v: "–" if v is None else (f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else  # noqa: E731
                                          f"{v:.0f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    budgets = sorted({(r["objects"], r["steps"]) for r in rows}, key=lambda b: b[0] * b[1])
    x = range(len(budgets))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, metric in zip(axes, ("r2_pooled", "r2_uniform_varying")):
        for method in dict.fromkeys(r["method"] for r in rows):
            by = {(r["objects"], r["steps"]): r[metric] for r in rows if r["method"] == method}
            ax.plot(x, [by.get(b) for b in budgets], "o-", label=method)
        if metric == "r2_pooled":
            base = {(r["objects"], r["steps"]): r["mean_baseline"] for r in rows}
            ax.plot(x, [base.get(b) for b in budgets], "k--", marker="_", markersize=30, label="mean baseline")
        else:                                              # the mean prediction's uniform R² is ~0
            ax.axhline(0.0, color="k", ls="--", lw=1)
        ax.set_xticks(list(x), [f"{o} obj\n{s} steps" for o, s in budgets])
        ax.set_title(f"relative rotation, held-out objects: {metric}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("R²")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="300x1500,600x3000,1200x3000,1200x6000", help="comma list of OBJECTSxSTEPS")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--out", default="bench_quality_out")
    for key in ("views", "size", "probe_epochs"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=DEFAULTS[key])
    p.add_argument("--camera", default=DEFAULTS["camera"])
    p.add_argument("--rotation-axes", default=DEFAULTS["rotation_axes"])
    p.add_argument("--rotation-range", type=float, default=DEFAULTS["rotation_range"])
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    methods = parse_methods(args.methods)
    try:
        budgets = [tuple(int(v) for v in b.lower().split("x")) for b in args.budgets.split(",")]
        assert all(len(b) == 2 and min(b) > 0 for b in budgets)
    except (ValueError, AssertionError):
        p.error(f"--budgets {args.budgets!r}: expected a comma list of OBJECTSxSTEPS, e.g. 120x300,480x2000")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for objects, steps in budgets:
        rows += run_budget(args, objects, steps, methods)
        write_json_atomic(out / "quality.json", rows)                       # partial results survive a stop
        write_atomic(out / "quality.png", lambda tmp: plot(rows, tmp))
        write_atomic(out / "quality.md", lambda tmp: tmp.write_text(markdown(rows) + "\n"))
    print(f"\n{markdown(rows)}\n\n{time.strftime('%Y-%m-%d')}: {' '.join(sys.argv)}\nplot: {out / 'quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
