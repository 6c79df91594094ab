#!/bin/sh
#
# Builds every fuzz/fuzz_*.c libFuzzer target against the pure core and
# runs each for FUZZ_SECONDS (default 30).  Corpora live in
# build/fuzz/corpus-<name>, seeded from samples/*.json; a dictionary
# fuzz/fuzz_<name>.dict is used when present.  Exits non-zero when a target
# does not build or finds a crash (the reproducer is left in build/fuzz/).
#
#   sh fuzz/run.sh                  all targets
#   sh fuzz/run.sh quarantine       only fuzz/fuzz_quarantine.c

set -u

cd "$(dirname "$0")/.." || exit 1

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
OUT=build/fuzz
CC_FUZZ=${CC_FUZZ:-clang}
CFLAGS_FUZZ="-g -O1 -fsanitize=fuzzer,address,undefined"
CFLAGS_FUZZ="$CFLAGS_FUZZ -fno-sanitize-recover=undefined -Isrc"

mkdir -p "$OUT" || exit 1

# libFuzzer's runtime is in libclang-rt-dev, only recommended by clang
probe_fuzzer() {
    printf '%s\n' \
        'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)' \
        '{ (void) d; (void) n; return 0; }' >"$OUT/probe.c"
    "$CC_FUZZ" -fsanitize=fuzzer "$OUT/probe.c" -o "$OUT/probe" \
        >/dev/null 2>&1
}

if ! command -v "$CC_FUZZ" >/dev/null 2>&1 || ! probe_fuzzer; then
    echo "fuzz: installing clang and libFuzzer"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
               --no-install-recommends clang libclang-rt-dev >/dev/null
    if ! probe_fuzzer; then
        echo "fuzz: clang with -fsanitize=fuzzer is not available" >&2
        exit 1
    fi
fi

rm -f "$OUT/probe" "$OUT/probe.c"

# every target links the whole core, as the unit tests do
CORE=
for f in src/mw_*.c; do
    [ -f "$f" ] && CORE="$CORE $f"
done

failed=
ran=0

for target in fuzz/fuzz_*.c; do
    [ -f "$target" ] || continue

    name=$(basename "$target" .c)
    name=${name#fuzz_}

    if [ $# -gt 0 ]; then
        wanted=
        for w in "$@"; do
            [ "$w" = "$name" ] && wanted=1
        done
        [ -n "$wanted" ] || continue
    fi

    bin="$OUT/fuzz_$name"
    corpus="$OUT/corpus-$name"
    log="$OUT/fuzz_$name.log"

    echo "fuzz: building $name"
    # shellcheck disable=SC2086
    if ! "$CC_FUZZ" $CFLAGS_FUZZ "$target" $CORE -ljansson -lcrypto \
             -o "$bin"
    then
        echo "fuzz: $name does not build" >&2
        failed="$failed $name"
        continue
    fi

    mkdir -p "$corpus"
    for s in samples/*.json; do
        [ -f "$s" ] && cp -f "$s" "$corpus/"
    done

    dict=
    [ -f "fuzz/fuzz_$name.dict" ] && dict="-dict=fuzz/fuzz_$name.dict"

    echo "fuzz: running $name for ${FUZZ_SECONDS}s (log: $log)"
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/$name-" $dict \
        "$corpus" >"$log" 2>&1
    rc=$?
    ran=$((ran + 1))

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: $name FAILED (exit $rc); last lines of $log:" >&2
        tail -n 30 "$log" >&2
        failed="$failed $name"
    else
        n=$(find "$corpus" -type f | wc -l | tr -d ' ')
        echo "fuzz: $name ok, ${runs:-?} runs, corpus $n inputs"
    fi
done

if [ "$ran" -eq 0 ] && [ -z "$failed" ]; then
    echo "fuzz: no target ran" >&2
    exit 1
fi

if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed" >&2
    exit 1
fi

echo "fuzz: all $ran targets ok"
