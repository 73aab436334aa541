"""`procedural` source: class-structured, chiral 3D objects generated from primitives, nothing to download.

Object `i` of a source with seed `s` is class ``CLASSES[i % K]`` (balanced round-robin) and is
generated from ``numpy.random.default_rng((s, i))`` alone, so it does not depend on which other
objects are generated. Each class combines boxes, cylinders, cones, ellipsoids, tori and prisms
with per-instance shape parameters and a per-axis stretch. Every class breaks all mirror and
rotation symmetries (a handle *and* an off-plane knob, a single armrest, a tilted shade, ...), so
the pose is recoverable from the image. Colours are class-independent: each object draws a
palette of `PALETTE_SIZE` colours from one HSV distribution and every part takes one of them.

Frame while building: +x front, +y left, +z up (the scene's world frame); the result is
normalised like ShapeNet (bbox centre at the origin, bbox diagonal 1).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...geometry import hsv_to_rgb
from .base import MeshData, ObjectRef, ObjectSource, check_num_objects, normalize_verts, refuse_option, \
    register_source, synsets_for
from .primitives import Mesh, box, cylinder, ellipsoid, frustum, prism, rotation, torus

#: objects per class when num_objects is not given
DEFAULT_OBJECTS_PER_CLASS = 100
PALETTE_SIZE = 3
SATURATION_RANGE = (0.35, 0.9)
VALUE_RANGE = (0.45, 0.95)
#: per-axis random stretch applied to a whole instance
STRETCH_RANGE = (0.88, 1.12)
#: faces with a smaller area than this (before normalisation) are dropped (cone apices, sphere poles)
MIN_FACE_AREA = 1e-12
#: bump when the generator changes in a way that changes any object (recorded by describe())
GENERATOR_VERSION = 1

# rotations that map a primitive's local xy plane to the world xz plane / its local z axis to world x
XY_TO_XZ = rotation("x", 90)
Z_TO_X = rotation("y", 90)


class Parts:
    """Collects primitive meshes with a palette role (index of the colour they take)."""

    def __init__(self) -> None:
        self.meshes: list[tuple[Mesh, int]] = []

    def add(self, mesh: Mesh, role: int = 0) -> None:
        self.meshes.append((mesh, role))

    def build(self, palette: np.ndarray, stretch: np.ndarray) -> MeshData:
        """palette (PALETTE_SIZE, 3) RGB, stretch (3,) -> normalised MeshData."""
        verts, faces, roles, n = [], [], [], 0
        for (v, f), role in self.meshes:
            verts.append(v)
            faces.append(f + n)
            roles.append(np.full(len(f), role))
            n += len(v)
        v = np.concatenate(verts) * stretch
        f = np.concatenate(faces)
        area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1) / 2
        keep = area > MIN_FACE_AREA
        return MeshData(normalize_verts(v), f[keep], palette[np.concatenate(roles)[keep]])


def mug(u: Callable[..., float], rng: np.random.Generator) -> Parts:
    p = Parts()
    r, h = u(0.25, 0.38), u(0.65, 1.0)
    p.add(cylinder((0, 0, 0), (0, 0, h), r), 0)
    p.add(cylinder((0, 0, 0), (0, 0, 0.07 * h), r * u(1.1, 1.2)), 1)
    zc, hh, rh = h * u(0.56, 0.66), h * u(0.22, 0.3), u(0.035, 0.06)
    turn = u(20, 35)                                            # handle turned toward +y
    hx, hy = r * 0.85 * np.cos(np.deg2rad(turn)), r * 0.85 * np.sin(np.deg2rad(turn))
    p.add(torus((hx, hy, zc), hh, rh, rot=rotation("z", turn) @ XY_TO_XZ, arc_degrees=200), 1)
    phi = np.deg2rad(u(70, 110))
    p.add(ellipsoid((r * np.cos(phi), r * np.sin(phi), h * u(0.72, 0.85)), [u(0.09, 0.12)] * 3), 2)
    return p


def chair(u, rng) -> Parts:
    p = Parts()
    w, d, hl, hb = u(0.8, 1.1), u(0.75, 1.0), u(0.75, 1.05), u(0.7, 1.0)
    p.add(box((d, w, 0.08), (0, 0, hl)), 0)
    rl = u(0.03, 0.05)
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (d / 2 - 0.06), sy * (w / 2 - 0.06)
            p.add(cylinder((x, y, 0), (x, y, hl), rl), 1)
    p.add(box((0.07, w, hb), (-d / 2 + 0.035, 0, hl + hb / 2)), 0)
    ha, bar = u(0.25, 0.35), d * u(0.7, 0.85)
    ya = w / 2 - 0.05
    p.add(cylinder((-d / 2 + bar * 0.8, ya, hl), (-d / 2 + bar * 0.8, ya, hl + ha), 0.03), 2)
    p.add(box((bar, 0.1, 0.06), (-d / 2 + bar / 2, ya, hl + ha)), 2)
    return p


def bracket(u, rng) -> Parts:
    p = Parts()
    a, c, b, t = u(0.9, 1.2), u(0.5, 0.7), u(0.35, 0.5), u(0.07, 0.1)
    p.add(box((a, b, t), (a / 2, 0, t / 2)), 0)
    p.add(box((t, b, c), (t / 2, 0, c / 2)), 0)
    g = u(0.3, 0.4) * min(a, c)
    p.add(prism([(t, t), (t + g, t), (t, t + g)], 0.07, (0, -b * 0.3, 0), XY_TO_XZ), 1)
    yb, zb = b * u(0.15, 0.25), c * u(0.55, 0.75)
    p.add(cylinder((t, yb, zb), (t + u(0.08, 0.12), yb, zb), u(0.1, 0.13)), 2)
    p.add(torus((a * u(0.65, 0.8), b * u(0.1, 0.25), t), 0.08, 0.025), 2)
    return p


def car(u, rng) -> Parts:
    p = Parts()
    length, w, h, wr = u(1.6, 2.0), u(0.75, 0.9), u(0.28, 0.38), u(0.16, 0.21)
    top = wr + h
    p.add(box((length, w, h), (0, 0, wr + h / 2)), 0)
    cl, ch, cx = length * u(0.4, 0.5), u(0.25, 0.33), -length * u(0.06, 0.14)
    p.add(box((cl, w * 0.85, ch), (cx, 0, top + ch / 2)), 1)
    for x in (length * 0.32, -length * 0.32):
        for y in (w / 2, -w / 2):
            p.add(cylinder((x, y - 0.07, wr), (x, y + 0.07, wr), wr), 2)
    for y in (w * 0.3, -w * 0.3):
        p.add(ellipsoid((length / 2, y, wr + h * 0.65), (0.03, 0.08, 0.05)), 2)
    p.add(box((0.1, w * 0.9, 0.04), (-length / 2 + 0.06, 0, top + u(0.1, 0.15))), 1)
    p.add(cylinder((-length / 2 - 0.1, -w * 0.3, wr * 0.9), (-length / 2 + 0.1, -w * 0.3, wr * 0.9), 0.045), 2)
    p.add(box((cl * u(0.6, 0.8), w * 0.35, 0.15), (cx, w * 0.25, top + ch + 0.075)), 2)
    p.add(cylinder((-length / 2, w * 0.25, wr + h * 0.6), (-length / 2 - 0.1, w * 0.25, wr + h * 0.6), wr * 0.9), 2)
    p.add(box((0.08, 0.14, 0.08), (length * 0.12, w / 2 + 0.06, top + 0.05)), 1)
    return p


def lamp(u, rng) -> Parts:
    p = Parts()
    br, hp = u(0.28, 0.38), u(0.9, 1.2)
    p.add(cylinder((0, 0, 0), (0, 0, 0.07), br), 0)
    p.add(cylinder((0, 0, 0.07), (0, 0, hp), 0.035), 1)
    p.add(ellipsoid((0, 0, hp), [0.06] * 3), 2)
    end = np.array([u(0.45, 0.7), 0, hp - u(0.05, 0.25)])
    p.add(cylinder((0, 0, hp), end, 0.03), 1)
    tilt = np.deg2rad(u(20, 35))
    axis = np.array([0, -np.sin(tilt), np.cos(tilt)])         # shade opening tilted toward +y
    sh = u(0.25, 0.35)
    p.add(frustum(end - axis * sh, end + axis * 0.04, u(0.18, 0.25), u(0.06, 0.09)), 2)
    p.add(box((0.12, 0.1, 0.06), (0, br * 0.6, 0.1)), 2)
    return p


def key(u, rng) -> Parts:
    p = Parts()
    r, ls, hs = u(0.17, 0.24), u(0.8, 1.1), u(0.1, 0.14)
    p.add(torus((0, 0, 0), r, 0.05, rot=XY_TO_XZ), 0)
    p.add(cylinder((0, 0.02, 0), (0, 0.07, 0), r * 0.65), 2)
    p.add(box((ls, 0.05, hs), (r + ls / 2, 0, 0)), 0)
    p.add(box((0.06, 0.09, hs * 1.6), (r + 0.05, 0, 0)), 1)
    for x in np.sort(rng.uniform(r + 0.45 * ls, r + 0.95 * ls, size=rng.integers(3, 6))):
        td = u(0.08, 0.18)
        p.add(box((u(0.07, 0.1), 0.05, td), (x, 0, -hs / 2 - td / 2)), 0)
    p.add(box((ls * 0.8, 0.03, 0.03), (r + ls * 0.5, 0.035, hs * 0.1)), 2)
    return p


def teapot(u, rng) -> Parts:
    p = Parts()
    rx, ry, rz = u(0.42, 0.52), u(0.38, 0.48), u(0.3, 0.4)
    p.add(ellipsoid((0, 0, rz), (rx, ry, rz)), 0)
    p.add(frustum((rx * 0.7, 0, rz * 0.8), (rx + u(0.3, 0.42), u(0.15, 0.25), rz * u(1.6, 1.9)), 0.09, 0.04), 1)
    p.add(torus((-rx * 0.85, 0, rz * 1.05), u(0.2, 0.26), 0.04, rot=rotation("z", 180) @ XY_TO_XZ,
                arc_degrees=200), 1)
    p.add(cylinder((0, 0, 2 * rz * 0.93), (0, 0, 2 * rz + 0.04), rx * 0.45), 2)
    p.add(ellipsoid((0, u(0.1, 0.15), 2 * rz + 0.08), [0.07] * 3), 2)
    p.add(cylinder((0, 0, 0), (0, 0, 0.05), rx * 0.6), 1)
    return p


def boot(u, rng) -> Parts:
    p = Parts()
    ls, hs, rs = u(0.85, 1.05), u(0.7, 1.0), u(0.17, 0.21)
    p.add(box((0.22, 0.32, 0.12), (-0.19, 0, 0.06)), 1)
    p.add(box((ls, 0.36, 0.06), (ls / 2 - 0.3, 0, 0.15)), 1)
    toe_y = u(0.04, 0.08)                                       # left boot: toe curves toward +y
    p.add(ellipsoid(((ls - 0.3) / 2 - 0.05, toe_y, 0.2), (ls / 2, 0.17, 0.13), rot=rotation("z", u(6, 12))), 0)
    p.add(cylinder((-0.12, 0, 0.15), (-0.12, 0, hs), rs), 0)
    p.add(torus((-0.12, 0, hs), rs, 0.035), 1)
    p.add(box((0.12, 0.04, 0.1), (-0.1, rs + 0.02, hs * 0.5)), 2)
    p.add(box((0.04, 0.03, hs * 0.6), (-0.05, rs, hs * 0.55)), 2)
    return p


def hammer(u, rng) -> Parts:
    p = Parts()
    lh, a, b = u(1.0, 1.3), u(0.25, 0.35), u(0.2, 0.3)
    p.add(cylinder((0, 0, 0), (0, 0, lh), 0.05), 0)
    p.add(cylinder((0, 0, 0), (0, 0, lh * 0.35), 0.065), 1)
    p.add(box((a + b, 0.12, 0.14), ((b - a) / 2, 0, lh)), 2)
    p.add(cylinder((b, 0, lh), (b + 0.08, 0, lh), 0.085), 2)
    claw = u(0.22, 0.32)
    p.add(prism([(-a, lh + 0.07), (-a, lh - 0.07), (-a - claw, lh - claw * 0.6)], 0.1, rot=XY_TO_XZ), 2)
    p.add(torus((0, 0.1, 0.06), 0.07, 0.015, rot=Z_TO_X), 1)
    p.add(box((0.06, 0.03, lh * 0.25), (0, 0.055, lh * 0.55)), 1)
    return p


def fish(u, rng) -> Parts:
    p = Parts()
    rx, ry, rz = u(0.5, 0.65), u(0.12, 0.17), u(0.2, 0.28)
    p.add(ellipsoid((0, 0, 0), (rx, ry, rz)), 0)
    tail = [(-rx * 0.9, 0), (-rx - 0.28, u(0.22, 0.3)), (-rx - 0.28, -u(0.1, 0.16))]
    p.add(transform_tail(prism(tail, 0.04, rot=XY_TO_XZ), rx, u(8, 18)), 1)
    p.add(prism([(-rx * 0.3, rz * 0.8), (rx * 0.1, rz * 0.8), (-rx * 0.35, rz + 0.18)], 0.03, rot=XY_TO_XZ), 1)
    p.add(ellipsoid((rx * 0.65, ry * 0.7, rz * 0.25), [0.05] * 3), 2)
    p.add(prism([(rx * 0.25, 0), (rx * 0.05, -0.2), (rx * 0.35, -0.16)], 0.03, (0, -ry * 0.8, -rz * 0.3)), 1)
    return p


def transform_tail(mesh: Mesh, rx: float, degrees: float) -> Mesh:
    """Bend a fish tail toward +y by rotating it about the vertical axis through the tail's root."""
    verts, faces = mesh
    root = np.array([-rx * 0.9, 0, 0])
    return (verts - root) @ rotation("z", -degrees).T + root, faces


def letter_f(u, rng) -> Parts:
    p = Parts()
    h, sw, t = u(1.0, 1.2), u(0.16, 0.22), u(0.15, 0.25)
    a, b = u(0.6, 0.75), u(0.4, 0.55)
    p.add(box((sw, t, h), (sw / 2, 0, h / 2)), 0)
    p.add(box((a, t, sw), (a / 2, 0, h - sw / 2)), 0)
    p.add(box((b, t, sw), (b / 2, 0, h * u(0.5, 0.6))), 1)
    p.add(box((sw * 1.8, t, 0.06), (sw / 2, 0, 0.03)), 1)
    for x, z in ((sw / 2, h * 0.2), (a * 0.75, h - sw / 2)):
        p.add(cylinder((x, t / 2, z), (x, t / 2 + 0.08, z), sw * 0.35), 2)
    return p


def airplane(u, rng) -> Parts:
    p = Parts()
    lf, rf, span, sweep = u(1.3, 1.9), u(0.07, 0.12), u(0.55, 0.9), u(5, 35)
    p.add(cylinder((-lf / 2, 0, 0), (lf / 2, 0, 0), rf), 0)
    p.add(frustum((lf / 2, 0, 0), (lf / 2 + u(0.15, 0.25), 0, 0), rf, 0), 1)
    p.add(frustum((-lf / 2, 0, 0), (-lf / 2 - 0.15, 0, rf * 0.6), rf, 0.02), 0)
    wx, chord, wz, dihedral = u(-0.05, 0.15), u(0.18, 0.34), rf * u(-0.7, 0.7), u(-4, 10)
    shift = span / 2 * np.tan(np.deg2rad(sweep))
    for side in (1, -1):
        lift = span / 2 * np.tan(np.deg2rad(dihedral))
        p.add(box((chord, span, 0.03), (wx - shift, side * span / 2, wz + lift),
                  rot=rotation("x", side * dihedral) @ rotation("z", side * sweep)), 1)
    p.add(prism([(-lf / 2, rf * 0.5), (-lf / 2 + 0.25, rf * 0.5), (-lf / 2 - 0.05, rf + 0.3)], 0.03,
                rot=XY_TO_XZ), 1)
    p.add(box((0.16, 0.6, 0.02), (-lf / 2 + 0.05, 0, rf * 0.3)), 1)
    yp = span * u(0.4, 0.55)
    p.add(cylinder((wx - shift + 0.18, yp, -rf - 0.03), (wx - shift - 0.2, yp, -rf - 0.03), 0.08), 2)
    return p


#: class name -> generator (u(lo, hi) -> float, rng) -> Parts; order fixes object index -> class
CLASSES: dict[str, Callable[..., Parts]] = {f.__name__: f for f in (
    mug, chair, bracket, car, lamp, key, teapot, boot, hammer, fish, letter_f, airplane)}
CLASS_SYNSETS = synsets_for(list(CLASSES), salt="procedural/")


def random_palette(rng: np.random.Generator, n: int = PALETTE_SIZE) -> np.ndarray:
    """(n, 3) RGB colours from the class-independent HSV distribution."""
    hsv = torch.from_numpy(np.stack([rng.uniform(0, 1, n), rng.uniform(*SATURATION_RANGE, n),
                                     rng.uniform(*VALUE_RANGE, n)], 1))
    return hsv_to_rgb(hsv[:, 0], hsv[:, 1], hsv[:, 2]).numpy()


def generate(class_name: str, seed: int, index: int) -> MeshData:
    """The procedural object number `index` of class `class_name` for `seed` (deterministic)."""
    rng = np.random.default_rng((seed, index))
    palette = random_palette(rng)
    stretch = rng.uniform(*STRETCH_RANGE, 3)
    parts = CLASSES[class_name](lambda lo, hi: float(rng.uniform(lo, hi)), rng)
    return parts.build(palette, stretch)


@register_source("procedural")
class ProceduralSource(ObjectSource):
    """`num_objects` procedural objects (default `DEFAULT_OBJECTS_PER_CLASS` per class), classes round-robin."""

    def __init__(self, num_objects: int | None = None, seed: int = 0):
        check_num_objects(num_objects)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.num_objects = num_objects if num_objects is not None else DEFAULT_OBJECTS_PER_CLASS * len(CLASSES)
        self.seed = int(seed)
        names = list(CLASSES)
        self._refs = [ObjectRef(f"proc-{names[i % len(names)]}-{i:06d}", names[i % len(names)],
                                CLASS_SYNSETS[names[i % len(names)]], None) for i in range(self.num_objects)]

    @classmethod
    def from_options(cls, root=None, num_objects=None, object_list=None, seed=0, up_axis=None) -> "ProceduralSource":
        refuse_option("procedural", "a source root (--source-root)", root)
        refuse_option("procedural", "an object list", object_list)
        refuse_option("procedural", "an up axis (--up-axis: its shapes are built z-up)", up_axis)
        return cls(num_objects, seed)

    def objects(self) -> list[ObjectRef]:
        return list(self._refs)

    def load(self, ref: ObjectRef) -> MeshData:
        index = int(ref.object_id.rsplit("-", 1)[1])
        return generate(ref.class_name, self.seed, index)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "num_objects": self.num_objects,
                "generator_version": GENERATOR_VERSION, "classes": list(CLASSES),
                "synsets": [CLASS_SYNSETS[c] for c in CLASSES]}
