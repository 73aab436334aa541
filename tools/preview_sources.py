"""Write a PNG grid of procedural objects (rows: classes, columns: instances) for a person to look at.

Flat-shaded orthographic projection drawn with matplotlib (painter's algorithm), no renderer needed.
Each instance is shown from the 3DIEBench camera direction (front-left-above) and, in the next
column, from behind (azimuth + 180 deg), so asymmetric parts on every side are visible.

    python tools/preview_sources.py --out procedural_preview.png [--instances 3] [--seed 0]
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from ssl_eq.renderers.sources import make_source  # noqa: E402
from ssl_eq.renderers.sources.procedural import CLASSES  # noqa: E402
from ssl_eq.utils.io import atomic_path  # noqa: E402

ELEVATION_DEG = 30.0
AZIMUTHS_DEG = (60.0, 240.0)
LIGHT = np.array([0.4, 0.3, 1.0])
AMBIENT = 0.35


def view_matrix(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """(3, 3) world -> view rotation; rows: screen right, screen up, toward the viewer (z up world)."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    toward = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    right = np.cross([0.0, 0.0, 1.0], toward)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(toward, right), toward])


def draw(ax, mesh, azimuth_deg: float) -> None:
    v = mesh.verts @ view_matrix(azimuth_deg, ELEVATION_DEG).T
    tri = v[mesh.faces]                                           # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    visible = normal[:, 2] > 0
    light = LIGHT / np.linalg.norm(LIGHT)
    shade = AMBIENT + (1 - AMBIENT) * np.clip(normal @ light, 0, 1)
    order = np.argsort(tri[:, :, 2].mean(1))                       # far (small z) to near
    order = order[visible[order]]
    colors = np.clip(mesh.face_colors[order] * shade[order, None], 0, 1)
    ax.add_collection(PolyCollection(tri[order, :, :2], facecolors=colors, edgecolors=colors, linewidths=0.2))
    ax.set_xlim(-0.55, 0.55)
    ax.set_ylim(-0.55, 0.55)
    ax.set_aspect("equal")
    ax.axis("off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="procedural_preview.png")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    k = len(CLASSES)
    source = make_source("procedural", num_objects=k * args.instances, seed=args.seed)
    refs = source.objects()
    cols = args.instances * len(AZIMUTHS_DEG)
    fig, axes = plt.subplots(k, cols, figsize=(1.6 * cols, 1.6 * k))
    for i, ref in enumerate(refs):
        row, inst = i % k, i // k
        mesh = source.load(ref)
        for j, az in enumerate(AZIMUTHS_DEG):
            ax = axes[row, inst * len(AZIMUTHS_DEG) + j]
            draw(ax, mesh, az)
            if inst == 0 and j == 0:
                ax.set_title(ref.class_name, fontsize=8, loc="left")
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
