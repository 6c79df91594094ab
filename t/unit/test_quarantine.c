/*
 * Unit tests for mw_quarantine.c: card and IBAN detectors, operator rule
 * callbacks, redaction of raw JSON bodies.
 */

/* memmem() in the rule callbacks */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <stdlib.h>

#include "mw_core.h"
#include "tap.h"


/*
 * The spaces that keep a number on one line, in UTF-8; written as macros
 * so that a digit after one is not read into its "\x" escape.
 */
#define NBSP     "\xc2\xa0"           /* U+00A0 NO-BREAK SPACE */
#define FIGSP    "\xe2\x80\x87"       /* U+2007 FIGURE SPACE */
#define NNBSP    "\xe2\x80\xaf"       /* U+202F NARROW NO-BREAK SPACE */


typedef struct {
    const char  *text;
    const char  *want;          /* NULL: nothing fires */
} scan_case_t;


/* text that must be quarantined, and why */
static const scan_case_t  positives[] = {

    /* cards: every issuer, compact, spaced, dashed */
    { "4111 1111 1111 1111", MW_REASON_CARD },
    { "4111-1111-1111-1111", MW_REASON_CARD },
    { "4111111111111111", MW_REASON_CARD },
    { "my card is 4012888888881881, exp 12/27", MW_REASON_CARD },
    { "4222222222222", MW_REASON_CARD },                 /* Visa, 13 */
    { "4222 2222 2222 2", MW_REASON_CARD },
    { "5555 5555 5555 4444", MW_REASON_CARD },           /* Mastercard */
    { "5105105105105100", MW_REASON_CARD },
    { "2221 0000 0000 0009", MW_REASON_CARD },           /* 2-series */
    { "2720000000000005", MW_REASON_CARD },
    { "3782 822463 10005", MW_REASON_CARD },             /* Amex 4-6-5 */
    { "378282246310005", MW_REASON_CARD },
    { "371449635398431", MW_REASON_CARD },
    { "6011 1111 1111 1117", MW_REASON_CARD },           /* Discover */
    { "6011000000000004", MW_REASON_CARD },
    { "6500000000000002", MW_REASON_CARD },
    { "6440000000000005", MW_REASON_CARD },
    { "6490000000000000007", MW_REASON_CARD },           /* 19 digits */
    { "3530111333300000", MW_REASON_CARD },              /* JCB */
    { "3566-0020-2036-0505", MW_REASON_CARD },
    { "3528000000000007", MW_REASON_CARD },
    { "3589000000000000009", MW_REASON_CARD },
    { "3056 930902 5904", MW_REASON_CARD },              /* Diners 4-6-4 */
    { "30000000000004", MW_REASON_CARD },
    { "30500000000003", MW_REASON_CARD },
    { "36000000000008", MW_REASON_CARD },
    { "38520000023237", MW_REASON_CARD },
    { "6200000000000005", MW_REASON_CARD },              /* UnionPay */
    { "6200000000000000000", MW_REASON_CARD },
    { "5000000000005", MW_REASON_CARD },                 /* Maestro */
    { "5600000000000003", MW_REASON_CARD },
    { "5800000000000000008", MW_REASON_CARD },
    { "6304000000000000", MW_REASON_CARD },
    { "6759 6498 2643 8453", MW_REASON_CARD },
    { "670000000000000000", MW_REASON_CARD },
    { "4000 0566 5566 5556 0", MW_REASON_CARD },     /* 4-4-4-4 + 1 */

    /* a card among ordinary numbers */
    { "Order 12345 4111 1111 1111 1111", MW_REASON_CARD },
    { "paid with 4111111111111111.", MW_REASON_CARD },
    { "(4111111111111111)", MW_REASON_CARD },
    { "card:4111-1111-1111-1111;", MW_REASON_CARD },
    { "4111 1111 1111 1111 12/27", MW_REASON_CARD },
    { "\"4111111111111111\"", MW_REASON_CARD },
    { "2026-11-22 4111 1111 1111 1111", MW_REASON_CARD },
    { "\xc3\xa9" "4111111111111111", MW_REASON_CARD },  /* not ASCII */

    /* IBANs */
    { "DE89 3704 0044 0532 0130 00", MW_REASON_IBAN },
    { "DE89370400440532013000", MW_REASON_IBAN },
    { "GB82WEST12345698765432", MW_REASON_IBAN },
    { "GB82 WEST 1234 5698 7654 32", MW_REASON_IBAN },
    { "FR14 2004 1010 0505 0001 3M02 606", MW_REASON_IBAN },
    { "gb82 west 1234 5698 7654 32", MW_REASON_IBAN },
    { "iban: fr1420041010050500013m02606.", MW_REASON_IBAN },
    { "NL91ABNA0417164300", MW_REASON_IBAN },
    { "BE68 5390 0754 7034", MW_REASON_IBAN },
    { "NO9386011117947", MW_REASON_IBAN },               /* shortest */
    { "MT84 MALT 0110 0001 2345 MTLC AST0 01S", MW_REASON_IBAN },
    { "RU0304452522540817810538091310419", MW_REASON_IBAN },  /* longest */
    { "AT61 1904 3002 3457 3201", MW_REASON_IBAN },
    { "pay to SA03 8000 0000 6080 1016 7519, thanks", MW_REASON_IBAN },
    { "IBAN:GB29 NWBK 6016 1331 9268 19", MW_REASON_IBAN },
    { "DE89370400440532013000 1", MW_REASON_IBAN },     /* then a "1" */

    /* both: the card detector is asked first */
    { "DE89370400440532013000 or 4111111111111111", MW_REASON_CARD },

    /* cards grouped with the spaces banking apps use */
    { "4111" NBSP "1111" NBSP "1111" NBSP "1111", MW_REASON_CARD },
    { "card 4111" NBSP "1111" NBSP "1111" NBSP "1111 thanks",
      MW_REASON_CARD },
    { "4111" FIGSP "1111" FIGSP "1111" FIGSP "1111", MW_REASON_CARD },
    { "5555" NNBSP "5555" NNBSP "5555" NNBSP "4444", MW_REASON_CARD },
    { "3782" NBSP "822463" NBSP "10005", MW_REASON_CARD },     /* 4-6-5 */
    { "3056" NNBSP "930902" NNBSP "5904", MW_REASON_CARD },    /* 4-6-4 */
    { "4222" NBSP "2222" NBSP "2222" NBSP "2", MW_REASON_CARD },
    { "4000" NBSP "0566" NBSP "5566" NBSP "5556" NBSP "0", MW_REASON_CARD },
    { "card:" NBSP "4111111111111111" NBSP "ok", MW_REASON_CARD },
    { "4111" NBSP "1111" NBSP "1111" NBSP "1111\xc2", MW_REASON_CARD },
    { "Order" NBSP "12345" NBSP "4111" NBSP "1111" NBSP "1111" NBSP "1111",
      MW_REASON_CARD },

    /* all spaces are one kind: a pasted number edited by hand */
    { "4111 1111" NBSP "1111" NNBSP "1111", MW_REASON_CARD },
    { "4111" FIGSP "1111 1111 1111", MW_REASON_CARD },

    /* separators written as JSON escapes, any case of hex digits */
    { "4111\\u00201111\\u00201111\\u00201111", MW_REASON_CARD },
    { "4111\\u00a01111\\u00A01111\\u00a01111", MW_REASON_CARD },
    { "4111\\u002d1111\\u002D1111\\u002d1111", MW_REASON_CARD },
    { "4111\\u20071111\\u20071111\\u20071111", MW_REASON_CARD },
    { "4111\\u202f1111\\u202F1111\\u202f1111", MW_REASON_CARD },
    { "3782\\u0020822463\\u002010005", MW_REASON_CARD },
    { "4111\\u0020" "1111 1111" NBSP "1111", MW_REASON_CARD },
    { "4111-1111\\u002d1111-1111", MW_REASON_CARD },    /* both dashes */
    { "\\u00a04111111111111111\\u00a0", MW_REASON_CARD },

    /* IBANs grouped with the same spaces */
    { "DE89" NBSP "3704" NBSP "0044" NBSP "0532" NBSP "0130" NBSP "00",
      MW_REASON_IBAN },
    { "GB82" NNBSP "WEST" NNBSP "1234" NNBSP "5698" NNBSP "7654" NNBSP "32",
      MW_REASON_IBAN },
    { "BE68" FIGSP "5390 0754" NBSP "7034", MW_REASON_IBAN },
    { "DE89\\u00a03704\\u00A00044\\u00a00532\\u00a00130\\u00a000",
      MW_REASON_IBAN },
    { "GB82\\u0020WEST\\u00201234\\u00205698\\u00207654\\u002032",
      MW_REASON_IBAN },
    { "BE68\\u202f5390\\u20070754 7034", MW_REASON_IBAN },
};


/* ordinary text that must pass */
static const scan_case_t  negatives[] = {
    { "", NULL },
    { "hello", NULL },
    { "Order 12345678", NULL },
    { "Order #1234567812345678 shipped", NULL },      /* 1: no issuer */
    { "2026-11-22", NULL },
    { "2026-11-22 10:30:00", NULL },
    { "10:30", NULL },
    { "+1 650-555-1234", NULL },
    { "+44 20 7946 0958", NULL },
    { "call 650 555 1234 or 650 555 9876", NULL },
    { "1,234.56", NULL },
    { "EUR 1.234.567,89", NULL },
    { "4111111111111112", NULL },                       /* not Luhn */
    { "4111 1111 1111 1112", NULL },
    { "9000000000000001", NULL },                       /* Luhn, no issuer */
    { "1000000000000008", NULL },
    { "7000000000000005", NULL },
    { "8000000000000003", NULL },
    { "0000000000000000", NULL },
    { "6000000000000007", NULL },
    { "3500000000000009", NULL },
    { "5900000000000000", NULL },
    { "2220000000000000", NULL },                       /* below 2221 */
    { "2721000000000004", NULL },                       /* above 2720 */
    { "6430000000000007", NULL },
    { "3527000000000008", NULL },
    { "30600000000001", NULL },
    { "51000000000000003", NULL },                      /* MC, 17 digits */
    { "3400000000000000", NULL },                       /* Amex, 16 */
    { "400000000000006", NULL },                        /* Visa, 15 */
    { "422222222222", NULL },                           /* 12 digits */
    { "41111111111111111111", NULL },                   /* 20 digits */
    { "14111111111111111", NULL },                      /* inside a longer */
    { "41111111111111110", NULL },
    { "x4111111111111111", NULL },                      /* glued to a word */
    { "4111111111111111x", NULL },
    { "id4111111111111111", NULL },
    { "+4111111111111111", NULL },                      /* phone-like */
    { "4111  1111  1111  1111", NULL },                 /* double spaces */
    { "4111 1111-1111 1111", NULL },                    /* mixed */
    { "4111--1111--1111--1111", NULL },
    { "41 11 11 11 11 11 11 11", NULL },                /* not card groups */
    { "411 111 111 111 111 1", NULL },
    { "4111 111111111111", NULL },
    { "4111.1111.1111.1111", NULL },
    { "timestamp 1749416383, id 106540352242922", NULL },

    /* IBANs, each with one character changed or badly written */
    { "DE89 3704 0044 0532 0130 01", NULL },
    { "DE88 3704 0044 0532 0130 00", NULL },
    { "GB82WEST12345698765433", NULL },
    { "FR14 2004 1010 0505 0001 3M02 607", NULL },
    { "DE89 3704 0044 0532 0130 000", NULL },           /* too long */
    { "DE893704004405320130001", NULL },
    { "DE89 3704 0044 0532 0130 0", NULL },             /* too short */
    { "DE89 37040044 0532013000", NULL },               /* bad grouping */
    { "DE89  3704 0044 0532 0130 00", NULL },
    { "IBANDE89370400440532013000", NULL },             /* glued */
    { "DE89370400440532013000X", NULL },
    { "XX89370400440532013000", NULL },                 /* no country */
    { "de89-3704-0044-0532-0130-00", NULL },

    /* numbers grouped with no-break spaces that are not cards */
    { "call 650" NBSP "555" NBSP "1234 or 650" NBSP "555" NBSP "9876",
      NULL },
    { "call 650" NNBSP "555" NNBSP "1234" NNBSP "650" NNBSP "555" NNBSP
      "9876", NULL },
    { "+44" NBSP "20" NBSP "7946" NBSP "0958", NULL },
    { "+4111" NBSP "1111" NBSP "1111" NBSP "1111", NULL },  /* phone-like */
    { "EUR" NBSP "1" NBSP "234" NBSP "567,89", NULL },
    { "4111" NBSP "1111" NBSP "1111" NBSP "1112", NULL },   /* not Luhn */
    { "4111" NBSP "1111-1111" NBSP "1111", NULL },          /* mixed */
    { "4111-1111" NNBSP "1111-1111", NULL },
    { "4111" NBSP NBSP "1111" NBSP NBSP "1111" NBSP NBSP "1111", NULL },
    { "4111 " NBSP "1111 " NBSP "1111 " NBSP "1111", NULL },
    { "41" NBSP "11" NBSP "11" NBSP "11" NBSP "11" NBSP "11" NBSP "11"
      NBSP "11", NULL },
    { "x4111" NBSP "1111" NBSP "1111" NBSP "1111", NULL },  /* glued */
    { "4111" NBSP "1111" NBSP "1111" NBSP "1111x", NULL },

    /* other spaces and broken UTF-8 are not separators */
    { "4111\xe2\x80\x89" "1111\xe2\x80\x89" "1111\xe2\x80\x89" "1111",
      NULL },                                           /* U+2009 */
    { "4111\xe3\x80\x80" "1111\xe3\x80\x80" "1111\xe3\x80\x80" "1111",
      NULL },                                           /* U+3000 */
    { "4111\xa0" "1111\xa0" "1111\xa0" "1111", NULL },   /* no lead byte */
    { "4111\xc2" "1111\xc2" "1111\xc2" "1111", NULL },   /* no trail byte */
    { "4111\xe2\x80" "1111\xe2\x80" "1111\xe2\x80" "1111", NULL },

    /* JSON escapes that are no separators, or between no card groups */
    { "650\\u0020555\\u00201234 or 650\\u0020555\\u00209876", NULL },
    { "+44\\u002020\\u00207946\\u00200958", NULL },
    { "2026\\u002d11\\u002d22\\u002010:30", NULL },
    { "4111\\u00201111\\u00201111\\u00201112", NULL },    /* not Luhn */
    { "4111\\u00201111\\u002d1111\\u00201111", NULL },    /* mixed */
    { "4111 1111\\u002d1111 1111", NULL },
    { "4111\\u0020\\u00201111\\u0020\\u00201111\\u0020\\u00201111",
      NULL },
    { "4111\\u00211111\\u00211111\\u00211111", NULL },    /* '!' */
    { "4111\\u2009" "1111\\u2009" "1111\\u2009" "1111", NULL },
    { "4111\\u002" "01111\\u002" "01111", NULL },           /* short */
    { "4111\\u00g01111\\u00g01111\\u00g01111", NULL },    /* not hex */
    { "4111\\\\u00201111\\\\u00201111\\\\u00201111", NULL },
                                                    /* escaped backslash */
    { "4111\\u00201111\\u00201111\\u00201111\\u0041", NULL },
                                                    /* then 'A': glued */

    /* an escaped digit is read as glued, never as a part of the number */
    { "\\u0034111 1111 1111 1111", NULL },
    { "4111 1111 1111 111\\u0031", NULL },

    /* IBANs with a separator that no IBAN is written with */
    { "DE89\\u002d3704\\u002d0044\\u002d0532\\u002d0130\\u002d00",
      NULL },
    { "DE89" NBSP NBSP "3704 0044 0532 0130 00", NULL },
    { "DE89" NBSP "37040044" NBSP "0532013000", NULL },
    { "DE89" NBSP "3704" NBSP "0044" NBSP "0532" NBSP "0130" NBSP "01",
      NULL },
};


static int rule_calls;


static int rule_secret(void *data, const char *text, size_t len,
    size_t *start, size_t *end, const char **name);
static int rule_empty(void *data, const char *text, size_t len,
    size_t *start, size_t *end, const char **name);
static int rule_wild(void *data, const char *text, size_t len,
    size_t *start, size_t *end, const char **name);
static int rule_abc(void *data, const char *text, size_t len,
    size_t *start, size_t *end, const char **name);
static void test_scan_tables(void);
static void test_checks(void);
static void test_conf(void);
static void test_nul(void);
static void test_redact(void);
static void test_redact_separators(void);
static void test_rules(void);
static void test_large(void);
static int redact_is(const mw_quarantine_conf_t *conf, const char *in,
    const char *want, size_t count);


int
main(void)
{
    test_scan_tables();
    test_checks();
    test_conf();
    test_nul();
    test_redact();
    test_redact_separators();
    test_rules();
    test_large();

    return done_testing();
}


static void
test_scan_tables(void)
{
    size_t                 i;
    const char            *want;
    mw_quarantine_conf_t   conf;

    memset(&conf, 0, sizeof(conf));
    conf.detectors = MW_DETECT_ALL;

    for (i = 0; i < sizeof(positives) / sizeof(positives[0]); i++) {
        want = positives[i].want;

        is_str(mw_quarantine_scan(&conf, positives[i].text,
                                  strlen(positives[i].text)),
               want, "fires: %s", positives[i].text);
    }

    for (i = 0; i < sizeof(negatives) / sizeof(negatives[0]); i++) {
        is_str(mw_quarantine_scan(&conf, negatives[i].text,
                                  strlen(negatives[i].text)),
               NULL, "passes: %s", negatives[i].text);
    }
}


static void
test_checks(void)
{
    is_int(mw_luhn_valid("4111111111111111", 16), 1, "luhn 4111...1111");
    is_int(mw_luhn_valid("4111111111111112", 16), 0, "luhn 4111...1112");
    is_int(mw_luhn_valid("79927398713", 11), 1, "luhn 79927398713");
    is_int(mw_luhn_valid("79927398710", 11), 0, "luhn 79927398710");
    is_int(mw_luhn_valid("0", 1), 1, "luhn 0");
    is_int(mw_luhn_valid("", 0), 0, "luhn of nothing is not valid");
    is_int(mw_luhn_valid("4111 1111", 9), 0, "luhn refuses a space");
    is_int(mw_luhn_valid("4111111111111111", 15), 0,
           "luhn uses the given length");

    is_int(mw_iban_valid("DE89370400440532013000", 22), 1, "iban DE");
    is_int(mw_iban_valid("de89370400440532013000", 22), 1, "iban lowercase");
    is_int(mw_iban_valid("GB82WEST12345698765432", 22), 1, "iban GB");
    is_int(mw_iban_valid("FR1420041010050500013M02606", 27), 1, "iban FR");
    is_int(mw_iban_valid("DE89370400440532013001", 22), 0, "iban DE, changed");
    is_int(mw_iban_valid("DE89370400440532013000", 21), 0,
           "iban uses the given length");
    is_int(mw_iban_valid("DE89 3704 0044 0532 0130 00", 27), 0,
           "iban compact form only");
    is_int(mw_iban_valid("ZZ89370400440532013000", 22), 0,
           "iban unknown country");
    is_int(mw_iban_valid("DE8937040044053201300!", 22), 0,
           "iban punctuation");
    is_int(mw_iban_valid("", 0), 0, "iban empty");

    /* check digits 00, 01, 99 are never valid, even when mod 97 holds */
    is_int(mw_iban_valid("GB00WEST12345698765432", 22), 0, "iban check 00");
    is_int(mw_iban_valid("GB99WEST12345698765432", 22), 0, "iban check 99");
}


static void
test_conf(void)
{
    const char            *card, *iban;
    mw_quarantine_conf_t   conf;

    card = "4111 1111 1111 1111";
    iban = "DE89 3704 0044 0532 0130 00";

    is_str(mw_quarantine_scan(NULL, card, strlen(card)), NULL,
           "conf NULL: nothing fires");

    memset(&conf, 0, sizeof(conf));
    is_str(mw_quarantine_scan(&conf, card, strlen(card)), NULL,
           "no detectors: card passes");

    conf.detectors = MW_DETECT_IBAN;
    is_str(mw_quarantine_scan(&conf, card, strlen(card)), NULL,
           "IBAN only: card passes");
    is_str(mw_quarantine_scan(&conf, iban, strlen(iban)), MW_REASON_IBAN,
           "IBAN only: IBAN fires");

    conf.detectors = MW_DETECT_CARD;
    is_str(mw_quarantine_scan(&conf, iban, strlen(iban)), NULL,
           "card only: IBAN passes");
    is_str(mw_quarantine_scan(&conf, card, strlen(card)), MW_REASON_CARD,
           "card only: card fires");

    conf.detectors = MW_DETECT_ALL;
    is_str(mw_quarantine_scan(&conf, NULL, 0), NULL, "NULL text, length 0");
    is_int(mw_quarantine_redact(&conf, NULL, 0), 0, "redact NULL buffer");
    is_int(mw_quarantine_redact(NULL, (char *) "x", 1), 0,
           "redact conf NULL");

    /* the length given is the text: a card past it is not seen */
    is_str(mw_quarantine_scan(&conf, "4111111111111111", 15), NULL,
           "the given length bounds the scan");
    is_str(mw_quarantine_scan(&conf, "4111111111111111x", 16),
           MW_REASON_CARD, "a byte past the length is not read as glued");
}


static void
test_nul(void)
{
    static const char      text[] = "hi\0card 4111 1111 1111 1111\0end";
    static const char      ib[] = "\0DE89370400440532013000\0";
    char                   buf[sizeof(text)];
    mw_quarantine_conf_t   conf;

    memset(&conf, 0, sizeof(conf));
    conf.detectors = MW_DETECT_ALL;

    is_str(mw_quarantine_scan(&conf, text, sizeof(text) - 1),
           MW_REASON_CARD, "card after a NUL byte is found");
    is_str(mw_quarantine_scan(&conf, ib, sizeof(ib) - 1), MW_REASON_IBAN,
           "IBAN between NUL bytes is found");

    memcpy(buf, text, sizeof(text));
    is_int(mw_quarantine_redact(&conf, buf, sizeof(text) - 1), 1,
           "redact past a NUL byte");
    ok(memcmp(buf, "hi\0card ###################\0end", sizeof(text)) == 0,
       "redacted bytes, NULs kept");
}


static int
redact_is(const mw_quarantine_conf_t *conf, const char *in,
    const char *want, size_t count)
{
    int     pass;
    char   *buf;
    size_t  n, len;

    len = strlen(in);
    buf = malloc(len + 1);
    if (buf == NULL) {
        return 0;
    }

    memcpy(buf, in, len + 1);
    n = mw_quarantine_redact(conf, buf, len);

    pass = n == count && strcmp(buf, want) == 0;
    if (!pass) {
        printf("#   got %zu '%s'\n#  want %zu '%s'\n", n, buf, count, want);
    }

    free(buf);
    return pass;
}


static void
test_redact(void)
{
    mw_quarantine_conf_t  conf;

    memset(&conf, 0, sizeof(conf));
    conf.detectors = MW_DETECT_ALL;

    ok(redact_is(&conf,
                 "{\"body\":\"card 4111 1111 1111 1111\"}",
                 "{\"body\":\"card ###################\"}", 1),
       "card in a JSON string");

    ok(redact_is(&conf,
                 "{\"text\":{\"body\":\"card 4111-1111-1111-1111, iban DE89 "
                 "3704 0044 0532 0130 00\\nthanks\"}}",
                 "{\"text\":{\"body\":\"card ###################, iban ####"
                 "#######################\\nthanks\"}}", 2),
       "card and IBAN, separators and spaces masked");

    ok(redact_is(&conf,
                 "{\"body\":\"line\\n4111111111111111\\tGB82WEST1234569876"
                 "5432\\r\\n\"}",
                 "{\"body\":\"line\\n################\\t##################"
                 "####\\r\\n\"}", 2),
       "JSON escapes \\n \\t before a number are boundaries");

    ok(redact_is(&conf,
                 "{\"body\":\"caf\\u00e94111 1111 1111 1111 \\u002f"
                 "FR1420041010050500013M02606\\u003c\"}",
                 "{\"body\":\"caf\\u00e9################### \\u002f"
                 "###########################\\u003c\"}", 2),
       "\\u escapes of non-letters are boundaries");

    ok(redact_is(&conf,
                 "{\"body\":\"\\u00414111111111111111\"}",
                 "{\"body\":\"\\u00414111111111111111\"}", 0),
       "an escaped ASCII letter glues (\\u0041 is A)");

    ok(redact_is(&conf,
                 "{\"body\":\"\\\\4111111111111111\"}",
                 "{\"body\":\"\\\\################\"}", 1),
       "an escaped backslash is consumed whole");

    ok(redact_is(&conf,
                 "4111111111111111 5555555555554444 and 378282246310005",
                 "################ ################ and ###############", 3),
       "every card masked");

    ok(redact_is(&conf,
                 "Order 12345 4111 1111 1111 1111 done",
                 "Order 12345 ################### done", 1),
       "only the card part of a run of numbers");

    ok(redact_is(&conf,
                 "DE89370400440532013000-4111111111111111",
                 "######################-################", 2),
       "a card joined to an IBAN is masked too");

    ok(redact_is(&conf,
                 "ids 106540352242922 1749416383 +44 20 7946 0958",
                 "ids 106540352242922 1749416383 +44 20 7946 0958", 0),
       "ordinary numbers untouched");

    ok(redact_is(&conf,
                 "DE89 3704 0044 0532 0130 01 4111111111111112",
                 "DE89 3704 0044 0532 0130 01 4111111111111112", 0),
       "invalid IBAN and card untouched");
}


/* separators other than ' ' and '-': no-break spaces, JSON escapes */

static void
test_redact_separators(void)
{
    mw_quarantine_conf_t  conf;

    memset(&conf, 0, sizeof(conf));
    conf.detectors = MW_DETECT_ALL;

    /* the body of t/06-deadletter.t: the escapes are masked whole */
    ok(redact_is(&conf,
                 "{\"body\":\"card 4111\\u00201111\\u00201111\\u00201111"
                 " ok\"}",
                 "{\"body\":\"card ##################################"
                 " ok\"}", 1),
       "card with \\u0020 escapes masked, escapes and all");

    ok(redact_is(&conf,
                 "{\"body\":\"4111\\u00A01111\\u20071111\\u202F1111\"}",
                 "{\"body\":\"##################################\"}", 1),
       "\\u00A0 \\u2007 \\u202F, upper case hex, one kind");

    ok(redact_is(&conf,
                 "{\"body\":\"4111\\u002d1111\\u002D1111-1111\"}",
                 "{\"body\":\"#############################\"}", 1),
       "\\u002d and '-' are one kind");

    ok(redact_is(&conf,
                 "card 4111" NBSP "1111" NBSP "1111" NBSP "1111.",
                 "card ######################.", 1),
       "no-break spaces in UTF-8 masked, both bytes");

    ok(redact_is(&conf,
                 "3782" FIGSP "822463" NNBSP "10005" NBSP "end",
                 "#####################" NBSP "end", 1),
       "figure and narrow no-break spaces masked, all three bytes");

    ok(redact_is(&conf,
                 "\\u00a04111\\u00a01111\\u00a01111\\u00a01111\\u00a0end",
                 "\\u00a0##################################\\u00a0end", 1),
       "escapes around the number are kept");

    ok(redact_is(&conf,
                 "Order 12345\\u00204111\\u00201111\\u00201111\\u00201111",
                 "Order 12345\\u0020##################################", 1),
       "only the card part of a run joined by escapes");

    ok(redact_is(&conf,
                 "DE89\\u00a03704\\u00a00044\\u00a00532\\u00a00130\\u00a000",
                 "####################################################", 1),
       "IBAN with \\u00a0 escapes masked whole");

    ok(redact_is(&conf,
                 "iban GB82" NNBSP "WEST" NNBSP "1234" NNBSP "5698" NNBSP
                 "7654" NNBSP "32, thanks",
                 "iban #####################################, thanks", 1),
       "IBAN with narrow no-break spaces masked");

    ok(redact_is(&conf,
                 "DE89370400440532013000\\u002d4111111111111111",
                 "######################\\u002d################", 2),
       "a card joined to an IBAN by an escaped dash is masked too");

    ok(redact_is(&conf,
                 "650\\u0020555\\u00201234 +44\\u002020\\u00207946\\u00200958"
                 " +44" NBSP "20" NBSP "7946" NBSP "0958 4111\\\\u00201111"
                 "\\\\u00201111\\\\u00201111",
                 "650\\u0020555\\u00201234 +44\\u002020\\u00207946\\u00200958"
                 " +44" NBSP "20" NBSP "7946" NBSP "0958 4111\\\\u00201111"
                 "\\\\u00201111\\\\u00201111", 0),
       "phone numbers and an escaped backslash untouched");

    ok(redact_is(&conf,
                 "4111\\u00201111\\u002d1111\\u00201111 "
                 "4111" NBSP "1111" NBSP "1111" NBSP "1112",
                 "4111\\u00201111\\u002d1111\\u00201111 "
                 "4111" NBSP "1111" NBSP "1111" NBSP "1112", 0),
       "mixed kinds and a bad Luhn untouched");
}


/* finds "secret" */

static int
rule_secret(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name)
{
    const char  *p;

    rule_calls++;

    p = memmem(text, len, "secret", 6);
    if (p == NULL) {
        return 0;
    }

    *start = p - text;
    *end = *start + 6;
    *name = data;

    return 1;
}


/* matches the empty string everywhere, as "x*" would */

static int
rule_empty(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name)
{
    (void) data;
    (void) text;
    (void) len;

    rule_calls++;

    *start = 0;
    *end = 0;
    *name = "empty";

    return 1;
}


/* returns offsets beyond the text: must be clamped, not trusted */

static int
rule_wild(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name)
{
    (void) data;
    (void) text;

    rule_calls++;

    *start = len > 2 ? len - 2 : 0;
    *end = len + 100;
    *name = NULL;

    return 1;
}


/* finds "abc", which glues a card to a word until it is masked */

static int
rule_abc(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name)
{
    const char  *p;

    (void) data;

    p = memmem(text, len, "abc", 3);
    if (p == NULL) {
        return 0;
    }

    *start = p - text;
    *end = *start + 3;
    *name = "abc";

    return 1;
}


static void
test_rules(void)
{
    const char            *t;
    mw_quarantine_conf_t   conf;

    memset(&conf, 0, sizeof(conf));
    conf.match = rule_secret;
    conf.match_data = (void *) "secret_word";

    t = "this is a secret";
    rule_calls = 0;
    is_str(mw_quarantine_scan(&conf, t, strlen(t)), "secret_word",
           "rule fires with its own name");
    is_int(rule_calls, 1, "scan calls the rule once");

    t = "nothing here";
    is_str(mw_quarantine_scan(&conf, t, strlen(t)), NULL, "rule no match");

    conf.detectors = MW_DETECT_ALL;
    t = "secret 4111111111111111";
    is_str(mw_quarantine_scan(&conf, t, strlen(t)), MW_REASON_CARD,
           "detectors are asked before the rules");
    t = "secret DE89370400440532013000";
    is_str(mw_quarantine_scan(&conf, t, strlen(t)), MW_REASON_IBAN,
           "IBAN before the rules");

    ok(redact_is(&conf, "secret, secret and a secretary: 4111111111111111",
                 "######, ###### and a ######ary: ################", 4),
       "redact masks every rule match and the card");

    ok(redact_is(&conf, "secretsecret", "############", 2),
       "adjacent rule matches");

    conf.match = rule_empty;
    rule_calls = 0;
    ok(redact_is(&conf, "abc", "abc", 0), "empty matches mask nothing");
    is_int(rule_calls, 3, "empty matches advance one byte each");

    rule_calls = 0;
    is_str(mw_quarantine_scan(&conf, "", 0), "empty",
           "scan reports an empty match");

    conf.match = rule_wild;
    conf.detectors = 0;
    ok(redact_is(&conf, "hello world", "hello wor##", 1),
       "offsets past the text are clamped");
    is_str(mw_quarantine_scan(&conf, "x", 1), "rule",
           "a rule without a name is reported as \"rule\"");

    conf.match = rule_abc;
    conf.detectors = MW_DETECT_ALL;
    ok(redact_is(&conf, "abc4111111111111111", "###################", 2),
       "rules run first: a card they unglue is masked");
}


/* long inputs: linear time, and the detectors' limits */

static void
test_large(void)
{
    char                  *buf;
    size_t                 i, len, n;
    mw_quarantine_conf_t   conf;

    memset(&conf, 0, sizeof(conf));
    conf.detectors = MW_DETECT_ALL;

    len = 4 * 1024 * 1024;
    buf = malloc(len);
    ok(buf != NULL, "4 MB buffer");
    if (buf == NULL) {
        return;
    }

    /* one huge token of single-digit groups */
    for (i = 0; i < len; i++) {
        buf[i] = (i & 1) ? ' ' : '4';
    }

    is_str(mw_quarantine_scan(&conf, buf, len), NULL,
           "4 MB of '4 4 4 ...' passes");

    /* the same with separators of several bytes */
    for (i = 0; i < len; i++) {
        buf[i] = "4" NBSP "4\\u00a0"[i % 10];
    }

    is_str(mw_quarantine_scan(&conf, buf, len), NULL,
           "4 MB of '4<NBSP>4\\u00a0...' passes");

    /* Luhn-valid cards grouped by escapes, back to back */
    for (i = 0; i + 35 <= len; i += 35) {
        memcpy(buf + i, "4111\\u00201111\\u00201111\\u00201111 ", 35);
    }

    memset(buf + i, ' ', len - i);

    n = mw_quarantine_redact(&conf, buf, len);
    is_int(n, len / 35, "every card grouped by \\u0020 in 4 MB is masked");
    ok(memchr(buf, '1', len) == NULL && memchr(buf, '\\', len) == NULL,
       "no digit or escape left");

    /* Luhn-valid cards, back to back, separated by one space */
    for (i = 0; i + 17 <= len; i += 17) {
        memcpy(buf + i, "4111111111111111 ", 17);
    }

    memset(buf + i, ' ', len - i);

    n = mw_quarantine_redact(&conf, buf, len);
    is_int(n, len / 17, "every card in 4 MB is masked");
    ok(memchr(buf, '1', len) == NULL && memchr(buf, '4', len) == NULL,
       "no digit left");

    /* letters and digits that look like IBAN starts */
    for (i = 0; i < len; i++) {
        buf[i] = "DE89 "[i % 5];
    }

    is_str(mw_quarantine_scan(&conf, buf, len), NULL,
           "4 MB of 'DE89 DE89 ...' passes");

    free(buf);
}
