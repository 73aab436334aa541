"""Render 3DIEBench views of one mesh with Blender Cycles (docs/scene.md), for `bench_render.py --blender`.

Runs under the Python of the separate bpy venv (`tools/setup_bench_env.sh`), NOT the project's env:
    python tools/blender_scene.py SCENE.npz  ->  prints {"seconds": [...], "cpu_seconds": [...]} as JSON
(per-image render wall time and CPU time of all of Blender's threads)
SCENE.npz: verts (N, 3) float32 world frame, faces (F, 3), latents (B, 7) float64, size, samples and,
optionally, out_dir (a PNG per view is written there when given). Scene: Cycles on the CPU, `samples` spp,
adaptive sampling, no denoiser, Blender's default view transform; diffuse grey (0.8) object posed by the
Euler angles (XYZ), floor plane z = -1 coloured HSV(h, 0.6, 0.6), sun 1.5 straight down (angle pi/2),
spot r = 4 at (theta, phi) aimed at the origin (500 W, cone pi/8, blend 0.15, HSV(h, 1, 0.8), shadows),
camera (r 2.5, theta pi/4, phi pi/2) looking at the origin, 50 mm lens on a 36 mm sensor, grey world 0.05.
"""
from __future__ import annotations

import colorsys
import json
import math
import sys
import time

import bpy
import numpy as np
from mathutils import Vector


def diffuse_material(name: str, rgb) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    nodes.clear()
    bsdf = nodes.new("ShaderNodeBsdfDiffuse")
    bsdf.inputs["Color"].default_value = (*rgb, 1.0)
    out = nodes.new("ShaderNodeOutputMaterial")
    mat.node_tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def aim(obj, target=(0.0, 0.0, 0.0)) -> None:
    obj.rotation_euler = (Vector(target) - obj.location).to_track_quat("-Z", "Y").to_euler()


def build(verts: np.ndarray, faces: np.ndarray, size: int, samples: int):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    world = bpy.data.worlds.new("grey")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
    scene.world = world

    mesh = bpy.data.meshes.new("object")
    mesh.from_pydata(verts.tolist(), [], faces.tolist())
    obj = bpy.data.objects.new("object", mesh)
    obj.rotation_mode = "XYZ"
    obj.data.materials.append(diffuse_material("object", (0.8, 0.8, 0.8)))
    scene.collection.objects.link(obj)

    plane = bpy.data.meshes.new("floor")
    h = 12.0
    plane.from_pydata([(-h, -h, -1.0), (h, -h, -1.0), (h, h, -1.0), (-h, h, -1.0)], [], [(0, 1, 2, 3)])
    floor = bpy.data.objects.new("floor", plane)
    floor_mat = diffuse_material("floor", (0.5, 0.5, 0.5))
    floor.data.materials.append(floor_mat)
    scene.collection.objects.link(floor)

    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy, sun.data.angle = 1.5, math.pi / 2       # default orientation points down (-z)
    scene.collection.objects.link(sun)
    spot = bpy.data.objects.new("spot", bpy.data.lights.new("spot", "SPOT"))
    spot.data.energy, spot.data.spot_size, spot.data.spot_blend = 500.0, math.pi / 8, 0.15
    scene.collection.objects.link(spot)

    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.lens, cam.data.sensor_width = 50.0, 36.0
    cam.location = (0.0, 2.5 * math.sin(math.pi / 4), 2.5 * math.cos(math.pi / 4))
    aim(cam)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, obj, floor_mat, spot


def main() -> None:
    cfg = np.load(sys.argv[1])
    out_dir = str(cfg["out_dir"]) if "out_dir" in cfg.files else None
    scene, obj, floor_mat, spot = build(cfg["verts"], cfg["faces"], int(cfg["size"]), int(cfg["samples"]))
    floor_bsdf = floor_mat.node_tree.nodes["Diffuse BSDF"]
    seconds, cpu_seconds = [], []
    for k, lat in enumerate(cfg["latents"]):
        obj.rotation_euler = tuple(float(a) for a in lat[:3])
        floor_bsdf.inputs["Color"].default_value = (*colorsys.hsv_to_rgb(lat[3], 0.6, 0.6), 1.0)
        th, ph = float(lat[4]), float(lat[5])
        spot.location = (4 * math.sin(th) * math.cos(ph), 4 * math.sin(th) * math.sin(ph), 4 * math.cos(th))
        aim(spot)
        spot.data.color = colorsys.hsv_to_rgb(lat[6], 1.0, 0.8)
        scene.render.filepath = f"{out_dir}/blender_{k}.png" if out_dir else "/tmp/_unused.png"
        t, c = time.perf_counter(), time.process_time()
        bpy.ops.render.render(write_still=out_dir is not None)
        seconds.append(time.perf_counter() - t)
        cpu_seconds.append(time.process_time() - c)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))


if __name__ == "__main__":
    main()
