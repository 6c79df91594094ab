/*
 * mw_json_parse(): the bounds and the error reasons, with jansson alone and
 * with the fast reader first (every case runs both ways, with the same
 * expectations); then the fast reader itself: what it takes is exactly
 * what json_loadb() builds, and what it does not take is jansson's.
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mw_core.h"
#include "tap.h"
#include "json_same.h"


static double
now_sec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static unsigned  popts;         /* mw_json_parse() opts of this pass */


static json_t *
parse(const char *s, char *err, size_t errlen)
{
    return mw_json_parse(s, strlen(s), popts, err, errlen);
}


static int
starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}


static void
test_basic(void)
{
    char     err[128];
    json_t  *j;

    j = parse("{\"a\":[1,2,{\"b\":\"c\"}]}", err, sizeof(err));
    ok(j != NULL, "plain object parses");
    is_str(err, "", "err empty on success");
    is_int(json_integer_value(json_array_get(json_object_get(j, "a"), 1)),
           2, "value read back");
    json_decref(j);

    j = parse("42", err, sizeof(err));
    ok(j != NULL && json_is_integer(j), "a scalar document is JSON");
    json_decref(j);

    j = mw_json_parse("", 0, 0, err, sizeof(err));
    ok(j == NULL, "empty input refused");
    is_str(err, "empty body", "empty input reason");

    j = mw_json_parse(NULL, 0, 0, err, sizeof(err));
    ok(j == NULL, "NULL input refused");

    j = parse("{\"a\":1} x", err, sizeof(err));
    ok(j == NULL, "trailing data refused");
    ok(starts(err, "data after the JSON document at byte "),
       "trailing data reason: %s", err);

    j = parse("{\"a\":[1,2", err, sizeof(err));
    ok(j == NULL, "truncated refused");
    ok(starts(err, "truncated JSON at byte "), "truncated reason: %s", err);

    j = parse("{\"a\":1}", NULL, 0);
    ok(j != NULL, "err may be NULL");
    json_decref(j);

    j = parse("nope", NULL, 0);
    ok(j == NULL, "failure with err NULL does not crash");
}


static void
test_depth(void)
{
    int      i;
    char    *buf, err[128];
    size_t   n;
    double   t0, t1;
    json_t  *j;

    n = 100000;
    buf = malloc(n + 1);
    memset(buf, '[', n);
    buf[n] = '\0';

    t0 = now_sec();
    j = mw_json_parse(buf, n, 0, err, sizeof(err));
    t1 = now_sec();

    ok(j == NULL, "100000 nested brackets refused");
    is_str(err, "nesting deeper than 64 at byte 64", "depth reason");
    ok(t1 - t0 < 0.05, "refused quickly (%.6f s)", t1 - t0);

    /* the same with objects, closing brackets present */
    n = 0;
    for (i = 0; i < 20000; i++) {
        memcpy(buf + n, "{\"a\":", 5);
        n += 5;
    }
    buf[n] = '\0';

    j = mw_json_parse(buf, n, 0, err, sizeof(err));
    ok(j == NULL, "20000 nested objects refused");
    ok(starts(err, "nesting deeper than 64"), "object depth reason: %s",
       err);
    free(buf);

    /* exactly 64 levels parse; 65 do not */
    buf = malloc(200);
    memset(buf, '[', 64);
    memset(buf + 64, ']', 64);
    buf[128] = '\0';

    j = parse(buf, err, sizeof(err));
    ok(j != NULL, "64 levels parse");
    json_decref(j);

    memset(buf, '[', 65);
    memset(buf + 65, ']', 65);
    buf[130] = '\0';

    j = parse(buf, err, sizeof(err));
    ok(j == NULL, "65 levels refused");
    free(buf);

    /* brackets inside strings, and escaped quotes, do not count */
    buf = malloc(4096);
    strcpy(buf, "{\"a\":\"");
    n = strlen(buf);
    for (i = 0; i < 1000; i++) {
        buf[n++] = (i % 3 == 0) ? '{' : '[';
    }
    strcpy(buf + n, "\\\"[[[[\\\\\",\"b\":[[1]]}");

    j = parse(buf, err, sizeof(err));
    ok(j != NULL, "brackets inside a string do not count (%s)", err);
    ok(j && json_string_length(json_object_get(j, "a")) == 1000 + 6,
       "string with brackets kept");
    json_decref(j);
    free(buf);

    /* an escaped backslash ends the string where JSON says it does */
    j = parse("{\"a\":\"x\\\\\",\"b\":[1]}", err, sizeof(err));
    ok(j != NULL && json_is_array(json_object_get(j, "b")),
       "escaped backslash before the closing quote");
    json_decref(j);

    /*
     * An odd run of backslashes escapes the quote, an even one does not:
     * the string below ends only at its last quote, so of its brackets
     * none count, and the 65 real levels after it are refused.
     */
    buf = malloc(4096);
    strcpy(buf, "[\"\\\\\\\"[[[[\\\\\\\\\",");
    n = strlen(buf);
    memset(buf + n, '[', 64);
    memset(buf + n + 64, ']', 65);
    buf[n + 129] = '\0';

    j = parse(buf, err, sizeof(err));
    ok(j == NULL, "levels after a string of backslash runs count");
    is_str(err, "nesting deeper than 64 at byte 79", "counted from byte 0");

    memset(buf + n, '[', 63);
    memset(buf + n + 63, ']', 64);
    buf[n + 127] = '\0';
    j = parse(buf, err, sizeof(err));
    ok(j != NULL, "64 levels after it parse (%s)", err);
    json_decref(j);
    free(buf);
}


/*
 * The depth scan against the plainest reading of the rule, byte by byte:
 * random texts of quotes, backslashes and brackets, deep enough to cross
 * the limit, must be refused for depth exactly when the reference says
 * so, at the same byte.
 */

static size_t
ref_depth(const char *p, size_t len, size_t max)
{
    size_t  i, depth;
    int     in_string;

    depth = 0;
    in_string = 0;

    for (i = 0; i < len; i++) {
        if (in_string) {
            if (p[i] == '\\') {
                i++;

            } else if (p[i] == '"') {
                in_string = 0;
            }

            continue;
        }

        if (p[i] == '"') {
            in_string = 1;

        } else if (p[i] == '[' || p[i] == '{') {
            if (++depth > max) {
                return i;
            }

        } else if ((p[i] == ']' || p[i] == '}') && depth) {
            depth--;
        }
    }

    return (size_t) -1;
}


static void
test_depth_reference(void)
{
    int          n, bad;
    char         buf[400], err[128], want[64];
    size_t       i, len, at;
    json_t      *j;
    const char   alphabet[] = "[[[[[[{\"\\]}a";

    srand(20261123);
    bad = 0;

    for (n = 0; n < 20000 && !bad; n++) {
        len = 64 + (size_t) rand() % 300;

        for (i = 0; i < len; i++) {
            buf[i] = alphabet[rand() % (sizeof(alphabet) - 1)];
        }

        err[0] = '\0';
        j = mw_json_parse(buf, len, 0, err, sizeof(err));
        json_decref(j);

        at = ref_depth(buf, len, MW_JSON_MAX_DEPTH);

        if (at == (size_t) -1) {
            bad = starts(err, "nesting deeper") != 0;

        } else {
            snprintf(want, sizeof(want), "nesting deeper than %d at byte %zu",
                     MW_JSON_MAX_DEPTH, at);
            bad = strcmp(err, want) != 0;
        }
    }

    ok(!bad, "depth scan agrees with the byte-by-byte reference on %d "
       "random texts%s%s", n, bad ? ": " : "", bad ? err : "");
}


static void
test_strict(void)
{
    char     err[128];
    json_t  *j;

    j = parse("{\"a\":1,\"SECRET\":2,\"SECRET\":3}", err, sizeof(err));
    ok(j == NULL, "duplicate keys refused");
    ok(starts(err, "duplicate key at byte "), "duplicate reason: %s", err);
    ok(strstr(err, "SECRET") == NULL, "duplicate reason quotes nothing");

    j = parse("{\"a\":\"caf\xc3\x28 SECRET\"}", err, sizeof(err));
    ok(j == NULL, "invalid UTF-8 refused");
    ok(starts(err, "invalid UTF-8 at byte "), "UTF-8 reason: %s", err);

    j = parse("{\"a\":\"\xff\"}", err, sizeof(err));
    ok(j == NULL, "byte 0xff refused");

    j = parse("{\"a\":\"SECRET\\ud800SECRET\"}", err, sizeof(err));
    ok(j == NULL, "lone surrogate refused");
    ok(starts(err, "invalid \\u escape at byte "), "surrogate reason: %s",
       err);
    ok(strstr(err, "SECRET") == NULL && strstr(err, "D800") == NULL
       && strstr(err, "d800") == NULL, "surrogate reason quotes nothing");

    j = parse("{\"a\":SECRETTOKEN}", err, sizeof(err));
    ok(j == NULL, "bare word refused");
    ok(starts(err, "not JSON at byte "), "syntax reason: %s", err);
    ok(strstr(err, "SECRET") == NULL, "syntax reason quotes nothing");

    j = parse("{\"a\\u0000b\":1}", err, sizeof(err));
    ok(j == NULL, "\\u0000 in a key refused");
    ok(starts(err, "\\u0000 in an object key at byte "), "key NUL: %s",
       err);

    j = mw_json_parse("{\"a\":\"x\0y\"}", 11, 0, err, sizeof(err));
    ok(j == NULL, "raw NUL byte refused");

    /* a short err buffer is filled, not overrun */
    j = parse("{\"a\":1,\"a\":2}", err, 8);
    ok(j == NULL && strlen(err) == 7, "reason truncated to the buffer");
}


static void
test_nul_and_numbers(void)
{
    char     err[128], *out;
    json_t  *j, *v;

    j = parse("{\"t\":\"a\\u0000b\"}", err, sizeof(err));
    ok(j != NULL, "\\u0000 inside a string kept");
    v = json_object_get(j, "t");
    is_int(json_string_length(v), 3, "length counts the NUL");
    ok(v && memcmp(json_string_value(v), "a\0b", 3) == 0, "bytes kept");

    out = json_dumps(j, JSON_COMPACT);
    is_str(out, "{\"t\":\"a\\u0000b\"}", "escaped again on output");
    mw_json_free(out);
    json_decref(j);

    j = parse("{\"big\":123456789012345678901234,\"n\":7}", err,
              sizeof(err));
    ok(j != NULL, "integer beyond 2^63 does not fail the document (%s)",
       err);
    v = json_object_get(j, "big");
    ok(json_is_real(v), "big integer kept as a real");
    ok(json_is_real(v) && json_real_value(v) > 1.2e23
       && json_real_value(v) < 1.3e23, "real value close");
    ok(json_is_number(json_object_get(j, "n"))
       && json_number_value(json_object_get(j, "n")) == 7,
       "other integers still read as numbers");
    json_decref(j);

    j = parse("{\"n\":9223372036854775807}", err, sizeof(err));
    ok(json_is_integer(json_object_get(j, "n")), "INT64_MAX stays integer");
    json_decref(j);

    j = parse("{\"n\":-9223372036854775809}", err, sizeof(err));
    ok(j != NULL && json_is_real(json_object_get(j, "n")),
       "below INT64_MIN kept as a real");
    json_decref(j);

    j = parse("{\"n\":1e999}", err, sizeof(err));
    ok(j == NULL, "a real beyond double refused");
    ok(starts(err, "number out of range at byte "), "overflow reason: %s",
       err);
}


/*
 * The reasons, byte positions included, for a range of broken inputs:
 * what mw_json_parse() reports must not drift (they reach logs and the
 * dead-letter records), whatever reads the JSON underneath.
 */
static void
test_reasons(void)
{
    char     err[128];
    size_t   i;
    json_t  *j;

    static const struct {
        const char  *json;
        size_t       len;
        const char  *reason;
    } cases[] = {
        { " ", 1,
          "truncated JSON at byte 1" },
        { "{", 1,
          "truncated JSON at byte 1" },
        { "[", 1,
          "truncated JSON at byte 1" },
        { "[1,", 3,
          "truncated JSON at byte 3" },
        { "[1,]", 4,
          "not JSON at byte 4" },
        { "{\"a\":1,}", 8,
          "not JSON at byte 8" },
        { "{\"a\"}", 5,
          "not JSON at byte 5" },
        { "{\"a\":}", 6,
          "not JSON at byte 6" },
        { "{1:2}", 5,
          "not JSON at byte 2" },
        { "{\"a\":1 \"b\":2}", 13,
          "not JSON at byte 10" },
        { "\"abc", 4,
          "truncated JSON at byte 4" },
        { "\"a\\", 3,
          "not JSON at byte 3" },
        { "\"a\\u12", 6,
          "not JSON at byte 6" },
        { "\"a\\u12x\"", 8,
          "not JSON at byte 7" },
        { "\"a\\x\"", 5,
          "not JSON at byte 4" },
        { "\"a\\\303\251\"", 6,
          "not JSON at byte 4" },
        { "\"\\ud800\"", 8,
          "invalid \\u escape at byte 8" },
        { "\"\\udc00\"", 8,
          "invalid \\u escape at byte 8" },
        { "\"\\ud800\\u0041\"", 14,
          "invalid \\u escape at byte 14" },
        { "\"\\ud800 \\x\"", 11,
          "not JSON at byte 10" },
        { "\"a\012b\"", 5,
          "not JSON at byte 2" },
        { "\"\001\"", 3,
          "not JSON at byte 1" },
        { "\000", 1,
          "truncated JSON at byte 1" },
        { "[\000]", 3,
          "truncated JSON at byte 2" },
        { "{} \000", 4,
          "data after the JSON document at byte 4" },
        { "{} x", 4,
          "data after the JSON document at byte 4" },
        { "{} \"a", 5,
          "truncated JSON at byte 5" },
        { "-", 1,
          "not JSON at byte 1" },
        { "-x", 2,
          "not JSON at byte 1" },
        { "-01", 3,
          "not JSON at byte 2" },
        { "01", 2,
          "not JSON at byte 1" },
        { "1.", 2,
          "not JSON at byte 2" },
        { "1.x", 3,
          "not JSON at byte 2" },
        { "1e", 2,
          "not JSON at byte 2" },
        { "1e+x", 4,
          "not JSON at byte 3" },
        { "1x", 2,
          "data after the JSON document at byte 2" },
        { "1e999", 5,
          "number out of range at byte 5" },
        { "[1,99999999999999999999999,1e999]", 33,
          "number out of range at byte 32" },
        { "nul", 3,
          "not JSON at byte 3" },
        { "nullx", 5,
          "not JSON at byte 5" },
        { "True", 4,
          "not JSON at byte 4" },
        { "\303\251", 2,
          "not JSON at byte 2" },
        { "\377", 1,
          "invalid UTF-8 at byte 0" },
        { "\"\303\"", 3,
          "invalid UTF-8 at byte 1" },
        { "\"\355\240\200\"", 5,
          "invalid UTF-8 at byte 1" },
        { "\"\300\200\"", 4,
          "invalid UTF-8 at byte 1" },
        { "1\377", 2,
          "invalid UTF-8 at byte 1" },
        { "null\377", 5,
          "invalid UTF-8 at byte 4" },
        { "1.\377", 3,
          "invalid UTF-8 at byte 2" },
        { "\"\\u00\377\"", 7,
          "invalid UTF-8 at byte 5" },
        { "\"\\\377\"", 4,
          "invalid UTF-8 at byte 2" },
        { "{\"a\":1}\377", 8,
          "invalid UTF-8 at byte 7" },
        { "{\"a\":1,\"a\"}", 11,
          "duplicate key at byte 10" },
        { "{\"a\":1,\"a\":\377}", 13,
          "duplicate key at byte 10" },
        { "{\"a\":99999999999999999999,\"a\":1}", 32,
          "duplicate key at byte 29" },
        { "{\"a\\u0000\":1}", 13,
          "\\u0000 in an object key at byte 10" },
        { "{\"\\u0061\":1,\"a\":2}", 18,
          "duplicate key at byte 15" },
        /* a syntax error first, a hostile depth after it: the depth */
        { "x[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
          "[[[[", 69,
          "nesting deeper than 64 at byte 65" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        j = mw_json_parse(cases[i].json, cases[i].len, 0, err, sizeof(err));
        ok(j == NULL, "reason #%zu: refused", i);
        is_str(err, cases[i].reason, "reason #%zu", i);
        json_decref(j);
    }
}


/* jansson's allocator failing at every point in turn */
static size_t  fail_after;

static void *
failing_malloc(size_t size)
{
    if (fail_after == 0) {
        return NULL;
    }

    fail_after--;

    return malloc(size);
}


static size_t
parse_failing(const char *doc, size_t *nomem, size_t *other)
{
    char     err[128];
    size_t   n;
    json_t  *j;

    *nomem = 0;
    *other = 0;

    for (n = 0; n < 500; n++) {
        json_set_alloc_funcs(failing_malloc, free);
        fail_after = n;

        j = mw_json_parse(doc, strlen(doc), popts, err, sizeof(err));

        json_set_alloc_funcs(malloc, free);

        if (j != NULL) {
            json_decref(j);
            break;
        }

        if (strcmp(err, MW_JSON_ENOMEM) == 0) {
            (*nomem)++;

        } else if (starts(err, "not JSON at byte ")) {
            (*other)++;
        }
    }

    return n;
}


/*
 * An allocation failure must read as "out of memory" (the caller answers
 * 500 and Meta retries), not as a verdict on the input (dead-lettered,
 * never retried); and nothing may leak.
 */
static void
test_nomem(void)
{
    size_t  n, nomem, other;

    /* no strings: jansson records nothing for any failure */
    n = parse_failing("[[1,2.5],[true],{},[null,[]],-7]", &nomem, &other);
    ok(n > 5 && n < 500, "no strings: parses once allocations succeed");
    is_int(nomem, n, "no strings: every failure is \"out of memory\"");

    /*
     * With strings, jansson reports a failed allocation in its lexer as
     * an invalid token: those still read "not JSON" (a known limit).
     */
    n = parse_failing("{\"object\":\"x\",\"entry\":[{\"id\":\"1\",\"v\":"
                      "{\"s\":\"a\\u00e9\",\"n\":1.5,\"l\":[1,2]}}]}",
                      &nomem, &other);
    ok(n > 10 && n < 500, "strings: parses once allocations succeed");
    is_int(nomem + other, n, "strings: out of memory, or not JSON");
    ok(nomem > other, "strings: mostly out of memory (%zu of %zu)", nomem,
       n);
}


/* ---------------------------------------------------------------------- */
/* the fast reader                                                         */

static void
test_fast_takes(void)
{
    size_t  i;
    char    deep[2 * MW_JSON_MAX_DEPTH + 1];

    /* each with its length: some hold a NUL */
    static const struct {
        const char  *json;
        size_t       len;
    } cases[] = {
#define C(s)  { s, sizeof(s) - 1 }
        C("{}"), C("[]"), C("\"\""), C("0"), C("-0"), C("true"),
        C("false"), C("null"), C(" \t\r\n{ \"a\" :\n[ 1 , 2 ] }\n "),
        C("[0,-1,7,123456789012345678,-123456789012345678]"),
        C("{\"a\":{\"b\":[true,false,null,{},[]]},\"c\":\"d\"}"),
        C("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\te\""),
        C("\"\\u00e9\\u20AC\\ud83d\\ude0a\\u0041\\u007f\\u0080\\u07ff"
          "\\u0800\\uffff\\udbff\\udfff\""),
        C("\"x\\u0000y\""),
        C("\"\303\251 \342\202\254 \360\237\230\212 \364\217\277\277\""),
        C("\"\302\200\337\277\340\240\200\355\237\277\356\200\200\""),
        C("{\"k\\u00e9y\":1,\"k\\n\":2,\"a\\\"\":3,\"\303\251\":4}"),
        C("{\"b\":1,\"a\":2,\"c\":{\"z\":1,\"y\":2}}"),
        C("{\"a\":\"\\\\\",\"b\":\"\\\"\"}"),
        C("[\"long string with an escape at the end \\n\","
          "\"and one\\tin\\tthe middle\",\"none\"]"),
        C("{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
          "\"1\",\"changes\":[{\"value\":{\"messaging_product\":"
          "\"whatsapp\",\"messages\":[{\"from\":\"16505551234\",\"id\":"
          "\"wamid.x\",\"timestamp\":\"1700000000\",\"text\":{\"body\":"
          "\"Ol\\u00e1 https:\\/\\/example.com\"},\"type\":\"text\"}]},"
          "\"field\":\"messages\"}]}]}"),
#undef C
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        is_int(json_fast_as_jansson(cases[i].json, cases[i].len), 1,
               "fast reader takes case %zu, as jansson builds it", i);
    }

    /* exactly the depth bound: still the reader's */
    for (i = 0; i < MW_JSON_MAX_DEPTH; i++) {
        deep[i] = '[';
        deep[2 * MW_JSON_MAX_DEPTH - 1 - i] = ']';
    }
    deep[2 * MW_JSON_MAX_DEPTH] = '\0';

    is_int(json_fast_as_jansson(deep, 2 * MW_JSON_MAX_DEPTH), 1,
           "fast reader takes nesting of exactly %d", MW_JSON_MAX_DEPTH);
}


/*
 * What the reader leaves to jansson: valid input jansson builds (the same
 * result through mw_json_parse() either way), and invalid input jansson
 * refuses (the same reason either way).
 */
static void
test_fast_leaves(void)
{
    char     e0[128], e1[128], deep[2 * MW_JSON_MAX_DEPTH + 3];
    size_t   i;
    json_t  *j0, *j1, *f;

    static const struct {
        const char  *json;
        size_t       len;
    } cases[] = {
#define C(s)  { s, sizeof(s) - 1 }
        /* valid, but not the reader's */
        C("1.5"), C("[1e3]"), C("{\"a\":-2.5E-3}"), C("0.0"),
        C("1234567890123456789"), C("-9223372036854775808"),
        C("[99999999999999999999]"), C("{\"lat\":37.48,\"n\":1}"),
        /* invalid */
        C("\"\\ud800\""), C("\"\\udc00\""), C("\"\\ud800\\u0041\""),
        C("\"\\ud800x\""), C("{\"a\":1,\"a\":2}"), C("{\"\\u0000\":1}"),
        C("[1,]"), C("{\"a\":1,}"), C("{,}"), C("[,1]"), C("01"),
        C("-"), C("-a"), C("tru"), C("nul"), C("falsey"), C("[1 2]"),
        C("\"\\x\""), C("\"\\u12\""), C("\"\\u12g4\""), C("\"abc"),
        C("\"a\001\""), C("\"a\nb\""), C("[\"\000\"]"), C("\000"),
        C("\"\300\200\""), C("\"\340\200\200\""), C("\"\355\240\200\""),
        C("\"\364\220\200\200\""), C("\"\365\200\200\200\""),
        C("\"\200\""), C("\"\303\""), C("\"\342\202\""), C("\"\377\""),
        C("{} x"), C("{}{}"), C("[1]]"), C("{\"a\" 1}"), C("{\"a\":}"),
        C("{1:2}"), C("\357\273\277{}"), C("[1,2"), C("{\"a\":1"),
        C("'a'"), C("[NaN]"), C("[+1]"), C("[.5]"), C("[1.]"),
#undef C
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        f = mw_json_fast(cases[i].json, cases[i].len);
        ok(f == NULL, "fast reader leaves case %zu to jansson", i);
        json_decref(f);

        j0 = mw_json_parse(cases[i].json, cases[i].len, 0, e0, sizeof(e0));
        j1 = mw_json_parse(cases[i].json, cases[i].len, MW_JSON_FAST, e1,
                           sizeof(e1));

        if (j0 == NULL || j1 == NULL) {
            ok(j0 == NULL && j1 == NULL && strcmp(e0, e1) == 0,
               "case %zu: the same refusal either way (%s)", i, e0);

        } else {
            ok(json_same(j0, j1), "case %zu: the same value either way", i);
        }

        json_decref(j0);
        json_decref(j1);
    }

    /* one level too deep: jansson's, and refused the same way */
    for (i = 0; i < MW_JSON_MAX_DEPTH + 1; i++) {
        deep[i] = '[';
        deep[2 * MW_JSON_MAX_DEPTH + 1 - i] = ']';
    }
    deep[2 * MW_JSON_MAX_DEPTH + 2] = '\0';

    f = mw_json_fast(deep, strlen(deep));
    ok(f == NULL, "fast reader leaves nesting of %d to jansson",
       MW_JSON_MAX_DEPTH + 1);
    json_decref(f);

    j1 = mw_json_parse(deep, strlen(deep), MW_JSON_FAST, e1, sizeof(e1));
    ok(j1 == NULL && starts(e1, "nesting deeper than"),
       "too deep with the fast reader: refused (%s)", e1);
    json_decref(j1);
}


/*
 * Mutations of a Meta-shaped document, byte by byte, with the characters
 * that matter to a JSON reader: whatever the reader takes must be what
 * jansson builds.  Deterministic (a fixed seed), so that a failure
 * repeats; fuzz/fuzz_json.c does the same at length.
 */
static void
test_fast_mutations(void)
{
    char           buf[1024];
    size_t         i, k, len, taken, wrong;
    uint32_t       seed;

    static const char  base[] =
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"10\","
        "\"changes\":[{\"value\":{\"contacts\":[{\"profile\":{\"name\":"
        "\"Jo\\u00e3o \\ud83d\\ude0a\"},\"wa_id\":\"16505551234\"}],"
        "\"messages\":[{\"from\":\"16505551234\",\"id\":\"wamid.A\\/B\","
        "\"timestamp\":\"1700000000\",\"text\":{\"body\":\"Hi\\n\\\"x\\\" "
        "\303\251\"},\"type\":\"text\",\"n\":[0,-12,345,true,null]}]},"
        "\"field\":\"messages\"}]}]}";

    static const char  alphabet[] =
        "{}[]:,\"\\/ \t\nu0123456789abcdefABCDEF.-+eEtrunlsx\000\001\177"
        "\200\277\300\303\340\355\360\364\365\377";

    seed = 20261123;
    taken = 0;
    wrong = 0;

    for (i = 0; i < 20000; i++) {
        len = sizeof(base) - 1;
        memcpy(buf, base, len);

        for (k = 0; k < 1 + i % 3; k++) {
            seed = seed * 1103515245 + 12345;
            buf[(seed >> 8) % len] =
                alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
        }

        switch (json_fast_as_jansson(buf, len)) {
        case 0:
            if (wrong++ < 5) {
                printf("#   differs from jansson: %.*s\n", (int) len, buf);
            }
            break;
        case 1:
            taken++;
            break;
        default:
            break;
        }
    }

    is_int(wrong, 0, "20000 mutations: nothing the reader took differs "
           "from jansson's value");
    ok(taken > 1000 && taken < 20000, "the reader took some (%zu), left "
       "the rest to jansson", taken);
}


int
main(void)
{
    /* every case with jansson alone, then with the fast reader first */
    for (popts = 0; popts <= MW_JSON_FAST; popts += MW_JSON_FAST) {
        printf("# parsing with%s the fast reader\n", popts ? "" : "out");
        test_basic();
        test_depth();
        test_depth_reference();
        test_strict();
        test_nul_and_numbers();
        test_reasons();
        test_nomem();
    }

    test_fast_takes();
    test_fast_leaves();
    test_fast_mutations();

    return done_testing();
}
