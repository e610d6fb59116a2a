#!/usr/bin/env bash
# First run on a fresh machine:  ./scripts/demo.sh [adapter demo options, e.g. --json]
#
# Creates .venv with the adapter installed (Python 3.11+, nothing else: no broker or
# database server), then runs `adapter demo` on the embedded defaults: SQLite store,
# the durable SQLite queue, and the bundled Tamin simulator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/adapter ] || [ pyproject.toml -nt .venv/.adapter-installed ]; then
    echo "demo.sh: installing the adapter into .venv (first run only)" >&2
    source scripts/python-env.sh  # Python version check; python3-venv installed when missing
    ensure_venv "${PYTHON:-python3}" .venv demo.sh
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch .venv/.adapter-installed
fi
exec .venv/bin/adapter demo "$@"
