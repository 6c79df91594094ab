/*
 * libFuzzer target for mw_signature.c.
 *
 * The first byte chooses a key length (0..255, so keys shorter and longer
 * than SHA-256's 64-byte block), the key follows, the rest is the body.
 * mw_hmac() is checked against OpenSSL's own HMAC, mw_sig_verify()
 * against the digests, and mw_sig_parse() against its definition, with
 * the whole input as a header value.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "mw_core.h"


static void check_parse(const unsigned char *data, size_t size);
static void check_hmac(const unsigned char *data, size_t size);


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    unsigned char  *copy;

    /* an exact-size copy, so that a read past the end is caught */
    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    check_parse(copy, size);
    check_hmac(copy, size);

    free(copy);

    return 0;
}


static void
check_parse(const unsigned char *data, size_t size)
{
    int            rc, valid;
    size_t         i;
    char           hex[2 * MW_SHA256_LEN + 1];
    unsigned char  digest[MW_SHA256_LEN];

    static const char  digits[] = "0123456789abcdef";

    rc = mw_sig_parse(data, size, digest);

    valid = size == MW_SIG_HEADER_LEN && memcmp(data, "sha256=", 7) == 0;

    for (i = 7; valid && i < size; i++) {
        valid = (data[i] >= '0' && data[i] <= '9')
                || (data[i] >= 'a' && data[i] <= 'f')
                || (data[i] >= 'A' && data[i] <= 'F');
    }

    if ((rc == 0) != valid) {
        abort();
    }

    if (rc != 0) {
        return;
    }

    /* the digest written back is the header, case aside */
    for (i = 0; i < MW_SHA256_LEN; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0x0f];
    }

    for (i = 0; i < 2 * MW_SHA256_LEN; i++) {
        if (hex[i] != (data[7 + i] | 0x20)
            && hex[i] != data[7 + i])
        {
            abort();
        }
    }
}


static void
check_hmac(const unsigned char *data, size_t size)
{
    size_t                klen, blen, olen;
    mw_hmac_key_t        *keys[2];
    const unsigned char  *key, *body;
    unsigned char         got[MW_SHA256_LEN], want[MW_SHA256_LEN],
                          other[MW_SHA256_LEN], k2[256];

    if (size == 0) {
        return;
    }

    klen = data[0];
    if (klen > size - 1) {
        klen = size - 1;
    }

    key = data + 1;
    body = key + klen;
    blen = size - 1 - klen;

    keys[0] = mw_hmac_key_new(key, klen);

    /* a second key that differs from the first in one byte or length */
    memcpy(k2, key, klen);
    if (klen) {
        k2[klen - 1] ^= 0x01;
        keys[1] = mw_hmac_key_new(k2, klen);

    } else {
        /* not 0: HMAC pads keys with zeros, "" and "\0" are one key */
        k2[0] = 1;
        keys[1] = mw_hmac_key_new(k2, 1);
    }

    if (keys[0] == NULL || keys[1] == NULL) {
        abort();
    }

    if (mw_hmac(keys[0], body, blen, got) != 0
        || EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen, body,
                     blen, want, sizeof(want), &olen) == NULL
        || olen != MW_SHA256_LEN
        || memcmp(got, want, MW_SHA256_LEN) != 0)
    {
        abort();
    }

    if (mw_hmac(keys[1], body, blen, other) != 0) {
        abort();
    }

    if (mw_sig_verify(keys, 2, body, blen, want) != 0
        || mw_sig_verify(keys, 2, body, blen, other) != 1
        || mw_sig_verify(keys + 1, 1, body, blen, want) != -1
        || mw_sig_equal(want, other))
    {
        abort();
    }

    mw_hmac_key_free(keys[0]);
    mw_hmac_key_free(keys[1]);
}
