"""`ssl-eq orbit`: render orbits of one latent, encode them with each run, measure, plot, write RUN/orbit/.

An orbit is keyed "<latent>/<range>@<source>" (source: "dataset", the run's own val objects, or the --source
rendered in the dataset's scene), so orbits over different sources coexist. Per run: RUN/orbit/orbit.json
(docs/architecture.md "Orbit analysis"), RUN/orbit/<stem>_{curves,polar,pca}.png and <stem>_frames.png (the
rendered frames, objects × steps, for the explorer), <stem> = the key with "/" and "@" as "_" / "__"; across
runs: OUT/<stem>_{curves,polar,pca}.png, with `html` OUT/orbit_explorer.html. Figures of one orbit share their
y scales across runs. Runs sharing a dataset share the renders. A run that cannot be analysed (no dataset,
source gone, latent absent) is reported and skipped; the others are still analysed.
"""
from __future__ import annotations

import datetime
import logging
import math
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_eq.orbit import measures as M
from ssl_eq.orbit import plots
from ssl_eq.orbit.frames import OrbitObjects, render_frames, select_orbit_objects
from ssl_eq.orbit.latents import (LATENT_ORBITS, GridPlan, OrbitPlan, check_latent, check_range_steps, grid_latents,
                                  orbit_latents, plan_orbit)
from ssl_eq.utils.budget import check_orbit
from ssl_eq.utils.device import resolve_device
from ssl_eq.utils.io import read_json, write_json_atomic

log = logging.getLogger(__name__)

ORBIT_DIR = "orbit"
ORBIT_JSON = "orbit.json"
PROBE_HEADS = "probe/rotation_head_*.pt"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
FIGURES = ("curves", "polar", "pca")
GRID_FIGURES = ("heatmap",)       # two-parameter orbits
FRAMES = "frames"                 # <stem>_frames.png: the rendered frames, one row per object
DATASET_SOURCE = "dataset"
EXPLORER = "orbit_explorer.html"


def orbit_stem(key: str) -> str:
    """File-name stem of an orbit key: "rot_z/full@dataset" -> "rot_z_full__dataset" (a grid's "a,b" -> "a+b")."""
    return key.replace("@", "__").replace("/", "_").replace(",", "+")


@dataclass
class OrbitOptions:
    latents: list[str] | None = None        # None: every latent of each run's dataset schema; "a,b": a 2-D grid
    range: str = "full"
    steps: int = 24
    objects: int = 8
    source: str | None = None
    source_root: str | None = None
    data: str | None = None                 # dataset folder instead of the one each run's config.yaml names (moved)
    device: str = "auto"
    batch_size: int = 128
    html: bool = False                      # also write OUT/orbit_explorer.html

    @property
    def source_tag(self) -> str:
        """The source part of an orbit key: "dataset", or the --source name (with its root folder's name)."""
        if self.source is None:
            return DATASET_SOURCE
        return self.source + (f"-{Path(self.source_root).name}" if self.source_root else "")

    def validate(self) -> None:
        for spec in self.latents or []:
            names = spec.split(",")
            if len(names) > 2 or len(set(names)) != len(names):
                raise ValueError(f"--latent {spec!r}: one latent, or two distinct ones separated by a comma for a "
                                 "two-parameter (grid) orbit")
            for name in names:
                check_latent(name)
        check_range_steps(self.range, self.steps)
        if self.objects < 2:
            raise ValueError(f"--objects must be >= 2 (invariance is normalised by distances between objects), "
                             f"got {self.objects}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def encode(model: Any, frames: Tensor, device: str, batch_size: int) -> dict[str, Tensor]:
    """uint8 frames (N, S, H, W, 3) -> {"rep/full|inv|equi", "emb/inv|equi": (N, S, ·)} float32 on the CPU."""
    from ssl_eq.probes.features import frozen_eval

    n, s = frames.shape[:2]
    outs: dict[str, list[Tensor]] = {}
    with frozen_eval(model):
        for chunk in frames.flatten(0, 1).permute(0, 3, 1, 2).split(batch_size):
            x = model.preprocess(chunk.to(device))
            for prefix, parts in (("rep", model.representations(x)), ("emb", model.embeddings(x))):
                for k, v in parts.items():
                    outs.setdefault(f"{prefix}/{k}", []).append(v.float().cpu())
    return {k: torch.cat(v).reshape(n, s, -1) for k, v in outs.items()}


def load_probe_heads(run_dir: Path, digest: str, notes: list[str]) -> dict[str, tuple[Any, str]]:
    """part -> (FittedHead, feature key) of RUN/probe/rotation_head_<part>.pt trained on this checkpoint."""
    from ssl_eq.probes.heads import FittedHead

    heads = {}
    for path in sorted(run_dir.glob(PROBE_HEADS)):
        head, meta = FittedHead.load(path)
        if meta.get("checkpoint_digest") != digest:
            notes.append(f"{path.name}: trained on another checkpoint; re-run `ssl-eq probe` (skipped)")
            continue
        heads[path.stem.removeprefix("rotation_head_")] = (head, meta["feature"])
    return heads


def _pose_curve(model: Any, frames: Tensor, ref: int, actions: dict[str, Tensor], device: str,
                batch_size: int) -> Tensor:
    """model.pose_error(x_ref (B, 3, S, S), x (B, 3, S, S), actions {key: (B, ...)}) -> (B,) over all frames."""
    from ssl_eq.probes.features import frozen_eval

    n, s = frames.shape[:2]
    chw = frames.permute(0, 1, 4, 2, 3)
    obj = torch.arange(n).repeat_interleave(s)
    out = []
    with frozen_eval(model):
        for idx in torch.arange(n * s).split(batch_size):
            x_ref = model.preprocess(chw[obj[idx], ref].to(device))
            x = model.preprocess(chw.flatten(0, 1)[idx].to(device))
            out.append(model.pose_error(x_ref, x, {k: v[idx].to(device) for k, v in actions.items()}).float().cpu())
    return torch.cat(out).reshape(n, s)


def measure_orbit(model: Any, frames: Tensor, latents: np.ndarray, plan: OrbitPlan, heads: dict[str, tuple[Any, str]],
                  device: str, batch_size: int) -> tuple[dict[str, Tensor], Tensor, str, float | None, list[str]]:
    """One run on one orbit: frames (N, S, H, W, 3), latents (N, S, D) -> (curves {name: (N, S)},
    2-D PCA trajectory (N, S, 2), the part it was taken of, inter-object distance, notes)."""
    from ssl_eq.datasets.relative import relative_transform
    from ssl_eq.probes.features import frozen_eval
    from ssl_eq.probes.runner import resolve_conventions

    feats = encode(model, frames, device, batch_size)
    # actions in the conventions the model was trained with (a run without a config: the defaults)
    conventions = resolve_conventions({}, model.cfg)["run"] if hasattr(model, "cfg") else {}
    n, s = frames.shape[:2]
    ref = plan.reference_index
    lat = torch.as_tensor(latents)
    actions = relative_transform(lat[:, ref:ref + 1].expand_as(lat), lat, **conventions)  # ref -> t, (N, S, ...)
    flat_actions = {k: v.flatten(0, 1) for k, v in actions.items()}
    curves: dict[str, Tensor] = {}
    notes: list[str] = []
    scale = None
    if feats["rep/inv"].shape[-1]:
        inv_curves, scale = M.invariance_curves(feats["rep/inv"], ref)
        curves.update(inv_curves)
    else:
        notes.append("invariance: the invariant part has width 0 for this method")
    if getattr(model, "has_predictor", False):
        emb = feats["emb/equi"]
        if model.action_key not in flat_actions:
            notes.append(f"predictor: its action {model.action_key!r} is not a scene transformation (skipped)")
        else:
            with frozen_eval(model):
                query = emb[:, ref].repeat_interleave(s, 0).to(device)
                pred = model.predict(query, {k: v.to(device) for k, v in flat_actions.items()}).float().cpu()
            curves.update(M.predictor_curves(pred.reshape(emb.shape), emb))
    for part, (head, feature) in heads.items():
        f = feats[feature]
        pair = torch.cat([f[:, ref:ref + 1].expand_as(f), f], -1).flatten(0, 1)
        curves[f"probe_{part}"] = M.probe_curve(head.predict(pair).reshape(n, s, 4), actions["rel_rotation_quat"])
    if callable(getattr(model, "pose_error", None)):
        curves["pose_error"] = _pose_curve(model, frames, ref, flat_actions, device, batch_size)
    part = "equi" if feats["rep/equi"].shape[-1] else "full"
    return curves, M.pca_2d(feats[f"rep/{part}"]), part, scale, notes


def train_band(plan: OrbitPlan, scene: dict[str, Any]) -> list[float] | None:
    """[lo, hi] of Δ (display units) inside the latent's training width, centred on view 0; None if the orbit
    stays inside it."""
    half = LATENT_ORBITS[plan.latent].train_width(scene) / 2
    if -half <= plan.offsets.min() and plan.offsets.max() <= half:
        return None
    return [-half * plan.scale, half * plan.scale]


def orbit_record(plan: OrbitPlan, objects: OrbitObjects, kept: list[int], latents: np.ndarray,
                 curves: dict[str, Tensor], pca: Tensor, pca_part: str, scale: float | None,
                 notes: list[str], source: str = DATASET_SOURCE, scene: dict[str, Any] | None = None) -> dict[str, Any]:
    """The orbit.json entry of one run and one orbit (docs/architecture.md "Orbit analysis")."""
    out_curves, auc = {}, {}
    for name, values in curves.items():
        v = values.double().numpy()
        out_curves[name] = {**M.summarise(v), "per_object": v.tolist()}
        auc[name] = M.area_under_curve(np.asarray(out_curves[name]["mean"]), plan.offsets, plan.closed,
                                       plan.polar_period)
    return {
        "latent": plan.latent, "range": plan.range, "source": source, "source_describe": objects.describe,
        "scene": scene, "train_band": train_band(plan, scene) if scene else None,
        "steps": len(plan.offsets), "parameter": plan.offsets.tolist(),
        "unit": plan.unit, "scale": plan.scale, "closed": plan.closed, "polar_period": plan.polar_period,
        "reference_index": plan.reference_index, "objects": [objects.refs[i].object_id for i in kept],
        "view0_latents": latents[:, plan.reference_index].tolist(), "inter_object_distance": scale,
        "curves": out_curves, "auc": auc, "pca": {"part": pca_part, "coords": pca.tolist()},
        "notes": objects.notes + notes,
    }


def grid_record(plan: GridPlan, objects: OrbitObjects, kept: list[int], latents: np.ndarray,
                curves: dict[str, Tensor], pca: Tensor, pca_part: str, scale: float | None, notes: list[str],
                source: str = DATASET_SOURCE, scene: dict[str, Any] | None = None) -> dict[str, Any]:
    """The orbit.json entry of a two-parameter orbit: curves over the S₁·S₂ grid frames (row-major, `grid`
    gives both latents' offsets), "parameter" the flat frame index; auc: the mean over the grid."""
    out_curves = {name: {**M.summarise(v.double().numpy()), "per_object": v.double().numpy().tolist()}
                  for name, v in curves.items()}
    first, second = plan.first, plan.second
    return {
        "latent": plan.latent, "range": plan.range, "source": source, "source_describe": objects.describe,
        "scene": scene, "train_band": None, "steps": plan.shape[0] * plan.shape[1],
        "parameter": list(range(plan.shape[0] * plan.shape[1])), "unit": "grid frame", "scale": 1.0,
        "closed": False, "polar_period": float(plan.shape[0] * plan.shape[1]),
        "reference_index": plan.reference_index,
        "grid": {"latents": [first.latent, second.latent], "shape": list(plan.shape),
                 "parameters": [(p.offsets * p.scale).tolist() for p in (first, second)],
                 "units": [first.unit, second.unit], "reference": [first.reference_index, second.reference_index]},
        "objects": [objects.refs[i].object_id for i in kept], "view0_latents": latents[:, plan.reference_index].tolist(),
        "inter_object_distance": scale, "curves": out_curves,
        "auc": {name: float(np.nanmean(c["mean"])) for name, c in out_curves.items()},
        "pca": {"part": pca_part, "coords": pca.tolist()}, "notes": objects.notes + notes,
    }


def _finite(obj: Any) -> Any:
    """NaN / inf -> None, recursively (orbit.json stays strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _nan(obj: Any) -> Any:
    """Inverse of _finite for plotting: None -> NaN."""
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: _nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan(v) for v in obj]
    return obj


def write_orbit_json(run_dir: Path, header: dict[str, Any], records: dict[str, dict[str, Any]]) -> Path:
    """Merge `records` into RUN/orbit/orbit.json (entries of the same checkpoint are kept), atomically."""
    path = run_dir / ORBIT_DIR / ORBIT_JSON
    orbits = {}
    if path.is_file():
        try:
            old = read_json(path, "orbit.json")
            if old.get("checkpoint_digest") == header["checkpoint_digest"]:
                # entries keyed before the source was part of the key ("<latent>/<range>") are replaced
                orbits = {k: v for k, v in old.get("orbits", {}).items() if "@" in k}
        except ValueError:
            pass  # unreadable: replaced
    orbits.update(records)
    return write_json_atomic(path, _finite({**header, "definitions": M.DEFINITIONS, "orbits": orbits}))


def _dataset_of(run_dir: Path, data: str | None = None) -> tuple[Path, dict[str, Any]]:
    from omegaconf import OmegaConf

    from ssl_eq.datasets.native import read_manifest

    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (not a run folder)")
    root = data or OmegaConf.select(OmegaConf.load(cfg), "data.root", default=None)
    if not root:
        raise ValueError(f"{cfg} names no dataset (data.root)")
    try:
        return Path(str(root)), read_manifest(root)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise FileNotFoundError(f"{run_dir}: its dataset is not available here ({e}); the manifest names the "
                                "objects and scene to render (moved? pass --data DIR)") from e


class OrbitAnalysis:
    """Analyses run folders one by one, sharing objects and renders between runs of one dataset."""

    def __init__(self, opts: OrbitOptions) -> None:
        opts.validate()
        self.opts = opts
        self.device = str(resolve_device(opts.device))  # a missing GPU is refused before any run
        self._objects: dict[tuple, OrbitObjects] = {}
        self._frames: dict[tuple, tuple[Tensor, list[int], np.ndarray]] = {}
        self.results: dict[str, dict[str, dict[str, Any]]] = {}   # "<latent>/<range>" -> run name -> record
        self.strips: dict[str, np.ndarray] = {}                   # "<latent>/<range>" -> (S, H, W, 3) of object 0
        self.folders: dict[str, Path] = {}                        # run name -> RUN/orbit
        self.sheets: dict[str, np.ndarray] = {}                   # key -> (N, S, H, W, 3) frames

    def objects_for(self, dataset: Path, manifest: dict[str, Any]) -> OrbitObjects:
        o = self.opts
        key = (str(dataset.resolve()), manifest.get("created"), o.source, o.source_root, o.objects)
        if key not in self._objects:
            self._objects[key] = select_orbit_objects(manifest, dataset, o.objects, o.source, o.source_root)
        return self._objects[key]

    def frames_for(self, objects: OrbitObjects, plan: OrbitPlan | GridPlan) -> tuple[Tensor, list[int], np.ndarray]:
        key = (objects.key, plan.latent, plan.range, self.opts.steps)
        if key not in self._frames:
            if isinstance(plan, GridPlan):
                columns = tuple(objects.latent_schema.index(p.latent) for p in (plan.first, plan.second))
                latents = grid_latents(objects.view0, columns, plan)
            else:
                latents = orbit_latents(objects.view0, objects.latent_schema.index(plan.latent), plan.offsets)
            frames, kept = render_frames(objects, latents, self.device, self.opts.batch_size)
            self._frames[key] = (frames, kept, latents[kept])
        return self._frames[key]

    def run(self, run_dir: str | Path) -> list[str]:
        """Analyse one run folder -> error messages of the orbits that could not be analysed (empty: all done)."""
        from ssl_eq.methods import load_run
        from ssl_eq.utils.identity import weights_digest

        run_dir = Path(run_dir)
        name = self.run_name(run_dir)
        if not (run_dir / CHECKPOINT).is_file():
            raise FileNotFoundError(f"{run_dir}: no checkpoint at {run_dir / CHECKPOINT}")
        dataset, manifest = _dataset_of(run_dir, self.opts.data)
        objects = self.objects_for(dataset, manifest)
        check_orbit(objects=len(objects.refs), steps=self.opts.steps, image_size=objects.settings.image_size)
        schema = list(manifest["latent_schema"])
        errors = []
        wanted = self.opts.latents or orbit_latents_of(schema)
        todo = []
        for latent in wanted:
            missing = [n for n in latent.split(",") if n not in schema]
            if missing:
                errors.append(f"{run_dir}: its dataset {dataset} (variant {manifest['variant']}) has no latent "
                              f"{missing[0]!r}; its latents are {schema}")
            else:
                todo.append(latent)
        if not todo:
            return errors
        model = load_run(run_dir, map_location=self.device)
        digest = weights_digest(run_dir / CHECKPOINT)
        head_notes: list[str] = []
        heads = load_probe_heads(run_dir, digest, head_notes)
        records = {}
        scene = objects.settings.scene.to_dict()
        for latent in todo:
            plans = [plan_orbit(n, self.opts.range, self.opts.steps, scene) for n in latent.split(",")]
            plan = plans[0] if len(plans) == 1 else GridPlan(*plans)
            frames, kept, latents = self.frames_for(objects, plan)
            curves, pca, part, scale, notes = measure_orbit(model, frames, latents, plan, heads, self.device,
                                                            self.opts.batch_size)
            make = orbit_record if isinstance(plan, OrbitPlan) else grid_record
            record = make(plan, objects, kept, latents, curves, pca, part, scale, head_notes + notes,
                          self.opts.source_tag, scene)
            key = f"{latent}/{plan.range}@{self.opts.source_tag}"
            log.info("  %s: %d objects x %d frames", key, len(kept), record["steps"])
            record = _finite(record)
            stem = orbit_stem(key)
            # drawn by `finish`, with shared y scales
            record["plots"] = [f"{stem}_{f}.png" for f in (FIGURES if isinstance(plan, OrbitPlan) else GRID_FIGURES)]
            record["frames"] = plots.frames_sheet(frames.numpy(), run_dir / ORBIT_DIR / f"{stem}_{FRAMES}.png").name
            records[key] = record
            self.results.setdefault(key, {})[name] = record
            self.strips.setdefault(key, frames[0].numpy())
            self.sheets.setdefault(key, frames.numpy())
        write_orbit_json(run_dir, {
            "run": str(run_dir), "method": type(model).__name__, "checkpoint_digest": digest,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dataset": str(dataset), "source": objects.describe}, records)
        return errors

    def run_name(self, run_dir: Path) -> str:
        """The run's folder name, with its parent's when another analysed run has the same name."""
        name = run_dir.name if run_dir.name not in self.folders else f"{run_dir.parent.name}/{run_dir.name}"
        self.folders[name] = run_dir / ORBIT_DIR
        return name

    def _plot(self, results: dict[str, dict[str, Any]], strip: np.ndarray | None, folder: Path, title: str,
              key: str, limits: dict[str, tuple[float, float]]) -> list[str]:
        stem = orbit_stem(key)
        results = {k: _nan(v) for k, v in results.items()}
        if next(iter(results.values())).get("grid"):
            return [plots.grid_figure(results, folder / f"{stem}_heatmap.png", title, limits).name]
        paths = [plots.curves_figure(results, strip, folder / f"{stem}_curves.png", title, limits),
                 plots.polar_figure(results, folder / f"{stem}_polar.png", title),
                 plots.pca_figure(results, folder / f"{stem}_pca.png", title)]
        return [p.name for p in paths]

    def finish(self, out: Path) -> list[Path]:
        """Each run's figures (y scales shared across the runs of one orbit), then the figures over all runs
        of each orbit in `out` (and the explorer with `html`) -> paths written in `out`."""
        written = []
        out.mkdir(parents=True, exist_ok=True)
        for key, results in self.results.items():
            limits = plots.shared_limits({k: _nan(v) for k, v in results.items()})
            title = f"{key.split('@')[0]} over {results[next(iter(results))]['source']} objects"
            for name, record in results.items():
                self._plot({name: record}, self.strips[key], self.folders[name], f"{name}: {title}", key, limits)
            if len(results) == 1:  # the run's own figures
                (name, record), = results.items()
                written += [Path(shutil.copyfile(self.folders[name] / png, out / png)) for png in record["plots"]]
            else:
                names = self._plot(results, self.strips[key], out, f"{', '.join(results)}: {title}", key, limits)
                written += [out / n for n in names]
        if self.opts.html:
            from ssl_eq.orbit.explorer import write_explorer
            written.append(write_explorer(self.results, self.sheets, out / EXPLORER))
        return written


def orbit_latents_of(schema: list[str]) -> list[str]:
    """Latents of `schema` that have an orbit definition, in schema order."""
    return [n for n in schema if n in LATENT_ORBITS]


def auc_rows(results: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the area-under-curve table: one row per run and orbit, one column per curve."""
    curves = sorted({c for runs in results.values() for r in runs.values() for c in r["auc"]})
    rows = [[run, key, *(_fmt(r["auc"].get(c)) for c in curves)]
            for key, runs in results.items() for run, r in runs.items()]
    return ["run", "orbit", *curves], rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def analyse(run_dirs: list[str], out: str | Path, opts: OrbitOptions, debug: bool = False) -> int:
    """`ssl-eq orbit`: analyse every run, print a summary -> exit code (1 when any run or orbit failed)."""
    analysis = OrbitAnalysis(opts)
    failures = []
    for run_dir in run_dirs:
        print(f"orbit: {run_dir}", flush=True)
        try:
            failures += analysis.run(run_dir)
        except Exception as e:  # noqa: BLE001 - one run that cannot be analysed must not stop the others
            if debug:
                traceback.print_exc()
            failures.append(f"{run_dir}: {e}" if isinstance(e, (ValueError, OSError, KeyError))
                            else f"{run_dir}: {type(e).__name__}: {e}")
    out = Path(out)
    written = analysis.finish(out) if analysis.results else []
    if analysis.results:
        header, rows = auc_rows(analysis.results)
        print("area under each curve (mean over the orbit):")
        print("  " + " | ".join(header))
        for row in rows:
            print("  " + " | ".join(row))
        for p in written:
            print(f"wrote {p}")
    for f in failures:
        print(f"ssl-eq orbit: error: {f}", file=sys.stderr)
    return 1 if failures else 0
