"""`ssl-eq report`: report.md + self-contained report.html over one or more run folders.

Per run it reads RUN/metrics.json (training), RUN/probe/probe.json (probes), RUN/tb/ (TensorBoard curves),
RUN/config.yaml (method name, dataset) and RUN/orbit/orbit.json (`ssl-eq orbit`, when present). Missing
pieces show as a dash or a note; a folder holding none of them is refused, and a run whose metrics.json status
is not "completed" is named "(failed)" / "(running or killed)" with its training metrics left out.

Top-down: what was run (dataset, budget, seed, protocol, freshness of the results), the headline (one row per
seed group, `headline`; supervised runs last as the ceiling) with 95 % bootstrap intervals over val objects
(`stats`) and its verdicts, then the details, folded in report.html: protocols, every metric, curves, probe
plots, orbits with the interactive explorer, the dataset, the published numbers and the definitions.
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

from ssl_eq.reports import headline as H
from ssl_eq.reports import reference
from ssl_eq.reports import stats as S
from ssl_eq.reports.freshness import stale_reason
from ssl_eq.reports.contact_sheet import dataset_preview

DASH = "–"
ASSETS = "assets"
MAX_CURVE_TAGS = 8
CURVE_KEYWORDS = ("loss", "acc", "r2")  # tags matching these are drawn first
CURVE_EXCLUDED = ("epoch",)
SHEET_OBJECTS = 6
SHEET_VIEWS = 6
PROBE_ORDER = ("linear", "agg_linear", "aug_params", "rotation", "view_rotation", "colour", "translation", "predictor")
Cell = Any  # a table cell: text ("\n" breaks the line in HTML) or (text, tooltip: the metric key)


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
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml as plain data
    manifest: dict[str, Any] = field(default_factory=dict)  # the dataset's manifest.json (when readable)
    stale: list[str] = field(default_factory=list)  # why probe / orbit results are not about last.ckpt

    @property
    def seed(self) -> Any:
        return self.config.get("seed", DASH)

    @property
    def num_classes(self) -> int | None:
        return len(self.manifest.get("class_names", [])) or self.config.get("data", {}).get("num_classes")


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
            info.config = OmegaConf.to_container(cfg, resolve=False)
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
    if info.dataset is not None:
        from ssl_eq.datasets.native import read_manifest
        try:
            info.manifest = read_manifest(info.dataset)
        except (OSError, ValueError):
            pass  # the contact sheet section names the reason
    orbit = path / "orbit" / "orbit.json"
    for what, record in (("probe", info.probe), ("orbit", _read_json(orbit) if orbit.is_file() else {})):
        reason = stale_reason(path, record, what)
        if reason:
            info.stale.append(reason)
    if info.stale:
        info.name = f"{info.name} (stale)"
    if (path / "tb").is_dir():
        info.curves = read_scalars(path / "tb")
    else:
        info.notes.append("no tb/ (TensorBoard logs)")
    return info


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fmt(value: float | None) -> str:
    """Integers as such, everything else to three significant digits."""
    if value is not None and float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    return S.sig3(value)


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


HUMAN = {"top1": "top-1 accuracy (%)", "top5": "top-5 accuracy (%)", "r2_pooled": "R² pooled",
         "r2_uniform": "R² uniform", "r2_uniform_varying": "R² uniform (varying outputs)",
         "geodesic_deg": "geodesic error (°, lower is better)", "mrr": "mean reciprocal rank", "pre":
         "prediction rotation error (lower is better)", "pred_mse": "predictor MSE (lower is better)",
         "loss": "loss", "global_step": "steps", "wall_s": "wall time (s)"}


def human(key: str) -> Cell:
    """A metric key -> (readable name, key) for a row label with the key as tooltip."""
    *prefix, last = key.split("/")
    name = HUMAN.get(last, last)
    if last.endswith("_mean_baseline"):
        name = f"mean baseline of {HUMAN.get(last.removesuffix('_mean_baseline'), last)}"
    elif last.startswith("hit@"):
        name = f"Hit@{last[4:]}"
    elif last.startswith("std_"):  # collapse signal of a d-wide part
        name = f"std of the L2-normalised {last[4:]} part (0 = collapsed, 1/√d = spread out)"
    return (": ".join([*prefix, name]) if prefix else name, key)


def _natural(key: str) -> list:
    """Sort key that orders hit@2 before hit@10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def metric_tables(runs: list[RunInfo]) -> list[tuple[str, list[Cell], list[list[Cell]]]]:
    """(title, header, rows) per table: training metrics, then one per probe; one row per metric (human name,
    key as tooltip), one column per run (so that tables stay narrow), dash if missing."""
    tables = []
    groups = _training_groups(runs)
    for probe in PROBE_ORDER:
        groups[f"probe: {probe}"] = [(r, {k.split("/", 1)[1]: v for k, v in r.probe.get("metrics", {}).items()
                                          if k.split("/", 1)[0] == probe}) for r in runs]
    header = ["metric", *(r.name for r in runs)]
    for title, per_run in groups.items():
        keys = sorted({k for _, m in per_run for k in m}, key=_natural)
        if not keys:
            continue
        rows = [[human(k), *(_fmt(m.get(k)) for _, m in per_run)] for k in keys]
        if title.startswith("probe: "):  # every probe number names its protocol
            rows.insert(0, ["protocol", *(_protocol(r) for r, _ in per_run)])
        tables.append((title, header, rows))
    return tables


def _protocol(run: RunInfo) -> str:
    return str(run.probe.get("protocol", DASH))


HEADLINE_COLUMNS = (H.TOP1_INV, H.TOP1_FULL, H.R2_POOLED, H.R2_VARYING, H.GEODESIC, H.HIT1)


def headline(runs: list[RunInfo]) -> tuple[list[Cell], list[list[Cell]], list[str]]:
    """The report's first table -> (header, rows, verdict lines): one row per seed group (supervised last, as
    the ceiling) with each headline number's 95 % interval over val objects, its chance level or mean baseline
    beside it, and the group's verdict against its baseline (`headline.reading`)."""
    groups = H.seed_groups(runs)
    header: list[Cell] = ["run", "method", "seeds"]
    header += [(q.label, q.key.format(part="<part>")) for q in HEADLINE_COLUMNS]
    header.append(("verdict (pooled R² vs its baseline)", "rotation/<part>/r2_pooled − r2_pooled_mean_baseline"))
    rows = []
    for g in groups:
        run = g.runs[0]
        classes, views = run.num_classes, run.probe.get("dataset", {}).get("views")
        chance = {H.TOP1_INV: 100 / classes if classes else None, H.TOP1_FULL: 100 / classes if classes else None,
                  H.HIT1: 1 / views if views else None}
        cells: list[Cell] = [g.name, f"{g.method} (ceiling)" if g.is_ceiling else g.method,
                             ", ".join(map(str, g.seeds))]
        for q in HEADLINE_COLUMNS:
            text = H.cell(g, q)
            if q in H.BASELINES and g.values(H.BASELINES[q]) is not None:
                text += f"\nbaseline {H.cell(g, H.BASELINES[q], per_seed=False)}"
            if text != DASH and chance.get(q) is not None:
                text += f"\nchance {S.sig3(chance[q])}"
            if q in (H.R2_POOLED, H.R2_VARYING) and text != DASH:
                text = f"{g.part()}: {text}"
            cells.append(text)
        cells.append(H.verdict(g))
        rows.append(cells)
    return header, rows, H.reading(groups)


def describe_dataset(run: RunInfo) -> str:
    """Source, objects (train / val), views, image size, camera and rotation group of a run's dataset."""
    m = run.manifest
    if not m:
        return f"{run.dataset or DASH} (manifest not readable here)"
    cfg = m.get("config", {})
    split = m.get("split", {})
    objects = f"{m.get('num_objects', DASH)} objects"
    if split:
        objects += f" ({len(split.get('train', []))} train / {len(split.get('val', []))} val)"
    parts = [f"{m.get('source', {}).get('name', DASH)} ({m.get('variant', DASH)})", objects,
             f"{m.get('views', DASH)} views", f"{m.get('image_size', DASH)} px"]
    if cfg.get("camera"):
        parts.append(f"camera {cfg['camera']}")
    if cfg.get("rotation_axes"):
        rng = cfg.get("rotation_range")
        parts.append(f"rotation about {cfg['rotation_axes']}" + (f" within ±{rng:g}°" if rng else ""))
    return ", ".join(parts)


def describe_budget(run: RunInfo) -> str:
    """Steps reached (of the configured maximum), batch size and wall time of a run."""
    t, trainer = run.training, run.config.get("trainer", {})
    steps = t.get("global_step")
    max_steps = trainer.get("max_steps")
    parts = [f"{_fmt(steps) if steps is not None else DASH} steps"
             + (f" of {max_steps}" if isinstance(max_steps, int) and max_steps > 0 else "")]
    batch = run.config.get("data", {}).get("batch_size")
    if batch is not None:
        parts.append(f"batch {batch}")
    wall = next((v for k, v in t.items() if k.endswith("wall_s")), None)
    if wall is not None:
        parts.append(f"{wall / 60:.1f} min")
    return ", ".join(parts)


def run_rows(runs: list[RunInfo]) -> list[list[Cell]]:
    """What was run: [run, method, seed, dataset, budget, probe protocol, results] per run."""
    return [[r.name, r.method, str(r.seed), describe_dataset(r), describe_budget(r), _protocol(r),
             "\n".join(r.stale) if r.stale else ("current checkpoint" if r.probe else "not probed")] for r in runs]


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


def _orbit_frames(folder: Path, record: dict[str, Any]) -> np.ndarray | None:
    """(N, S, H, W, 3) frames of an orbit from its frames sheet (RUN/orbit/<stem>_frames.png), None if absent."""
    from PIL import Image

    name = record.get("frames")
    if not name or not (folder / name).is_file():
        return None
    sheet = np.asarray(Image.open(folder / name).convert("RGB"))
    n, s = len(record["objects"]), int(record["steps"])  # a grid orbit's steps: S₁·S₂ frames
    h, w = sheet.shape[0] // n, sheet.shape[1] // s
    return sheet.reshape(n, h, s, w, 3).transpose(0, 2, 1, 3, 4)


def orbit_section(runs: list[RunInfo], out: Path, add_image) -> tuple[str, str] | None:
    """Area-under-curve table, comparison figures of the runs sharing an orbit (shared y scales), each run's
    figures folded, and the interactive explorer (HTML) of every orbit in the runs' RUN/orbit/orbit.json ->
    (markdown, html), None if no run has one. `add_image(png, alt)` embeds a PNG copied into OUT/assets/."""
    from ssl_eq.orbit import plots as orbit_plots
    from ssl_eq.orbit.explorer import explorer_fragment, orbit_payload
    from ssl_eq.orbit.runner import _finite, _nan, orbit_stem

    found = [(r, r.path / "orbit", _read_json(r.path / "orbit" / "orbit.json").get("orbits") or {}) for r in runs]
    found = [f for f in found if f[2]]
    if not found:
        return None
    curves = sorted({c for _, _, orbits in found for o in orbits.values() for c in o["auc"]})
    by_key: dict[str, dict[str, tuple[Path, dict]]] = {}
    rows, md_parts, html_parts, per_run = [], [], [], []
    for r, folder, orbits in found:
        for key, orbit in orbits.items():
            by_key.setdefault(key, {})[r.name] = (folder, orbit)
            rows.append([r.name, r.method, key, *(_fmt(orbit["auc"].get(c)) for c in curves)])
            for name in orbit.get("plots", []):
                if (folder / name).is_file():
                    dst = out / ASSETS / f"{r.path.name}__orbit_{name}"
                    shutil.copyfile(folder / name, dst)
                    per_run.append(add_image(dst, f"{r.name}: orbit {key} ({Path(name).stem.rsplit('_', 1)[-1]})"))
    explorer = {}
    for key, members in by_key.items():
        records = {name: orbit for name, (_, orbit) in members.items()}
        if len(records) > 1:
            png = orbit_plots.curves_figure({k: _nan(v) for k, v in records.items()}, None,
                                            out / ASSETS / f"orbit_compare_{orbit_stem(key)}.png",
                                            f"{key}: {', '.join(records)} (shared y scales)")
            m, h = add_image(png, f"orbit {key}: runs compared")
            md_parts.append(m)
            html_parts.append(h)
        folder, first = next(iter(members.values()))
        explorer[key] = _finite(orbit_payload(records, _orbit_frames(folder, first)))
    header = ["run", "method", "orbit (latent/range@source)", *(human(c)[0] for c in curves)]
    note = ("Area under each orbit curve divided by the orbit's span, i.e. the curve's mean over the orbit "
            "(lower is better except for Hit@1).")
    md = f"{note}\n\n{_md_table(header, rows)}\n\n" + "\n\n".join(md_parts + [m for m, _ in per_run])
    page = (f"<p>{html.escape(note)}</p>{_html_table(header, rows)}" + "".join(html_parts)
            + _fold("Interactive explorer (slider over Δ: frame and markers on every curve)",
                    explorer_fragment(explorer), open_=True)
            + _fold("Each run's orbit figures", f'<div class="thumbs">{"".join(h for _, h in per_run)}</div>'))
    return md, page


def _text(cell: Cell) -> str:
    return cell[0] if isinstance(cell, tuple) else str(cell)


def _md_cell(value: Cell) -> str:
    """One Markdown table cell: a "|" or a line break (e.g. in an exception message) would split the row."""
    return re.sub(r"\s*[\r\n]+\s*", "; ", _text(value).strip()).replace("|", "\\|")


def _md_table(header: list[Cell], rows: list[list[Cell]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
    keys = [f"{_text(h)}: `{h[1]}`" for h in header if isinstance(h, tuple)]
    keys += [f"{_text(r[0])}: `{r[0][1]}`" for r in rows if isinstance(r[0], tuple) and r[0][0] != r[0][1]]
    return "\n".join(lines) + (f"\n\nKeys: {'; '.join(keys)}." if keys else "")


def _html_cell(tag: str, cell: Cell) -> str:
    title = f' title="{html.escape(cell[1])}"' if isinstance(cell, tuple) else ""
    body = "<br>".join(html.escape(line) for line in _text(cell).split("\n"))
    if isinstance(cell, tuple):
        body += '<sup class="key">?</sup>'
    return f"<{tag}{title}>{body}</{tag}>"


def _html_table(header: list[Cell], rows: list[list[Cell]], cls: str = "") -> str:
    head = "".join(_html_cell("th", h) for h in header)
    body = "".join("<tr>" + "".join(_html_cell("td", c) for c in r) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_image(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>' \
           f'{html.escape(alt)}</figcaption></figure>'


def _fold(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>{body}</details>"


HTML_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}"
              "table{border-collapse:collapse;margin:0.6em 0;font-size:13px;max-width:100%}"
              "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top;"
              "overflow-wrap:anywhere}th{background:#f3f3f3}td:first-child{text-align:left}"
              "table.headline td,table.headline th,table.runs td,table.runs th{text-align:left}"
              "table.runs td:first-child{white-space:nowrap}table.headline td:nth-child(-n+3),"
              "table.headline th:nth-child(-n+3){white-space:nowrap}th{overflow-wrap:normal}sup.key{color:#888;font-size:9px;cursor:help}"
              "img{max-width:100%}figure{display:inline-block;margin:4px;vertical-align:top}"
              ".thumbs figure{width:31%}.thumbs img{width:100%}figcaption{font-size:11px;color:#555}"
              "#verdict{background:#eef5ff;border-left:4px solid #2a6fd6;padding:0.4em 1em;margin:0.5em 0}"
              "#verdict li{margin:0.2em 0}.stale{color:#b00}details{margin:0.6em 0}"
              "summary{cursor:pointer;font-weight:bold;font-size:1.1em;padding:0.2em 0}"
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

    # sections: (heading, markdown body, html body, shown open (else folded in <details>))
    sections: list[tuple[str, str, str, bool]] = []
    images: list[tuple[str, Path]] = []

    def add_image(png: Path, alt: str) -> tuple[str, str]:
        images.append((alt, png))
        return f"![{alt}]({png.relative_to(out).as_posix()})", _html_image(png, alt)

    sections.append(("What was run", _md_table(RUN_HEADER, run_rows(runs)),
                     _html_table(RUN_HEADER, run_rows(runs), "runs"), True))
    head, head_rows, verdicts = headline(runs)
    note = (f"Each number: the mean over a group's seeds [95 % interval from {S.DRAWS} bootstrap resamples of the "
            f"val objects the seeds share, resampling seed {S.SEED}]; ± sd and the per-seed values for several "
            "seeds. A group is above its baseline only when the interval of (R² − mean baseline) lies above 0; "
            "a gap between groups is stated only when its paired interval excludes 0.")
    stale = [f"{r.name}: {reason}" for r in runs for reason in r.stale]
    md_verdict = "\n".join(f"- **{v}**" for v in verdicts) + "".join(f"\n- ⚠ {x}" for x in stale)
    html_verdict = ('<ul id="verdict">' + "".join(f"<li><b>{html.escape(v)}</b></li>" for v in verdicts)
                    + "".join(f'<li class="stale">⚠ {html.escape(x)}</li>' for x in stale) + "</ul>")
    sections.append(("Headline", f"{md_verdict}\n\n{_md_table(head, head_rows)}\n\n{note}",
                     f"{html_verdict}{_html_table(head, head_rows, 'headline')}<p><small>{html.escape(note)}"
                     f"</small></p>", True))

    orbit = orbit_section(runs, out, add_image)
    if orbit is not None:
        sections.append(("Orbit analysis (ssl-eq orbit)", *orbit, False))

    protocols = protocol_rows(runs)
    if protocols:
        header = ["run", "protocol", "headline R²", "quaternion sign (probe / run input)",
                  "colour targets (probe / run input)", "feature BatchNorm", "rotation probe examples"]
        sections.append(("Probe protocols and conventions", _md_table(header, protocols),
                         _html_table(header, protocols), False))

    tables = metric_tables(runs)
    md = [f"### {t}\n\n{_md_table(h, r)}" for t, h, r in tables] or ["No metrics found."]
    ht = [_fold(t, _html_table(h, r)) for t, h, r in tables] or ["<p>No metrics found.</p>"]
    sections.append(("Our runs: every metric", "\n\n".join(md), "".join(ht), False))

    curves = plot_curves(runs, assets / "training_curves.png")
    if curves is not None:
        sections.append(("Training curves (TensorBoard)", *add_image(curves, "training curves"), False))

    md_parts, html_parts = [], []
    for r in runs:
        figures = []
        for name in PROBE_ORDER:
            for rel in r.probe.get("probes", {}).get(name, {}).get("plots", []):
                src = r.path / "probe" / rel
                if src.is_file():
                    dst = assets / f"{r.path.name}__{Path(rel).name}"
                    shutil.copyfile(src, dst)
                    figures.append(add_image(dst, f"{r.name}: {Path(rel).stem}"))
        if figures:
            md_parts += [m for m, _ in figures]
            html_parts.append(_fold(r.name, f'<div class="thumbs">{"".join(h for _, h in figures)}</div>'))
    if md_parts:
        sections.append(("Probe plots", "\n\n".join(md_parts), "".join(html_parts), False))

    sheet, caption = dataset_sheet(runs, assets / "dataset_contact_sheet.png")
    if sheet is not None:
        sections.append(("Dataset", *add_image(sheet, caption), False))
    else:
        sections.append(("Dataset", f"No contact sheet: {caption}",
                         f"<p>No contact sheet: {html.escape(caption)}</p>", False))

    md_parts, html_parts = [f"> **{reference.SCALE_NOTE}**"], [f"<p><b>{html.escape(reference.SCALE_NOTE)}</b></p>"]
    for src in reference.SOURCES:
        header, rows = list(src.columns), [list(r) for r in src.rows]
        md_parts.append(f"### {src.title}\n\n{src.protocol}\n\n{_md_table(header, rows)}")
        html_parts.append(f"<h3>{html.escape(src.title)}</h3><p>{html.escape(src.protocol)}</p>"
                          f"{_html_table(header, rows)}")
    sections.append(("Published numbers (from the papers, at their scale; one table per source, never mixed)",
                     "\n\n".join(md_parts), f'<div class="published">{"".join(html_parts)}</div>', False))

    defs = definitions(runs)
    if defs:
        rows = [[k, v] for k, v in sorted(defs.items(), key=lambda kv: _natural(kv[0]))]
        sections.append(("Metric definitions", _md_table(["metric", "definition"], rows),
                         _html_table(["metric", "definition"], rows), False))
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
        sections.append(("Skipped probes and missing files", "\n\n".join(md_parts), "".join(html_parts), False))

    md_text = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n{b}" for h, b, _, _ in sections) + "\n"
    body = "".join(f"<h2>{html.escape(h)}</h2>{b}" if is_open else _fold(h, b) for h, _, b, is_open in sections)
    html_text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                 f"<style>{HTML_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
    md_path = write_atomic(out / "report.md", lambda p: p.write_text(md_text))
    html_path = write_atomic(out / "report.html", lambda p: p.write_text(html_text))
    return {"md": md_path, "html": html_path}


RUN_HEADER = ["run", "method", "seed", "dataset", "budget", "probe protocol", "results"]
