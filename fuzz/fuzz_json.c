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
#include "../t/unit/json_same.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         e0[128], e1[128];
    json_t      *j0, *j1;
    const char  *buf;

    buf = (const char *) data;

    if (json_fast_as_jansson(buf, size) == 0) {
        abort();
    }

    j0 = mw_json_parse(buf, size, 0, e0, sizeof(e0));
    j1 = mw_json_parse(buf, size, MW_JSON_FAST, e1, sizeof(e1));

    if (!json_same(j0, j1) || (j0 == NULL && strcmp(e0, e1) != 0)) {
        abort();
    }

    json_decref(j0);
    json_decref(j1);

    return 0;
}
