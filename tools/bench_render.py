"""Render throughput benchmark: the speed-up of each change of issue #15, and Blender Cycles side by side.

Every row renders the same (object, view) items with four renderers, interleaved (repeat r times:
stage 0, 1, 2, 3[, Blender]), so a shared, loaded CPU slows them alike and the ratios hold:
  0 previous renderer  frozen copy of the renderer before #15 (tools/render_baseline.py): object + floor
                       rasterised over the whole image, shadow map = image size
  1 + analytic floor   floor by ray-plane intersection, object rasterised over the whole image
  2 + object window    object rasterised only in its window
  3 + shadow map size  the default shadow map (max(32, image size / 4) <= image size, measured by
                       tools/measure_shadow_map.py) instead of the image size: today's renderer
With --blender, Blender Cycles (100 spp, tools/blender_scene.py) renders the mug rows' first views in the
separate bpy venv (tools/setup_bench_env.sh) once per repeat; the column is skipped when that venv is absent.
--clock cpu times CPU seconds of the process (all threads; Blender's too) instead of wall time: on a
CPU shared with other jobs it measures the work, which wall time does not; use it with --threads 1.
Usage: python tools/bench_render.py [--device auto|cpu|cuda] [--images N] [--batch B] [--repeats R]
       [--rows procedural:64 mug:256 ...] [--blender] [--blender-images K] [--clock wall|cpu]
       [--threads T] [--profile]
Prints Markdown tables to paste into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from render_baseline import BaselineSceneRenderer
from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer, resolve_device
from ssl_eq.renderers.scene import RenderSettings, sample_latents
from ssl_eq.renderers.sources import make_source
from ssl_eq.renderers.sources.meshfiles import load_mesh_file

HERE = Path(__file__).resolve().parent
FIXTURE_MESH = HERE.parent / "tests/data/blender-3diebench/mug.obj"
BPY_PYTHON = Path(os.environ.get("SSL_EQ_ENV_ROOT", Path.home() / ".cache/ssl_eq")) / "venv-bench-bpy-5.0.1/bin/python"
BLENDER_SAMPLES = 100
STAGES = ("0 previous renderer", "1 + analytic floor", "2 + object window", "3 + shadow map size")


class FullFrameRenderer(SceneRenderer):
    """Stage 1: today's renderer with the object's window set to the whole frame."""

    def object_windows(self, objects):
        zeros = torch.zeros(len(objects), dtype=torch.long, device=self.device)
        return zeros, zeros, torch.full_like(zeros, self.size)


def stage_renderers(size: int, device) -> list:
    full_map = RenderSettings(image_size=size, shadow_map_size=size)
    return [BaselineSceneRenderer(full_map, device), FullFrameRenderer(full_map, device),
            SceneRenderer(full_map, device), SceneRenderer(RenderSettings(image_size=size), device)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": (time.perf_counter, "seconds"), "cpu": (time.process_time, "cpu_seconds")}


def timed_pass(renderer, meshes, index, latents, batch, clock) -> float:
    """Seconds (of `clock`) to render all items in batches of `batch`."""
    _sync(renderer.device)
    t = clock()
    for s in range(0, len(latents), batch):
        renderer.render(meshes, index[s:s + batch], latents[s:s + batch])
    _sync(renderer.device)
    return clock() - t


def blender_seconds(mesh, latents: np.ndarray, size: int, key: str) -> list[float]:
    """Per-image Cycles render times, wall or CPU (`key`); scene building and Blender's start-up excluded."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "scene.npz"
        np.savez(cfg, verts=mesh.verts, faces=mesh.faces, latents=latents[:, :7], size=size, samples=BLENDER_SAMPLES)
        out = subprocess.run([str(BPY_PYTHON), str(HERE / "blender_scene.py"), str(cfg)], check=True,
                             capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=None, help="images per pass (default: 8 CPU, 2048 GPU)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: 8 CPU, 256 GPU)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved passes per stage")
    ap.add_argument("--rows", nargs="+", default=["procedural:64", "procedural:256", "mug:256"],
                    help="OBJECTS:PX, objects procedural (24 objects) or mug (the fixtures' 4,736-face mesh)")
    ap.add_argument("--blender", action="store_true", help="time Blender Cycles on the mug rows")
    ap.add_argument("--blender-images", type=int, default=2, help="Blender images per repeat")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--profile", action="store_true", help="cProfile one batch of today's renderer per row")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock, blender_key = CLOCKS[args.clock]
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    n, batch = args.images or (2048 if gpu else 8), args.batch or (256 if gpu else 8)
    source = make_source("procedural", num_objects=24, seed=0)
    mug = load_mesh_file(FIXTURE_MESH)
    mug.face_colors[:] = 0.8
    sets = {"procedural": [MeshTensors.from_mesh(source.load(r), device) for r in source.objects()],
            "mug": [MeshTensors.from_mesh(mug, device)]}
    use_blender = args.blender and BPY_PYTHON.is_file()
    if args.blender and not use_blender:
        print(f"(Blender column skipped: no bpy venv at {BPY_PYTHON}; run tools/setup_bench_env.sh)\n")
    name = torch.cuda.get_device_name(device) if gpu else f"{platform.processor() or platform.machine()}, " \
                                                          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    print(f"# render benchmark — {name}, torch {torch.__version__}, {datetime.date.today()}")
    print(f"`{' '.join(['python', *sys.argv])}`: {n} images per pass, batch {batch}, {args.repeats} interleaved "
          f"repeats, {args.clock} clock, {torch.get_num_threads()} torch threads\n")
    print("| objects | px | " + " | ".join(f"{s} img/s" for s in STAGES)
          + " | floor / 0 | window / 1 | shadow map / 2 | **3 / 0** | Blender s/img | **3 vs Blender** |")
    print("|---|---|" + "---|" * (len(STAGES) + 6))
    profiles = []
    for row in args.rows:
        label, size = row.split(":")[0], int(row.split(":")[1])
        meshes = sets[label]
        latents = torch.as_tensor(np.concatenate([sample_latents(0, f"o{i}", 1) for i in range(n)]),
                                  dtype=torch.float32)
        index = torch.arange(n) % len(meshes)
        renderers = stage_renderers(size, device)
        for r in renderers:                                              # warm-up
            r.render(meshes, index[:batch], latents[:batch])
        seconds, blender = np.zeros(len(renderers)), []
        for _ in range(args.repeats):
            for k, r in enumerate(renderers):
                seconds[k] += timed_pass(r, meshes, index, latents, batch, clock)
            if use_blender and label == "mug":
                blender += blender_seconds(mug, latents[:args.blender_images].double().numpy(), size, blender_key)
        ips = n * args.repeats / seconds
        b_s = float(np.mean(blender)) if blender else None
        print(f"| {label} | {size} | " + " | ".join(f"{v:.2f}" for v in ips)
              + f" | {ips[1] / ips[0]:.2f}x | {ips[2] / ips[1]:.2f}x | {ips[3] / ips[2]:.2f}x "
              + f"| **{ips[3] / ips[0]:.2f}x** "
              + (f"| {b_s:.2f} | **{ips[3] * b_s:.1f}x** |" if b_s else "| – | – |"), flush=True)
        if args.profile:
            prof = cProfile.Profile(clock)
            prof.runcall(renderers[-1].render, meshes, index[:batch], latents[:batch])
            profiles.append((row, prof))
    for row, prof in profiles:
        print(f"\n## profile of one batch of today's renderer, {row}\n")
        pstats.Stats(prof).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
