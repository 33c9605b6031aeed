#!/usr/bin/env bash
# Refreshes the dependency locks from pyproject.toml's ranges (`make lock`), then prints what moved.
#
#   requirements/dev.txt      every dependency of `make test`: runtime, dev tools, engine clients, build backend
#   requirements/runtime.txt  what `make serve` and a wheel install need; the same versions as dev.txt
#   requirements/distributed.txt  runtime plus the engine clients of a cluster node (deploy/Dockerfile)
#
# Both are resolved for every platform and Python >= 3.11 (uv's universal mode) with sha256 hashes, and
# installed with `pip install --require-hashes --no-deps`: a new release of anything changes nothing until
# this script is run on purpose. uv itself comes pinned, with hashes, from requirements/uv.txt.
#
#   scripts/lock.sh              keep what is locked, add or remove only what pyproject.toml changed
#   scripts/lock.sh --upgrade    move everything to the newest release its range allows
#   scripts/lock.sh -P NAME      move one package (uv's --upgrade-package)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${LOCK_TOOLS_VENV:-$ROOT/.venv-lock}
PYTHON=${PYTHON:-python3}

if [[ ! -x $TOOLS/bin/uv ]]; then
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --require-hashes --no-deps -r requirements/uv.txt
fi

before=$(mktemp)
trap 'rm -f "$before"' EXIT
cat requirements/dev.txt >"$before" 2>/dev/null || true

compile() {
  "$TOOLS/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "make lock" "$@"
}
compile pyproject.toml requirements/build.in --extra dev -o requirements/dev.txt "${@}"
# The runtime set is constrained by the dev lock, so `make serve` and `make test` run the same versions.
compile pyproject.toml requirements/build.in -c requirements/dev.txt -o requirements/runtime.txt
compile pyproject.toml requirements/build.in --extra distributed -c requirements/dev.txt -o requirements/distributed.txt

# What moved, from the pinned lines of the old and new dev lock.
pins() { grep -E '^[A-Za-z0-9_.-]+==' "$1" | sed -E 's/ *\\$//; s/ ;.*//' | sort -u; }
moved=$(diff <(pins "$before") <(pins requirements/dev.txt) | grep -E '^[<>]' || true)
if [[ -z $moved ]]; then
  echo "lock: nothing moved"
else
  echo "lock: what moved (< before, > after):"
  echo "$moved"
fi
