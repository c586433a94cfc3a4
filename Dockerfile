# syntax=docker/dockerfile:1
# LKPS's container image: `lkps serve` as a non-root user, from uv.lock only.
#
#   docker build -t lkps .            (or: podman build / buildah bud)
#   docker run --read-only --tmpfs /tmp -e LKPS_... lkps        (docs/deployment.md)
#
# Two stages: uv installs the locked dependencies and the lkps wheel into a virtual
# environment at /opt/lkps, and deploy/image/rootfs.py gathers from the base image what
# that environment runs on (the interpreter, the standard library, the shared libraries
# they and the wheels load, CA certificates, /etc/passwd); the final stage is `scratch`
# with those two directories and nothing else: no shell, no package manager, no uv, no
# compilers (every locked dependency ships a wheel). The root filesystem can be
# read-only: bytecode is compiled at build time, and `lkps serve` writes only under /tmp
# (the metrics of its worker processes), so mount a tmpfs there.
#
# Both images are arguments so that a site with its own registry (or none: tests/deploy
# and docs/deployment.md build from a Debian root filesystem made by mmdebstrap) can
# substitute them. BASE_IMAGE must provide python3 (3.11+) on PATH, with glibc's `ldd`
# and `ldconfig` (any Debian or Ubuntu based image does).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# `strip`, for the compiled extensions' debug symbols (about 45 of their 70 MB); this
# stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
# The environment goes where the final stage runs it; compiled bytecode lets it run on a
# read-only filesystem without recompiling; no interpreter download: the base's python3.
ENV UV_PROJECT_ENVIRONMENT=/opt/lkps \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_NO_CACHE=1
WORKDIR /src
# Dependencies first (a layer that changes only with uv.lock): the workspace's metadata,
# without any package's source.
COPY pyproject.toml uv.lock .python-version ./
COPY packages/server/pyproject.toml packages/server/README.md packages/server/
COPY packages/client/pyproject.toml packages/client/README.md packages/client/
COPY packages/agent/pyproject.toml packages/agent/README.md packages/agent/
COPY packages/testkit/pyproject.toml packages/testkit/
# Behind a TLS-inspecting proxy, give its CA as the build secret `ca`
# (`--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`): only these steps see it.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi \
    && uv sync --locked --no-dev --no-install-workspace --package lkps
# Then LKPS itself (and lkps-client, which it uses), as wheels rather than editable links
# to /src, which the final stage does not have.
COPY packages/server/src packages/server/src
COPY packages/client/src packages/client/src
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi \
    && uv sync --locked --no-dev --no-editable --package lkps \
    && find /opt/lkps -name '*.so*' -type f -exec strip --strip-unneeded {} + \
    && /opt/lkps/bin/lkps --help >/dev/null
# The runtime's root filesystem, by the environment's interpreter (the base's python3).
COPY deploy/image/rootfs.py /src/rootfs.py
RUN /opt/lkps/bin/python /src/rootfs.py /rootfs /opt/lkps

FROM scratch
# The runtime (the base's interpreter and libraries; a layer that changes with the base),
# then LKPS and its dependencies. A fixed numeric user (Kubernetes' runAsNonRoot checks
# numbers), owning nothing in the image: the code is root's and read-only to it.
COPY --from=build /rootfs /
COPY --from=build /opt/lkps /opt/lkps
ENV PATH=/opt/lkps/bin:/usr/local/bin:/usr/bin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LKPS_HOST=0.0.0.0 \
    LKPS_PORT=8080 \
    LKPS_METRICS_PORT=9464
WORKDIR /var/lib/lkps
USER 10001:10001
# Every compiled module of the standard library and the environment imports here, as the
# user LKPS runs as: a shared library the runtime lacks fails the build, not a request.
RUN --mount=type=bind,from=build,source=/src/rootfs.py,target=/tmp/rootfs.py \
    ["python3", "/tmp/rootfs.py", "--check"]
EXPOSE 8080 9464
# Liveness, as Kubernetes' probe asks it (the chart uses its own probes; this serves
# docker and podman). No curl in the image: the interpreter LKPS runs on asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('LKPS_PORT', '8080'), timeout=4)"]
# `lkps serve` stops gracefully on SIGTERM (finishes requests in flight for up to 30 s,
# writes the queued audit records) and then exits 0; Kubernetes' default grace period
# (30 s) is what the chart raises to cover it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lkps"]
CMD ["serve"]
