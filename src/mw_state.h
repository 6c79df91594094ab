/*
 * nginx-meta-webhook: the state's records, whatever holds them.
 *
 * Both backends (shared memory, memcached) keep the same records and
 * change them with the same rules; only where the bytes live differs.
 * Plain C, time as a parameter.
 */

#ifndef MW_STATE_H_INCLUDED
#define MW_STATE_H_INCLUDED


#include "mw_core.h"


/* a contact, per business number */

typedef struct {
    int64_t                  window;        /* expires_at, 0: never opened */
    int64_t                  session;       /* the open session began */
    int64_t                  counted;       /* a conversation was counted */
    int64_t                  optin_ts;      /* the last keyword came */
    int64_t                  pending;       /* a send is counting the
                                               session, 0: none */
    int                      optin;         /* MW_OPTIN_* */
} mw_contact_rec_t;

#define MW_OPTIN_RETENTION   (400 * 86400)

/*
 * An inbound message: the window moves forward and a closed window starts
 * a new session; a keyword is applied in message order, even when its
 * delivery is retried late.
 */
void mw_contact_message(mw_contact_rec_t *c, int64_t from, int optin,
    int64_t optin_ts);

/*
 * Meta refused a free-form message at "at" (131047): the window it
 * measured has closed, unless the contact wrote again since.  The window
 * and the session are both set to "at", and a message older than that
 * does not reopen it (mw_contact_message).
 */
void mw_contact_close(mw_contact_rec_t *c, int64_t at);

/*
 * Until when a contact is worth keeping: a day past its window, so that
 * the session's counted conversation is remembered, and long after an
 * opt-in.
 */
int64_t mw_contact_expiry(const mw_contact_rec_t *c, int64_t now);

/*
 * "window session counted optin optin_ts" in decimal, and " pending" only
 * while a send counts the session, so a record at rest keeps the format
 * it always had; 0 or -1
 */
#define MW_CONTACT_TEXT_MAX  (6 * 21)
int mw_contact_encode(const mw_contact_rec_t *c, char *buf, size_t size);
int mw_contact_decode(mw_contact_rec_t *c, const char *buf, size_t len);

/*
 * A key as text for a store with string keys: "mw:" + the key's type
 * letter + ":" + 32 hex digits; no space or control character, far below
 * memcached's 250 bytes.
 */
#define MW_KEY_TEXT_LEN      (3 + 1 + 1 + MW_KEY_HEX_LEN)
void mw_key_text(char out[MW_KEY_TEXT_LEN + 1], int type,
    const unsigned char key[MW_KEY_LEN]);

/*
 * A TTL for memcached: relative seconds up to 30 days, beyond that the
 * absolute Unix time memcached expects (it reads larger values so).
 */
#define MW_TTL_RELATIVE_MAX  (30 * 86400)
int64_t mw_ttl(int64_t expires, int64_t now);


#endif /* MW_STATE_H_INCLUDED */
