#!/bin/sh
# bench/send.sh: what the send path (meta_webhook_send) adds on top of
# the Graph API it forwards to (see "Send path" in bench/README.md).
#
#   F  a fake Graph API: a second nginx answering every
#      POST /v23.0/<id>/messages with a fixed 200 JSON ("return 200 '...'"),
#      as fast as a Graph endpoint can be; measured directly
#   S  nginx with the module, one worker, location /graph/ with
#      meta_webhook_send (thread pool mw, 8 threads), forwarding the same
#      template send to F; measured through the module
#
# Both with wrk -t1 -cN -d..s --latency from the load core.  The module's
# nginx (master + worker + its thread pool) is pinned to the server core;
# the fake and wrk share the load core in both runs, so the difference
# between F and S is what the module adds.  A benchmark, not a test: exit
# 0 when everything ran, whatever the numbers; 1 when something could not
# run.  Knobs (environment):
#   BENCH_DURATION=4  BENCH_QUIET_WAIT=20
#   BENCH_SEND_ROUNDS=3    rounds of F then S at each level: the summary
#                          gives each column's median over the rounds and
#                          the range of +p99 (one run's p99 on a shared
#                          host is as much the host's as the servers')
#   BENCH_SEND_THREADS=8   threads of the module's pool (thread_pool mw)
#   BENCH_SEND_CONNECTIONS="1 4 16 16p"   concurrency levels, one F and
#                          one S run each.  N: closed loop, a connection
#                          sends its next request when the answer came
#                          (past a few, the module's one worker is
#                          saturated and its p99 is its queue).  Np: N
#                          connections, each pausing 0 to 2 x
#                          BENCH_SEND_PAUSE_MS (default 1, at random)
#                          after each answer: up to N in flight at a rate
#                          the worker sustains
#   BENCH_SEND_PORT=18190   first port tried (the next free ones are used)
#   BENCH_SERVER_CPU=0 BENCH_LOAD_CPU=1   taskset pinning ("" to disable)
#   BENCH_FAKE_CPU=<load cpu>             the fake Graph API's core ("" : unpinned)
#   BENCH_SEND_PROFILE=1   after the rounds, one more S run at the highest
#                          level under `perf record --call-graph dwarf` of
#                          the module's worker and its threads; the tables
#                          go to bench/out/send/profile.txt

set -u

WORK=$(cd "$(dirname "$0")" && pwd)/out/send
. "$(dirname "$0")/lib.sh"

DURATION=${BENCH_DURATION:-4}
ROUNDS=${BENCH_SEND_ROUNDS:-3}
LEVELS=${BENCH_SEND_CONNECTIONS:-1 4 16 16p}
PAUSE_MS=${BENCH_SEND_PAUSE_MS:-1}
QUIET=${BENCH_QUIET_WAIT:-20}
FAKE_CPU=${BENCH_FAKE_CPU-$LOAD_CPU}
RESULT_FILE=$OUT/send.txt
PHONE_ID=106540352242922
BODY='{"messaging_product":"whatsapp","to":"16505551234","type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}'
FAKE_REPLY='{"messaging_product":"whatsapp","contacts":[{"input":"16505551234","wa_id":"16505551234"}],"messages":[{"id":"wamid.bench"}]}'

FAKE_PID=""
PERF_PID=""
stop_send() {
    [ -n "$PERF_PID" ] && { stop_pid "$PERF_PID" INT; PERF_PID=""; }
    [ -n "$FAKE_PID" ] && { stop_pid "$FAKE_PID" QUIT; FAKE_PID=""; }
    stop_all
}
trap 'stop_send' EXIT
trap 'stop_send; exit 130' INT TERM HUP

need_apt wrk wrk
need_apt curl curl
need_apt taskset util-linux

[ "$HAVE_MODULE" = 1 ] || { warn "$MODULE not built: run make first"; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
snapshot_module

# ------------------------------------------------------------- ports

port_free() {   # nothing listens on 127.0.0.1:PORT (ss, else a curl probe)
    if command -v ss >/dev/null 2>&1; then
        ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    else
        c=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null)
        [ "$c" = 000 ]
    fi
}
next_free_port() {  # next_free_port FROM: first free port >= FROM
    p=$1
    while ! port_free "$p"; do
        p=$((p + 1))
        [ "$p" -lt $(($1 + 200)) ] || { warn "no free port near $1"; exit 1; }
    done
    echo "$p"
}
FAKE_PORT=$(next_free_port "${BENCH_SEND_PORT:-18190}")
MOD_PORT=$(next_free_port $((FAKE_PORT + 1)))

# ------------------------------------------------------------ configs

common_http() {   # common_http DIR
    cat <<EOF
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}

main_head() {     # main_head DIR CPU
    [ "$(id -u)" = 0 ] && echo "user root;"
    echo "worker_processes 1;"
    [ -n "$2" ] && echo "worker_cpu_affinity $(cpu_mask "$2");"
    cat <<EOF
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 4096; }
EOF
}

FAKE_DIR=$WORK/fake
MOD_DIR=$WORK/module
mkdir -p "$FAKE_DIR/logs" "$FAKE_DIR/tmp" "$MOD_DIR/logs" "$MOD_DIR/tmp"

{
    main_head "$FAKE_DIR" "$FAKE_CPU"
    echo "http {"
    common_http "$FAKE_DIR"
    cat <<EOF
    server {
        listen 127.0.0.1:$FAKE_PORT backlog=4096;
        location ~ ^/v23.0/[0-9]+/messages\$ {
            default_type application/json;
            return 200 '$FAKE_REPLY';
        }
    }
}
EOF
} >"$FAKE_DIR/nginx.conf"

TOKEN=$WORK/token
(umask 077; printf 'EAAbench%s\n' "$(run_tag)" >"$TOKEN")
chmod 600 "$TOKEN"

{
    echo "load_module $MODULE_LOAD;"
    main_head "$MOD_DIR" "$SERVER_CPU"
    echo "thread_pool mw threads=${BENCH_SEND_THREADS:-8};"
    echo "http {"
    common_http "$MOD_DIR"
    cat <<EOF
    meta_webhook_state shm zone=bench:16m;
    server {
        listen 127.0.0.1:$MOD_PORT backlog=4096;
        location /graph/ {
            meta_webhook_send;
            meta_webhook_thread_pool mw;
            meta_webhook_access_token_file $TOKEN;
            meta_webhook_graph_url http://127.0.0.1:$FAKE_PORT/v23.0;
            meta_webhook_business_verified on;
        }
    }
}
EOF
} >"$MOD_DIR/nginx.conf"

# wrk script: one fixed POST; done() prints a machine-readable line
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = [==[$BODY]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer client-side-token"
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d rps=%.0f p50_us=%d p99_us=%d mean_us=%.0f non2xx=%d socket_errors=%d\n",
        summary.requests, summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), latency.mean,
        e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
# the same, each connection pausing after each answer (levels "Np"):
# 0 to 2 x PAUSE_MS (wrk counts whole ms), at random so that the
# connections do not fall into step and arrive as one burst
{
    cat "$WORK/post.lua"
    echo "math.randomseed(os.time())"
    echo "function delay() return math.random(0, 2 * $PAUSE_MS) end"
} >"$WORK/paced.lua"

# ------------------------------------------------------------ servers

start_server() {  # start_server DIR CPU: sets SRV_PID
    if ! $NGX_BIN -t -q -p "$1" -c "$1/nginx.conf" >"$1/logs/nginx-t.log" 2>&1; then
        warn "nginx -t failed on $1/nginx.conf:"; cat "$1/logs/nginx-t.log" >&2
        return 1
    fi
    if [ -n "$2" ]; then
        taskset -c "$2" $NGX_BIN -p "$1" -c "$1/nginx.conf" -g "daemon off;" \
            >>"$1/logs/stdout.log" 2>&1 &
    else
        $NGX_BIN -p "$1" -c "$1/nginx.conf" -g "daemon off;" >>"$1/logs/stdout.log" 2>&1 &
    fi
    SRV_PID=$!
}

NOT_RUN=""
start_server "$FAKE_DIR" "$FAKE_CPU" || exit 1
FAKE_PID=$SRV_PID
wait_port "$FAKE_PORT" || { warn "fake Graph API did not start: $(tail -3 "$FAKE_DIR/logs/error.log")"; exit 1; }
start_server "$MOD_DIR" "$SERVER_CPU" || exit 1
NGX_PID=$SRV_PID
wait_port "$MOD_PORT" || { warn "module nginx did not start: $(tail -3 "$MOD_DIR/logs/error.log")"; exit 1; }

FAKE_URL=http://127.0.0.1:$FAKE_PORT/v23.0/$PHONE_ID/messages
MOD_URL=http://127.0.0.1:$MOD_PORT/graph/$PHONE_ID/messages

probe() {   # probe URL: "<status> <body>"
    printf '%s' "$BODY" | curl -s -m 10 -w ' -> HTTP %{http_code}' \
        -H 'Content-Type: application/json' --data-binary @- "$1"
}
log "probe fake:   $(probe "$FAKE_URL")"
P=$(probe "$MOD_URL")
log "probe module: $P"
case $P in
    *wamid.bench*'HTTP 200') ;;
    *) warn "WARNING: the module did not forward the probe to the fake (expected 200 with the fake's body)"
       tail -5 "$MOD_DIR/logs/error.log" >&2 ;;
esac

field() { sed -n "s/^RESULT.* $2=\([^ ]*\).*/\1/p" "$WORK/wrk-$1.txt" 2>/dev/null | head -1; }
rounds() {      # rounds F|S LEVEL FIELD: the rounds' values, sorted
    for k in $(seq 1 "$ROUNDS"); do field "$1$2r$k" "$3"; done | grep -v '^?*$' | sort -n
}
median() {      # median F|S LEVEL FIELD (the lower middle of an even count)
    rounds "$1" "$2" "$3" | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
ms() { awk -v u="$1" 'BEGIN { if (u == "") print "n/a"; else printf "%.3f", u / 1000 }'; }

conns() { echo "${1%p}"; }    # the connections of a level
level_text() {
    case $1 in
        *p) echo "$(conns "$1") connections pausing ~$PAUSE_MS ms after each answer" ;;
        *)  echo "$1 connection(s)" ;;
    esac
}
run_wrk() {     # run_wrk LABEL URL DURATION [LEVEL: N or Np]
    st0=$(steal_snap)
    case ${4:-1} in *p) script=paced.lua ;; *) script=post.lua ;; esac
    on_cpu "$LOAD_CPU" timeout $(($3 + 30)) wrk -t1 -c"$(conns "${4:-1}")" -d"$3"s \
        --timeout 5s --latency -s "$WORK/$script" "$2" >"$WORK/wrk-$1.txt" 2>&1 \
        || { warn "wrk for $1 failed"; NOT_RUN="$NOT_RUN $1"; }
    sed -i "s/^RESULT .*/& steal_pct=$(steal_pct "$st0" "$(steal_snap)")/" "$WORK/wrk-$1.txt"
}

E0=$(grep -c '\[\(error\|crit\|alert\|emerg\)\]' "$MOD_DIR/logs/error.log" 2>/dev/null)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
run_wrk Fwarm "$FAKE_URL" 1 4
run_wrk Swarm "$MOD_URL" 1 4
for nc in $LEVELS; do
  for k in $(seq 1 "$ROUNDS"); do
    log ""
    log "=== F, $(level_text "$nc"), round $k: fake Graph API directly ($FAKE_URL) ==="
    wait_quiet "$QUIET"
    run_wrk "F${nc}r$k" "$FAKE_URL" "$DURATION" "$nc"
    grep '^RESULT' "$WORK/wrk-F${nc}r$k.txt"
    log "=== S, $(level_text "$nc"), round $k: through meta_webhook_send ($MOD_URL) ==="
    wait_quiet "$QUIET"
    k0=$(proc_ticks "$NGX_PID")
    run_wrk "S${nc}r$k" "$MOD_URL" "$DURATION" "$nc"
    k1=$(proc_ticks "$NGX_PID")
    # the module nginx's own CPU time per send (its threads included):
    # steadier than the rate when the host takes time away
    sed -i "s/^RESULT .*/& cpu_us=$(awk -v t=$((k1 - k0)) -v hz="$HZ" -v n="$(field "S${nc}r$k" requests)" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "?" }')/" "$WORK/wrk-S${nc}r$k.txt"
    # what the module added in this round
    sed -i "s/^RESULT .*/& add_p99_us=$(awk -v a="$(field "S${nc}r$k" p99_us)" -v b="$(field "F${nc}r$k" p99_us)" \
        'BEGIN { if (a == "" || b == "") print "?"; else print a - b }')/" "$WORK/wrk-S${nc}r$k.txt"
    grep '^RESULT' "$WORK/wrk-S${nc}r$k.txt"
  done
done
PROFILED=""
if [ "${BENCH_SEND_PROFILE:-0}" = 1 ]; then
    nc=$(echo $LEVELS | tr ' ' '\n' | grep -v p | tail -1)
    W=$(ps -o pid= --ppid "$NGX_PID" 2>/dev/null | head -1 | tr -d ' ')
    if command -v perf >/dev/null 2>&1 && [ -n "$W" ]; then
        log ""
        log "=== S, $(level_text "$nc"), under perf (worker $W and its threads) ==="
        wait_quiet "$QUIET"
        perf record -q -F 1999 --call-graph dwarf,16384 -p "$W" \
            -o "$WORK/perf.data" >"$WORK/perf-record.log" 2>&1 &
        PERF_PID=$!
        sleep 0.5
        run_wrk "P$nc" "$MOD_URL" "$DURATION" "$nc"
        stop_pid "$PERF_PID" INT
        PERF_PID=""
        PROFILED=$nc
    else
        warn "BENCH_SEND_PROFILE: perf (apt linux-perf) or the worker not found"
    fi
fi

E1=$(grep -c '\[\(error\|crit\|alert\|emerg\)\]' "$MOD_DIR/logs/error.log" 2>/dev/null)
log "module nginx error-log lines during the runs: $((E1 - E0))"

stop_send

# ------------------------------------------------------------ summary

{
    echo "# send path benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $NCPU cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
    echo "nginx $($NGX_BIN -v 2>&1 | sed 's/.*version: //'), module $MODULE_INFO"
    echo "pinning: module nginx on CPU ${SERVER_CPU:-any}, fake Graph nginx on CPU ${FAKE_CPU:-any}, wrk on CPU ${LOAD_CPU:-any}"
    echo "load: wrk -t1 -cN -d${DURATION}s --latency, N in: $LEVELS; POST template send ($(printf '%s' "$BODY" | wc -c) bytes); load average $LOAD0"
    echo ""
    printf '%5s  %9s %9s %9s %6s   %9s %9s %9s %6s %9s   %9s %13s %6s\n' conns 'F send/s' 'F p50 ms' \
        'F p99 ms' 'steal' 'S send/s' 'S p50 ms' 'S p99 ms' 'steal' 'S us/send' '+p99 ms' '+p99 range' 'S/F'
    for nc in $LEVELS; do
        printf '%5s  %9s %9s %9s %5s%%   %9s %9s %9s %5s%% %9s   %9s %13s %6s\n' "$nc" \
            "$(median F "$nc" rps)" \
            "$(ms "$(median F "$nc" p50_us)")" "$(ms "$(median F "$nc" p99_us)")" \
            "$(median F "$nc" steal_pct)" \
            "$(median S "$nc" rps)" \
            "$(ms "$(median S "$nc" p50_us)")" "$(ms "$(median S "$nc" p99_us)")" \
            "$(median S "$nc" steal_pct)" "$(median S "$nc" cpu_us)" \
            "$(ms "$(median S "$nc" add_p99_us)")" \
            "$(ms "$(rounds S "$nc" add_p99_us | head -1)")-$(ms "$(rounds S "$nc" add_p99_us | tail -1)")" \
            "$(awk -v a="$(median S "$nc" rps)" -v b="$(median F "$nc" rps)" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')"
    done
    echo ""
    echo "Each column is the median of $ROUNDS rounds (F then S at each level, ${DURATION} s each)."
    echo "+p99 = p99 through the module - p99 of the fake alone, at the same concurrency, in the same round"
    echo "(target <= 1 ms); its range is the lowest and the highest round."
    echo "N: closed loop, a connection sends its next request as soon as the answer came; at the highest N"
    echo "both run at their maximum rate, and the module's p99 is mostly its queue."
    echo "Np: N connections, each pausing 0-$((2 * PAUSE_MS)) ms (at random) after each answer: up to N sends in flight at a rate"
    echo "the module's one worker sustains (its p99 is its own latency, not its queue)."
    echo "steal: CPU time the hypervisor took from this VM during the run; well above 0 % makes the p99 the host's, not the servers'."
    for nc in $LEVELS; do
        for t in F S; do
            for k in $(seq 1 "$ROUNDS"); do
                n=$(field "$t${nc}r$k" non2xx)
                if [ -n "$n" ] && [ "$n" != 0 ]; then
                    echo "WARNING: $t at $(level_text "$nc"), round $k, had $n non-2xx responses"
                fi
            done
        done
    done
} >"$RESULT_FILE"
log ""
cat "$RESULT_FILE"
log ""
log "written to bench/out/send.txt (raw wrk output in bench/out/send/)"
if [ -n "$PROFILED" ]; then
    perf_tables "$WORK/perf.data" \
        "the module's worker and its threads, $PROFILED sends in flight" \
        >"$WORK/profile.txt"
    log "profile at $PROFILED in flight: bench/out/send/profile.txt (raw: bench/out/send/perf.data)"
fi
if [ -n "$NOT_RUN" ]; then
    warn "not everything ran:$NOT_RUN"
    exit 1
fi
exit 0
