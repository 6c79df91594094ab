/*
 * libFuzzer target for mw_quarantine.c.
 *
 * Checks the properties the glue relies on, over arbitrary bytes:
 *  - redact changes only bytes it turns into '#', never the length;
 *  - the detectors mask only the characters a card or IBAN is written
 *    with (digits, letters, spaces, no-break spaces and dashes, the
 *    separators possibly as JSON escapes), and each of them whole: no
 *    mask cuts an escape or a UTF-8 sequence, so a body stays JSON;
 *  - scan fires exactly when redact masks something;
 *  - after redact, no detector fires any more (nothing is left behind);
 *  - an operator rule that matches empty strings cannot stall redact.
 */

#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


static int rule_q(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name);
static size_t unit_at(const unsigned char *t, size_t size, size_t i,
    int *maskable);
static void check_redact(const mw_quarantine_conf_t *conf,
    const char *orig, size_t size, int detectors_only);


static size_t  rule_calls;


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char                  *text;
    size_t                 i;
    mw_quarantine_conf_t   conf;

    text = malloc(size ? size : 1);
    if (text == NULL) {
        return 0;
    }

    memcpy(text, data, size);

    memset(&conf, 0, sizeof(conf));
    conf.detectors = MW_DETECT_ALL;

    check_redact(&conf, text, size, 1);

    conf.match = rule_q;
    check_redact(&conf, text, size, 0);

    /* the exposed checks must read no byte past n */
    for (i = 0; i < size && i < 40; i++) {
        (void) mw_luhn_valid(text, i);
        (void) mw_iban_valid(text, i);
    }

    free(text);

    return 0;
}


/*
 * A rule: "q" followed by any number of "q"s, or, when the text starts
 * with '~', the empty string at offset 0 (as a pattern like "x*" does).
 */

static int
rule_q(void *data, const char *text, size_t len, size_t *start, size_t *end,
    const char **name)
{
    const char  *p;

    (void) data;

    rule_calls++;

    if (len && text[0] == '~') {
        *start = 0;
        *end = 0;
        *name = "tilde";
        return 1;
    }

    p = memchr(text, 'q', len);
    if (p == NULL) {
        return 0;
    }

    *start = p - text;
    *end = *start;

    while (*end < len && text[*end] == 'q') {
        (*end)++;
    }

    *name = "q";

    return 1;
}


/*
 * The unit at t[i] that the detectors read as one character, and its
 * length: a JSON escape, a no-break space in UTF-8, or one byte, read
 * left to right as the detectors do.  *maskable is set when a detector
 * may mask it: a digit, a letter, or a separator between groups.
 */

static size_t
unit_at(const unsigned char *t, size_t size, size_t i, int *maskable)
{
    int            h;
    size_t         k;
    unsigned       v;
    unsigned char  c;

    c = t[i];

    if (c == '\\' && i + 1 < size) {
        if (t[i + 1] != '\0' && strchr("\"\\/bfnrt", t[i + 1]) != NULL) {
            *maskable = 0;
            return 2;
        }

        if (t[i + 1] == 'u' && i + 5 < size) {
            v = 0;

            for (k = 2; k < 6; k++) {
                h = t[i + k];

                if (h >= '0' && h <= '9') {
                    h -= '0';

                } else if ((h | 0x20) >= 'a' && (h | 0x20) <= 'f') {
                    h = (h | 0x20) - 'a' + 10;

                } else {
                    break;
                }

                v = v << 4 | (unsigned) h;
            }

            if (k == 6) {
                *maskable = v == 0x20 || v == 0xa0 || v == 0x2007
                            || v == 0x202f || v == 0x2d;
                return 6;
            }
        }
    }

    if (c == 0xc2 && i + 1 < size && t[i + 1] == 0xa0) {
        *maskable = 1;
        return 2;
    }

    if (c == 0xe2 && i + 2 < size && t[i + 1] == 0x80
        && (t[i + 2] == 0x87 || t[i + 2] == 0xaf))
    {
        *maskable = 1;
        return 3;
    }

    *maskable = (c >= '0' && c <= '9')
                || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
                || c == ' ' || c == '-';

    return 1;
}


static void
check_redact(const mw_quarantine_conf_t *conf, const char *orig,
    size_t size, int detectors_only)
{
    int                    maskable;
    char                  *buf;
    size_t                 i, k, u, n, changed;
    const char            *reason;
    mw_quarantine_conf_t   dconf;

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return;
    }

    memcpy(buf, orig, size);

    reason = mw_quarantine_scan(conf, orig, size);

    rule_calls = 0;
    n = mw_quarantine_redact(conf, buf, size);

    /* each call either masks or steps at least one byte */
    if (rule_calls > size + 1) {
        abort();
    }

    for (i = 0; i < size; i++) {
        if (buf[i] != orig[i] && buf[i] != '#') {
            abort();
        }
    }

    /* a rule's mask is the operator's: only the detectors' is checked */
    for (i = 0; detectors_only && i < size; i += u) {
        u = unit_at((const unsigned char *) orig, size, i, &maskable);
        changed = 0;

        for (k = i; k < i + u; k++) {
            changed += buf[k] != orig[k];
        }

        if (changed && (!maskable || changed != u)) {
            abort();
        }
    }

    if (detectors_only && ((reason != NULL) != (n > 0))) {
        abort();
    }

    if (n == 0 && memcmp(buf, orig, size) != 0) {
        abort();
    }

    /* nothing a detector finds is left behind */
    memset(&dconf, 0, sizeof(dconf));
    dconf.detectors = MW_DETECT_ALL;

    if (mw_quarantine_scan(&dconf, buf, size) != NULL) {
        abort();
    }

    free(buf);
}
