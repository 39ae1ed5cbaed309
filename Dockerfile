# syntax=docker/dockerfile:1
# stateserver node image. Build from the repository root:
#     docker build -t stateserver:0.1.0 .
# Configuration is by STATESERVER_* environment variables (see docs/configuration.md) or a
# mounted TOML file passed as `serve --config FILE`.

# The base is pinned by tag; pass a digest (python:3.11-slim@sha256:...) for bit-for-bit rebuilds.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# A venv in the same path as in the final stage: its scripts' shebangs point at /opt/stateserver.
RUN python -m venv /opt/stateserver
WORKDIR /src
# Only what the wheel needs (see .dockerignore); tests and deploy files stay out of the image.
COPY pyproject.toml README.md ./
COPY stateserver/ stateserver/
COPY client/ client/
COPY compaction/ compaction/
# All dependencies ship manylinux wheels for CPython 3.11, so no compiler or apt is needed.
RUN /opt/stateserver/bin/pip install --no-cache-dir ".[node]" \
    && /opt/stateserver/bin/python -m compileall -q /opt/stateserver

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="stateserver" \
      org.opencontainers.image.description="Disaggregated keyed-state node: RocksDB shards behind gRPC, incremental snapshots to object storage"
# A fixed numeric uid/gid so that volume ownership and Kubernetes' runAsUser/fsGroup can match it.
RUN groupadd --system --gid 10001 stateserver \
    && useradd --system --uid 10001 --gid stateserver --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin stateserver \
    && mkdir /data \
    && chown stateserver:stateserver /data
COPY --from=builder /opt/stateserver /opt/stateserver
# Inside the container the node must listen on the container's own interfaces to be reachable.
ENV PATH=/opt/stateserver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STATESERVER_HOST=0.0.0.0 \
    STATESERVER_DATA_DIR=/data \
    STATESERVER_METRICS_HOST=0.0.0.0 \
    STATESERVER_METRICS_PORT=9100 \
    STATESERVER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7700 9100
# Asks the standard gRPC health service; a node that is still restoring is not yet healthy,
# hence the start period. Through sh so that a changed STATESERVER_PORT is followed, and any
# failure maps to 1, the only status Docker reads as unhealthy (2 is reserved).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "stateserver health --address \"127.0.0.1:${STATESERVER_PORT:-7700}\" || exit 1"]
ENTRYPOINT ["stateserver"]
CMD ["serve"]
