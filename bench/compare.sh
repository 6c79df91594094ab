#!/bin/sh
# bench/compare.sh: two or more builds of the module side by side, on E's
# load (B's with COMPARE_TARGET=B), in short runs that take turns.
#
#   sh bench/compare.sh OLD.so NEW.so [MORE.so ...]
#
# On a shared host the speed of the machine drifts by 10-20 % over
# minutes, as much as most changes are worth: one run of each build, one
# after the other, tells them apart only by luck.  Here every round runs
# each build in turn, each on a fresh nginx and, for E, a fresh
# memcached, with the same requests, right after an A (nginx's own
# "return 200;") of its own; the end prints, per build, the medians over
# the rounds of req/s, of the server's CPU time per request, and of the
# ratio to the A just before it.  Conditions are bench/run.sh's (one worker pinned to one core,
# wrk and memcached on the other).
#
# Rounds take the builds in turn forwards, then backwards, so that a
# drift in one direction does not favour the build that runs first; and
# besides the medians, each build after the first is put against the first
# round by round (the median over the rounds of the ratio of their CPU time
# per request, measured a few seconds apart), which the drift moves least.
#
# Knobs: COMPARE_ROUNDS (5), COMPARE_SECONDS (3 per run, after a 1 s
# warm-up), COMPARE_TARGET (E or B), COMPARE_THREADS (E's thread pool per
# build, e.g. "16 2": the same .so twice compares two pool sizes), and
# bench/run.sh's BENCH_THREADS, BENCH_MC_ARGS, BENCH_CONNECTIONS,
# BENCH_REQUESTS, BENCH_PORT.
# Results: the terminal and bench/out/compare/results.txt.

set -u

WORK=$(cd "$(dirname "$0")" && pwd)/out/compare
. "$(dirname "$0")/lib.sh"
OUT=$WORK                           # run_wrk's files

ROUNDS=${COMPARE_ROUNDS:-5}
SECS=${COMPARE_SECONDS:-3}
TARGET=${COMPARE_TARGET:-E}
CONNS=${BENCH_CONNECTIONS:-16}
NREQ=${BENCH_REQUESTS:-300000}
WARM_LAST=30000

case $TARGET in
    B|E) ;;
    *) echo "COMPARE_TARGET is B or E" >&2; exit 2 ;;
esac

if [ $# -lt 2 ]; then
    echo "usage: sh bench/compare.sh OLD.so NEW.so [MORE.so ...]" >&2
    exit 2
fi

trap 'stop_all' EXIT
trap 'stop_all; exit 130' INT TERM HUP

need_load_tools
need_apt memcached memcached

rm -rf "$WORK"
mkdir -p "$WORK"

# threads V: E's pool size for build V (names of its own: sh has no locals)
threads() {
    th_n=0
    for th_t in ${COMPARE_THREADS:-}; do
        th_n=$((th_n + 1))
        [ "$th_n" = "$1" ] && { echo "$th_t"; return; }
    done
    echo "${BENCH_THREADS:-16}"
}

# each build copied once: nginx maps the file it loads (see snapshot_module)
n=0
for so in "$@"; do
    n=$((n + 1))
    [ -f "$so" ] || { warn "$so: no such file"; exit 1; }
    cp "$so" "$WORK/v$n.so"
    if [ "$TARGET" = E ]; then
        echo "v$n $so threads=$(threads $n)" >>"$WORK/builds.txt"
    else
        echo "v$n $so" >>"$WORK/builds.txt"
    fi
done
NV=$n
HAVE_MODULE=1

SECRET=$WORK/secret
new_secret "$SECRET"
log "generating $NREQ signed single-message deliveries"
node "$BENCH/gen.js" single "$SECRET" "$WORK/single.txt" "$NREQ" "c$(run_tag)" \
    || { warn "generator failed"; exit 1; }

RESULTS=$WORK/results.txt
{
    echo "# bench/compare.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), target $TARGET"
    echo "# $ROUNDS rounds of ${SECS}s runs; server on CPU ${SERVER_CPU:-any}, load on CPU ${LOAD_CPU:-any}"
    sed 's/^/# /' "$WORK/builds.txt"
    echo "# round build req/s us/req server_cpu% other% ratio_to_A p99_us"
} >"$RESULTS"
cat "$RESULTS"

# measure LABEL URL FIRST LAST MODE: one run; US is the server's CPU time
# per request (microseconds)
measure() {
    p0=$(proc_ticks "$NGX_PID")
    run_wrk "$1" "$2" "$3" "$4" "$5" "$SECS" "$NGX_PID" >/dev/null
    p1=$(proc_ticks "$NGX_PID")
    US=$(awk -v t=$((p1 - p0)) -v hz="$HZ" -v q="$(result_field "$1" requests)" \
        'BEGIN { if (q > 0) printf "%.1f", t / hz * 1e6 / q; else print 0 }')
}

NOT_RUN=""
r=0
while [ $r -lt "$ROUNDS" ]; do
    r=$((r + 1))
    turn=0
    while [ $turn -lt "$NV" ]; do
        turn=$((turn + 1))
        if [ $((r % 2)) = 1 ]; then v=$turn; else v=$((NV + 1 - turn)); fi
        MODULE_LOAD=$WORK/v$v.so
        if [ "$TARGET" = E ]; then
            start_e "$SECRET" "$(threads $v)" \
                || { warn "nginx did not start with v$v"; exit 1; }
        else
            start_nginx "$SECRET" || { warn "nginx did not start with v$v"; exit 1; }
        fi
        measure A "http://127.0.0.1:$PORT_A/webhook" 1 100000 cycle
        a_rps=$(result_field A rps)
        echo "$r A $a_rps $US $(result_field A server_cpu_pct) $(result_field A other_cpu_pct) 1 $(result_field A p99_us)" \
            | tee -a "$RESULTS"
        run_wrk warm "http://127.0.0.1:$PORT_B/webhook" 1 "$WARM_LAST" stop 1 "$NGX_PID" >/dev/null
        measure X "http://127.0.0.1:$PORT_B/webhook" $((WARM_LAST + 1)) "$NREQ" stop
        rps=$(result_field X rps)
        echo "$r v$v $rps $US $(result_field X server_cpu_pct) $(result_field X other_cpu_pct) $(awk -v a="$a_rps" -v b="$rps" 'BEGIN { printf "%.3f", (a > 0 ? b / a : 0) }') $(result_field X p99_us)" \
            | tee -a "$RESULTS"
        stop_all
    done
done

# medians per build over the rounds; then each build against v1, round
# by round
echo ""
awk -v nv="$NV" '
    /^#/ { if ($2 ~ /^v[0-9]+$/) { name[$2] = $3; for (i = 4; i <= NF; i++) name[$2] = name[$2] " " $i }
           next }
    { k = $2; c[k]++; rps[k, c[k]] = $3; us[k, c[k]] = $4; ra[k, c[k]] = $7
      p99[k, c[k]] = $8; byr[k, $1] = $4
      if ($1 > nr) nr = $1 }
    function med(arr, k, n,    i, j, t, a) {
        for (i = 1; i <= n; i++) a[i] = arr[k, i]
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        printf "%-4s %9s %8s %7s %8s  %s\n", "", "req/s", "us/req", "X/A", "p99 us", "(medians over the rounds)"
        printf "%-4s %9.0f %8.1f %7s %8.0f  nginx return 200\n", "A", med(rps, "A", c["A"]), med(us, "A", c["A"]), "1", med(p99, "A", c["A"])
        for (v = 1; v <= nv; v++) {
            k = "v" v
            printf "%-4s %9.0f %8.1f %7.3f %8.0f  %s\n", k, med(rps, k, c[k]), med(us, k, c[k]), med(ra, k, c[k]), med(p99, k, c[k]), name[k]
        }
        for (v = 2; v <= nv; v++) {
            k = "v" v; n = 0; w = 0
            for (r = 1; r <= nr; r++) {
                if (byr[k, r] + 0 > 0 && byr["v1", r] + 0 > 0) {
                    n++; q[k, n] = byr[k, r] / byr["v1", r]
                    if (byr[k, r] + 0 < byr["v1", r] + 0) w++
                }
            }
            if (n > 0)
                printf "%s against v1, round by round: CPU per request x%.3f (median of %d), lower in %d of %d\n", k, med(q, k, n), n, w, n
        }
    }' "$RESULTS" | tee -a "$RESULTS"

[ -z "$NOT_RUN" ] || { warn "not run: $NOT_RUN"; exit 1; }
exit 0
