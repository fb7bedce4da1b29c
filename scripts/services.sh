#!/usr/bin/env bash
# Local services for clickpipe development, tests and CI: Redis and an Apache Kafka broker (KRaft).
#
#   scripts/services.sh deps              install the Debian packages the Rust build needs (if missing)
#   scripts/services.sh install [WHAT...] install what is missing (WHAT: redis, kafka, chromium,
#                                         schemathesis, osmem, moto, compose; default redis and
#                                         kafka).
#                                         kafka: the broker's jars (version pinned in
#                                         scripts/kafka/pom.xml) resolved from Maven Central into
#                                         $CLICKPIPE_TOOLS/kafka-<version> (~45 MB, ~30 s the first
#                                         time), plus a JDK and Maven from Debian when missing.
#                                         chromium (Debian) and schemathesis (PyPI, in its own
#                                         virtualenv) are used by the admin API tests; osmem (PyPI
#                                         osmem-server, an in-memory OpenSearch-compatible server) by
#                                         the ingest tests; moto (PyPI moto[server], S3 and DynamoDB
#                                         on loopback, with duckdb to read Parquet back) by the
#                                         persistence tests; compose (Debian docker-compose, for
#                                         `docker-compose config`) by the deployment tests.
#   scripts/services.sh start [--fresh]   start Redis and Kafka (installing them if missing), wait until
#                                         both answer, create the default topics. Kafka's storage is
#                                         formatted on first use (data in $CLICKPIPE_STATE/kafka).
#                                         --fresh: stop Kafka if running and delete its data first.
#   scripts/services.sh stop              stop both
#   scripts/services.sh status            print whether each is up (exit 0 if both are, 3 if not)
#   scripts/services.sh topics NAME...    create more topics (PARTITIONS, default 4), existing ones are kept
#   scripts/services.sh kafka-run DIR PORT CONTROLLER_PORT
#                                         run a single-node Kafka broker+controller in the foreground
#                                         on 127.0.0.1:PORT with its data in DIR (formatted when new);
#                                         what `start` runs in the background, and what the tests run
#                                         to own a broker they can stop and kill.
#
# Environment:
#   CLICKPIPE_TOOLS       where Kafka's jars and the tools live  default: $HOME/.cache/clickpipe
#   CLICKPIPE_STATE       pid files, logs, Kafka's data          default: <repo>/.services
#   CLICKPIPE_REDIS_PORT  Redis port on 127.0.0.1                default: 6379
#   CLICKPIPE_KAFKA_PORT  Kafka port on 127.0.0.1                default: 9092
#                         (its KRaft controller listens on the next port)
#   CLICKPIPE_KAFKA_HEAP  the broker JVM's heap options          default: -Xms512m -Xmx1g
#   CLICKPIPE_START_TIMEOUT  seconds to wait for each service    default: 60
#   PARTITIONS            partitions for `topics`                default: 4
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${CLICKPIPE_TOOLS:-$HOME/.cache/clickpipe}"
STATE="${CLICKPIPE_STATE:-$REPO_ROOT/.services}"
HOST="127.0.0.1"
REDIS_PORT="${CLICKPIPE_REDIS_PORT:-6379}"
KAFKA_PORT="${CLICKPIPE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
TIMEOUT="${CLICKPIPE_START_TIMEOUT:-60}"
[[ "$STATE" == /* ]] || STATE="$PWD/$STATE"
[[ "$TOOLS" == /* ]] || TOOLS="$PWD/$TOOLS"
SCHEMATHESIS_VERSION="4.32.5"
SCHEMATHESIS_VENV="$TOOLS/schemathesis"
OSMEM_VERSION="0.1.6"
OSMEM_VENV="$TOOLS/osmem"
OSMEM="$TOOLS/bin/osmem-server"
MOTO_VERSION="5.2.5"
DUCKDB_VERSION="2.0.1"
MOTO_VENV="$TOOLS/moto"

# Kafka: the version is the one pinned in the pom (one place to bump it).
KAFKA_SRC="$REPO_ROOT/scripts/kafka"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SRC/pom.xml")"
[[ -n "$KAFKA_VERSION" ]] || {
    echo "[services] ERROR: no <kafka.version> in $KAFKA_SRC/pom.xml" >&2
    exit 1
}
KAFKA_HOME="$TOOLS/kafka-$KAFKA_VERSION"
KAFKA_HEAP="${CLICKPIPE_KAFKA_HEAP:--Xms512m -Xmx1g}"
KAFKA_DATA="$STATE/kafka"
KAFKA_PID="$STATE/kafka.pid"
KAFKA_LOG="$STATE/kafka.log"

REDIS_PID="$STATE/redis.pid"
REDIS_LOG="$STATE/redis.log"

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

# The stamp names what the installed tree was made from: the pom and the admin tool's source.
install_moto() {
    local stamp="$MOTO_VENV/.installed-$MOTO_VERSION-$DUCKDB_VERSION"
    if [[ -f "$stamp" && -x "$MOTO_VENV/bin/moto_server" ]]; then
        return
    fi
    apt_install python3 python3-venv
    log "installing moto[server] $MOTO_VERSION and duckdb $DUCKDB_VERSION into $MOTO_VENV"
    rm -rf "$MOTO_VENV"
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" "duckdb==$DUCKDB_VERSION"
    [[ -x "$MOTO_VENV/bin/moto_server" ]] || die "moto install failed"
    touch "$stamp"
}

kafka_stamp() { cat "$KAFKA_SRC/pom.xml" "$KAFKA_SRC/KafkaAdmin.java" | sha256sum | cut -d' ' -f1; }

kafka_installed() {
    [[ -f "$KAFKA_HOME/.stamp" ]] && [[ "$(cat "$KAFKA_HOME/.stamp")" == "$(kafka_stamp)" ]]
}

install_kafka() {
    kafka_installed && return 0
    # Java 17+ runs the broker; javac compiles the admin tool; Maven resolves the jars.
    command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
    command -v mvn >/dev/null 2>&1 || apt_install maven
    command -v flock >/dev/null 2>&1 || die "flock (util-linux) is needed"
    mkdir -p "$TOOLS"
    # One install at a time (CI and a test script may ask at once): the others wait, then find it.
    exec 9>"$TOOLS/.kafka-install.lock"
    flock 9
    if ! kafka_installed; then
        local t0=$SECONDS tmp="$KAFKA_HOME.tmp"
        log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
        rm -rf "$tmp"
        mkdir -p "$tmp"
        # Maven's own repository stays under $TOOLS too: one cache to keep between CI runs.
        mvn -q -B -f "$KAFKA_SRC/pom.xml" -Dmaven.repo.local="$TOOLS/m2" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" ||
            die "resolving Kafka $KAFKA_VERSION from Maven Central failed (see the output above)"
        javac -d "$tmp/classes" -cp "$tmp/libs/*" "$KAFKA_SRC/KafkaAdmin.java" ||
            die "compiling scripts/kafka/KafkaAdmin.java failed"
        kafka_stamp >"$tmp/.stamp"
        rm -rf "$KAFKA_HOME"
        mv "$tmp" "$KAFKA_HOME"
        log "kafka: installed in $((SECONDS - t0)) s ($(du -sh "$KAFKA_HOME" | cut -f1), $(ls "$KAFKA_HOME/libs" | wc -l) jars)"
    fi
    flock -u 9
    exec 9>&-
}

cmd_install() {
    local what=("$@")
    [[ ${#what[@]} -eq 0 ]] && what=(redis kafka)
    local w
    for w in "${what[@]}"; do
        case "$w" in
            redis) install_redis ;;
            kafka) install_kafka ;;
            chromium) install_chromium ;;
            schemathesis) install_schemathesis ;;
            osmem) install_osmem ;;
            moto) install_moto ;;
            compose) command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose ;;
            *) die "install: unknown component '$w' (redis, kafka, chromium, schemathesis, osmem, moto, compose)" ;;
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

kafka_up() { tcp_open "$KAFKA_PORT"; }

# kafka_admin TIMEOUT [NAME:PARTITIONS...]: waits until the broker answers metadata requests, then
# creates the topics that are missing and waits for their leaders (scripts/kafka/KafkaAdmin.java).
kafka_admin() {
    local timeout=$1
    shift
    java -Xshare:auto -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" \
        -cp "$KAFKA_HOME/classes:$KAFKA_HOME/libs/*" KafkaAdmin "$HOST:$KAFKA_PORT" "$timeout" "$@" |
        sed 's/^/[services] /'
    return "${PIPESTATUS[0]}"
}

# kafka_run DIR PORT CONTROLLER_PORT: a single-node KRaft broker+controller in the foreground (exec).
cmd_kafka_run() {
    [[ $# -eq 3 ]] || die "usage: scripts/services.sh kafka-run DIR PORT CONTROLLER_PORT"
    local dir=$1 port=$2 cport=$3
    [[ "$dir" == /* ]] || dir="$PWD/$dir"
    install_kafka
    mkdir -p "$dir/data"
    # Written every start (ports may change); the data stays. Replication 1 everywhere: one node.
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$cport
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A group's first member starts at once instead of waiting 3 s for others (tests, demo).
group.initial.rebalance.delay.ms=0
PROPS
    local java_opts=(-server $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties")
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        # A cluster id is 16 random bytes in URL-safe base64 without padding.
        # Like Kafka's own Uuid.randomUuid, never one that starts with "-" (an option to a parser).
        local id="-"
        while [[ "$id" == -* ]]; do
            id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        done
        java -Xshare:auto -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" \
            -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format --cluster-id="$id" \
            --config="$dir/server.properties" >/dev/null ||
            die "formatting Kafka storage in $dir/data failed"
    fi
    exec java "${java_opts[@]}" -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}

stop_kafka() {
    if ! pid_alive "$KAFKA_PID" kafka.Kafka; then
        rm -f "$KAFKA_PID"
        if kafka_up; then
            log "kafka: port $KAFKA_PORT is in use but not by a broker this script started; leaving it"
        else
            log "kafka: not running"
        fi
        return 0
    fi
    local pid
    pid="$(cat "$KAFKA_PID")"
    kill "$pid" 2>/dev/null || true
    # A controlled shutdown takes a few seconds.
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "kafka: pid $pid did not exit 30 s after SIGTERM; sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$KAFKA_PID"
    log "kafka: stopped (pid $pid)"
}

start_kafka() {
    local fresh=$1
    if pid_alive "$KAFKA_PID" kafka.Kafka; then
        if [[ $fresh -eq 1 ]]; then
            log "kafka: --fresh: stopping the running broker to delete its data"
            stop_kafka
        elif kafka_up; then
            log "kafka: already running on $HOST:$KAFKA_PORT (pid $(cat "$KAFKA_PID"))"
            return 0
        fi
        # else: alive but not listening yet (still starting): fall through to the wait below
    elif kafka_up; then
        [[ $fresh -eq 1 ]] && die "--fresh: port $KAFKA_PORT is served by a broker this script did not start; stop it first"
        log "kafka: something already listens on $HOST:$KAFKA_PORT (not started by this script); using it"
        return 0
    fi

    if ! pid_alive "$KAFKA_PID" kafka.Kafka; then
        if [[ $fresh -eq 1 ]]; then
            rm -rf "$KAFKA_DATA"
            log "kafka: --fresh: deleted $KAFKA_DATA"
        fi
        install_kafka
        # Own session (setsid) so the broker outlives the calling shell; stdio detached so callers
        # that capture our output do not wait for it. The shell writes its pid, then becomes the
        # broker (kafka-run ends in exec), so the pid file names the JVM.
        rm -f "$KAFKA_PID"
        printf '\n===== %s kafka starting on %s:%s =====\n' "$(date -u +%FT%TZ)" "$HOST" "$KAFKA_PORT" >>"$KAFKA_LOG"
        # shellcheck disable=SC2016 # expanded by the inner bash
        setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
            "${BASH_SOURCE[0]}" kafka-run "$KAFKA_DATA" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" \
            </dev/null >>"$KAFKA_LOG" 2>&1 &
    fi

    local pid="" t0=$SECONDS deadline=$((SECONDS + TIMEOUT))
    until [[ -s "$KAFKA_PID" ]] && pid="$(cat "$KAFKA_PID")" && [[ "$pid" =~ ^[0-9]+$ ]]; do
        ((SECONDS < deadline)) || die "kafka did not start (no pid file $KAFKA_PID after ${TIMEOUT}s)"
        sleep 0.05
    done
    until kafka_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$KAFKA_PID"
            show_log_tail "$KAFKA_LOG"
            die "kafka exited during startup (see $KAFKA_LOG)"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$KAFKA_LOG"
            kill "$pid" 2>/dev/null || true
            rm -f "$KAFKA_PID"
            die "kafka did not listen on $HOST:$KAFKA_PORT within ${TIMEOUT}s; stopped it (pid $pid; see $KAFKA_LOG)"
        fi
        sleep 0.1
    done
    log "kafka: listening on $HOST:$KAFKA_PORT after $((SECONDS - t0)) s (pid $pid, data $KAFKA_DATA, log $KAFKA_LOG)"
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
    install_kafka
    start_redis
    start_kafka "$fresh"
    # Listening is not serving: wait for metadata answers, then make the default topics.
    kafka_admin "$TIMEOUT" "${DEFAULT_TOPICS[@]}" || {
        show_log_tail "$KAFKA_LOG"
        die "kafka on $HOST:$KAFKA_PORT is not serving (see $KAFKA_LOG)"
    }
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
    stop_kafka
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
    if kafka_up; then
        if pid_alive "$KAFKA_PID" kafka.Kafka; then
            log "kafka: up on $HOST:$KAFKA_PORT (pid $(cat "$KAFKA_PID"), data $KAFKA_DATA)"
        else
            log "kafka: up on $HOST:$KAFKA_PORT (not started by this script)"
        fi
    else
        log "kafka: down ($HOST:$KAFKA_PORT)"
        ok=3
    fi
    return $ok
}

cmd_topics() {
    [[ $# -gt 0 ]] || die "usage: scripts/services.sh topics NAME..."
    local partitions="${PARTITIONS:-4}"
    [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, got '$partitions'"
    kafka_up || die "no broker on $HOST:$KAFKA_PORT (run: scripts/services.sh start)"
    install_kafka
    local specs=() t
    for t in "$@"; do
        specs+=("$t:$partitions")
    done
    kafka_admin "$TIMEOUT" "${specs[@]}"
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
        kafka-run) cmd_kafka_run "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            printf '\n[services] ERROR: unknown command %s\n' "${cmd:-(none)}" >&2
            exit 2
            ;;
    esac
}

main "$@"
