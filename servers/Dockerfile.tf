# The model server's TensorFlow variant (`tui-profiler images build --variant tf`): the same server code, with
# TensorFlow's CPU build instead of torch, for `--model tf:<SavedModel directory or TF Hub handle>`. Torch-only
# users never pay for it. Build arguments as in servers/Dockerfile:
#   BASE_IMAGE  a public Python base image (default), or the local tui-profiler-base:bookworm (no registry).
#   PIP_ARGS    PyPI by default, or the wheelhouse of the build context ("--no-index --find-links /wheels").
#   TF_SPEC     the TensorFlow pin (tensorflow-cpu: no CUDA libraries).
# Build context: servers/ and a wheels/ folder (the tf wheelhouse; may be empty when PIP_ARGS is "").
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: TensorFlow and the server's own dependencies in a venv; the wheels stay in this stage only.
FROM ${BASE_IMAGE} AS deps
ARG PIP_ARGS=""
ARG TF_SPEC="tensorflow-cpu==2.21.0"
COPY wheels/ /wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} \
      ${TF_SPEC} numpy pillow aiohttp

# Stage 2: the server.
FROM ${BASE_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp XDG_CACHE_HOME=/tmp/.cache TFHUB_CACHE_DIR=/tmp/tfhub TF_CPP_MIN_LOG_LEVEL=2 \
    TF_ENABLE_ONEDNN_OPTS=1 TUI_PROFILER_THREADS=auto
RUN useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin profiler
WORKDIR /app
COPY servers/ /app/servers/
LABEL tui-profiler.image=server-tf
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python3", "-m", "servers.model_server", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "tf:keras:MobileNetV2", "--weights", "random"]
