# bench/lib.sh: shared by the scripts of bench/ (sourced).
#
# The caller sets WORK (a directory under bench/out it owns) before
# sourcing.  Everything listens on 127.0.0.1 only; every process started
# here is recorded in NGX_PID / NODE_PID and stopped by stop_all, which
# the callers install as their EXIT trap.

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out
NGX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=${BENCH_MODULE:-$ROOT/build/ngx_http_meta_webhook_module.so}

PORT=${BENCH_PORT:-18180}
PORT_A=$((PORT + 1))              # nginx "return 200;"
PORT_B=$((PORT + 2))              # nginx meta_webhook
PORT_C=$((PORT + 3))              # Express
PORT_M=$((PORT + 4))              # memcached, for E

NGX_PID=""
NODE_PID=""
MC_PID=""

log() { printf '%s\n' "$*"; }
warn() { printf 'bench: %s\n' "$*" >&2; }

stop_pid() {   # stop_pid PID SIGNAL: signal, wait up to 5 s, then KILL
    kill -"$2" "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 50 ]; do
        sleep 0.1; i=$((i + 1))
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

stop_all() {
    if [ -n "$NGX_PID" ]; then stop_pid "$NGX_PID" QUIT; NGX_PID=""; fi
    if [ -n "$NODE_PID" ]; then stop_pid "$NODE_PID" TERM; NODE_PID=""; fi
    if [ -n "${MC_PID:-}" ]; then stop_pid "$MC_PID" TERM; MC_PID=""; fi
}

need_apt() {   # need_apt COMMAND PACKAGE: install PACKAGE if COMMAND is missing
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (apt)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends "$2" >/dev/null 2>&1
    command -v "$1" >/dev/null 2>&1 || { warn "cannot install $2"; exit 1; }
}

# what every load needs: wrk and its requests' generator, curl for the
# probes, taskset for the pinning
need_load_tools() {
    need_apt wrk wrk
    need_apt curl curl
    need_apt node nodejs
    need_apt taskset util-linux
}

# Pinning: the server (nginx master + its one worker, or node) on one
# core, the load generator on the other.
NCPU=$(nproc 2>/dev/null || echo 1)
if [ "$NCPU" -ge 2 ]; then
    SERVER_CPU=${BENCH_SERVER_CPU-0}
    LOAD_CPU=${BENCH_LOAD_CPU-1}
else
    SERVER_CPU=""; LOAD_CPU=""
fi

on_cpu() {     # on_cpu CPU COMMAND...: in the foreground
    c=$1; shift
    if [ -n "$c" ]; then taskset -c "$c" "$@"; else "$@"; fi
}

start_memcached() {   # start_memcached PORT LOG: in the background, MC_PID
    u=""; [ "$(id -u)" = 0 ] && u="-u nobody"
    if [ -n "$LOAD_CPU" ]; then
        taskset -c "$LOAD_CPU" memcached -l 127.0.0.1 -p "$1" -U 0 -t 1 \
            -m 256 -c 4096 $u >"$2" 2>&1 &
    else
        memcached -l 127.0.0.1 -p "$1" -U 0 -t 1 -m 256 -c 4096 $u >"$2" 2>&1 &
    fi
    MC_PID=$!
}
# Background servers are started as simple commands, not through a shell
# function (which would run in a subshell), so that $! is the server's own
# pid: taskset execs the command in place.

cpu_mask() {   # worker_cpu_affinity bit mask for one CPU number
    m=1; k=0
    while [ $k -lt "$1" ]; do m="${m}0"; k=$((k + 1)); done
    echo "$m"
}

HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
proc_ticks() {  # proc_ticks PID: CPU ticks (user+sys) of PID and its children
    t=0
    for q in $1 $(ps -o pid= --ppid "$1" 2>/dev/null); do
        v=$(awk '{ print $14 + $15 }' "/proc/$q/stat" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo $t
}

# CPU seconds used by this shell's waited-for children (the load
# generator once it has exited): `times` into FILE (not in a $(...)
# subshell, whose `times` would start from zero), then read it back
snap_times() { times >"$1"; }
children_cpu() {   # children_cpu FILE
    sed -n 2p "$1" | awk '{
        n = 0
        for (i = 1; i <= 2; i++) {
            split($i, a, "m"); sub("s", "", a[2]); n += a[1] * 60 + a[2]
        }
        printf "%.2f", n }'
}

# busy CPU seconds of the whole machine (user+nice+system, plus steal:
# time the hypervisor gave to other guests), from /proc/stat
machine_cpu() {
    awk -v hz="$HZ" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $9) / hz }' /proc/stat
}

now_s() { date +%s.%N; }

# hypervisor steal: "steal total" jiffies of all CPUs, and between two
# such snapshots the share of the machine's time the host took away
steal_snap() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }
steal_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, A, " "); split(b, B, " ")
    if (B[2] > A[2]) printf "%.0f", 100 * (B[1] - A[1]) / (B[2] - A[2]); else print "?" }'; }

# wait_quiet SECONDS: on a shared machine, wait (at most SECONDS) until
# the rest of the machine uses less than 10 % of a core, so that a target
# is not measured while someone else's build runs; says so if it gave up
wait_quiet() {
    [ "${1:-0}" -gt 0 ] || return 0
    end=$(( $(date +%s) + $1 ))
    while :; do
        q0=$(machine_cpu); sleep 1; q1=$(machine_cpu)
        if awk -v a="$q0" -v b="$q1" 'BEGIN { exit !(b - a < 0.10) }'; then
            return 0
        fi
        if [ "$(date +%s)" -ge "$end" ]; then
            log "(the machine is busy with other work: measuring anyway, see the 'other' column)"
            return 0
        fi
    done
}

HAVE_MODULE=0
[ -f "$MODULE" ] && HAVE_MODULE=1
MODULE_LOAD=$MODULE

# nginx maps the .so it loads: a rebuild that rewrites build/*.so in place
# meanwhile kills the workers with SIGBUS.  So the benchmark loads its own
# copy, taken once.
snapshot_module() {
    [ "$HAVE_MODULE" = 1 ] || return 0
    mkdir -p "$WORK"
    cp "$MODULE" "$WORK/module.so.tmp" && mv -f "$WORK/module.so.tmp" "$WORK/ngx_http_meta_webhook_module.so"
    MODULE_LOAD=$WORK/ngx_http_meta_webhook_module.so
    MODULE_INFO="$(ls -l --time-style='+%Y-%m-%d %H:%M:%S' "$MODULE" | awk '{ print $6, $7 }'), sha256 $(sha256sum "$MODULE_LOAD" | cut -c1-12)"
}

# write_nginx_conf SECRET WITH_STATUS [EXTRA_MAIN_DIRECTIVES]
# One worker; A on PORT_A; B (/webhook) and D (/webhook, /webhook-mem) on
# PORT_B when the module is built.
write_nginx_conf() {
    mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
    {
        [ "$HAVE_MODULE" = 1 ] && echo "load_module $MODULE_LOAD;"
        [ "$(id -u)" = 0 ] && echo "user root;"
        echo "worker_processes 1;"
        [ -n "$SERVER_CPU" ] && echo "worker_cpu_affinity $(cpu_mask "$SERVER_CPU");"
        [ -n "${3:-}" ] && echo "$3"
        cat <<EOF
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;

    server {                                # A: nginx's own 200
        listen 127.0.0.1:$PORT_A;
        location /webhook { client_max_body_size 4m; return 200; }
    }
EOF
        if [ "$HAVE_MODULE" = 1 ]; then
            cat <<EOF
    meta_webhook_state ${BENCH_STATE:-shm zone=bench:64m};

    server {                                # B and D: the module
        listen 127.0.0.1:$PORT_B;
        location /webhook {
            client_max_body_size 4m;
            meta_webhook;
            meta_webhook_verify_token t;
            meta_webhook_app_secret_file $1;
        }
        location /webhook-mem {             # D with the body kept in memory
            client_max_body_size 4m;
            client_body_buffer_size 4m;
            meta_webhook;
            meta_webhook_verify_token t;
            meta_webhook_app_secret_file $1;
        }
EOF
            [ "$2" = 1 ] && echo "        location /status { meta_webhook_status; }"
            echo "    }"
        fi
        echo "}"
    } >"$WORK/nginx/nginx.conf"
}

wait_port() {   # wait_port PORT: until something answers HTTP there (10 s)
    i=0
    while [ $i -lt 100 ]; do
        c=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/webhook" 2>/dev/null)
        [ -n "$c" ] && [ "$c" != 000 ] && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

# start_nginx SECRET [EXTRA_MAIN_DIRECTIVES [NGINX_G_DIRECTIVES]]
# Sets NGX_PID (the master) and WITH_STATUS (1 when the module has
# meta_webhook_status and /status is configured).
start_nginx() {
    WITH_STATUS=0
    if [ "$HAVE_MODULE" = 1 ]; then
        WITH_STATUS=1
        write_nginx_conf "$1" 1 "${2:-}"
        if ! $NGX_BIN -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >/dev/null 2>&1; then
            WITH_STATUS=0       # no meta_webhook_status (yet): do without
        fi
    fi
    write_nginx_conf "$1" "$WITH_STATUS" "${2:-}"
    if ! $NGX_BIN -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
            >"$WORK/nginx/logs/nginx-t.log" 2>&1; then
        warn "nginx -t failed on $WORK/nginx/nginx.conf:"
        cat "$WORK/nginx/logs/nginx-t.log" >&2
        return 1
    fi
    g="daemon off; ${3:-}"
    if [ -n "$SERVER_CPU" ]; then
        taskset -c "$SERVER_CPU" $NGX_BIN -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
            -g "$g" >>"$WORK/nginx/logs/stdout.log" 2>&1 &
    else
        $NGX_BIN -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
            -g "$g" >>"$WORK/nginx/logs/stdout.log" 2>&1 &
    fi
    NGX_PID=$!
    wait_port "$PORT_A" || { warn "nginx did not start: $(tail -3 "$WORK/nginx/logs/error.log" 2>/dev/null)"; return 1; }
}

# start_e SECRET THREADS: E's servers, a fresh memcached and nginx with it
# as the state, the rounds in a pool of THREADS threads
start_e() {
    start_memcached "$PORT_M" "$WORK/memcached.log"
    BENCH_STATE="memcached 127.0.0.1:$PORT_M ${BENCH_MC_ARGS:-}" \
        start_nginx "$1" "thread_pool default threads=$2;"
}

# the TCP segments with data sent so far on the open connections to the
# memcached of E (PORT_M), by ss; E's worker is its only client
mc_segs() {
    ss -tinH state established "( dport = :$PORT_M )" 2>/dev/null \
        | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^data_segs_out:/) {
                     sub(/^data_segs_out:/, "", $i); t += $i } }
               END { print t + 0 }'
}

worker_pid() {  # the nginx worker's pid (the master itself with master_process off)
    w=$(ps -o pid= --ppid "$NGX_PID" 2>/dev/null | head -1 | tr -d ' ')
    echo "${w:-$NGX_PID}"
}

new_secret() {  # new_secret FILE: a random app secret
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1"
    chmod 600 "$1"
}

run_tag() { od -An -tx1 -N4 /dev/urandom | tr -d ' \n'; }

result_field() {   # result_field LABEL FIELD: from the RESULT line of wrk-LABEL.txt
    sed -n "s/^RESULT .*[ ]$2=\([^ ]*\).*/\1/p" "$OUT/wrk-$1.txt" 2>/dev/null | head -1
}

# run_wrk LABEL URL FIRST LAST MODE DURATION SERVER_PID: wrk with the
# replay script on lines FIRST..LAST of $OUT/single.txt (or of
# $REPLAY_FILE when set), into
# $OUT/wrk-LABEL.txt, with the server's CPU and the rest of the machine's
# appended to its RESULT line (CONNS connections)
run_wrk() {
    f=$OUT/wrk-$1.txt
    t0=$(proc_ticks "$7"); m0=$(machine_cpu); snap_times "$OUT/.times0"; w0=$(now_s)
    on_cpu "$LOAD_CPU" timeout $(($6 + 60)) wrk -t1 -c"$CONNS" -d"$6"s \
        --timeout 5s --latency -s "$BENCH/wrk/replay.lua" "$2" \
        -- "${REPLAY_FILE:-$OUT/single.txt}" "$3" "$4" "$5" "$1" >"$f" 2>&1
    rc=$?
    t1=$(proc_ticks "$7"); m1=$(machine_cpu); snap_times "$OUT/.times1"; w1=$(now_s)
    c0=$(children_cpu "$OUT/.times0"); c1=$(children_cpu "$OUT/.times1")
    [ $rc = 0 ] || { warn "wrk for $1 exited $rc"; NOT_RUN="$NOT_RUN $1"; }
    # how busy the server was: its CPU time over the time wrk was sending;
    # and how much CPU the rest of the machine took meanwhile (anything
    # but the server and wrk: other people's builds and tests), as % of
    # one core over the whole wrk invocation
    el=$(result_field "$1" elapsed_s)
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v el="${el:-0}" \
        'BEGIN { if (el > 0) printf "%.0f", 100 * t / hz / el; else print "?" }')
    other=$(awk -v m="$m0 $m1" -v c="$c0 $c1" -v w="$w0 $w1" -v t=$((t1 - t0)) -v hz="$HZ" '
        BEGIN { split(m, M, " "); split(c, C, " "); split(w, W, " ")
                o = (M[2] - M[1]) - (C[2] - C[1]) - t / hz
                if (o < 0) o = 0
                printf "%.0f", 100 * o / (W[2] - W[1]) }')
    sed -i "s/^RESULT .*/& server_cpu_pct=$cpu other_cpu_pct=$other/" "$f"
    cat "$f"
}

# POST one line of a gen.js file with curl; prints the HTTP status
post_line() {   # post_line URL FILE LINE [bad]
    l=$(sed -n "${3}p" "$2")
    sig=${l%% *}
    [ -n "${4:-}" ] && sig=0000000000000000000000000000000000000000000000000000000000000000
    printf '%s' "${l#* }" | curl -s -o /dev/null -w '%{http_code}' -m 10 \
        -H 'Content-Type: application/json' -H "X-Hub-Signature-256: sha256=$sig" \
        --data-binary @- "$1"
}

# perf_tables PERF_DATA LABEL: what bench/profile.sh and bench/send.sh
# print from a `perf record --call-graph dwarf` of a worker: own time,
# time including callees, the module's own steps, shared objects.
perf_tables() {
    R="perf report -i $1 --stdio --no-header"
    tidy() {    # drop perf's empty trailing columns, comments and raw addresses
        grep -v '^#' | grep -v '^$' | grep -v '\] 0x0000' \
            | sed 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//'
    }
    echo ""
    echo "=== top functions by own time (self), $2 ==="
    echo "    (libjansson is stripped: its internals show as addresses, and are"
    echo "     dropped here; see json_loadb and the by-object table below)"
    $R --no-children --sort dso,symbol -g none --percent-limit 0.7 2>/dev/null \
        | tidy | head -40
    echo ""
    echo "=== top functions including callees (children) ==="
    $R --children --sort symbol -g none --percent-limit 2 2>/dev/null \
        | tidy | head -50
    echo ""
    echo "=== the module's own steps, including callees ==="
    $R --children --sort symbol -g none --percent-limit 0.5 2>/dev/null | tidy \
        | grep -E '\] (mw_|ngx_mw_|ngx_http_meta_webhook|json_(loadb|decref|delete|dumpb)|HMAC|EVP_|ngx_http_read_client_request_body|ngx_http_send_response|ngx_http_free_request|ngx_destroy_pool|ngx_thread|memcached_|curl_)' \
        | head -40
    echo ""
    echo "=== by shared object ==="
    $R --no-children --sort dso -g none 2>/dev/null | tidy | head -12
}
