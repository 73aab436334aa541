"""A grid of images with optional captions, saved as one PNG (dataset previews, renders, reports)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CELL_INCHES = 1.6
CAPTION_FONTSIZE = 7
DPI = 110


def contact_sheet(images: np.ndarray, captions: list[list[str]] | None, out_png: str | os.PathLike,
                  title: str | None = None) -> Path:
    """Write uint8 `images` (R, C, H, W, 3) as an R×C grid PNG; `captions[r][c]` under each cell (optional).

    Returns the PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssl_eq.utils.io import atomic_path

    images = np.asarray(images)
    if images.ndim != 5 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"contact_sheet: images must be uint8 (R, C, H, W, 3), got {images.dtype} {images.shape}")
    rows, cols = images.shape[:2]
    if captions is not None and (len(captions) != rows or any(len(r) != cols for r in captions)):
        raise ValueError(f"contact_sheet: captions must be a {rows}×{cols} list of lists")
    fig, axes = plt.subplots(rows, cols, figsize=(CELL_INCHES * cols, CELL_INCHES * rows + (0.4 if title else 0)),
                             squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(images[r, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if captions is not None:
                ax.set_xlabel(captions[r][c], fontsize=CAPTION_FONTSIZE)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return Path(out_png)


def latent_caption(latent: np.ndarray) -> str:
    """Short caption of one view's latent (docs/scene.md layout): rotation in degrees, hues, spot angles."""
    rot = np.degrees(latent[:3])
    text = (f"rot {rot[0]:.0f},{rot[1]:.0f},{rot[2]:.0f}\nfloor h{latent[3]:.2f} spot h{latent[6]:.2f}\n"
            f"θ{np.degrees(latent[4]):.0f} φ{np.degrees(latent[5]):.0f}")
    if len(latent) >= 10:
        text += f"\nt {latent[7]:+.2f},{latent[8]:+.2f},{latent[9]:+.2f}"
    return text


MIN_PREVIEW_ROWS = 8


def dataset_preview(root: str | os.PathLike, out_png: str | os.PathLike, objects: int | None = None,
                    views: int = 8) -> Path:
    """Contact sheet of a native dataset: rows = objects (one per class first; default: every class, at least
    MIN_PREVIEW_ROWS rows), columns = views, each cell captioned with its class and latents."""
    from ssl_eq.datasets.native import NativeDataset

    if objects is not None and objects < 1 or views < 1:
        raise ValueError(f"preview: objects and views must be >= 1, got {objects} and {views}")
    ds = NativeDataset(root)
    firsts = np.unique(ds.labels, return_index=True)[1]
    objects = max(len(firsts), MIN_PREVIEW_ROWS) if objects is None else objects
    objs = np.concatenate([firsts, np.setdiff1d(np.arange(len(ds)), firsts)])[:objects]
    cols = np.arange(min(views, ds.views))
    images = np.stack([ds.get_views(int(o), cols) for o in objs])
    captions = [[f"{ds.class_names[ds.labels[o]]} v{v}\n{latent_caption(ds.latents[o, v])}" for v in cols]
                for o in objs]
    return contact_sheet(images, captions, out_png,
                         title=f"{Path(root).name}: {len(ds)} objects × {ds.views} views, {ds.variant}")
