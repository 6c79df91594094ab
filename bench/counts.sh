#!/bin/sh
# bench/counts.sh: what one delivery costs E's nginx worker in system
# calls and context switches, counted, not timed.
#
#   sh bench/counts.sh [MODULE.so] [THREADS]
#
# E's setup (bench/run.sh: one worker on the server CPU, a local memcached
# and wrk on the other, thread_pool default threads=THREADS, 16 by
# default), a 1 s warm-up, then COUNTS_SECONDS (3) of load while perf's
# syscall tracepoints count every call of the worker and its threads.
# Prints, per delivery, each call that happened and the context switches,
# and the TCP segments with data that the worker's connections sent to
# memcached (ss's data_segs_out, before and after).
# Counts do not drift with the host's speed as times do (bench/README.md,
# "Comparing builds"): two builds whose counts differ differ for sure, and
# bench/compare.sh then tells whether the difference shows in time.
# Needs perf with syscall tracepoints (apt linux-perf); the data stays in
# bench/out/counts/.

set -u

WORK=$(cd "$(dirname "$0")" && pwd)/out/counts
. "$(dirname "$0")/lib.sh"
OUT=$WORK                           # run_wrk's files

trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT TERM HUP

SO=${1:-$MODULE}
[ -f "$SO" ] || { warn "$SO: no such file: run make first"; exit 1; }

need_load_tools
need_apt memcached memcached
if ! perf list 2>/dev/null | grep -q 'syscalls:sys_enter_sendto '; then
    warn "perf with syscall tracepoints is needed (apt linux-perf)"
    exit 1
fi

rm -rf "$WORK"
mkdir -p "$WORK"
cp "$SO" "$WORK/module.so"          # nginx maps the file it loads
MODULE_LOAD=$WORK/module.so
HAVE_MODULE=1

NREQ=200000
CONNS=${BENCH_CONNECTIONS:-16}          # run_wrk's
SECRET=$WORK/secret
new_secret "$SECRET"
node "$BENCH/gen.js" single "$SECRET" "$WORK/single.txt" "$NREQ" \
    "n$(run_tag)" >/dev/null || { warn "generator failed"; exit 1; }

start_e "$SECRET" "${2:-16}" || { warn "nginx did not start"; exit 1; }
run_wrk warm "http://127.0.0.1:$PORT_B/webhook" 1 30000 stop 1 "$NGX_PID" \
    >/dev/null

EVENTS=$(perf list 2>/dev/null | awk '
    /syscalls:sys_enter_(sendto|sendmsg|recvfrom|recvmsg|read|readv|write|writev|poll|ppoll|epoll_wait|futex|accept4|close|setsockopt|getsockopt|ioctl|sched_yield|getsockname|getpeername|prlimit64) / {
        print $1 }' | paste -sd, -)
SEGS0=$(mc_segs)
perf stat -x, -o "$WORK/perf.txt" \
    -e "$EVENTS,raw_syscalls:sys_enter,context-switches" \
    -p "$(worker_pid)" >/dev/null 2>&1 &
PERF=$!
run_wrk E "http://127.0.0.1:$PORT_B/webhook" 30001 "$NREQ" stop \
    "${COUNTS_SECONDS:-3}" "$NGX_PID" >/dev/null
sleep 1                             # the last commits
kill -INT "$PERF" 2>/dev/null
wait "$PERF" 2>/dev/null
SEGS1=$(mc_segs)

n=$(result_field E requests)
echo "$SO, threads=${2:-16}: $n deliveries," \
    "$(result_field E rps) req/s, $(result_field E other_cpu_pct)% other"
awk -F, -v n="${n:-0}" '
    $1 + 0 > 0 && n > 0 {
        name = $3; sub(/^syscalls:sys_enter_/, "", name)
        sub(/^raw_syscalls:sys_enter$/, "system calls, all", name)
        printf "  %-22s %7.3f per delivery\n", name, $1 / n }' "$WORK/perf.txt"
awk -v n="${n:-0}" -v a="$SEGS0" -v b="$SEGS1" 'BEGIN {
    if (n > 0 && b > a)
        printf "  %-22s %7.3f per delivery\n", "TCP segments to mc",
               (b - a) / n }'
