#!/usr/bin/env bash
# Test services (PostgreSQL, RabbitMQ) on a machine without systemd.
#
#   scripts/services.sh ensure   install what is missing (apt), start what is
#                                down, wait until ready, create the test role.
#                                Idempotent; about a second when all is up.
#   scripts/services.sh status   print what is reachable; exit 1 if not all.
#
# Installing and starting need root (CI runs as root); when everything is
# already up, `ensure` only probes and needs no privileges beyond psql.
#
# The tests connect as role `adapter` (password `adapter`, SUPERUSER) over
# 127.0.0.1, because a fresh Debian cluster uses peer/scram auth and the
# `postgres` role has no password; RabbitMQ's default guest/guest is allowed
# from localhost.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
AMQP_HOST=127.0.0.1
AMQP_PORT=5672
TEST_ROLE=adapter
TEST_PASSWORD=adapter
READY_TIMEOUT=${SERVICES_READY_TIMEOUT:-120}

# Debian puts the server tools in /usr/sbin, not always on a CI PATH.
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "services: $*" >&2; }

die() { log "ERROR: $*"; exit 1; }

# Run a command as root: directly when we are root, else via sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Run a command as the postgres OS user (peer auth on the local socket).
as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; else as_root runuser -u postgres -- "$@"; fi
}

port_open() {  # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for DESCRIPTION SECONDS COMMAND...: retry COMMAND until it succeeds.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$what not ready after ${seconds}s"
            return 1
        fi
        sleep 0.5
    done
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

amqp_ready() { port_open "$AMQP_HOST" "$AMQP_PORT"; }

# --- install -----------------------------------------------------------------

# Print the Debian packages that are not installed yet (space separated).
missing_packages() {
    local missing=()
    command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
    # the paper-prescription PDF needs a Persian font; its tests read PDFs with poppler
    dpkg -s fonts-noto-core >/dev/null 2>&1 || missing+=(fonts-noto-core)
    command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
    # the status page's screenshot test (tests/integration/test_ops_page_screenshot.py) runs headless Chromium
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    echo "${missing[*]}"
}

install_missing() {
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    log "installing: $missing"
    as_root apt-get update -q
    # Without systemd a package's start-on-install can fail and fail the
    # install; a policy-rc.d that answers 101 ("not allowed") makes
    # invoke-rc.d skip it.  We start the services ourselves below.
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added=1
    fi
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing || rc=$?
    if [ "$added" = 1 ]; then as_root rm -f "$policy"; fi
    [ "$rc" = 0 ] || die "apt-get install $missing failed ($rc)"
}

# --- PostgreSQL ----------------------------------------------------------------

pg_version() {  # newest installed major version, e.g. 15
    find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null \
        | sort -V | tail -n 1
}

pg_start() {
    pg_ready && return 0
    local version
    version=$(pg_version)
    [ -n "$version" ] || die "no PostgreSQL server in /usr/lib/postgresql"
    if [ ! -d "/etc/postgresql/$version/main" ]; then
        log "creating cluster $version/main"
        as_root pg_createcluster "$version" main
    fi
    log "starting PostgreSQL $version/main"
    # Non-zero when it is already starting; readiness below is what counts.
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for "PostgreSQL on $PG_HOST:$PG_PORT" "$READY_TIMEOUT" pg_ready
}

# Create the login role the tests use, unless it exists.  Runs psql as the
# postgres OS user over the Unix socket (peer or trust auth, both fine).
pg_ensure_role() {
    local exists
    exists=$(as_postgres psql -X -qtA -d postgres \
        -c "SELECT 1 FROM pg_roles WHERE rolname = '$TEST_ROLE'") \
        || die "cannot run psql as the postgres user"
    [ "$exists" = 1 ] && return 0
    log "creating role $TEST_ROLE"
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -d postgres \
        -c "CREATE ROLE $TEST_ROLE LOGIN SUPERUSER PASSWORD '$TEST_PASSWORD'"
}

# --- RabbitMQ --------------------------------------------------------------------

rabbit_start() {
    amqp_ready && return 0
    log "starting RabbitMQ"
    # Fails harmlessly when a node is already booting; we wait for the port.
    as_root rabbitmq-server -detached || true
    wait_for "RabbitMQ on $AMQP_HOST:$AMQP_PORT" "$READY_TIMEOUT" amqp_ready
    # The listener opens late in boot, but let the CLI (used for vhosts) agree.
    wait_for "RabbitMQ node" 60 as_root rabbitmqctl -q await_startup
}

# --- commands ---------------------------------------------------------------------

cmd_ensure() {
    install_missing
    pg_start
    pg_ensure_role
    rabbit_start
    log "ready: postgresql $PG_HOST:$PG_PORT (role $TEST_ROLE), amqp $AMQP_HOST:$AMQP_PORT"
}

cmd_status() {
    local ok=0
    if pg_ready; then log "postgresql: up"; else log "postgresql: DOWN"; ok=1; fi
    if amqp_ready; then log "rabbitmq: up"; else log "rabbitmq: DOWN"; ok=1; fi
    return "$ok"
}

main() {
    case "${1:-}" in
        ensure) cmd_ensure ;;
        status) cmd_status ;;
        *) echo "usage: $0 ensure|status" >&2; exit 2 ;;
    esac
}

# Run only when executed, so the functions can be sourced for a dry run.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
