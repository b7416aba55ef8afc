# syntax=docker/dockerfile:1
# One image for the Ray head, the Ray (GPU) workers and the Prefect worker (docker-compose.yml).
#
#   docker compose build                  # or: docker build -t dancegen:local .
#
# TORCH_SPEC is the torch requirement, as in scripts/setup.sh (DANCEGEN_TORCH). The default pin
# is PyPI's Linux wheel, which bundles CUDA 12 (what the GPU workers need). Another build, e.g. a
# CPU-only image:
#   docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" .
#
# No secrets are baked in: S3, Ray and database credentials come from the environment at run time.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"

# Headless GL: OSMesa (software, CPU) and EGL through glvnd (Mesa on the CPU; NVIDIA's libEGL on
# a GPU, mounted by the NVIDIA container toolkit when the `graphics` driver capability is asked).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libosmesa6 libegl1 libegl-mesa0 libgl1 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/share/glvnd/egl_vendor.d \
 && printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
      > /usr/share/glvnd/egl_vendor.d/10_nvidia.json
# (glvnd skips the NVIDIA vendor file when libEGL_nvidia.so.0 is absent and falls back to Mesa.)

# A non-root user owns the virtualenv: librosa's numba cache is compiled into site-packages at
# build time, and numba only uses an in-tree cache it can write to (otherwise every process
# recompiles into ~/.cache, the parallel first compile that corrupts the cache).
# /tmp/ray exists in the image, owned by that user, because docker-compose.yml mounts a named
# volume there (Prometheus and Grafana read Ray's temp dir): a new volume takes the ownership of
# the image's directory, so Ray can write to it.
RUN useradd --create-home --uid 1000 --shell /bin/bash dancegen \
 && python -m venv /opt/venv \
 && mkdir -p /app /tmp/ray \
 && chown -R dancegen:dancegen /opt/venv /app /tmp/ray

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

USER dancegen
WORKDIR /app

# torch first, in its own layer (the largest download; unchanged when the code changes).
RUN --mount=type=cache,target=/home/dancegen/.cache/pip,uid=1000,gid=1000 \
    pip install -q --upgrade "pip>=25" \
 && pip install -q ${TORCH_SPEC}

# Then the exact pins of constraints.txt, dancegen installed editable (same as scripts/setup.sh,
# without the dev extra).
COPY --chown=dancegen:dancegen . /app
RUN --mount=type=cache,target=/home/dancegen/.cache/pip,uid=1000,gid=1000 \
    pip install -q -c constraints.txt -e ".[render,models]" \
 && pip install -q --no-deps -c constraints.txt lpips   # LPIPS's linear weights (see setup.sh)

# Compile librosa's numba kernels once, in one process (see tasks/music_features.warm_up).
RUN python -W ignore -c "from dancegen.tasks.music_features import warm_up; warm_up()"

CMD ["dancegen", "--help"]
