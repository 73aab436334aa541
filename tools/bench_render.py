"""Render throughput benchmark: images/s at 128 and 256 px, procedural objects and a ~5k-face mesh.

Baseline measured in the same run: the same renderer called one image at a time (batch 1).
Also reported: the cost of shadows (same batch with the shadow pass off) and, for scale, Blender's
time for the same scene from the fixtures' README (2-core CPU: 0.90 s/img at 128 px, 3.6 s at 256 px).
Usage: python tools/bench_render.py [--device auto|cpu|cuda] [--images N] [--batch B]
Prints a Markdown table to paste into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer, resolve_device
from ssl_eq.renderers.scene import RenderSettings, sample_latents
from ssl_eq.renderers.sources import make_source
from ssl_eq.renderers.sources.meshfiles import load_mesh_file

BLENDER_S_PER_IMAGE = {128: 0.90, 256: 3.6}
FIXTURE_MESH = Path(__file__).resolve().parents[1].parent / "shared/fixtures/blender-3diebench/mug.obj"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(renderer, meshes, n_images, batch, shadows=True) -> float:
    """images/s of rendering n_images (object, view) items in batches of `batch`."""
    latents = torch.as_tensor(np.concatenate([sample_latents(0, f"o{i}", 1) for i in range(n_images)]),
                              dtype=torch.float32)
    index = torch.arange(n_images) % len(meshes)
    if not shadows:
        renderer.shadow_visibility = lambda *a: torch.ones(a[-1].shape[:-1], device=renderer.device)
    renderer.render(meshes, index[:batch], latents[:batch])          # warm-up
    _sync(renderer.device)
    t = time.perf_counter()
    for s in range(0, n_images, batch):
        renderer.render(meshes, index[s:s + batch], latents[s:s + batch])
    _sync(renderer.device)
    if not shadows:
        del renderer.shadow_visibility
    return n_images / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=None, help="images per measurement (default: 16 CPU, 2048 GPU)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: 8 CPU, 256 GPU)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    n = args.images or (2048 if gpu else 16)
    batch = args.batch or (256 if gpu else 8)
    source = make_source("procedural", num_objects=24, seed=0)
    sets = {"procedural (24 objects)": [MeshTensors.from_mesh(source.load(r), device) for r in source.objects()]}
    if FIXTURE_MESH.is_file():
        sets["mug.obj (4,736 faces)"] = [MeshTensors.from_mesh(load_mesh_file(FIXTURE_MESH), device)]
    faces = {k: int(np.mean([len(m.faces) for m in v])) for k, v in sets.items()}
    name = torch.cuda.get_device_name(device) if gpu else f"{platform.processor() or platform.machine()}, " \
                                                          f"{os.cpu_count()} cores"
    print(f"# render benchmark — {name}, torch {torch.__version__}, {datetime.date.today()}\n")
    print(f"| objects | faces | px | batch | img/s | batch-1 img/s (baseline) | batched / baseline "
          f"| no-shadow img/s | shadow cost | vs Blender (fixtures, 2-core CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, meshes in sets.items():
        for size in (128, 256):
            r = SceneRenderer(RenderSettings(image_size=size), device)
            ips = throughput(r, meshes, n, batch)
            base = throughput(r, meshes, max(n // 8, 2), 1)
            noshadow = throughput(r, meshes, n, batch, shadows=False)
            print(f"| {label} | {faces[label]} | {size} | {batch} | {ips:.1f} | {base:.1f} | {ips / base:.2f}x "
                  f"| {noshadow:.1f} | {noshadow / ips - 1:+.0%} | {ips * BLENDER_S_PER_IMAGE[size]:.0f}x |")


if __name__ == "__main__":
    main()
