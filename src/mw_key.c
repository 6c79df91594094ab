/*
 * State keys: fixed-size digests of length-prefixed parts, so that keys
 * are the same size whatever Meta's ids look like and no two different
 * part lists can collide by concatenation.
 */

#include <string.h>
#include <openssl/evp.h>

#include "mw_core.h"


void
mw_key_make(unsigned char out[MW_KEY_LEN], mw_key_type_e type,
    const char *const *parts, const size_t *lens, size_t nparts)
{
    size_t          i;
    unsigned int    n;
    unsigned char   t, len[4], md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX     *ctx;

    ctx = EVP_MD_CTX_new();

    if (ctx == NULL
        || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
    {
        /*
         * Only an allocation failure gets here; a zero key then only
         * costs deduplication of this one update, never a lost update.
         */
        EVP_MD_CTX_free(ctx);
        memset(out, 0, MW_KEY_LEN);
        return;
    }

    t = (unsigned char) type;
    EVP_DigestUpdate(ctx, &t, 1);

    for (i = 0; i < nparts; i++) {
        len[0] = (unsigned char) (lens[i] >> 24);
        len[1] = (unsigned char) (lens[i] >> 16);
        len[2] = (unsigned char) (lens[i] >> 8);
        len[3] = (unsigned char) lens[i];

        EVP_DigestUpdate(ctx, len, sizeof(len));
        EVP_DigestUpdate(ctx, parts[i], lens[i]);
    }

    n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);

    memcpy(out, md, MW_KEY_LEN);
}


void
mw_key_message(unsigned char out[MW_KEY_LEN], const char *id, size_t len)
{
    const char  *parts[2] = { "message", id };
    size_t       lens[2] = { sizeof("message") - 1, len };

    mw_key_make(out, MW_KEY_DEDUPE, parts, lens, 2);
}


void
mw_key_sent(unsigned char out[MW_KEY_LEN], const char *id, size_t len)
{
    const char  *parts[1] = { id };
    size_t       lens[1] = { len };

    mw_key_make(out, MW_KEY_SENT, parts, lens, 1);
}


void
mw_key_status(unsigned char out[MW_KEY_LEN], const char *id, size_t idlen,
    const char *status, size_t slen)
{
    const char  *parts[3] = { "status", id, status };
    size_t       lens[3] = { sizeof("status") - 1, idlen, slen };

    mw_key_make(out, MW_KEY_DEDUPE, parts, lens, 3);
}


void
mw_key_contact(unsigned char out[MW_KEY_LEN], const char *phone_number_id,
    size_t plen, const char *contact, size_t clen)
{
    const char  *parts[2] = { phone_number_id, contact };
    size_t       lens[2] = { plen, clen };

    mw_key_make(out, MW_KEY_CONTACT, parts, lens, 2);
}


void
mw_key_hex(const unsigned char key[MW_KEY_LEN], char out[MW_KEY_HEX_LEN + 1])
{
    size_t             i;
    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < MW_KEY_LEN; i++) {
        out[2 * i] = hex[key[i] >> 4];
        out[2 * i + 1] = hex[key[i] & 0x0f];
    }

    out[MW_KEY_HEX_LEN] = '\0';
}
