# syntax=docker/dockerfile:1
# inferwatch: the sidecar by default (`inferwatch sidecar`), any other subcommand on request.
#   docker build -t inferwatch .
#   docker run --rm -p 8000:8000 -p 8001:8001 inferwatch sidecar --upstream http://model:8080
# Settings come as flags or INFERWATCH_* variables (docs/sidecar.md).

FROM python:3.12-slim AS build
WORKDIR /src
COPY . .
# Wheels only: uvloop, httptools, duckdb, numpy, scipy and the fleet extra (pyarrow and s3fs, for
# shipping summaries to S3) all ship manylinux wheels, so the final image needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fleet]"

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INFERWATCH_DB=/var/lib/inferwatch/inferwatch.duckdb
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/inferwatch --create-home \
        --shell /usr/sbin/nologin inferwatch
# Mounted, not copied: the wheels never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "inferwatch[fleet]"
USER 10001:10001
WORKDIR /var/lib/inferwatch
# 8000: the proxy in front of the model; 8001: the monitor API (probes, /metrics, dashboard).
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
# For plain Docker (Kubernetes uses its own probes); it assumes the default admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2)"]
ENTRYPOINT ["inferwatch"]
CMD ["sidecar"]
