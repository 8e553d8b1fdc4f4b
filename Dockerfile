# One image recipe for every tuya-fleet service:
#   docker build --build-arg PACKAGE=fleet-status -t tuya-fleet/status .
# PACKAGE is a uv workspace member (services/<name>/pyproject.toml's project name); the image holds only that
# package and its dependencies, installed from the lock file, and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
ARG PACKAGE=fleet-shared
# Lock and manifests first: the dependency layer is rebuilt only when they change.
COPY pyproject.toml uv.lock ./
COPY contracts/pyproject.toml contracts/
COPY shared/pyproject.toml shared/
COPY infra/devstack/pyproject.toml infra/devstack/
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "${PACKAGE}"
COPY contracts contracts
COPY shared shared
COPY infra/devstack infra/devstack
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${PACKAGE}"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 fleet && useradd --uid 10001 --gid fleet --no-create-home --shell /usr/sbin/nologin fleet
COPY --from=build --chown=root:root /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /app
# Each service image sets its own command in compose / Kubernetes (e.g. `fleet-status`).
CMD ["python", "-c", "print('set the service command, e.g. fleet-status')"]
