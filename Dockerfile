# jobqueue-store: the store in a slim image, run as a non-root user, data in the /data volume.
#
#   docker build -t jobqueue-store .
#   docker run -d -p 8080:8080 -v jobqueue-data:/data jobqueue-store
#   docker exec <container> jobqueue-store token --role admin
#
# Configuration is by JOBQUEUE_STORE_* variables (README.md, "Operations").

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# jobqueue_store/schemas and jobqueue_store/docs are symlinks to ../schemas and ../docs: all are
# copied (the dashboard serves the documents).
COPY pyproject.toml setup.cfg README.md ./
COPY schemas ./schemas
COPY docs ./docs
COPY jobqueue_store ./jobqueue_store
# The package and its runtime dependencies only (uvloop: the "fast" extra), in a venv copied below.
RUN python -m venv /opt/jobqueue-store \
    && /opt/jobqueue-store/bin/pip install ".[fast]"

FROM python:3.11-slim
ENV PATH=/opt/jobqueue-store/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JOBQUEUE_STORE_DATA_DIR=/data \
    JOBQUEUE_STORE_HOST=0.0.0.0 \
    JOBQUEUE_STORE_PORT=8080
COPY --from=build /opt/jobqueue-store /opt/jobqueue-store
RUN groupadd --system --gid 10001 jobqueue \
    && useradd --system --uid 10001 --gid jobqueue --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin jobqueue \
    && mkdir -p /data && chown jobqueue:jobqueue /data && chmod 0700 /data
VOLUME /data
WORKDIR /data
USER jobqueue
EXPOSE 8080
# No curl in the slim image: the healthcheck is Python's urllib (any non-2xx reply raises).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('JOBQUEUE_STORE_PORT', '8080') + '/healthz', timeout=4)"]
# Exec form: the store is PID 1 and receives SIGTERM itself (graceful shutdown, then exit 0).
STOPSIGNAL SIGTERM
CMD ["jobqueue-store", "serve"]
