/*
 * The fast reader against jansson, for the unit tests and the fuzz target
 * (fuzz/fuzz_json.c includes it too).  "The same" is what the application
 * could tell apart: an equal value, and the same dump, key order included.
 */

#ifndef JSON_SAME_H_INCLUDED
#define JSON_SAME_H_INCLUDED

#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


/* Whether a and b are the same document (two NULLs are). */

static int
json_same(json_t *a, json_t *b)
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


/*
 * 1 when the reader takes doc and builds what json_loadb() builds with the
 * core's flags (so a document jansson refuses fails it), 0 when it builds
 * something else, 2 when it leaves doc to jansson.
 */

static int
json_fast_as_jansson(const char *doc, size_t len)
{
    int            same;
    json_t        *fast, *ref;
    json_error_t   e;

    fast = mw_json_fast(doc, len);
    if (fast == NULL) {
        return 2;
    }

    ref = json_loadb(doc, len, MW_JSON_FLAGS, &e);
    same = (ref != NULL && json_same(fast, ref));

    json_decref(fast);
    json_decref(ref);

    return same;
}

#endif /* JSON_SAME_H_INCLUDED */
