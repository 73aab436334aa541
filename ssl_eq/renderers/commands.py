"""`ssl-eq render`: generate a 3DIEBench-style dataset (see `ssl_eq.renderers.job`)."""
from __future__ import annotations

import argparse
from dataclasses import fields


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "render": "render a 3DIEBench-style dataset with PyTorch3D (resumable, sharded)",
}


def register(sub: argparse._SubParsersAction) -> None:
    from .job import AUTO_SUPERSAMPLE, RenderConfig  # light: no pytorch3d
    from ..datasets.native import ENCODINGS
    from .job import VARIANTS
    from ..utils.budget import LARGE_RENDER_IMAGES
    from .scene import CAMERA_PRESETS
    from .sources import SOURCES

    d = {f.name: f.default for f in fields(RenderConfig)}
    p = sub.add_parser("render", help=COMMANDS["render"],
                       description="Render objects x views of the 3DIEBench scene into a native sharded dataset. "
                       "Re-running the same command completes only what is missing. What the defaults cost: "
                       f"{d['objects']} objects x {d['views']} views = {d['objects'] * d['views']:,} images of "
                       f"{d['size']} px, ~0.07 CPU-s each for procedural objects, so ~12 CPU-minutes on a CPU "
                       "(meshes with more faces cost more); for a first look: --objects 12 --views 4 --size 32.")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--source", default=d["source"], choices=sorted(SOURCES), help="object source")
    p.add_argument("--source-root", default=None, help="root folder of mesh-folder / shapenet sources")
    p.add_argument("--object-list", default=None, help="shapenet: .npy of (synset, id) / '/synset/id', or a text file")
    p.add_argument("--up-axis", choices=("y", "z"), default=None, help="up axis of the mesh files (turned to the "
                   "scene's z up); default per source: shapenet y, mesh-folder by format (glTF / GLB y, others z)")
    p.add_argument("--objects", type=int, default=d["objects"], help="number of objects (class-balanced subset)")
    p.add_argument("--views", type=int, default=d["views"], help="views per object (3DIEBench: 50)")
    p.add_argument("--size", type=int, default=d["size"], help="image size in pixels (3DIEBench: 256)")
    auto = ", ".join(f"{k} up to {s} px" for s, k in AUTO_SUPERSAMPLE)
    p.add_argument("--supersample", type=int, default=None,
                   help=f"anti-aliasing factor (render k x size, box-filter down); default: {auto}, else 1")
    p.add_argument("--camera", default=d["camera"], choices=sorted(CAMERA_PRESETS),
                   help="camera preset: 3diebench (the SIE generator's) | closeup (same viewpoint, the object "
                   "fills the frame: " + ", ".join(f"{k} {v}" for k, v in CAMERA_PRESETS["closeup"].items()) + ")")
    p.add_argument("--camera-distance", type=float, default=None, help="camera distance from the origin "
                   "(scene units; overrides the preset)")
    p.add_argument("--fov", type=float, default=None, help="field of view in degrees (overrides the preset)")
    p.add_argument("--rotation-axes", default=d["rotation_axes"], help="Euler axes that are sampled, e.g. z or xz; "
                   "the others are exactly 0 (latent layout unchanged; 3DIEBench: xyz)")
    p.add_argument("--rotation-range", type=float, default=d["rotation_range"], help="in DEGREES: each sampled "
                   "Euler angle ~ U[-range, range] (3DIEBench: 90; 180 = full turn)")
    p.add_argument("--variant", default=d["variant"], choices=sorted(VARIANTS),
                   help="3diebench (7 latents) | 3diebench-t (+ translation)")
    p.add_argument("--encoding", default=d["encoding"], choices=ENCODINGS,
                   help="raw pixels, or JPEG (~30x smaller)")
    p.add_argument("--jpeg-quality", type=int, default=d["jpeg_quality"], help="--encoding jpeg: 1-100")
    p.add_argument("--device", default=d["device"], help="auto (cuda when available) | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="(object, view) renders per call")
    p.add_argument("--seed", type=int, default=d["seed"], help="latents of object i come from (seed, i)")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                   help="fraction of the objects in the val split: round(f x N) in total, stratified by class")
    p.add_argument("--split-file", default=None, help="validation object ids (text, or .npy like val_images.npy)")
    p.add_argument("--objects-per-shard", type=int, default=d["objects_per_shard"], help="objects per file shard")
    p.add_argument("--num-shards", type=int, default=d["num_shards"], help="number of parallel jobs")
    p.add_argument("--shard-index", type=int, default=None, help="this job's index (default: SLURM_ARRAY_TASK_ID or 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset rendered with another config")
    p.add_argument("--yes", action="store_true", help=f"render more than {LARGE_RENDER_IMAGES:,} images (memory and "
                   "disk are checked up front either way)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--no-preview", dest="preview", action="store_false", help="skip DIR/preview.png")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_render, thread_policy=True)


def _render(args: argparse.Namespace) -> int:
    from ..utils.budget import check_render
    from .job import RenderConfig, RenderJob

    cfg = RenderConfig(**{k: v for k, v in vars(args).items()
                          if k in {f.name for f in fields(RenderConfig)}})
    cfg.validate()
    estimate = check_render(objects=cfg.objects, views=cfg.views, size=cfg.size, encoding=cfg.encoding,
                            objects_per_shard=cfg.objects_per_shard, out=cfg.out, yes=args.yes)
    print(f"render: up to {estimate}")
    result = RenderJob(cfg).run()
    if not result["manifest"]:
        print(f"rendered shards {result['rendered_shards']}; manifest is written when every shard is done")
        return 0
    print(f"dataset complete: {result['out']}/manifest.json")
    if args.preview:
        from ..reports.contact_sheet import dataset_preview
        png = dataset_preview(result["out"], f"{result['out']}/preview.png")
        print(f"contact sheet: {png}")
    return 0
