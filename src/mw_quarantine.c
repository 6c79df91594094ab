/*
 * nginx-meta-webhook: content detectors for quarantine.
 *
 * Two built-in detectors, payment card numbers and IBANs, and the
 * operator's own rules through a callback.  The detectors work on
 * arbitrary bytes: on a decoded message text, and on a raw JSON body kept
 * as a dead letter, where the text around a number may be a JSON escape
 * ("\n4111...", "\u00e9DE89...").  An escape is therefore read as the
 * character it stands for when deciding whether a number stands alone,
 * and when it is a separator between the groups of a number: Meta writes
 * the no-break spaces that banking apps put in numbers as "\u00a0", and
 * another producer may escape even a space or a dash.  Digits and letters
 * are read only as themselves: Meta never escapes them, and an escaped
 * digit is read as one glued to the number, never as a part of it.
 *
 * Every scan is one forward pass with a bounded look-ahead at each
 * candidate start: linear time, no allocation.
 */

#include <string.h>

#include "mw_core.h"


#define MW_CARD_MIN          13
#define MW_CARD_MAX          19
#define MW_CARD_GROUP_FIRST  4      /* grouped: 4-4-4-4, 4-6-5, 4-6-4 */
#define MW_CARD_GROUP_MIN    3      /* digits in a group followed by more */
#define MW_CARD_GROUP_MAX    6

#define MW_IBAN_MAX          34

/* what precedes a candidate */
#define MW_PREV_BOUNDARY     0      /* start, space, punctuation, ... */
#define MW_PREV_ALNUM        1      /* glued to a word or a longer number */
#define MW_PREV_PLUS         2      /* "+": a phone number, not a card */

/* what joins the groups of a number */
#define MW_SEP_SPACE         1      /* ' ', U+00A0, U+2007, U+202F */
#define MW_SEP_DASH          2      /* '-' */


typedef struct {
    char                     cc[2];
    unsigned char            len;
} mw_iban_country_t;


/*
 * The IBAN registry (ISO 13616, SWIFT): each country's code and the total
 * IBAN length.  Territories that use their parent's code (Réunion, Jersey,
 * Åland, ...) write IBANs with that code and need no entry of their own.
 */
static const mw_iban_country_t  mw_iban_countries[] = {
    { "AD", 24 }, { "AE", 23 }, { "AL", 28 }, { "AT", 20 }, { "AZ", 28 },
    { "BA", 20 }, { "BE", 16 }, { "BG", 22 }, { "BH", 22 }, { "BI", 27 },
    { "BR", 29 }, { "BY", 28 }, { "CH", 21 }, { "CR", 22 }, { "CY", 28 },
    { "CZ", 24 }, { "DE", 22 }, { "DJ", 27 }, { "DK", 18 }, { "DO", 28 },
    { "EE", 20 }, { "EG", 29 }, { "ES", 24 }, { "FI", 18 }, { "FK", 18 },
    { "FO", 18 }, { "FR", 27 }, { "GB", 22 }, { "GE", 22 }, { "GI", 23 },
    { "GL", 18 }, { "GR", 27 }, { "GT", 28 }, { "HN", 28 }, { "HR", 21 },
    { "HU", 28 }, { "IE", 22 }, { "IL", 23 }, { "IQ", 23 }, { "IS", 26 },
    { "IT", 27 }, { "JO", 30 }, { "KW", 30 }, { "KZ", 20 }, { "LB", 28 },
    { "LC", 32 }, { "LI", 21 }, { "LT", 20 }, { "LU", 20 }, { "LV", 21 },
    { "LY", 25 }, { "MC", 27 }, { "MD", 24 }, { "ME", 22 }, { "MK", 19 },
    { "MN", 20 }, { "MR", 27 }, { "MT", 31 }, { "MU", 30 }, { "NI", 28 },
    { "NL", 18 }, { "NO", 15 }, { "OM", 23 }, { "PK", 24 }, { "PL", 28 },
    { "PS", 29 }, { "PT", 25 }, { "QA", 29 }, { "RO", 24 }, { "RS", 22 },
    { "RU", 33 }, { "SA", 24 }, { "SC", 31 }, { "SD", 18 }, { "SE", 24 },
    { "SI", 19 }, { "SK", 24 }, { "SM", 27 }, { "SO", 23 }, { "ST", 25 },
    { "SV", 28 }, { "TL", 23 }, { "TN", 24 }, { "TR", 26 }, { "UA", 29 },
    { "VA", 22 }, { "VG", 24 }, { "XK", 20 }, { "YE", 30 }
};


static int mw_is_digit(unsigned char c);
static int mw_is_alpha(unsigned char c);
static int mw_is_alnum(unsigned char c);
static int mw_uescape(const unsigned char *t, size_t len, size_t i,
    unsigned *v);
static size_t mw_escape(const unsigned char *t, size_t len, size_t i,
    int *cls);
static size_t mw_sep(const unsigned char *t, size_t len, size_t j,
    int *kind);
static size_t mw_sep_digit(const unsigned char *t, size_t len, size_t j,
    int *kind);
static int mw_class(unsigned char c);
static int mw_glued_after(const unsigned char *t, size_t len, size_t j);
static int mw_card_issuer(const unsigned char *d, size_t n);
static int mw_luhn(const unsigned char *d, size_t n);
static size_t mw_card_at(const unsigned char *t, size_t len, size_t p);
static size_t mw_card_token(const unsigned char *t, size_t len, size_t i,
    unsigned char *w, size_t *count);
static size_t mw_card_find(const unsigned char *t, size_t len,
    unsigned char *w);
static size_t mw_iban_length(unsigned char a, unsigned char b);
static unsigned mw_mod97_add(unsigned rem, unsigned char c);
static size_t mw_iban_at(const unsigned char *t, size_t len, size_t i);
static size_t mw_iban_find(const unsigned char *t, size_t len,
    unsigned char *w);
static size_t mw_rules_redact(const mw_quarantine_conf_t *conf, char *buf,
    size_t len);


const char *
mw_quarantine_scan(const mw_quarantine_conf_t *conf, const char *text,
    size_t len)
{
    size_t                s, e;
    const char           *name;
    const unsigned char  *t;

    if (conf == NULL || (text == NULL && len != 0)) {
        return NULL;
    }

    if (text == NULL) {
        text = "";
    }

    t = (const unsigned char *) text;

    if ((conf->detectors & MW_DETECT_CARD) && mw_card_find(t, len, NULL)) {
        return MW_REASON_CARD;
    }

    if ((conf->detectors & MW_DETECT_IBAN) && mw_iban_find(t, len, NULL)) {
        return MW_REASON_IBAN;
    }

    if (conf->match) {
        name = NULL;

        if (conf->match(conf->match_data, text, len, &s, &e, &name)) {
            return name ? name : "rule";
        }
    }

    return NULL;
}


size_t
mw_quarantine_redact(const mw_quarantine_conf_t *conf, char *buf,
    size_t len)
{
    size_t          n;
    unsigned char  *w;

    if (conf == NULL || buf == NULL) {
        return 0;
    }

    w = (unsigned char *) buf;

    /*
     * Rules first: they see the text as it was, and their masks can only
     * separate a number from a word it was glued to, which the detectors
     * then find.  IBANs before cards: masking an IBAN can leave a card
     * number that was joined to it standing alone, never the reverse, so
     * after this order a second scan finds nothing.
     */

    n = mw_rules_redact(conf, buf, len);

    if (conf->detectors & MW_DETECT_IBAN) {
        n += mw_iban_find(w, len, w);
    }

    if (conf->detectors & MW_DETECT_CARD) {
        n += mw_card_find(w, len, w);
    }

    return n;
}


static size_t
mw_rules_redact(const mw_quarantine_conf_t *conf, char *buf, size_t len)
{
    size_t       n, off, s, e, rest;
    const char  *name;

    if (conf->match == NULL) {
        return 0;
    }

    n = 0;
    off = 0;

    while (off < len) {
        rest = len - off;
        name = NULL;

        if (!conf->match(conf->match_data, buf + off, rest, &s, &e, &name)) {
            break;
        }

        /* a matcher's offsets are trusted no further than the text */
        if (s >= rest) {
            break;
        }

        if (e > rest) {
            e = rest;
        }

        if (e <= s) {
            /* an empty match masks nothing; step over one byte */
            off += s + 1;
            continue;
        }

        memset(buf + off + s, '#', e - s);
        n++;
        off += e;
    }

    return n;
}


int
mw_luhn_valid(const char *digits, size_t n)
{
    size_t    i;
    unsigned  sum, v;

    if (digits == NULL || n == 0) {
        return 0;
    }

    sum = 0;

    for (i = 0; i < n; i++) {
        if (!mw_is_digit((unsigned char) digits[n - 1 - i])) {
            return 0;
        }

        v = (unsigned) (digits[n - 1 - i] - '0');

        if (i & 1) {
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        }

        /* kept small so that no length can overflow it */
        sum = (sum + v) % 10;
    }

    return sum == 0;
}


int
mw_iban_valid(const char *s, size_t n)
{
    size_t                i;
    unsigned              rem;
    const unsigned char  *t;

    t = (const unsigned char *) s;

    if (t == NULL || n < 5 || n > MW_IBAN_MAX) {
        return 0;
    }

    if (!mw_is_digit(t[2]) || !mw_is_digit(t[3])
        || mw_iban_length(t[0], t[1]) != n)
    {
        return 0;
    }

    rem = 0;

    /* the BBAN, then the country code and check digits moved behind it */
    for (i = 4; i < n + 4; i++) {
        if (!mw_is_alnum(t[i % n])) {
            return 0;
        }

        rem = mw_mod97_add(rem, t[i % n]);
    }

    /* check digits 00, 01 and 99 are never issued */
    i = (size_t) (t[2] - '0') * 10 + (t[3] - '0');

    return rem == 1 && i >= 2 && i <= 98;
}


/* ---------------------------------------------------------------------- */
/* bytes and escapes                                                       */


static int
mw_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}


static int
mw_is_alpha(unsigned char c)
{
    c |= 0x20;
    return c >= 'a' && c <= 'z';
}


static int
mw_is_alnum(unsigned char c)
{
    return mw_is_digit(c) || mw_is_alpha(c);
}


static int
mw_class(unsigned char c)
{
    if (mw_is_alnum(c)) {
        return MW_PREV_ALNUM;
    }

    return c == '+' ? MW_PREV_PLUS : MW_PREV_BOUNDARY;
}


/* 1 and the code unit in *v when t[i] ('\\') starts "\uXXXX", else 0 */

static int
mw_uescape(const unsigned char *t, size_t len, size_t i, unsigned *v)
{
    if (i + 5 >= len || t[i + 1] != 'u') {
        return 0;
    }

    return mw_hex4(t + i + 2, v) == 0;
}


/*
 * A JSON escape at t[i] ('\\'): returns its length and the class of the
 * character it stands for, or 0 when t[i] starts no escape.  Read left to
 * right, so an escaped backslash is consumed whole and never taken for
 * the start of another escape.
 */

static size_t
mw_escape(const unsigned char *t, size_t len, size_t i, int *cls)
{
    unsigned  v;

    if (i + 1 >= len) {
        return 0;
    }

    switch (t[i + 1]) {

    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
    case 't':
        *cls = MW_PREV_BOUNDARY;
        return 2;

    case 'u':
        if (!mw_uescape(t, len, i, &v)) {
            return 0;
        }

        /* non-ASCII letters do not glue: only ASCII counts as a word */
        *cls = v < 0x80 ? mw_class((unsigned char) v) : MW_PREV_BOUNDARY;
        return 6;

    default:
        return 0;
    }
}


/*
 * A separator that may join two groups of a number, at t[j]: returns its
 * length in bytes and sets *kind, or returns 0.  A space is ' ' or one of
 * the spaces that keep a number on one line, U+00A0 NO-BREAK SPACE,
 * U+2007 FIGURE SPACE and U+202F NARROW NO-BREAK SPACE, which banking
 * apps and word processors put between groups and which survive a paste.
 * Each is read in UTF-8 or as a JSON escape, in either case of hex digits;
 * a dash is '-' or "\u002d".
 *
 * All spaces are one kind: they differ only in width, and a number
 * pasted from an app and then edited by hand ("4111<NBSP>1111 1111...")
 * mixes them without meaning anything else; telling them apart would
 * also let anyone slip a number past the detectors by mixing them.  A
 * space and a dash remain different kinds: "2026-11-22 10:30" is two
 * things, not one.
 *
 * Callers read only whole separators at a byte that follows a digit or a
 * letter, so an escape read here is never the tail of another escape.
 */

static size_t
mw_sep(const unsigned char *t, size_t len, size_t j, int *kind)
{
    unsigned  v;

    if (j >= len) {
        return 0;
    }

    switch (t[j]) {

    case ' ':
        *kind = MW_SEP_SPACE;
        return 1;

    case '-':
        *kind = MW_SEP_DASH;
        return 1;

    case 0xc2:
        /* U+00A0 */
        if (j + 1 < len && t[j + 1] == 0xa0) {
            *kind = MW_SEP_SPACE;
            return 2;
        }

        return 0;

    case 0xe2:
        /* U+2007, U+202F */
        if (j + 2 < len && t[j + 1] == 0x80
            && (t[j + 2] == 0x87 || t[j + 2] == 0xaf))
        {
            *kind = MW_SEP_SPACE;
            return 3;
        }

        return 0;

    case '\\':
        if (!mw_uescape(t, len, j, &v)) {
            return 0;
        }

        if (v == 0x20 || v == 0xa0 || v == 0x2007 || v == 0x202f) {
            *kind = MW_SEP_SPACE;
            return 6;
        }

        if (v == 0x2d) {
            *kind = MW_SEP_DASH;
            return 6;
        }

        return 0;

    default:
        return 0;
    }
}


/* a separator at t[j] followed by a digit: its length, or 0 */

static size_t
mw_sep_digit(const unsigned char *t, size_t len, size_t j, int *kind)
{
    size_t  n;

    n = mw_sep(t, len, j, kind);

    if (n == 0 || j + n >= len || !mw_is_digit(t[j + n])) {
        return 0;
    }

    return n;
}


/* 1 when the byte at j (after a candidate) continues a word or number */

static int
mw_glued_after(const unsigned char *t, size_t len, size_t j)
{
    int  cls;

    if (j >= len) {
        return 0;
    }

    if (t[j] == '\\' && mw_escape(t, len, j, &cls)) {
        return cls == MW_PREV_ALNUM;
    }

    return mw_is_alnum(t[j]);
}


/* ---------------------------------------------------------------------- */
/* payment cards                                                           */


static int
mw_luhn(const unsigned char *d, size_t n)
{
    size_t    i;
    unsigned  sum, v;

    sum = 0;

    /* from the right: every second digit doubled, 10..18 folded to 1..9 */
    for (i = 0; i < n; i++) {
        v = d[n - 1 - i];

        if (i & 1) {
            v *= 2;
            if (v > 9) {
                v -= 9;
            }
        }

        sum += v;
    }

    return sum % 10 == 0;
}


/*
 * 1 when d[0..n) starts with an issuer prefix that issues numbers of
 * length n.  Numbers nobody issues (starting 0, 1, 7, 8, 9, or 2 outside
 * Mastercard's range) are order numbers, ids or phone numbers.
 */

static int
mw_card_issuer(const unsigned char *d, size_t n)
{
    unsigned  p2, p3, p4;

    p2 = d[0] * 10 + d[1];
    p3 = p2 * 10 + d[2];
    p4 = p3 * 10 + d[3];

    switch (d[0]) {

    case 2:
        /* Mastercard 2-series */
        return p4 >= 2221 && p4 <= 2720 && n == 16;

    case 3:
        if (p2 == 34 || p2 == 37) {
            return n == 15;                             /* Amex */
        }

        if (p4 >= 3528 && p4 <= 3589) {
            return n >= 16;                             /* JCB */
        }

        if (p2 == 36 || p2 == 38 || (p3 >= 300 && p3 <= 305)) {
            return n >= 14;                             /* Diners */
        }

        return 0;

    case 4:
        return n == 13 || n == 16 || n == 19;           /* Visa */

    case 5:
        if (p2 >= 51 && p2 <= 55) {
            return n == 16;                             /* Mastercard */
        }

        /* Maestro */
        return p2 == 50 || (p2 >= 56 && p2 <= 58);

    case 6:
        if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649)) {
            return n >= 16;                             /* Discover */
        }

        if (p2 == 62) {
            return n >= 16;                             /* UnionPay */
        }

        /* Maestro */
        return p4 == 6304 || p2 == 67;

    default:
        return 0;
    }
}


/*
 * The longest card number that starts at the group beginning at t[p]:
 * whole groups of digits joined by single separators of one kind (all
 * spaces or all dashes, see mw_sep()), 13 to 19 digits, written compact
 * or grouped as issuers print them: a first group of 4, then groups of 3
 * to 6 digits, the last one possibly shorter (4-4-4-1, 4-4-4-4-3); so
 * that a list of phone numbers ("650 555 1234 650 555 9876") does not
 * read as one.  Not followed by a letter or digit, issuer prefix and Luhn
 * valid.  Returns its end (exclusive), or 0.  Reads at most 19 digits and
 * 18 separators of at most 6 bytes each.
 */

static size_t
mw_card_at(const unsigned char *t, size_t len, size_t p)
{
    int            sep, kind;
    size_t         j, n, g, s, best;
    unsigned char  d[MW_CARD_MAX];

    j = p;
    n = 0;
    sep = 0;
    best = 0;

    for ( ;; ) {

        /* one group */
        g = 0;

        while (j < len && mw_is_digit(t[j])) {
            if (n == MW_CARD_MAX) {
                return best;
            }

            d[n++] = (unsigned char) (t[j++] - '0');
            g++;
        }

        if (sep && g > MW_CARD_GROUP_MAX) {
            return best;
        }

        if (n >= MW_CARD_MIN
            && !mw_glued_after(t, len, j)
            && mw_card_issuer(d, n)
            && mw_luhn(d, n))
        {
            best = j;
        }

        /* another group follows only after a group of a plausible size */
        s = mw_sep_digit(t, len, j, &kind);

        if (s == 0
            || (sep && kind != sep)
            || g < MW_CARD_GROUP_MIN || g > MW_CARD_GROUP_MAX
            || (!sep && g != MW_CARD_GROUP_FIRST))
        {
            return best;
        }

        sep = kind;
        j += s;
    }
}


/*
 * A token starts at the digit t[i]: digit groups joined by single
 * separators of any kind (mw_sep()).  Every group start is tried as a
 * card start, so "Order 12345 4111 1111 1111 1111" still yields the card.
 * Masks what it finds, separators and their escapes included, when w is
 * not NULL; otherwise stops at the first find.  Returns the end of what
 * it consumed.
 */

static size_t
mw_card_token(const unsigned char *t, size_t len, size_t i,
    unsigned char *w, size_t *count)
{
    int     kind;
    size_t  end, s;

    for ( ;; ) {
        end = mw_card_at(t, len, i);

        if (end) {
            (*count)++;

            if (w == NULL) {
                return end;
            }

            memset(w + i, '#', end - i);
            i = end;

        } else {
            while (i < len && mw_is_digit(t[i])) {
                i++;
            }
        }

        s = mw_sep_digit(t, len, i, &kind);

        if (s) {
            i += s;
            continue;
        }

        return i;
    }
}


static size_t
mw_card_find(const unsigned char *t, size_t len, unsigned char *w)
{
    int     prev, cls, kind;
    size_t  i, e, s, count;

    i = 0;
    count = 0;
    prev = MW_PREV_BOUNDARY;

    while (i < len) {

        if (t[i] == '\\') {
            e = mw_escape(t, len, i, &cls);
            if (e) {
                prev = cls;
                i += e;
                continue;
            }
        }

        if (!mw_is_digit(t[i])) {
            prev = mw_class(t[i]);
            i++;
            continue;
        }

        if (prev == MW_PREV_BOUNDARY) {
            i = mw_card_token(t, len, i, w, &count);

            if (count && w == NULL) {
                return count;
            }

        } else {
            /*
             * Glued to a word ("DE89 3704 ...", "id123...") or after "+"
             * (a phone number): the whole token is skipped.
             */
            for ( ;; ) {
                while (i < len && mw_is_digit(t[i])) {
                    i++;
                }

                s = mw_sep_digit(t, len, i, &kind);
                if (s == 0) {
                    break;
                }

                i += s;
            }
        }

        /* what follows a token is no digit: prev is set again there */
        prev = MW_PREV_ALNUM;
    }

    return count;
}


/* ---------------------------------------------------------------------- */
/* IBAN                                                                    */


static size_t
mw_iban_length(unsigned char a, unsigned char b)
{
    size_t  i;

    a &= ~0x20;
    b &= ~0x20;

    for (i = 0; i < sizeof(mw_iban_countries) / sizeof(mw_iban_countries[0]);
         i++)
    {
        if (mw_iban_countries[i].cc[0] == a
            && mw_iban_countries[i].cc[1] == b)
        {
            return mw_iban_countries[i].len;
        }
    }

    return 0;
}


/*
 * Feeds one IBAN character to a running mod 97: a digit is one decimal
 * digit, a letter two (A = 10 ... Z = 35), so no big number is needed.
 */

static unsigned
mw_mod97_add(unsigned rem, unsigned char c)
{
    if (mw_is_digit(c)) {
        return (rem * 10 + (c - '0')) % 97;
    }

    return (rem * 100 + ((c | 0x20) - 'a' + 10)) % 97;
}


/*
 * An IBAN starting at the letter t[i]: country code, check digits and the
 * BBAN, compact or in groups of four joined by single spaces of any kind
 * (mw_sep(); never dashes, which no one writes in an IBAN), exactly as
 * long as the country's IBANs, not followed by a letter or digit,
 * mod 97 == 1.  Returns its end (exclusive), or 0.
 */

static size_t
mw_iban_at(const unsigned char *t, size_t len, size_t i)
{
    int       grouped, kind;
    size_t    j, k, n, s, check;
    unsigned  rem;

    if (i + 4 >= len
        || !mw_is_alpha(t[i]) || !mw_is_alpha(t[i + 1])
        || !mw_is_digit(t[i + 2]) || !mw_is_digit(t[i + 3]))
    {
        return 0;
    }

    n = mw_iban_length(t[i], t[i + 1]);
    if (n == 0) {
        return 0;
    }

    check = (size_t) (t[i + 2] - '0') * 10 + (t[i + 3] - '0');
    if (check < 2 || check > 98) {
        return 0;
    }

    grouped = mw_sep(t, len, i + 4, &kind) && kind == MW_SEP_SPACE;
    rem = 0;
    j = i + 4;

    for (k = 4; k < n; k++) {

        if (grouped && k % 4 == 0) {
            s = mw_sep(t, len, j, &kind);
            if (s == 0 || kind != MW_SEP_SPACE) {
                return 0;
            }

            j += s;
        }

        if (j >= len || !mw_is_alnum(t[j])) {
            return 0;
        }

        rem = mw_mod97_add(rem, t[j++]);
    }

    if (mw_glued_after(t, len, j)) {
        return 0;
    }

    for (k = 0; k < 4; k++) {
        rem = mw_mod97_add(rem, t[i + k]);
    }

    return rem == 1 ? j : 0;
}


static size_t
mw_iban_find(const unsigned char *t, size_t len, unsigned char *w)
{
    int     prev, cls;
    size_t  i, e, count;

    i = 0;
    count = 0;
    prev = MW_PREV_BOUNDARY;

    while (i < len) {

        if (t[i] == '\\') {
            e = mw_escape(t, len, i, &cls);
            if (e) {
                prev = cls;
                i += e;
                continue;
            }
        }

        if (prev != MW_PREV_ALNUM && mw_is_alpha(t[i])) {
            e = mw_iban_at(t, len, i);

            if (e) {
                count++;

                if (w == NULL) {
                    return count;
                }

                memset(w + i, '#', e - i);
                i = e;
                prev = MW_PREV_BOUNDARY;
                continue;
            }
        }

        prev = mw_class(t[i]);
        i++;
    }

    return count;
}
