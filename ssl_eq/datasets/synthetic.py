"""Tiny synthetic native datasets for tests and demos (no rendering, no pytorch3d).

Latents follow the 3DIEBench ranges (docs/scene.md) and the images depend on them: the floor has
colour HSV(floor_hue, 0.6, 0.6), a lit disc sits where the spot points (θ, φ), and the object is a
class-sized blob in the spot's colour HSV(spot_hue, 1, 0.8) with two markers placed by projecting
rotated class-specific axes R·a (plus R·t for 3DIEBench-T), so every latent is visible in the pixels.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ssl_eq.datasets.native import (LATENT_SCHEMAS, shard_name, stratified_split, write_manifest,
                                   write_shard)
from ssl_eq.geometry import euler_xyz_to_matrix, hsv_to_rgb

FLOOR_SV = (0.6, 0.6)
SPOT_SV = (1.0, 0.8)
ROT_RANGE = (-math.pi / 2, math.pi / 2)
SPOT_THETA_RANGE = (0.0, math.pi / 4)
SPOT_PHI_RANGE = (0.0, 2 * math.pi)
TRANS_RANGE = (-0.5, 0.5)
SYNSET_BASE = 90_000_000  # synset-like folder names "9000000c" for synthetic classes


def sample_latents(rng: np.random.Generator, shape: tuple[int, ...], variant: str) -> np.ndarray:
    """Latents (*shape, D) float32 drawn from the 3DIEBench(-T) distributions."""
    cols = [rng.uniform(*ROT_RANGE, shape + (3,)), rng.uniform(0.0, 1.0, shape + (1,)),
            rng.uniform(*SPOT_THETA_RANGE, shape + (1,)), rng.uniform(*SPOT_PHI_RANGE, shape + (1,)),
            rng.uniform(0.0, 1.0, shape + (1,))]
    if variant == "3diebench-t":
        cols.append(rng.uniform(*TRANS_RANGE, shape + (3,)))
    return np.concatenate(cols, -1).astype(np.float32)


def render_synthetic(latents: torch.Tensor, labels: torch.Tensor, size: int) -> torch.Tensor:
    """latents (N, D) float, labels (N,) int -> images uint8 (N, size, size, 3)."""
    n = latents.shape[0]
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    yy, xx = torch.meshgrid(-lin, lin, indexing="ij")  # image y points down, world z up
    grid = torch.stack([xx, yy], -1)  # (H, W, 2)

    def disc(centre: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:  # (N, 2) -> (N, H, W) mask
        d2 = ((grid[None] - centre[:, None, None]) ** 2).sum(-1)
        return (d2 <= torch.as_tensor(radius).reshape(-1, 1, 1) ** 2).float()[..., None]

    floor = hsv_to_rgb(latents[:, 3], *FLOOR_SV)[:, None, None]  # (N, 1, 1, 3)
    img = floor.expand(n, size, size, 3).clone()
    theta, phi = latents[:, 4], latents[:, 5]
    spot_centre = 1.2 * torch.sin(theta)[:, None] * torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    img = img + 0.3 * disc(spot_centre, 0.45)
    rot = euler_xyz_to_matrix(latents[:, :3])
    axes = torch.eye(3)[labels % 3]  # class-specific body axis
    centre = torch.zeros(n, 3)
    if latents.shape[1] == len(LATENT_SCHEMAS["3diebench-t"]):
        centre = (rot @ latents[:, 7:10, None])[..., 0]
    project = lambda p: p[:, [0, 2]]  # noqa: E731  camera looks along -y: (x, z) -> image (x, y)
    body = hsv_to_rgb(latents[:, 6], *SPOT_SV)[:, None, None]
    m_body = disc(project(centre), 0.25 + 0.05 * (labels % 4).float())
    img = img * (1 - m_body) + body * m_body
    for axis, shade in ((axes, 1.0), (torch.roll(axes, 1, -1), 0.0)):
        tip = centre + 0.5 * (rot @ axis[..., None])[..., 0]
        m = disc(project(tip), 0.12)
        img = img * (1 - m) + shade * m
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_objects: int = 12,
    views: int = 6,
    size: int = 32,
    variant: str = "3diebench",
    num_classes: int = 3,
    seed: int = 0,
    encoding: str = "raw",
    objects_per_shard: int = 8,
    val_fraction: float = 0.25,
    image_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] = render_synthetic,
) -> Path:
    """Write a complete native dataset (shards + manifest with a stratified train/val split) under `root`.

    Object i has label i % num_classes and id "synth-<i>"; returns `root`. `image_fn` has the signature of
    `render_synthetic` (latents (N, D), labels (N,), size) -> uint8 (N, size, size, 3).
    """
    if variant not in LATENT_SCHEMAS:
        raise ValueError(f"variant must be one of {sorted(LATENT_SCHEMAS)}, got {variant!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    latents = sample_latents(rng, (num_objects, views), variant)
    labels = np.arange(num_objects, dtype=np.int64) % num_classes
    ids = [f"synth-{i:05d}" for i in range(num_objects)]
    flat = image_fn(torch.from_numpy(latents.reshape(num_objects * views, -1)),
                            torch.from_numpy(np.repeat(labels, views)), size)
    images = flat.numpy().reshape(num_objects, views, size, size, 3)
    shards = []
    for s, start in enumerate(range(0, num_objects, objects_per_shard)):
        sl = slice(start, start + objects_per_shard)
        write_shard(root, s, images=images[sl], latents=latents[sl], labels=labels[sl], object_ids=ids[sl],
                    encoding=encoding)
        shards.append({"name": shard_name(s), "index": s, "num_objects": len(ids[sl])})
    class_names = [f"class_{c}" for c in range(num_classes)]
    config = {"generator": "synthetic", "num_objects": num_objects, "views": views, "size": size,
              "variant": variant, "num_classes": num_classes, "seed": seed, "encoding": encoding}
    write_manifest(root, {
        "config": config, "source": {"name": "synthetic", "num_classes": num_classes}, "variant": variant,
        "latent_schema": LATENT_SCHEMAS[variant], "image_size": size, "views": views, "encoding": encoding,
        "class_names": class_names, "synsets": [str(SYNSET_BASE + c) for c in range(num_classes)],
        "num_objects": num_objects, "shards": shards,
        "split": stratified_split(ids, labels, val_fraction, seed),
    })
    return root
