"""The GL renderer and cameras: geometry checked against analytic answers, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from dancegen.tasks.camera import crop_intrinsics, look_at
from dancegen.tasks.pose2d import project
from dancegen.tasks.renderer import GuidanceRenderer, egl_device_index, vertex_normals

W = H = 128
K = np.array([[150.0, 0, 63.5], [0, 150.0, 63.5], [0, 0, 1]])
CENTRE, RADIUS = np.array([0.1, -0.05, 2.0]), 0.4


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    vertices = np.asarray(mesh.vertices) + CENTRE
    labels = np.where(mesh.vertices[:, 0] > 0, 3, 7).astype(np.uint8)  # two "parts"
    return vertices.astype(np.float32), np.asarray(mesh.faces), labels


@pytest.fixture(scope="module")
def renderer(sphere) -> GuidanceRenderer:
    _, faces, labels = sphere
    colors = np.linspace(0.2, 1.0, 25 * 3).reshape(25, 3).astype(np.float32)
    return GuidanceRenderer(W, H, faces, labels, colors, np.array([10, 20, 30]))


def analytic_depth() -> np.ndarray:
    """Ray-sphere intersection depth per pixel centre (0 where the ray misses)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)],
                    axis=-1)
    a = (rays**2).sum(-1)
    b = -2 * (rays * CENTRE).sum(-1)
    c = (CENTRE**2).sum() - RADIUS**2
    disc = b**2 - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, t, 0.0)  # z of the hit point = t because ray z = 1


def test_depth_is_the_surface_z_and_labels_cover_the_silhouette(renderer, sphere) -> None:
    frame = renderer.render(sphere[0], K)
    truth = analytic_depth()
    inside = (truth > 0) & (frame.depth > 0)
    # the silhouette matches the analytic disc except along its 1-pixel boundary
    assert ((truth > 0) != (frame.depth > 0)).sum() < 0.05 * (truth > 0).sum()
    # the icosphere's flat facets sit inside the sphere by < 2 mm at this subdivision
    assert np.abs(frame.depth[inside] - truth[inside]).max() < 0.01
    assert np.array_equal(frame.labels > 0, frame.depth > 0)
    assert set(np.unique(frame.labels)) == {0, 3, 7}
    # +x half of the sphere is part 3: right of the centre column in the image
    centre_u = round(K[0, 0] * CENTRE[0] / CENTRE[2] + K[0, 2])
    row = round(K[1, 1] * CENTRE[1] / CENTRE[2] + K[1, 2])
    assert frame.labels[row, centre_u + 10] == 3 and frame.labels[row, centre_u - 10] == 7


def test_normals_are_unit_and_face_the_camera(renderer, sphere) -> None:
    frame = renderer.render(sphere[0], K)
    mask = frame.mask
    normals = frame.normal[mask]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=0.01)  # 8-bit
    v, u = np.nonzero(mask)
    points = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)],
                      axis=-1) * frame.depth[mask][:, None]
    assert ((normals * -points).sum(axis=1) > 0).all()  # towards the camera
    expected = (points - CENTRE) / RADIUS                 # the sphere's true normals
    assert np.median(np.abs(normals - expected)) < 0.02
    assert not frame.normal[~mask].any() and not frame.depth[~mask].any()


def test_projected_vertices_fall_on_the_silhouette(renderer, sphere) -> None:
    vertices = sphere[0]
    frame = renderer.render(vertices, K)
    view = -vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    # visible and not grazing: rim vertices may round to a background pixel next to the edge
    facing = (vertex_normals(vertices, sphere[1]) * view).sum(axis=1) > 0.3
    pixels = np.rint(project(vertices[facing], K)).astype(int)
    assert frame.mask[pixels[:, 1], pixels[:, 0]].mean() > 0.99
    background = frame.rgb[0, 0]
    assert tuple(background) == (10, 20, 30)


def test_egl_opens_the_gpu_ray_assigned() -> None:
    # an 8-GPU node: EGL lists all eight; the driver numbers only the visible ones for CUDA
    assert egl_device_index([None, None, 0, None], "2") == 2
    assert egl_device_index([None, None, None, 0, 1], "3,4") == 3
    # a driver without EGL_NV_device_cuda: the first assigned GPU's index in the node
    assert egl_device_index([None] * 8, "5,6") == 5
    # nothing assigned (CPU worker, or UUIDs this cannot map): the default device
    assert egl_device_index([None] * 2, None) == 0
    assert egl_device_index([None] * 2, "GPU-8f0c") == 0


def test_moving_the_mesh_moves_the_render(renderer, sphere) -> None:
    near = renderer.render(sphere[0], K)
    far = renderer.render(sphere[0] + np.array([0, 0, 1.0], np.float32), K)
    assert far.mask.sum() < near.mask.sum()
    assert far.depth[far.mask].min() == pytest.approx(near.depth[near.mask].min() + 1.0,
                                                      abs=0.01)


def test_crop_intrinsics_maps_the_sensor_centre_square() -> None:
    K_full = np.array([[1600.0, 0, 959.5], [0, 1600.0, 539.5], [0, 0, 1]])
    K_out = crop_intrinsics(K_full, (1920, 1080), 640, 640)
    scale = 640 / 1080
    assert K_out[0, 0] == pytest.approx(1600 * scale)
    # the sensor centre stays the image centre; the crop's left edge maps to u = -0.5
    assert K_out[0, 2] == pytest.approx(319.5) and K_out[1, 2] == pytest.approx(319.5)
    point = np.array([0.3, -0.2, 4.0])
    u_full = project(point, K_full)
    u_out = project(point, K_out)
    np.testing.assert_allclose(u_out, (u_full + 0.5 - [420, 0]) * scale - 0.5, atol=1e-9)


def test_look_at_puts_the_target_on_the_optical_axis() -> None:
    from scipy.spatial.transform import Rotation

    eye, target = np.array([1.0, 1.5, 4.0]), np.array([0.0, 1.0, 0.0])
    rvec, t = look_at(eye, target)
    R = Rotation.from_rotvec(rvec).as_matrix()
    cam = R @ target + t
    assert cam[0] == pytest.approx(0, abs=1e-9) and cam[1] == pytest.approx(0, abs=1e-9)
    assert cam[2] == pytest.approx(np.linalg.norm(target - eye))
    assert (R @ np.array([0, 2.0, 0]) + t)[1] < cam[1]  # world up is image up (y down)
