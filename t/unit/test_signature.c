/*
 * Unit tests for mw_signature.c: HMAC-SHA256 vectors, header parsing, key
 * rotation and the raw-bytes rule.
 */

#include <stdlib.h>

#include <openssl/evp.h>

#include "mw_core.h"
#include "tap.h"


#define META_SECRET  "meta_app_secret_0123456789abcdef"

/*
 * A delivery as Meta writes it: non-ASCII and some ASCII escaped as
 * \uXXXX.  Its signature was computed with
 * openssl dgst -sha256 -hmac META_SECRET over exactly these bytes.
 */
#define META_BODY                                                          \
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"        \
    "\"102290129340398\",\"changes\":[{\"value\":{\"messaging_product\":"  \
    "\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550783881\"," \
    "\"phone_number_id\":\"106540352242922\"},\"contacts\":[{\"profile\":" \
    "{\"name\":\"Ren\\u00e9e\"},\"wa_id\":\"16505551234\"}],\"messages\":" \
    "[{\"from\":\"16505551234\",\"id\":\"wamid.HBgLMTY1MDU1NTEyMzQVAgASGB" \
    "QzQTdBNTg5QjdEQ0NFMTQ3NkE2NgA=\",\"timestamp\":\"1749416383\","       \
    "\"text\":{\"body\":\"caf\\u00e9 \\u003c3 \\u002f ok\"},\"type\":"     \
    "\"text\"}]},\"field\":\"messages\"}]}]}"

#define META_SIG                                                           \
    "sha256=770281ff616766831abec59e6976593e77f36e2ccb622963f7f56cb37ce6061d"

/* the same document after a JSON library decoded and wrote it again */
#define META_BODY_RESERIALIZED                                             \
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"        \
    "\"102290129340398\",\"changes\":[{\"value\":{\"messaging_product\":"  \
    "\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550783881\"," \
    "\"phone_number_id\":\"106540352242922\"},\"contacts\":[{\"profile\":" \
    "{\"name\":\"Ren\xc3\xa9" "e\"},\"wa_id\":\"16505551234\"}],"          \
    "\"messages\":[{\"from\":\"16505551234\",\"id\":\"wamid.HBgLMTY1MDU1N" \
    "TEyMzQVAgASGBQzQTdBNTg5QjdEQ0NFMTQ3NkE2NgA=\",\"timestamp\":"         \
    "\"1749416383\",\"text\":{\"body\":\"caf\xc3\xa9 <3 / ok\"},\"type\":" \
    "\"text\"}]},\"field\":\"messages\"}]}]}"

#define META_RESERIALIZED_HMAC                                             \
    "37fe02efc9b8714b08dcd16bf2289c245d9ba4b3793c0e83e85498c016300df0"


static void hex_decode(const char *hex, unsigned char *out, size_t n);
static int hmac_is(const unsigned char *key, size_t klen, const char *data,
    size_t dlen, const char *hex);
static int parse(const char *s);
static void test_vectors(void);
static void test_parse(void);
static void test_meta(void);
static void test_rotation(void);
static void test_equal(void);
static void test_reference(void);


int
main(void)
{
    test_vectors();
    test_parse();
    test_meta();
    test_rotation();
    test_equal();
    test_reference();

    return done_testing();
}


static void
hex_decode(const char *hex, unsigned char *out, size_t n)
{
    size_t        i;
    unsigned int  v;

    for (i = 0; i < n; i++) {
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char) v;
    }
}


static int
hmac_is(const unsigned char *key, size_t klen, const char *data,
    size_t dlen, const char *hex)
{
    int             rc;
    mw_hmac_key_t  *k;
    unsigned char   want[MW_SHA256_LEN], got[MW_SHA256_LEN];

    hex_decode(hex, want, MW_SHA256_LEN);

    k = mw_hmac_key_new(key, klen);
    if (k == NULL) {
        return 0;
    }

    rc = mw_hmac(k, (const unsigned char *) data, dlen, got) == 0
         && memcmp(got, want, MW_SHA256_LEN) == 0
         && mw_sig_verify(&k, 1, (const unsigned char *) data, dlen, want)
            == 0;

    mw_hmac_key_free(k);

    return rc;
}


static int
parse(const char *s)
{
    unsigned char  d[MW_SHA256_LEN];

    return mw_sig_parse((const unsigned char *) s, strlen(s), d);
}


/* RFC 4231, test cases 1, 2, 6 and 7 (HMAC-SHA-256 column) */

static void
test_vectors(void)
{
    const char     *d6, *d7;
    unsigned char   key[131];

    memset(key, 0x0b, 20);
    ok(hmac_is(key, 20, "Hi There", 8,
               "b0344c61d8db38535ca8afceaf0bf12b"
               "881dc200c9833da726e9376c2e32cff7"),
       "RFC 4231 test case 1");

    ok(hmac_is((const unsigned char *) "Jefe", 4,
               "what do ya want for nothing?", 28,
               "5bdcc146bf60754e6a042426089575c7"
               "5a003f089d2739839dec58b964ec3843"),
       "RFC 4231 test case 2");

    memset(key, 0xaa, sizeof(key));
    d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    ok(hmac_is(key, sizeof(key), d6, strlen(d6),
               "60e431591ee0b67f0d8a26aacbf5b77f"
               "8e0bc6213728c5140546040f0ee37f54"),
       "RFC 4231 test case 6 (key longer than a block)");

    d7 = "This is a test using a larger than block-size key and a larger "
         "than block-size data. The key needs to be hashed before being "
         "used by the HMAC algorithm.";
    ok(hmac_is(key, sizeof(key), d7, strlen(d7),
               "9b09ffa71b942fcb27635fbcd5b0e944"
               "bfdc63644f0713938a7f51535c3a35e2"),
       "RFC 4231 test case 7 (key and data longer than a block)");
}


static void
test_parse(void)
{
    unsigned char  a[MW_SHA256_LEN], b[MW_SHA256_LEN];
    const char    *lower, *upper;
    char           buf[128];

    lower = "sha256=00ff10aa9b8c7d6e5f4a3b2c1d0e0f1a"
            "2b3c4d5e6f708192a3b4c5d6e7f80911";
    upper = "sha256=00FF10AA9B8C7D6E5F4A3B2C1D0E0F1A"
            "2B3C4D5E6F708192A3B4C5D6E7F80911";

    is_int(MW_SIG_HEADER_LEN, 71, "header length is 7 + 64");

    is_int(mw_sig_parse((const unsigned char *) lower, strlen(lower), a), 0,
           "lowercase hex parses");
    ok(a[0] == 0x00 && a[1] == 0xff && a[2] == 0x10 && a[31] == 0x11,
       "digest bytes decoded");
    is_int(mw_sig_parse((const unsigned char *) upper, strlen(upper), b), 0,
           "uppercase hex parses");
    ok(memcmp(a, b, MW_SHA256_LEN) == 0, "uppercase gives the same digest");

    snprintf(buf, sizeof(buf), "%s", lower);
    buf[10] = 'F';
    buf[11] = 'f';
    is_int(parse(buf), 0, "mixed case hex parses");

    snprintf(buf, sizeof(buf), "%.*s", 70, lower);
    is_int(parse(buf), -1, "63 hex digits refused");

    snprintf(buf, sizeof(buf), "%s0", lower);
    is_int(parse(buf), -1, "65 hex digits refused");

    is_int(parse("sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"), -1,
           "sha1= (legacy X-Hub-Signature) refused");

    snprintf(buf, sizeof(buf), "sha1=%s", lower + 7);
    is_int(parse(buf), -1, "sha1= with 64 hex digits refused");

    is_int(parse(""), -1, "empty value refused");
    is_int(parse("sha256="), -1, "prefix alone refused");

    is_int(mw_sig_parse(NULL, 0, a), -1, "NULL value refused");

    snprintf(buf, sizeof(buf), "%s", lower);
    buf[40] = 'g';
    is_int(parse(buf), -1, "non-hex digit refused");

    is_int(parse("sha256=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
                 "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), -1,
           "sha256= + 64 non-hex refused");

    snprintf(buf, sizeof(buf), "%s ", lower);
    is_int(parse(buf), -1, "trailing space refused");

    snprintf(buf, sizeof(buf), " %s", lower);
    is_int(parse(buf), -1, "leading space refused");

    snprintf(buf, sizeof(buf), "%.*s ", 70, lower);
    is_int(parse(buf), -1, "63 hex + space (right length) refused");

    snprintf(buf, sizeof(buf), "SHA256=%s", lower + 7);
    is_int(parse(buf), -1, "uppercase prefix refused");

    snprintf(buf, sizeof(buf), "sha256:%s", lower + 7);
    is_int(parse(buf), -1, "wrong prefix separator refused");

    snprintf(buf, sizeof(buf), "%s", lower);
    buf[20] = '\0';
    is_int(mw_sig_parse((const unsigned char *) buf, 71, a), -1,
           "NUL byte inside refused");

    snprintf(buf, sizeof(buf), "%s", lower);
    buf[30] = '0' - 1;
    is_int(parse(buf), -1, "byte just below '0' refused");
    buf[30] = 'f' + 1;
    is_int(parse(buf), -1, "byte just above 'f' refused");
    buf[30] = 'F' + 1;
    is_int(parse(buf), -1, "byte just above 'F' refused");
    buf[30] = (char) 0xc6;
    is_int(parse(buf), -1, "high byte refused");
}


static void
test_meta(void)
{
    size_t          len;
    mw_hmac_key_t  *k;
    unsigned char   sig[MW_SHA256_LEN], got[MW_SHA256_LEN],
                    want[MW_SHA256_LEN];
    char            body[sizeof(META_BODY)];

    k = mw_hmac_key_new((const unsigned char *) META_SECRET,
                        strlen(META_SECRET));
    ok(k != NULL, "key prepared");
    if (k == NULL) {
        return;
    }

    len = strlen(META_BODY);

    is_int(mw_sig_parse((const unsigned char *) META_SIG, strlen(META_SIG),
                        sig), 0, "Meta signature header parses");
    is_int(mw_sig_verify(&k, 1, (const unsigned char *) META_BODY, len, sig),
           0, "raw body with \\u escapes verifies");

    ok(strstr(META_BODY, "\\u00e9") != NULL, "body holds \\u00e9 verbatim");

    is_int(mw_sig_verify(&k, 1,
                         (const unsigned char *) META_BODY_RESERIALIZED,
                         strlen(META_BODY_RESERIALIZED), sig),
           -1, "re-serialized body (decoded escapes) does not verify");

    /* make sure the re-serialized text is the intended one */
    hex_decode(META_RESERIALIZED_HMAC, want, MW_SHA256_LEN);
    mw_hmac(k, (const unsigned char *) META_BODY_RESERIALIZED,
            strlen(META_BODY_RESERIALIZED), got);
    ok(memcmp(got, want, MW_SHA256_LEN) == 0,
       "re-serialized body hashes as openssl says");

    memcpy(body, META_BODY, sizeof(body));
    body[len - 1] = ' ';
    is_int(mw_sig_verify(&k, 1, (unsigned char *) body, len, sig), -1,
           "one byte changed does not verify");

    is_int(mw_sig_verify(&k, 1, (const unsigned char *) META_BODY, len - 1,
                         sig),
           -1, "truncated body does not verify");

    mw_hmac_key_free(k);
}


static void
test_rotation(void)
{
    const char     *body;
    mw_hmac_key_t  *keys[3], *none[1];
    unsigned char   sig_new[MW_SHA256_LEN], sig_old[MW_SHA256_LEN],
                    sig_other[MW_SHA256_LEN];

    body = "{\"object\":\"whatsapp_business_account\",\"entry\":[]}";

    keys[0] = mw_hmac_key_new((const unsigned char *) "new-secret", 10);
    keys[1] = mw_hmac_key_new((const unsigned char *) "old-secret", 10);
    keys[2] = mw_hmac_key_new((const unsigned char *) "other", 5);

    ok(keys[0] && keys[1] && keys[2], "rotation keys prepared");
    if (!keys[0] || !keys[1] || !keys[2]) {
        return;
    }

    mw_hmac(keys[0], (const unsigned char *) body, strlen(body), sig_new);
    mw_hmac(keys[1], (const unsigned char *) body, strlen(body), sig_old);
    mw_hmac(keys[2], (const unsigned char *) body, strlen(body), sig_other);

    is_int(mw_sig_verify(keys, 2, (const unsigned char *) body,
                         strlen(body), sig_new), 0,
           "current secret matches: index 0");
    is_int(mw_sig_verify(keys, 2, (const unsigned char *) body,
                         strlen(body), sig_old), 1,
           "previous secret matches: index 1");
    is_int(mw_sig_verify(keys, 2, (const unsigned char *) body,
                         strlen(body), sig_other), -1,
           "neither secret: -1");
    is_int(mw_sig_verify(keys, 1, (const unsigned char *) body,
                         strlen(body), sig_old), -1,
           "previous secret not configured: -1");
    is_int(mw_sig_verify(keys, 0, (const unsigned char *) body,
                         strlen(body), sig_new), -1,
           "no keys: -1");

    none[0] = NULL;
    is_int(mw_sig_verify(none, 1, (const unsigned char *) body,
                         strlen(body), sig_new), -1,
           "a NULL key never matches");

    mw_hmac_key_free(keys[2]);
    keys[2] = keys[0];
    is_int(mw_sig_verify(keys, 3, (const unsigned char *) body,
                         strlen(body), sig_new), 0,
           "the first matching key is reported");

    mw_hmac_key_free(keys[0]);
    mw_hmac_key_free(keys[1]);
    mw_hmac_key_free(NULL);
    ok(1, "mw_hmac_key_free(NULL) is harmless");
}


static void
test_equal(void)
{
    unsigned char  a[MW_SHA256_LEN], b[MW_SHA256_LEN];

    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    is_int(mw_sig_equal(a, b), 1, "equal digests");

    b[0] ^= 1;
    is_int(mw_sig_equal(a, b), 0, "first byte differs");

    b[0] ^= 1;
    b[31] ^= 0x80;
    is_int(mw_sig_equal(a, b), 0, "last byte differs");
}


/* against OpenSSL's own HMAC for many key and data lengths */

static void
test_reference(void)
{
    int             bad;
    size_t          klen, dlen, i, olen;
    mw_hmac_key_t  *k;
    unsigned char   key[200], data[300], got[MW_SHA256_LEN],
                    want[MW_SHA256_LEN];
    unsigned char  *big;

    for (i = 0; i < sizeof(key); i++) {
        key[i] = (unsigned char) (i * 7 + 3);
    }

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char) (i * 13 + 1);
    }

    bad = 0;

    for (klen = 0; klen < sizeof(key); klen += 1 + klen / 8) {
        k = mw_hmac_key_new(key, klen);
        if (k == NULL) {
            bad++;
            continue;
        }

        for (dlen = 0; dlen < sizeof(data); dlen += 1 + dlen / 4) {
            if (mw_hmac(k, data, dlen, got) != 0
                || EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen,
                             data, dlen, want, sizeof(want), &olen) == NULL
                || memcmp(got, want, MW_SHA256_LEN) != 0)
            {
                bad++;
            }
        }

        mw_hmac_key_free(k);
    }

    is_int(bad, 0, "matches EVP_Q_mac for key lengths 0..199 "
           "(block edges included) and data lengths 0..299");

    /* a delivery at Meta's 3 MB maximum */
    big = malloc(3 * 1024 * 1024);
    ok(big != NULL, "3 MB buffer");
    if (big == NULL) {
        return;
    }

    for (i = 0; i < 3 * 1024 * 1024; i++) {
        big[i] = (unsigned char) (i ^ (i >> 8));
    }

    k = mw_hmac_key_new(key, 32);
    ok(k != NULL
       && mw_hmac(k, big, 3 * 1024 * 1024, got) == 0
       && EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, big,
                    3 * 1024 * 1024, want, sizeof(want), &olen) != NULL
       && memcmp(got, want, MW_SHA256_LEN) == 0
       && mw_sig_verify(&k, 1, big, 3 * 1024 * 1024, want) == 0,
       "3 MB body");

    is_int(mw_hmac(k, NULL, 0, got), 0, "empty body (NULL, 0) is hashed");
    is_int(mw_hmac(NULL, big, 1, got), -1, "NULL key is a failure");

    mw_hmac_key_free(k);
    free(big);
}
