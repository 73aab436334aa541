"""Batched PyTorch3D renderer of the 3DIEBench scene: floor, sun, spot light with a shadow map.

One call renders B (object, view) items. Each item's object (posed by its latent) is rasterised only in
a window around its projected vertices (a crop of the camera's projection, one window size per batch);
the floor plane is shaded analytically (ray-plane intersection per pixel) and the object's depth decides
visibility. A second rasterisation from each item's spot light, fitted to the object's bounding sphere,
gives the shadow map. Shading is diffuse (Lambert) with Blender's units: radiance =
albedo * (ambient + (E_sun + E_spot * visibility) / pi), then sRGB encoding (kornia). Projections are the
cameras' `transform_points_screen`, the spot light's frustum is fitted to `Meshes.get_bounding_boxes()`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import linear_rgb_to_rgb
from pytorch3d.renderer import (DirectionalLights, FoVPerspectiveCameras, MeshRasterizer,
                                RasterizationSettings, look_at_view_transform)
from pytorch3d.renderer.mesh.utils import interpolate_face_attributes
from pytorch3d.structures import Meshes
from torch import Tensor

from ..geometry import euler_xyz_to_matrix, hsv_to_rgb, spherical_to_cartesian
from ..utils.device import resolve_device  # noqa: F401 - the render / orbit device rule lives in utils.device
from .lights import SpotLights
from .scene import RenderSettings, SceneSpec

_EMPTY_DEPTH = 1e6
_ZNEAR, _ZFAR = 0.1, 100.0             # camera clipping planes (scene units)
_LIGHT_ZNEAR = 0.05                    # near plane of the lights' shadow cameras
_WINDOW_MARGIN_PX = 1                  # pixels added around the projected object box
_WINDOW_STEPS = 16                     # window sides are multiples of S / 16: few raster calls per batch
_WINDOW_CHANNELS = 10                  # depth, point (3), normal (3), albedo (3)
_CULL_EPS_PX = 1e-2                    # slack of the sub-pixel face cull (rounding of the projection)
_MAX_FACES_PER_BIN = 200_000           # CUDA coarse rasteriser


@dataclass
class MeshTensors:
    """One object mesh on the render device: verts (N, 3), faces (F, 3) int64, face_colors (F, 3)."""

    verts: Tensor
    faces: Tensor
    face_colors: Tensor

    @classmethod
    def from_mesh(cls, mesh, device: torch.device) -> "MeshTensors":
        """From any object with numpy `verts`, `faces`, `face_colors` (e.g. sources.MeshData)."""
        return cls(torch.as_tensor(np.asarray(mesh.verts), dtype=torch.float32, device=device),
                   torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64, device=device),
                   torch.as_tensor(np.asarray(mesh.face_colors), dtype=torch.float32, device=device))


def _look_at(eye: Tensor, at: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """World-to-view R, T of cameras at eye (B, 3) looking at `at` (B, 3), z up (y up when looking along z)."""
    d = (at - eye) / (at - eye).norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0], device=device).expand_as(eye).clone()
    up[d[:, 2].abs() > 0.99] = torch.tensor([0.0, 1.0, 0.0], device=device)
    return look_at_view_transform(eye=eye, at=at, up=up, device=device)


def _faces_covering_pixels(objects: Meshes, pix: Tensor, lower: Tensor, upper: Tensor,
                           keep_all: Tensor) -> tuple[Meshes, Tensor]:
    """Drop the faces whose pixel box holds no pixel centre of their item's raster (centres at integer `pix`):
    with blur radius 0 they are no pixel's face, so the rest rasterise to the same fragments at a lower cost
    (PyTorch3D's CPU kernel pays per face and per pixel-face test). pix (V, 2) packed vertices' pixel x, y;
    lower, upper (B, 2) the raster's first / last pixel; keep_all (B,) items left whole.
    -> (meshes of the kept faces, (F_kept,) packed ids of the kept faces in `objects`)."""
    faces = objects.faces_packed()
    item = objects.faces_packed_to_mesh_idx()
    box = pix[faces]                                                        # (F, 3, 2)
    first = torch.maximum((box.amin(1) - _CULL_EPS_PX).ceil(), lower[item])
    last = torch.minimum((box.amax(1) + _CULL_EPS_PX).floor(), upper[item])
    kept = ((first <= last).all(-1) | keep_all[item]).nonzero()[:, 0]
    local = faces[kept] - objects.mesh_to_verts_packed_first_idx()[item[kept]][:, None]
    counts = torch.bincount(item[kept], minlength=len(objects)).tolist()
    return Meshes(verts=objects.verts_list(), faces=list(local.split(counts))), kept


class SceneRenderer:
    """Renders batches of (object mesh, latent) items of the 3DIEBench scene.

    render(meshes, mesh_index, latents) -> {"images": uint8 (B, H, W, 3), "mask": bool (B, H, W),
    "shadow": float (B, S, S), "window": long (B, 3) [x0, y0, P]} where meshes is a list of MeshTensors,
    mesh_index (B,) picks one per item, latents (B, D) follows docs/scene.md ([rot xyz, floor hue, spot theta,
    spot phi, spot hue, (trans xyz)]) and S = image_size * supersample.

    Only the object is rasterised, inside a square window per item (around its projected vertices, side a
    multiple of S / 16; one rasterisation per distinct side), through a crop of the camera's projection, and
    faces too small to hold a pixel centre are dropped first (also for the shadow map); the floor
    (plane z = floor_z) is intersected analytically with each pixel's ray and the nearer of floor and
    object is shaded. The camera comes from `settings.scene` (position, field of view).
    """

    def __init__(self, settings: RenderSettings = RenderSettings(), device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.spec: SceneSpec = settings.scene
        self.device = torch.device(device)
        self.size = settings.image_size * settings.supersample           # S: pixels per side rendered
        cuda = self.device.type == "cuda"
        # coarse-to-fine binning on the GPU; the CPU path is fastest with PyTorch3D's naive kernel
        self._raster_kw = dict(blur_radius=0.0, faces_per_pixel=1, bin_size=None if cuda else 0,
                               max_faces_per_bin=_MAX_FACES_PER_BIN if cuda else None)
        self._shadow_raster = RasterizationSettings(image_size=settings.shadow_map_size, **self._raster_kw)
        s = self.spec
        eye = torch.tensor([s.camera_position()], dtype=torch.float32, device=self.device)
        self._cam_r, self._cam_t = _look_at(eye, torch.zeros_like(eye), self.device)
        self._camera_position = eye
        self._camera = FoVPerspectiveCameras(R=self._cam_r, T=self._cam_t, fov=s.fov_degrees, znear=_ZNEAR,
                                             zfar=_ZFAR, device=self.device)
        self._projection = self._camera.get_projection_transform().get_matrix().transpose(1, 2)  # (1, 4, 4) K
        self._floor = self._floor_rays()

    def _floor_rays(self) -> tuple[Tensor, Tensor]:
        """Ray-plane intersection of every pixel centre's camera ray with the floor z = floor_z.
        -> points (S, S, 3) world, depth (S, S) view z (inf where the ray misses the floor square)."""
        s, size = self.spec, self.size
        centres = torch.arange(size, device=self.device, dtype=torch.float32)
        ndc = 1 - (2 * centres + 1) / size                                       # PyTorch3D: +x left, +y up
        k = self._projection[0]
        x_view = (ndc / k[0, 0])[None, :].expand(size, size)
        y_view = (ndc / k[1, 1])[:, None].expand(size, size)
        d_view = torch.stack([x_view, y_view, torch.ones_like(x_view)], -1)      # view z = 1 per unit of t
        d_world = d_view @ self._cam_r[0].T                                      # X_view = X_world R + T
        eye = self._camera_position[0]
        t = (s.floor_z - eye[2]) / d_world[..., 2]
        points = eye + t[..., None] * d_world
        inside = (t > _ZNEAR) & (t < _ZFAR) & (points[..., :2].abs() <= s.floor_half_size).all(-1)
        return points, torch.where(inside, t, torch.full_like(t, math.inf))

    def object_vertices(self, meshes: list[MeshTensors], mesh_index: Tensor, latents: Tensor) -> list[Tensor]:
        """World vertices of each item's object: R (v + t), object matrix R·T(t) as in 3DIEBench-T."""
        verts = torch.cat([meshes[i].verts for i in mesh_index.tolist()])
        counts = [len(meshes[i].verts) for i in mesh_index.tolist()]
        item = torch.repeat_interleave(torch.arange(len(counts), device=self.device),
                                       torch.tensor(counts, device=self.device))
        if latents.shape[1] >= 10:
            verts = verts + latents[item, 7:10]
        rot = euler_xyz_to_matrix(latents[:, :3])[item]                          # (V, 3, 3)
        return list((verts[:, None, :] * rot).sum(-1).split(counts))

    def _pixels(self, objects: Meshes) -> tuple[Tensor, Tensor]:
        """Camera pixel coordinates of the packed vertices -> pix (V, 2) x, y (pixel centres at integers),
        behind (B,) items with a vertex at / behind the camera (their pixels are meaningless)."""
        return _screen_pixels(self._camera, objects, self.size)

    def object_windows(self, objects: Meshes) -> tuple[Tensor, Tensor, Tensor]:
        """Square pixel window of each item: the box of its projected vertices (+ a margin), its side rounded
        up to a multiple of S / WINDOW_STEPS, shifted to lie inside the image (the whole frame when a vertex is
        behind the camera). An item's window depends on that item alone, so renders do not depend on the
        batch. -> x0, y0 top-left pixel, side; long (B,)."""
        size, margin = self.size, _WINDOW_MARGIN_PX
        pix, behind = self._pixels(objects)
        index = objects.verts_packed_to_mesh_idx()[:, None].expand(-1, 2)
        lo = torch.full((len(objects), 2), math.inf, device=self.device).scatter_reduce(0, index, pix, "amin")
        hi = torch.full((len(objects), 2), -math.inf, device=self.device).scatter_reduce(0, index, pix, "amax")
        lo = (lo.ceil() - margin).clamp(0, size - 1).long()
        hi = (hi.floor() + margin).clamp(0, size - 1).long()
        step = max(1, math.ceil(size / _WINDOW_STEPS))
        side = ((hi - lo + 1).amax(-1).clamp_min(1) + step - 1) // step * step
        side = torch.where(behind, size, side.clamp(max=size))
        start = torch.minimum(lo, (size - side)[:, None])
        start = torch.where(behind[:, None], 0, start)
        return start[:, 0], start[:, 1], side

    def _window_attributes(self, objects: Meshes, face_colors: Tensor, x0: Tensor, y0: Tensor,
                           side: int) -> Tensor:
        """Rasterise items sharing one window side P -> (b, P*P, 10): view depth (inf where empty), world
        point (3), face normal (3), albedo (3) of each window pixel."""
        pix, behind = self._pixels(objects)
        lower = torch.stack([x0, y0], -1).float()
        visible, kept = _faces_covering_pixels(objects, pix, lower, lower + side - 1, behind)
        frags = MeshRasterizer(cameras=self._window_cameras(x0, y0, side),
                               raster_settings=RasterizationSettings(image_size=side, perspective_correct=True,
                                                                     **self._raster_kw))(visible)
        pix_to_face = frags.pix_to_face[..., 0]
        face = kept[pix_to_face.clamp_min(0)]                                   # ids in `objects`
        faces_verts = visible.verts_packed()[visible.faces_packed()]             # (F_kept, 3, 3)
        points = interpolate_face_attributes(frags.pix_to_face, frags.bary_coords, faces_verts)[..., 0, :]
        depth = torch.where(pix_to_face >= 0, frags.zbuf[..., 0], torch.full_like(frags.zbuf[..., 0], math.inf))
        return torch.cat([depth[..., None], points, objects.faces_normals_packed()[face], face_colors[face]],
                         -1).reshape(len(objects), side * side, -1)

    def _window_cameras(self, x0: Tensor, y0: Tensor, side: int) -> FoVPerspectiveCameras:
        """Cameras whose NDC square is the window of side `side` pixels at (x0, y0) of the S x S image: the
        projection followed by x' = a x + c (a = S / side), so window pixel (i, j) is image pixel (y0+i, x0+j)."""
        batch, size = len(x0), self.size
        crop = torch.eye(4, device=self.device).repeat(batch, 1, 1)
        crop[:, 0, 0] = crop[:, 1, 1] = size / side
        crop[:, 0, 3] = (side - size + 2 * x0.float()) / side
        crop[:, 1, 3] = (side - size + 2 * y0.float()) / side
        return FoVPerspectiveCameras(R=self._cam_r.expand(batch, 3, 3), T=self._cam_t.expand(batch, 3),
                                     K=crop @ self._projection, device=self.device)

    @torch.no_grad()
    def render(self, meshes: list[MeshTensors], mesh_index: Tensor, latents: Tensor) -> dict[str, Tensor]:
        s, st, size = self.spec, self.settings, self.size
        latents = latents.to(self.device, torch.float32)
        mesh_index = torch.as_tensor(mesh_index)
        batch = latents.shape[0]
        objects = Meshes(verts=self.object_vertices(meshes, mesh_index, latents),
                         faces=[meshes[i].faces for i in mesh_index.tolist()])
        face_colors = [meshes[i].face_colors for i in mesh_index.tolist()]

        # the object, rasterised in its window (one call per window side), placed into the (B, S, S) image
        x0, y0, sides = self.object_windows(objects)
        full = torch.full((batch, size * size, _WINDOW_CHANNELS), math.inf, device=self.device)
        for side in sides.unique().tolist():
            items = (sides == side).nonzero()[:, 0]
            colors = torch.cat([face_colors[i] for i in items.tolist()])
            attrs = self._window_attributes(objects[items.tolist()], colors, x0[items], y0[items], side)
            ramp = torch.arange(side, device=self.device)
            flat = ((y0[items, None] + ramp)[:, :, None] * size + (x0[items, None] + ramp)[:, None, :])
            full[items] = full[items].scatter(1, flat.reshape(len(items), -1, 1).expand_as(attrs), attrs)
        full = full.reshape(batch, size, size, _WINDOW_CHANNELS)

        # the floor, analytic; the nearer of floor and object is seen
        floor_points, floor_depth = self._floor
        floor_rgb = hsv_to_rgb(latents[:, 3], s.floor_saturation, s.floor_value)  # (B, 3)
        is_object = full[..., 0] < floor_depth                                    # (B, S, S)
        hit = is_object | torch.isfinite(floor_depth)
        obj = is_object[..., None]
        points = torch.where(obj, full[..., 1:4], floor_points)
        normals = torch.where(obj, full[..., 4:7], torch.tensor([0.0, 0.0, 1.0], device=self.device))
        albedo = torch.where(obj, full[..., 7:10], floor_rgb[:, None, None, :])
        to_cam = self._camera_position.view(1, 1, 1, 3) - points
        normals = torch.where((normals * to_cam).sum(-1, keepdim=True) < 0, -normals, normals)

        spot_pos, spot, sun = _scene_lights(s, latents, self.device)
        p5, n5 = points[..., None, :], normals[..., None, :]                       # (B, S, S, 1, 3)
        visibility = self.shadow_visibility(objects, spot_pos, points)            # (B, S, S)
        e_spot = spot.diffuse(normals=n5, points=p5)[..., 0, :] * visibility[..., None]
        e_sun = sun.diffuse(normals=normals.reshape(batch, -1, 3), points=None).reshape(normals.shape)
        radiance = albedo * (s.ambient + (e_sun + e_spot) / math.pi)
        radiance = torch.where(hit[..., None], radiance, torch.full_like(radiance, s.ambient))
        rgb = _linear_to_srgb(radiance * s.exposure)                    # (B, S, S, 3)
        mask = is_object.float()
        if st.supersample > 1:
            rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), st.supersample).permute(0, 2, 3, 1)
            mask = F.avg_pool2d(mask[:, None], st.supersample)[:, 0]
        images = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        windows = torch.stack([x0, y0, sides], -1)
        return {"images": images, "mask": mask >= 0.5, "shadow": visibility, "window": windows}

    def shadow_visibility(self, objects: Meshes, light_pos: Tensor, points: Tensor) -> Tensor:
        """Fraction of the spot light reaching points (B, S, S, 3) -> (B, S, S), via a depth map of the
        objects seen from each light and percentage-closer filtering. The light's frustum is fitted to
        the object's bounding sphere (rays outside it cannot be occluded), so a small map is sharp."""
        st = self.settings
        batch = light_pos.shape[0]
        verts, item = objects.verts_packed(), objects.verts_packed_to_mesh_idx()
        centres = objects.get_bounding_boxes().mean(-1)                                  # (B, 3) box centres
        radii = torch.zeros(batch, device=self.device).scatter_reduce(
            0, item, (verts - centres[item]).norm(dim=-1), "amax")
        dist = (light_pos - centres).norm(dim=-1)
        fov = torch.rad2deg(2 * torch.asin((radii * 1.02 / dist).clamp(max=0.99)))
        r, t = _look_at(light_pos, centres, self.device)
        light_cams = FoVPerspectiveCameras(R=r, T=t, fov=fov, znear=_LIGHT_ZNEAR, zfar=_ZFAR, device=self.device)
        m = st.shadow_map_size
        pix, behind = _screen_pixels(light_cams, objects, m, _LIGHT_ZNEAR)
        edge = torch.tensor([0.0, m - 1.0], device=self.device)
        occluders, _ = _faces_covering_pixels(objects, pix, edge[0].expand(batch, 2), edge[1].expand(batch, 2),
                                              behind)
        depth_map = MeshRasterizer(cameras=light_cams, raster_settings=self._shadow_raster)(occluders).zbuf
        return _shadow_visibility(depth_map, light_cams, points, st)


def _scene_lights(spec: SceneSpec, latents: Tensor, device: torch.device
                  ) -> tuple[Tensor, SpotLights, DirectionalLights]:
    """Each item's spot light from its latents (B, D) (θ, φ, hue at columns 4-6) and the downward sun ->
    (spot positions (B, 3), SpotLights, DirectionalLights) in Blender's units (docs/scene.md)."""
    spot_pos = spherical_to_cartesian(spec.spot_radius, latents[:, 4], latents[:, 5])
    spot_rgb = hsv_to_rgb(latents[:, 6], spec.spot_saturation, spec.spot_value)
    spot = SpotLights(diffuse_color=spot_rgb * (spec.spot_energy / (4 * math.pi)), location=spot_pos,
                      direction=-spot_pos, spot_size=spec.spot_size, spot_blend=spec.spot_blend,
                      inverse_square=True, device=device)
    sun = DirectionalLights(diffuse_color=((spec.sun_energy,) * 3,), direction=((0.0, 0.0, 1.0),), device=device)
    return spot_pos, spot, sun

def _shadow_visibility(zbuf: Tensor, light_cams: FoVPerspectiveCameras, points: Tensor,
                       settings: RenderSettings) -> Tensor:
    """Percentage-closer-filtered light visibility in [0, 1] of world points (B, ..., 3) from each item's
    shadow-map depth `zbuf` (B, M, M, 1) rendered by `light_cams`; points outside the map are lit."""
    batch = points.shape[0]
    depth_map = torch.where(zbuf < 0, torch.full_like(zbuf, _EMPTY_DEPTH), zbuf)
    depth_map = depth_map.permute(0, 3, 1, 2)                        # (B, 1, M, M)
    flat = points.reshape(batch, -1, 3)
    depth = light_cams.get_world_to_view_transform().transform_points(flat)[..., 2]
    ndc = light_cams.transform_points_ndc(flat)[..., :2]
    grid = -ndc                                                      # PyTorch3D NDC: +x left, +y up
    k, texel = settings.shadow_pcf, 2.0 / settings.shadow_map_size
    offsets = [(dx * texel, dy * texel) for dx in range(-k, k + 1) for dy in range(-k, k + 1)]
    lit = torch.zeros_like(depth)
    for dx, dy in offsets:
        g = (grid + torch.tensor([dx, dy], device=points.device))[:, :, None, :]
        occ = F.grid_sample(depth_map, g, mode="nearest", padding_mode="border", align_corners=False)
        lit += (depth <= occ[:, 0, :, 0] + settings.shadow_bias).float()
    vis = lit / len(offsets)
    outside = (grid.abs() > 1).any(-1)
    return torch.where(outside, torch.ones_like(vis), vis).reshape(points.shape[:-1])


def _linear_to_srgb(x: Tensor) -> Tensor:
    """(..., 3) linear RGB -> sRGB-encoded, clipped to [0, 1] first (kornia's encoding, channels first)."""
    return linear_rgb_to_rgb(x.clamp(0, 1).movedim(-1, -3)).movedim(-3, -1)


def _screen_pixels(cameras: FoVPerspectiveCameras, objects: Meshes, size: int, znear: float = _ZNEAR
                   ) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (centres at integers) of `objects`' packed vertices in the size x size images of
    `cameras` (one, or one per mesh) -> pix (V, 2) x, y and behind (B,): items with a vertex at / behind the
    near plane `znear` (their pixels are meaningless)."""
    padded = objects.verts_padded()                                           # (B, Vmax, 3)
    packed = objects.verts_padded_to_packed_idx()
    depth = cameras.get_world_to_view_transform().transform_points(padded)[..., 2].flatten()[packed]
    screen = cameras.transform_points_screen(padded, eps=znear, image_size=((size, size),))
    behind = torch.zeros(len(objects), dtype=torch.bool, device=padded.device)
    behind[objects.verts_packed_to_mesh_idx()[depth <= znear]] = True
    return screen[..., :2].flatten(0, 1)[packed] - 0.5, behind                # PyTorch3D: pixel i spans [i, i + 1]
