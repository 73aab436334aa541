"""Cost of anti-aliasing (`--supersample k`) at small sizes: CPU-seconds per image vs k = 1 in the same run.

Renders the 12 procedural classes x 8 views with the close-up camera on one thread; CPU time (not wall time)
so the ratio holds on a shared machine.

    python tools/bench_antialias.py [--sizes 32,64] [--factors 1,2,4]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ssl_eq.renderers.job import RenderConfig
from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer
from ssl_eq.renderers.scene import RenderSettings, sample_latents
from ssl_eq.renderers.sources import make_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--factors", default="1,2,4")
    ap.add_argument("--views", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = make_source("procedural", num_objects=12, seed=0)
    refs = src.objects()
    meshes = [MeshTensors.from_mesh(src.load(r), "cpu") for r in refs]
    spec = RenderConfig(out="unused", camera="closeup").scene()
    lat = torch.tensor(np.concatenate([sample_latents(0, r.object_id, args.views, spec=spec) for r in refs]),
                       dtype=torch.float32)
    idx = torch.arange(len(refs)).repeat_interleave(args.views)
    print("| px | supersample | CPU ms / image | vs supersample 1 |\n|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        base = None
        for k in (int(f) for f in args.factors.split(",")):
            r = SceneRenderer(RenderSettings(image_size=size, supersample=k, scene=spec), "cpu")
            r.render(meshes, idx[:8], lat[:8])                      # warm-up
            t = time.process_time()
            r.render(meshes, idx, lat)
            ms = (time.process_time() - t) / len(idx) * 1000
            base = base or ms
            print(f"| {size} | {k} | {ms:.1f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
