#!/usr/bin/env bash
# Render the AsyncAPI document as one browsable HTML page: `./dev docs` (or infra/docs/render.sh [IN] [OUT]).
# The renderer (AsyncAPI's parser and React component, pinned in package.json / package-lock.json here) is
# installed with `npm ci` into .cache/docs/npm, again only when the lock changes; npm's own cache sits in
# .cache/npm, so even a reinstall needs no network. Prints the page's path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/infra/docs"
input="$(realpath "${1:-$root/contracts/schemas/asyncapi.json}")"
output="$(realpath -m "${2:-$root/.cache/docs/asyncapi.html}")"
prefix="$root/.cache/docs/npm"

command -v node >/dev/null || { echo "node (18 or newer) is needed to render the docs" >&2; exit 1; }
mkdir -p "$prefix"
if ! cmp -s "$here/package-lock.json" "$prefix/node_modules/.fleet-lock"; then
  echo "installing the AsyncAPI renderer into $prefix ..." >&2
  cp "$here/package.json" "$here/package-lock.json" "$prefix/"
  # --ignore-scripts: nothing here needs an install script (one dependency's is a telemetry ping)
  SCARF_ANALYTICS=false npm ci --prefix "$prefix" --cache "$root/.cache/npm" --ignore-scripts --prefer-offline \
    --no-audit --no-fund --loglevel=error >&2
  cp "$here/package-lock.json" "$prefix/node_modules/.fleet-lock"
fi
cp "$here/render.mjs" "$prefix/"  # beside its node_modules, so Node resolves the packages from there
node "$prefix/render.mjs" "$input" "$output"
echo "$output"
