/*
 * The state's records and their rules, shared by both backends.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_state.h"


void
mw_contact_message(mw_contact_rec_t *c, int64_t from, int optin,
    int64_t optin_ts)
{
    mw_session_advance(&c->window, &c->session, from);

    if (optin != MW_OPTIN_NONE && optin_ts >= c->optin_ts) {
        c->optin = optin;
        c->optin_ts = optin_ts;
    }
}


void
mw_contact_close(mw_contact_rec_t *c, int64_t at)
{
    /*
     * Closed, the record holds the refusal's time in its window and its
     * session alike (mw_window_refused): that is how mw_session_advance
     * knows a message older than the refusal from one that extends an
     * open window.
     */

    if (mw_window_refused(c->window, c->session)) {
        /* closed already: the latest refusal is the one that counts */
        if (at > c->window) {
            c->window = at;
            c->session = at;
        }

        return;
    }

    if (c->session <= at && c->window > at) {
        c->window = at;
        c->session = at;
    }
}


int64_t
mw_contact_expiry(const mw_contact_rec_t *c, int64_t now)
{
    int64_t  expires;

    expires = c->window + 86400;

    if (c->optin != MW_OPTIN_NONE && now + MW_OPTIN_RETENTION > expires) {
        expires = now + MW_OPTIN_RETENTION;
    }

    return expires;
}


int
mw_contact_encode(const mw_contact_rec_t *c, char *buf, size_t size)
{
    int  n, m;

    n = snprintf(buf, size, "%lld %lld %lld %d %lld",
                 (long long) c->window, (long long) c->session,
                 (long long) c->counted, c->optin, (long long) c->optin_ts);

    if (n >= 0 && (size_t) n < size && c->pending) {
        m = snprintf(buf + n, size - n, " %lld", (long long) c->pending);
        n = (m < 0) ? -1 : n + m;
    }

    return (n < 0 || (size_t) n >= size) ? -1 : n;
}


static int
mw_state_number(const char **p, const char *last, int64_t *v)
{
    int64_t  n;
    int      digits;

    while (*p < last && **p == ' ') {
        (*p)++;
    }

    n = 0;
    digits = 0;

    while (*p < last && **p >= '0' && **p <= '9' && digits < 18) {
        n = n * 10 + (**p - '0');
        (*p)++;
        digits++;
    }

    if (digits == 0 || (*p < last && **p != ' ')) {
        return -1;
    }

    *v = n;
    return 0;
}


int
mw_contact_decode(mw_contact_rec_t *c, const char *buf, size_t len)
{
    int64_t      v[6];
    size_t       i;
    const char  *p, *last;

    p = buf;
    last = buf + len;
    v[5] = 0;

    for (i = 0; i < 6; i++) {
        if (i == 5 && p == last) {
            break;
        }

        if (mw_state_number(&p, last, &v[i]) != 0) {
            return -1;
        }
    }

    if (p != last || v[3] > MW_OPTIN_OUT) {
        return -1;
    }

    c->window = v[0];
    c->session = v[1];
    c->counted = v[2];
    c->optin = (int) v[3];
    c->optin_ts = v[4];
    c->pending = v[5];

    return 0;
}


void
mw_key_text(char out[MW_KEY_TEXT_LEN + 1], int type,
    const unsigned char key[MW_KEY_LEN])
{
    out[0] = 'm';
    out[1] = 'w';
    out[2] = ':';
    out[3] = (char) type;
    out[4] = ':';

    mw_key_hex(key, out + 5);
}


int64_t
mw_ttl(int64_t expires, int64_t now)
{
    if (expires <= now) {
        return 1;
    }

    if (expires - now <= MW_TTL_RELATIVE_MAX) {
        return expires - now;
    }

    return expires;
}
