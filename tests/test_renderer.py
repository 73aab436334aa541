"""Renderer conventions against Blender ground truth, lighting, shadows and the SpotLights class."""
from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer
from ssl_eq.renderers.scene import RenderSettings, SceneSpec, sample_latents
from ssl_eq.renderers.sources import MeshData


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def render(mesh, latents, size=64, spec=SceneSpec(), **kw):
    r = SceneRenderer(RenderSettings(image_size=size, scene=spec, **kw), "cpu")
    lat = torch.as_tensor(np.asarray(latents), dtype=torch.float32)
    return r.render([MeshTensors.from_mesh(mesh, "cpu")], torch.zeros(len(lat), dtype=torch.long), lat)


def test_silhouettes_match_blender(mug_mesh, fixture_latents, blender_fixtures):
    out = render(mug_mesh, fixture_latents, size=128)
    for k in range(8):
        truth = np.array(Image.open(blender_fixtures / f"mask_{k}.png"))[..., 3] > 127
        assert iou(out["mask"][k].numpy(), truth) >= 0.97, f"view {k}"


def test_lit_disc_and_shadow_match_blender(mug_mesh, fixture_latents, blender_fixtures):
    """The spot's lit disc falls where Blender's does: compare floor-brightness centroids."""
    out = render(mug_mesh, fixture_latents[:4], size=128)
    base = render(mug_mesh, fixture_latents[:4], size=128, spec=SceneSpec(spot_energy=0.0))
    for k in range(4):
        ours = out["images"][k].float().sum(-1) - base["images"][k].float().sum(-1)
        blender = np.array(Image.open(blender_fixtures / f"image_{k}.png").convert("RGB")).astype(float).sum(-1)
        ours_lit = ours.numpy() > 30
        blender_lit = blender > np.percentile(blender, 100 * (1 - ours_lit.mean()))
        dist = np.abs(np.argwhere(ours_lit).mean(0) - np.argwhere(blender_lit).mean(0)).max()
        assert dist < 128 * 0.12, f"view {k}: lit-disc centroids {dist:.1f} px apart"


def test_rotation_convention_matches_scipy(mug_mesh):
    a = np.array([0.7, -0.4, 1.1])
    pre = MeshData(verts=mug_mesh.verts @ Rotation.from_euler("xyz", a).as_matrix().T.astype(np.float32),
                   faces=mug_mesh.faces, face_colors=mug_mesh.face_colors)
    lat_rot = np.array([[*a, 0.3, 0.2, 1.0, 0.5]])
    lat_zero = np.array([[0.0, 0.0, 0.0, 0.3, 0.2, 1.0, 0.5]])
    m1 = render(mug_mesh, lat_rot, size=96)["mask"][0].numpy()
    m2 = render(pre, lat_zero, size=96)["mask"][0].numpy()
    assert iou(m1, m2) > 0.98
    # and it is not trivially true: the other Euler order gives a different silhouette
    other = MeshData(verts=mug_mesh.verts @ Rotation.from_euler("XYZ", a).as_matrix().T.astype(np.float32),
                     faces=mug_mesh.faces, face_colors=mug_mesh.face_colors)
    assert iou(m1, render(other, lat_zero, size=96)["mask"][0].numpy()) < 0.9


def test_translation_variant_uses_object_matrix_r_t(mug_mesh):
    a, t = np.array([0.3, 0.5, -0.8]), np.array([0.4, -0.3, 0.2])
    rot = Rotation.from_euler("xyz", a).as_matrix()
    moved = MeshData(verts=((mug_mesh.verts + t) @ rot.T).astype(np.float32), faces=mug_mesh.faces,
                     face_colors=mug_mesh.face_colors)
    m1 = render(mug_mesh, [[*a, 0.1, 0.2, 1.0, 0.5, *t]], size=96)["mask"][0].numpy()
    m2 = render(moved, [[0, 0, 0, 0.1, 0.2, 1.0, 0.5]], size=96)["mask"][0].numpy()
    assert iou(m1, m2) > 0.98


def _centroid(mask: np.ndarray) -> np.ndarray:
    assert mask.sum() > 10
    return np.argwhere(mask).mean(0)


def test_spot_disc_and_shadow_move_with_theta_phi(mug_mesh):
    lats = [[0.2, 0.1, 0.3, 0.5, math.pi / 4, phi, 0.0] for phi in (0.0, 3 * math.pi / 2, math.pi)]
    lats.append([0.2, 0.1, 0.3, 0.5, 0.0, 0.0, 0.0])       # theta = 0: straight above
    out = render(mug_mesh, lats, size=96)
    base = render(mug_mesh, lats, size=96, spec=SceneSpec(spot_energy=0.0))
    diff = (out["images"].float() - base["images"].float()).sum(-1).numpy()
    lit = [_centroid(d > 30) for d in diff]
    shadow = [_centroid((s < 0.5).numpy() & ~m.numpy()) for s, m in zip(out["shadow"], out["mask"])]
    for c, opposite, quarter in ((lit, 5, 4), (shadow, 30, 15)):   # pixels at 96 px
        assert np.abs(c[0] - c[2]).max() > opposite      # phi 0 vs pi: opposite sides
        assert np.abs(c[0] - c[1]).max() > quarter       # phi 0 vs 3 pi / 2
    # with the light straight above, the shadow lies under the object: between the phi = 0 / pi shadows
    assert np.linalg.norm(shadow[3] - (shadow[0] + shadow[2]) / 2) < np.linalg.norm(shadow[0] - shadow[2]) / 2
    # the shadow darkens the floor inside the lit disc
    img = out["images"][0].float().sum(-1).numpy()
    in_disc, shaded = diff[0] > 30, out["shadow"][0].numpy() < 0.5
    assert img[shaded & ~out["mask"][0].numpy()].mean() < img[in_disc & ~shaded].mean() - 20


@pytest.mark.parametrize("hue", [0.0, 0.33, 0.6, 0.85])
def test_floor_colour_follows_hue(mug_mesh, hue):
    out = render(mug_mesh, [[0, 0, 0, hue, 0.0, 0.0, 0.0]], size=48, spec=SceneSpec(spot_energy=0.0))
    corner = out["images"][0, :6, :6].reshape(-1, 3).float().mean(0).numpy() / 255
    h, s, _ = colorsys.rgb_to_hsv(*corner)
    assert min(abs(h - hue), 1 - abs(h - hue)) < 0.03
    assert s > 0.3


def test_spot_lights_work_in_pytorch3d_shaders():
    from pytorch3d.renderer import (FoVPerspectiveCameras, MeshRasterizer, MeshRenderer, RasterizationSettings,
                                    SoftPhongShader, TexturesVertex, look_at_view_transform)
    from pytorch3d.structures import Meshes
    from ssl_eq.renderers.lights import SpotLights

    verts = torch.tensor([[-2.0, -2, 0], [2, -2, 0], [2, 2, 0], [-2, 2, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    mesh = Meshes([verts], [faces], textures=TexturesVertex([torch.ones_like(verts)]))
    r, t = look_at_view_transform(eye=((0, 0, 5.0),), at=((0, 0, 0),), up=((0, 1, 0),))
    cams = FoVPerspectiveCameras(R=r, T=t, fov=50.0)
    lights = SpotLights(location=((0.0, 0.0, 3.0),), direction=((0.0, 0.0, -1.0),), spot_size=math.pi / 6)
    renderer = MeshRenderer(MeshRasterizer(cams, RasterizationSettings(image_size=64)),
                            SoftPhongShader(cameras=cams, lights=lights))
    img = renderer(mesh)[0, ..., :3]
    assert img[32, 32].mean() > 0.8                        # inside the cone: lit
    assert img[10, 32].mean() < 0.05                       # outside the cone, on the plane: dark
    x = torch.tensor([[0.0, 0.0, 0.0], [0.78, 0.0, 0.0], [1.2, 0.0, 0.0]]).view(1, 1, 3, 1, 3)  # (N, H, W, K, 3)
    att = lights.attenuation(x).flatten()
    assert att[0] == 1 and 0 < att[1] < 1 and att[2] == 0  # soft edge between cone and outside


def test_latents_depend_only_on_seed_and_object():
    a = sample_latents(3, "obj-1", 50, "3diebench-t")
    assert np.array_equal(a, sample_latents(3, "obj-1", 50, "3diebench-t"))
    assert not np.array_equal(a, sample_latents(3, "obj-2", 50, "3diebench-t"))
    assert a.shape == (50, 10) and np.abs(a[:, :3]).max() <= math.pi / 2
    assert (a[:, 4] <= math.pi / 4).all() and (a[:, 5] < 2 * math.pi).all() and np.abs(a[:, 7:]).max() <= 0.5
    assert np.array_equal(a[:, :7], sample_latents(3, "obj-1", 50, "3diebench"))


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="image_size"):
        RenderSettings(image_size=0)
    with pytest.raises(ValueError, match="variant"):
        sample_latents(0, "x", 2, "3diebench-q")
