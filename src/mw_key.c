/*
 * State keys: fixed-size digests of length-prefixed parts, so that keys
 * are the same size whatever Meta's ids look like and no two different
 * part lists can collide by concatenation.
 */

#include <string.h>
#include <openssl/evp.h>

#include "mw_core.h"


/*
 * The digest and a context, per thread: in OpenSSL 3 a context of its own
 * and EVP_sha256() would cost an allocation and a digest fetch (a locked
 * lookup in the provider store) per key, more than the hashing itself.
 * They live as long as the thread; nginx's workers and thread pools keep
 * theirs for their lifetime.
 */
static MW_TLS EVP_MD       *mw_key_md;
static MW_TLS EVP_MD_CTX   *mw_key_ctx;


/* the usual key input is a few ids: gathered, it is one digest update */
#define MW_KEY_GATHER        512


void
mw_key_make(unsigned char out[MW_KEY_LEN], mw_key_type_e type,
    const char *const *parts, const size_t *lens, size_t nparts)
{
    size_t          i, n;
    unsigned int    mdlen;
    unsigned char   buf[MW_KEY_GATHER], *p, md[EVP_MAX_MD_SIZE];

    if (mw_key_ctx == NULL) {
        mw_key_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        mw_key_ctx = EVP_MD_CTX_new();
    }

    if (mw_key_md == NULL
        || mw_key_ctx == NULL
        || EVP_DigestInit_ex(mw_key_ctx, mw_key_md, NULL) != 1)
    {
        /*
         * Only an allocation failure gets here; a zero key then only
         * costs deduplication of this one update, never a lost update.
         * The next key tries again.
         */
        EVP_MD_free(mw_key_md);
        EVP_MD_CTX_free(mw_key_ctx);
        mw_key_md = NULL;
        mw_key_ctx = NULL;
        memset(out, 0, MW_KEY_LEN);
        return;
    }

    n = 1;

    for (i = 0; i < nparts; i++) {
        n += 4 + lens[i];
    }

    p = buf;
    *p++ = (unsigned char) type;

    for (i = 0; i < nparts; i++) {
        *p++ = (unsigned char) (lens[i] >> 24);
        *p++ = (unsigned char) (lens[i] >> 16);
        *p++ = (unsigned char) (lens[i] >> 8);
        *p++ = (unsigned char) lens[i];

        if (n <= MW_KEY_GATHER) {
            memcpy(p, parts[i], lens[i]);
            p += lens[i];
            continue;
        }

        /* a large part (a content dump): the prefix so far, then it */
        EVP_DigestUpdate(mw_key_ctx, buf, p - buf);
        EVP_DigestUpdate(mw_key_ctx, parts[i], lens[i]);
        p = buf;
    }

    EVP_DigestUpdate(mw_key_ctx, buf, p - buf);

    mdlen = 0;
    EVP_DigestFinal_ex(mw_key_ctx, md, &mdlen);

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


/*
 * A table, not a branch per digit: the signature's 64 random digits made
 * such a branch mispredict about every other time.
 */
const unsigned char  mw_hex_value[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16
};


int
mw_hex4(const unsigned char *p, unsigned *v)
{
    unsigned  i, h;

    *v = 0;

    for (i = 0; i < 4; i++) {
        h = mw_hex_value[p[i]];
        if (h == 0) {
            return -1;
        }

        *v = *v << 4 | (h - 1);
    }

    return 0;
}
