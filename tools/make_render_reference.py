"""Write tests/data/render_reference.npz: small renders by the renderer before issue #15 (the frozen copy
`tools/render_baseline.py`), against which tests/test_renderer_window.py checks that the windowed,
analytic-floor renderer draws the same images. Run once; the file is committed.

Cases (64 px unless noted, shadow map = image size x supersample as that renderer's default):
  mug       the Blender fixtures' mug with their 8 latents (3diebench)
  mug_t     the same latents + 3DIEBench-T translations, several pushing the mug partly out of the frame
  proc      6 procedural objects (meshes stored in the file), 3diebench latents
  proc_t    the same objects, 3diebench-t latents
  mug_ss    4 fixture latents at 48 px with supersample 2
Each case also stores `<case>_stable`: pixels whose colour moves by <= 1 grey level when any rotation
angle moves by +-1e-6 rad. The others are ill-posed to compare: coplanar overlapping faces (z-fighting,
e.g. procedural object 0) and exact edge hits, where any rounding difference picks another face.
Usage: python tools/make_render_reference.py [--out tests/data/render_reference.npz]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from render_baseline import BaselineSceneRenderer, MeshTensors
from ssl_eq.renderers.scene import RenderSettings, sample_latents
from ssl_eq.renderers.sources import make_source
from ssl_eq.renderers.sources.meshfiles import load_mesh_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests/data/blender-3diebench"
# 3DIEBench-T translations (object frame) for the 8 mug views: the first four push it against the frame's edges
MUG_T = np.array([[0.5, 0.5, 0.5], [-0.5, -0.5, 0.5], [0.5, -0.5, -0.5], [-0.5, 0.5, -0.5],
                  [0.1, -0.2, 0.3], [-0.3, 0.4, -0.1], [0.25, 0.0, -0.45], [0.0, 0.3, 0.2]])


PERTURBATION_RAD = 1e-6


def render(meshes, index, latents, size, supersample=1):
    """-> images uint8 (B, H, W, 3), mask bool (B, H, W), stable bool (B, H, W)."""
    settings = RenderSettings(image_size=size, supersample=supersample, shadow_map_size=size * supersample)
    renderer = BaselineSceneRenderer(settings, "cpu")
    latents = torch.as_tensor(latents, dtype=torch.float32)
    out = renderer.render(meshes, torch.as_tensor(index), latents)
    stable = torch.ones_like(out["mask"])
    for axis in range(3):
        for sign in (-1, 1):
            moved = latents.clone()
            moved[:, axis] += sign * PERTURBATION_RAD
            again = renderer.render(meshes, torch.as_tensor(index), moved)["images"]
            stable &= (out["images"].int() - again.int()).abs().amax(-1) <= 1
    return out["images"].numpy(), out["mask"].numpy(), stable.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "tests/data/render_reference.npz"))
    args = ap.parse_args()
    mug = load_mesh_file(FIXTURES / "mug.obj")
    mug.face_colors[:] = 0.8                                   # as tests/conftest.py
    mug_lat = np.stack([np.load(FIXTURES / f"latent_{k}.npy") for k in range(8)])
    mug_t = np.concatenate([mug_lat, MUG_T], axis=1)
    source = make_source("procedural", num_objects=6, seed=0)
    procs = [source.load(r) for r in source.objects()]
    proc_t = np.concatenate([sample_latents(0, f"ref{i}", 1, "3diebench-t") for i in range(len(procs))])
    data = {"mug_latents": mug_lat, "mug_t_latents": mug_t, "proc_latents": proc_t[:, :7],
            "proc_t_latents": proc_t, "mug_ss_latents": mug_lat[:4]}
    for i, m in enumerate(procs):
        data[f"proc_verts_{i}"] = m.verts.astype(np.float32)
        data[f"proc_faces_{i}"] = m.faces.astype(np.int32)
        data[f"proc_colors_{i}"] = m.face_colors.astype(np.float32)
    mug_m = [MeshTensors.from_mesh(mug, "cpu")]
    proc_m = [MeshTensors.from_mesh(m, "cpu") for m in procs]
    zeros, arange = np.zeros(8, dtype=np.int64), np.arange(len(procs))
    for name, meshes, index, lat, size, ss in (("mug", mug_m, zeros, mug_lat, 64, 1),
                                               ("mug_t", mug_m, zeros, mug_t, 64, 1),
                                               ("proc", proc_m, arange, proc_t[:, :7], 64, 1),
                                               ("proc_t", proc_m, arange, proc_t, 64, 1),
                                               ("mug_ss", mug_m, zeros[:4], mug_lat[:4], 48, 2)):
        data[f"{name}_images"], data[f"{name}_mask"], data[f"{name}_stable"] = render(meshes, index, lat, size, ss)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
