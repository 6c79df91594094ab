#!/bin/sh
# bench/profile.sh: where the nginx worker's time goes under benchmark B
# (or D), so that optimisation work starts from facts.
#
#   sh bench/profile.sh [single|batch]
#
#   single (default)  B's load: unique signed single-message deliveries,
#                     wrk -t1 -c16 for PROFILE_SECONDS (default 5)
#   batch             D's load: 1000-update deliveries one at a time
#   memcached         E's load: B's, with memcached state (a local
#                     memcached on the load generator's CPU); the worker's
#                     thread-pool threads are sampled too
#
# With perf (apt linux-perf) the one worker is sampled with
# `perf record -g --call-graph dwarf`; where perf cannot sample here, the
# fallback is valgrind --tool=callgrind on nginx -g 'daemon off;
# master_process off;' with a short, bounded load.  PROFILE_TOOL=perf or
# PROFILE_TOOL=callgrind forces one.  Prints the top functions by own time
# (self), by inclusive time (children), and by shared object; the raw
# data stays in bench/out/profile/.

set -u

WORK=$(cd "$(dirname "$0")" && pwd)/out/profile
. "$(dirname "$0")/lib.sh"

MODE=${1:-single}
SECONDS_=${PROFILE_SECONDS:-5}
TOOL=${PROFILE_TOOL:-}
PERF_PID=""

case $MODE in
    single|batch|memcached) ;;
    *) echo "usage: sh bench/profile.sh [single|batch|memcached]" >&2; exit 2 ;;
esac

MC_PID=""
cleanup() {
    if [ -n "$PERF_PID" ]; then stop_pid "$PERF_PID" INT; PERF_PID=""; fi
    stop_all
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT TERM HUP

if [ "$HAVE_MODULE" != 1 ]; then
    warn "$MODULE is not built: run make first"
    exit 1
fi

need_load_tools

perf_works() {
    command -v perf >/dev/null 2>&1 || return 1
    perf record -q -e cpu-clock -o /dev/null -- true >/dev/null 2>&1
}
if [ -z "$TOOL" ]; then
    if ! perf_works; then
        log "installing linux-perf (apt)"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
            --no-install-recommends linux-perf >/dev/null 2>&1
    fi
    if perf_works; then TOOL=perf; else TOOL=callgrind; fi
fi
[ "$TOOL" = callgrind ] && need_apt valgrind valgrind

rm -rf "$WORK"
mkdir -p "$WORK"
snapshot_module
SECRET=$WORK/secret
new_secret "$SECRET"
TAG=$(run_tag)

if [ "$TOOL" = perf ]; then
    NREQ=${PROFILE_REQUESTS:-250000}; NBATCH=${PROFILE_BATCHES:-100}
else
    NREQ=3000; NBATCH=5          # callgrind runs ~50x slower
fi
if [ "$MODE" != batch ]; then
    log "generating $NREQ signed single-message deliveries"
    node "$BENCH/gen.js" single "$SECRET" "$WORK/req.txt" "$NREQ" "q$TAG" || exit 1
else
    log "generating $NBATCH deliveries of 1000 updates"
    node "$BENCH/gen.js" batch "$SECRET" "$WORK/req.txt" "$NBATCH" 1000 "r$TAG" || exit 1
fi

load() {   # the load, from the other core; bounded in time
    if [ "$MODE" != batch ]; then
        if [ "$TOOL" = perf ]; then c=16; d=$SECONDS_; else c=2; d=20; fi
        on_cpu "$LOAD_CPU" timeout $((d + 60)) wrk -t1 -c$c -d${d}s --timeout 10s \
            -s "$BENCH/wrk/replay.lua" "http://127.0.0.1:$PORT_B/webhook" \
            -- "$WORK/req.txt" 1 "$NREQ" stop profile | grep '^RESULT'
    else
        on_cpu "$LOAD_CPU" timeout 300 node "$BENCH/batch-client.js" \
            "http://127.0.0.1:$PORT_B/webhook-mem" "$WORK/req.txt" 1000 profile 120
    fi
}

if [ "$MODE" = memcached ]; then
    [ "$TOOL" = perf ] || { warn "memcached mode needs perf"; exit 1; }
    need_apt memcached memcached
    start_memcached "$PORT_M" "$WORK/memcached.log"
    BENCH_STATE="memcached 127.0.0.1:$PORT_M"
    export BENCH_STATE
fi

if [ "$TOOL" = perf ]; then
    start_nginx "$SECRET" "thread_pool default threads=${BENCH_THREADS:-16};" \
        || exit 1
    W=$(worker_pid)
    log "perf: sampling nginx worker $W (CPU ${SERVER_CPU:-any}); load on CPU ${LOAD_CPU:-any}"
    perf record -q -F 1999 --call-graph dwarf,16384 -p "$W" -o "$WORK/perf.data" \
        >"$WORK/perf-record.log" 2>&1 &
    PERF_PID=$!
    sleep 0.5
    load
    stop_pid "$PERF_PID" INT
    PERF_PID=""
    stop_all

    perf_tables "$WORK/perf.data" "nginx worker, $MODE load"
    echo "raw data: bench/out/profile/perf.data (perf report -i ...)"
else
    # one process, no master: callgrind follows everything the worker does
    write_nginx_conf "$SECRET" 0
    $NGX_BIN -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" || exit 1
    if [ -n "$SERVER_CPU" ]; then PIN="taskset -c $SERVER_CPU"; else PIN=""; fi
    $PIN valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
        $NGX_BIN -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
        -g 'daemon off; master_process off;' >"$WORK/valgrind.log" 2>&1 &
    NGX_PID=$!
    i=0
    while [ $i -lt 6 ] && ! wait_port "$PORT_B"; do i=$((i + 1)); done
    log "callgrind: nginx pid $NGX_PID, bounded load"
    load
    stop_pid "$NGX_PID" QUIT
    NGX_PID=""
    echo ""
    echo "=== top functions (callgrind, instructions, self) ==="
    callgrind_annotate "$WORK/callgrind.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -40
    echo ""
    echo "=== including callees ==="
    callgrind_annotate --inclusive=yes "$WORK/callgrind.out" 2>/dev/null \
        | sed -n '/^Ir/,$p' | head -40
fi
exit 0
