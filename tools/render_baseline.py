"""FROZEN copy of `ssl_eq.renderers.renderer` as of commit f7a9278 (before issue #15), for
`tools/bench_render.py` (the previous renderer, timed in the same run) and
`tools/make_render_reference.py` (the reference renders stored in tests/data). Not imported by the package;
do not edit: it is the baseline, not a renderer to maintain. Mesh tensors, the camera look-at, the lights, the
shadow-map lookup and the sRGB encoding are shared with the package's renderer (imported, unchanged by #15).

Batched PyTorch3D renderer of the 3DIEBench scene: floor, sun, spot light with a shadow map.

One call renders B (object, view) items: every item is one mesh of the batch (object posed by
its latent + the floor), rasterised together; a second rasterisation from each item's spot light
gives the shadow map. Shading is diffuse (Lambert) with Blender's units: radiance =
albedo * (ambient + (E_sun + E_spot * visibility) / pi), then sRGB encoding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pytorch3d.renderer import FoVPerspectiveCameras, MeshRasterizer, RasterizationSettings
from pytorch3d.renderer.mesh.utils import interpolate_face_attributes
from pytorch3d.structures import Meshes
from torch import Tensor

from ssl_eq.geometry import euler_xyz_to_matrix, hsv_to_rgb
from ssl_eq.renderers.renderer import MeshTensors, _linear_to_srgb, _look_at, _scene_lights, _shadow_visibility
from ssl_eq.renderers.scene import RenderSettings, SceneSpec


def _rotate(points: Tensor, rot: Tensor) -> Tensor:
    """points (B, N, 3), rot (B, 3, 3) -> rot @ p per point. Elementwise (bit-stable across batch sizes)."""
    return (points[:, :, None, :] * rot[:, None, :, :]).sum(-1)


class BaselineSceneRenderer:
    """Renders batches of (object mesh, latent) items of the 3DIEBench scene.

    render(meshes, mesh_index, latents) -> {"images": uint8 (B, H, W, 3), "mask": bool (B, H, W)}
    where meshes is a list of MeshTensors, mesh_index (B,) picks one per item and latents (B, D)
    follows docs/scene.md ([rot xyz, floor hue, spot theta, spot phi, spot hue, (trans xyz)]).
    """

    def __init__(self, settings: RenderSettings = RenderSettings(), device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.spec: SceneSpec = settings.scene
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        size = settings.image_size * settings.supersample
        # coarse-to-fine binning on the GPU; the CPU path is fastest with PyTorch3D's naive kernel
        self._raster = RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1,
                                             bin_size=None if cuda else 0, max_faces_per_bin=200_000 if cuda else None,
                                             perspective_correct=True)
        self._shadow_raster = RasterizationSettings(image_size=settings.shadow_map_size, blur_radius=0.0,
                                                    faces_per_pixel=1, bin_size=None if cuda else 0,
                                                    max_faces_per_bin=200_000 if cuda else None)
        s = self.spec
        eye = torch.tensor([s.camera_position()], dtype=torch.float32, device=self.device)
        self._cam_rt = _look_at(eye, torch.zeros_like(eye), self.device)
        self._camera_position = eye
        h = s.floor_half_size
        self._floor_verts = torch.tensor([[-h, -h, s.floor_z], [h, -h, s.floor_z], [h, h, s.floor_z],
                                          [-h, h, s.floor_z]], dtype=torch.float32, device=self.device)
        self._floor_faces = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int64, device=self.device)

    def _cameras(self, batch: int) -> FoVPerspectiveCameras:
        r, t = self._cam_rt
        return FoVPerspectiveCameras(R=r.expand(batch, 3, 3), T=t.expand(batch, 3), fov=self.spec.fov_degrees,
                                     znear=0.1, zfar=100.0, device=self.device)

    def object_vertices(self, meshes: list[MeshTensors], mesh_index: Tensor, latents: Tensor) -> list[Tensor]:
        """World vertices of each item's object: R (v + t), object matrix R·T(t) as in 3DIEBench-T."""
        rot = euler_xyz_to_matrix(latents[:, :3])
        out = []
        for b, i in enumerate(mesh_index.tolist()):
            v = meshes[i].verts
            if latents.shape[1] >= 10:
                v = v + latents[b, 7:10]
            out.append(_rotate(v[None], rot[b:b + 1])[0])
        return out

    @torch.no_grad()
    def render(self, meshes: list[MeshTensors], mesh_index: Tensor, latents: Tensor) -> dict[str, Tensor]:
        s, st = self.spec, self.settings
        latents = latents.to(self.device, torch.float32)
        mesh_index = torch.as_tensor(mesh_index)
        batch = latents.shape[0]
        obj_verts = self.object_vertices(meshes, mesh_index, latents)
        obj_faces = [meshes[i].faces for i in mesh_index.tolist()]
        floor_rgb = hsv_to_rgb(latents[:, 3], s.floor_saturation, s.floor_value)  # (B, 3)
        n_floor = len(self._floor_faces)
        scene = Meshes(verts=[torch.cat([v, self._floor_verts]) for v in obj_verts],
                       faces=[torch.cat([f, self._floor_faces + len(v)]) for v, f in zip(obj_verts, obj_faces)])
        face_colors = torch.cat([torch.cat([meshes[i].face_colors, floor_rgb[b].expand(n_floor, 3)])
                                 for b, i in enumerate(mesh_index.tolist())])
        is_object = torch.cat([torch.cat([torch.ones(len(f), dtype=torch.bool, device=self.device),
                                          torch.zeros(n_floor, dtype=torch.bool, device=self.device)])
                               for f in obj_faces])

        cameras = self._cameras(batch)
        frags = MeshRasterizer(cameras=cameras, raster_settings=self._raster)(scene)
        pix = frags.pix_to_face[..., 0]                                  # (B, S, S), packed face or -1
        hit = pix >= 0
        face = pix.clamp_min(0)
        faces_verts = scene.verts_packed()[scene.faces_packed()]         # (F, 3, 3)
        points = interpolate_face_attributes(frags.pix_to_face, frags.bary_coords, faces_verts)[..., 0, :]
        normals = scene.faces_normals_packed()[face]                     # (B, S, S, 3)
        to_cam = self._camera_position.view(1, 1, 1, 3) - points
        normals = torch.where((normals * to_cam).sum(-1, keepdim=True) < 0, -normals, normals)
        albedo = face_colors[face]

        spot_pos, spot, sun = _scene_lights(s, latents, self.device)
        p5, n5 = points[..., None, :], normals[..., None, :]                       # (B, S, S, 1, 3)
        visibility = self.shadow_visibility(obj_verts, obj_faces, spot_pos, points)  # (B, S, S)
        e_spot = spot.diffuse(normals=n5, points=p5)[..., 0, :] * visibility[..., None]
        e_sun = sun.diffuse(normals=normals.reshape(batch, -1, 3), points=None).reshape(normals.shape)
        radiance = albedo * (s.ambient + (e_sun + e_spot) / math.pi)
        radiance = torch.where(hit[..., None], radiance, torch.full_like(radiance, s.ambient))
        rgb = _linear_to_srgb(radiance * s.exposure)                    # (B, S, S, 3)
        mask = (hit & is_object[face]).float()
        if st.supersample > 1:
            rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), st.supersample).permute(0, 2, 3, 1)
            mask = F.avg_pool2d(mask[:, None], st.supersample)[:, 0]
        images = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        return {"images": images, "mask": mask >= 0.5, "shadow": visibility}

    def shadow_visibility(self, obj_verts: list[Tensor], obj_faces: list[Tensor], light_pos: Tensor,
                          points: Tensor) -> Tensor:
        """Fraction of the spot light reaching points (B, S, S, 3) -> (B, S, S), via a depth map of the
        objects seen from each light and percentage-closer filtering. The light's frustum is fitted to
        the object's bounding sphere (rays outside it cannot be occluded), so a small map is sharp."""
        st = self.settings
        batch = light_pos.shape[0]
        centres = torch.stack([(v.amin(0) + v.amax(0)) / 2 for v in obj_verts])          # (B, 3)
        radii = torch.stack([(v - c).norm(dim=-1).amax() for v, c in zip(obj_verts, centres)])
        dist = (light_pos - centres).norm(dim=-1)
        fov = torch.rad2deg(2 * torch.asin((radii * 1.02 / dist).clamp(max=0.99)))
        r, t = _look_at(light_pos, centres, self.device)
        light_cams = FoVPerspectiveCameras(R=r, T=t, fov=fov, znear=0.05, zfar=100.0, device=self.device)
        occluders = Meshes(verts=obj_verts, faces=obj_faces)
        depth_map = MeshRasterizer(cameras=light_cams, raster_settings=self._shadow_raster)(occluders).zbuf
        return _shadow_visibility(depth_map, light_cams, points, st)
