"""Render-stage throughput: all guidance outputs per frame, vs a naive per-frame loop.

    .venv/bin/python benchmarks/render.py [--resolutions 512 640] [--naive 15]

"dancegen" is the render stage as it runs on a worker (``compute_render`` on one 5-s segment):
one GL context, shader program and mesh buffers per process, the SMPL forward pass batched
over the segment, one draw call per frame writing RGB, normal, depth and labels together,
then keypoints, heatmaps and the DWPose skeleton. The naive loop does the same work the way a
first script would: per frame, a single-frame SMPL forward pass and, for each of the shaded
image + depth, the semantic colours and the normal colours, a new pyrender renderer and scene.
A third figure, "rebuilt", is dancegen's own single-pass renderer created anew for every
frame: it isolates what keeping the context per worker is worth on this platform. All run in
this process on the same inputs (the procedural stand-in body and choreography from
``dancegen fixtures``); figures are frames/s and ratios against dancegen.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dancegen.config import DancegenConfig, load_config
from dancegen.fixtures import write_fixtures
from dancegen.storage.aistpp import AistppInputs, InputRoots
from dancegen.tasks.camera import sequence_camera
from dancegen.tasks.plan import plan_segments_from
from dancegen.tasks.pose2d import draw_skeleton, gaussian_heatmaps, keypoints2d
from dancegen.tasks.render_stage import (
    PERSON_COLORS,
    load_worker_body,
    resolve_body_model,
    setup_render,
)
from dancegen.tasks.renderer import GuidanceRenderer, choose_platform
from dancegen.tasks.segment_inputs import motion_window

REPO = Path(__file__).resolve().parents[1]


def measure_dancegen(segment, inputs: AistppInputs, config: DancegenConfig) -> float:
    """Frames/s of the render stage on one segment, set up once as a worker is (the set-up,
    body model and GL context, is not timed; the first render is a warm-up)."""
    roots = InputRoots(inputs)
    worker = setup_render(roots, config)
    try:
        worker([segment], roots, config)
        started = time.perf_counter()
        worker([segment], roots, config)
        return config.dataset.segment_frames / (time.perf_counter() - started)
    finally:
        worker.close()


def _naive_pass(verts_gl: np.ndarray, faces: np.ndarray, colors: np.ndarray | None,
                K: np.ndarray, width: int, height: int, flat: bool) -> tuple:
    """One pyrender pass with a fresh renderer and scene, as a first script would write it."""
    import pyrender
    import trimesh

    renderer = pyrender.OffscreenRenderer(width, height)
    scene = pyrender.Scene(bg_color=[0.2, 0.22, 0.25, 1.0], ambient_light=[0.3, 0.3, 0.3])
    mesh = trimesh.Trimesh(verts_gl, faces, vertex_colors=colors, process=False)
    scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=not flat))
    scene.add(pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], 0.05, 100.0))
    scene.add(pyrender.DirectionalLight(intensity=3.0))
    flags = pyrender.RenderFlags.FLAT if flat else pyrender.RenderFlags.NONE
    result = renderer.render(scene, flags=flags)
    renderer.delete()
    return result


def measure_naive(segment, inputs: AistppInputs, config: DancegenConfig, frames: int) -> float:
    """Frames/s of a naive loop: per frame, a single-frame SMPL forward pass and, per output,
    a new pyrender renderer and scene (shaded RGB + depth, semantic colours, normal colours)."""
    from dancegen.tasks.render_stage import SEMANTIC_PALETTE
    from dancegen.tasks.renderer import vertex_normals

    render, data = config.render, config.dataset
    body = load_worker_body(resolve_body_model(inputs, render))
    window = motion_window(inputs.load_motion(segment.motion_file), segment.start_s,
                           data.segment_frames, data.fps)
    camera = sequence_camera(inputs, segment.sequence, render, window.scaling)
    size = (render.width, render.height)
    faces, labels = body.faces.cpu().numpy(), body.part_labels
    started = time.perf_counter()
    for f in range(frames):
        with torch.no_grad():
            verts, joints = body.model(torch.from_numpy(window.poses[f:f + 1]),
                                       torch.from_numpy(window.trans[f:f + 1]),
                                       torch.full((1,), window.scaling))
        verts_cam = camera.to_camera(verts[0].cpu().numpy().astype(np.float64), window.scaling)
        verts_gl = verts_cam * np.array([1.0, -1.0, -1.0])  # OpenCV -> OpenGL camera axes
        _, depth = _naive_pass(verts_gl, faces, None, camera.K, *size, flat=False)
        _naive_pass(verts_gl, faces, SEMANTIC_PALETTE[labels], camera.K, *size, flat=True)
        normal_colors = ((vertex_normals(verts_cam, faces) * 0.5 + 0.5) * 255).astype(np.uint8)
        _naive_pass(verts_gl, faces, normal_colors, camera.K, *size, flat=True)
        joints_cam = camera.to_camera(joints.cpu().numpy().astype(np.float64), window.scaling)
        keypoints = keypoints2d(joints_cam, camera.K, render.width, render.height,
                                depth[None], render.occlusion_margin_m)
        gaussian_heatmaps(keypoints, render.width, render.height, render.heatmap_size,
                          render.heatmap_sigma)
        draw_skeleton(keypoints[0], render.width, render.height)
    return frames / (time.perf_counter() - started)


def renderer_setup_seconds(config: DancegenConfig, inputs: AistppInputs, repeats: int) -> float:
    """Seconds to create (and release) one dancegen renderer: context, shaders, buffers."""
    render = config.render
    body = load_worker_body(resolve_body_model(inputs, render))
    started = time.perf_counter()
    for _ in range(repeats):
        GuidanceRenderer(render.width, render.height, body.faces.cpu().numpy(),
                         body.part_labels, PERSON_COLORS,
                         np.array(render.background_rgb, np.uint8)).close()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    """Run the comparison for each resolution and print a table of frames/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 640])
    parser.add_argument("--naive", type=int, default=15, help="frames timed in the naive loop")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="dancegen-render-bench-") as tmp:
        inputs_dir = write_fixtures(Path(tmp) / "inputs")
        base = load_config(REPO / "configs/local-cpu.yaml")
        inputs = AistppInputs(str(inputs_dir))
        segment = plan_segments_from(str(inputs_dir), base).segments[0]
        for size in args.resolutions:
            config = load_config(REPO / "configs/local-cpu.yaml",
                                 [f"render.width={size}", f"render.height={size}"])
            fast = measure_dancegen(segment, inputs, config)
            slow = measure_naive(segment, inputs, config, args.naive)
            # the same frames plus one renderer set-up each: what per-worker reuse saves
            rebuilt = 1.0 / (1.0 / fast + renderer_setup_seconds(config, inputs, args.naive))
            rows.append({"resolution": size, "dancegen_fps": fast, "naive_fps": slow,
                         "rebuilt_fps": rebuilt, "ratio": fast / slow,
                         "ratio_rebuilt": fast / rebuilt})

    print(f"render benchmark: GL platform {choose_platform()}, torch threads "
          f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"python {sys.version.split()[0]}")
    print("all outputs per frame: RGB, depth, normal, semantic, keypoints, heatmaps, skeleton")
    print(f"{'size':>6} {'dancegen f/s':>13} {'naive f/s':>10} {'ratio':>7} "
          f"{'rebuilt f/s':>12} {'ratio':>7}")
    for row in rows:
        print(f"{row['resolution']:>6} {row['dancegen_fps']:>13.1f} {row['naive_fps']:>10.1f} "
              f"{row['ratio']:>6.1f}x {row['rebuilt_fps']:>12.1f} {row['ratio_rebuilt']:>6.1f}x")
    for row in rows:
        print(f"render ratio at {row['resolution']}x{row['resolution']} (dancegen/naive): "
              f"{row['ratio']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
