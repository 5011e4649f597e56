# syntax=docker/dockerfile:1
# rexlabel backend: the HTTP server Label Studio calls. CPU only, no torch:
# it plans work and hands it to the workers through Redis.
#
#   docker build -f docker/backend.Dockerfile -t rexlabel-backend .   # from the repo root
#   docker run -p 9090:9090 -e REDIS_URL=redis://redis:6379/0 rexlabel-backend

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build the wheel in a throw-away stage: the final image holds no sources.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY converters/ converters/
COPY common/ common/
COPY worker/ worker/
COPY backend/ backend/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=9090 \
    REXLABEL_HOST=0.0.0.0 \
    REXLABEL_JOBS_DIR=/var/lib/rexlabel/jobs
# REXLABEL_HOST: every interface, as a published port needs; gunicorn refuses to
# start so without BASIC_AUTH_USER/BASIC_AUTH_PASS (docker/gunicorn.conf.py).
# /var/lib/rexlabel/jobs: bulk job records (REXLABEL_JOBS_DIR), a volume in compose;
# created here so the volume starts out owned by the unprivileged user.
RUN groupadd --system --gid 10001 rexlabel \
    && useradd --system --uid 10001 --gid rexlabel --create-home rexlabel \
    && mkdir -p /var/lib/rexlabel/jobs \
    && chown -R rexlabel:rexlabel /var/lib/rexlabel
# The base install: backend + converters (Flask, RQ, label-studio-sdk); no torch.
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY docker/gunicorn.conf.py docker/healthcheck.py docker/
USER 10001:10001
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "docker/healthcheck.py", "backend"]
# One process, 8 threads (docker/gunicorn.conf.py); tune with GUNICORN_CMD_ARGS.
CMD ["gunicorn", "--config", "docker/gunicorn.conf.py", "backend.app:create_app()"]
