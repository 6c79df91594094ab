/*
 * The state's records: contact rules, encodings, key text, TTLs.
 */

#include <stdlib.h>

#include "mw_core.h"
#include "mw_state.h"
#include "tap.h"


static void
test_contact_rules(void)
{
    mw_contact_rec_t  c;
    int64_t           t = 1800000000;

    memset(&c, 0, sizeof(c));

    mw_contact_message(&c, t, MW_OPTIN_NONE, t);
    is_int(c.window, t + 86400, "first message opens the window");
    is_int(c.session, t, "and a session at the message");

    mw_contact_message(&c, t + 100, MW_OPTIN_IN, t + 100);
    is_int(c.window, t + 100 + 86400, "a later message refreshes it");
    is_int(c.session, t, "in the same session");
    is_int(c.optin, MW_OPTIN_IN, "YES recorded");

    mw_contact_message(&c, t + 50, MW_OPTIN_OUT, t + 50);
    is_int(c.window, t + 100 + 86400, "an older message moves nothing");
    is_int(c.optin, MW_OPTIN_IN,
           "an older STOP, retried late, does not undo a newer YES");

    mw_contact_message(&c, t + 200000, MW_OPTIN_NONE, t + 200000);
    is_int(c.session, t + 200000, "after the window closed: a new session");

    mw_contact_close(&c, t + 200010);
    is_int(c.window, t + 200010, "Meta's 131047 closes the window");

    mw_contact_message(&c, t + 200020, MW_OPTIN_NONE, t + 200020);
    mw_contact_close(&c, t + 200015);
    is_int(c.window, t + 200020 + 86400,
           "a refusal older than the contact's last message closes nothing");

    mw_contact_close(&c, t + 200030);
    is_int(c.window, t + 200030, "a refusal in the session closes it");
    is_int(c.session, t + 200030, "the session, too, at the refusal");

    mw_contact_message(&c, t + 200025, MW_OPTIN_NONE, t + 200025);
    is_int(c.window, t + 200030,
           "a message older than the refusal, delivered late, does not "
           "reopen it");
    mw_contact_message(&c, t + 200020, MW_OPTIN_NONE, t + 200020);
    is_int(c.window, t + 200030,
           "nor does the session's last message written again");
    is_int(c.session, t + 200030, "the session stays at the refusal");

    mw_contact_close(&c, t + 200028);
    is_int(c.window, t + 200030, "an older refusal leaves the later one");
    mw_contact_close(&c, t + 200040);
    is_int(c.window, t + 200040, "a later refusal moves the close");
    is_int(c.session, t + 200040, "and the session with it");
    mw_contact_message(&c, t + 200035, MW_OPTIN_NONE, t + 200035);
    is_int(c.window, t + 200040, "a message between the two: still closed");

    mw_contact_message(&c, t + 200050, MW_OPTIN_NONE, t + 200050);
    is_int(c.window, t + 200050 + 86400,
           "a message after the refusal reopens the window");
    is_int(c.session, t + 200050, "in a new session");

    is_int(mw_contact_expiry(&c, t + 200020), t + 200020 + 365 * 86400
           + 35 * 86400, "an opted-in contact is kept 400 days");

    c.optin = MW_OPTIN_NONE;
    is_int(mw_contact_expiry(&c, t), c.window + 86400,
           "otherwise a day past its window");
}


static void
test_encoding(void)
{
    char              buf[MW_CONTACT_TEXT_MAX + 1];
    mw_contact_rec_t  c, d;

    c.window = 1800086400;
    c.session = 1800000000;
    c.counted = 1800000005;
    c.optin = MW_OPTIN_OUT;
    c.optin_ts = 1799999999;
    c.pending = 0;

    ok(mw_contact_encode(&c, buf, sizeof(buf)) > 0, "encoded");
    is_str(buf, "1800086400 1800000000 1800000005 2 1799999999", "as text");
    ok(mw_contact_decode(&d, buf, strlen(buf)) == 0, "decoded");
    ok(memcmp(&c, &d, sizeof(c)) == 0 || (c.window == d.window
       && c.session == d.session && c.counted == d.counted
       && c.optin == d.optin && c.optin_ts == d.optin_ts
       && d.pending == 0), "round trip");

    c.pending = 1800000007;
    ok(mw_contact_encode(&c, buf, sizeof(buf)) > 0, "encoded, pending");
    is_str(buf, "1800086400 1800000000 1800000005 2 1799999999 1800000007",
           "a pending count: a sixth number");
    ok(mw_contact_decode(&d, buf, strlen(buf)) == 0, "decoded, pending");
    is_int(d.pending, 1800000007, "pending read back");
    ok(mw_contact_decode(&d, "1 2 3 0 5", 9) == 0 && d.pending == 0,
       "five numbers: nothing pending");

    is_int(mw_contact_decode(&d, "1 2 3", 5), -1, "too few fields");
    is_int(mw_contact_decode(&d, "1 2 3 0 5 6 7", 13), -1, "too many");
    is_int(mw_contact_decode(&d, "1 2 3 0 5 ", 10), -1, "trailing space");
    is_int(mw_contact_decode(&d, "1 2 3 9 5", 9), -1, "unknown opt-in");
    is_int(mw_contact_decode(&d, "1 2 x 0 5", 9), -1, "junk");
    is_int(mw_contact_decode(&d, "", 0), -1, "empty");
    is_int(mw_contact_decode(&d, "1 2 3 0 -5", 10), -1, "negative");
}


static void
test_keys(void)
{
    char           text[MW_KEY_TEXT_LEN + 1];
    unsigned char  key[MW_KEY_LEN];
    size_t         i;

    for (i = 0; i < MW_KEY_LEN; i++) {
        key[i] = (unsigned char) (i * 17);
    }

    mw_key_text(text, MW_KEY_DEDUPE, key);
    is_str(text, "mw:d:00112233445566778899aabbccddeeff", "key text");
    is_int(strlen(text), MW_KEY_TEXT_LEN, "fixed length, far below 250");

    is_int(mw_ttl(1000 + 60, 1000), 60, "a relative TTL");
    is_int(mw_ttl(1000 + MW_TTL_RELATIVE_MAX, 1000), MW_TTL_RELATIVE_MAX,
           "30 days is still relative");
    is_int(mw_ttl(1800000000 + MW_TTL_RELATIVE_MAX + 1, 1800000000),
           1800000000 + MW_TTL_RELATIVE_MAX + 1,
           "beyond 30 days: the absolute time");
    is_int(mw_ttl(900, 1000), 1, "already expired: the shortest TTL");
}


int
main(void)
{
    test_contact_rules();
    test_encoding();
    test_keys();

    return done_testing();
}
