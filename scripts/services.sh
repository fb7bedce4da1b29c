#!/usr/bin/env bash
# Local services for clickpipe development, tests and CI: Redis and the Kafka-protocol broker tansu.
#
#   scripts/services.sh deps              install the Debian packages the Rust build needs (if missing)
#   scripts/services.sh install [WHAT...] install what is missing (WHAT: redis, tansu, chromium,
#                                         schemathesis, osmem; default redis and tansu). Building tansu
#                                         takes ~16 min on 2 cores. chromium (Debian) and schemathesis
#                                         (PyPI, in its own virtualenv $CLICKPIPE_TOOLS/schemathesis) are
#                                         used by the admin API tests; osmem (PyPI osmem-server, an
#                                         in-memory OpenSearch-compatible server, linked as
#                                         $CLICKPIPE_TOOLS/bin/osmem-server) by the ingest tests;
#                                         compose (Debian docker-compose, for `docker-compose config`)
#                                         by the deployment tests.
#   scripts/services.sh start [--fresh]   start Redis and tansu (installing them if missing), wait until
#                                         both accept connections, create the default topics.
#                                         --fresh: stop tansu if running and delete its database first.
#   scripts/services.sh stop              stop both
#   scripts/services.sh status            print whether each is up (exit 0 if both are, 3 if not)
#   scripts/services.sh topics NAME...    create more topics (PARTITIONS, default 4), existing ones are kept
#
# Environment:
#   CLICKPIPE_TOOLS       where tansu is installed (bin/tansu)   default: $HOME/.cache/clickpipe
#   CLICKPIPE_STATE       pid files, logs, tansu's sqlite db     default: <repo>/.services
#   CLICKPIPE_REDIS_PORT  Redis port on 127.0.0.1                default: 6379
#   CLICKPIPE_KAFKA_PORT  tansu port on 127.0.0.1                default: 9092
#   CLICKPIPE_START_TIMEOUT  seconds to wait for each service    default: 30
#   PARTITIONS            partitions for `topics`                default: 4
#
# tansu always runs with sqlite storage: never `memory://`, which loses messages when a consumer
# group resumes mid-batch (see shared/ENVIRONMENT.md). It does not auto-create topics.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${CLICKPIPE_TOOLS:-$HOME/.cache/clickpipe}"
TANSU_VERSION="0.6.0"
STATE="${CLICKPIPE_STATE:-$REPO_ROOT/.services}"
HOST="127.0.0.1"
REDIS_PORT="${CLICKPIPE_REDIS_PORT:-6379}"
KAFKA_PORT="${CLICKPIPE_KAFKA_PORT:-9092}"
TIMEOUT="${CLICKPIPE_START_TIMEOUT:-30}"
BROKER_URL="tcp://$HOST:$KAFKA_PORT"
# Absolute paths: tansu runs with $STATE as its working directory.
[[ "$STATE" == /* ]] || STATE="$PWD/$STATE"
[[ "$TOOLS" == /* ]] || TOOLS="$PWD/$TOOLS"
TANSU="$TOOLS/bin/tansu"
SCHEMATHESIS_VERSION="4.32.5"
SCHEMATHESIS_VENV="$TOOLS/schemathesis"
OSMEM_VERSION="0.1.6"
OSMEM_VENV="$TOOLS/osmem"
OSMEM="$TOOLS/bin/osmem-server"

REDIS_PID="$STATE/redis.pid"
REDIS_LOG="$STATE/redis.log"
TANSU_PID="$STATE/tansu.pid"
TANSU_LOG="$STATE/tansu.log"
TANSU_DB="tansu.db" # relative to $STATE, tansu's working directory

# name:partitions
DEFAULT_TOPICS=(clicks:4 predictions:4 clicks-dlq:4)

# Debian packages the build needs. rdkafka-sys (features ssl, zstd, default libz) runs librdkafka's
# own ./configure + make: bash, make and a C compiler (build-essential), pkg-config to find OpenSSL
# and zlib, libssl-dev for `ssl`, zlib1g-dev for `libz` (zstd-sys builds its bundled zstd with cc).
# python3 is optional there: librdkafka's configure only uses it for the shared library's linker
# script and turns that off when python3 is missing; cmake is not needed (configure build).
BUILD_DEPS=(build-essential pkg-config libssl-dev zlib1g-dev curl ca-certificates python3 python3-venv)

log() { printf '[services] %s\n' "$*"; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------- apt

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo" || SUDO=""
fi
APT_UPDATED=0

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# apt_install PKG...: installs the packages that are not installed yet; `apt-get update` at most once.
apt_install() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
    log "installing Debian packages: ${missing[*]}"
    # Wait for a dpkg lock held by another apt run instead of failing.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
    [[ -n "$SUDO" ]] && apt=("$SUDO" "${apt[@]}")
    # `apt-get update` once: skipped when the package lists are less than an hour old (another
    # subcommand of this script just updated them), retried with an update if the install fails.
    if [[ $APT_UPDATED -eq 0 ]] && [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -n 1)" ]]; then
        "${apt[@]}" update
        APT_UPDATED=1
    fi
    if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
        [[ $APT_UPDATED -eq 1 ]] && die "apt-get install ${missing[*]} failed"
        "${apt[@]}" update
        APT_UPDATED=1
        "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
    fi
}

cmd_deps() {
    apt_install "${BUILD_DEPS[@]}"
    log "build dependencies present: ${BUILD_DEPS[*]}"
}

# ------------------------------------------------------------------------------------------ install

install_redis() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
}

install_chromium() {
    command -v chromium >/dev/null 2>&1 && return 0
    apt_install chromium
    command -v chromium >/dev/null 2>&1 || die "chromium still missing after apt-get install"
}

install_schemathesis() {
    local st="$SCHEMATHESIS_VENV/bin/st"
    if [[ -x "$st" ]] && "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        return 0
    fi
    apt_install python3 python3-venv
    mkdir -p "$TOOLS"
    log "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
    python3 -m venv "$SCHEMATHESIS_VENV"
    "$SCHEMATHESIS_VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
    [[ -x "$st" ]] || die "schemathesis install failed"
}

install_osmem() {
    if [[ -x "$OSMEM" ]] && "$OSMEM_VENV/bin/pip" show osmem-server 2>/dev/null | grep -q "^Version: $OSMEM_VERSION$"; then
        return 0
    fi
    apt_install python3 python3-venv
    mkdir -p "$TOOLS/bin"
    log "installing osmem-server $OSMEM_VERSION into $OSMEM_VENV"
    python3 -m venv "$OSMEM_VENV"
    "$OSMEM_VENV/bin/pip" install -q "osmem-server==$OSMEM_VERSION"
    # The package ships a static binary; link it where the tests look.
    local bin
    bin="$(find "$OSMEM_VENV" -path '*osmem_server/bin/osmem-server' -type f | head -n 1)"
    [[ -n "$bin" ]] || die "osmem-server install failed: no binary in the package"
    ln -sf "$bin" "$OSMEM"
    [[ -x "$OSMEM" ]] || die "osmem-server install failed"
}

install_tansu() {
    [[ -x "$TANSU" ]] && return 0
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to build tansu"
    command -v flock >/dev/null 2>&1 || die "flock (util-linux) is needed"
    mkdir -p "$TOOLS"
    # One build at a time, even when several scripts ask for it (e.g. CI's background install and
    # scripts/test.sh): the others wait for it and then find the binary.
    exec 9>"$TOOLS/.tansu-install.lock"
    if ! flock -n 9; then
        log "another tansu build is running (lock $TOOLS/.tansu-install.lock); waiting for it"
        flock 9
    fi
    if [[ ! -x "$TANSU" ]]; then
        # cargo-install compiles C (libsql's sqlite): needs the C toolchain.
        apt_install build-essential pkg-config
        log "building tansu $TANSU_VERSION into $TOOLS with cargo install: this takes about 16 minutes on 2 cores"
        local t0=$SECONDS
        cargo install tansu --version "$TANSU_VERSION" --locked --features libsql --root "$TOOLS"
        log "tansu built in $((SECONDS - t0)) s: $TANSU"
    fi
    flock -u 9
    exec 9>&-
    [[ -x "$TANSU" ]] || die "tansu not found at $TANSU after cargo install"
}

cmd_install() {
    local what=("$@")
    [[ ${#what[@]} -eq 0 ]] && what=(redis tansu)
    local w
    for w in "${what[@]}"; do
        case "$w" in
            redis) install_redis ;;
            tansu) install_tansu ;;
            chromium) install_chromium ;;
            schemathesis) install_schemathesis ;;
            osmem) install_osmem ;;
            compose) command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose ;;
            *) die "install: unknown component '$w' (redis, tansu, chromium, schemathesis, osmem, compose)" ;;
        esac
    done
    log "installed: ${what[*]}"
}

# ------------------------------------------------------------------------------------------ helpers

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live process whose command line mentions NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

redis_up() { redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

tcp_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

tansu_up() { tcp_open "$KAFKA_PORT"; }

show_log_tail() {
    local file=$1
    if [[ -f "$file" ]]; then
        printf '[services] --- last lines of %s ---\n' "$file" >&2
        tail -n 30 "$file" >&2
        printf '[services] ---\n' >&2
    else
        printf '[services] (no log at %s)\n' "$file" >&2
    fi
}

# ---------------------------------------------------------------------------------------- start/stop

start_redis() {
    if redis_up; then
        if pid_alive "$REDIS_PID" redis-server; then
            log "redis: already running on $HOST:$REDIS_PORT (pid $(cat "$REDIS_PID"))"
        else
            log "redis: something already answers PING on $HOST:$REDIS_PORT (not started by this script); using it"
        fi
        return 0
    fi
    rm -f "$REDIS_PID"
    redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$STATE" --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" </dev/null ||
        {
            show_log_tail "$REDIS_LOG"
            die "redis-server failed to start"
        }
    local deadline=$((SECONDS + TIMEOUT))
    until redis_up; do
        if ((SECONDS >= deadline)); then
            show_log_tail "$REDIS_LOG"
            die "redis did not answer PING on $HOST:$REDIS_PORT within ${TIMEOUT}s"
        fi
        sleep 0.1
    done
    log "redis: started on $HOST:$REDIS_PORT (pid $(cat "$REDIS_PID" 2>/dev/null || echo '?'))"
}

stop_tansu() {
    if ! pid_alive "$TANSU_PID" tansu; then
        rm -f "$TANSU_PID"
        if tansu_up; then
            log "tansu: port $KAFKA_PORT is in use but not by a tansu this script started; leaving it"
        else
            log "tansu: not running"
        fi
        return 0
    fi
    local pid
    pid="$(cat "$TANSU_PID")"
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "tansu: pid $pid did not exit after SIGTERM; sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$TANSU_PID"
    log "tansu: stopped (pid $pid)"
}

start_tansu() {
    local fresh=$1
    if pid_alive "$TANSU_PID" tansu; then
        if [[ $fresh -eq 1 ]]; then
            log "tansu: --fresh: stopping the running broker to delete its database"
            stop_tansu
        elif tansu_up; then
            log "tansu: already running on $HOST:$KAFKA_PORT (pid $(cat "$TANSU_PID"))"
            return 0
        fi
        # else: process alive but not listening (still starting): fall through to the wait below
    elif tansu_up; then
        [[ $fresh -eq 1 ]] && die "--fresh: port $KAFKA_PORT is served by a broker this script did not start; stop it first"
        log "tansu: something already listens on $HOST:$KAFKA_PORT (not started by this script); using it"
        return 0
    fi

    if ! pid_alive "$TANSU_PID" tansu; then
        if [[ $fresh -eq 1 ]]; then
            rm -f "$STATE/$TANSU_DB" "$STATE/$TANSU_DB"-*
            log "tansu: --fresh: deleted $STATE/$TANSU_DB"
        fi
        [[ -x "$TANSU" ]] || install_tansu
        # Own session (setsid) so the broker outlives the calling shell and its terminal; stdio is
        # detached so callers that capture our output do not wait for the broker. setsid may fork,
        # so the process writes its own pid before exec'ing tansu.
        # Run in $STATE: the sqlite file is relative to it, and tansu reads a .env from its cwd.
        rm -f "$TANSU_PID"
        printf '\n===== %s tansu broker starting on %s =====\n' "$(date -u +%FT%TZ)" "$BROKER_URL" >>"$TANSU_LOG"
        (
            cd "$STATE"
            # shellcheck disable=SC2016 # expanded by the inner bash
            exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$TANSU_PID" \
                "$TANSU" broker \
                --listener-url "$BROKER_URL" \
                --advertised-listener-url "$BROKER_URL" \
                --storage-engine "sqlite://$TANSU_DB" \
                </dev/null >>"$TANSU_LOG" 2>&1
        ) &
    fi

    local pid="" deadline=$((SECONDS + TIMEOUT))
    until [[ -s "$TANSU_PID" ]] && pid="$(cat "$TANSU_PID")" && [[ "$pid" =~ ^[0-9]+$ ]]; do
        if ((SECONDS >= deadline)); then
            show_log_tail "$TANSU_LOG"
            die "tansu did not start (no pid file $TANSU_PID after ${TIMEOUT}s)"
        fi
        sleep 0.05
    done
    until tansu_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$TANSU_PID"
            show_log_tail "$TANSU_LOG"
            die "tansu exited during startup (see $TANSU_LOG)"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$TANSU_LOG"
            kill "$pid" 2>/dev/null || true
            rm -f "$TANSU_PID"
            die "tansu did not accept connections on $HOST:$KAFKA_PORT within ${TIMEOUT}s; stopped it (pid $pid; see $TANSU_LOG)"
        fi
        sleep 0.1
    done
    log "tansu: started on $HOST:$KAFKA_PORT (pid $pid, sqlite db $STATE/$TANSU_DB, log $TANSU_LOG)"
}

# topic_exists NAME: the broker lists the topic (`tansu topic list` prints the metadata as JSON).
topic_exists() {
    local list
    list="$("$TANSU" topic list --broker "$BROKER_URL" 2>/dev/null)" || return 1
    grep -qF "\"name\":\"$1\"" <<<"$list"
}

# create_topic NAME PARTITIONS: creates the topic; an existing topic is kept as it is.
create_topic() {
    local name=$1 partitions=$2 out rc=0
    [[ -x "$TANSU" ]] || die "tansu not installed at $TANSU (run: scripts/services.sh install tansu)"
    # Checking first keeps the broker log free of TopicAlreadyExists errors on every start.
    if topic_exists "$name"; then
        log "topic $name: already exists"
        return 0
    fi
    out="$("$TANSU" topic create "$name" --broker "$BROKER_URL" --partitions "$partitions" 2>&1)" || rc=$?
    if [[ $rc -eq 0 ]]; then
        log "topic $name: created ($partitions partitions)"
    elif grep -qi 'already exists' <<<"$out"; then
        # tansu 0.6.0 exits 1 and logs "ERROR tansu: 40: Topic with this name already exists."
        log "topic $name: already exists"
    else
        printf '%s\n' "$out" >&2
        die "creating topic $name failed (exit $rc)"
    fi
}

cmd_start() {
    local fresh=0 a
    for a in "$@"; do
        case "$a" in
            --fresh) fresh=1 ;;
            *) die "start: unknown option '$a' (only --fresh)" ;;
        esac
    done
    mkdir -p "$STATE"
    install_redis
    install_tansu
    start_redis
    start_tansu "$fresh"
    local t
    for t in "${DEFAULT_TOPICS[@]}"; do
        create_topic "${t%%:*}" "${t##*:}"
    done
    log "up: redis://$HOST:$REDIS_PORT/  kafka $HOST:$KAFKA_PORT"
}

cmd_stop() {
    if pid_alive "$REDIS_PID" redis-server; then
        local pid deadline=$((SECONDS + 10))
        pid="$(cat "$REDIS_PID" 2>/dev/null || true)" # read first: redis deletes it on shutdown
        redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        while [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                log "redis: pid $pid still running after SHUTDOWN; sending SIGTERM"
                kill "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        rm -f "$REDIS_PID"
        log "redis: stopped (pid $pid)"
    else
        rm -f "$REDIS_PID"
        if redis_up; then
            log "redis: $HOST:$REDIS_PORT answers but was not started by this script; leaving it"
        else
            log "redis: not running"
        fi
    fi
    stop_tansu
}

cmd_status() {
    local ok=0
    if redis_up; then
        if pid_alive "$REDIS_PID" redis-server; then
            log "redis: up on $HOST:$REDIS_PORT (pid $(cat "$REDIS_PID"))"
        else
            log "redis: up on $HOST:$REDIS_PORT (not started by this script)"
        fi
    else
        log "redis: down ($HOST:$REDIS_PORT)"
        ok=3
    fi
    if tansu_up; then
        if pid_alive "$TANSU_PID" tansu; then
            log "tansu: up on $HOST:$KAFKA_PORT (pid $(cat "$TANSU_PID"), db $STATE/$TANSU_DB)"
        else
            log "tansu: up on $HOST:$KAFKA_PORT (not started by this script)"
        fi
    else
        log "tansu: down ($HOST:$KAFKA_PORT)"
        ok=3
    fi
    return $ok
}

cmd_topics() {
    [[ $# -gt 0 ]] || die "usage: scripts/services.sh topics NAME..."
    local partitions="${PARTITIONS:-4}"
    [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, got '$partitions'"
    tansu_up || die "no broker on $HOST:$KAFKA_PORT (run: scripts/services.sh start)"
    local t
    for t in "$@"; do
        create_topic "$t" "$partitions"
    done
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        deps) cmd_deps "$@" ;;
        install) cmd_install "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        topics) cmd_topics "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            printf '\n[services] ERROR: unknown command %s\n' "${cmd:-(none)}" >&2
            exit 2
            ;;
    esac
}

main "$@"
