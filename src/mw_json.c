/*
 * nginx-meta-webhook: bounded, strict JSON parsing.
 *
 * The documents are jansson values, as everywhere in the core, but they
 * are not read with json_loadb(): jansson's reader takes a function call,
 * a UTF-8 check and a buffer append per input byte, and was most of the
 * CPU a delivery costs.  This reader scans runs of plain bytes at once
 * and builds the same values with jansson's own constructors.
 *
 * It accepts and refuses exactly what json_loadb() does with
 * JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, gives the
 * same values (integers, reals, strings, member order), and reports the
 * same error at the same byte: its structure follows jansson's lexer and
 * parser for that reason, down to which byte is "read" when.  On top of
 * that it adds what a webhook endpoint needs: a depth bound, a second try
 * for integers beyond 64 bits, and error reasons that never quote the
 * input (they end up in logs, and the input may hold personal data).
 */

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


/* what went wrong, in the words of mw_json_parse()'s reasons */
typedef enum {
    MW_JE_NONE = 0,
    MW_JE_SYNTAX,                   /* "not JSON" */
    MW_JE_TRUNCATED,
    MW_JE_TRAILING,
    MW_JE_UTF8,
    MW_JE_UNICODE,                  /* a lone or reversed surrogate */
    MW_JE_KEY_NUL,
    MW_JE_DUPLICATE,
    MW_JE_RANGE,
    MW_JE_DEPTH,
    MW_JE_NOMEM
} mw_json_error_e;


/* tokens: the structural characters stand for themselves */
#define MW_TOK_INVALID       -1
#define MW_TOK_EOF           0
#define MW_TOK_STRING        256
#define MW_TOK_INTEGER       257
#define MW_TOK_REAL          258
#define MW_TOK_TRUE          259
#define MW_TOK_FALSE         260
#define MW_TOK_NULL          261


/* strings up to this size are unescaped without an allocation */
#define MW_JSON_SCRATCH      1024


typedef struct {
    const unsigned char     *start;
    const unsigned char     *p;             /* jansson's stream position */
    const unsigned char     *end;

    int                      int_as_real;
    int                      depth;

    int                      tok;
    int                      tok_empty;     /* EOF or a NUL byte: jansson
                                               then says "premature end" */
    const char              *str;           /* MW_TOK_STRING */
    size_t                   str_len;
    int                      str_nul;       /* a \u0000 in it */
    int                      str_copy;      /* str is in the scratch */
    json_int_t               integer;
    double                   real;

    mw_json_error_e          error;
    size_t                   pos;

    char                    *scratch;
    size_t                   scratch_size;
    char                     scratch0[MW_JSON_SCRATCH];
} mw_jp_t;


static json_t *mw_jp_document(mw_jp_t *jp);
static json_t *mw_jp_value(mw_jp_t *jp);
static json_t *mw_jp_object(mw_jp_t *jp);
static json_t *mw_jp_array(mw_jp_t *jp);
static int mw_jp_scan(mw_jp_t *jp);
static int mw_jp_string(mw_jp_t *jp, const unsigned char *p);
static int mw_jp_number(mw_jp_t *jp, const unsigned char *p);
static int mw_jp_word(mw_jp_t *jp, const unsigned char *p);
static int mw_jp_bad_utf8(mw_jp_t *jp, const unsigned char *p);
static int mw_jp_unescape(mw_jp_t *jp, const unsigned char *s,
    const unsigned char *e);
static void mw_jp_fail(mw_jp_t *jp, mw_json_error_e error,
    const unsigned char *at);
static size_t mw_utf8_seq(const unsigned char *p, const unsigned char *end);
static int mw_hex(unsigned c);
static size_t mw_json_depth_scan(const char *buf, size_t len, size_t max);
static void mw_json_reason(mw_json_error_e error, size_t pos, char *err,
    size_t errlen);


/*
 * Bytes a string's fast scan stops at: the quote, the backslash, control
 * characters and the lead bytes of multibyte sequences.
 */
static const unsigned char  mw_json_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
};


#define mw_isdigit(c)        ((c) >= '0' && (c) <= '9')
#define mw_isalpha(c)        (((c) | 0x20) >= 'a' && ((c) | 0x20) <= 'z')


json_t *
mw_json_parse(const char *buf, size_t len, char *err, size_t errlen)
{
    size_t    at;
    json_t   *root;
    mw_jp_t   jp;

    if (err && errlen) {
        err[0] = '\0';
    }

    if (buf == NULL || len == 0) {
        if (err && errlen) {
            snprintf(err, errlen, "empty body");
        }
        return NULL;
    }

    jp.start = (const unsigned char *) buf;
    jp.end = jp.start + len;
    jp.int_as_real = 0;
    jp.scratch = jp.scratch0;
    jp.scratch_size = sizeof(jp.scratch0);

    root = mw_jp_document(&jp);

    if (root == NULL && jp.error != MW_JE_NOMEM) {
        /*
         * The depth bound is a property of the whole document, checked
         * as if before parsing (the parser itself never goes deeper than
         * the bound): a hostile depth is reported as such, wherever a
         * syntax error comes first.  It costs a pass only on failure.
         */
        at = mw_json_depth_scan(buf, len, MW_JSON_MAX_DEPTH);

        if (at != (size_t) -1) {
            jp.error = MW_JE_DEPTH;
            jp.pos = at;

        } else if (jp.error == MW_JE_RANGE) {
            /*
             * One integer beyond int64 (an id Meta sends as a number,
             * say) must not cost the whole batch: keep every integer as a
             * real, as jansson's JSON_DECODE_INT_AS_REAL does.
             */
            jp.int_as_real = 1;
            root = mw_jp_document(&jp);
        }
    }

    if (jp.scratch != jp.scratch0) {
        free(jp.scratch);
    }

    if (root == NULL) {
        mw_json_reason(jp.error, jp.pos, err, errlen);
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


/* jansson's parse_json(), with JSON_DECODE_ANY */
static json_t *
mw_jp_document(mw_jp_t *jp)
{
    json_t  *root;

    jp->p = jp->start;
    jp->depth = 0;
    jp->tok = MW_TOK_INVALID;
    jp->error = MW_JE_NONE;
    jp->pos = 0;

    mw_jp_scan(jp);

    root = mw_jp_value(jp);
    if (root == NULL) {
        return NULL;
    }

    if (mw_jp_scan(jp) != MW_TOK_EOF) {
        mw_jp_fail(jp, MW_JE_TRAILING, jp->p);
        json_decref(root);
        return NULL;
    }

    return root;
}


/* the value whose first token was just scanned: parse_value() */
static json_t *
mw_jp_value(mw_jp_t *jp)
{
    json_t  *v;

    switch (jp->tok) {

    case MW_TOK_STRING:
        v = json_stringn_nocheck(jp->str, jp->str_len);
        break;

    case MW_TOK_INTEGER:
        v = json_integer(jp->integer);
        break;

    case MW_TOK_REAL:
        v = json_real(jp->real);
        break;

    case MW_TOK_TRUE:
        return json_true();

    case MW_TOK_FALSE:
        return json_false();

    case MW_TOK_NULL:
        return json_null();

    case '{':
    case '[':
        if (jp->depth == MW_JSON_MAX_DEPTH) {
            /* mw_json_parse() finds where, and says so */
            mw_jp_fail(jp, MW_JE_DEPTH, jp->p - 1);
            return NULL;
        }

        jp->depth++;
        v = (jp->tok == '{') ? mw_jp_object(jp) : mw_jp_array(jp);
        jp->depth--;

        return v;

    default:
        /* "invalid token" or "unexpected token" */
        mw_jp_fail(jp, MW_JE_SYNTAX, jp->p);
        return NULL;
    }

    if (v == NULL) {
        mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
    }

    return v;
}


/* parse_object(): the duplicate check comes before anything after a key */
static json_t *
mw_jp_object(mw_jp_t *jp)
{
    char                 *copy;
    size_t                len, n;
    json_t               *obj, *v;
    const char           *key;
    const unsigned char  *at;

    obj = json_object();
    if (obj == NULL) {
        mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
        return NULL;
    }

    if (mw_jp_scan(jp) == '}') {
        return obj;
    }

    for ( ;; ) {
        if (jp->tok != MW_TOK_STRING) {
            /* "string or '}' expected" */
            mw_jp_fail(jp, MW_JE_SYNTAX, jp->p);
            goto failed;
        }

        at = jp->p;

        if (jp->str_nul) {
            mw_jp_fail(jp, MW_JE_KEY_NUL, at);
            goto failed;
        }

        key = jp->str;
        len = jp->str_len;
        copy = NULL;

        if (jp->str_copy) {
            /* the scratch is the value's next: an escaped key is rare */
            copy = malloc(len + 1);
            if (copy == NULL) {
                mw_jp_fail(jp, MW_JE_NOMEM, at);
                goto failed;
            }

            memcpy(copy, key, len);
            copy[len] = '\0';
            key = copy;
        }

        v = NULL;

        if (mw_jp_scan(jp) != ':') {
            /* "':' expected" */
            mw_jp_fail(jp, MW_JE_SYNTAX, jp->p);

        } else {
            mw_jp_scan(jp);
            v = mw_jp_value(jp);
        }

        if (v == NULL) {
            /* jansson would have found a repeated key before anything */
            if (json_object_getn(obj, key, len) != NULL) {
                jp->error = MW_JE_NONE;
                mw_jp_fail(jp, MW_JE_DUPLICATE, at);
            }

            free(copy);
            goto failed;
        }

        /*
         * A repeated key replaces the value and leaves the size as it
         * was: one hash lookup per member instead of a lookup and a set.
         */
        n = json_object_size(obj);

        if (json_object_setn_new_nocheck(obj, key, len, v) != 0) {
            free(copy);
            mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
            goto failed;
        }

        free(copy);

        if (json_object_size(obj) == n) {
            jp->error = MW_JE_NONE;
            mw_jp_fail(jp, MW_JE_DUPLICATE, at);
            goto failed;
        }

        if (mw_jp_scan(jp) != ',') {
            break;
        }

        mw_jp_scan(jp);
    }

    if (jp->tok != '}') {
        /* "'}' expected" */
        mw_jp_fail(jp, MW_JE_SYNTAX, jp->p);
        goto failed;
    }

    return obj;

failed:

    json_decref(obj);
    return NULL;
}


/* parse_array() */
static json_t *
mw_jp_array(mw_jp_t *jp)
{
    json_t  *arr, *v;

    arr = json_array();
    if (arr == NULL) {
        mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
        return NULL;
    }

    if (mw_jp_scan(jp) == ']') {
        return arr;
    }

    while (jp->tok != MW_TOK_EOF) {
        v = mw_jp_value(jp);
        if (v == NULL) {
            goto failed;
        }

        if (json_array_append_new(arr, v) != 0) {
            mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
            goto failed;
        }

        if (mw_jp_scan(jp) != ',') {
            break;
        }

        mw_jp_scan(jp);
    }

    if (jp->tok != ']') {
        /* "']' expected" */
        mw_jp_fail(jp, MW_JE_SYNTAX, jp->p);
        goto failed;
    }

    return arr;

failed:

    json_decref(arr);
    return NULL;
}


/*
 * The next token: lex_scan().  jp->p ends where jansson's stream position
 * would, which is the byte its errors name.
 */
static int
mw_jp_scan(mw_jp_t *jp)
{
    unsigned              c;
    size_t                n;
    const unsigned char  *p;

    p = jp->p;

    while (p < jp->end
           && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    {
        p++;
    }

    jp->tok_empty = 0;

    if (p == jp->end) {
        jp->p = p;
        jp->tok_empty = 1;
        return jp->tok = MW_TOK_EOF;
    }

    c = *p;

    switch (c) {

    case '{':
    case '}':
    case '[':
    case ']':
    case ':':
    case ',':
        jp->p = p + 1;
        return jp->tok = c;

    case '"':
        return jp->tok = mw_jp_string(jp, p);

    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return jp->tok = mw_jp_number(jp, p);

    default:
        break;
    }

    if (mw_isalpha(c)) {
        return jp->tok = mw_jp_word(jp, p);
    }

    if (c < 0x80) {
        /* a NUL byte is an empty token to jansson: "premature end" */
        jp->tok_empty = (c == '\0');
        jp->p = p + 1;
        return jp->tok = MW_TOK_INVALID;
    }

    /* jansson reads the whole sequence, and checks it first */
    n = mw_utf8_seq(p, jp->end);

    if (n == 0) {
        mw_jp_fail(jp, MW_JE_UTF8, p);
        jp->p = p;
        return jp->tok = MW_TOK_INVALID;
    }

    jp->p = p + n;
    return jp->tok = MW_TOK_INVALID;
}


/*
 * A string token from its opening quote: first the checks jansson's
 * lexer makes byte by byte (all of them, up to the closing quote), then
 * the unescaping, whose surrogate errors come only after.  A string
 * without escapes is used in place.
 */
static int
mw_jp_string(mw_jp_t *jp, const unsigned char *p)
{
    int                   escaped;
    size_t                n, i;
    const unsigned char  *q, *end;

    end = jp->end;
    escaped = 0;

    for (q = p + 1; ; ) {

        while (q < end && !mw_json_stop[*q]) {
            q++;
        }

        if (q == end) {
            mw_jp_fail(jp, MW_JE_TRUNCATED, end);
            jp->p = end;
            return MW_TOK_INVALID;
        }

        if (*q == '"') {
            break;
        }

        if (*q < 0x20) {
            /* a control character, the position before it */
            mw_jp_fail(jp, MW_JE_SYNTAX, q);
            jp->p = q;
            return MW_TOK_INVALID;
        }

        if (*q >= 0x80) {
            n = mw_utf8_seq(q, end);

            if (n == 0) {
                mw_jp_fail(jp, MW_JE_UTF8, q);
                jp->p = q;
                return MW_TOK_INVALID;
            }

            q += n;
            continue;
        }

        /* a backslash */
        escaped = 1;
        q++;

        if (q < end && *q == 'u') {
            q++;

            for (i = 0; i < 4; i++, q++) {
                if (q == end) {
                    mw_jp_fail(jp, MW_JE_SYNTAX, end);
                    jp->p = end;
                    return MW_TOK_INVALID;
                }

                if (mw_hex(*q) < 0) {
                    return mw_jp_bad_utf8(jp, q);
                }
            }

            continue;
        }

        if (q < end
            && (*q == '"' || *q == '\\' || *q == '/' || *q == 'b'
                || *q == 'f' || *q == 'n' || *q == 'r' || *q == 't'))
        {
            q++;
            continue;
        }

        /* "invalid escape" */
        if (q == end) {
            mw_jp_fail(jp, MW_JE_SYNTAX, end);
            jp->p = end;
            return MW_TOK_INVALID;
        }

        return mw_jp_bad_utf8(jp, q);
    }

    /* q is at the closing quote */
    jp->p = q + 1;

    if (!escaped) {
        jp->str = (const char *) p + 1;
        jp->str_len = q - (p + 1);
        jp->str_nul = 0;
        jp->str_copy = 0;
        return MW_TOK_STRING;
    }

    if (mw_jp_unescape(jp, p + 1, q) != 0) {
        return MW_TOK_INVALID;
    }

    return MW_TOK_STRING;
}


/*
 * jansson read the byte at p as a character it did not expect there (an
 * invalid escape): the error is at the byte after it, unless the byte
 * starts an invalid UTF-8 sequence, which the reading itself refused.
 */
static int
mw_jp_bad_utf8(mw_jp_t *jp, const unsigned char *p)
{
    if (*p >= 0x80 && mw_utf8_seq(p, jp->end) == 0) {
        mw_jp_fail(jp, MW_JE_UTF8, p);
        jp->p = p;

    } else {
        mw_jp_fail(jp, MW_JE_SYNTAX, p + 1);
        jp->p = p + 1;
    }

    return MW_TOK_INVALID;
}


/* [s, e): a string's checked contents, with escapes */
static int
mw_jp_unescape(mw_jp_t *jp, const unsigned char *s, const unsigned char *e)
{
    char      *t, *buf;
    size_t     size;
    uint32_t   cp, lo;

    /* the unescaped string is never longer than the escaped one */
    size = e - s + 1;

    if (size > jp->scratch_size) {
        buf = malloc(size);
        if (buf == NULL) {
            mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
            return -1;
        }

        if (jp->scratch != jp->scratch0) {
            free(jp->scratch);
        }

        jp->scratch = buf;
        jp->scratch_size = size;
    }

    t = jp->scratch;
    jp->str_nul = 0;

    while (s < e) {
        if (*s != '\\') {
            *t++ = (char) *s++;
            continue;
        }

        s++;

        switch (*s++) {
        case '"':
            *t++ = '"';
            continue;
        case '\\':
            *t++ = '\\';
            continue;
        case '/':
            *t++ = '/';
            continue;
        case 'b':
            *t++ = '\b';
            continue;
        case 'f':
            *t++ = '\f';
            continue;
        case 'n':
            *t++ = '\n';
            continue;
        case 'r':
            *t++ = '\r';
            continue;
        case 't':
            *t++ = '\t';
            continue;
        default: /* 'u', four hex digits checked */
            break;
        }

        cp = (mw_hex(s[0]) << 12) | (mw_hex(s[1]) << 8) | (mw_hex(s[2]) << 4)
             | mw_hex(s[3]);
        s += 4;

        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (e - s < 6 || s[0] != '\\' || s[1] != 'u') {
                /* "invalid Unicode": after the whole string */
                mw_jp_fail(jp, MW_JE_UNICODE, jp->p);
                return -1;
            }

            lo = (mw_hex(s[2]) << 12) | (mw_hex(s[3]) << 8)
                 | (mw_hex(s[4]) << 4) | mw_hex(s[5]);

            if (lo < 0xdc00 || lo > 0xdfff) {
                mw_jp_fail(jp, MW_JE_UNICODE, jp->p);
                return -1;
            }

            s += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);

        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            mw_jp_fail(jp, MW_JE_UNICODE, jp->p);
            return -1;
        }

        if (cp < 0x80) {
            *t++ = (char) cp;
            jp->str_nul |= (cp == 0);

        } else if (cp < 0x800) {
            *t++ = (char) (0xc0 | (cp >> 6));
            *t++ = (char) (0x80 | (cp & 0x3f));

        } else if (cp < 0x10000) {
            *t++ = (char) (0xe0 | (cp >> 12));
            *t++ = (char) (0x80 | ((cp >> 6) & 0x3f));
            *t++ = (char) (0x80 | (cp & 0x3f));

        } else {
            *t++ = (char) (0xf0 | (cp >> 18));
            *t++ = (char) (0x80 | ((cp >> 12) & 0x3f));
            *t++ = (char) (0x80 | ((cp >> 6) & 0x3f));
            *t++ = (char) (0x80 | (cp & 0x3f));
        }
    }

    jp->str = jp->scratch;
    jp->str_len = t - jp->scratch;
    jp->str_copy = 1;

    return 0;
}


/*
 * A number token: lex_scan_number().  Where the grammar breaks, jansson
 * has read (and so UTF-8-checked) the byte that breaks it, and its
 * position is before that byte, or after it for a '.' not followed by a
 * digit.
 */
static int
mw_jp_number(mw_jp_t *jp, const unsigned char *p)
{
    int                   neg, real;
    char                  tmp[64], *num, *dot;
    size_t                len;
    uint64_t              v;
    const char           *point;
    const unsigned char  *q, *end;

    end = jp->end;
    q = p;
    neg = (*q == '-');

    if (neg) {
        q++;
    }

    if (q < end && *q == '0') {
        q++;

        if (q < end && mw_isdigit(*q)) {
            /* a leading zero */
            jp->p = q;
            return MW_TOK_INVALID;
        }

    } else if (q < end && mw_isdigit(*q)) {
        while (q < end && mw_isdigit(*q)) {
            q++;
        }

    } else {
        /* a '-' alone */
        jp->p = q;

        if (q < end && *q >= 0x80 && mw_utf8_seq(q, end) == 0) {
            mw_jp_fail(jp, MW_JE_UTF8, q);
        }

        return MW_TOK_INVALID;
    }

    real = 0;

    if (q < end && *q == '.') {
        real = 1;
        q++;

        if (q == end || !mw_isdigit(*q)) {
            jp->p = q;

            if (q < end && *q >= 0x80 && mw_utf8_seq(q, end) == 0) {
                mw_jp_fail(jp, MW_JE_UTF8, q);
            }

            return MW_TOK_INVALID;
        }

        while (q < end && mw_isdigit(*q)) {
            q++;
        }
    }

    if (q < end && (*q == 'e' || *q == 'E')) {
        real = 1;
        q++;

        if (q < end && (*q == '+' || *q == '-')) {
            q++;
        }

        if (q == end || !mw_isdigit(*q)) {
            jp->p = q;

            if (q < end && *q >= 0x80 && mw_utf8_seq(q, end) == 0) {
                mw_jp_fail(jp, MW_JE_UTF8, q);
            }

            return MW_TOK_INVALID;
        }

        while (q < end && mw_isdigit(*q)) {
            q++;
        }
    }

    jp->p = q;

    /* the byte after the number was read too */
    if (q < end && *q >= 0x80 && mw_utf8_seq(q, end) == 0) {
        mw_jp_fail(jp, MW_JE_UTF8, q);
        return MW_TOK_INVALID;
    }

    len = q - p;

    if (!real && !jp->int_as_real) {
        v = 0;

        for (q = p + neg; q < jp->p; q++) {
            if (v > (UINT64_MAX - (*q - '0')) / 10) {
                v = UINT64_MAX;
                break;
            }

            v = v * 10 + (*q - '0');
        }

        /* strtoll's range */
        if (v > (uint64_t) INT64_MAX + neg) {
            mw_jp_fail(jp, MW_JE_RANGE, jp->p);
            return MW_TOK_INVALID;
        }

        jp->integer = neg ? (json_int_t) (0 - v) : (json_int_t) v;
        return MW_TOK_INTEGER;
    }

    /* strtod, with the locale's decimal point as jansson gives it */
    num = (len < sizeof(tmp)) ? tmp : malloc(len + 1);

    if (num == NULL) {
        mw_jp_fail(jp, MW_JE_NOMEM, jp->p);
        return MW_TOK_INVALID;
    }

    memcpy(num, p, len);
    num[len] = '\0';

    point = localeconv()->decimal_point;

    if (point[0] != '.' && (dot = strchr(num, '.')) != NULL) {
        *dot = point[0];
    }

    errno = 0;
    jp->real = strtod(num, NULL);

    if (num != tmp) {
        free(num);
    }

    if ((jp->real == HUGE_VAL || jp->real == -HUGE_VAL) && errno == ERANGE) {
        mw_jp_fail(jp, MW_JE_RANGE, jp->p);
        return MW_TOK_INVALID;
    }

    return MW_TOK_REAL;
}


/* true, false, null, or an invalid word: jansson reads letters to the end */
static int
mw_jp_word(mw_jp_t *jp, const unsigned char *p)
{
    size_t                len;
    const unsigned char  *q;

    for (q = p; q < jp->end && mw_isalpha(*q); q++) {
        /* void */
    }

    jp->p = q;

    if (q < jp->end && *q >= 0x80 && mw_utf8_seq(q, jp->end) == 0) {
        mw_jp_fail(jp, MW_JE_UTF8, q);
        return MW_TOK_INVALID;
    }

    len = q - p;

    if (len == 4 && memcmp(p, "true", 4) == 0) {
        return MW_TOK_TRUE;
    }

    if (len == 5 && memcmp(p, "false", 5) == 0) {
        return MW_TOK_FALSE;
    }

    if (len == 4 && memcmp(p, "null", 4) == 0) {
        return MW_TOK_NULL;
    }

    return MW_TOK_INVALID;
}


/*
 * The first error is the one reported, as in jansson; a syntax error on
 * an empty token (the end of the input) is a truncated document.
 */
static void
mw_jp_fail(mw_jp_t *jp, mw_json_error_e error, const unsigned char *at)
{
    if (jp->error != MW_JE_NONE) {
        return;
    }

    if (error == MW_JE_SYNTAX && jp->tok_empty) {
        error = MW_JE_TRUNCATED;
    }

    jp->error = error;
    jp->pos = at - jp->start;
}


/*
 * The length of the valid UTF-8 sequence at p (2 to 4 bytes; p[0] is not
 * ASCII), or 0: jansson's utf8_check_first() and utf8_check_full(), so no
 * overlong forms, surrogates or code points beyond U+10FFFF.
 */
static size_t
mw_utf8_seq(const unsigned char *p, const unsigned char *end)
{
    size_t    n, i;
    uint32_t  cp;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        cp = p[0] & 0x1f;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        cp = p[0] & 0x0f;

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        cp = p[0] & 0x07;

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        cp = (cp << 6) | (p[i] & 0x3f);
    }

    if (cp > 0x10ffff
        || (cp >= 0xd800 && cp <= 0xdfff)
        || (n == 3 && cp < 0x800)
        || (n == 4 && cp < 0x10000))
    {
        return 0;
    }

    return n;
}


static int
mw_hex(unsigned c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
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
    const unsigned char  *p;

    p = (const unsigned char *) buf;
    depth = 0;

    for (i = 0; i < len; i++) {

        switch (p[i]) {

        case '"':
            /* skip the string: most of a payload's bytes are in strings */
            for (i++; i < len; i++) {
                if (p[i] == '\\') {
                    i++;
                    continue;
                }

                if (p[i] == '"') {
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
            /* unbalanced input is the parser's to report */
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


static void
mw_json_reason(mw_json_error_e error, size_t pos, char *err, size_t errlen)
{
    const char  *what;

    if (err == NULL || errlen == 0) {
        return;
    }

    switch (error) {

    case MW_JE_NOMEM:
        snprintf(err, errlen, "%s", MW_JSON_ENOMEM);
        return;

    case MW_JE_DEPTH:
        snprintf(err, errlen, "nesting deeper than %d at byte %zu",
                 MW_JSON_MAX_DEPTH, pos);
        return;

    case MW_JE_UTF8:
        what = "invalid UTF-8";
        break;

    case MW_JE_TRUNCATED:
        what = "truncated JSON";
        break;

    case MW_JE_TRAILING:
        what = "data after the JSON document";
        break;

    case MW_JE_KEY_NUL:
        what = "\\u0000 in an object key";
        break;

    case MW_JE_DUPLICATE:
        what = "duplicate key";
        break;

    case MW_JE_RANGE:
        what = "number out of range";
        break;

    case MW_JE_UNICODE:
        what = "invalid \\u escape";
        break;

    default:
        what = "not JSON";
        break;
    }

    snprintf(err, errlen, "%s at byte %zu", what, pos);
}
