/*
 * nginx-meta-webhook: bounded, strict JSON parsing.
 *
 * jansson does the parsing; this file adds what a webhook endpoint needs
 * around it: a depth bound checked before jansson recurses, a second try
 * for integers beyond 64 bits, and error reasons that never quote the
 * input (they end up in logs, and the input may hold personal data).
 */

#include <stdio.h>
#include <string.h>

#include "mw_core.h"


static size_t mw_json_depth_scan(const char *buf, size_t len, size_t max);
static void mw_json_reason(const json_error_t *e, char *err, size_t errlen);


json_t *
mw_json_parse(const char *buf, size_t len, char *err, size_t errlen)
{
    size_t        flags, at;
    json_t       *root;
    json_error_t  e;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (buf == NULL || len == 0) {
        if (err && errlen) {
            snprintf(err, errlen, "empty body");
        }
        return NULL;
    }

    /*
     * jansson's parser recurses once per nesting level; refuse a hostile
     * depth in one linear pass before any recursion or allocation.
     */
    at = mw_json_depth_scan(buf, len, MW_JSON_MAX_DEPTH);
    if (at != (size_t) -1) {
        if (err && errlen) {
            snprintf(err, errlen, "nesting deeper than %d at byte %zu",
                     MW_JSON_MAX_DEPTH, at);
        }
        return NULL;
    }

    /*
     * JSON_DECODE_ANY: a scalar document is still JSON; the caller tells
     * "not JSON" from "not a delivery".
     */
    flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY;

    /*
     * jansson records no error at all when an allocation fails while it
     * builds a value, and leaves the error code byte as it found it: it
     * starts zeroed, so that "nothing recorded" can be told apart.
     */
    memset(&e, 0, sizeof(json_error_t));

    root = json_loadb(buf, len, flags, &e);

    if (root == NULL
        && e.text[0] != '\0'
        && json_error_code(&e) == json_error_numeric_overflow)
    {
        /*
         * One integer beyond int64 (an id Meta sends as a number, say)
         * must not cost the whole batch: keep every integer as a real.
         */
        root = json_loadb(buf, len, flags | JSON_DECODE_INT_AS_REAL, &e);
    }

    if (root == NULL) {
        if (e.text[0] == '\0') {
            /*
             * Not a verdict on the input: the delivery must be retried,
             * not dead-lettered.  (An allocation failure inside a string
             * still reads as "not JSON": jansson reports it as an invalid
             * token.)
             */
            if (err && errlen) {
                snprintf(err, errlen, "%s", MW_JSON_ENOMEM);
            }

        } else {
            mw_json_reason(&e, err, errlen);
        }
    }

    return root;
}


void
mw_json_free(void *p)
{
    json_free_t    jfree;
    json_malloc_t  jmalloc;

    if (p == NULL) {
        return;
    }

    /* whatever allocator is installed now: it must be the one that was */
    json_get_alloc_funcs(&jmalloc, &jfree);
    jfree(p);
}


/*
 * Returns the offset of the first bracket that opens level max + 1, or
 * (size_t) -1 when the nesting stays within max.  Brackets inside strings
 * do not count; a backslash inside a string hides the next byte.
 */
static size_t
mw_json_depth_scan(const char *buf, size_t len, size_t max)
{
    size_t                i, depth;
    const unsigned char  *p, *q, *b;

    p = (const unsigned char *) buf;
    depth = 0;

    for (i = 0; i < len; i++) {

        switch (p[i]) {

        case '"':
            /*
             * Most of a payload's bytes are in strings: skip to the next
             * quote with memchr(), which is escaped only when an odd run
             * of backslashes precedes it.
             */
            for ( ;; ) {
                q = memchr(p + i + 1, '"', len - i - 1);
                if (q == NULL) {
                    return (size_t) -1;
                }

                i = q - p;

                for (b = q; b > p && b[-1] == '\\'; b--) { /* void */ }

                if ((q - b) % 2 == 0) {
                    break;
                }
            }
            break;

        case '[':
        case '{':
            if (++depth > max) {
                return i;
            }
            break;

        case ']':
        case '}':
            /* unbalanced input is jansson's to report */
            if (depth) {
                depth--;
            }
            break;

        default:
            break;
        }
    }

    return (size_t) -1;
}


/*
 * jansson's own text may quote the input ("invalid token near 'xyz'"), so
 * only its error code and byte position are used.
 */
static void
mw_json_reason(const json_error_t *e, char *err, size_t errlen)
{
    const char  *what;
    long         pos;

    if (err == NULL || errlen == 0) {
        return;
    }

    pos = e->position;

    switch (json_error_code(e)) {

    case json_error_out_of_memory:
        snprintf(err, errlen, "%s", MW_JSON_ENOMEM);
        return;

    case json_error_stack_overflow:
        snprintf(err, errlen, "nesting deeper than %d", MW_JSON_MAX_DEPTH);
        return;

    case json_error_invalid_utf8:
        what = "invalid UTF-8";
        break;

    case json_error_premature_end_of_input:
        what = "truncated JSON";
        break;

    case json_error_end_of_input_expected:
        what = "data after the JSON document";
        break;

    case json_error_null_character:
        what = "NUL byte";
        break;

    case json_error_null_byte_in_key:
        what = "\\u0000 in an object key";
        break;

    case json_error_duplicate_key:
        what = "duplicate key";
        break;

    case json_error_numeric_overflow:
        what = "number out of range";
        break;

    default:
        /*
         * Lone surrogates are reported as a syntax error; a prefix test on
         * jansson's message (never copied) gives a more useful reason.
         */
        if (strncmp(e->text, "invalid Unicode", 15) == 0) {
            what = "invalid \\u escape";

        } else {
            what = "not JSON";
        }
        break;
    }

    snprintf(err, errlen, "%s at byte %ld", what, pos);
}
