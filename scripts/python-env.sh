# Sourced by scripts/demo.sh, scripts/test.sh, scripts/airflow-venv.sh and .ci/run (not run alone).
#
#   require_python PY NAME   exit 1 with a clear message unless PY runs and is at least the
#                            version pyproject.toml's requires-python names
#   ensure_venv PY DIR NAME  DIR is a virtualenv with pip, of a Python new enough: kept when it
#                            is one, else made with PY -m venv. When PY lacks venv/ensurepip
#                            (Debian's python3 without python3-venv), python3.X-venv is installed
#                            with apt-get as root; otherwise the message says what to install.
#                            A venv left without pip by such a failure is made again.
#
# NAME is the calling script's name, for the messages. The root of the checkout is the
# folder above this file.

_PYTHON_ENV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# "3.11" from `requires-python = ">=3.11"` in pyproject.toml
required_python_version() {
    sed -n 's/^requires-python *= *">= *\([0-9][0-9.]*\)".*/\1/p' "$_PYTHON_ENV_ROOT/pyproject.toml" | head -n 1
}

# "3.11.2" (what PY reports), empty when PY does not run
python_version_of() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || true
}

# true when version $1 (a.b[.c]) is at least $2 (a.b)
version_at_least() {
    local have_major have_minor want_major want_minor
    IFS=. read -r have_major have_minor _ <<<"$1"
    IFS=. read -r want_major want_minor _ <<<"$2"
    [ "${have_major:-0}" -gt "${want_major:-0}" ] \
        || { [ "${have_major:-0}" -eq "${want_major:-0}" ] && [ "${have_minor:-0}" -ge "${want_minor:-0}" ]; }
}

require_python() {
    local python=$1 name=$2 want have
    want=$(required_python_version)
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "$name: $python not found; the adapter needs Python $want or newer -- fix: install it" \
             "(Debian/Ubuntu: apt-get install python3 python3-venv) or name one with PYTHON=/path/to/python3" >&2
        exit 1
    fi
    have=$(python_version_of "$python")
    if [ -z "$have" ]; then
        echo "$name: $python does not run; the adapter needs Python $want or newer -- fix: name a working" \
             "one with PYTHON=/path/to/python3" >&2
        exit 1
    fi
    if ! version_at_least "$have" "$want"; then
        echo "$name: $python is Python $have; the adapter needs Python $want or newer (pyproject.toml" \
             "requires-python) -- fix: install python$want (Debian/Ubuntu: apt-get install python$want" \
             "python$want-venv) and run again with PYTHON=python$want" >&2
        exit 1
    fi
}

# true when PY can make a virtualenv with pip in it
_has_venv() {
    "$1" -c 'import ensurepip, venv' >/dev/null 2>&1
}

make_venv() {
    local python=$1 dir=$2 name=$3 short package
    require_python "$python" "$name"
    if ! _has_venv "$python"; then
        short=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        package="python$short-venv"
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            echo "$name: $python $short has no venv/ensurepip module, so it cannot make $dir -- fix: install" \
                 "$package (Debian/Ubuntu, as root: apt-get install $package; elsewhere your" \
                 "distribution's python3 venv package) and run again" >&2
            exit 1
        fi
        echo "$name: $python has no venv/ensurepip module: installing $package with apt-get" >&2
        apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2 \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 || true
        if ! _has_venv "$python"; then
            echo "$name: installing $package did not give $python a venv module -- fix: install your" \
                 "distribution's venv package for Python $short by hand and run again" >&2
            exit 1
        fi
    fi
    # --clear: a venv an earlier failure left without pip is made again, not taken as ready
    "$python" -m venv --clear "$dir"
}

ensure_venv() {
    local python=$1 dir=$2 name=$3
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -m pip --version >/dev/null 2>&1 \
            && version_at_least "$(python_version_of "$dir/bin/python")" "$(required_python_version)"; then
        return 0
    fi
    make_venv "$python" "$dir" "$name"  # none yet, one without pip, or one of a too old Python
}
