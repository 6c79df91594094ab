/*
 * libFuzzer target: the fast reader against jansson.
 *
 * Build and run (or sh fuzz/run.sh json):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Isrc \
 *       fuzz/fuzz_json.c src/mw_*.c -ljansson -lcrypto -o build/fuzz_json
 *   build/fuzz_json -max_total_time=60 -dict=fuzz/fuzz_json.dict \
 *       build/fuzz/corpus-json
 *
 * What the reader returns must be what json_loadb() returns with the
 * flags mw_json_parse() gives it: an equal value, dumped the same way
 * (same key order).  When jansson refuses the input, the reader must
 * refuse it too.  And mw_json_parse() must come to the same result, or
 * the same refusal, with the reader first as without it.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


#define FUZZ_FLAGS  (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL \
                     | JSON_DECODE_ANY)


static int
fuzz_same(json_t *a, json_t *b)
{
    int    same;
    char  *x, *y;

    if (a == NULL || b == NULL) {
        return a == b;
    }

    if (!json_equal(a, b)) {
        return 0;
    }

    x = json_dumps(a, JSON_ENCODE_ANY);
    y = json_dumps(b, JSON_ENCODE_ANY);
    same = (x && y && strcmp(x, y) == 0);
    free(x);
    free(y);

    return same;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           e0[128], e1[128];
    json_t        *fast, *ref, *j0, *j1;
    json_error_t   e;
    const char    *buf;

    buf = (const char *) data;

    fast = mw_json_fast(buf, size);

    if (fast) {
        ref = json_loadb(buf, size, FUZZ_FLAGS, &e);

        if (!fuzz_same(fast, ref)) {
            abort();
        }

        json_decref(ref);
        json_decref(fast);
    }

    j0 = mw_json_parse(buf, size, 0, e0, sizeof(e0));
    j1 = mw_json_parse(buf, size, MW_JSON_FAST, e1, sizeof(e1));

    if (!fuzz_same(j0, j1) || (j0 == NULL && strcmp(e0, e1) != 0)) {
        abort();
    }

    json_decref(j0);
    json_decref(j1);

    return 0;
}
