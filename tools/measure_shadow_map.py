"""Choose the shadow map's resolution by measurement: for each image size S and map size M, the share of
floor pixels whose shadow mask (visibility < 0.5) agrees with the one a map twice as fine (2M) gives.
The renderer's default (`scene.SHADOW_MAP_FRACTION`, `scene.SHADOW_MAP_MIN`) is read off this table.

Scenes: the Blender fixtures' mug (its 8 latents) and procedural objects with 3DIEBench-T latents.
Also printed: the IoU of the two shadow masks (a stricter view: only the pixels either map shadows).
Usage: python tools/measure_shadow_map.py [--sizes 64 128 256] [--fractions 0.25 0.375 0.5 0.75 1]
"""
from __future__ import annotations

import argparse
import datetime
import math
from pathlib import Path

import numpy as np
import torch

from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer
from ssl_eq.renderers.scene import RenderSettings, sample_latents
from ssl_eq.renderers.sources import make_source
from ssl_eq.renderers.sources.meshfiles import load_mesh_file

MIN_MAP = 8
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "blender-3diebench"


def scenes(num_procedural: int):
    """-> [(label, meshes, mesh_index (B,), latents (B, D))]"""
    mug = load_mesh_file(FIXTURES / "mug.obj")
    mug_lat = np.stack([np.load(FIXTURES / f"latent_{k}.npy") for k in range(8)])
    source = make_source("procedural", num_objects=num_procedural, seed=0)
    procs = [MeshTensors.from_mesh(source.load(r), "cpu") for r in source.objects()]
    proc_lat = np.concatenate([sample_latents(1, f"shadow{i}", 1, "3diebench-t") for i in range(len(procs))])
    return [("mug", [MeshTensors.from_mesh(mug, "cpu")], torch.zeros(8, dtype=torch.long), mug_lat),
            ("procedural-t", procs, torch.arange(len(procs)), proc_lat)]


def shadow_mask(meshes, index, latents, size, map_size):
    out = SceneRenderer(RenderSettings(image_size=size, shadow_map_size=map_size), "cpu").render(
        meshes, index, torch.as_tensor(latents, dtype=torch.float32))
    return (out["shadow"] < 0.5).numpy(), out["mask"].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.375, 0.5, 0.75, 1.0])
    ap.add_argument("--procedural", type=int, default=8)
    args = ap.parse_args()
    print(f"# shadow map vs a map twice as fine — {datetime.date.today()}\n")
    print("| scene | image px | map px (M / S) | floor-pixel agreement vs 2M | shadow IoU vs 2M |")
    print("|---|---|---|---|---|")
    for label, meshes, index, latents in scenes(args.procedural):
        for size in args.sizes:
            for fraction in args.fractions:
                m = max(MIN_MAP, math.ceil(fraction * size))
                coarse, mask = shadow_mask(meshes, index, latents, size, m)
                fine, _ = shadow_mask(meshes, index, latents, size, 2 * m)
                floor = ~mask
                agree = (coarse == fine)[floor].mean()
                iou = (coarse & fine & floor).sum() / max(((coarse | fine) & floor).sum(), 1)
                print(f"| {label} | {size} | {m} ({fraction:g}) | {agree:.2%} | {iou:.3f} |", flush=True)


if __name__ == "__main__":
    main()
