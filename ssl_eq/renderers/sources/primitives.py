"""Triangle-mesh primitives in numpy, all with outward (counter-clockwise) winding.

Every primitive returns ``(verts (N, 3) float64, faces (F, 3) int64)``. Flat parts
(box sides, caps) have their own vertices so that normals computed from the faces
shade them flat; curved surfaces share vertices so that they shade smooth.
"""
from __future__ import annotations

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]

#: tessellation of curved primitives (segments around / along)
ROUND_SEGMENTS = 20
SPHERE_RINGS = 10
TORUS_TUBE_SEGMENTS = 8


def rotation(axis: str, degrees: float) -> np.ndarray:
    """(3, 3) right-handed rotation by `degrees` about the x, y or z axis."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def transform(mesh: Mesh, rot: np.ndarray | None = None, offset=(0.0, 0.0, 0.0)) -> Mesh:
    """Rotate (proper rotation, so winding is kept) then translate a mesh."""
    verts, faces = mesh
    if rot is not None:
        verts = verts @ np.asarray(rot).T
    return verts + np.asarray(offset, dtype=np.float64), faces


def _frame(direction: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose third column is the unit vector `direction` (columns u, v, d right-handed)."""
    d = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, d)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(d, u), d], axis=1)


def _grid_faces(rows: int, cols: int, wrap_cols: bool) -> np.ndarray:
    """Two triangles per cell of a (rows, cols) vertex grid, ordered (a, b, c), (a, c, d) with
    a = (i, j), b = (i + 1, j), c = (i + 1, j + 1), d = (i, j + 1)."""
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap_cols else cols - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    j1 = (j + 1) % cols
    a, b, c, d = i * cols + j, (i + 1) * cols + j, (i + 1) * cols + j1, i * cols + j1
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.int64)


def box(size, center=(0.0, 0.0, 0.0), rot: np.ndarray | None = None) -> Mesh:
    """Axis-aligned box of extents `size` (3,), optionally rotated about its centre; 12 faces."""
    half = np.asarray(size, dtype=np.float64) / 2
    quad = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    verts, faces = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3   # e_u x e_v = e_axis
        for sign in (1.0, -1.0):
            q = np.zeros((4, 3))
            q[:, axis] = sign
            q[:, u], q[:, v] = quad[:, 0], quad[:, 1]
            tri = np.array([[0, 1, 2], [0, 2, 3]]) if sign > 0 else np.array([[0, 2, 1], [0, 3, 2]])
            faces.append(tri + 4 * len(verts))
            verts.append(q * half)
    return transform((np.concatenate(verts), np.concatenate(faces).astype(np.int64)), rot, center)


def frustum(p0, p1, r0: float, r1: float, segments: int = ROUND_SEGMENTS) -> Mesh:
    """Truncated cone from point p0 (radius r0) to p1 (radius r1); a cylinder when r0 == r1,
    a cone when r1 == 0; closed by caps."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    height = np.linalg.norm(p1 - p0)
    ang = 2 * np.pi * np.arange(segments) / segments
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros(segments)], 1)
    top = ring * r1 + [0, 0, height]
    side = np.concatenate([ring * r0, top])
    verts, faces = [side], [_grid_faces(2, segments, wrap_cols=True)[:, ::-1]]   # rows run along the axis
    fan = np.stack([np.zeros(segments, np.int64), np.arange(1, segments + 1),
                    np.roll(np.arange(1, segments + 1), -1)], 1)
    for z, r, tri in ((height, r1, fan), (0.0, r0, fan[:, [0, 2, 1]])):
        if r > 0:
            faces.append(tri + sum(len(x) for x in verts))
            verts.append(np.concatenate([[[0, 0, z]], ring * r + [0, 0, z]]))
    return transform((np.concatenate(verts), np.concatenate(faces)), _frame(p1 - p0), p0)


def cylinder(p0, p1, radius: float, segments: int = ROUND_SEGMENTS) -> Mesh:
    """Closed cylinder between points p0 and p1."""
    return frustum(p0, p1, radius, radius, segments)


def ellipsoid(center, radii, rot: np.ndarray | None = None,
              rings: int = SPHERE_RINGS, segments: int = ROUND_SEGMENTS) -> Mesh:
    """Ellipsoid (a sphere when the radii are equal); latitude-longitude grid."""
    theta = np.linspace(0, np.pi, rings + 1)[:, None]
    phi = 2 * np.pi * np.arange(segments)[None, :] / segments
    unit = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                     np.cos(theta) * np.ones_like(phi)], -1).reshape(-1, 3)
    mesh = (unit * np.asarray(radii, dtype=np.float64), _grid_faces(rings + 1, segments, wrap_cols=True))
    return transform(mesh, rot, center)


def torus(center, major: float, minor: float, rot: np.ndarray | None = None, arc_degrees: float = 360.0,
          segments: int = ROUND_SEGMENTS, tube_segments: int = TORUS_TUBE_SEGMENTS) -> Mesh:
    """Torus around the local z axis (before `rot`); with `arc_degrees` < 360 an open tube arc
    starting at local angle -arc/2 and ending at +arc/2 (centred on local +x)."""
    closed = arc_degrees >= 360.0
    n_u = segments if closed else segments + 1
    u = np.deg2rad(arc_degrees) * (np.arange(n_u) / segments - (0.0 if closed else 0.5))[:, None]
    v = 2 * np.pi * np.arange(tube_segments)[None, :] / tube_segments
    rad = major + minor * np.cos(v)
    verts = np.stack([rad * np.cos(u), rad * np.sin(u), minor * np.sin(v) * np.ones_like(u)], -1).reshape(-1, 3)
    # a closed torus wraps its last ring of tube vertices onto the first
    faces = _grid_faces(n_u + closed, tube_segments, wrap_cols=True) % (n_u * tube_segments)
    return transform((verts, faces), rot, center)


def prism(polygon, thickness: float, center=(0.0, 0.0, 0.0), rot: np.ndarray | None = None) -> Mesh:
    """Convex polygon (P, 2) in the local xy plane (either orientation), extruded along local z
    from -thickness/2 to +thickness/2."""
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = poly[:, 0], poly[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:   # clockwise: reverse for outward winding
        poly = poly[::-1]
    p = len(poly)
    h = thickness / 2
    bottom = np.column_stack([poly, np.full(p, -h)])
    top = np.column_stack([poly, np.full(p, h)])
    fan = np.stack([np.zeros(p - 2, np.int64), np.arange(1, p - 1), np.arange(2, p)], 1)
    verts, faces = [top, bottom], [fan, fan[:, [0, 2, 1]] + p]
    for k in range(p):
        k1 = (k + 1) % p
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + sum(len(x) for x in verts))
        verts.append(np.stack([bottom[k], bottom[k1], top[k1], top[k]]))
    return transform((np.concatenate(verts), np.concatenate(faces).astype(np.int64)), rot, center)
