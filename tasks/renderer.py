"""Guidance renderer: one OpenGL context per worker process, every map in one draw call.

One pass of a small shader program writes four render targets at once: the shaded "person"
RGB, camera-space normals, metric depth and the SMPL part label. The context, shaders,
framebuffer and mesh buffers are created once per worker (the render stage's set-up,
tasks/render_stage.py); per frame only the vertex positions and normals are uploaded
(``glBufferSubData``) and the targets read back.

Platform: OSMesa (software, CPU) or EGL (headless GPU), chosen from PYOPENGL_PLATFORM when set,
else EGL when CUDA is visible and OSMesa otherwise. PyOpenGL binds its platform at first import,
so nothing here imports OpenGL before the choice is made. EGL opens the GPU that Ray assigned to
the worker (:func:`egl_device_index`), not the first GPU of the node.

Cameras follow OpenCV: x right, y down, z forward, pixel centres at integer coordinates.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np

NEAR_M, FAR_M = 0.05, 100.0

_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;   // camera space, metres, OpenCV axes
layout(location = 1) in vec3 normal;     // camera space, unit
layout(location = 2) in float label;     // SMPL part 1..24
uniform mat4 projection;
out vec3 v_position;
out vec3 v_normal;
flat out float v_label;
void main() {
    v_position = position;
    v_normal = normal;
    v_label = label;
    gl_Position = projection * vec4(position, 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 330 core
in vec3 v_position;
in vec3 v_normal;
flat in float v_label;
uniform vec3 part_colors[25];
// Targets are in the data contract's encodings already, so that read-back is the only
// per-pixel work left for the CPU: RGB8, normals as (n * 0.5 + 0.5) in RGB8 (GL rounds to
// the nearest 1/255), the label as an 8-bit fraction (exact for 0..255), depth as float.
layout(location = 0) out vec4 out_rgb;
layout(location = 1) out vec4 out_normal;
layout(location = 2) out float out_label;
layout(location = 3) out float out_depth;
void main() {
    vec3 n = normalize(v_normal);
    // a head light at the camera plus a key light from the upper left, and some ambient
    vec3 to_camera = normalize(-v_position);
    vec3 key = normalize(vec3(-0.5, -0.8, -0.4));
    float shade = 0.25 + 0.55 * max(dot(n, to_camera), 0.0) + 0.3 * max(dot(n, key), 0.0);
    out_rgb = vec4(clamp(part_colors[int(v_label + 0.5)] * shade, 0.0, 1.0), 1.0);
    out_normal = vec4(n * 0.5 + 0.5, 1.0);
    out_label = v_label / 255.0;
    out_depth = v_position.z;
}
"""


def choose_platform() -> str:
    """``osmesa`` or ``egl``: PYOPENGL_PLATFORM if set, else EGL only when a GPU is visible."""
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    if chosen:
        return chosen
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:  # torch is always installed with dancegen; be safe anyway
        gpu = False
    return "egl" if gpu else "osmesa"


EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda: the CUDA device ordinal of an EGL device


def egl_device_index(cuda_ordinals: list[int | None], visible: str | None) -> int:
    """Which EGL device renders for this process.

    ``cuda_ordinals``: per EGL device, its ``EGL_CUDA_DEVICE_NV`` (None where the driver has
    no answer); ``visible``: CUDA_VISIBLE_DEVICES, which Ray sets to the GPUs it assigned.
    EGL enumerates every GPU of the node whatever CUDA_VISIBLE_DEVICES says, so device 0 is
    the node's first GPU for every worker. The CUDA ordinal counts visible devices only (the
    way nvdiffrast matches them), so the device whose ordinal is 0 is the first GPU Ray
    assigned; without the extension, the first assigned GPU's index in the node is used.
    """
    if 0 in cuda_ordinals:
        return cuda_ordinals.index(0)
    first = (visible or "").split(",")[0].strip()
    if first.isdigit() and int(first) < len(cuda_ordinals):
        return int(first)
    return 0


def _assigned_egl_device():  # pragma: no cover - needs an NVIDIA GPU with EGL
    """pyrender's EGL device for the GPU Ray assigned to this process."""
    from OpenGL import EGL as egl
    from pyrender.platforms import egl as pyrender_egl

    devices = pyrender_egl.query_devices()
    query = pyrender_egl._get_egl_func("eglQueryDeviceAttribEXT", egl.EGLBoolean,
                                       pyrender_egl._EGLDeviceEXT, egl.EGLint,
                                       ctypes.POINTER(ctypes.c_ssize_t))  # EGLAttrib: intptr
    ordinals: list[int | None] = []
    for device in devices:
        value = ctypes.c_ssize_t(-1)
        found = query is not None and query(device._display, EGL_CUDA_DEVICE_NV,
                                            ctypes.byref(value))
        ordinals.append(value.value if found else None)
    return devices[egl_device_index(ordinals, os.environ.get("CUDA_VISIBLE_DEVICES"))]


def projection_matrix(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenGL clip matrix for an OpenCV pinhole camera (image row 0 at the top).

    Clip-space y is flipped so that reading the framebuffer bottom-up yields the image top-down
    with no copy; the half-pixel shift maps OpenCV's pixel centres onto OpenGL's.
    """
    fx, fy = K[0, 0], K[1, 1]
    cx, cy = K[0, 2] + 0.5, K[1, 2] + 0.5
    a = (FAR_M + NEAR_M) / (FAR_M - NEAR_M)
    b = -2.0 * FAR_M * NEAR_M / (FAR_M - NEAR_M)
    return np.array(
        [
            [2 * fx / width, 0.0, 2 * cx / width - 1.0, 0.0],
            [0.0, 2 * fy / height, 2 * cy / height - 1.0, 0.0],
            [0.0, 0.0, a, b],
            [0.0, 0.0, 1.0, 0.0],
        ],
        dtype=np.float32,
    )


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a (V, 3) mesh, outward for outward-wound faces."""
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class RenderedFrame:
    """One frame of guidance. ``mask`` is where the body is."""

    rgb: np.ndarray           # (H, W, 3) uint8, body shaded over the background
    normal_rgb: np.ndarray    # (H, W, 3) uint8 camera-space normals as (n*0.5+0.5)*255, 0 = bg
    depth: np.ndarray         # (H, W) float32 metric camera z, 0 on background
    labels: np.ndarray        # (H, W) uint8 SMPL part 1..24, 0 on background

    @property
    def mask(self) -> np.ndarray:
        """Body pixels."""
        return self.labels > 0

    @property
    def normal(self) -> np.ndarray:
        """Decoded unit normals (H, W, 3) float32 (to 8-bit precision), 0 on background."""
        decoded = self.normal_rgb.astype(np.float32) / 127.5 - 1.0
        return decoded * self.mask[..., None]


class GuidanceRenderer:
    """Renders a fixed-topology mesh (SMPL) into RGB, normal, depth and part-label targets."""

    def __init__(self, width: int, height: int, faces: np.ndarray, vertex_labels: np.ndarray,
                 part_colors: np.ndarray, background: np.ndarray, platform: str | None = None):
        self.width, self.height = width, height
        self.platform_name = platform or choose_platform()
        os.environ.setdefault("PYOPENGL_PLATFORM", self.platform_name)
        if os.environ["PYOPENGL_PLATFORM"] != self.platform_name:
            raise RuntimeError(
                f"PyOpenGL is bound to {os.environ['PYOPENGL_PLATFORM']!r} in this process; "
                f"cannot render with {self.platform_name!r}")
        self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
        self.n_vertices = len(vertex_labels)
        self.background = np.asarray(background, dtype=np.uint8)
        self._platform = self._make_platform()
        self._platform.init_context()
        self._platform.make_current()
        self._build(np.asarray(vertex_labels, np.float32), np.asarray(part_colors, np.float32))

    def _make_platform(self):
        if self.platform_name == "egl":
            from pyrender.platforms.egl import EGLPlatform

            return EGLPlatform(self.width, self.height, device=_assigned_egl_device())
        from pyrender.platforms.osmesa import OSMesaPlatform

        return OSMesaPlatform(self.width, self.height)

    def _build(self, labels: np.ndarray, part_colors: np.ndarray) -> None:
        from OpenGL import GL as gl
        from OpenGL.GL import shaders

        self._gl = gl
        self._program = shaders.compileProgram(
            shaders.compileShader(_VERTEX_SHADER, gl.GL_VERTEX_SHADER),
            shaders.compileShader(_FRAGMENT_SHADER, gl.GL_FRAGMENT_SHADER),
        )
        gl.glUseProgram(self._program)
        colors = np.zeros((25, 3), np.float32)
        colors[: len(part_colors)] = part_colors
        gl.glUniform3fv(gl.glGetUniformLocation(self._program, "part_colors"), 25, colors)
        self._projection_at = gl.glGetUniformLocation(self._program, "projection")

        self._vao = gl.glGenVertexArrays(1)
        gl.glBindVertexArray(self._vao)
        nbytes = self.n_vertices * 3 * 4
        self._positions = self._array_buffer(0, 3, np.zeros(nbytes, np.uint8), gl.GL_DYNAMIC_DRAW)
        self._normals = self._array_buffer(1, 3, np.zeros(nbytes, np.uint8), gl.GL_DYNAMIC_DRAW)
        self._array_buffer(2, 1, labels, gl.GL_STATIC_DRAW)
        ebo = gl.glGenBuffers(1)
        gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, ebo)
        gl.glBufferData(gl.GL_ELEMENT_ARRAY_BUFFER, self.faces.nbytes, self.faces,
                        gl.GL_STATIC_DRAW)

        self._fbo = gl.glGenFramebuffers(1)
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self._fbo)
        formats = [(gl.GL_RGBA8, gl.GL_RGB, gl.GL_UNSIGNED_BYTE),
                   (gl.GL_RGBA8, gl.GL_RGB, gl.GL_UNSIGNED_BYTE),
                   (gl.GL_R8, gl.GL_RED, gl.GL_UNSIGNED_BYTE),
                   (gl.GL_R32F, gl.GL_RED, gl.GL_FLOAT)]
        for index, (internal, _, _) in enumerate(formats):
            buffer = gl.glGenRenderbuffers(1)
            gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, buffer)
            gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, internal, self.width, self.height)
            gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0 + index,
                                         gl.GL_RENDERBUFFER, buffer)
        self._formats = formats
        depth = gl.glGenRenderbuffers(1)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, depth)
        gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_DEPTH_COMPONENT24, self.width,
                                 self.height)
        gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, gl.GL_DEPTH_ATTACHMENT,
                                     gl.GL_RENDERBUFFER, depth)
        targets = [gl.GL_COLOR_ATTACHMENT0 + i for i in range(len(formats))]
        gl.glDrawBuffers(len(targets), targets)
        status = gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER)
        if status != gl.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"framebuffer incomplete on {self.platform_name}: {status}")
        gl.glViewport(0, 0, self.width, self.height)
        gl.glEnable(gl.GL_DEPTH_TEST)
        gl.glDisable(gl.GL_CULL_FACE)  # a posed body may self-intersect; keep both sides
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)

    def _array_buffer(self, location: int, size: int, data: np.ndarray, usage: int) -> int:
        gl = self._gl
        buffer = gl.glGenBuffers(1)
        gl.glBindBuffer(gl.GL_ARRAY_BUFFER, buffer)
        gl.glBufferData(gl.GL_ARRAY_BUFFER, data.nbytes, data, usage)
        gl.glEnableVertexAttribArray(location)
        gl.glVertexAttribPointer(location, size, gl.GL_FLOAT, gl.GL_FALSE, 0, ctypes.c_void_p(0))
        return buffer

    def render(self, vertices_cam: np.ndarray, K: np.ndarray,
               normals_cam: np.ndarray | None = None) -> RenderedFrame:
        """Render one frame; ``vertices_cam`` (V, 3) in metres, OpenCV camera coordinates."""
        gl = self._gl
        self._platform.make_current()  # cheap; keeps it correct if the thread changed
        vertices = np.ascontiguousarray(vertices_cam, dtype=np.float32)
        if normals_cam is None:
            normals_cam = vertex_normals(vertices, self.faces.astype(np.int64))
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self._fbo)
        gl.glUseProgram(self._program)
        gl.glBindVertexArray(self._vao)
        for buffer, data in ((self._positions, vertices),
                             (self._normals, np.ascontiguousarray(normals_cam, np.float32))):
            gl.glBindBuffer(gl.GL_ARRAY_BUFFER, buffer)
            gl.glBufferSubData(gl.GL_ARRAY_BUFFER, 0, data.nbytes, data)
        # transpose: numpy is row-major, GL expects column-major
        gl.glUniformMatrix4fv(self._projection_at, 1, gl.GL_TRUE,
                              projection_matrix(K, self.width, self.height))
        background = self.background.astype(np.float32) / 255.0
        gl.glClearBufferfv(gl.GL_COLOR, 0, np.append(background, 1.0).astype(np.float32))
        for target in (1, 2, 3):
            gl.glClearBufferfv(gl.GL_COLOR, target, np.zeros(4, np.float32))
        gl.glClear(gl.GL_DEPTH_BUFFER_BIT)
        gl.glDrawElements(gl.GL_TRIANGLES, self.faces.size, gl.GL_UNSIGNED_INT, None)
        return RenderedFrame(
            rgb=self._read(0, np.uint8, 3),
            normal_rgb=self._read(1, np.uint8, 3),
            labels=self._read(2, np.uint8, 1)[..., 0],
            depth=self._read(3, np.float32, 1)[..., 0],
        )

    def _read(self, attachment: int, dtype: type, channels: int) -> np.ndarray:
        gl = self._gl
        _, fmt, kind = self._formats[attachment]
        gl.glReadBuffer(gl.GL_COLOR_ATTACHMENT0 + attachment)
        raw = gl.glReadPixels(0, 0, self.width, self.height, fmt, kind)
        # the projection flips clip-space y, so bottom-up read-back is the image top-down
        return np.frombuffer(raw, dtype=dtype).reshape(self.height, self.width, channels)

    def close(self) -> None:
        """Release the GL context."""
        self._platform.delete_context()
