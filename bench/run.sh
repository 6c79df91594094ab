#!/bin/sh
# bench/run.sh: throughput and latency of the meta_webhook endpoint
# (what `make bench` runs; see bench/README.md).
#
#   A  nginx's own "return 200;" on the same POST requests (baseline)
#   B  meta_webhook with its built-in 200 and shm state, fed unique,
#      correctly signed single-message deliveries
#   C  a typical Express webhook (HMAC over the raw body, constant-time
#      compare, JSON.parse, in-memory dedupe), one node process
#   D  one 1000-update batch, POSTed N times with fresh ids: us/update
#   E  B with memcached state (one local memcached, on the load
#      generator's CPU, as another machine would be)
#
# One nginx worker, load from wrk in a separate process on 127.0.0.1.
# A benchmark, not a test: it prints numbers and exits 0 when everything
# ran, whatever the numbers are (1 when something could not run).  Knobs (environment):
#   BENCH_DURATION=5       seconds per measured target
#   BENCH_WARMUP=2         seconds of warm-up for B and C (own ids)
#   BENCH_CONNECTIONS=16   wrk connections (one wrk thread)
#   BENCH_REQUESTS=300000  unique signed deliveries generated for A/B/C
#   BENCH_BATCHES=100      1000-update deliveries per D variant
#   BENCH_UPDATES=1000     updates per D delivery
#   BENCH_PORT=18180       ports BENCH_PORT+1 .. +4 are used
#   BENCH_SERVER_CPU=0 BENCH_LOAD_CPU=1   taskset pinning ("" to disable)
#   BENCH_TARGETS="A B C D E"  which targets to run (A runs whenever B or E
#                          does: the ratios need it)
#   BENCH_MC_ARGS=""       more meta_webhook_state memcached parameters for
#                          E, e.g. "protocol=binary"
#   BENCH_QUIET_WAIT=20    before each target, wait up to this many seconds
#                          for other work on the machine to stop (0: don't)
#   BENCH_SWEEP="64 128"   after E, A and E again at these connection
#                          counts, BENCH_SWEEP_SECONDS (3) each ("": none)
#   BENCH_SWEEP_REQUESTS=200000  unique deliveries per E of the sweep

set -u

WORK=$(cd "$(dirname "$0")" && pwd)/out
. "$(dirname "$0")/lib.sh"

DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-2}
A_AROUND=${BENCH_A_AROUND:-3}     # A just before and after E (seconds each)
CONNS=${BENCH_CONNECTIONS:-16}
NREQ=${BENCH_REQUESTS:-300000}
NBATCH=${BENCH_BATCHES:-100}
UPDATES=${BENCH_UPDATES:-1000}
WARM_LAST=30000                   # lines 1..WARM_LAST: warm-up ids
QUIET=${BENCH_QUIET_WAIT:-20}
SWEEP=${BENCH_SWEEP-64 128}
SWEEP_SECS=${BENCH_SWEEP_SECONDS:-3}
SWEEP_NREQ=${BENCH_SWEEP_REQUESTS:-200000}
TARGETS=" ${BENCH_TARGETS:-A B C D E} "
want() { case $TARGETS in *" $1 "*) return 0 ;; esac; return 1; }

trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT TERM HUP

need_load_tools
need_apt memcached memcached
command -v npm >/dev/null 2>&1 || need_apt npm npm

if [ ! -d "$BENCH/express/node_modules/express" ]; then
    log "installing express into bench/express/node_modules (npm)"
    (cd "$BENCH/express" && npm install --no-audit --no-fund --loglevel=error) \
        || { warn "npm install failed"; exit 1; }
fi

# a fresh bench/out (keeping bench/profile.sh's results)
mkdir -p "$OUT"
find "$OUT" -mindepth 1 -maxdepth 1 ! -name profile -exec rm -rf {} +
RESULTS=$OUT/results.txt
MODULE_INFO="not built"
snapshot_module

# ------------------------------------------------------------ machine

CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
NGX_VER=$($NGX_BIN -v 2>&1 | sed 's/.*version: //')
NODE_VER=$(node -v)
EXPRESS_VER=$(node -p "require('$BENCH/express/node_modules/express/package.json').version")
WRK_VER=$(wrk -v 2>&1 | head -1 | awk '{ print $2 }')
{
    echo "# nginx-meta-webhook benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $NCPU cores ($CPU_MODEL), $MEM, $(uname -sr)"
    echo "software: nginx $NGX_VER, node $NODE_VER, express $EXPRESS_VER, wrk $WRK_VER"
    echo "module: build/ngx_http_meta_webhook_module.so ($MODULE_INFO)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine skews the numbers)"
} >"$RESULTS"
cat "$RESULTS"
if [ -n "$SERVER_CPU" ]; then
    log "pinning: server (nginx master+worker, or node) on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU (taskset)"
    echo "pinning: server on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU (taskset)" >>"$RESULTS"
else
    log "pinning: none (fewer than 2 CPUs)"
fi
echo "load: wrk -t1 -c$CONNS -d${DURATION}s --latency (Lua replay of pre-signed requests)" >>"$RESULTS"

# ----------------------------------------------------------- requests

SECRET=$OUT/secret
new_secret "$SECRET"
TAG=$(run_tag)

log "generating $NREQ signed single-message deliveries (run tag $TAG)"
t0=$(date +%s)
node "$BENCH/gen.js" single "$SECRET" "$OUT/single.txt" "$NREQ" "s$TAG" \
    || { warn "generator failed"; exit 1; }
node "$BENCH/gen.js" single "$SECRET" "$OUT/probe.txt" 4 "p$TAG" || exit 1
if want E && [ -n "$SWEEP" ]; then
    nsweep=$(echo $SWEEP | wc -w)
    log "generating $nsweep x $SWEEP_NREQ deliveries for E's connection sweep ($SWEEP)"
    BENCH_GEN_FIRST=$NREQ node "$BENCH/gen.js" single "$SECRET" "$OUT/sweep-requests.txt" \
        $((nsweep * SWEEP_NREQ)) "w$TAG" || { warn "generator failed"; exit 1; }
fi
log "generating 2 x $NBATCH deliveries of $UPDATES updates"
node "$BENCH/gen.js" batch "$SECRET" "$OUT/batch-file.txt" "$NBATCH" "$UPDATES" "f$TAG" || exit 1
node "$BENCH/gen.js" batch "$SECRET" "$OUT/batch-mem.txt" "$NBATCH" "$UPDATES" "m$TAG" || exit 1
log "generated in $(( $(date +%s) - t0 )) s: $(du -sh "$OUT" | cut -f1) in bench/out"

# ---------------------------------------------------------------- runs

run_batches() {  # run_batches VARIANT URL FILE SERVER_PID: benchmark D
    f=$OUT/batch-D-$1.txt
    t0=$(proc_ticks "$4")
    on_cpu "$LOAD_CPU" timeout 300 node "$BENCH/batch-client.js" \
        "$2" "$3" "$UPDATES" "D-$1" 120 >"$f" 2>&1 \
        || { warn "batch client ($1) failed"; NOT_RUN="$NOT_RUN D-$1"; }
    t1=$(proc_ticks "$4")
    # the server's own CPU time per update (the client's time excluded)
    upd=$(sed -n 's/^RESULT .* updates=\([0-9]*\).*/\1/p' "$f")
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v u="${upd:-0}" \
        'BEGIN { if (u > 0) printf "%.2f", t / hz * 1e6 / u; else print "?" }')
    sed -i "s/^RESULT .*/& server_cpu_us_per_update=$cpu/" "$f"
    cat "$f"
}

A_RPS=""; B_RPS=""; C_RPS=""
NOT_RUN=""                        # what could not run: exit 1 at the end
[ "$HAVE_MODULE" = 1 ] || NOT_RUN="B D"

log ""
log "=== starting nginx (worker_processes 1) ==="
if ! want A && ! want B && ! want E; then
    # A is the baseline of B/A and of E/A: it runs whenever either does
    :
elif ! start_nginx "$SECRET"; then
    NOT_RUN="$NOT_RUN A B"
else
    log "nginx pid $NGX_PID: A on :$PORT_A$( [ "$HAVE_MODULE" = 1 ] && echo ", B/D on :$PORT_B")"

    log ""
    log "=== A: nginx 'return 200;' (same POST requests, ids cycle) ==="
    wait_quiet "$QUIET"
    run_wrk A "http://127.0.0.1:$PORT_A/webhook" 1 100000 cycle "$DURATION" "$NGX_PID"

    if [ "$HAVE_MODULE" = 1 ] && want B; then
        log ""
        log "=== B: meta_webhook, built-in 200, shm state ==="
        log "probe: signed delivery -> $(post_line "http://127.0.0.1:$PORT_B/webhook" "$OUT/probe.txt" 1)" \
            "(expect 200), same again -> $(post_line "http://127.0.0.1:$PORT_B/webhook" "$OUT/probe.txt" 1)" \
            "(duplicate, expect 200), wrong signature -> $(post_line "http://127.0.0.1:$PORT_B/webhook" "$OUT/probe.txt" 2 bad) (expect 403)"
        log "warm-up ${WARMUP}s on ids 1..$WARM_LAST"
        run_wrk Bwarm "http://127.0.0.1:$PORT_B/webhook" 1 "$WARM_LAST" stop "$WARMUP" "$NGX_PID" >/dev/null
        wait_quiet "$QUIET"
        run_wrk B "http://127.0.0.1:$PORT_B/webhook" $((WARM_LAST + 1)) "$NREQ" stop "$DURATION" "$NGX_PID"
        if [ "$WITH_STATUS" = 1 ]; then
            log "status after B: $(curl -s -m 5 "http://127.0.0.1:$PORT_B/status" | head -c 600)"
        fi
    else
        log ""
        log "=== B: skipped: $MODULE not built yet ==="
    fi
fi
stop_all

if [ "$HAVE_MODULE" = 1 ] && want D; then
    log ""
    log "=== D: $NBATCH deliveries of $UPDATES updates each, one at a time (fresh nginx, empty zone) ==="
    if ! start_nginx "$SECRET"; then
        NOT_RUN="$NOT_RUN D"
    else
        log "probe: signed delivery -> $(post_line "http://127.0.0.1:$PORT_B/webhook" "$OUT/probe.txt" 3) (expect 200)"
        wait_quiet "$QUIET"
        run_batches file "http://127.0.0.1:$PORT_B/webhook" "$OUT/batch-file.txt" "$NGX_PID"
        run_batches mem "http://127.0.0.1:$PORT_B/webhook-mem" "$OUT/batch-mem.txt" "$NGX_PID"
        if [ "$WITH_STATUS" = 1 ]; then
            log "status after D: $(curl -s -m 5 "http://127.0.0.1:$PORT_B/status" | head -c 600)"
        fi
    fi
    stop_all
fi

if [ "$HAVE_MODULE" = 1 ] && want E; then
    log ""
    log "=== E: meta_webhook, built-in 200, memcached state ==="
    if ! start_e "$SECRET" "${BENCH_THREADS:-16}"; then
        NOT_RUN="$NOT_RUN E"
    else
        log "probe: signed delivery -> $(post_line "http://127.0.0.1:$PORT_B/webhook" "$OUT/probe.txt" 4)" \
            "(expect 200), same again -> $(post_line "http://127.0.0.1:$PORT_B/webhook" "$OUT/probe.txt" 4) (duplicate, expect 200)"
        # memcached's own count of the commands it served
        mc_cmds() { perl -MIO::Socket::INET -e '
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ARGV[0]",
                                          Timeout => 2) or exit 1;
            print $s "stats\r\n"; my $n = 0;
            while (<$s>) { last if /^END/;
                $n += $2 if /^STAT (cmd_get|cmd_set|cmd_touch|(?:incr|decr|delete)_(?:hits|misses)) (\d+)/ }
            print $n' "$PORT_M"; }
        log "warm-up ${WARMUP}s on ids 1..$WARM_LAST"
        run_wrk Ewarm "http://127.0.0.1:$PORT_B/webhook" 1 "$WARM_LAST" stop "$WARMUP" "$NGX_PID" >/dev/null
        wait_quiet "$QUIET"
        # A again, just before and just after E, on E's nginx: the host's
        # speed drifts over the minutes since A ran (bench/README.md), and
        # E/A is the target
        run_wrk A-before-E "http://127.0.0.1:$PORT_A/webhook" 1 100000 cycle "$A_AROUND" "$NGX_PID" >/dev/null
        cmd0=$(mc_cmds)
        seg0=$(mc_segs)
        # the worker's sends to memcached (send: sendto) and its waits for
        # memcached's answers (libmemcached polls; the event loop uses
        # epoll), counted by perf's syscall tracepoints when it has them;
        # and what handing rounds to the pool's threads and back costs:
        # the futex calls (the pool's mutex and condition) and the
        # worker's context switches.  Counts, unlike times, do not drift
        # with the host's speed.
        PERF_STAT=""
        if command -v perf >/dev/null 2>&1 \
            && perf list 2>/dev/null | grep -q 'syscalls:sys_enter_poll '; then
            perf stat -x, -o "$OUT/e-syscalls.txt" \
                -e syscalls:sys_enter_sendto,syscalls:sys_enter_poll,syscalls:sys_enter_futex,context-switches \
                -p "$(worker_pid)" >/dev/null 2>&1 &
            PERF_STAT=$!
        fi
        run_wrk E "http://127.0.0.1:$PORT_B/webhook" $((WARM_LAST + 1)) "$NREQ" stop "$DURATION" "$NGX_PID"
        sleep 1     # the last commits, posted from the log phase
        if [ -n "$PERF_STAT" ]; then
            kill -INT "$PERF_STAT" 2>/dev/null; wait "$PERF_STAT" 2>/dev/null
        fi
        cmd1=$(mc_cmds)
        seg1=$(mc_segs)
        run_wrk A-after-E "http://127.0.0.1:$PORT_A/webhook" 1 100000 cycle "$A_AROUND" "$NGX_PID" >/dev/null
        # The sweep.  A round of E holds what the connections sent while
        # the one before it was out: with 16 of them, about six deliveries,
        # which share what a round costs whatever its size (the hand-offs
        # to the pool and back, the wake-ups of memcached and of the
        # thread, a TCP segment each way), and the worker also idles at
        # times while both its rounds wait.  With more connections rounds
        # grow, while nginx's "return 200;" costs the same at any count:
        # A and E again on this nginx at each count, A first, E on
        # deliveries of its own.
        if [ -n "$SWEEP" ]; then
            log ""
            log "--- A and E at more connections: $SWEEP (${SWEEP_SECS}s each) ---"
            wait_quiet "$QUIET"
            CONNS16=$CONNS
            sk=0
            : >"$OUT/sweep.txt"
            for sc in $SWEEP; do
                CONNS=$sc
                run_wrk "A-c$sc" "http://127.0.0.1:$PORT_A/webhook" 1 100000 cycle "$SWEEP_SECS" "$NGX_PID" >/dev/null
                s0=$(mc_segs)
                REPLAY_FILE=$OUT/sweep-requests.txt \
                    run_wrk "E-c$sc" "http://127.0.0.1:$PORT_B/webhook" \
                        $((sk * SWEEP_NREQ + 1)) $(((sk + 1) * SWEEP_NREQ)) stop "$SWEEP_SECS" "$NGX_PID" >/dev/null
                sleep 1
                s1=$(mc_segs)
                sk=$((sk + 1))
                echo "$sc $s0 $s1" >>"$OUT/sweep.txt"
                log "$sc connections: A $(result_field "A-c$sc" rps) req/s, E $(result_field "E-c$sc" rps) req/s" \
                    "(p50 $(result_field "E-c$sc" p50_us) us, p99 $(result_field "E-c$sc" p99_us) us," \
                    "non-2xx $(result_field "E-c$sc" non2xx))"
            done
            CONNS=$CONNS16
        fi
        n=$(result_field E requests)
        E_RT=$(awk -v a="${cmd0:-0}" -v b="${cmd1:-0}" -v n="${n:-0}" 'BEGIN { if (n > 0 && b > a) printf "%.2f", (b - a) / n; else print "n/a" }')
        echo "E memcached commands per delivery: $E_RT (memcached's own counters over the measured run)" >"$OUT/e-roundtrips.txt"
        if [ -n "$PERF_STAT" ] && [ -s "$OUT/e-syscalls.txt" ]; then
            awk -F, -v n="${n:-0}" '
                /sys_enter_sendto/ { s = $1 } /sys_enter_poll/ { p = $1 }
                /sys_enter_futex/ { f = $1 } /context-switches/ { c = $1 }
                END { if (n > 0) printf "E per delivery: %.2f sends to memcached, %.2f waits for its answers (the worker'"'"'s send and poll calls), %.2f futex calls, %.2f context switches (perf)\n", s / n, p / n, f / n, c / n }' \
                "$OUT/e-syscalls.txt" >>"$OUT/e-roundtrips.txt"
        fi
        awk -v a="${seg0:-0}" -v b="${seg1:-0}" -v n="${n:-0}" 'BEGIN {
            if (n > 0 && b > a)
                printf "E per delivery: %.2f TCP segments to memcached (ss)\n",
                       (b - a) / n }' >>"$OUT/e-roundtrips.txt"
        cat "$OUT/e-roundtrips.txt"
        if [ "$WITH_STATUS" = 1 ]; then
            log "status after E: $(curl -s -m 5 "http://127.0.0.1:$PORT_B/status" | head -c 300)"
        fi
    fi
    stop_all
fi

log ""
log "=== C: Express $EXPRESS_VER (one node process) ==="
if want C; then
    if [ -n "$SERVER_CPU" ]; then
        taskset -c "$SERVER_CPU" node "$BENCH/express/server.js" "$PORT_C" "$SECRET" t \
            >"$OUT/express.log" 2>&1 &
    else
        node "$BENCH/express/server.js" "$PORT_C" "$SECRET" t >"$OUT/express.log" 2>&1 &
    fi
    NODE_PID=$!
    if wait_port "$PORT_C"; then
        log "probe: signed delivery -> $(post_line "http://127.0.0.1:$PORT_C/webhook" "$OUT/probe.txt" 1)" \
            "(expect 200), wrong signature -> $(post_line "http://127.0.0.1:$PORT_C/webhook" "$OUT/probe.txt" 2 bad) (expect 403)"
        log "warm-up ${WARMUP}s on ids 1..$WARM_LAST"
        run_wrk Cwarm "http://127.0.0.1:$PORT_C/webhook" 1 "$WARM_LAST" stop "$WARMUP" "$NODE_PID" >/dev/null
        wait_quiet "$QUIET"
        run_wrk C "http://127.0.0.1:$PORT_C/webhook" $((WARM_LAST + 1)) "$NREQ" stop "$DURATION" "$NODE_PID"
        log ""
        log "=== D for comparison: the same $UPDATES-update deliveries to Express ==="
        wait_quiet "$QUIET"
        run_batches express "http://127.0.0.1:$PORT_C/webhook" "$OUT/batch-file.txt" "$NODE_PID"
    else
        warn "express did not start: $(tail -5 "$OUT/express.log")"
        NOT_RUN="$NOT_RUN C D-express"
    fi
    stop_all
    cat "$OUT/express.log"
fi

# ------------------------------------------------------------- summary

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

{
    echo ""
    # CPU time of the server per request: unlike the rate, not lowered by
    # what the hypervisor or other work takes from the machine
    us_req() { awk -v c="$(result_field $1 server_cpu_pct)" -v e="$(result_field $1 elapsed_s)" \
        -v n="$(result_field $1 requests)" 'BEGIN { if (n > 0 && c != "?") printf "%.1f", c * e * 10000 / n; else print "?" }'; }
    printf '%-44s %8s %8s %8s %8s %8s %8s %6s %8s\n' target 'req/s' 'p50 us' 'p99 us' non-2xx sock-err 'srv CPU' other 'us/req'
    for t in A B E C; do
        case $t in
            A) name="A nginx 'return 200;'" ;;
            B) name="B meta_webhook (built-in 200, shm)" ;;
            E) name="E meta_webhook (built-in 200, memcached)" ;;
            C) name="C Express $EXPRESS_VER (1 node process)" ;;
        esac
        if [ -f "$OUT/wrk-$t.txt" ] && [ -n "$(result_field $t rps)" ]; then
            printf '%-44s %8s %8s %8s %8s %8s %7s%% %5s%% %8s\n' "$name" "$(result_field $t rps)" \
                "$(result_field $t p50_us)" "$(result_field $t p99_us)" \
                "$(result_field $t non2xx)" "$(result_field $t socket_errors)" \
                "$(result_field $t server_cpu_pct)" "$(result_field $t other_cpu_pct)" "$(us_req $t)"
            [ "$(result_field $t exhausted)" = 1 ] && \
                echo "    ($t used up its $(result_field $t loaded) unique deliveries after $(result_field $t elapsed_s) s; rate over that time)"
        else
            printf '%-44s %8s\n' "$name" "not run"
        fi
    done
    A_RPS=$(result_field A rps); B_RPS=$(result_field B rps); C_RPS=$(result_field C rps)
    echo ""
    echo "ratio B/A = $(ratio "${B_RPS:-0}" "${A_RPS:-0}")   (target >= 0.5)"
    echo "ratio B/C = $(ratio "${B_RPS:-0}" "${C_RPS:-0}")   (target >= 10)"
    E_RPS=$(result_field E rps)
    echo "ratio E/A = $(ratio "${E_RPS:-0}" "${A_RPS:-0}")   (target >= 0.3)"
    a1=$(result_field A-before-E rps); a2=$(result_field A-after-E rps)
    if [ -n "$a1" ] && [ -n "$a2" ]; then
        echo "          $(ratio "${E_RPS:-0}" "$(awk -v a="$a1" -v b="$a2" 'BEGIN { print (a + b) / 2 }')")" \
             "against A measured just before and after E on E's nginx ($a1 and $a2 req/s, ${A_AROUND}s each)"
    fi
    echo "by CPU per request (us/req of A / us/req of X, steadier on a busy host):" \
         "B $(ratio "$(us_req A)" "$(us_req B)"), E $(ratio "$(us_req A)" "$(us_req E)"), B/C $(ratio "$(us_req C)" "$(us_req B)")"
    [ -f "$OUT/e-roundtrips.txt" ] && cat "$OUT/e-roundtrips.txt"
    if [ -s "$OUT/sweep.txt" ]; then
        echo ""
        echo "E by connections, on E's nginx (A: at $CONNS connections the mean of the A around E, at the others the A right before E, ${SWEEP_SECS}s each):"
        row='  %5s %9s %9s %6s %8s %8s %8s %8s %10s\n'
        printf "$row" conns 'A req/s' 'E req/s' 'E/A' 'E p50 us' 'E p99 us' 'E us/req' non-2xx 'segs/deliv'
        ea=$(awk -v a="${a1:-0}" -v b="${a2:-0}" 'BEGIN { printf "%.0f", (a + b) / 2 }')
        printf "$row" "$CONNS" "$ea" "${E_RPS:-?}" \
            "$(ratio "${E_RPS:-0}" "$ea")" "$(result_field E p50_us)" "$(result_field E p99_us)" \
            "$(us_req E)" "$(result_field E non2xx)" \
            "$(sed -n 's/^E per delivery: \([0-9.]*\) TCP.*/\1/p' "$OUT/e-roundtrips.txt")"
        # A's best is its best anywhere in the run: the top, around E, the sweep
        best_a=$(printf '%s\n' "${A_RPS:-0}" "${a1:-0}" "${a2:-0}" | sort -n | tail -1)
        best_e=${E_RPS:-0}
        while read -r sc s0 s1; do
            ac=$(result_field "A-c$sc" rps); ec=$(result_field "E-c$sc" rps); nc=$(result_field "E-c$sc" requests)
            printf "$row" "$sc" "$ac" "$ec" "$(ratio "${ec:-0}" "${ac:-0}")" \
                "$(result_field "E-c$sc" p50_us)" "$(result_field "E-c$sc" p99_us)" "$(us_req "E-c$sc")" \
                "$(result_field "E-c$sc" non2xx)" \
                "$(awk -v a="$s0" -v b="$s1" -v n="${nc:-0}" 'BEGIN { if (n > 0 && b > a) printf "%.3f", (b - a) / n; else print "n/a" }')"
            [ "$(result_field "E-c$sc" exhausted)" = 1 ] && \
                echo "        (E used up its $(result_field "E-c$sc" loaded) deliveries after $(result_field "E-c$sc" elapsed_s) s; rate over that time)"
            best_a=$(awk -v a="$best_a" -v b="${ac:-0}" 'BEGIN { print (b > a) ? b : a }')
            best_e=$(awk -v a="$best_e" -v b="${ec:-0}" 'BEGIN { print (b > a) ? b : a }')
        done <"$OUT/sweep.txt"
        echo "ratio E/A at capacity = $(ratio "$best_e" "$best_a")   (target >= 0.3; the best rate of each: A $best_a anywhere in this run, E $best_e at any of these counts)"
    fi
    for v in file mem express; do
        f=$OUT/batch-D-$v.txt
        [ -f "$f" ] || continue
        line=$(grep '^RESULT' "$f")
        [ -n "$line" ] || continue
        get() { printf '%s\n' "$line" | sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p"; }
        case $v in
            file) what="body > client_body_buffer_size: temp file" ;;
            mem)  what="client_body_buffer_size 4m: body in memory" ;;
            express) what="Express, for comparison" ;;
        esac
        echo "D $(get deliveries) x $UPDATES-update delivery ($what):"
        echo "    $(get us_per_update) us/update wall ($(get ms_per_delivery) ms/delivery," \
             "p50 $(get p50_ms) ms, p99 $(get p99_ms) ms), server CPU $(get server_cpu_us_per_update) us/update, HTTP status $(get codes)"
    done
    [ "$HAVE_MODULE" = 1 ] || echo "B and D (module) not run: build it first (make)"
} >"$OUT/summary.txt"

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
cat "$OUT/summary.txt" >>"$RESULTS"
log ""
log "results written to bench/out/results.txt"
if [ -n "$NOT_RUN" ]; then
    warn "not everything ran:$NOT_RUN"
    exit 1
fi
exit 0
