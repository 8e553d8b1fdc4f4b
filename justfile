# tuya-fleet task runner. From a fresh clone use ./dev <recipe> (it installs uv and just first).
set shell := ["bash", "-euo", "pipefail", "-c"]

# the local stack the `up`/`down`/`demo` recipes drive (the test recipe always uses its own, `test`)
export FLEET_STACK := env_var_or_default("FLEET_STACK", "dev")

# list the recipes
default:
    @just --list

# start Apache Pulsar, FerretDB and the services; print where each listens
up:
    uv run devstack up

# stop the services and the stack
down:
    uv run devstack down

# health, pids, ports and memory of each component
status:
    uv run devstack status

# recent log lines of each component
logs lines="40":
    uv run devstack logs --lines {{lines}}

# run the whole test suite on a stack of its own (started here, stopped when done); extra args go to pytest
test *args:
    #!/usr/bin/env bash
    set -euo pipefail
    trap 'uv run devstack down --stack test' EXIT
    uv run devstack up --stack test --no-services
    eval "$(uv run devstack env --stack test)"
    uv run pytest {{args}}

# only the fast tests: no servers needed
test-unit *args:
    uv run pytest -m unit {{args}}

# the operator CLI against this stack (API keys from its key files), e.g. `just fleet status devices --product PID`
fleet *args:
    uv run fleet {{args}}

# lint, format check, type check and the layering contracts (import-linter, [tool.importlinter] in pyproject.toml)
lint:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy contracts/src shared/src infra/devstack/src
    uv run lint-imports --no-logo

# format and auto-fix
fmt:
    uv run ruff format .
    uv run ruff check --fix .

# render the AsyncAPI document (contracts/schemas/asyncapi.json) as a browsable HTML page; prints its path
docs *args:
    infra/docs/render.sh {{args}}

# benchmarks (each prints its figures and writes bench/results/*.json)
bench *args:
    #!/usr/bin/env bash
    set -euo pipefail
    just up
    eval "$(uv run devstack env)"
    for script in bench/*.py; do uv run python "$script" {{args}}; done

# bring the system up and show a live fleet: tuya-sim devices report, ingest -> status shadows, a few printed;
# then a QR pairing session (one device paired), an unbinding batch under a daily limit (one refused) and an
# OTA release over two regions (the failing one halts, the other completes)
demo *args:
    just up
    uv run python -m fleet_devstack.demo {{args}}
