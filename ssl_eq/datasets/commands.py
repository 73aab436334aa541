"""`ssl-eq dataset ...`: info, export-3diebench, import-3diebench (heavy imports inside the handlers)."""
from __future__ import annotations

import argparse
import json
import os

CHANNEL_ORDER_HELP = ("how the 3DIEBench files' channels relate to the render: 'bgr' (default) = R and B swapped, "
                      "as the original generator wrote them through cv2.imwrite; 'rgb' = the render's colours")


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the option in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _info(args: argparse.Namespace) -> int:
    from ssl_eq.datasets.native import dataset_info

    info = dataset_info(args.dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    mib = info["size_on_disk_bytes"] / 2**20
    print(f"{info['root']}: {info['variant']}, {info['num_objects']} objects x {info['views']} views "
          f"({info['num_images']} images, {info['image_size']} px, {info['encoding']}), {mib:.1f} MiB on disk")
    print(f"split: {info['split']}, skipped: {info['skipped']}")
    r = info["render"]
    if r:
        print(f"camera: {r['camera']} (distance {r['camera_distance']:g}, theta {r['camera_theta']:.4f}, "
              f"phi {r['camera_phi']:.4f}, fov {r['fov_degrees']:g} deg), supersample {r['supersample']}; "
              f"rotation: axes {r['rotation_axes']}, Euler angles in +-{r['rotation_range_degrees']:g} deg")
        if r["up_axis"]:
            print(f"source: {r['source']}, mesh up axis {r['up_axis']} (the scene is z-up)")
    print("classes: " + ", ".join(f"{k}: {v}" for k, v in info["classes"].items()))
    for name, rng in info["latent_ranges"].items():
        print(f"  {name:<11} " + ("-" if rng is None else f"[{rng[0]:+.4f}, {rng[1]:+.4f}]"))
    return 0


def _export(args: argparse.Namespace) -> int:
    from ssl_eq.datasets.threedie import export_3diebench

    out = export_3diebench(args.dir, args.out, channel_order=args.channel_order, jpeg_quality=args.jpeg_quality,
                           workers=args.workers, overwrite=args.overwrite)
    print(f"wrote 3DIEBench layout to {out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from ssl_eq.datasets.native import read_manifest
    from ssl_eq.datasets.threedie import import_3diebench

    out = import_3diebench(args.root, args.out, channel_order=args.channel_order, encoding=args.encoding,
                           objects_per_shard=args.objects_per_shard, workers=args.workers)
    manifest = read_manifest(out)
    print(f"wrote native dataset {out}: {manifest['num_objects']} objects, {len(manifest['skipped'])} skipped")
    for s in manifest["skipped"]:
        print(f"  skipped {s['object_id']}: {s['reason']}")
    return 0


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "dataset": "inspect, import and export datasets",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ssl_eq.datasets.native import DEFAULT_JPEG_QUALITY, ENCODINGS
    from ssl_eq.datasets.threedie import CHANNEL_ORDERS, DEFAULT_CHANNEL_ORDER, DEFAULT_OBJECTS_PER_SHARD

    p = subparsers.add_parser("dataset", help=COMMANDS["dataset"])
    sub = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND", required=True)

    info = sub.add_parser("info", help="counts, classes, latent ranges, camera / rotation group and size of a "
                          "native dataset")
    info.add_argument("dir", help="native dataset folder (holds manifest.json)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=_info)

    exp = sub.add_parser("export-3diebench", help="write a native dataset in the original 3DIEBench layout")
    exp.add_argument("dir", help="native dataset folder")
    exp.add_argument("out", help="output folder (<synset>/<object>/image_<k>.jpg, latent_<k>.npy, split files); "
                     "re-running the same export resumes it")
    exp.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY,
                     help="quality of JPEGs encoded from raw pixels (1-100)")
    exp.add_argument("--overwrite", action="store_true",
                     help="replace the contents of a non-empty OUT that holds something else")
    imp = sub.add_parser("import-3diebench", help="pack an original 3DIEBench(-T) folder into native shards "
                         "(resumable: re-run the same command)")
    imp.add_argument("root", help="3DIEBench folder (holds train_images.npy, val_images.npy, ...)")
    imp.add_argument("out", help="output native dataset folder")
    imp.add_argument("--encoding", choices=ENCODINGS, default="jpeg",
                     help="jpeg (default): keep the original JPEG files byte for byte; raw: decoded pixels")
    imp.add_argument("--objects-per-shard", type=int, default=DEFAULT_OBJECTS_PER_SHARD, help="objects per file shard")
    for q in (exp, imp):
        q.add_argument("--channel-order", choices=sorted(CHANNEL_ORDERS), default=DEFAULT_CHANNEL_ORDER,
                       help=CHANNEL_ORDER_HELP)
        q.add_argument("--workers", type=int, default=_default_workers(), help="processes (default: up to 8)")
    for q in (info, exp, imp):
        q.add_argument("--debug", action="store_true", help="show tracebacks")
    exp.set_defaults(func=_export)
    imp.set_defaults(func=_import)

    prev = sub.add_parser("preview", help="contact sheet PNG: rows objects, columns views, latent captions")
    prev.add_argument("dir", help="native dataset folder")
    prev.add_argument("--out", required=True, help="output PNG")
    prev.add_argument("--objects", type=_positive_int, default=None,
                      help="rows (default: one object per class, at least 8)")
    prev.add_argument("--views", type=_positive_int, default=8, help="columns")
    prev.add_argument("--debug", action="store_true", help="show tracebacks")
    prev.set_defaults(func=_preview)


def _preview(args: argparse.Namespace) -> int:
    from ssl_eq.reports.contact_sheet import dataset_preview

    print(dataset_preview(args.dir, args.out, objects=args.objects, views=args.views))
    return 0
