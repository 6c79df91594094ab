/*
 * nginx-meta-webhook: the pure core.
 *
 * Everything declared here is plain C: no nginx header, no global state,
 * time passed in as a parameter.  The nginx glue (ngx_http_meta_webhook_*)
 * adapts requests, configuration and memory to these functions; the unit
 * tests in t/unit/ and the fuzzers in fuzz/ call them directly.
 */

#ifndef MW_CORE_H_INCLUDED
#define MW_CORE_H_INCLUDED


#include <stddef.h>
#include <stdint.h>
#include <jansson.h>


/* ---------------------------------------------------------------------- */
/* mw_signature.c: X-Hub-Signature-256 over the raw body                   */

/*
 * Per-thread data on hot paths.  The module is dlopen()ed, so the default
 * TLS model would call __tls_get_addr() on every access (hundreds of times
 * per delivery from jansson's allocator); initial-exec takes a few bytes of
 * glibc's static TLS reserve instead, kept for dlopen()ed objects.
 */
#define MW_TLS  __thread __attribute__((tls_model("initial-exec")))


#define MW_SHA256_LEN        32
#define MW_SIG_PREFIX        "sha256="
#define MW_SIG_HEADER_LEN    (sizeof(MW_SIG_PREFIX) - 1 + 2 * MW_SHA256_LEN)

typedef struct mw_hmac_key_s  mw_hmac_key_t;

/*
 * A prepared HMAC-SHA256 key, made once when the configuration loads so
 * that a delivery costs no key setup.  NULL on allocation failure.
 */
mw_hmac_key_t *mw_hmac_key_new(const unsigned char *secret, size_t len);
void mw_hmac_key_free(mw_hmac_key_t *key);

/*
 * Parses a header value: exactly "sha256=" followed by 64 hex digits.
 * Returns 0 and fills digest, or -1 when malformed.
 */
int mw_sig_parse(const unsigned char *value, size_t len,
    unsigned char digest[MW_SHA256_LEN]);

/* HMAC-SHA256 of buf under key.  Returns 0, or -1 on a library failure. */
int mw_hmac(const mw_hmac_key_t *key, const unsigned char *buf, size_t len,
    unsigned char out[MW_SHA256_LEN]);

/* Constant-time comparison of two digests: 1 when equal. */
int mw_sig_equal(const unsigned char a[MW_SHA256_LEN],
    const unsigned char b[MW_SHA256_LEN]);

/*
 * Verifies expected against HMAC(buf) under each of nkeys keys (the
 * current secret and, during rotation, the previous one).  Every key is
 * computed and compared, so the time taken does not depend on which one
 * matched.  Returns the index of the matching key, -1 when none matches,
 * -2 on a library failure.
 */
int mw_sig_verify(mw_hmac_key_t *const *keys, size_t nkeys,
    const unsigned char *buf, size_t len,
    const unsigned char expected[MW_SHA256_LEN]);


/* ---------------------------------------------------------------------- */
/* mw_contact.c: contact identity                                          */

/*
 * Including the terminating NUL.  Business-scoped user ids are a country
 * code, a dot and up to 128 characters.
 */
#define MW_CONTACT_MAX       160

/*
 * Normalizes a contact: a phone number in any common writing ("+1 650-555-
 * 1234", "(650) 555 1234" is NOT expanded: no country guessing) becomes
 * its digits only, which is Meta's wa_id form; any other id (a business-
 * scoped user id) is kept exactly as it is.  Returns the length written
 * into out (NUL-terminated), or -1 when the input is empty, too long or
 * holds control characters or spaces outside a phone number.
 */
int mw_contact_normalize(const char *in, size_t len,
    char out[MW_CONTACT_MAX]);


/* ---------------------------------------------------------------------- */
/* mw_key.c: state keys                                                    */

#define MW_KEY_LEN           16
#define MW_KEY_HEX_LEN       (2 * MW_KEY_LEN)

typedef enum {
    MW_KEY_DEDUPE = 'd',            /* an update's dedupe claim */
    MW_KEY_CONTACT = 'c',           /* a contact's window and opt-in */
    MW_KEY_COUNTER = 'n',           /* a conversation counter */
    MW_KEY_SENT = 's'               /* a message sent through the path */
} mw_key_type_e;

/*
 * A key is the first MW_KEY_LEN bytes of SHA-256 over the type byte and
 * the length-prefixed parts, so that no two different part lists can give
 * the same input.  Fixed size, binary: the shm backend compares it, the
 * memcached backend sends it as hex.
 */
void mw_key_make(unsigned char out[MW_KEY_LEN], mw_key_type_e type,
    const char *const *parts, const size_t *lens, size_t nparts);

/* Dedupe keys: a message by its id; a status by (id, status). */
void mw_key_message(unsigned char out[MW_KEY_LEN], const char *id,
    size_t len);
void mw_key_status(unsigned char out[MW_KEY_LEN], const char *id,
    size_t idlen, const char *status, size_t slen);

/* A message sent through the send path, by Meta's id for it. */
void mw_key_sent(unsigned char out[MW_KEY_LEN], const char *id, size_t len);

/* A contact's state, per business number: Meta keeps windows per pair. */
void mw_key_contact(unsigned char out[MW_KEY_LEN],
    const char *phone_number_id, size_t plen,
    const char *contact, size_t clen);

/* Lowercase hex, NUL-terminated. */
void mw_key_hex(const unsigned char key[MW_KEY_LEN],
    char out[MW_KEY_HEX_LEN + 1]);

/* Hex digit values plus one (either case), 0 for any other byte. */
extern const unsigned char  mw_hex_value[256];

/* The value of 4 hex digits at p into *v: 0, or -1 when one is not. */
int mw_hex4(const unsigned char *p, unsigned *v);


/* ---------------------------------------------------------------------- */
/* mw_rules.c: window and accounting rules                                 */

#define MW_WINDOW_SECONDS    86400
#define MW_FUTURE_SKEW       300    /* seconds a timestamp may lead now */

/*
 * The instant a message opens its window from: the message's own
 * timestamp, clamped to now + MW_FUTURE_SKEW so that a timestamp in the
 * future cannot hold a window open; now itself when ts < 0 (absent or
 * junk), because the message did arrive.
 */
int64_t mw_window_from(int64_t ts, int64_t now);

/* max(current, from + MW_WINDOW_SECONDS): windows only move forward. */
int64_t mw_window_advance(int64_t current_expires, int64_t from);

/* 1 while the window is open at now. */
int mw_window_open(int64_t expires, int64_t now);

/*
 * 1 when Meta's refusal closed the window (mw_contact_close): the window
 * and the session both hold the refusal's time, which an open window
 * never does (it ends a day or more after its session began).
 */
int mw_window_refused(int64_t expires, int64_t session);

/*
 * The accounting period containing now: it starts at 00:00 (UTC shifted
 * by tz_offset seconds) on anchor_day of a month; an anchor past the
 * month's end means that month's last day.  anchor_day 1..31.
 */
void mw_period(int64_t now, int anchor_day, int64_t tz_offset,
    int64_t *start, int64_t *end);

/* The day (00:00 to 00:00, shifted by tz_offset) containing now. */
void mw_day(int64_t now, int64_t tz_offset, int64_t *start, int64_t *end);


/* ---------------------------------------------------------------------- */
/* mw_quarantine.c: content detectors                                      */

/*
 * An operator rule matcher, supplied by the glue (nginx's regex engine).
 * Looks for the first match in text at or after offset 0; returns 1 and
 * sets *start, *end (byte offsets, end exclusive) and *name on a match,
 * 0 on none.
 */
typedef int (*mw_rule_match_pt)(void *data, const char *text, size_t len,
    size_t *start, size_t *end, const char **name);

#define MW_DETECT_CARD       0x01   /* payment card numbers, Luhn-valid */
#define MW_DETECT_IBAN       0x02   /* IBANs, mod-97-valid */
#define MW_DETECT_ALL        (MW_DETECT_CARD | MW_DETECT_IBAN)

typedef struct {
    unsigned                 detectors;     /* MW_DETECT_* */
    mw_rule_match_pt         match;         /* NULL: no operator rules */
    void                    *match_data;
} mw_quarantine_conf_t;

/* Detector names, as they appear in an event's "reason". */
#define MW_REASON_CARD       "card_number"
#define MW_REASON_IBAN       "iban"

/*
 * Scans text; returns the name of the first detector or rule that fires
 * (a static string or the rule's own name), or NULL.
 */
const char *mw_quarantine_scan(const mw_quarantine_conf_t *conf,
    const char *text, size_t len);

/*
 * Overwrites every span any detector or rule finds in buf with '#', so
 * that a body kept for the operator holds no quarantined text.  Returns
 * the number of spans masked.
 */
size_t mw_quarantine_redact(const mw_quarantine_conf_t *conf, char *buf,
    size_t len);

/* The checks themselves, exposed for the tests. */
int mw_luhn_valid(const char *digits, size_t n);
int mw_iban_valid(const char *s, size_t n);   /* compact form, no spaces */


/* ---------------------------------------------------------------------- */
/* mw_json.c: bounded, strict parsing                                      */

#define MW_JSON_MAX_DEPTH    64

/*
 * Parses buf with jansson (json_loadb): duplicate keys rejected, \u0000
 * allowed inside strings (kept, and escaped again on output), nesting
 * deeper than MW_JSON_MAX_DEPTH refused before jansson sees it, integers
 * beyond 64 bits kept as reals instead of failing the whole batch.  The
 * values come from jansson's allocator.  Returns the document, or NULL
 * with a reason in err (which never quotes the input): MW_JSON_ENOMEM
 * when an allocation failed (except inside a string, which jansson
 * reports as an invalid token: "not JSON").
 */
json_t *mw_json_parse(const char *buf, size_t len, unsigned opts, char *err,
    size_t errlen);

/*
 * opts: MW_JSON_FAST tries mw_json_fast() first.  It builds what
 * json_loadb() would, through jansson's constructors, for objects, arrays,
 * strings, integers of up to 18 digits, true, false and null, and returns
 * NULL for anything else (reals, invalid input, ...), which jansson then
 * parses or refuses as without it.
 */
#define MW_JSON_FAST         0x01

/* what json_loadb() is given (integers beyond 64 bits aside) */
#define MW_JSON_FLAGS                                                     \
    (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY)

json_t *mw_json_fast(const char *buf, size_t len);

/* err after an allocation failure: a retry may succeed, unlike the rest */
#define MW_JSON_ENOMEM       "out of memory"

/*
 * Releases memory that came from jansson's allocator: json_dumps()'s
 * result, and the core's results documented as such (mw_batch_dump(),
 * mw_graph_error()).  A caller may install its own allocator with
 * json_set_alloc_funcs(), whose free() need not accept what malloc()
 * returned, so plain free() is never right for them.  NULL is ignored.
 */
void mw_json_free(void *p);


/* ---------------------------------------------------------------------- */
/* mw_event.c: normalize and classify a delivery                           */

typedef enum {
    MW_KIND_MESSAGE = 1,
    MW_KIND_STATUS,
    MW_KIND_ERROR,                  /* value.errors[] of a change */
    MW_KIND_CHANGE                  /* a change of another field */
} mw_kind_e;

typedef enum {
    MW_CLASS_NONE = 0,              /* not a message */
    MW_CLASS_SUPPORTED,
    MW_CLASS_UNSUPPORTED,
    MW_CLASS_QUARANTINED
} mw_class_e;

typedef enum {
    MW_OPTIN_NONE = 0,
    MW_OPTIN_IN,                    /* YES, START, SUBSCRIBE */
    MW_OPTIN_OUT                    /* STOP */
} mw_optin_e;

/*
 * What mw_batch_dump() writes an update's event from: references into the
 * batch's document, taken while parsing, so that a request which never
 * reads the events never builds them.  Private to mw_event.c.
 */
typedef struct {
    json_t                  *item;          /* the message, status, error
                                               item, change value or
                                               malformed item */
    json_t                  *raw;           /* the contact as Meta wrote
                                               it, or NULL */
    json_t                  *type;          /* message: "type";
                                               change: "field" */
    json_t                  *obj;           /* message: the type's member */
    json_t                  *waba_id;
    json_t                  *pnid;          /* NULL when absent */
    json_t                  *display;       /* NULL when absent */
    json_t                  *contacts;      /* value.contacts[], or NULL */
    const char              *member;        /* malformed item's member */
    unsigned                 form:3;
    unsigned                 one_sender:1;
} mw_event_src_t;

typedef struct {
    mw_kind_e                kind;
    mw_class_e               cls;
    mw_optin_e               optin;

    const char              *reason;        /* unsupported/quarantined */
    const char              *phone_number_id;   /* "" when absent */
    const char              *status;        /* statuses: "sent", ... */

    /*
     * Meta's id of the update: the message's or the status's "id" (the
     * event's "id"), "" when absent and for errors and changes.  Points
     * into the batch's document; id_len counts a "\u0000" inside.
     */
    const char              *id;
    size_t                   id_len;

    char                     contact[MW_CONTACT_MAX];  /* "" when none */

    int64_t                  timestamp;     /* -1: absent or invalid */
    int64_t                  window_from;   /* mw_window_from() */
    int64_t                  window_expires;    /* mw_event_set_window(),
                                                   0: none */
    int                      error_code;    /* first errors[].code, or 0 */

    unsigned char            key[MW_KEY_LEN];   /* dedupe key */
    unsigned char            contact_key[MW_KEY_LEN];  /* if contact */

    mw_event_src_t           src;           /* mw_event.c's own */
} mw_update_t;

typedef struct {
    json_t                  *root;
    mw_update_t             *updates;       /* malloc()ed */
    size_t                   nupdates;
    size_t                   nalloc;
    size_t                   len;           /* of the delivery's body */
    char                     error[128];    /* why the batch is unusable */
} mw_batch_t;

#define MW_BATCH_OK          0
#define MW_BATCH_EJSON       -1     /* not JSON, or beyond the bounds */
#define MW_BATCH_ESHAPE      -2     /* JSON, but not a webhook delivery */
#define MW_BATCH_ENOMEM      -3

/*
 * Parses and classifies a whole delivery: every update of entry[] x
 * changes[] x (messages[] | statuses[] | errors[]), in order, with what
 * deciding about it takes (kind, class, contact, keys, ...).  The
 * normalized events themselves are only written by mw_batch_dump().
 * The batch owns its document (root) and its updates array; release it
 * with mw_batch_free() whatever the result, or with mw_batch_drop().
 */
int mw_batch_parse(mw_batch_t *b, const char *buf, size_t len,
    unsigned opts, const mw_quarantine_conf_t *qc, int64_t now);
void mw_batch_free(mw_batch_t *b);

/*
 * Releases only the batch's own malloc()ed memory (the updates array),
 * not its jansson values: for a caller whose jansson allocator
 * (json_set_alloc_funcs()) releases a whole request's values at once, so
 * that the json_decref() walk over the document is saved.  The document
 * must not be used after that memory goes; the batch is left empty, so a
 * later mw_batch_free() or mw_batch_drop() does nothing.
 */
void mw_batch_drop(mw_batch_t *b);

/*
 * Records the contact's window for an update's event: mw_batch_dump()
 * then writes "window": {"expires_at": expires} at the end of it.
 * expires 0 means no window (mw_window_advance() never gives 0).
 * Returns 0, or -1 when u is NULL.
 */
int mw_event_set_window(mw_update_t *u, int64_t expires);

/*
 * Serializes {"events":[...]} from the updates whose skip[i] is 0 (skip
 * may be NULL: all), writing each event from the batch's document.
 * Compact, one line, UTF-8, control characters escaped, members in a
 * fixed order (docs/events.md shows it).  Returns a string from jansson's
 * allocator, to be released with mw_json_free(), and its length; or NULL
 * when out of memory.
 */
char *mw_batch_dump(const mw_batch_t *b, const unsigned char *skip,
    size_t *len);

/*
 * The event of update i as a jansson object, exactly what mw_batch_dump()
 * writes for it, read back: for tests and debugging, not for a request's
 * path.  A new reference (json_decref() it), or NULL.
 */
json_t *mw_update_event(const mw_batch_t *b, size_t i);


/* ---------------------------------------------------------------------- */
/* mw_send.c: the send path's request and rules                            */

#define MW_TEXT_MAX          4096   /* characters in a text body */

#define MW_GRAPH_WINDOW_CLOSED   131047  /* re-engagement message */
#define MW_GRAPH_PARAM_INVALID   100     /* invalid parameter */

typedef struct {
    json_t                  *root;
    const char              *to;            /* as the client wrote it */
    char                     contact[MW_CONTACT_MAX];   /* normalized */
    const char              *type;
    int                      is_template;
} mw_send_req_t;

typedef struct {
    int                      status;        /* HTTP status to answer */
    int                      code;          /* Graph error code */
    char                     message[256];  /* never quotes the body */
} mw_send_err_t;

/*
 * Validates a send-message request body (Meta's JSON, unchanged): JSON
 * with no duplicate keys, "to" a contact mw_contact_normalize() accepts,
 * "type" a type Meta sends, the type's object present, a text body of at
 * most MW_TEXT_MAX characters.  Returns 0, or -1 with err filled.
 */
int mw_send_parse(mw_send_req_t *req, const char *buf, size_t len,
    mw_send_err_t *err);
void mw_send_free(mw_send_req_t *req);

/*
 * A Graph-style error body:
 *   {"error":{"message":M,"type":T,"code":C,
 *             "error_data":{"messaging_product":"whatsapp","details":D}}}
 * details may be NULL.  Returns a string from jansson's allocator, to be
 * released with mw_json_free(), or NULL.
 */
char *mw_graph_error(int code, const char *type, const char *message,
    const char *details, size_t *len);

/* What the state holds about a contact, read under the state's lock. */
typedef struct {
    int64_t                  window;        /* expires_at, 0: never */
    int64_t                  session;       /* when the open window's
                                               session began */
    int64_t                  counted;       /* when a conversation was last
                                               counted for this contact */
    int                      optin;         /* MW_OPTIN_* */
} mw_contact_state_t;

typedef struct {
    int64_t                  limit;         /* per period, 0: unlimited */
    int64_t                  used;
    int64_t                  daily_limit;   /* business-initiated per day,
                                               0: unlimited */
    int64_t                  daily_used;
    int                      require_optin;
} mw_limits_t;

typedef enum {
    MW_SEND_ALLOW = 0,
    MW_SEND_WINDOW_CLOSED,          /* 400, 131047 */
    MW_SEND_LIMIT,                  /* 429: the period's conversations */
    MW_SEND_DAILY_LIMIT,            /* 429: business-initiated today */
    MW_SEND_NO_OPTIN,               /* 403: no opt-in recorded */
    MW_SEND_OPTED_OUT               /* 403: the contact sent STOP */
} mw_send_verdict_e;

typedef struct {
    mw_send_verdict_e        verdict;
    unsigned                 conversation:1;        /* counts one */
    unsigned                 business_initiated:1;  /* counts today too */
    unsigned                 session:1;             /* the session's one */
} mw_send_decision_t;

/*
 * The help-desk rules.  Inside an open window every message type may be
 * sent and the session's first business message counts one conversation
 * (counted < session); outside it only templates, each counting one
 * business-initiated conversation, subject to the daily cap and, when
 * required, the contact's opt-in.  A conversation over the period's limit
 * is refused.
 */
void mw_send_decide(const mw_contact_state_t *cs, const mw_limits_t *lim,
    int is_template, int64_t now, mw_send_decision_t *d);

/*
 * An inbound message's effect on its contact: the window moves forward
 * (mw_window_advance) and, when the window had closed before the message,
 * a new session begins at the message.  A window that Meta closed early
 * (mw_contact_close: window and session both at the refusal) stays
 * closed for a message older than the refusal.
 */
void mw_session_advance(int64_t *window, int64_t *session, int64_t from);


#endif /* MW_CORE_H_INCLUDED */
