"""`ssl-eq report`: report.md + self-contained report.html over one or more run folders.

Per run it reads RUN/metrics.json (training), RUN/probe/probe.json (probes), RUN/tb/ (TensorBoard curves),
RUN/config.yaml (method name, dataset) and RUN/orbit/orbit.json (`ssl-eq orbit`, when present). Missing
pieces show as a dash or a note; a folder holding none of them is refused, and a run whose metrics.json status
is not "completed" is named "(failed)" / "(running or killed)" with its training metrics left out. The report leads with a headline table (one row per run, the
`supervised` method's runs last as the ceiling) and a one-line reading of it; the detailed tables, the probe
protocols and the published numbers follow.
"""
from __future__ import annotations

import base64
import html
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_eq.reports import reference
from ssl_eq.reports.contact_sheet import dataset_preview

DASH = "–"
ASSETS = "assets"
MAX_CURVE_TAGS = 8
CURVE_KEYWORDS = ("loss", "acc", "r2")  # tags matching these are drawn first
CURVE_EXCLUDED = ("epoch",)
SHEET_OBJECTS = 6
SHEET_VIEWS = 6
PROBE_ORDER = ("linear", "agg_linear", "aug_params", "rotation", "view_rotation", "colour", "translation", "predictor")
CEILING_METHOD = "supervised"  # runs of this method are the headline's supervised ceiling
HEADLINE_ROTATION_PARTS = ("equi", "full")  # the equivariant part where a method has one, else the full one
R2_NAMES = {"r2_pooled": "pooled R² (one grand mean)", "r2_uniform": "uniform R² (mean over outputs)"}
DEFAULT_HEADLINE_R2 = "r2_pooled"


@dataclass
class RunInfo:
    path: Path
    name: str
    method: str
    training: dict[str, float] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    dataset: Path | None = None
    notes: list[str] = field(default_factory=list)


def _flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a/b": value}; bools and non-numbers are dropped."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    return out


def read_scalars(tb_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All scalar series under a TensorBoard folder (any depth) -> {tag: (steps, values)}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, tuple[list, list]] = {}
    for folder in sorted({p.parent for p in tb_dir.rglob("events.out.tfevents*")}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps, values = series.setdefault(tag, ([], []))
            for event in acc.Scalars(tag):
                steps.append(event.step)
                values.append(event.value)
    return {tag: (np.asarray(s), np.asarray(v)) for tag, (s, v) in series.items()}


RUN_FILES = ("config.yaml", "metrics.json", "checkpoints", "probe/probe.json")
UNFINISHED = {"running": "running or killed"}  # metrics.json status -> how the report names it


def check_run_folder(path: Path) -> None:
    """ValueError unless `path` holds at least one of the files a run folder has."""
    if not any((path / f).exists() for f in RUN_FILES):
        raise ValueError(f"{path} is not a run folder: it holds none of {', '.join(RUN_FILES)}; give folders "
                         f"written by `ssl-eq pretrain` (run_dir=...)")


def mark_unfinished(info: RunInfo, status: Any) -> None:
    """A run whose metrics.json status is not "completed" is named so, and its stale training metrics dropped."""
    if status in (None, "completed"):
        return
    state = "failed" if str(status).startswith("failed") else UNFINISHED.get(str(status), str(status))
    info.name = f"{info.path.name} ({state})"
    info.training = {k: v for k, v in info.training.items() if k in ("global_step", "epoch")}
    info.notes.append(f"training {status}; its training metrics are not shown")


def load_run_info(run_dir: str | Path) -> RunInfo:
    """Everything the report shows about one run folder; absent files become notes."""
    from omegaconf import OmegaConf

    path = Path(run_dir)
    if not path.is_dir():
        raise NotADirectoryError(f"run folder not found: {path}")
    check_run_folder(path)
    info = RunInfo(path=path, name=path.name, method=DASH)
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        try:
            cfg = OmegaConf.load(cfg_path)
            info.method = str(OmegaConf.select(cfg, "method.name", default=DASH))
            root = OmegaConf.select(cfg, "data.root", default=None)
            info.dataset = Path(str(root)) if root else None
        except Exception as e:  # noqa: BLE001 - YAML / OmegaConf errors on a damaged file become a note
            info.notes.append(f"config.yaml is unreadable ({type(e).__name__}: {e})")
    else:
        info.notes.append("no config.yaml")
    for name, attr in (("metrics.json", "training"), ("probe/probe.json", "probe")):
        file = path / name
        if not file.is_file():
            info.notes.append(f"no {name}")
            continue
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            info.notes.append(f"{name} is not valid JSON ({e})")
            continue
        if not isinstance(data, dict):
            info.notes.append(f"{name} is not a JSON object")
            continue
        setattr(info, attr, _flatten(data) if attr == "training" else data)
        if attr == "training":
            mark_unfinished(info, data.get("status"))
    if info.probe:
        info.method = info.method if info.method != DASH else str(info.probe.get("method", DASH))
        root = info.probe.get("dataset", {}).get("root")
        info.dataset = Path(root) if root else info.dataset
    if (path / "tb").is_dir():
        info.curves = read_scalars(path / "tb")
    else:
        info.notes.append("no tb/ (TensorBoard logs)")
    return info


def _fmt(value: float | None) -> str:
    if value is None:
        return DASH
    if float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4g}"


def _training_groups(runs: list[RunInfo]) -> dict[str, list[tuple[RunInfo, dict[str, float]]]]:
    """metrics.json "metrics/<group>/<name>" -> table "training: <group>" with column <name> (train, val, online,
    collapse, ...); keys without a group ("global_step", "wall_s", ...) go to "training: run"."""
    split = [{} for _ in runs]
    for per, r in zip(split, runs):
        for key, value in r.training.items():
            key = key.removeprefix("metrics/")
            group, name = key.split("/", 1) if "/" in key else ("run", key)
            per.setdefault(group, {})[name] = value
    names = sorted({g for per in split for g in per}, key=lambda g: (g != "run", g))
    return {f"training: {g}": [(r, per.get(g, {})) for r, per in zip(runs, split)] for g in names}


def metric_tables(runs: list[RunInfo]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per table: training metrics, then one per probe; one row per run, dash if missing."""
    tables = []
    groups = _training_groups(runs)
    for probe in PROBE_ORDER:
        groups[f"probe: {probe}"] = [(r, {k.split("/", 1)[1]: v for k, v in r.probe.get("metrics", {}).items()
                                          if k.split("/", 1)[0] == probe}) for r in runs]
    for title, per_run in groups.items():
        columns = sorted({k for _, m in per_run for k in m})
        if not columns:
            continue
        if title.startswith("probe: "):  # every probe number names its protocol
            rows = [[r.name, r.method, _protocol(r), *(_fmt(m.get(c)) for c in columns)] for r, m in per_run]
            tables.append((title, ["run", "method", "protocol", *columns], rows))
        else:
            rows = [[r.name, r.method, *(_fmt(m.get(c)) for c in columns)] for r, m in per_run]
            tables.append((title, ["run", "method", *columns], rows))
    return tables


def _protocol(run: RunInfo) -> str:
    return str(run.probe.get("protocol", DASH))


def _is_ceiling(run: RunInfo) -> bool:
    return run.method == CEILING_METHOD


def _metric(run: RunInfo, name: str) -> float | None:
    return run.probe.get("metrics", {}).get(name)


def _rotation_part(run: RunInfo) -> str | None:
    return next((p for p in HEADLINE_ROTATION_PARTS if _metric(run, f"rotation/{p}/r2_pooled") is not None), None)


def _headline_r2(runs: list[RunInfo]) -> str:
    return next((str(r.probe["headline_r2"]) for r in runs if r.probe.get("headline_r2")), DEFAULT_HEADLINE_R2)


def headline(runs: list[RunInfo]) -> tuple[list[str], list[list[str]], str]:
    """The report's first table -> (header, rows, one-line reading): per run top-1 of the invariant and full
    parts, relative-rotation R² in both definitions (the uniform one over the outputs that vary, so that
    restricted rotation groups are not credited for their constant quaternion components) beside the
    mean-prediction baseline, the geodesic error, Hit@1; supervised runs last, as the ceiling."""
    header = ["run", "method", "protocol", "top-1 inv (%)", "top-1 full (%)", "rotation part",
              "rotation R² pooled", "mean baseline, pooled", "rotation R² uniform (varying outputs)",
              "mean baseline, uniform (varying outputs)", "geodesic error (°)", "Hit@1", "Hit@1 chance"]
    rows = []
    for r in sorted(runs, key=_is_ceiling):
        part = _rotation_part(r)
        views = r.probe.get("dataset", {}).get("views")
        rows.append([r.name, f"{r.method} (ceiling)" if _is_ceiling(r) else r.method, _protocol(r),
                     _fmt(_metric(r, "linear/inv/top1")), _fmt(_metric(r, "linear/full/top1")), part or DASH,
                     _fmt(_metric(r, f"rotation/{part}/r2_pooled")),
                     _fmt(_metric(r, "rotation/r2_pooled_mean_baseline")),
                     _fmt(_metric(r, f"rotation/{part}/r2_uniform_varying")),
                     _fmt(_metric(r, "rotation/r2_uniform_varying_mean_baseline")),
                     _fmt(_metric(r, f"rotation/{part}/geodesic_deg")), _fmt(_metric(r, "predictor/val/hit@1")),
                     _fmt(1 / views) if views else DASH])
    return header, rows, reading(runs)


def reading(runs: list[RunInfo]) -> str:
    """One line: each self-supervised run's headline rotation R² against its mean baseline, and the gap of the
    best one to the supervised ceiling (when a `supervised` run is present)."""
    r2 = _headline_r2(runs)
    entries = []  # (run, part, value, baseline)
    for r in runs:
        part = _rotation_part(r)
        value, base = _metric(r, f"rotation/{part}/{r2}"), _metric(r, f"rotation/{r2}_mean_baseline")
        if part is not None and value is not None:
            entries.append((r, part, value, base))
    if not entries:
        return "Reading: no relative-rotation probe results in these runs."
    ssl = [e for e in entries if not _is_ceiling(e[0])]
    text = f"Reading ({R2_NAMES.get(r2, r2)} of the relative-rotation probe on val pairs): "
    if ssl:
        def vs_base(e: tuple) -> str:
            base = f"{e[2] - e[3]:+.3f} vs its mean baseline {e[3]:.3f}" if e[3] is not None else "no baseline"
            varying = _metric(e[0], f"rotation/{e[1]}/r2_uniform_varying")
            return base + (f"; uniform R² (varying outputs) {varying:.3f}" if varying is not None else "")
        best = max(ssl, key=lambda e: e[2] - (e[3] or 0.0))
        text += f"best self-supervised {best[0].name} ({best[1]}) {best[2]:.3f}, {vs_base(best)}"
        others = [e for e in ssl if e is not best]
        if others:
            text += "; " + ", ".join(f"{e[0].name} ({e[1]}) {e[2]:.3f} ({vs_base(e)})" for e in others)
        text += _part_gap(ssl, r2)
    ceilings = [e for e in entries if _is_ceiling(e[0])]
    if ceilings:
        ceiling = max(ceilings, key=lambda e: e[2])
        text += (f"{'; ' if ssl else ''}supervised ceiling ({ceiling[0].name}) {ceiling[2]:.3f}"
                 + (f": the best self-supervised run is {ceiling[2] - best[2]:.3f} below it" if ssl else ""))
    else:
        text += "; no supervised ceiling run in this report"
    return text + "."


def _part_gap(ssl: list[tuple], r2: str) -> str:
    """'; gap: ...' between the best self-supervised run read from an equivariant part and the best read from a
    full representation (e.g. SIE vs VICReg), in the headline R² and the uniform R² over the varying outputs."""
    best = {part: max((e for e in ssl if e[1] == part), key=lambda e: e[2], default=None)
            for part in ("equi", "full")}
    if best["equi"] is None or best["full"] is None:
        return ""
    (eq, _, eq_value, _), (full, _, full_value, _) = best["equi"], best["full"]
    text = f"; gap {eq.name} (equi) − {full.name} (full): {eq_value - full_value:+.3f} {r2}"
    eq_varying = _metric(eq, "rotation/equi/r2_uniform_varying")
    full_varying = _metric(full, "rotation/full/r2_uniform_varying")
    if eq_varying is not None and full_varying is not None:
        text += f", {eq_varying - full_varying:+.3f} r2_uniform_varying"
    return text


def describe_sampling(section: dict[str, Any]) -> str:
    """A probe config section's examples and epoch choice in words."""
    if not section:
        return DASH
    train, val = section.get("train_per_object"), section.get("val_per_object")
    fraction = section.get("holdout_fraction") or 0.0
    return "; ".join([
        "train: every view" if train is None else f"train: {train} fresh random per object per epoch",
        "val: every view" if val is None else f"val: {val} fixed per object",
        f"epoch chosen on {fraction:.0%} held-out train objects" if fraction else "last epoch",
        f"{section.get('epochs', DASH)} epochs"])


def protocol_rows(runs: list[RunInfo]) -> list[list[str]]:
    """[run, protocol, headline R², quaternion sign (probe targets / run input), colour targets, feature BatchNorm,
    rotation-probe examples] for every run with a probe.json."""
    rows = []
    for r in runs:
        if not r.probe:
            continue
        conv = r.probe.get("conventions", {})
        run_conv = conv.get("run", {})
        rotation = r.probe.get("config", {}).get("probes", {}).get("rotation", {})
        rows.append([r.name, _protocol(r), r.probe.get("headline_r2", DASH),
                     f"{conv.get('quaternion_sign', DASH)} / {run_conv.get('quaternion_sign', DASH)}",
                     f"{conv.get('colour_targets', DASH)} / {run_conv.get('colour_targets', DASH)}",
                     conv.get("feature_batchnorm", DASH), describe_sampling(rotation)])
    return rows


def probe_status_rows(runs: list[RunInfo]) -> list[list[str]]:
    """[run, probe, status, reason] for every probe that was skipped or failed."""
    return [[r.name, name, rec["status"], rec.get("reason", "")]
            for r in runs for name, rec in r.probe.get("probes", {}).items() if rec["status"] != "ok"]


def definitions(runs: list[RunInfo]) -> dict[str, str]:
    """Metric-name suffix -> definition text, over all runs' probe.json."""
    out: dict[str, str] = {}
    for r in runs:
        for name, text in r.probe.get("definitions", {}).items():
            out.setdefault(name.rsplit("/", 1)[-1], text)
    return out


def plot_curves(runs: list[RunInfo], out_png: Path) -> Path | None:
    """One panel per common scalar tag (losses / accuracies first), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssl_eq.utils.io import atomic_path

    tags = sorted({t for r in runs for t in r.curves if len(r.curves[t][0]) > 1 and t not in CURVE_EXCLUDED},
                  key=lambda t: (not any(k in t.lower() for k in CURVE_KEYWORDS), t))[:MAX_CURVE_TAGS]
    if not tags:
        return None
    cols = min(len(tags), 4)
    rows = (len(tags) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for r in runs:
            if tag in r.curves:
                steps, values = r.curves[tag]
                ax.plot(steps, values, label=r.name)
        ax.set(title=tag, xlabel="step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png


def dataset_sheet(runs: list[RunInfo], out_png: Path) -> tuple[Path | None, str]:
    """Contact sheet of the first readable run dataset (objects × views) -> (png or None, caption / reason)."""
    reasons = []
    for root in dict.fromkeys(r.dataset for r in runs if r.dataset is not None):
        try:
            dataset_preview(root, out_png, objects=SHEET_OBJECTS, views=SHEET_VIEWS)
        except (FileNotFoundError, NotADirectoryError, ValueError, KeyError) as e:
            reasons.append(f"{root}: {e}")
            continue
        return out_png, f"dataset {root}"
    return None, "; ".join(reasons) or "no run names a dataset"


def orbit_section(runs: list[RunInfo], out: Path, add_image) -> tuple[str, str] | None:
    """Area-under-curve table and figures of each run's RUN/orbit/orbit.json -> (markdown, html), None if no
    run has one. `add_image(png, alt)` embeds a PNG copied into OUT/assets/."""
    found = [(r, r.path / "orbit", json.loads((r.path / "orbit" / "orbit.json").read_text())["orbits"])
             for r in runs if (r.path / "orbit" / "orbit.json").is_file()]
    if not found:
        return None
    curves = sorted({c for _, _, orbits in found for o in orbits.values() for c in o["auc"]})
    rows, md_parts, html_parts = [], [], []
    for r, folder, orbits in found:
        for key, orbit in orbits.items():
            rows.append([r.name, r.method, key, *(_fmt(orbit["auc"].get(c)) for c in curves)])
            for name in orbit.get("plots", []):
                if (folder / name).is_file():
                    dst = out / ASSETS / f"{r.name}__orbit_{name}"
                    shutil.copyfile(folder / name, dst)
                    m, h = add_image(dst, f"{r.name}: orbit {key} ({Path(name).stem.rsplit('_', 1)[-1]})")
                    md_parts.append(m)
                    html_parts.append(h)
    header = ["run", "method", "orbit", *curves]
    note = "Area under each orbit curve divided by the orbit's span, i.e. the curve's mean over the orbit."
    return (f"{note}\n\n{_md_table(header, rows)}\n\n" + "\n\n".join(md_parts),
            f"<p>{html.escape(note)}</p>{_html_table(header, rows)}" + "".join(html_parts))


def _md_cell(value: Any) -> str:
    """One Markdown table cell: a "|" or a line break (e.g. in an exception message) would split the row."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(value)).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_image(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>' \
           f'{html.escape(alt)}</figcaption></figure>'


HTML_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
              "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
              "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
              "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}"
              ".published{background:#fff8e6;padding:0.5em 1em;border-left:4px solid #e0a800}")


def write_report(run_dirs: list[str | Path], out_dir: str | Path, title: str = "ssl_eq report") -> dict[str, Path]:
    """Write OUT/report.md (images in OUT/assets/) and OUT/report.html (images embedded) -> their paths."""
    from ssl_eq.utils.io import write_atomic

    if not run_dirs:
        raise ValueError("report: give at least one run folder")
    runs = [load_run_info(d) for d in run_dirs]
    out = Path(out_dir)
    assets = out / ASSETS
    assets.mkdir(parents=True, exist_ok=True)

    # sections: (heading, markdown body, html body)
    sections: list[tuple[str, str, str]] = []
    images: list[tuple[str, Path]] = []

    def add_image(png: Path, alt: str) -> tuple[str, str]:
        images.append((alt, png))
        return f"![{alt}]({png.relative_to(out).as_posix()})", _html_image(png, alt)

    head, head_rows, head_reading = headline(runs)
    sections.append(("Headline", f"{_md_table(head, head_rows)}\n\n**{head_reading}**",
                     f"{_html_table(head, head_rows)}<p><b>{html.escape(head_reading)}</b></p>"))
    protocols = protocol_rows(runs)
    if protocols:
        header = ["run", "protocol", "headline R²", "quaternion sign (probe / run input)",
                  "colour targets (probe / run input)", "feature BatchNorm", "rotation probe examples"]
        sections.append(("Probe protocols and conventions", _md_table(header, protocols),
                         _html_table(header, protocols)))

    tables = metric_tables(runs)
    md = [f"### {t}\n\n{_md_table(h, r)}" for t, h, r in tables] or ["No metrics found."]
    ht = [f"<h3>{html.escape(t)}</h3>{_html_table(h, r)}" for t, h, r in tables] or ["<p>No metrics found.</p>"]
    sections.append(("Our runs", "\n\n".join(md), "".join(ht)))

    md_parts, html_parts = [f"> **{reference.SCALE_NOTE}**"], [f"<p><b>{html.escape(reference.SCALE_NOTE)}</b></p>"]
    for src in reference.SOURCES:
        header, rows = list(src.columns), [list(r) for r in src.rows]
        md_parts.append(f"### {src.title}\n\n{src.protocol}\n\n{_md_table(header, rows)}")
        html_parts.append(f"<h3>{html.escape(src.title)}</h3><p>{html.escape(src.protocol)}</p>"
                          f"{_html_table(header, rows)}")
    sections.append(("Published numbers (from the papers, at their scale; one table per source, never mixed)",
                     "\n\n".join(md_parts), f'<div class="published">{"".join(html_parts)}</div>'))

    defs = definitions(runs)
    if defs:
        rows = [[k, v] for k, v in sorted(defs.items())]
        sections.append(("Metric definitions", _md_table(["metric", "definition"], rows),
                         _html_table(["metric", "definition"], rows)))
    status = probe_status_rows(runs)
    notes = [[r.name, "; ".join(r.notes)] for r in runs if r.notes]
    if status or notes:
        md_parts, html_parts = [], []
        if status:
            md_parts.append(_md_table(["run", "probe", "status", "reason"], status))
            html_parts.append(_html_table(["run", "probe", "status", "reason"], status))
        if notes:
            md_parts.append(_md_table(["run", "missing"], notes))
            html_parts.append(_html_table(["run", "missing"], notes))
        sections.append(("Skipped probes and missing files", "\n\n".join(md_parts), "".join(html_parts)))

    curves = plot_curves(runs, assets / "training_curves.png")
    if curves is not None:
        sections.append(("Training curves (TensorBoard)", *add_image(curves, "training curves")))

    md_parts, html_parts = [], []
    for r in runs:
        for name in PROBE_ORDER:
            for rel in r.probe.get("probes", {}).get(name, {}).get("plots", []):
                src = r.path / "probe" / rel
                if src.is_file():
                    dst = assets / f"{r.path.name}__{Path(rel).name}"
                    shutil.copyfile(src, dst)
                    m, h = add_image(dst, f"{r.name}: {Path(rel).stem}")
                    md_parts.append(m)
                    html_parts.append(h)
    if md_parts:
        sections.append(("Probe plots", "\n\n".join(md_parts), "".join(html_parts)))

    orbit = orbit_section(runs, out, add_image)
    if orbit is not None:
        sections.append(("Orbit analysis (ssl-eq orbit)", *orbit))

    sheet, caption = dataset_sheet(runs, assets / "dataset_contact_sheet.png")
    if sheet is not None:
        m, h = add_image(sheet, caption)
        sections.append(("Dataset", m, h))
    else:
        sections.append(("Dataset", f"No contact sheet: {caption}", f"<p>No contact sheet: {html.escape(caption)}</p>"))

    run_list = "\n".join(f"- `{r.path}` ({r.method})" for r in runs)
    md_text = f"# {title}\n\nRuns:\n{run_list}\n\n" + "\n\n".join(f"## {h}\n\n{b}" for h, b, _ in sections) + "\n"
    html_text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                 f"<style>{HTML_STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul>"
                 + "".join(f"<li><code>{html.escape(str(r.path))}</code> ({html.escape(r.method)})</li>" for r in runs)
                 + "</ul>" + "".join(f"<h2>{html.escape(h)}</h2>{b}" for h, _, b in sections) + "</body></html>\n")
    md_path = write_atomic(out / "report.md", lambda p: p.write_text(md_text))
    html_path = write_atomic(out / "report.html", lambda p: p.write_text(html_text))
    return {"md": md_path, "html": html_path}
