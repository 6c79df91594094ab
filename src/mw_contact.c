/*
 * Contact identity.  Meta names a contact by its wa_id: the phone number's
 * digits with the country code and no '+'.  Operators and applications
 * write the same number as "+1 650-555-1234" or "+1 (650) 555 1234";
 * those must name the same contact, or a window opened by the contact's
 * message would not be found when the business replies.  Business-scoped
 * user ids (not phone numbers) are opaque and kept exactly.
 */

#include <string.h>

#include "mw_core.h"


static int
mw_contact_is_phone(const char *in, size_t len)
{
    size_t  i, digits;
    int     c;

    digits = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) in[i];

        if (c >= '0' && c <= '9') {
            digits++;
            continue;
        }

        if (c == '+' && digits == 0) {
            continue;
        }

        if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')') {
            continue;
        }

        return 0;
    }

    /* E.164 allows at most 15 digits; short codes have fewer than 5 */
    return digits >= 5 && digits <= 15;
}


int
mw_contact_normalize(const char *in, size_t len, char out[MW_CONTACT_MAX])
{
    size_t  i, n;
    int     c;

    if (len == 0 || len >= MW_CONTACT_MAX) {
        return -1;
    }

    if (mw_contact_is_phone(in, len)) {
        n = 0;

        for (i = 0; i < len; i++) {
            if (in[i] >= '0' && in[i] <= '9') {
                out[n++] = in[i];
            }
        }

        out[n] = '\0';
        return (int) n;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) in[i];

        /*
         * An opaque id is a token: no spaces, no control characters, and
         * nothing that would need escaping where it is echoed as JSON.
         */
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '\\') {
            return -1;
        }
    }

    memcpy(out, in, len);
    out[len] = '\0';

    return (int) len;
}
