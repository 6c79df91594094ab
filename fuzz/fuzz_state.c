/*
 * libFuzzer target for the state records of mw_state.c.
 *
 * A contact record comes back from memcached, where anything that can
 * reach the server can write anything: mw_contact_decode() takes the whole
 * input as a value.  What it accepts must be five or six decimal numbers
 * and encode back to the same record, and what it encodes it must read
 * back unchanged; the rules applied to an accepted record keep it
 * encodable.
 */

#include <stdlib.h>
#include <string.h>

#include "mw_state.h"


static void check_same(const mw_contact_rec_t *a, const mw_contact_rec_t *b);


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int                n;
    char              *copy, buf[MW_CONTACT_TEXT_MAX + 1];
    size_t             i, fields;
    mw_contact_rec_t   c, d;

    /* an exact-size copy, not terminated: a read past the end is caught */
    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);
    memset(&c, 0xa5, sizeof(c));

    if (mw_contact_decode(&c, copy, size) != 0) {
        free(copy);
        return 0;
    }

    /* accepted: digits and single spaces between at most six numbers */
    fields = 0;

    for (i = 0; i < size; i++) {
        if (copy[i] == ' ') {
            continue;
        }

        if (copy[i] < '0' || copy[i] > '9') {
            abort();
        }

        if (i == 0 || copy[i - 1] == ' ') {
            fields++;
        }
    }

    if (fields < 5 || fields > 6 || c.optin < 0 || c.optin > MW_OPTIN_OUT
        || c.window < 0 || c.session < 0 || c.counted < 0
        || c.optin_ts < 0 || c.pending < 0
        || (fields == 5 && c.pending != 0))
    {
        abort();
    }

    free(copy);

    n = mw_contact_encode(&c, buf, sizeof(buf));
    if (n < 0 || (size_t) n != strlen(buf)) {
        abort();
    }

    memset(&d, 0x5a, sizeof(d));

    if (mw_contact_decode(&d, buf, (size_t) n) != 0) {
        abort();
    }

    check_same(&c, &d);

    /* the rules keep an accepted record encodable */
    mw_contact_message(&d, c.session, MW_OPTIN_IN, c.optin_ts + 1);
    mw_contact_close(&d, c.window);

    if (mw_contact_encode(&d, buf, sizeof(buf)) < 0) {
        abort();
    }

    return 0;
}


static void
check_same(const mw_contact_rec_t *a, const mw_contact_rec_t *b)
{
    if (a->window != b->window || a->session != b->session
        || a->counted != b->counted || a->optin != b->optin
        || a->optin_ts != b->optin_ts || a->pending != b->pending)
    {
        abort();
    }
}
