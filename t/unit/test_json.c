/*
 * mw_json_parse(): the bounds and the error reasons.
 */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mw_core.h"
#include "tap.h"


static double
now_sec(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static json_t *
parse(const char *s, char *err, size_t errlen)
{
    return mw_json_parse(s, strlen(s), 0, err, errlen);
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

        j = mw_json_parse(doc, strlen(doc), 0, err, sizeof(err));

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


int
main(void)
{
    test_basic();
    test_depth();
    test_depth_reference();
    test_strict();
    test_nul_and_numbers();
    test_reasons();
    test_nomem();

    return done_testing();
}
