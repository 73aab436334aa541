"""The Python API (README "Python API"): a trained run as a frozen encoder, the datasets as (3, H, W) tensors
with their latents, and the render / probe / report / orbit commands as functions that return their results.

Pretraining: `ssl_eq.compose_config(overrides)` + `ssl_eq.pretrain(cfg)` (the same overrides as `ssl-eq pretrain`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

log = logging.getLogger("ssl_eq")

PARTS = ("inv", "equi", "full")
DATASET_KINDS = ("view", "pair", "sequence")


class Encoder:
    """A trained run, frozen (no gradients) and in eval mode: `.embed(images)`, `.embeddings(images)`,
    `.predict(equi, action)` (methods with a predictor), `.action(latents_1, latents_2)`; calling it embeds.

    `model` is the run's `ssl_eq.methods` LightningModule, for anything else (`model.backbone`, ...).
    """

    def __init__(self, model: Any) -> None:
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        from ssl_eq.datasets.relative import DEFAULT_COLOUR_TARGETS, DEFAULT_QUATERNION_SIGN

        data = model.cfg.data
        # the conventions the run was trained with: the actions `.action` computes match its predictor's input
        self.conventions = {"quaternion_sign": data.get("quaternion_sign") or DEFAULT_QUATERNION_SIGN,
                            "colour_targets": data.get("colour_targets") or DEFAULT_COLOUR_TARGETS}

    @property
    def method(self) -> str:
        return str(self.model.cfg.method.name)

    @property
    def image_size(self) -> int:
        """Images are resized to this size (antialiased bilinear) before the backbone."""
        return self.model.image_size

    @property
    def dims(self) -> dict[str, int]:
        """Width of each representation part."""
        return {"inv": self.model.inv_dim, "equi": self.model.equi_dim, "full": self.model.rep_dim}

    @property
    def has_predictor(self) -> bool:
        return bool(self.model.has_predictor)

    def _images(self, images: Tensor) -> Tensor:
        """uint8, or float in [0, 1], (N, 3, H, W) -> the model's preprocessed input on its device."""
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W) or, for sequences, (B, M, 3, H, W), got shape "
                             f"{tuple(images.shape)} (channels first; torch.from_numpy(hwc).permute(2, 0, 1))")
        if images.is_floating_point() and images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"images: float images must lie in [0, 1] (got [{images.min():.3g}, "
                             f"{images.max():.3g}]); pass uint8 or unnormalised floats, the encoder normalises")
        if not images.is_floating_point() and images.dtype != torch.uint8:
            raise ValueError(f"images: expected uint8 or float in [0, 1], got {images.dtype}")
        return self.model.preprocess(images.to(self.device))

    def embed(self, images: Tensor, latents: Tensor | None = None) -> dict[str, Tensor]:
        """Representations (what the probes read): images (B, 3, H, W) -> {"inv": (B, Di), "equi": (B, De),
        "full": (B, D)}, on the encoder's device.

        Sequences (B, M, 3, H, W) give every part per view, (B, M, ·), and for seq-JEPA also "agg" (B, Da), the
        aggregate z_AGG over the M views; an action-conditioned seq-JEPA needs the views' `latents` (B, M, L).
        """
        from ssl_eq.probes.features import frozen_eval

        images = torch.as_tensor(images)
        sequence = images.ndim == 5
        b = images.shape[0]
        with frozen_eval(self.model):
            reps = self.model.representations(self._images(images.flatten(0, 1) if sequence else images))
            out = {k: reps[k] for k in PARTS}
            if not sequence:
                return out
            out = {k: v.unflatten(0, (b, -1)) for k, v in out.items()}
            if hasattr(self.model, "aggregate"):
                out["agg"] = self.model.aggregate(out["full"], self._sequence_actions(latents, out["full"].shape[1]))
        return out

    __call__ = embed

    def _sequence_actions(self, latents: Tensor | None, views: int) -> Tensor | None:
        """(B, M, L) latents -> the (B, M-1, A) actions between consecutive views, as in training."""
        from ssl_eq.datasets.relative import relative_transform

        if getattr(self.model, "action_spec", None) is None:
            return None
        if latents is None:
            raise ValueError(f"embed: this {self.method} run is action-conditioned; pass the views' latents "
                             f"(B, M, L) with the sequence")
        latents = torch.as_tensor(latents)
        if latents.ndim != 3 or latents.shape[1] != views:
            raise ValueError(f"latents: expected (B, {views}, L) for {views} views, got {tuple(latents.shape)}")
        rel = relative_transform(latents[:, :-1], latents[:, 1:], **self.conventions)
        return self.model.actions(rel).to(self.device)

    def embeddings(self, images: Tensor) -> dict[str, Tensor]:
        """Projector outputs, the space the predictor works in: images (B, 3, H, W) -> {"inv": (B, Ei),
        "equi": (B, Ee)}."""
        from ssl_eq.probes.features import frozen_eval

        with frozen_eval(self.model):
            return self.model.embeddings(self._images(torch.as_tensor(images)))

    def action(self, latents_1: Tensor, latents_2: Tensor) -> Tensor:
        """The predictor's action for view 1 -> view 2 from the views' latents (B, L) each (e.g. the relative
        rotation quaternion (B, 4) wxyz for SIE), with the run's conventions."""
        from ssl_eq.datasets.relative import relative_transform

        key = self._action_key()
        rel = relative_transform(torch.as_tensor(latents_1), torch.as_tensor(latents_2), **self.conventions)
        if key not in rel:
            raise ValueError(f"{self.method}: its predictor's action {key!r} is not a function of the latents")
        return rel[key]

    def predict(self, equi: Tensor, action: Tensor) -> Tensor:
        """The predicted equivariant embedding of view 2: equi (B, Ee) = `embeddings(view 1)["equi"]`, action
        (B, A) (`action(latents_1, latents_2)`) -> (B, Ee)."""
        key = self._action_key()
        with torch.no_grad():
            return self.model.predict(torch.as_tensor(equi).to(self.device),
                                      {key: torch.as_tensor(action).to(self.device)})

    def _action_key(self) -> str:
        if not self.has_predictor:
            raise ValueError(f"method {self.method!r} has no predictor (SIE and EquiMod have one)")
        return self.model.action_key

    def __repr__(self) -> str:
        return f"Encoder({self.method}, image_size={self.image_size}, dims={self.dims}, device={self.device})"


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Encoder:
    """The trained model of run folder `run_dir` (its checkpoints/last.ckpt) as a frozen eval-mode `Encoder`."""
    from ssl_eq.methods.run import load_run as load_model

    return Encoder(load_model(run_dir, map_location=device))


def open_source(root: str | Path) -> Any:
    """A dataset folder: the native format (manifest.json) or the original 3DIEBench layout (train_images.npy)."""
    from ssl_eq.datasets.native import NativeDataset
    from ssl_eq.datasets.threedie import ThreeDIEBenchFolder

    root = Path(root)
    if (root / "manifest.json").is_file() or not (root / "train_images.npy").is_file():
        return NativeDataset(root)
    return ThreeDIEBenchFolder(root)


def open_dataset(root: str | Path, kind: str = "view", split: str | None = "train", num_views: int = 3,
                 seed: int = 0, **conventions: str) -> torch.utils.data.Dataset:
    """A torch Dataset over a rendered / imported dataset folder. Items (uint8 images, channels first):

    - "view": `images` (3, H, W), `latents` (L,), `label`, `object_index`, `view_index`
    - "pair": `images` (2, 3, H, W), `latents` (2, L) and the relative transformation (`rel_rotation_quat` (4,)
      wxyz, `rel_latents`, ...; docs/architecture.md "Batches")
    - "sequence": `images` (num_views, 3, H, W), `latents` (num_views, L), the transitions between views
    split: "train", "val" or None (every object); conventions: quaternion_sign=, colour_targets= (pairs, sequences).
    """
    from ssl_eq.datasets.views import PairDataset, SequenceDataset, ViewDataset

    if kind not in DATASET_KINDS:
        raise ValueError(f"kind: expected one of {DATASET_KINDS}, got {kind!r}")
    source = open_source(root)
    if kind == "view":
        return ViewDataset(source, split)
    if kind == "pair":
        return PairDataset(source, split, seed=seed, **conventions)
    return SequenceDataset(source, split, num_views=num_views, seed=seed, **conventions)


def render(out: str | Path, preview: bool = True, **options: Any) -> dict[str, Any]:
    """`ssl-eq render --out OUT ...`: options are RenderConfig's fields, the CLI's options with `_` for `-`
    (objects=, views=, size=, source=, camera=, rotation_axes=, device=, ...). Returns the job's result (`out`,
    `rendered_shards`, `manifest`) and `preview`, the contact sheet's path (None when not made)."""
    from ssl_eq.renderers.job import RenderConfig, RenderJob

    known = {f.name for f in fields(RenderConfig)} - {"out"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"render: unknown option(s) {unknown}; valid: {sorted(known)}")
    result = dict(RenderJob(RenderConfig(out=str(out), **options)).run())
    result["preview"] = None
    if preview and result["manifest"]:
        from ssl_eq.reports.contact_sheet import dataset_preview

        result["preview"] = dataset_preview(result["out"], f"{result['out']}/preview.png")
    log.info("render: %s (%s)", result["out"], "complete" if result["manifest"] else "shards done, others pending")
    return result


def probe(run_dir: str | Path, data: str | Path | None = None, probes: str | Sequence[str] = "all",
          epochs: int | None = None, device: str = "cpu", protocol: str | None = None,
          config: str | Path | None = None) -> dict[str, Any]:
    """`ssl-eq probe RUN ...`: probe a run's frozen features; returns probe.json's content (`metrics`, `probes`,
    ...), also written to RUN/probe/probe.json."""
    from ssl_eq.probes.runner import run_probes

    names = probes if isinstance(probes, str) else ",".join(probes)
    return run_probes(run_dir, data=data, probes=names, epochs=epochs, device=device, config=config,
                      protocol=protocol)


def report(run_dirs: str | Path | Sequence[str | Path], out: str | Path, title: str = "ssl_eq report"
           ) -> dict[str, Path]:
    """`ssl-eq report RUN ... --out OUT`: writes report.md + report.html; returns their paths {"md", "html"}."""
    from ssl_eq.reports.report import write_report

    runs = [str(run_dirs)] if isinstance(run_dirs, (str, Path)) else [str(r) for r in run_dirs]
    return {k: Path(v) for k, v in write_report(runs, str(out), title=title).items()}


@dataclass
class OrbitResult:
    results: dict[str, dict[str, dict[str, Any]]]   # orbit "<latent>/<range>" -> run name -> its record (curves, auc)
    figures: list[Path]                             # the comparison PNGs written to `out`
    failures: list[str]                             # runs / orbits that could not be analysed, with the reason


def analyse_orbits(run_dirs: str | Path | Sequence[str | Path], out: str | Path, **options: Any) -> OrbitResult:
    """`ssl-eq orbit RUN ... --out OUT`: options are OrbitOptions' fields (latents=[...], range=, steps=,
    objects=, source=, source_root=, device=, batch_size=). Each run also gets RUN/orbit/orbit.json + PNGs."""
    from ssl_eq.orbit.runner import OrbitAnalysis, OrbitOptions

    opts = OrbitOptions(**options)
    analysis = OrbitAnalysis(opts)
    failures: list[str] = []
    for run_dir in [run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs:
        try:
            failures += analysis.run(str(run_dir))
        except (ValueError, OSError, KeyError) as e:  # one run that cannot be analysed must not stop the others
            failures.append(f"{run_dir}: {e}")
    figures = analysis.compare(Path(out)) if analysis.results else []
    for f in failures:
        log.warning("orbit: %s", f)
    return OrbitResult(analysis.results, figures, failures)
