#!/usr/bin/env bash
# Run the test suite:  ./scripts/test.sh [pytest arguments]
#
# Makes sure .venv exists with this checkout installed (editable, with the
# [test] extra), type-checks adapter/ with mypy, then runs pytest with the
# given arguments.  pytest's exit code is passed through unchanged: 5 ("no
# tests collected") is a failure, never success; a failed type check makes
# the exit code 1 when pytest passed (ADAPTER_TEST_NO_TYPECHECK=1 skips it;
# ignored when CI is set).  Integration tests need PostgreSQL and RabbitMQ;
# start them with `scripts/services.sh ensure` (they are skipped locally when
# down, and fail when CI is set).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.adapter-installed   # touched after each install of this checkout

# True when the venv imports `adapter` from this checkout and the install is
# newer than pyproject.toml (so a new dependency triggers a reinstall).
venv_ready() {
    [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$STAMP" -nt "$ROOT/pyproject.toml" ] || return 1
    local where
    where=$(cd / && "$VENV/bin/python" -c 'import adapter, pytest, mypy; print(adapter.__file__)' 2>/dev/null) || return 1
    [ "$where" = "$ROOT/adapter/__init__.py" ]
}

install_venv() {
    echo "test.sh: installing the project into $VENV" >&2
    source "$ROOT/scripts/python-env.sh"  # Python version check; python3-venv installed when missing
    ensure_venv "${PYTHON:-python3}" "$VENV" test.sh
    "$VENV/bin/python" -m pip install -q -e "${ROOT}[test]"
    touch "$STAMP"
}

venv_ready || install_venv

# PostgreSQL and RabbitMQ for the integration tests: installed/started when missing
# (needs root), a quick no-op when they run. Set ADAPTER_TEST_NO_SERVICES=1 to skip.
if [ -z "${ADAPTER_TEST_NO_SERVICES:-}" ]; then
    bash "$ROOT/scripts/services.sh" ensure \
        || echo "test.sh: services not available: integration tests will be skipped (CI fails them)" >&2
fi

# Type check (settings: [tool.mypy] in pyproject.toml). A failure fails the run, but pytest
# still runs, so one run shows both.
tc=0
if [ -z "${ADAPTER_TEST_NO_TYPECHECK:-}" ] || [ -n "${CI:-}" ]; then
    "$VENV/bin/python" -m mypy || tc=$?
    if [ "$tc" -ne 0 ]; then
        echo "test.sh: type check failed (mypy exit $tc)" >&2
    fi
fi

rc=0
"$VENV/bin/python" -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests (exit 5) - treated as failure" >&2
fi
if [ "$tc" -ne 0 ]; then  # said again after pytest's output, so it is not missed
    echo "test.sh: type check failed (mypy exit $tc; its errors are printed before pytest's output)" >&2
    [ "$rc" -ne 0 ] || rc=1
fi

# Airflow DAG tests run in Airflow's own venv (scripts/test-airflow.sh), on a full run only.
if [ "$#" -eq 0 ] && [ -z "${ADAPTER_TEST_NO_AIRFLOW:-}" ]; then
    arc=0
    "$ROOT/scripts/test-airflow.sh" || arc=$?
    [ "$rc" -ne 0 ] || rc=$arc
fi
exit "$rc"
