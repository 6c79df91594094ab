/*
 * libFuzzer target for mw_quarantine.c.
 *
 * Checks the properties the glue relies on, over arbitrary bytes:
 *  - redact changes only bytes it turns into '#', never the length;
 *  - the detectors mask only the characters a card or IBAN is written
 *    with (digits, letters, single spaces and dashes);
 *  - scan fires exactly when redact masks something;
 *  - after redact, no detector fires any more (nothing is left behind);
 *  - an operator rule that matches empty strings cannot stall redact.
 */

#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


static int rule_q(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name);
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


static void
check_redact(const mw_quarantine_conf_t *conf, const char *orig,
    size_t size, int detectors_only)
{
    char                  *buf;
    size_t                 i, n;
    unsigned char          c;
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
        if (buf[i] == orig[i]) {
            continue;
        }

        if (buf[i] != '#') {
            abort();
        }

        c = (unsigned char) orig[i];

        if (detectors_only
            && !((c >= '0' && c <= '9') || ((c | 0x20) >= 'a'
                                            && (c | 0x20) <= 'z')
                 || c == ' ' || c == '-'))
        {
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
