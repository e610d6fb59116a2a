#!/usr/bin/env bash
# The Airflow tests:  ./scripts/test-airflow.sh [pytest arguments]
#
# Makes sure .venv-airflow is ready (scripts/airflow-venv.sh: apache-airflow 3.3.2 + this
# checkout, pinned by constraints-airflow.txt), then runs tests/airflow with that venv's
# pytest in a throw-away AIRFLOW_HOME (metadata DB made by `airflow db migrate`, examples
# off; removed afterwards). The tests run the real pipeline and the Tamin simulator on
# SQLite: no services needed. pytest's exit code is passed through; 5 ("no tests
# collected") is a failure. scripts/test.sh calls this at its end for a full run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

bash "$ROOT/scripts/airflow-venv.sh"

HOME_DIR=$(mktemp -d "${TMPDIR:-/tmp}/adapter-airflow-home.XXXXXX")
trap 'rm -rf "$HOME_DIR"' EXIT
export ADAPTER_TEST_AIRFLOW_HOME=$HOME_DIR

rc=0
"$ROOT/.venv-airflow/bin/python" -m pytest -p no:cacheprovider tests/airflow "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test-airflow.sh: pytest collected no tests (exit 5) - treated as failure" >&2
fi
exit "$rc"
