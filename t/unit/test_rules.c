/*
 * Window, accounting-period, contact and key rules of the core.
 */

#include <stdlib.h>
#include <string.h>

#include "mw_core.h"
#include "tap.h"


/* 2026-01-31 00:00:00 UTC etc., computed independently with date(1) */
#define JAN31_2026   1769817600
#define FEB28_2026   1772236800
#define MAR01_2026   1772323200
#define MAR31_2026   1774915200
#define APR30_2026   1777507200
#define DEC31_2026   1798675200
#define JAN31_2027   1801353600
#define FEB29_2028   1835395200


static void
test_window(void)
{
    int64_t  now = 1800000000;

    is_int(mw_window_from(now - 100, now), now - 100,
           "window opens from the message's own timestamp");
    is_int(mw_window_from(-1, now), now,
           "no timestamp: the window opens from arrival");
    is_int(mw_window_from(now + 86400 * 30, now), now + MW_FUTURE_SKEW,
           "a future timestamp is clamped to now + skew");

    is_int(mw_window_advance(0, 1000), 1000 + 86400, "first message");
    is_int(mw_window_advance(5000 + 86400, 1000), 5000 + 86400,
           "an older message never moves the window back");
    is_int(mw_window_advance(1000 + 86400, 5000), 5000 + 86400,
           "a newer message moves it forward");

    ok(mw_window_open(now + 1, now), "open one second before expiry");
    ok(!mw_window_open(now, now), "closed at expiry");
}


static void
test_period(void)
{
    int64_t  s, e;

    mw_period(MAR01_2026 + 3600, 31, 0, &s, &e);
    is_int(s, FEB28_2026, "anchor 31 in February is the 28th");
    is_int(e, MAR31_2026, "and the next period starts on March 31st");

    mw_period(APR30_2026 + 10, 31, 0, &s, &e);
    is_int(s, APR30_2026, "anchor 31 in a 30-day month is the 30th");

    mw_period(JAN31_2026 - 1, 31, 0, &s, &e);
    is_int(e, JAN31_2026, "one second before the anchor: period ends");
    is_int(s, JAN31_2026 - 31 * 86400, "... and began December 31st");

    mw_period(DEC31_2026 + 5, 31, 0, &s, &e);
    is_int(s, DEC31_2026, "year rollover: starts December 31st");
    is_int(e, JAN31_2027, "... ends January 31st of the next year");

    mw_period(FEB29_2028 + 5, 30, 0, &s, &e);
    is_int(s, FEB29_2028, "anchor 30 in a leap February is the 29th");

    mw_period(MAR01_2026, 1, 0, &s, &e);
    is_int(s, MAR01_2026, "anchor 1 at the first instant of the month");

    mw_period(MAR01_2026 + 3600, 1, 7200, &s, &e);
    is_int(s, MAR01_2026 - 7200, "UTC+2: the period starts at local midnight");

    mw_day(MAR01_2026 + 86399, 0, &s, &e);
    is_int(s, MAR01_2026, "day start");
    is_int(e, MAR01_2026 + 86400, "day end");

    mw_day(MAR01_2026 - 1, -3600, &s, &e);
    is_int(s, MAR01_2026 - 86400 + 3600, "UTC-1 day start");
}


static void
test_contact(void)
{
    char  out[MW_CONTACT_MAX];

    is_int(mw_contact_normalize("+1 650-555-1234", 15, out), 11,
           "formatted phone number");
    is_str(out, "16505551234", "digits only");
    mw_contact_normalize("16505551234", 11, out);
    is_str(out, "16505551234", "a wa_id stays as it is");
    mw_contact_normalize("+1 (650) 555.1234", 17, out);
    is_str(out, "16505551234", "parentheses and dots");
    mw_contact_normalize("US.13491208655302741918", 23, out);
    is_str(out, "US.13491208655302741918", "business-scoped id kept");
    is_int(mw_contact_normalize("", 0, out), -1, "empty refused");
    is_int(mw_contact_normalize("a b", 3, out), -1, "space in an id");
    is_int(mw_contact_normalize("a\r\nb", 4, out), -1, "CRLF in an id");
    is_int(mw_contact_normalize("US.a\"b", 6, out), -1, "a quote in an id");
    is_int(mw_contact_normalize("US.a\\b", 6, out), -1,
           "a backslash in an id");
    mw_contact_normalize("1650555+1234", 12, out);
    is_str(out, "1650555+1234",
           "a '+' inside digits is not a phone number: kept as an id");
}


static void
test_keys(void)
{
    unsigned char  a[MW_KEY_LEN], b[MW_KEY_LEN];
    char           hex[MW_KEY_HEX_LEN + 1];

    mw_key_status(a, "wamid.1", 7, "read", 4);
    mw_key_status(b, "wamid.1", 7, "sent", 4);
    ok(memcmp(a, b, MW_KEY_LEN) != 0, "statuses differ by status");

    mw_key_status(a, "ab", 2, "c", 1);
    mw_key_status(b, "a", 1, "bc", 2);
    ok(memcmp(a, b, MW_KEY_LEN) != 0, "length prefixes prevent collisions");

    mw_key_message(a, "wamid.1", 7);
    mw_key_message(b, "wamid.1", 7);
    ok(memcmp(a, b, MW_KEY_LEN) == 0, "deterministic");

    mw_key_hex(a, hex);
    is_int(strlen(hex), MW_KEY_HEX_LEN, "hex length");
    ok(strspn(hex, "0123456789abcdef") == MW_KEY_HEX_LEN, "lowercase hex");
}


/*
 * Known answers: keys live in shared memory and in memcached across
 * reloads and upgrades, so their bytes must never change.  These were
 * computed by the first implementation (OpenSSL EVP, per-key context)
 * and checked independently with Python's hashlib: SHA-256 over the type
 * byte and, per part, a 32-bit big-endian length and the bytes, cut to
 * MW_KEY_LEN.
 */
static void
test_key_answers(void)
{
    size_t          i;
    char            hex[MW_KEY_HEX_LEN + 1];
    unsigned char   k[MW_KEY_LEN];
    static char     big[200], huge[70000];
    const char     *parts[3];
    size_t          lens[3];

    mw_key_message(k, "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUI0RDc2QzlGMjE1"
                   "NzQ1RTZBAA==", 62);
    mw_key_hex(k, hex);
    is_str(hex, "81947bc5e0082b37d49d4a8eb085027e", "known key: message");

    mw_key_message(k, "", 0);
    mw_key_hex(k, hex);
    is_str(hex, "f1ad52ba38bac0311759d3b0884ce634",
           "known key: message, empty id");

    mw_key_status(k, "wamid.1", 7, "read", 4);
    mw_key_hex(k, hex);
    is_str(hex, "e5394396a1800bd1ad119c54f3d977cf", "known key: status");

    mw_key_sent(k, "wamid.S", 7);
    mw_key_hex(k, hex);
    is_str(hex, "53c4122832d7734c3b93e4ade32650bf", "known key: sent");

    mw_key_contact(k, "106540352242922", 15, "16505551234", 11);
    mw_key_hex(k, hex);
    is_str(hex, "20fa34a64624dcf1be89cbecaaa19ca9", "known key: contact");

    mw_key_make(k, MW_KEY_COUNTER, parts, lens, 0);
    mw_key_hex(k, hex);
    is_str(hex, "1b16b1df538ba12dc3f97edbb85caa70", "known key: no parts");

    /* a NUL inside a part, a part over one SHA-256 block, an empty part */
    memset(big, 'x', sizeof(big));
    parts[0] = "a\0b";
    lens[0] = 3;
    parts[1] = big;
    lens[1] = sizeof(big);
    parts[2] = "";
    lens[2] = 0;
    mw_key_make(k, MW_KEY_DEDUPE, parts, lens, 3);
    mw_key_hex(k, hex);
    is_str(hex, "b23ed92d396d294ed19ace1ce300755b",
           "known key: NUL, long and empty parts");

    /* a length above 65535: all four length bytes matter */
    for (i = 0; i < sizeof(huge); i++) {
        huge[i] = (char) (i * 7);
    }

    parts[0] = "x";
    lens[0] = 1;
    parts[1] = huge;
    lens[1] = sizeof(huge);
    mw_key_make(k, MW_KEY_COUNTER, parts, lens, 2);
    mw_key_hex(k, hex);
    is_str(hex, "9fecde9494681efc32a248f847a99a82",
           "known key: a 70000-byte part");

    /* and again, for an implementation that keeps state between keys */
    mw_key_message(k, "", 0);
    mw_key_hex(k, hex);
    is_str(hex, "f1ad52ba38bac0311759d3b0884ce634",
           "known key: same answer when repeated");
}


int
main(void)
{
    test_window();
    test_period();
    test_contact();
    test_keys();
    test_key_answers();

    return done_testing();
}
