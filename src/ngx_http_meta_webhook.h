/*
 * nginx-meta-webhook: declarations shared by the nginx glue files.
 *
 * The glue adapts nginx (configuration, phases, requests, memory) to the
 * pure core in mw_core.h; the state backends implement the interface
 * below.
 */

#ifndef NGX_HTTP_META_WEBHOOK_H_INCLUDED
#define NGX_HTTP_META_WEBHOOK_H_INCLUDED


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "mw_core.h"


#define NGX_MW_MAX_SECRETS         2
#define NGX_MW_MAX_NUMBERS         25   /* Meta's limit per account */
#define NGX_MW_MIN_BODY_SIZE       (4 * 1024 * 1024)
#define NGX_MW_MAX_CHALLENGE       128
#define NGX_MW_ERROR_CODES         16
#define NGX_MW_BUSY_WAITS          5    /* a busy claim looked at again */
#define NGX_MW_BUSY_WAIT           10   /* ms apart */
#define NGX_MW_DAILY_CAP           50   /* unverified businesses, per day */

/* adds to a shared counter, when the state has given the counters */
#define ngx_mw_count(mmcf, field, n)                                          \
    if ((mmcf)->counters) {                                                   \
        (void) ngx_atomic_fetch_add(&(mmcf)->counters->field, n);             \
    }

/* [A-Za-z0-9_.-]: handshake challenges and rule names */
#define ngx_mw_is_token_char(c)                                               \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                 \
     || ((c) >= '0' && (c) <= '9') || (c) == '_' || (c) == '.' || (c) == '-')


/* ---------------------------------------------------------------------- */
/* state interface                                                        */

typedef enum {
    NGX_MW_CLAIM_NEW = 0,           /* claimed now, in flight */
    NGX_MW_CLAIM_DUPLICATE,         /* handed off and committed earlier */
    NGX_MW_CLAIM_BUSY               /* in flight in another delivery */
} ngx_mw_claim_result_e;

typedef struct {
    u_char                      key[MW_KEY_LEN];
    ngx_uint_t                  result;        /* ngx_mw_claim_result_e */
} ngx_mw_claim_t;

typedef struct {
    u_char                      key[MW_KEY_LEN];
    int64_t                     from;          /* in: window opens from, or
                                                  closes at (close) */
    int64_t                     optin_ts;      /* in: when the keyword came */
    ngx_uint_t                  optin;         /* in: MW_OPTIN_* */
    ngx_uint_t                  close;         /* in: Meta refused with
                                                  131047: close the window */
    u_char                      sent[MW_KEY_LEN];  /* in, close: the
                                                  refused message's key */
    int64_t                     expires;       /* out: window after update */
} ngx_mw_contact_op_t;

/*
 * One delivery's state work, done in one go: claim every dedupe key and
 * advance every contact window.  A backend either completes it at once
 * (NGX_OK) or later in a thread (NGX_AGAIN, then done() on the event
 * loop); rc says how it went.
 */
typedef struct ngx_mw_ingest_s  ngx_mw_ingest_t;

typedef void (*ngx_mw_done_pt)(ngx_mw_ingest_t *op);

struct ngx_mw_ingest_s {
    ngx_mw_claim_t             *claims;
    ngx_uint_t                  nclaims;
    ngx_mw_contact_op_t        *contacts;
    ngx_uint_t                  ncontacts;

    uint64_t                    owner;         /* whose claims these are */
    time_t                      now;
    time_t                      claim_timeout; /* lease of an in-flight claim */
    time_t                      dedupe_ttl;    /* of a committed claim */

    ngx_int_t                   rc;            /* NGX_OK, NGX_DECLINED: full,
                                                  NGX_ERROR: failed */
    ngx_mw_done_pt              done;
    void                       *data;
    ngx_pool_t                 *pool;          /* lives as long as op */
    ngx_log_t                  *log;
};

/*
 * A send's accounting, decided and counted in one go under the state's
 * lock (mw_send_decide), so that two workers cannot both take the last
 * conversation of a limit.
 */
typedef struct {
    u_char                      contact[MW_KEY_LEN];
    u_char                      period[MW_KEY_LEN];
    u_char                      day[MW_KEY_LEN];
    int64_t                     period_end;
    int64_t                     day_end;
    mw_limits_t                 limits;        /* in: the limits;
                                                  out: what was used */
    ngx_uint_t                  is_template;
    time_t                      now;

    mw_contact_state_t          cs;            /* out: the contact found */
    mw_send_decision_t          d;             /* out: the verdict */
    int64_t                     counted;       /* out: the session mark it
                                                  replaced, for rollback */
    int64_t                     mark;          /* out: the mark it set */
    ngx_int_t                   rc;            /* NGX_OK, NGX_ERROR */
    ngx_log_t                  *log;
} ngx_mw_send_op_t;

typedef struct {
    ngx_str_t                   name;

    /*
     * 1: reserve, unreserve, contact, counter and sent block, and are
     * called in threads only; 0: they are quick, on the event loop.
     * ingest and settle never block the event loop either way.
     */
    ngx_uint_t                  blocking;

    ngx_int_t                 (*ingest)(void *state, ngx_mw_ingest_t *op);

    /*
     * Commits (the hand-off succeeded: keep the keys for ttl) or releases
     * (it failed: forget them, so that Meta's retry is processed) the new
     * claims of a delivery, whose lease ends at lease (a commit after it
     * may come after another delivery took the claims over).  Never
     * blocks the event loop.
     */
    void                      (*settle)(void *state, ngx_mw_claim_t *claims,
                                        ngx_uint_t n, uint64_t owner,
                                        ngx_uint_t commit, time_t ttl,
                                        time_t lease, ngx_log_t *log);

    /* decides a send and, when allowed, counts it */
    ngx_int_t                 (*reserve)(void *state, ngx_mw_send_op_t *op);

    /* gives back what reserve() counted: Meta refused the message */
    void                      (*unreserve)(void *state,
                                           ngx_mw_send_op_t *op);

    /* reads a contact, and a counter's value (0 when absent) */
    ngx_int_t                 (*contact)(void *state, u_char *key,
                                         mw_contact_state_t *cs);
    ngx_int_t                 (*counter)(void *state, u_char *key,
                                         int64_t *value);

    /* remembers which contact a sent message went to, for its statuses */
    void                      (*sent)(void *state, u_char *sent,
                                      u_char *contact, time_t ttl,
                                      ngx_log_t *log);
} ngx_mw_state_ops_t;


/* counters, kept with the state so that all workers add to one set */

typedef struct {
    ngx_atomic_t                deliveries;
    ngx_atomic_t                handshakes;
    ngx_atomic_t                handshakes_refused;
    ngx_atomic_t                signatures_missing;
    ngx_atomic_t                signatures_refused;
    ngx_atomic_t                updates;
    ngx_atomic_t                handed_off;
    ngx_atomic_t                duplicates;
    ngx_atomic_t                busy;
    ngx_atomic_t                released;
    ngx_atomic_t                dead_letters;
    ngx_atomic_t                unlisted;
    ngx_atomic_t                state_errors;
    ngx_atomic_t                evictions;
    ngx_atomic_t                supported;
    ngx_atomic_t                unsupported_reaction;
    ngx_atomic_t                unsupported_deleted;
    ngx_atomic_t                unsupported_attachment;
    ngx_atomic_t                unsupported_type;
    ngx_atomic_t                quarantined;
    ngx_atomic_t                statuses;
    ngx_atomic_t                optins;
    ngx_atomic_t                optouts;

    ngx_atomic_t                sends;
    ngx_atomic_t                sends_accepted;
    ngx_atomic_t                refused_invalid;
    ngx_atomic_t                refused_forbidden;
    ngx_atomic_t                refused_window;
    ngx_atomic_t                refused_limit;
    ngx_atomic_t                refused_daily;
    ngx_atomic_t                refused_optin;
    ngx_atomic_t                refused_state;
    ngx_atomic_t                graph_timeouts;
    ngx_atomic_t                graph_failures;
    ngx_atomic_t                conversations_rolled_back;

    /* Meta's error codes as they come: a small open table */
    struct {
        ngx_atomic_t            code;
        ngx_atomic_t            count;
    }                           graph_errors[NGX_MW_ERROR_CODES];
} ngx_mw_counters_t;


/*
 * The memcached servers as one node sees them, shared by every thread of
 * every worker: a server that fails leaves the ring for all of them at
 * once, so that no two threads of a node look for a key in two places.
 */

#define NGX_MW_RING_MAX             32

typedef struct {
    ngx_atomic_t                failed_at;   /* last failure, seconds */
    ngx_atomic_t                fails;       /* recent failures */
    ngx_atomic_t                dead_until;  /* seconds; 0: in the ring */
    ngx_atomic_t                returned_at; /* last back in the ring */
} ngx_mw_ring_server_t;

typedef struct {
    ngx_atomic_t                hash;        /* of the server list */
    ngx_mw_ring_server_t        servers[NGX_MW_RING_MAX];
} ngx_mw_ring_t;


/* ---------------------------------------------------------------------- */
/* configuration                                                          */

typedef struct {
    ngx_shm_zone_t             *shm_zone;      /* shm backend, counters */
    ngx_mw_state_ops_t         *ops;
    void                       *state;         /* the backend's own */
    ngx_mw_counters_t          *counters;      /* in shared memory */
    ngx_atomic_t               *entries;       /* shm: the zone's entries */
    ngx_mw_ring_t              *ring;          /* memcached: membership */
    ngx_uint_t                  ring_size;     /* memcached: servers */
    uint32_t                    ring_hash;     /* memcached: their list */
    ngx_flag_t                  used;          /* a meta_webhook location */
} ngx_http_meta_webhook_main_conf_t;

typedef struct {
    ngx_str_t                   waba_id;
    ngx_array_t                 numbers;       /* ngx_str_t */
} ngx_mw_account_t;

typedef struct {
    ngx_str_t                   name;
    ngx_regex_t                *regex;
} ngx_mw_rule_t;

typedef struct {
    ngx_flag_t                  enable;
    ngx_str_t                   verify_token;

    mw_hmac_key_t              *keys[NGX_MW_MAX_SECRETS];
    ngx_uint_t                  nkeys;
    ngx_str_t                   secret_file;
    ngx_str_t                   previous_secret_file;

    ngx_str_t                   dead_letter_path;
    ngx_array_t                *accounts;      /* ngx_mw_account_t */
    ngx_array_t                *rules;         /* ngx_mw_rule_t */
    ngx_str_t                   rules_file;
    ngx_uint_t                  detectors;     /* MW_DETECT_*, or UNSET */
    mw_quarantine_conf_t        qconf;

    time_t                      claim_timeout;
    time_t                      dedupe_ttl;
    ngx_uint_t                  json_opts;     /* MW_JSON_*, or UNSET */

    /* the send path */
    ngx_flag_t                  send;
    ngx_str_t                   graph_url;
    ngx_str_t                   token_file;
    ngx_str_t                   auth_header;   /* "Authorization: Bearer" */
    ngx_int_t                   conversation_limit;
    ngx_int_t                   anchor_day;
    ngx_flag_t                  business_verified;
    ngx_flag_t                  require_optin;
    ngx_int_t                   tz_offset;     /* seconds east of UTC */
    ngx_msec_t                  graph_timeout;
    ngx_msec_t                  graph_connect_timeout;
#if (NGX_THREADS)
    ngx_thread_pool_t          *thread_pool;
#endif
    ngx_str_t                   thread_pool_name;
} ngx_http_meta_webhook_loc_conf_t;


/* the request's context */

typedef enum {
    NGX_MW_RESULT_NONE = 0,
    NGX_MW_RESULT_HANDSHAKE,
    NGX_MW_RESULT_REFUSED,
    NGX_MW_RESULT_NEW,
    NGX_MW_RESULT_DUPLICATE,
    NGX_MW_RESULT_BUSY,
    NGX_MW_RESULT_DEAD_LETTER,
    NGX_MW_RESULT_STATE_ERROR
} ngx_mw_result_e;

typedef struct {
    ngx_int_t                   status;        /* phase handler's answer */
    ngx_uint_t                  result;        /* ngx_mw_result_e */
    unsigned                    answer:1;      /* answer 200 ourselves */
    unsigned                    settled:1;

    u_char                      expected[MW_SHA256_LEN];

    mw_batch_t                  batch;
    u_char                     *skip;          /* per update: not handed */
    ngx_uint_t                  nnew;

    ngx_mw_ingest_t             op;
    time_t                      dedupe_ttl;
    ngx_event_t                 guard;         /* while state works */
    ngx_event_t                 again;         /* a busy claim, looked at
                                                  again shortly */
    ngx_uint_t                  busy_waits;
    ngx_mw_claim_t             *held;          /* the new claims */
    ngx_uint_t                  nheld;

    ngx_str_t                   events;        /* $meta_webhook_events */
    unsigned                    events_built:1;
} ngx_http_meta_webhook_ctx_t;


extern ngx_module_t  ngx_http_meta_webhook_module;
extern ngx_mw_state_ops_t  ngx_http_meta_webhook_shm_ops;


/* ngx_http_meta_webhook_ingest.c */
ngx_http_meta_webhook_ctx_t *ngx_http_meta_webhook_get_ctx(
    ngx_http_request_t *r);
ngx_int_t ngx_http_meta_webhook_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_meta_webhook_content_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_meta_webhook_log_handler(ngx_http_request_t *r);

ngx_int_t ngx_http_meta_webhook_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
void ngx_http_meta_webhook_hold(ngx_http_request_t *r, ngx_event_t *guard,
    ngx_msec_t timeout);
void ngx_http_meta_webhook_resume(ngx_http_request_t *r, ngx_event_t *guard);
ngx_int_t ngx_http_meta_webhook_respond(ngx_http_request_t *r,
    ngx_uint_t status, char *type, u_char *data, size_t len);
ngx_uint_t ngx_http_meta_webhook_serves(ngx_http_meta_webhook_loc_conf_t *lcf,
    const u_char *id, size_t len);

/* ngx_http_meta_webhook_send.c */
ngx_int_t ngx_http_meta_webhook_send_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_meta_webhook_status_handler(ngx_http_request_t *r);
void ngx_http_meta_webhook_periods(ngx_http_meta_webhook_loc_conf_t *lcf,
    time_t now, ngx_mw_send_op_t *op);

/* ngx_http_meta_webhook_memcached.c */
char *ngx_http_meta_webhook_memcached(ngx_conf_t *cf,
    ngx_http_meta_webhook_main_conf_t *mmcf, ngx_str_t *args,
    ngx_uint_t nargs);

/* ngx_http_meta_webhook_json.c */
void ngx_http_meta_webhook_json_init(void);
ngx_pool_t *ngx_http_meta_webhook_json_pool(ngx_pool_t *pool);
typedef struct ngx_mw_json_arena_s  ngx_mw_json_arena_t;
ngx_mw_json_arena_t *ngx_http_meta_webhook_json_arena(ngx_pool_t *pool);
ngx_mw_json_arena_t *ngx_http_meta_webhook_json_arena_get(ngx_log_t *log);
void ngx_http_meta_webhook_json_arena_put(ngx_mw_json_arena_t *a);
ngx_mw_json_arena_t *ngx_http_meta_webhook_json_use(ngx_mw_json_arena_t *a);
void ngx_http_meta_webhook_json_exit(void);

/* ngx_http_meta_webhook_shm.c */
char *ngx_http_meta_webhook_shm_zone(ngx_conf_t *cf,
    ngx_http_meta_webhook_main_conf_t *mmcf, ngx_str_t *name, size_t size);

/* ngx_http_meta_webhook_quarantine.c */
char *ngx_http_meta_webhook_load_rules(ngx_conf_t *cf,
    ngx_http_meta_webhook_loc_conf_t *lcf);
int ngx_http_meta_webhook_rule_match(void *data, const char *text,
    size_t len, size_t *start, size_t *end, const char **name);


#endif /* NGX_HTTP_META_WEBHOOK_H_INCLUDED */
