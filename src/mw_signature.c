/*
 * nginx-meta-webhook: X-Hub-Signature-256 checking.
 *
 * HMAC-SHA256 is computed from two SHA-256 states prepared when the key is
 * made: the state after absorbing (key ^ ipad) and the one after
 * (key ^ opad).  A delivery then costs two EVP_MD_CTX_copy_ex() calls and
 * the hashing itself, no key setup.  Measured on OpenSSL 3.0 (SHA-NI) this
 * is about twice as fast as duplicating a keyed EVP_MAC_CTX for a small
 * body (0.32-0.37 against 0.70-0.85 us for 200 bytes) and the same for
 * 3 MB (1.86-1.90 ms either way: the hashing dominates), and it uses no
 * deprecated interface.
 *
 * The prepared states are only read after mw_hmac_key_new(), so one key may
 * be used by several threads at once.
 */

#include <string.h>
#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mw_core.h"


#define MW_SHA256_BLOCK      64


struct mw_hmac_key_s {
    EVP_MD_CTX              *inner;     /* SHA-256 after key ^ ipad */
    EVP_MD_CTX              *outer;     /* SHA-256 after key ^ opad */
};


mw_hmac_key_t *
mw_hmac_key_new(const unsigned char *secret, size_t len)
{
    int             rc;
    size_t          i;
    EVP_MD         *md;
    unsigned int    dlen;
    mw_hmac_key_t  *key;
    unsigned char   block[MW_SHA256_BLOCK], ipad[MW_SHA256_BLOCK],
                    opad[MW_SHA256_BLOCK];

    if (secret == NULL && len != 0) {
        return NULL;
    }

    /* an explicit fetch, so that no call looks the algorithm up again */
    md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (md == NULL) {
        return NULL;
    }

    key = calloc(1, sizeof(mw_hmac_key_t));
    if (key == NULL) {
        EVP_MD_free(md);
        return NULL;
    }

    key->inner = EVP_MD_CTX_new();
    key->outer = EVP_MD_CTX_new();

    rc = key->inner != NULL && key->outer != NULL;

    /* RFC 2104: a key longer than the block is replaced by its hash */
    memset(block, 0, sizeof(block));

    if (len > MW_SHA256_BLOCK) {
        rc = rc && EVP_Digest(secret, len, block, &dlen, md, NULL) == 1;

    } else if (len) {
        memcpy(block, secret, len);
    }

    for (i = 0; i < MW_SHA256_BLOCK; i++) {
        ipad[i] = block[i] ^ 0x36;
        opad[i] = block[i] ^ 0x5c;
    }

    rc = rc
         && EVP_DigestInit_ex(key->inner, md, NULL) == 1
         && EVP_DigestUpdate(key->inner, ipad, sizeof(ipad)) == 1
         && EVP_DigestInit_ex(key->outer, md, NULL) == 1
         && EVP_DigestUpdate(key->outer, opad, sizeof(opad)) == 1;

    OPENSSL_cleanse(block, sizeof(block));
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));

    /* the contexts hold their own reference to the digest */
    EVP_MD_free(md);

    if (!rc) {
        mw_hmac_key_free(key);
        return NULL;
    }

    return key;
}


void
mw_hmac_key_free(mw_hmac_key_t *key)
{
    if (key == NULL) {
        return;
    }

    /* EVP_MD_CTX_free() clears the digest state it owns */
    EVP_MD_CTX_free(key->inner);
    EVP_MD_CTX_free(key->outer);
    free(key);
}


int
mw_sig_parse(const unsigned char *value, size_t len,
    unsigned char digest[MW_SHA256_LEN])
{
    size_t                i, plen;
    unsigned int          hi, lo, bad;
    const unsigned char  *p;

    plen = sizeof(MW_SIG_PREFIX) - 1;

    if (value == NULL || len != MW_SIG_HEADER_LEN
        || memcmp(value, MW_SIG_PREFIX, plen) != 0)
    {
        return -1;
    }

    p = value + plen;
    bad = 0;

    for (i = 0; i < MW_SHA256_LEN; i++) {
        hi = mw_hex_value[p[2 * i]];
        lo = mw_hex_value[p[2 * i + 1]];

        bad |= (hi == 0) | (lo == 0);
        digest[i] = (unsigned char) ((hi - 1) << 4 | (lo - 1));
    }

    return bad ? -1 : 0;
}


int
mw_hmac(const mw_hmac_key_t *key, const unsigned char *buf, size_t len,
    unsigned char out[MW_SHA256_LEN])
{
    int             rc;
    unsigned int    n;
    EVP_MD_CTX     *ctx;
    unsigned char   inner[MW_SHA256_LEN];

    if (key == NULL || (buf == NULL && len != 0)) {
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        return -1;
    }

    rc = EVP_MD_CTX_copy_ex(ctx, key->inner) == 1
         && EVP_DigestUpdate(ctx, buf, len) == 1
         && EVP_DigestFinal_ex(ctx, inner, &n) == 1
         && EVP_MD_CTX_copy_ex(ctx, key->outer) == 1
         && EVP_DigestUpdate(ctx, inner, sizeof(inner)) == 1
         && EVP_DigestFinal_ex(ctx, out, &n) == 1;

    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(inner, sizeof(inner));

    return rc ? 0 : -1;
}


int
mw_sig_equal(const unsigned char a[MW_SHA256_LEN],
    const unsigned char b[MW_SHA256_LEN])
{
    return CRYPTO_memcmp(a, b, MW_SHA256_LEN) == 0;
}


int
mw_sig_verify(mw_hmac_key_t *const *keys, size_t nkeys,
    const unsigned char *buf, size_t len,
    const unsigned char expected[MW_SHA256_LEN])
{
    int            found, failed, eq, take;
    size_t         i;
    unsigned char  digest[MW_SHA256_LEN];

    if (keys == NULL && nkeys != 0) {
        return -2;
    }

    found = -1;
    failed = 0;

    /*
     * Every key is computed and compared, and the match is recorded
     * without a branch on it, so the work done does not reveal which key,
     * if any, matched.  A NULL key (no previous secret configured) never
     * matches.
     */

    for (i = 0; i < nkeys; i++) {

        if (keys[i] == NULL) {
            continue;
        }

        if (mw_hmac(keys[i], buf, len, digest) != 0) {
            failed = 1;
            continue;
        }

        eq = mw_sig_equal(digest, expected);

        /* take = 1 only for the first matching key: all-ones mask */
        take = -(eq & (found < 0));
        found = (found & ~take) | ((int) i & take);
    }

    OPENSSL_cleanse(digest, sizeof(digest));

    if (failed) {
        return -2;
    }

    return found;
}
