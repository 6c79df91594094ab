/*
 * nginx-meta-webhook: bounded, strict JSON parsing.
 *
 * jansson does the parsing; this file adds what a webhook endpoint needs
 * around it: a depth bound checked before jansson recurses, a second try
 * for integers beyond 64 bits, and error reasons that never quote the
 * input (they end up in logs, and the input may hold personal data).
 *
 * With MW_JSON_FAST, a reader of this file tries first: it builds the same
 * jansson values through jansson's own constructors, for the common case
 * only (objects, arrays, strings, integers of up to 18 digits, true,
 * false, null), and gives up on anything else, however valid: reals,
 * long integers, lone surrogates, raw control bytes, invalid UTF-8, a
 * duplicate key, \u0000 in a key, too deep a nesting, trailing bytes.
 * jansson's json_loadb() then reads the whole input again and has the
 * last word: what the reader returns is what jansson returns, and every
 * error comes from jansson.  fuzz/fuzz_json.c checks exactly that.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
    char                 *scratch;      /* strings with escapes, decoded */
    size_t                used;
    size_t                size;
    unsigned              depth;
} mw_jr_t;


static json_t *mw_jr_value(mw_jr_t *r);
static void mw_jr_space(mw_jr_t *r);
static size_t mw_json_depth_scan(const char *buf, size_t len, size_t max);
static void mw_json_reason(const json_error_t *e, char *err, size_t errlen);


json_t *
mw_json_parse(const char *buf, size_t len, unsigned opts, char *err,
    size_t errlen)
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

    if (opts & MW_JSON_FAST) {
        root = mw_json_fast(buf, len);
        if (root) {
            return root;
        }
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
    flags = MW_JSON_FLAGS;

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


/* The reader: NULL means "not mine, ask jansson", never an error. */

json_t *
mw_json_fast(const char *buf, size_t len)
{
    json_t   *v;
    mw_jr_t   r;

    r.p = (const unsigned char *) buf;
    r.end = r.p + len;
    r.scratch = NULL;
    r.used = 0;
    r.size = len;
    r.depth = 0;

    v = mw_jr_value(&r);

    if (v) {
        mw_jr_space(&r);

        if (r.p != r.end) {
            json_decref(v);
            v = NULL;
        }
    }

    free(r.scratch);

    return v;
}


static void
mw_jr_space(mw_jr_t *r)
{
    while (r->p < r->end
           && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r'
               || *r->p == '\t'))
    {
        r->p++;
    }
}


/*
 * The length of the UTF-8 sequence at p (at most n bytes there), or 0 when
 * it is not one jansson accepts: no overlong forms, no surrogates, nothing
 * beyond U+10FFFF.
 */

static size_t
mw_jr_utf8(const unsigned char *p, size_t n)
{
    unsigned  c, lo, hi;
    size_t    len, i;

    c = p[0];
    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) {
            lo = 0xa0;
        } else if (c == 0xed) {
            hi = 0x9f;
        }

    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) {
            lo = 0x90;
        } else if (c == 0xf4) {
            hi = 0x8f;
        }

    } else {
        return 0;
    }

    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }

    return len;
}


/*
 * Past a run of plain string bytes at p: the quote or the backslash that
 * ends it, or NULL when a byte in it is one jansson refuses (a control
 * byte, invalid UTF-8) or the input ends first.
 */

static const unsigned char *
mw_jr_run(const unsigned char *p, const unsigned char *end)
{
    size_t  n;

    while (p < end) {
        if (*p == '"' || *p == '\\') {
            return p;
        }

        if (*p < 0x20) {
            return NULL;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        n = mw_jr_utf8(p, end - p);
        if (n == 0) {
            return NULL;
        }

        p += n;
    }

    return NULL;
}


/*
 * A string at r->p (an opening quote).  Without escapes, it is returned
 * where it is in the input; with them, decoded into the scratch space,
 * which the caller gives back (r->used) when done with it.
 */

static int
mw_jr_string(mw_jr_t *r, const char **out, size_t *outlen)
{
    unsigned              cp, lo;
    const unsigned char  *p, *start;
    unsigned char        *d;

    start = r->p + 1;

    p = mw_jr_run(start, r->end);
    if (p == NULL) {
        return -1;
    }

    if (*p == '"') {
        *out = (const char *) start;
        *outlen = p - start;
        r->p = p + 1;
        return 0;
    }

    /* escapes: decoded output is never longer than the input it came from */

    if (r->scratch == NULL) {
        r->scratch = malloc(r->size);
        if (r->scratch == NULL) {
            return -1;
        }
    }

    d = (unsigned char *) r->scratch + r->used;

    for ( ;; ) {
        memcpy(d, start, p - start);
        d += p - start;

        if (*p == '"') {
            break;
        }

        /* a backslash */

        if (r->end - p < 2) {
            return -1;
        }

        switch (p[1]) {
        case '"':  *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/':  *d++ = '/'; break;
        case 'b':  *d++ = '\b'; break;
        case 'f':  *d++ = '\f'; break;
        case 'n':  *d++ = '\n'; break;
        case 'r':  *d++ = '\r'; break;
        case 't':  *d++ = '\t'; break;

        case 'u':
            if (r->end - p < 6 || mw_hex4(p + 2, &cp) != 0) {
                return -1;
            }

            p += 4;

            if (cp >= 0xdc00 && cp <= 0xdfff) {
                return -1;
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                /* a high surrogate must have its low one right after */
                if (r->end - p < 8 || p[2] != '\\' || p[3] != 'u'
                    || mw_hex4(p + 4, &lo) != 0
                    || lo < 0xdc00 || lo > 0xdfff)
                {
                    return -1;
                }

                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }

            if (cp < 0x80) {
                *d++ = (unsigned char) cp;

            } else if (cp < 0x800) {
                *d++ = (unsigned char) (0xc0 | cp >> 6);
                *d++ = (unsigned char) (0x80 | (cp & 0x3f));

            } else if (cp < 0x10000) {
                *d++ = (unsigned char) (0xe0 | cp >> 12);
                *d++ = (unsigned char) (0x80 | (cp >> 6 & 0x3f));
                *d++ = (unsigned char) (0x80 | (cp & 0x3f));

            } else {
                *d++ = (unsigned char) (0xf0 | cp >> 18);
                *d++ = (unsigned char) (0x80 | (cp >> 12 & 0x3f));
                *d++ = (unsigned char) (0x80 | (cp >> 6 & 0x3f));
                *d++ = (unsigned char) (0x80 | (cp & 0x3f));
            }

            break;

        default:
            return -1;
        }

        start = p + 2;

        p = mw_jr_run(start, r->end);
        if (p == NULL) {
            return -1;
        }
    }

    *out = r->scratch + r->used;
    *outlen = (char *) d - *out;
    r->used += *outlen;
    r->p = p + 1;

    return 0;
}


static json_t *
mw_jr_number(mw_jr_t *r)
{
    int                   neg;
    size_t                digits;
    json_int_t            v;
    const unsigned char  *p;

    p = r->p;
    neg = (*p == '-');

    if (neg) {
        p++;
    }

    if (p == r->end || *p < '0' || *p > '9') {
        return NULL;
    }

    v = 0;
    digits = 0;

    if (*p == '0') {
        p++;

    } else {
        while (p < r->end && *p >= '0' && *p <= '9') {
            /* 18 digits always fit in 64 bits; longer ones are jansson's */
            if (++digits > 18) {
                return NULL;
            }
            v = v * 10 + (*p++ - '0');
        }
    }

    /* a real (or "01"): jansson's */
    if (p < r->end
        && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
    {
        return NULL;
    }

    r->p = p;

    return json_integer(neg ? -v : v);
}


/* Past an opening bracket: 1 when the container is empty (and closed). */

static int
mw_jr_open(mw_jr_t *r, unsigned char close)
{
    r->p++;
    mw_jr_space(r);

    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 1;
    }

    return 0;
}


/*
 * After a member or an element: 1 when the container closes here, 0 when
 * a comma announces another, -1 for anything else.
 */

static int
mw_jr_next(mw_jr_t *r, unsigned char close)
{
    mw_jr_space(r);

    if (r->p == r->end) {
        return -1;
    }

    if (*r->p == close) {
        r->p++;
        return 1;
    }

    if (*r->p != ',') {
        return -1;
    }

    r->p++;
    mw_jr_space(r);

    return 0;
}


static json_t *
mw_jr_object(mw_jr_t *r)
{
    int          rc;
    size_t       klen, mark;
    json_t      *o, *v;
    const char  *key;

    o = json_object();
    if (o == NULL || mw_jr_open(r, '}')) {
        return o;
    }

    for ( ;; ) {
        mark = r->used;

        if (r->p == r->end || *r->p != '"'
            || mw_jr_string(r, &key, &klen) != 0
            || memchr(key, '\0', klen) != NULL)
        {
            break;
        }

        mw_jr_space(r);

        if (r->p == r->end || *r->p != ':') {
            break;
        }

        r->p++;
        mw_jr_space(r);

        v = mw_jr_value(r);
        if (v == NULL) {
            break;
        }

        if (json_object_getn(o, key, klen) != NULL) {
            json_decref(v);
            break;
        }

        /* setn_new takes the value even when it fails */
        if (json_object_setn_new_nocheck(o, key, klen, v) != 0) {
            break;
        }

        r->used = mark;

        rc = mw_jr_next(r, '}');

        if (rc == 1) {
            return o;
        }

        if (rc < 0) {
            break;
        }
    }

    json_decref(o);

    return NULL;
}


static json_t *
mw_jr_array(mw_jr_t *r)
{
    int      rc;
    json_t  *a, *v;

    a = json_array();
    if (a == NULL || mw_jr_open(r, ']')) {
        return a;
    }

    for ( ;; ) {
        v = mw_jr_value(r);

        /* append_new takes the value even when it fails */
        if (v == NULL || json_array_append_new(a, v) != 0) {
            break;
        }

        rc = mw_jr_next(r, ']');

        if (rc == 1) {
            return a;
        }

        if (rc < 0) {
            break;
        }
    }

    json_decref(a);

    return NULL;
}


static json_t *
mw_jr_value(mw_jr_t *r)
{
    size_t       len, mark;
    json_t      *v;
    const char  *s;

    mw_jr_space(r);

    if (r->p == r->end) {
        return NULL;
    }

    switch (*r->p) {

    case '{':
    case '[':
        /* the same bound as mw_json_depth_scan(): deeper is jansson's */
        if (++r->depth > MW_JSON_MAX_DEPTH) {
            return NULL;
        }

        v = (*r->p == '{') ? mw_jr_object(r) : mw_jr_array(r);
        r->depth--;
        return v;

    case '"':
        mark = r->used;

        if (mw_jr_string(r, &s, &len) != 0) {
            return NULL;
        }

        v = json_stringn_nocheck(s, len);
        r->used = mark;
        return v;

    case 't':
        if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
            r->p += 4;
            return json_true();
        }
        return NULL;

    case 'f':
        if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
            r->p += 5;
            return json_false();
        }
        return NULL;

    case 'n':
        if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
            r->p += 4;
            return json_null();
        }
        return NULL;

    default:
        return mw_jr_number(r);
    }
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
