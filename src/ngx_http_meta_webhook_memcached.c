/*
 * The fleet state backend: a memcached cluster, reached with libmemcached.
 *
 * Every call blocks, so every call runs in a thread of an nginx thread
 * pool, with one memcached_st per thread, made on first use and kept.
 * The servers form a consistent (ketama) ring; one that fails is taken
 * out of it and tried again after the dead timeout, so its keys move to
 * the others and no request waits longer than the short timeouts.
 *
 * The records and their rules are the shared memory backend's
 * (mw_state.h); only the operations differ:
 *
 *   a claim       add "I<owner>" with the lease as TTL: NOTSTORED means
 *                 another delivery has it, read to tell "C" (committed,
 *                 a duplicate) from "I..." (in flight);
 *   commit        "C" with the dedupe TTL, whoever holds the key now,
 *                 read back;
 *   release       gets, then delete if still ours;
 *   a contact     gets, change with the rules, cas (add when absent),
 *                 again when another node changed it meanwhile.
 *
 * A worker sends them in rounds: what one pass of its event loop asked
 * for, in one task, pipelined with the ASCII protocol (see "Rounds").
 *
 * The counters of the status page stay per node, in a small shared
 * memory zone.
 */

#include "ngx_http_meta_webhook.h"
#include "mw_state.h"

#include <libmemcached/memcached.h>


#define NGX_MW_MC_CAS_TRIES   8
#define NGX_MW_MC_VALUE_MAX   160
#define NGX_MW_MC_PENDING_POLLS  10   /* 10 ms each */
#define NGX_MW_MC_PENDING_TTL    2    /* s */
#define NGX_MW_MC_GROUP_LEN   16
#define NGX_MW_MC_ROUNDS      2       /* in the pool at once, per worker */
#define NGX_MW_MC_ROUND_WAIT  20      /* ms a round waits for them at most */
#define NGX_MW_MC_SETTLE_WAIT 5       /* ms settles wait for a delivery */
#define NGX_MW_MC_CHECK_TRIES 2       /* pipelined, then the gets/cas loop */


/*
 * A kept connection dies with its server (a restart): the first call on
 * it fails, the next one reconnects.  So a call that failed on its
 * connection is made once more before the failure counts against the
 * server.
 *
 * Which servers are in the ring is decided here, not by libmemcached:
 * its own ejection is per memcached_st, so each thread would eject a
 * server on its own failures and the threads of one node would disagree
 * about where a key lives (a claim made on one server, its commit looked
 * for on another).  Failures are counted in the node's shared memory
 * (ngx_mw_ring_t); NGX_MW_MC_FAILS of them within NGX_MW_MC_FAIL_WINDOW
 * seconds take the server out for dead_timeout, for every thread at once,
 * and every thread rebuilds its handle from the same list of servers.
 */

#define NGX_MW_MC_FAILS        2
#define NGX_MW_MC_FAIL_WINDOW  2

#define ngx_mw_mc_conn_error(rc)                                             \
    ((rc) == MEMCACHED_CONNECTION_FAILURE || (rc) == MEMCACHED_WRITE_FAILURE \
     || (rc) == MEMCACHED_READ_FAILURE                                       \
     || (rc) == MEMCACHED_UNKNOWN_READ_FAILURE || (rc) == MEMCACHED_ERRNO)

/*
 * libmemcached's own back-off ("temporarily disabled" until the next
 * second after a failure) is a verdict of this handle alone: such a call
 * is made again at once, with the back-off cleared, and only what that
 * second call finds counts against the server.
 */

#define ngx_mw_mc_retry(rc)                                                  \
    (ngx_mw_mc_conn_error(rc) || (rc) == MEMCACHED_SERVER_TEMPORARILY_DISABLED)

#define ngx_mw_mc_server_fault(rc)                                           \
    (ngx_mw_mc_retry(rc) || (rc) == MEMCACHED_TIMEOUT                        \
     || (rc) == MEMCACHED_SERVER_MARKED_DEAD                                 \
     || (rc) == MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE)

#define ngx_mw_mc_call(m, key, rc, call)                                     \
    rc = call;                                                               \
    if (ngx_mw_mc_retry(rc)) {                                               \
        ngx_mw_mc_reconnect(m, key);                                         \
        rc = call;                                                           \
    }                                                                        \
    if (ngx_mw_mc_server_fault(rc)) {                                        \
        ngx_mw_mc_fault(m, key, rc);                                         \
    }


typedef struct ngx_mw_mc_round_s  ngx_mw_mc_round_t;

typedef struct {
    ngx_array_t                 servers;      /* ngx_url_t */
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  poll_timeout;
    time_t                      dead_timeout;
    ngx_flag_t                  binary;       /* protocol=binary */
    ngx_str_t                   thread_pool_name;
    ngx_thread_pool_t          *thread_pool;
    ngx_http_meta_webhook_main_conf_t  *mmcf;  /* its ring */
    ngx_log_t                  *log;

    /*
     * This worker's round being gathered, the event that sends it, its
     * rounds in the pool, and a timer that keeps a worker that stops
     * running until they are done.
     */
    ngx_mw_mc_round_t          *round;
    ngx_event_t                 round_post;
    ngx_uint_t                  rounds;
    ngx_event_t                 round_guard;
} ngx_mw_mc_t;


typedef struct ngx_mw_mc_settle_s  ngx_mw_mc_settle_t;

struct ngx_mw_mc_settle_s {
    ngx_mw_claim_t             *claims;
    ngx_uint_t                  n;
    uint64_t                    owner;
    ngx_uint_t                  commit;
    time_t                      ttl;
    time_t                      lease;        /* when the claims lapse */
    ngx_mw_mc_settle_t         *next;
    unsigned                    redo:1;       /* not read back */
    unsigned                    late:1;       /* after the lease */
};


/* a message as a contact's record takes it */
typedef struct {
    int64_t                     from;
    int64_t                     optin_ts;
    ngx_uint_t                  optin;
    time_t                      now;
} ngx_mw_mc_msg_t;


/*
 * A contact written without waiting for memcached's answer: read back by
 * the next round, which applies its messages again if the record holds
 * anything else (another writer got there between the read and the cas).
 */
typedef struct ngx_mw_mc_check_s  ngx_mw_mc_check_t;

struct ngx_mw_mc_check_s {
    ngx_mw_mc_check_t          *next;
    char                        key[MW_KEY_TEXT_LEN + 1];
    char                        text[MW_CONTACT_TEXT_MAX + 1];
    int                         len;
    ngx_uint_t                  tries;
    ngx_uint_t                  nmsgs;
    ngx_mw_mc_msg_t             msgs[1];
};


/*
 * What one pass of a worker's event loop asked of memcached: deliveries
 * to claim, settles, and the contacts the previous round wrote, done
 * together in one task of the pool.
 */
struct ngx_mw_mc_round_s {
    ngx_thread_task_t           task;
    ngx_mw_mc_t                *mc;
    ngx_mw_ingest_t           **ops;
    ngx_uint_t                  nops;
    ngx_uint_t                  nalloc;
    ngx_mw_mc_settle_t         *settles;
    ngx_mw_mc_settle_t        **last;
    ngx_mw_mc_check_t          *checks;       /* to read back */
    ngx_mw_mc_check_t          *written;      /* for the next round */
};


/* a value read ahead for a batch, by key */
typedef struct {
    char                        key[MW_KEY_TEXT_LEN + 1];
    u_char                      found;
    u_char                      len;
    uint64_t                    cas;
    char                        value[NGX_MW_MC_VALUE_MAX];
} ngx_mw_mc_value_t;


static ngx_int_t ngx_http_meta_webhook_mc_ingest(void *state,
    ngx_mw_ingest_t *op);
static void ngx_http_meta_webhook_mc_settle(void *state,
    ngx_mw_claim_t *claims, ngx_uint_t n, uint64_t owner, ngx_uint_t commit,
    time_t ttl, time_t lease, ngx_log_t *log);
static ngx_int_t ngx_http_meta_webhook_mc_reserve(void *state,
    ngx_mw_send_op_t *op);
static void ngx_http_meta_webhook_mc_unreserve(void *state,
    ngx_mw_send_op_t *op);
static ngx_int_t ngx_http_meta_webhook_mc_contact(void *state, u_char *key,
    mw_contact_state_t *cs);
static ngx_int_t ngx_http_meta_webhook_mc_counter(void *state, u_char *key,
    int64_t *value);
static void ngx_http_meta_webhook_mc_sent(void *state, u_char *sent,
    u_char *contact, time_t ttl, ngx_log_t *log);


ngx_mw_state_ops_t  ngx_http_meta_webhook_memcached_ops = {
    ngx_string("memcached"),
    1,
    ngx_http_meta_webhook_mc_ingest,
    ngx_http_meta_webhook_mc_settle,
    ngx_http_meta_webhook_mc_reserve,
    ngx_http_meta_webhook_mc_unreserve,
    ngx_http_meta_webhook_mc_contact,
    ngx_http_meta_webhook_mc_counter,
    ngx_http_meta_webhook_mc_sent
};


/*
 * libmemcached backs off a server that failed until the next second at
 * least; the retry of a call that failed on a dead connection must be
 * allowed to reconnect at once.  (memcached_server_get_last_disconnect()
 * would not do: it returns a copy of the server.)  A server that fails
 * again is counted by ngx_mw_mc_fault().
 */

static void
ngx_mw_mc_reconnect(memcached_st *m, const char *key)
{
    memcached_return_t            rc;
    const memcached_instance_st  *server;

    server = memcached_server_by_key(m, key, strlen(key), &rc);

    if (server) {
        memcached_instance_next_retry(server, 0);
    }
}


/* MW_KEY_HEX_LEN hex digits into MW_KEY_LEN bytes */

static ngx_int_t
ngx_mw_mc_hex_decode(u_char *out, const char *hex)
{
    ngx_int_t   hi, lo;
    ngx_uint_t  i;

    for (i = 0; i < MW_KEY_LEN; i++) {
        hi = ngx_hextoi((u_char *) &hex[2 * i], 1);
        lo = ngx_hextoi((u_char *) &hex[2 * i + 1], 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }

        out[i] = (u_char) (hi * 16 + lo);
    }

    return NGX_OK;
}


/*
 * One handle per thread, for the configuration that made it and the
 * servers that were in the ring then; position i of the handle is server
 * ngx_mw_mc_handle_index[i] of the configuration.
 */

static __thread memcached_st  *ngx_mw_mc_handle;
static __thread ngx_mw_mc_t   *ngx_mw_mc_handle_owner;
static __thread uint32_t       ngx_mw_mc_handle_live;
static __thread u_char         ngx_mw_mc_handle_index[NGX_MW_RING_MAX];
static __thread ngx_log_t     *ngx_mw_mc_handle_log;


static ngx_int_t ngx_mw_mc_routes(ngx_mw_mc_t *mc, memcached_st *live,
    ngx_uint_t n, ngx_log_t *log);
static ngx_int_t ngx_mw_mc_read_ahead(memcached_st *m, ngx_mw_mc_value_t *v,
    ngx_uint_t n, ngx_log_t *log);
static memcached_return_t ngx_mw_mc_gets_once(memcached_st *m,
    const char *group, const char *key, char *value, size_t *len,
    uint64_t *cas);

/* see "Corking" */
#if (NGX_LINUX && defined SO_COOKIE)
#define NGX_MW_MC_CORK  1
static void ngx_mw_mc_corks_attach(memcached_st *m, ngx_log_t *log);
static void ngx_mw_mc_corks_free(memcached_st *m);
static void ngx_mw_mc_cork(memcached_st *m);
static void ngx_mw_mc_uncork(memcached_st *m);
#else
#define NGX_MW_MC_CORK  0
#define ngx_mw_mc_corks_attach(m, log)
#define ngx_mw_mc_corks_free(m)
#define ngx_mw_mc_cork(m)
#define ngx_mw_mc_uncork(m)
#endif


/* The servers in the ring now; one whose dead timeout ended is back. */

static uint32_t
ngx_mw_mc_live(ngx_mw_mc_t *mc, ngx_log_t *log)
{
    time_t                 now;
    uint32_t               live;
    ngx_uint_t             i;
    ngx_url_t             *u;
    ngx_atomic_uint_t      until;
    ngx_mw_ring_server_t  *s;

    now = ngx_time();
    live = 0;
    u = mc->servers.elts;

    for (i = 0; i < mc->servers.nelts; i++) {
        s = &mc->mmcf->ring->servers[i];
        until = s->dead_until;

        if (until != 0) {
            if ((time_t) until > now) {
                continue;
            }

            if (ngx_atomic_cmp_set(&s->dead_until, until, 0)) {
                s->fails = 0;
                s->returned_at = (ngx_atomic_uint_t) now;
                ngx_log_error(NGX_LOG_NOTICE, log, 0,
                              "meta_webhook: memcached server \"%V\" is "
                              "back in the ring, on trial", &u[i].url);
            }
        }

        live |= (uint32_t) 1 << i;
    }

    return live;
}


/*
 * A call failed on the server that holds key: counted for the node, and
 * the server leaves the ring when it keeps failing.
 */

static void
ngx_mw_mc_fault(memcached_st *m, const char *key, memcached_return_t rc)
{
    time_t                 now;
    uint32_t               j, n;
    ngx_mw_mc_t           *mc;
    ngx_url_t             *u;
    ngx_atomic_uint_t      prev;
    ngx_mw_ring_server_t  *s;

    mc = ngx_mw_mc_handle_owner;

    if (m != ngx_mw_mc_handle || mc == NULL) {
        return;
    }

    /* the position in this handle of the server that holds key */
    j = memcached_generate_hash(m, key, strlen(key));

    if (j >= memcached_server_count(m)) {
        return;
    }

    j = ngx_mw_mc_handle_index[j];
    s = &mc->mmcf->ring->servers[j];
    u = mc->servers.elts;
    now = ngx_time();

    if (s->dead_until != 0) {
        return;
    }

    prev = s->failed_at;
    s->failed_at = (ngx_atomic_uint_t) now;

    if ((time_t) prev + NGX_MW_MC_FAIL_WINDOW < now) {
        /* the first failure in a while */
        s->fails = 1;
        n = 1;

    } else {
        n = (uint32_t) ngx_atomic_fetch_add(&s->fails, 1) + 1;
    }

    if (n >= NGX_MW_MC_FAILS
        && ngx_atomic_cmp_set(&s->dead_until, 0,
                              (ngx_atomic_uint_t) (now + mc->dead_timeout)))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_mw_mc_handle_log, 0,
                      "meta_webhook: memcached server \"%V\" failed (%s), "
                      "out of the ring for %T s: its keys go to the others",
                      &u[j].url, memcached_strerror(m, rc),
                      mc->dead_timeout);
    }
}


/*
 * A handle with the configured servers of the set, in configuration
 * order, on a consistent (ketama) ring: position p of the handle is the
 * p-th server of the set.
 */

static memcached_st *
ngx_mw_mc_ring(ngx_mw_mc_t *mc, uint32_t set, ngx_log_t *log)
{
    u_char             host[NGX_SOCKADDR_STRLEN + 1];
    ngx_uint_t         i;
    ngx_url_t         *u;
    memcached_st      *m;
    memcached_return_t rc;

    m = memcached_create(NULL);
    if (m == NULL) {
        return NULL;
    }

    u = mc->servers.elts;

    for (i = 0; i < mc->servers.nelts; i++) {
        if (!(set & ((uint32_t) 1 << i))) {
            continue;
        }

        ngx_cpystrn(host, u[i].host.data,
                    ngx_min(u[i].host.len + 1, sizeof(host)));

        rc = memcached_server_add(m, (const char *) host, u[i].port);

        if (rc != MEMCACHED_SUCCESS) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "meta_webhook: memcached server \"%V\": %s",
                          &u[i].url, memcached_strerror(m, rc));
            memcached_free(m);
            return NULL;
        }
    }

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                                  MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);

    return m;
}


static memcached_st *
ngx_mw_mc_get_handle(ngx_mw_mc_t *mc, ngx_log_t *log)
{
    uint32_t       live;
    ngx_uint_t     i, n;
    memcached_st  *m;

    live = ngx_mw_mc_live(mc, log);

    ngx_mw_mc_handle_log = log;

    if (ngx_mw_mc_handle && ngx_mw_mc_handle_owner == mc
        && ngx_mw_mc_handle_live == live)
    {
        return ngx_mw_mc_handle;
    }

    if (ngx_mw_mc_handle) {
        ngx_mw_mc_corks_free(ngx_mw_mc_handle);
        memcached_free(ngx_mw_mc_handle);
        ngx_mw_mc_handle = NULL;
        ngx_mw_mc_handle_owner = NULL;
    }

    if (live == 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "meta_webhook: no memcached server is in the ring; "
                      "state calls fail until one is tried again");
        return NULL;
    }

    m = ngx_mw_mc_ring(mc, live, log);
    if (m == NULL) {
        return NULL;
    }

    n = 0;

    for (i = 0; i < mc->servers.nelts; i++) {
        if (live & ((uint32_t) 1 << i)) {
            ngx_mw_mc_handle_index[n++] = (u_char) i;
        }
    }

    /*
     * ASCII by default: memcached deprecated the binary protocol, and it
     * measured no faster here (docs/operations.md, "Throughput")
     */
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL,
                                  mc->binary ? 1 : 0);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);

    /*
     * ASCII: a set (and a delete) waits in the handle's buffer until it
     * is flushed, so a round's commits leave in one send (whoever sets
     * or deletes flushes).  Not binary: libmemcached would read the
     * answer of a buffered delete as that of the next command.
     */
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS,
                                  mc->binary ? 0 : 1);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT,
                                  mc->connect_timeout);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT,
                                  mc->poll_timeout);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT,
                                  mc->poll_timeout * 1000);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT,
                                  mc->poll_timeout * 1000);

    /*
     * No ejection by libmemcached (see ngx_mw_mc_fault); a server that
     * failed is tried again at once by this handle, until the node takes
     * it out of the ring.
     */
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS,
                                  0);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0);

    if (ngx_mw_mc_routes(mc, m, n, log) != NGX_OK) {
        memcached_free(m);
        return NULL;
    }

    ngx_mw_mc_corks_attach(m, log);

    ngx_mw_mc_handle = m;
    ngx_mw_mc_handle_owner = mc;
    ngx_mw_mc_handle_live = live;

    return m;
}


/*
 * Keys that moved.  While a server is out of the ring its keys are
 * claimed and committed on the next server of the ring.  Once it is back,
 * a copy of such an update would be looked for on it alone, and handed
 * off again.  So for dedupe_ttl after a server came back, a new claim on
 * it is also looked for where the key went meanwhile: on the server that
 * the ring without it names.
 *
 * The rings are libmemcached's own, used to hash only (they never
 * connect): ngx_mw_mc_full has every configured server, and
 * ngx_mw_mc_minus[i] every one but i.  The read itself goes through the
 * live handle, with a group key that it routes to that server.
 */

static __thread memcached_st  *ngx_mw_mc_full;
static __thread memcached_st  *ngx_mw_mc_minus[NGX_MW_RING_MAX];
static __thread ngx_mw_mc_t   *ngx_mw_mc_routes_owner;
static __thread char           ngx_mw_mc_group[NGX_MW_RING_MAX]
                                              [NGX_MW_MC_GROUP_LEN];


static ngx_int_t
ngx_mw_mc_routes(ngx_mw_mc_t *mc, memcached_st *live, ngx_uint_t n,
    ngx_log_t *log)
{
    int         len;
    char        group[NGX_MW_MC_GROUP_LEN];
    uint32_t    pos, set, all;
    ngx_uint_t  i, found, tries;

    if (ngx_mw_mc_routes_owner != mc) {
        if (ngx_mw_mc_full) {
            memcached_free(ngx_mw_mc_full);
            ngx_mw_mc_full = NULL;
        }

        for (i = 0; i < NGX_MW_RING_MAX; i++) {
            if (ngx_mw_mc_minus[i]) {
                memcached_free(ngx_mw_mc_minus[i]);
                ngx_mw_mc_minus[i] = NULL;
            }
        }

        ngx_mw_mc_routes_owner = NULL;

        if (mc->servers.nelts > 1) {
            all = (uint32_t) (((uint64_t) 1 << mc->servers.nelts) - 1);

            ngx_mw_mc_full = ngx_mw_mc_ring(mc, all, log);
            if (ngx_mw_mc_full == NULL) {
                return NGX_ERROR;
            }

            for (i = 0; i < mc->servers.nelts; i++) {
                ngx_mw_mc_minus[i] = ngx_mw_mc_ring(mc,
                                                    all & ~((uint32_t) 1 << i),
                                                    log);
                if (ngx_mw_mc_minus[i] == NULL) {
                    return NGX_ERROR;
                }
            }
        }

        ngx_mw_mc_routes_owner = mc;
    }

    if (n < 2) {
        return NGX_OK;
    }

    /* a group key per server of the live handle */

    found = 0;
    set = 0;

    for (tries = 0; tries < 64 * NGX_MW_RING_MAX && found < n; tries++) {
        len = snprintf(group, sizeof(group), "mw:g:%u", (unsigned) tries);
        pos = memcached_generate_hash(live, group, (size_t) len);

        if (pos >= n) {
            continue;
        }

        i = ngx_mw_mc_handle_index[pos];

        if (set & ((uint32_t) 1 << i)) {
            continue;
        }

        ngx_memcpy(ngx_mw_mc_group[i], group, (size_t) len + 1);
        set |= (uint32_t) 1 << i;
        found++;
    }

    if (found < n) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "meta_webhook: no group key routes to every "
                      "memcached server");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Where else to look for a key just claimed on its server (see above):
 * NGX_OK with the value found there, NGX_DONE when it is not there,
 * NGX_DECLINED when there is nowhere else to look.
 */

static ngx_int_t
ngx_mw_mc_moved(memcached_st *m, ngx_mw_mc_t *mc, const char *key,
    time_t now, time_t ttl, char *value, size_t *len)
{
    uint32_t                 h, f, pos;
    uint64_t                 cas;
    const char              *group;
    ngx_atomic_uint_t        back;
    memcached_return_t       rc;

    if (ngx_mw_mc_full == NULL) {
        return NGX_DECLINED;
    }

    h = memcached_generate_hash(ngx_mw_mc_full, key, MW_KEY_TEXT_LEN);
    back = mc->mmcf->ring->servers[h].returned_at;

    if (back == 0 || (time_t) back + ttl <= now) {
        /* its server has not been out within the dedupe horizon */
        return NGX_DECLINED;
    }

    pos = memcached_generate_hash(m, key, MW_KEY_TEXT_LEN);

    if (ngx_mw_mc_handle_index[pos] != h) {
        /* its server is out now: the key is where the claim went */
        return NGX_DECLINED;
    }

    f = memcached_generate_hash(ngx_mw_mc_minus[h], key, MW_KEY_TEXT_LEN);
    f = (f < h) ? f : f + 1;

    if (!(ngx_mw_mc_handle_live & ((uint32_t) 1 << f))) {
        return NGX_DECLINED;
    }

    group = ngx_mw_mc_group[f];

    ngx_mw_mc_call(m, group, rc,
                   ngx_mw_mc_gets_once(m, group, key, value, len, &cas));

    if (rc == MEMCACHED_NOTFOUND) {
        return NGX_DONE;
    }

    if (rc != MEMCACHED_SUCCESS) {
        ngx_log_error(NGX_LOG_ERR, ngx_mw_mc_handle_log, 0,
                      "meta_webhook: memcached could not be read where a "
                      "key went while its server was out: %s",
                      memcached_strerror(m, rc));
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* A value and its cas, or MEMCACHED_NOTFOUND. */

static memcached_return_t
ngx_mw_mc_gets(memcached_st *m, const char *key, char *value, size_t *len,
    uint64_t *cas)
{
    memcached_return_t  rc;

    ngx_mw_mc_call(m, key, rc,
                   ngx_mw_mc_gets_once(m, NULL, key, value, len, cas));

    return rc;
}


/*
 * A result's value, cut to NGX_MW_MC_VALUE_MAX - 1 bytes (the records are
 * shorter) and terminated, and its cas; returns the value's length.
 */

static size_t
ngx_mw_mc_result_copy(memcached_result_st *res, char *value, uint64_t *cas)
{
    size_t  len;

    len = ngx_min(memcached_result_length(res), NGX_MW_MC_VALUE_MAX - 1);

    ngx_memcpy(value, memcached_result_value(res), len);
    value[len] = '\0';
    *cas = memcached_result_cas(res);

    return len;
}


/* From the server that group (not key) names, when group is set. */

static memcached_return_t
ngx_mw_mc_gets_once(memcached_st *m, const char *group, const char *key,
    char *value, size_t *len, uint64_t *cas)
{
    size_t               klen;
    const char          *keys[1];
    memcached_return_t   rc;
    memcached_result_st  result, *res;

    keys[0] = key;
    klen = strlen(key);

    rc = memcached_mget_by_key(m, group, group ? strlen(group) : 0, keys,
                               &klen, 1);
    if (rc != MEMCACHED_SUCCESS) {
        return rc;
    }

    if (memcached_result_create(m, &result) == NULL) {
        return MEMCACHED_MEMORY_ALLOCATION_FAILURE;
    }

    res = memcached_fetch_result(m, &result, &rc);

    if (res == NULL) {
        memcached_result_free(&result);
        return (rc == MEMCACHED_END || rc == MEMCACHED_SUCCESS
                || rc == MEMCACHED_NOTFOUND) ? MEMCACHED_NOTFOUND : rc;
    }

    *len = ngx_mw_mc_result_copy(res, value, cas);

    /* drain the end of the answer */
    while (memcached_fetch_result(m, &result, &rc) != NULL) {
        /* void */
    }

    memcached_result_free(&result);

    return MEMCACHED_SUCCESS;
}


static ngx_uint_t
ngx_mw_mc_failed(memcached_return_t rc)
{
    return rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND
           && rc != MEMCACHED_NOTSTORED && rc != MEMCACHED_DATA_EXISTS
           && rc != MEMCACHED_STORED && rc != MEMCACHED_DELETED
           && rc != MEMCACHED_END;
}


/*
 * A delete, sent now: libmemcached buffers deletes as it does sets (see
 * ngx_mw_mc_get_handle).
 */

static memcached_return_t
ngx_mw_mc_delete(memcached_st *m, const char *key)
{
    memcached_return_t  rc;

    ngx_mw_mc_call(m, key, rc, memcached_delete(m, key, MW_KEY_TEXT_LEN, 0));

    if (rc == MEMCACHED_BUFFERED) {
        rc = memcached_flush_buffers(m);
    }

    return rc;
}


/*
 * A claim just added: new, unless its key was handed off or is in flight
 * where it went while its server was out of the ring.
 */

static ngx_int_t
ngx_mw_mc_fresh(memcached_st *m, ngx_mw_mc_t *mc, ngx_mw_claim_t *c,
    ngx_mw_ingest_t *op, const char *key)
{
    char       value[NGX_MW_MC_VALUE_MAX];
    size_t     len;
    ngx_int_t  moved;

    c->result = NGX_MW_CLAIM_NEW;

    moved = ngx_mw_mc_moved(m, mc, key, op->now, op->dedupe_ttl, value, &len);

    if (moved == NGX_DECLINED || moved == NGX_DONE) {
        return NGX_OK;
    }

    if (moved == NGX_OK && len == 1 && value[0] == 'C') {
        /* handed off while its server was out: a duplicate, marked here */
        (void) memcached_set(m, key, MW_KEY_TEXT_LEN, "C", 1,
                             (time_t) mw_ttl(op->now + op->dedupe_ttl,
                                             op->now),
                             0);
        (void) memcached_flush_buffers(m);
        c->result = NGX_MW_CLAIM_DUPLICATE;
        return NGX_OK;
    }

    /* in flight there, or not known: not ours to hand off now */
    (void) ngx_mw_mc_delete(m, key);

    if (moved == NGX_ERROR) {
        return NGX_ERROR;
    }

    c->result = NGX_MW_CLAIM_BUSY;
    return NGX_OK;
}


/* The claim's token: "I" and its owner in hex; returns its length. */

static size_t
ngx_mw_mc_token(char *mine, uint64_t owner)
{
    return ngx_sprintf((u_char *) mine, "I%016uxL", owner) - (u_char *) mine;
}


static ngx_int_t
ngx_mw_mc_claim(memcached_st *m, ngx_mw_mc_t *mc, ngx_mw_claim_t *c,
    ngx_mw_ingest_t *op, ngx_log_t *log)
{
    int                 tries;
    char                key[MW_KEY_TEXT_LEN + 1], value[NGX_MW_MC_VALUE_MAX];
    char                mine[32];
    size_t              len, mlen;
    uint64_t            cas;
    memcached_return_t  rc;

    mw_key_text(key, MW_KEY_DEDUPE, c->key);
    mlen = ngx_mw_mc_token(mine, op->owner);

    for (tries = 0; tries < 2; tries++) {

        ngx_mw_mc_call(m, key, rc,
                       memcached_add(m, key, MW_KEY_TEXT_LEN, mine, mlen,
                                     op->claim_timeout, 0));

        if (rc == MEMCACHED_SUCCESS) {
            return ngx_mw_mc_fresh(m, mc, c, op, key);
        }

        if (rc != MEMCACHED_NOTSTORED && rc != MEMCACHED_DATA_EXISTS) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "meta_webhook: memcached add failed: %s",
                          memcached_strerror(m, rc));
            return NGX_ERROR;
        }

        rc = ngx_mw_mc_gets(m, key, value, &len, &cas);

        if (rc == MEMCACHED_NOTFOUND) {
            /* released or expired in between: claim it again */
            continue;
        }

        if (rc != MEMCACHED_SUCCESS) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "meta_webhook: memcached get failed: %s",
                          memcached_strerror(m, rc));
            return NGX_ERROR;
        }

        if (len == mlen && ngx_memcmp(value, mine, mlen) == 0) {
            /* our own add landed though its answer was lost */
            c->result = NGX_MW_CLAIM_NEW;
            return NGX_OK;
        }

        if (len == 1 && value[0] == 'C') {
            c->result = NGX_MW_CLAIM_DUPLICATE;
            return NGX_OK;
        }

        /* in flight elsewhere: the event loop looks again shortly */
        c->result = NGX_MW_CLAIM_BUSY;
        return NGX_OK;
    }

    c->result = NGX_MW_CLAIM_BUSY;
    return NGX_OK;
}


/*
 * A contact's record from its value (NULL: absent).  A value that is not
 * a record of ours reads as an empty contact, started afresh.
 */

static void
ngx_mw_mc_contact_value(mw_contact_rec_t *c, const char *value, size_t len)
{
    ngx_memzero(c, sizeof(mw_contact_rec_t));

    if (value && mw_contact_decode(c, value, len) != 0) {
        ngx_memzero(c, sizeof(mw_contact_rec_t));
    }
}


/* What the send path decides on, from a contact's record. */

static void
ngx_mw_mc_contact_state(mw_contact_state_t *cs, const mw_contact_rec_t *c)
{
    cs->window = c->window;
    cs->session = c->session;
    cs->counted = c->counted;
    cs->optin = c->optin;
}


/*
 * A counter from its value (NULL: absent, 0).  When incr or decr leaves
 * fewer digits than the value had, memcached rewrites it in place and pads
 * it with spaces ("10" decremented is "9 "): those are not part of it.
 */

static int64_t
ngx_mw_mc_counter_value(const char *value, size_t len)
{
    int64_t  n;

    if (value == NULL) {
        return 0;
    }

    while (len && value[len - 1] == ' ') {
        len--;
    }

    n = ngx_atoof((u_char *) value, len);

    return n < 0 ? 0 : n;
}


static ngx_int_t
ngx_mw_mc_contact(memcached_st *m, ngx_mw_contact_op_t *co,
    ngx_mw_mc_value_t *ahead, time_t now, ngx_log_t *log)
{
    int                 tries, n;
    u_char              sent[MW_KEY_LEN];
    char                key[MW_KEY_TEXT_LEN + 1], value[NGX_MW_MC_VALUE_MAX];
    char                text[MW_CONTACT_TEXT_MAX + 1];
    size_t              len;
    int64_t             ttl;
    uint64_t            cas;
    mw_contact_rec_t    c;
    memcached_return_t  rc;

    if (co->close) {
        /* a message sent through the path names its own contact */
        mw_key_text(key, MW_KEY_SENT, co->sent);

        rc = ngx_mw_mc_gets(m, key, value, &len, &cas);

        if (rc == MEMCACHED_SUCCESS && len == MW_KEY_HEX_LEN
            && ngx_mw_mc_hex_decode(sent, value) == NGX_OK)
        {
            ngx_memcpy(co->key, sent, MW_KEY_LEN);
        }
    }

    mw_key_text(key, MW_KEY_CONTACT, co->key);

    for (tries = 0; tries < NGX_MW_MC_CAS_TRIES; tries++) {

        if (tries == 0 && ahead && !co->close) {
            /* read with the rest of the batch */
            rc = ahead->found ? MEMCACHED_SUCCESS : MEMCACHED_NOTFOUND;
            len = ahead->len;
            cas = ahead->cas;
            ngx_memcpy(value, ahead->value, len);

        } else {
            len = 0;
            rc = ngx_mw_mc_gets(m, key, value, &len, &cas);
        }

        if (ngx_mw_mc_failed(rc)) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "meta_webhook: memcached get failed: %s",
                          memcached_strerror(m, rc));
            return NGX_ERROR;
        }

        ngx_mw_mc_contact_value(&c, rc == MEMCACHED_SUCCESS ? value : NULL,
                                len);

        if (co->close) {
            if (rc == MEMCACHED_NOTFOUND) {
                co->expires = 0;
                return NGX_OK;
            }

            mw_contact_close(&c, co->from);

        } else {
            mw_contact_message(&c, co->from, (int) co->optin, co->optin_ts);
        }

        n = mw_contact_encode(&c, text, sizeof(text));
        if (n < 0) {
            return NGX_ERROR;
        }

        ttl = mw_ttl(mw_contact_expiry(&c, now), now);

        if (rc == MEMCACHED_NOTFOUND) {
            ngx_mw_mc_call(m, key, rc,
                           memcached_add(m, key, MW_KEY_TEXT_LEN, text, n,
                                         (time_t) ttl, 0));
        } else {
            ngx_mw_mc_call(m, key, rc,
                           memcached_cas(m, key, MW_KEY_TEXT_LEN, text, n,
                                         (time_t) ttl, 0, cas));
        }

        if (rc == MEMCACHED_SUCCESS) {
            co->expires = c.window;
            return NGX_OK;
        }

        if (rc != MEMCACHED_DATA_EXISTS && rc != MEMCACHED_NOTSTORED
            && rc != MEMCACHED_NOTFOUND)
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "meta_webhook: memcached cas failed: %s",
                          memcached_strerror(m, rc));
            return NGX_ERROR;
        }

        /* another node changed the contact meanwhile: read it again */
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "meta_webhook: a contact changed %d times while being "
                  "updated", NGX_MW_MC_CAS_TRIES);

    return NGX_ERROR;
}


static void
ngx_mw_mc_release_new(memcached_st *m, ngx_mw_ingest_t *op)
{
    char        key[MW_KEY_TEXT_LEN + 1];
    ngx_uint_t  i;

    for (i = 0; i < op->nclaims; i++) {
        if (op->claims[i].result == NGX_MW_CLAIM_NEW) {
            mw_key_text(key, MW_KEY_DEDUPE, op->claims[i].key);
            (void) ngx_mw_mc_delete(m, key);
            op->claims[i].result = NGX_MW_CLAIM_BUSY;
        }
    }
}


/*
 * In a thread: one delivery's state work, one command after another (the
 * binary protocol, and what a round could not pipeline).
 */

static void
ngx_mw_mc_ingest_one(memcached_st *m, ngx_mw_mc_t *mc, ngx_mw_ingest_t *op,
    ngx_log_t *log)
{
    ngx_uint_t          i, n;
    ngx_mw_mc_value_t  *ahead;

    op->rc = NGX_ERROR;

    for (i = 0; i < op->nclaims; i++) {
        op->claims[i].result = NGX_MW_CLAIM_BUSY;
    }

    /*
     * A batch: every claim and contact read in one multi-key round trip
     * first, so that what is committed already needs no more, and each
     * contact starts from what was read.  A delivery of one update gains
     * nothing by it: its claim is an add straight away.
     */

    ahead = NULL;
    n = op->nclaims + op->ncontacts;

    if (op->nclaims > 1) {
        ahead = ngx_alloc(n * sizeof(ngx_mw_mc_value_t), log);
    }

    if (ahead) {
        for (i = 0; i < op->nclaims; i++) {
            mw_key_text(ahead[i].key, MW_KEY_DEDUPE, op->claims[i].key);
        }

        for (i = 0; i < op->ncontacts; i++) {
            mw_key_text(ahead[op->nclaims + i].key, MW_KEY_CONTACT,
                        op->contacts[i].key);
        }

        if (ngx_mw_mc_read_ahead(m, ahead, n, log) != NGX_OK) {
            /* each is read on its own below */
            ngx_free(ahead);
            ahead = NULL;
        }
    }

    for (i = 0; i < op->nclaims; i++) {
        if (ahead && ahead[i].found && ahead[i].len == 1
            && ahead[i].value[0] == 'C')
        {
            op->claims[i].result = NGX_MW_CLAIM_DUPLICATE;
            continue;
        }

        if (ngx_mw_mc_claim(m, mc, &op->claims[i], op, log) != NGX_OK)
        {
            goto failed;
        }
    }

    /*
     * A delivery none of whose updates is new changes no contact: its
     * messages moved the windows when they were handed off.
     */

    for (i = 0; i < op->nclaims; i++) {
        if (op->claims[i].result == NGX_MW_CLAIM_NEW) {
            break;
        }
    }

    n = (i == op->nclaims) ? 0 : op->ncontacts;

    for (i = 0; i < n; i++) {
        if (ngx_mw_mc_contact(m, &op->contacts[i],
                              ahead ? &ahead[op->nclaims + i] : NULL,
                              op->now, log)
            != NGX_OK)
        {
            goto failed;
        }
    }

    op->rc = NGX_OK;

    if (ahead) {
        ngx_free(ahead);
    }

    return;

failed:

    ngx_mw_mc_release_new(m, op);

    if (ahead) {
        ngx_free(ahead);
    }
}


/*
 * Corking.  libmemcached buffers only sets and deletes: each add and each
 * cas is a send of its own, a TCP segment, a system call that on a
 * loopback or a busy host also pays for the segment's arrival and for
 * waking memcached.  A round writes its claims, then its get, then its
 * contacts, and waits for nothing in between: so while it writes them its
 * connections are corked (TCP_CORK), and the uncork sends what they hold
 * at once, the claims with the get in one segment, the contacts in
 * another.  Measured: about a tenth less CPU per delivery, a sixth when
 * every message moves its contact's window (docs/operations.md,
 * "Throughput").
 *
 * libmemcached keeps its sockets to itself, but tells each connection's
 * local port (memcached_server_srcport()).  The descriptor with that
 * local port and the server's address and port as its peer's is looked
 * for among the process's once per connection, and known from then on by
 * its socket's cookie (SO_COOKIE, unique while the system runs): a
 * connection made again (after a failure, or with a new ring) is another
 * socket, and the old one's descriptor number, closed, may meanwhile
 * name another of the process's sockets, which must never be corked.  A
 * connection whose socket is not found is not corked.  A server written
 * as a name, not an address, is told by the ports alone: should another
 * thread's connection to another server have the same two ports, it
 * would be corked for the moment of this round's writes, and sent with
 * their uncork, nothing worse.  Nothing is ever read while a connection
 * is corked: the uncork comes right after the get is written, and before
 * whatever else the round does (and Linux sends a corked segment after
 * 200 ms whatever happens).
 */

#if (NGX_MW_MC_CORK)

typedef struct {
    ngx_socket_t                fd;
    uint64_t                    cookie;       /* 0: none known */
    in_port_t                   port;         /* the last looked for */
} ngx_mw_mc_sock_t;

/* a handle's, its user data */
typedef struct {
    ngx_uint_t                  ncorked;
    ngx_socket_t                corked[NGX_MW_RING_MAX];
    ngx_mw_mc_sock_t            socks[NGX_MW_RING_MAX];
} ngx_mw_mc_corks_t;


static void
ngx_mw_mc_corks_attach(memcached_st *m, ngx_log_t *log)
{
    /* without the memory, the handle's connections are not corked */
    (void) memcached_set_user_data(m,
                               ngx_calloc(sizeof(ngx_mw_mc_corks_t), log));
}


static void
ngx_mw_mc_corks_free(memcached_st *m)
{
    void  *corks;

    corks = memcached_get_user_data(m);

    if (corks) {
        ngx_free(corks);
    }
}


static uint64_t
ngx_mw_mc_cookie(ngx_socket_t fd)
{
    uint64_t   cookie;
    socklen_t  len;

    len = sizeof(uint64_t);

    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) == -1
        || len != sizeof(uint64_t))
    {
        return 0;
    }

    return cookie;
}


/* whether fd is the connection of server with local port port */

static ngx_uint_t
ngx_mw_mc_is_socket(ngx_socket_t fd, in_port_t port,
    const memcached_instance_st *server)
{
    size_t           n;
    u_char          *name;
    socklen_t        len;
    in_addr_t        inaddr;
    struct sockaddr  *sa;
    ngx_sockaddr_t    sock;
#if (NGX_HAVE_INET6)
    u_char           inaddr6[16];
#endif

    sa = &sock.sockaddr;
    len = sizeof(ngx_sockaddr_t);

    if (getsockname(fd, sa, &len) == -1
        || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
        || ngx_inet_get_port(sa) != port)
    {
        return 0;
    }

    len = sizeof(ngx_sockaddr_t);

    if (getpeername(fd, sa, &len) == -1
        || ngx_inet_get_port(sa) != memcached_server_port(server))
    {
        return 0;
    }

    /* a server named by its address: that address too */

    name = (u_char *) memcached_server_name(server);
    n = ngx_strlen(name);

    if (sa->sa_family == AF_INET) {
        inaddr = ngx_inet_addr(name, n);

        if (inaddr != INADDR_NONE) {
            return sock.sockaddr_in.sin_addr.s_addr == inaddr;
        }
    }

#if (NGX_HAVE_INET6)
    if (sa->sa_family == AF_INET6
        && ngx_inet6_addr(name, n, inaddr6) == NGX_OK)
    {
        return ngx_memcmp(&sock.sockaddr_in6.sin6_addr, inaddr6, 16) == 0;
    }
#endif

    return 1;
}


/* the socket of the server at position i of m, or -1 */

static ngx_socket_t
ngx_mw_mc_socket(memcached_st *m, ngx_mw_mc_sock_t *sk, uint32_t i)
{
    in_port_t                     port;
    ngx_socket_t                  fd;
    struct rlimit                 rl;
    const memcached_instance_st  *server;

    if (sk->cookie) {
        if (ngx_mw_mc_cookie(sk->fd) == sk->cookie) {
            /* the same socket as last time: still this connection's */
            return sk->fd;
        }

        /* closed: the connection was made again */
        sk->cookie = 0;
        sk->port = 0;
    }

    server = memcached_server_instance_by_position(m, i);
    if (server == NULL) {
        return -1;
    }

    /* 0: not connected yet; -1 (as in_port_t): no socket */
    port = memcached_server_srcport(server);

    if (port == 0 || port == (in_port_t) -1 || port == sk->port) {
        /* not connected, or looked for in vain already */
        return -1;
    }

    sk->port = port;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        return -1;
    }

    for (fd = 0; (rlim_t) fd < rl.rlim_cur; fd++) {
        if (ngx_mw_mc_is_socket(fd, port, server)) {
            sk->fd = fd;
            sk->cookie = ngx_mw_mc_cookie(fd);
            break;
        }
    }

    return sk->cookie ? sk->fd : -1;
}


static void
ngx_mw_mc_cork(memcached_st *m)
{
    uint32_t            i, n;
    ngx_socket_t        fd;
    ngx_mw_mc_corks_t  *ck;

    ck = memcached_get_user_data(m);

    if (ck == NULL) {
        return;
    }

    n = memcached_server_count(m);

    for (i = 0; i < n && i < NGX_MW_RING_MAX; i++) {
        fd = ngx_mw_mc_socket(m, &ck->socks[i], i);

        if (fd != -1 && ck->ncorked < NGX_MW_RING_MAX
            && ngx_tcp_nopush(fd) == 0)
        {
            ck->corked[ck->ncorked++] = fd;
        }
    }
}


/* what the corked connections hold leaves now */

static void
ngx_mw_mc_uncork(memcached_st *m)
{
    ngx_uint_t          i;
    ngx_mw_mc_corks_t  *ck;

    ck = memcached_get_user_data(m);

    if (ck == NULL) {
        return;
    }

    for (i = 0; i < ck->ncorked; i++) {
        (void) ngx_tcp_push(ck->corked[i]);
    }

    ck->ncorked = 0;
}

#endif


/*
 * A set of keys read in one multi-key get (one request per server, sent
 * to all before any answer is read): sorted, each key once, and each
 * answer, in the servers' order, matched back by a binary search.
 */

typedef struct {
    ngx_mw_mc_value_t          *v;
    ngx_uint_t                  n;
    memcached_return_t          rc;           /* of a read that failed */
} ngx_mw_mc_keys_t;


static ngx_int_t
ngx_mw_mc_keys_alloc(ngx_mw_mc_keys_t *ks, ngx_uint_t max, ngx_log_t *log)
{
    ks->n = 0;
    ks->v = NULL;
    ks->rc = MEMCACHED_SUCCESS;

    if (max == 0) {
        return NGX_OK;
    }

    ks->v = ngx_alloc(max * sizeof(ngx_mw_mc_value_t), log);

    return ks->v ? NGX_OK : NGX_ERROR;
}


static int ngx_libc_cdecl
ngx_mw_mc_key_cmp(const void *a, const void *b)
{
    return ngx_strcmp(((ngx_mw_mc_value_t *) a)->key,
                      ((ngx_mw_mc_value_t *) b)->key);
}


static ngx_mw_mc_value_t *
ngx_mw_mc_keys_lookup(ngx_mw_mc_keys_t *ks, const char *text)
{
    ngx_int_t   c;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = ks->n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = ngx_strcmp(ks->v[mid].key, text);

        if (c == 0) {
            return &ks->v[mid];
        }

        if (c < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


static ngx_mw_mc_value_t *
ngx_mw_mc_keys_find(ngx_mw_mc_keys_t *ks, int type, const u_char *key)
{
    char  text[MW_KEY_TEXT_LEN + 1];

    mw_key_text(text, type, key);

    return ngx_mw_mc_keys_lookup(ks, text);
}


static ngx_int_t
ngx_mw_mc_keys_read(memcached_st *m, ngx_mw_mc_keys_t *ks, ngx_log_t *log)
{
    char                  text[MW_KEY_TEXT_LEN + 1];
    char                **keys;
    size_t               *lens;
    ngx_int_t             rv;
    ngx_uint_t            i, j;
    ngx_mw_mc_value_t    *v;
    memcached_return_t    rc;
    memcached_result_st   result, *res;

    if (ks->n == 0) {
        return NGX_OK;
    }

    ngx_qsort(ks->v, ks->n, sizeof(ngx_mw_mc_value_t), ngx_mw_mc_key_cmp);

    for (i = 1, j = 1; i < ks->n; i++) {
        if (ngx_strcmp(ks->v[i].key, ks->v[j - 1].key) != 0) {
            ngx_memcpy(ks->v[j++].key, ks->v[i].key, MW_KEY_TEXT_LEN + 1);
        }
    }

    ks->n = j;

    keys = ngx_alloc(ks->n * (sizeof(char *) + sizeof(size_t)), log);
    if (keys == NULL) {
        ks->rc = MEMCACHED_MEMORY_ALLOCATION_FAILURE;
        return NGX_ERROR;
    }

    lens = (size_t *) (keys + ks->n);

    for (i = 0; i < ks->n; i++) {
        ks->v[i].found = 0;
        ks->v[i].len = 0;
        ks->v[i].cas = 0;
        keys[i] = ks->v[i].key;
        lens[i] = MW_KEY_TEXT_LEN;
    }

    rv = NGX_ERROR;

    rc = memcached_mget(m, (const char * const *) keys, lens, ks->n);

    /* what was corked leaves with the get, before anything is read */
    ngx_mw_mc_uncork(m);

    if (rc != MEMCACHED_SUCCESS) {
        goto done;
    }

    if (memcached_result_create(m, &result) == NULL) {
        rc = MEMCACHED_MEMORY_ALLOCATION_FAILURE;
        goto done;
    }

    while ((res = memcached_fetch_result(m, &result, &rc)) != NULL) {
        if (memcached_result_key_length(res) != MW_KEY_TEXT_LEN) {
            continue;
        }

        ngx_memcpy(text, memcached_result_key_value(res), MW_KEY_TEXT_LEN);
        text[MW_KEY_TEXT_LEN] = '\0';

        v = ngx_mw_mc_keys_lookup(ks, text);

        if (v) {
            v->found = 1;
            v->len = (u_char) ngx_mw_mc_result_copy(res, v->value, &v->cas);
        }
    }

    memcached_result_free(&result);

    if (rc == MEMCACHED_END || rc == MEMCACHED_SUCCESS
        || rc == MEMCACHED_NOTFOUND)
    {
        rv = NGX_OK;
    }

done:

    ngx_free(keys);
    ks->rc = rc;

    return rv;
}


/*
 * n keys read in one multi-key get, each value in its place (the same
 * key may come more than once).
 */

static ngx_int_t
ngx_mw_mc_read_ahead(memcached_st *m, ngx_mw_mc_value_t *v, ngx_uint_t n,
    ngx_log_t *log)
{
    ngx_int_t           rc;
    ngx_uint_t          i;
    ngx_mw_mc_keys_t    ks;
    ngx_mw_mc_value_t  *r;

    if (ngx_mw_mc_keys_alloc(&ks, n, log) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_memcpy(ks.v[ks.n++].key, v[i].key, MW_KEY_TEXT_LEN + 1);
    }

    rc = ngx_mw_mc_keys_read(m, &ks, log);

    for (i = 0; rc == NGX_OK && i < n; i++) {
        r = ngx_mw_mc_keys_lookup(&ks, v[i].key);

        if (r) {
            v[i] = *r;
        }
    }

    if (ks.v) {
        ngx_free(ks.v);
    }

    return rc;
}


/*
 * In a thread: settle one delivery's claims one command after another.  A
 * commit replaces the key by "C" whoever holds it now (the update was
 * handed off); gone (the lease ended, or memcached lost it), it is added
 * anew.  A release deletes the claim only while it is ours.  Returns how
 * many commits found their claim gone.
 */

static ngx_uint_t
ngx_mw_mc_settle_one(memcached_st *m, ngx_mw_mc_settle_t *s, ngx_log_t *log)
{
    char                key[MW_KEY_TEXT_LEN + 1], value[NGX_MW_MC_VALUE_MAX];
    char                mine[32];
    size_t              len, mlen;
    time_t              ttl;
    uint64_t            cas;
    ngx_uint_t          i, lapsed;
    memcached_return_t  rc;

    mlen = ngx_mw_mc_token(mine, s->owner);
    lapsed = 0;
    ttl = (time_t) mw_ttl(ngx_time() + s->ttl, ngx_time());

    for (i = 0; i < s->n; i++) {
        mw_key_text(key, MW_KEY_DEDUPE, s->claims[i].key);

        if (s->commit) {
            ngx_mw_mc_call(m, key, rc,
                           memcached_replace(m, key, MW_KEY_TEXT_LEN, "C", 1,
                                             ttl, 0));

            if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_NOTFOUND) {
                lapsed++;
                ngx_mw_mc_call(m, key, rc,
                               memcached_add(m, key, MW_KEY_TEXT_LEN, "C", 1,
                                             ttl, 0));

                if (rc == MEMCACHED_NOTSTORED) {
                    /* claimed again meanwhile: its holder decides */
                    continue;
                }
            }

        } else {
            rc = ngx_mw_mc_gets(m, key, value, &len, &cas);

            if (rc != MEMCACHED_SUCCESS || len != mlen
                || ngx_memcmp(value, mine, mlen) != 0)
            {
                continue;
            }

            rc = ngx_mw_mc_delete(m, key);
        }

        if (ngx_mw_mc_failed(rc)) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "meta_webhook: memcached could not %s a claim: "
                          "%s; its lease ends it", s->commit ? "commit"
                                                             : "release",
                          memcached_strerror(m, rc));
        }
    }

    return lapsed;
}


static void
ngx_mw_mc_lapsed(ngx_log_t *log, ngx_uint_t lapsed)
{
    if (lapsed) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "meta_webhook: %ui updates were handed off after "
                      "their claims lapsed or memcached lost them; a copy "
                      "that came meanwhile may have been handed off too",
                      lapsed);
    }
}


static void
ngx_mw_mc_lost(ngx_uint_t n, ngx_log_t *log)
{
    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "meta_webhook: memcached could not record the windows of "
                  "%ui messages handed off; a reply to their contact may be "
                  "refused as outside its window until the contact writes "
                  "again", n);
}


static void
ngx_mw_mc_free_checks(ngx_mw_mc_check_t *chk)
{
    ngx_mw_mc_check_t  *next;

    for ( /* void */ ; chk; chk = next) {
        next = chk->next;
        ngx_free(chk);
    }
}


/*
 * Rounds.  The deliveries a worker claims and the claims it settles
 * within one pass of its event loop go to memcached together, in one
 * task of the pool, posted once the pass has handled every event it had:
 * one hand-off to a thread and back for all of them, however many, and
 * their commands pipelined (ngx_mw_mc_pipeline).  A lone delivery is a
 * round of one, sent at once.  With NGX_MW_MC_ROUNDS rounds of a worker
 * in the pool, the next one gathers until one of them is done: under
 * load, rounds grow instead of multiplying, and what a round costs
 * whatever its size (its round trips, the hand-off and its wake-ups) is
 * shared by more deliveries.  (One round at a time makes them larger
 * still, but a server that does not answer then holds up more of them:
 * docs/operations.md, "Throughput".)  One that waits on a server that
 * does not answer holds the next up for NGX_MW_MC_ROUND_WAIT at most.  A
 * round of settles only (the commits and releases of answered deliveries)
 * waits up to NGX_MW_MC_SETTLE_WAIT for a delivery to go with: under load
 * one comes at once, and the commits cost no round of their own.  A
 * worker that stops sends what it gathers at once, and the guard timer
 * keeps it running until its rounds are done.
 */

static void ngx_mw_mc_round_post(ngx_event_t *ev);
static void ngx_mw_mc_guard(ngx_mw_mc_t *mc);
static void ngx_mw_mc_round_guard(ngx_event_t *ev);
static void ngx_mw_mc_round_thread(void *data, ngx_log_t *log);
static void ngx_mw_mc_round_done(ngx_event_t *ev);
static ngx_int_t ngx_mw_mc_pipeline(memcached_st *m, ngx_mw_mc_round_t *rd,
    ngx_log_t *log);
static ngx_int_t ngx_mw_mc_redo(memcached_st *m, const char *key,
    const ngx_mw_mc_msg_t *msg, ngx_log_t *log);


static ngx_mw_mc_round_t *
ngx_mw_mc_gather(ngx_mw_mc_t *mc, ngx_log_t *log)
{
    ngx_mw_mc_round_t  *rd;

    if (mc->round) {
        return mc->round;
    }

    rd = ngx_calloc(sizeof(ngx_mw_mc_round_t), log);
    if (rd == NULL) {
        return NULL;
    }

    rd->mc = mc;
    rd->last = &rd->settles;
    mc->round = rd;

    mc->round_post.handler = ngx_mw_mc_round_post;
    mc->round_post.data = mc;
    mc->round_post.log = ngx_cycle->log;
    ngx_post_event(&mc->round_post, &ngx_posted_events);

    ngx_mw_mc_guard(mc);

    return rd;
}


static void
ngx_mw_mc_guard(ngx_mw_mc_t *mc)
{
    if (!mc->round_guard.timer_set) {
        mc->round_guard.handler = ngx_mw_mc_round_guard;
        mc->round_guard.data = mc;
        mc->round_guard.log = ngx_cycle->log;
        ngx_add_timer(&mc->round_guard, 60000);
    }
}


/* a round to the pool; NGX_ERROR: the pool's queue is full (logged) */

static ngx_int_t
ngx_mw_mc_start(ngx_mw_mc_t *mc, ngx_mw_mc_round_t *rd)
{
    rd->task.ctx = rd;
    rd->task.handler = ngx_mw_mc_round_thread;
    rd->task.event.handler = ngx_mw_mc_round_done;
    rd->task.event.data = rd;
    rd->task.event.log = ngx_cycle->log;

    return ngx_thread_task_post(mc->thread_pool, &rd->task);
}


/*
 * The binary protocol has nothing to pipeline: each delivery or settle is
 * a round of its own, sent at once, as many at a time as the pool has
 * threads, so that one waiting on a server that does not answer holds up
 * no other.
 */

static ngx_mw_mc_round_t *
ngx_mw_mc_alone(ngx_mw_mc_t *mc, ngx_mw_ingest_t *op, ngx_mw_mc_settle_t *s,
    ngx_log_t *log)
{
    ngx_mw_mc_round_t  *rd;

    rd = ngx_calloc(sizeof(ngx_mw_mc_round_t) + sizeof(ngx_mw_ingest_t *),
                    log);
    if (rd == NULL) {
        return NULL;
    }

    rd->mc = mc;
    rd->settles = s;

    if (op) {
        rd->ops = ngx_alloc(sizeof(ngx_mw_ingest_t *), log);
        if (rd->ops == NULL) {
            ngx_free(rd);
            return NULL;
        }

        rd->ops[0] = op;
        rd->nops = 1;
        rd->nalloc = 1;
    }

    if (ngx_mw_mc_start(mc, rd) != NGX_OK) {
        if (rd->ops) {
            ngx_free(rd->ops);
        }

        ngx_free(rd);
        return NULL;
    }

    mc->rounds++;
    ngx_mw_mc_guard(mc);

    return rd;
}


static void
ngx_mw_mc_round_guard(ngx_event_t *ev)
{
    ngx_mw_mc_t *mc = ev->data;

    if (mc->rounds || mc->round) {
        ngx_add_timer(ev, 60000);
    }
}


static void
ngx_mw_mc_round_post(ngx_event_t *ev)
{
    ngx_mw_mc_t *mc = ev->data;

    ngx_uint_t          i;
    ngx_mw_mc_round_t  *rd;

    rd = mc->round;

    if (rd == NULL) {
        return;
    }

    if (mc->rounds >= NGX_MW_MC_ROUNDS && !ev->timedout
        && !ngx_exiting && !ngx_quit && !ngx_terminate)
    {
        /*
         * Posted again when a round is done, or sent anyway after a
         * moment: rounds that wait on a server that does not answer hold
         * up no other longer than that.
         */

        if (!ev->timer_set) {
            ngx_add_timer(ev, NGX_MW_MC_ROUND_WAIT);
        }

        return;
    }

    if (rd->nops == 0 && !ev->timedout
        && !ngx_exiting && !ngx_quit && !ngx_terminate)
    {
        /*
         * Only settles (and read-backs): nothing waits for them, so they
         * wait a moment for a delivery to go with (which posts the round
         * again), instead of a round of their own.
         */

        if (!ev->timer_set) {
            ngx_add_timer(ev, NGX_MW_MC_SETTLE_WAIT);
        }

        return;
    }

    ev->timedout = 0;

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    mc->round = NULL;
    mc->rounds++;

    if (ngx_mw_mc_start(mc, rd) == NGX_OK) {
        return;
    }

    /* nothing was done */

    for (i = 0; i < rd->nops; i++) {
        rd->ops[i]->rc = NGX_ERROR;
    }

    ngx_mw_mc_round_done(&rd->task.event);
}


static void
ngx_mw_mc_round_done(ngx_event_t *ev)
{
    ngx_mw_mc_round_t *rd = ev->data;

    ngx_uint_t           i, n;
    ngx_mw_mc_t         *mc;
    ngx_mw_ingest_t    **ops;
    ngx_mw_mc_check_t  **last;
    ngx_mw_mc_round_t   *next_rd;
    ngx_mw_mc_settle_t  *s, *next;

    mc = rd->mc;
    mc->rounds--;

    ngx_mw_mc_free_checks(rd->checks);

    if (rd->written) {
        next_rd = ngx_mw_mc_gather(mc, ngx_cycle->log);

        if (next_rd) {
            for (last = &next_rd->checks; *last; last = &(*last)->next) {
                /* void */
            }

            *last = rd->written;

        } else {
            ngx_mw_mc_free_checks(rd->written);
        }
    }

    if (mc->round) {
        /* gathered meanwhile: sent at the end of this pass */
        ngx_post_event(&mc->round_post, &ngx_posted_events);

    } else if (mc->rounds == 0 && mc->round_guard.timer_set) {
        ngx_del_timer(&mc->round_guard);
    }

    for (s = rd->settles; s; s = next) {
        next = s->next;
        ngx_free(s);
    }

    ops = rd->ops;
    n = rd->nops;

    ngx_free(rd);

    /* each delivery goes on; what it asks next joins the next round */

    for (i = 0; i < n; i++) {
        ops[i]->done(ops[i]);
    }

    if (ops) {
        ngx_free(ops);
    }
}


static void
ngx_mw_mc_round_thread(void *data, ngx_log_t *log)
{
    ngx_mw_mc_round_t *rd = data;

    ngx_int_t            rc;
    ngx_uint_t           i, lapsed;
    memcached_st        *m;
    ngx_mw_mc_check_t   *chk;
    ngx_mw_mc_settle_t  *s;

    m = ngx_mw_mc_get_handle(rd->mc, log);

    if (m == NULL) {
        for (i = 0; i < rd->nops; i++) {
            rd->ops[i]->rc = NGX_ERROR;
        }

        return;
    }

    if (!rd->mc->binary) {
        rc = ngx_mw_mc_pipeline(m, rd, log);

        /* a pipeline that gave up may have left its claims corked */
        ngx_mw_mc_uncork(m);

        if (rc == NGX_OK) {
            return;
        }
    }

    /*
     * One by one: the binary protocol (whose quiet commands answer their
     * failures), or nothing could be read.  The handle is asked for again
     * each time: a server that keeps failing leaves the ring meanwhile,
     * and what follows goes to the others.
     */

    lapsed = 0;

    for (s = rd->settles; s; s = s->next) {
        m = ngx_mw_mc_get_handle(rd->mc, log);
        if (m == NULL) {
            break;
        }

        lapsed += ngx_mw_mc_settle_one(m, s, log);
    }

    for (i = 0; i < rd->nops; i++) {
        m = ngx_mw_mc_get_handle(rd->mc, log);
        if (m == NULL) {
            rd->ops[i]->rc = NGX_ERROR;
            continue;
        }

        ngx_mw_mc_ingest_one(m, rd->mc, rd->ops[i], log);
    }

    for (chk = rd->checks; chk; chk = chk->next) {
        for (i = 0; i < chk->nmsgs; i++) {
            m = ngx_mw_mc_get_handle(rd->mc, log);

            if (m == NULL
                || ngx_mw_mc_redo(m, chk->key, &chk->msgs[i], log) != NGX_OK)
            {
                ngx_mw_mc_lost(1, log);
            }
        }
    }

    ngx_mw_mc_lapsed(log, lapsed);
}


static ngx_int_t
ngx_http_meta_webhook_mc_ingest(void *state, ngx_mw_ingest_t *op)
{
    ngx_mw_mc_t *mc = state;

    ngx_uint_t           n;
    ngx_mw_ingest_t    **ops;
    ngx_mw_mc_round_t   *rd;

    if (mc->binary) {
        if (ngx_mw_mc_alone(mc, op, NULL, op->log) == NULL) {
            op->rc = NGX_ERROR;
            return NGX_OK;
        }

        return NGX_AGAIN;
    }

    rd = ngx_mw_mc_gather(mc, op->log);
    if (rd == NULL) {
        op->rc = NGX_ERROR;
        return NGX_OK;
    }

    if (rd->nops == rd->nalloc) {
        n = rd->nalloc ? 2 * rd->nalloc : 16;

        ops = ngx_alloc(n * sizeof(ngx_mw_ingest_t *), op->log);
        if (ops == NULL) {
            op->rc = NGX_ERROR;
            return NGX_OK;
        }

        if (rd->ops) {
            ngx_memcpy(ops, rd->ops, rd->nops * sizeof(ngx_mw_ingest_t *));
            ngx_free(rd->ops);
        }

        rd->ops = ops;
        rd->nalloc = n;
    }

    rd->ops[rd->nops++] = op;

    /* a round of settles may be waiting for a delivery: it goes now */
    ngx_post_event(&mc->round_post, &ngx_posted_events);

    return NGX_AGAIN;
}


static void
ngx_http_meta_webhook_mc_settle(void *state, ngx_mw_claim_t *claims,
    ngx_uint_t n, uint64_t owner, ngx_uint_t commit, time_t ttl,
    time_t lease, ngx_log_t *log)
{
    ngx_mw_mc_t *mc = state;

    ngx_mw_mc_round_t   *rd;
    ngx_mw_mc_settle_t  *s;

    /* the request may be gone before the round runs: a copy, on the heap */

    s = ngx_alloc(sizeof(ngx_mw_mc_settle_t) + n * sizeof(ngx_mw_claim_t),
                  log);
    if (s == NULL) {
        return;
    }

    s->claims = (ngx_mw_claim_t *) (s + 1);
    s->n = n;
    s->owner = owner;
    s->commit = commit;
    s->ttl = ttl;
    s->lease = lease;
    s->redo = 0;
    s->late = 0;
    s->next = NULL;

    ngx_memcpy(s->claims, claims, n * sizeof(ngx_mw_claim_t));

    if (mc->binary) {
        if (ngx_mw_mc_alone(mc, NULL, s, log) == NULL) {
            ngx_free(s);
        }

        return;
    }

    rd = ngx_mw_mc_gather(mc, log);
    if (rd == NULL) {
        ngx_free(s);
        return;
    }

    *rd->last = s;
    rd->last = &s->next;
}


/* the position in the handle of the server that holds key */

static uint32_t
ngx_mw_mc_position(memcached_st *m, const char *key)
{
    return memcached_generate_hash(m, key, MW_KEY_TEXT_LEN);
}


/* whether a value read is the claim token mine */

static ngx_uint_t
ngx_mw_mc_holds(ngx_mw_mc_value_t *v, const char *mine, size_t mlen)
{
    return v && v->found && v->len == mlen
           && ngx_memcmp(v->value, mine, mlen) == 0;
}


static ngx_uint_t
ngx_mw_mc_has_new(ngx_mw_ingest_t *op)
{
    ngx_uint_t  i;

    for (i = 0; i < op->nclaims; i++) {
        if (op->claims[i].result == NGX_MW_CLAIM_NEW) {
            return 1;
        }
    }

    return 0;
}


/*
 * The claims of a round's batches (deliveries of several updates) are
 * read first: a retried batch is committed already, and its keys need no
 * add at all.
 */

static ngx_int_t
ngx_mw_mc_pre_read(memcached_st *m, ngx_mw_mc_round_t *rd, ngx_log_t *log)
{
    ngx_int_t           rc;
    ngx_uint_t          i, j, n;
    ngx_mw_claim_t     *c;
    ngx_mw_ingest_t    *op;
    ngx_mw_mc_keys_t    ks;
    ngx_mw_mc_value_t  *v;

    n = 0;

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];
        op->rc = NGX_OK;

        for (j = 0; j < op->nclaims; j++) {
            op->claims[j].result = NGX_MW_CLAIM_BUSY;
        }

        if (op->nclaims > 1) {
            n += op->nclaims;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    if (ngx_mw_mc_keys_alloc(&ks, n, log) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];

        for (j = 0; op->nclaims > 1 && j < op->nclaims; j++) {
            mw_key_text(ks.v[ks.n++].key, MW_KEY_DEDUPE, op->claims[j].key);
        }
    }

    rc = ngx_mw_mc_keys_read(m, &ks, log);

    for (i = 0; rc == NGX_OK && i < rd->nops; i++) {
        op = rd->ops[i];

        for (j = 0; op->nclaims > 1 && j < op->nclaims; j++) {
            c = &op->claims[j];
            v = ngx_mw_mc_keys_find(&ks, MW_KEY_DEDUPE, c->key);

            if (v && v->found && v->len == 1 && v->value[0] == 'C') {
                c->result = NGX_MW_CLAIM_DUPLICATE;
            }
        }
    }

    ngx_free(ks.v);

    return rc;
}


/*
 * every claim still to make, added without waiting for the answers, on
 * corked connections: they leave with the get that reads them back
 */

static ngx_int_t
ngx_mw_mc_add_claims(memcached_st *m, ngx_mw_mc_round_t *rd)
{
    char                key[MW_KEY_TEXT_LEN + 1], mine[32];
    size_t              mlen;
    ngx_int_t           rv;
    ngx_uint_t          i, j, corked;
    ngx_mw_ingest_t    *op;
    memcached_return_t  rc;

    rv = NGX_OK;
    corked = 0;

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 1);

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];
        mlen = ngx_mw_mc_token(mine, op->owner);

        for (j = 0; j < op->nclaims; j++) {
            if (op->claims[j].result != NGX_MW_CLAIM_BUSY) {
                continue;
            }

            if (!corked) {
                ngx_mw_mc_cork(m);
                corked = 1;
            }

            mw_key_text(key, MW_KEY_DEDUPE, op->claims[j].key);

            ngx_mw_mc_call(m, key, rc,
                           memcached_add(m, key, MW_KEY_TEXT_LEN, mine, mlen,
                                         op->claim_timeout, 0));

            if (rc != MEMCACHED_SUCCESS) {
                rv = NGX_ERROR;
                goto done;
            }
        }
    }

done:

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 0);

    return rv;
}


/* a contact as a round changes it */
typedef struct {
    mw_contact_rec_t            rec;
    time_t                      now;
    int                         len;
    ngx_int_t                   first;        /* of its messages, -1: none */
    ngx_int_t                   last;
    ngx_uint_t                  nmsgs;
    ngx_uint_t                  tries;
    unsigned                    touched:1;
    unsigned                    changed:1;    /* to be written */
    unsigned                    written:1;
    unsigned                    redo:1;
    char                        text[MW_CONTACT_TEXT_MAX + 1];
} ngx_mw_mc_change_t;


/* the messages a round applies, chained per contact */
typedef struct {
    ngx_mw_mc_msg_t             msg;
    ngx_int_t                   next;
} ngx_mw_mc_link_t;


typedef struct {
    ngx_mw_mc_keys_t           *ks;
    uint32_t                    failed;       /* servers that did not answer */
    ngx_mw_mc_change_t         *w;
    ngx_mw_mc_link_t           *links;
    ngx_uint_t                  nlinks;
} ngx_mw_mc_changes_t;


/* one message applied to its contact's record, and kept with it */

static ngx_mw_mc_change_t *
ngx_mw_mc_apply(ngx_mw_mc_changes_t *ch, const char *key,
    const ngx_mw_mc_msg_t *msg)
{
    ngx_int_t            l;
    ngx_mw_mc_value_t   *v;
    ngx_mw_mc_change_t  *cw;

    v = ngx_mw_mc_keys_lookup(ch->ks, key);
    if (v == NULL) {
        return NULL;
    }

    cw = &ch->w[v - ch->ks->v];

    if (!cw->touched) {
        ngx_mw_mc_contact_value(&cw->rec, v->found ? v->value : NULL,
                                v->len);
        cw->touched = 1;
        cw->first = -1;
    }

    mw_contact_message(&cw->rec, msg->from, (int) msg->optin, msg->optin_ts);

    if (msg->now > cw->now) {
        cw->now = msg->now;
    }

    l = (ngx_int_t) ch->nlinks++;
    ch->links[l].msg = *msg;
    ch->links[l].next = -1;

    if (cw->first == -1) {
        cw->first = l;

    } else {
        ch->links[cw->last].next = l;
    }

    cw->last = l;
    cw->nmsgs++;

    return cw;
}


/*
 * A contact's message, done on its own with the gets/cas loop: its
 * round's write could not be sent or was replaced twice by other
 * writers, or the round is done one by one.
 */

static ngx_int_t
ngx_mw_mc_redo(memcached_st *m, const char *key, const ngx_mw_mc_msg_t *msg,
    ngx_log_t *log)
{
    ngx_mw_contact_op_t  co;

    ngx_memzero(&co, sizeof(ngx_mw_contact_op_t));

    if (ngx_mw_mc_hex_decode(co.key, key + MW_KEY_TEXT_LEN - MW_KEY_HEX_LEN)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    co.from = msg->from;
    co.optin = msg->optin;
    co.optin_ts = msg->optin_ts;

    return ngx_mw_mc_contact(m, &co, NULL, msg->now, log);
}


/*
 * The contacts: those a previous round wrote, read back with this one's
 * keys (one that holds anything but what was written lost its cas to
 * another writer, and its messages are applied again), and those of this
 * round's deliveries that have a new update.  The messages of each
 * contact applied in turn to the value just read, then one cas (an add
 * when absent) per contact, unless nothing changed; each written one is
 * a check for the next round.
 */

static void
ngx_mw_mc_write_contacts(memcached_st *m, ngx_mw_mc_round_t *rd,
    ngx_mw_mc_changes_t *ch, ngx_log_t *log)
{
    char                 key[MW_KEY_TEXT_LEN + 1];
    size_t               size;
    int64_t              ttl;
    ngx_int_t            l;
    ngx_uint_t           i, j, k, n;
    ngx_mw_ingest_t     *op;
    ngx_mw_mc_msg_t      msg;
    ngx_mw_mc_check_t   *chk, **last;
    ngx_mw_mc_value_t   *v;
    ngx_mw_mc_change_t  *cw;
    ngx_mw_contact_op_t *co;
    memcached_return_t   rc;

    for (chk = rd->checks; chk; chk = chk->next) {
        v = ngx_mw_mc_keys_lookup(ch->ks, chk->key);

        if ((ch->failed >> ngx_mw_mc_position(m, chk->key)) & 1) {
            /* its server did not answer: it is out of the ring soon */
            continue;
        }

        if (v && v->found && v->len == (size_t) chk->len
            && ngx_memcmp(v->value, chk->text, v->len) == 0)
        {
            continue;
        }

        cw = NULL;

        for (i = 0; i < chk->nmsgs; i++) {
            cw = ngx_mw_mc_apply(ch, chk->key, &chk->msgs[i]);
        }

        if (cw && cw->tries < chk->tries + 1) {
            cw->tries = chk->tries + 1;
        }
    }

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];

        if (op->rc != NGX_OK || !ngx_mw_mc_has_new(op)) {
            continue;
        }

        for (j = 0; j < op->ncontacts; j++) {
            co = &op->contacts[j];

            if (co->close) {
                continue;
            }

            msg.from = co->from;
            msg.optin = co->optin;
            msg.optin_ts = co->optin_ts;
            msg.now = op->now;

            mw_key_text(key, MW_KEY_CONTACT, co->key);

            cw = ngx_mw_mc_apply(ch, key, &msg);
            if (cw) {
                co->expires = cw->rec.window;
            }
        }
    }

    last = &rd->written;

    n = 0;

    for (k = 0; k < ch->ks->n; k++) {
        cw = &ch->w[k];
        v = &ch->ks->v[k];

        if (!cw->touched) {
            continue;
        }

        if (cw->tries >= NGX_MW_MC_CHECK_TRIES) {
            /* other writers keep getting there first */
            cw->redo = 1;
            continue;
        }

        cw->len = mw_contact_encode(&cw->rec, cw->text, sizeof(cw->text));

        if (cw->len < 0) {
            cw->redo = 1;
            continue;
        }

        /* an opt-in is kept from the latest message: its TTL moves on */

        if (v->found && (size_t) cw->len == v->len
            && ngx_memcmp(cw->text, v->value, v->len) == 0
            && cw->rec.optin == MW_OPTIN_NONE)
        {
            continue;
        }

        cw->changed = 1;
        n++;
    }

    if (n > 1) {
        /* uncorked by the round's flush */
        ngx_mw_mc_cork(m);
    }

    for (k = 0; n && k < ch->ks->n; k++) {
        cw = &ch->w[k];
        v = &ch->ks->v[k];

        if (!cw->changed) {
            continue;
        }

        ttl = mw_ttl(mw_contact_expiry(&cw->rec, cw->now), cw->now);

        if (v->found) {
            ngx_mw_mc_call(m, v->key, rc,
                           memcached_cas(m, v->key, MW_KEY_TEXT_LEN, cw->text,
                                         cw->len, (time_t) ttl, 0, v->cas));

        } else {
            ngx_mw_mc_call(m, v->key, rc,
                           memcached_add(m, v->key, MW_KEY_TEXT_LEN, cw->text,
                                         cw->len, (time_t) ttl, 0));
        }

        if (rc != MEMCACHED_SUCCESS) {
            cw->redo = 1;
            continue;
        }

        /* read back with the next round */

        size = sizeof(ngx_mw_mc_check_t)
               + (cw->nmsgs - 1) * sizeof(ngx_mw_mc_msg_t);

        chk = ngx_alloc(size, log);
        if (chk == NULL) {
            continue;
        }

        ngx_memcpy(chk->key, v->key, MW_KEY_TEXT_LEN + 1);
        ngx_memcpy(chk->text, cw->text, cw->len);
        chk->len = cw->len;
        chk->tries = cw->tries;
        chk->nmsgs = 0;

        for (l = cw->first; l != -1; l = ch->links[l].next) {
            chk->msgs[chk->nmsgs++] = ch->links[l].msg;
        }

        chk->next = NULL;
        *last = chk;
        last = &chk->next;
        cw->written = 1;
    }
}


static ngx_uint_t
ngx_mw_mc_on(memcached_st *m, uint32_t failed, int type, const u_char *key)
{
    char  text[MW_KEY_TEXT_LEN + 1];

    mw_key_text(text, type, key);

    return (failed >> ngx_mw_mc_position(m, text)) & 1;
}


/* the server of a key expected and not read, counted as failing once */

static uint32_t
ngx_mw_mc_missing(memcached_st *m, ngx_mw_mc_keys_t *ks, const char *key,
    uint32_t failed)
{
    uint32_t            pos;
    ngx_mw_mc_value_t  *v;

    v = ngx_mw_mc_keys_lookup(ks, key);

    if (v && v->found) {
        return 0;
    }

    pos = ngx_mw_mc_position(m, key);

    if (pos >= 32 || (failed & ((uint32_t) 1 << pos))) {
        return 0;
    }

    ngx_mw_mc_fault(m, key, ks->rc);

    return (uint32_t) 1 << pos;
}


/*
 * A round's read that failed: the servers that did not answer are those
 * of keys that must be there and were not found: claims the round has
 * just added (a server that answers returns such a key: ours, or the one
 * that was there), claims to commit, contacts the last round wrote.  Each
 * counts as a failure of its server, as a call of its own would, and the
 * deliveries with a key on one of them fail (503, retried by Meta once
 * the server is out of the ring); the others go on with what was read,
 * not held up again by a server that does not answer.  When only
 * contacts are missing, their servers are suspect: the deliveries with a
 * key there fail, and no failure is counted.  0: none at all (the round
 * is done one by one).
 */

static uint32_t
ngx_mw_mc_unanswered(memcached_st *m, ngx_mw_mc_round_t *rd,
    ngx_mw_mc_keys_t *ks)
{
    char                 key[MW_KEY_TEXT_LEN + 1];
    uint32_t             failed, pos;
    ngx_uint_t           i, j;
    ngx_mw_ingest_t     *op;
    ngx_mw_mc_value_t   *v;
    ngx_mw_mc_check_t   *chk;
    ngx_mw_mc_settle_t  *s;

    failed = 0;

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];

        for (j = 0; j < op->nclaims; j++) {
            if (op->claims[j].result == NGX_MW_CLAIM_BUSY) {
                mw_key_text(key, MW_KEY_DEDUPE, op->claims[j].key);
                failed |= ngx_mw_mc_missing(m, ks, key, failed);
            }
        }
    }

    /* a claim committed holds "C", a contact written its record */

    for (s = rd->settles; s; s = s->next) {
        for (j = 0; s->commit && j < s->n; j++) {
            mw_key_text(key, MW_KEY_DEDUPE, s->claims[j].key);
            failed |= ngx_mw_mc_missing(m, ks, key, failed);
        }
    }

    for (chk = rd->checks; chk; chk = chk->next) {
        failed |= ngx_mw_mc_missing(m, ks, chk->key, failed);
    }

    if (failed == 0) {
        /*
         * Only contacts can be missing: absent, or on the server that did
         * not answer.  Their servers are suspect, not counted as failing.
         */

        for (i = 0; i < rd->nops; i++) {
            op = rd->ops[i];

            for (j = 0; j < op->ncontacts; j++) {
                mw_key_text(key, MW_KEY_CONTACT, op->contacts[j].key);
                v = ngx_mw_mc_keys_lookup(ks, key);

                pos = ngx_mw_mc_position(m, key);

                if ((v == NULL || !v->found) && pos < 32) {
                    failed |= (uint32_t) 1 << pos;
                }
            }
        }
    }

    for (i = 0; failed && i < rd->nops; i++) {
        op = rd->ops[i];

        for (j = 0; op->rc == NGX_OK && j < op->nclaims; j++) {
            if (op->claims[j].result != NGX_MW_CLAIM_DUPLICATE
                && ngx_mw_mc_on(m, failed, MW_KEY_DEDUPE, op->claims[j].key))
            {
                op->rc = NGX_ERROR;
            }
        }

        for (j = 0; op->rc == NGX_OK && j < op->ncontacts; j++) {
            if (ngx_mw_mc_on(m, failed, MW_KEY_CONTACT,
                             op->contacts[j].key))
            {
                op->rc = NGX_ERROR;
            }
        }
    }

    return failed;
}


/*
 * A round's commits: sets of "C", noreply, buffered: they leave with the
 * round's first command that is sent (its first add, or its get), or with
 * the flush at its end.  The claims are not read before they are
 * replaced (the round's get reads back the "C" only), so a commit made
 * after its lease ended is told by the time ("late"): the update may have
 * been handed off by another delivery too (the lapsed warning).
 * NGX_ERROR: one could not be buffered, and they are all made again one
 * by one.
 */

static ngx_int_t
ngx_mw_mc_commit_all(memcached_st *m, ngx_mw_mc_round_t *rd)
{
    char                 key[MW_KEY_TEXT_LEN + 1];
    time_t               now, ttl;
    ngx_int_t            rv;
    ngx_uint_t           j;
    ngx_mw_mc_settle_t  *s;
    memcached_return_t   rc;

    rv = NGX_OK;
    now = ngx_time();

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 1);

    for (s = rd->settles; s; s = s->next) {
        if (!s->commit) {
            continue;
        }

        ttl = (time_t) mw_ttl(now + s->ttl, now);

        s->late = (s->lease && now > s->lease);

        for (j = 0; j < s->n; j++) {
            mw_key_text(key, MW_KEY_DEDUPE, s->claims[j].key);

            ngx_mw_mc_call(m, key, rc,
                           memcached_set(m, key, MW_KEY_TEXT_LEN, "C", 1,
                                         ttl, 0));

            if (rc != MEMCACHED_SUCCESS) {
                rv = NGX_ERROR;
            }
        }
    }

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 0);

    return rv;
}


/*
 * A round's commands, pipelined (ASCII):
 *
 *   1. the commits of the deliveries the last rounds answered, each a set
 *      of "C", buffered (ngx_mw_mc_commit_all);
 *   2. the claims, each an add sent without waiting for its answer
 *      ("noreply"), after a read of the batches' claims (a retried batch
 *      needs no add), on corked connections (see "Corking"): the commits
 *      and the claims leave with the get;
 *   3. one multi-key get of the claims, the contacts, the keys committed
 *      and the contacts the previous round wrote: a claim that holds its
 *      delivery's token is new (memcached answers a connection's commands
 *      in order, so the add came first), "C" a duplicate, anything else
 *      in flight elsewhere (busy: the delivery looks again shortly); a
 *      key committed that does not hold "C" is committed again;
 *   4. the contacts, each a cas with the value just read, noreply, corked
 *      again when there are several (ngx_mw_mc_write_contacts).
 *
 * The deliveries are answered then: one round trip however many, and a
 * TCP segment for the claims and the get, another for the contacts, per
 * server.  The contacts written are
 * read back by the next round, which the checks start if nothing else
 * does.  NGX_DECLINED: step 2 or 3 failed, and the round is done one by
 * one (what it added is found to be its own).
 */

static ngx_int_t
ngx_mw_mc_pipeline(memcached_st *m, ngx_mw_mc_round_t *rd, ngx_log_t *log)
{
    char                  mine[32];
    size_t                mlen;
    uint32_t              failed;
    ngx_int_t             l;
    ngx_uint_t            i, j, n, k, lapsed, recommit, gathered;
    ngx_mw_claim_t       *c;
    ngx_mw_ingest_t      *op;
    ngx_mw_mc_keys_t      ks;
    ngx_mw_mc_check_t    *chk;
    ngx_mw_mc_value_t    *v;
    ngx_mw_mc_settle_t   *s;
    ngx_mw_mc_changes_t   ch;
    ngx_mw_contact_op_t  *co;

    recommit = (ngx_mw_mc_commit_all(m, rd) != NGX_OK);

    if (ngx_mw_mc_pre_read(m, rd, log) != NGX_OK
        || ngx_mw_mc_add_claims(m, rd) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    n = 0;
    ch.nlinks = 0;

    for (i = 0; i < rd->nops; i++) {
        n += rd->ops[i]->nclaims + rd->ops[i]->ncontacts;
        ch.nlinks += rd->ops[i]->ncontacts;
    }

    for (s = rd->settles; s; s = s->next) {
        n += s->commit ? s->n : 0;
    }

    for (chk = rd->checks; chk; chk = chk->next) {
        n++;
        ch.nlinks += chk->nmsgs;
    }

    if (ngx_mw_mc_keys_alloc(&ks, n, log) != NGX_OK) {
        return NGX_DECLINED;
    }

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];

        for (j = 0; j < op->nclaims; j++) {
            if (op->claims[j].result == NGX_MW_CLAIM_BUSY) {
                mw_key_text(ks.v[ks.n++].key, MW_KEY_DEDUPE,
                            op->claims[j].key);
            }
        }

        for (j = 0; j < op->ncontacts; j++) {
            if (!op->contacts[j].close) {
                mw_key_text(ks.v[ks.n++].key, MW_KEY_CONTACT,
                            op->contacts[j].key);
            }
        }
    }

    for (s = rd->settles; s; s = s->next) {
        for (j = 0; s->commit && j < s->n; j++) {
            mw_key_text(ks.v[ks.n++].key, MW_KEY_DEDUPE, s->claims[j].key);
        }
    }

    for (chk = rd->checks; chk; chk = chk->next) {
        ngx_memcpy(ks.v[ks.n++].key, chk->key, MW_KEY_TEXT_LEN + 1);
    }

    failed = 0;

    if (ngx_mw_mc_keys_read(m, &ks, log) != NGX_OK) {
        /*
         * A connection that died with its server's restart fails at once:
         * the round is done one by one, each call reconnecting.  A server
         * that does not answer fails after poll_timeout: not again.
         */
        failed = (ks.rc == MEMCACHED_TIMEOUT)
                 ? ngx_mw_mc_unanswered(m, rd, &ks) : 0;

        if (failed == 0) {
            if (ks.v) {
                ngx_free(ks.v);
            }

            return NGX_DECLINED;
        }

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "meta_webhook: memcached read failed: %s",
                      memcached_strerror(m, ks.rc));
    }

    /*
     * The commits, read back: "C" proves that memcached has them (a
     * connection that died with its server's restart takes the commands
     * written on it along, noreply or not).  Any other: made again, one
     * by one; not on a server that did not answer, which would only be
     * waited for again (its commits are written; it leaves the ring).
     */

    for (s = rd->settles; s; s = s->next) {
        for (j = 0; s->commit && !s->redo && j < s->n; j++) {
            v = ngx_mw_mc_keys_find(&ks, MW_KEY_DEDUPE, s->claims[j].key);

            if ((v == NULL || !v->found || v->len != 1 || v->value[0] != 'C')
                && !(v && ((failed >> ngx_mw_mc_position(m, v->key)) & 1)))
            {
                s->redo = 1;
            }
        }
    }

    /* the claims */

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];
        mlen = ngx_mw_mc_token(mine, op->owner);

        for (j = 0; j < op->nclaims; j++) {
            c = &op->claims[j];

            if (c->result != NGX_MW_CLAIM_BUSY) {
                continue;
            }

            v = ngx_mw_mc_keys_find(&ks, MW_KEY_DEDUPE, c->key);

            if (ngx_mw_mc_holds(v, mine, mlen)) {
                if (op->rc != NGX_OK) {
                    /* given back below */
                    c->result = NGX_MW_CLAIM_NEW;

                } else if (ngx_mw_mc_fresh(m, rd->mc, c, op, v->key)
                           != NGX_OK)
                {
                    op->rc = NGX_ERROR;
                }

            } else if (v && v->found && v->len == 1 && v->value[0] == 'C') {
                c->result = NGX_MW_CLAIM_DUPLICATE;
            }

            /* else another delivery holds it, or just let it go: busy */
        }

        if (op->rc != NGX_OK) {
            ngx_mw_mc_release_new(m, op);
        }
    }

    /* the contacts: writes, answers not awaited */

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 1);

    ch.ks = &ks;
    ch.failed = failed;
    ch.w = ks.n ? ngx_calloc(ks.n * sizeof(ngx_mw_mc_change_t), log) : NULL;
    ch.links = ch.nlinks ? ngx_alloc(ch.nlinks * sizeof(ngx_mw_mc_link_t),
                                     log)
                         : NULL;

    /* memory to gather the contacts; without it, each on its own below */
    gathered = (ch.w != NULL && (ch.links != NULL || ch.nlinks == 0));
    ch.nlinks = 0;

    if (gathered) {
        ngx_mw_mc_write_contacts(m, rd, &ch, log);
    }

    /*
     * What is still buffered (commits on a server the round sent nothing
     * else to); if it fails (a connection that died), the commits are
     * made again one by one, each call reconnecting.
     */

    if (memcached_flush_buffers(m) != MEMCACHED_SUCCESS) {
        recommit = 1;
    }

    ngx_mw_mc_uncork(m);

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NOREPLY, 0);

    lapsed = 0;

    for (s = rd->settles; s; s = s->next) {
        if (!s->commit) {
            continue;
        }

        if (recommit || s->redo) {
            /* what they find tells the lapsed, not the time */
            lapsed += ngx_mw_mc_settle_one(m, s, log);

        } else if (s->late) {
            lapsed += s->n;
        }
    }

    /* what could not be pipelined: one by one */

    if (!gathered) {
        for (chk = rd->checks; chk; chk = chk->next) {
            for (j = 0; j < chk->nmsgs; j++) {
                if (ngx_mw_mc_redo(m, chk->key, &chk->msgs[j], log)
                    != NGX_OK)
                {
                    ngx_mw_mc_lost(1, log);
                }
            }
        }
    }

    for (k = 0; gathered && k < ks.n; k++) {
        for (l = ch.w[k].redo ? ch.w[k].first : -1;
             l != -1;
             l = ch.links[l].next)
        {
            if (ngx_mw_mc_redo(m, ks.v[k].key, &ch.links[l].msg, log)
                != NGX_OK)
            {
                ngx_mw_mc_lost(1, log);
            }
        }
    }

    for (i = 0; i < rd->nops; i++) {
        op = rd->ops[i];

        if (op->rc != NGX_OK || !ngx_mw_mc_has_new(op)) {
            continue;
        }

        for (j = 0; j < op->ncontacts; j++) {
            co = &op->contacts[j];

            if (!co->close && gathered) {
                continue;
            }

            if (ngx_mw_mc_contact(m, co, NULL, op->now, log) != NGX_OK) {
                op->rc = NGX_ERROR;
                ngx_mw_mc_release_new(m, op);
                break;
            }
        }
    }

    for (s = rd->settles; s; s = s->next) {
        if (!s->commit) {
            (void) ngx_mw_mc_settle_one(m, s, log);
        }
    }

    ngx_mw_mc_lapsed(log, lapsed);

    if (ch.w) {
        ngx_free(ch.w);
    }

    if (ch.links) {
        ngx_free(ch.links);
    }

    ngx_free(ks.v);

    return NGX_OK;
}


/*
 * The send path's operations.  With this backend they block, and so are
 * called in threads only: the send's own task around its libcurl call,
 * and small tasks for the session query and the status page.
 */

static ngx_int_t
ngx_mw_mc_read_contact(memcached_st *m, u_char *key, mw_contact_rec_t *c,
    uint64_t *cas, ngx_uint_t *found)
{
    char                text[MW_KEY_TEXT_LEN + 1], value[NGX_MW_MC_VALUE_MAX];
    size_t              len;
    memcached_return_t  rc;

    mw_key_text(text, MW_KEY_CONTACT, key);
    ngx_memzero(c, sizeof(mw_contact_rec_t));

    rc = ngx_mw_mc_gets(m, text, value, &len, cas);

    if (rc == MEMCACHED_NOTFOUND) {
        *found = 0;
        return NGX_OK;
    }

    if (rc != MEMCACHED_SUCCESS) {
        return NGX_ERROR;
    }

    *found = 1;
    ngx_mw_mc_contact_value(c, value, len);

    return NGX_OK;
}


/* A counter's value: absent is 0. */

static ngx_int_t
ngx_mw_mc_read_counter(memcached_st *m, u_char *key, int64_t *value)
{
    char                text[MW_KEY_TEXT_LEN + 1], v[NGX_MW_MC_VALUE_MAX];
    size_t              len;
    uint64_t            cas;
    memcached_return_t  rc;

    mw_key_text(text, MW_KEY_COUNTER, key);

    len = 0;
    rc = ngx_mw_mc_gets(m, text, v, &len, &cas);

    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        return NGX_ERROR;
    }

    *value = ngx_mw_mc_counter_value(rc == MEMCACHED_SUCCESS ? v : NULL,
                                     len);

    return NGX_OK;
}


/*
 * Counts one in a counter and says whether it stayed within limit (0: no
 * limit).  incr is atomic on the server, so of two nodes racing for the
 * last conversation one gets limit + 1, gives it back and is refused.
 */

static ngx_int_t
ngx_mw_mc_count(memcached_st *m, u_char *key, int64_t end, time_t now,
    int64_t limit, int64_t *value)
{
    int                 tries;
    char                text[MW_KEY_TEXT_LEN + 1];
    uint64_t            v;
    memcached_return_t  rc;

    mw_key_text(text, MW_KEY_COUNTER, key);

    for (tries = 0; tries < 2; tries++) {
        ngx_mw_mc_call(m, text, rc,
                       memcached_increment(m, text, MW_KEY_TEXT_LEN, 1, &v));

        if (rc == MEMCACHED_SUCCESS) {
            *value = (int64_t) v;

            if (limit > 0 && *value > limit) {
                (void) memcached_decrement(m, text, MW_KEY_TEXT_LEN, 1, &v);
                return NGX_DECLINED;
            }

            return NGX_OK;
        }

        if (rc != MEMCACHED_NOTFOUND) {
            return NGX_ERROR;
        }

        /* the period's first: kept a day past its end */
        ngx_mw_mc_call(m, text, rc,
                       memcached_add(m, text, MW_KEY_TEXT_LEN, "0", 1,
                                     (time_t) mw_ttl(end + 86400, now), 0));

        if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTSTORED
            && rc != MEMCACHED_DATA_EXISTS)
        {
            return NGX_ERROR;
        }
    }

    return NGX_ERROR;
}


static void
ngx_mw_mc_uncount(memcached_st *m, u_char *key)
{
    char      text[MW_KEY_TEXT_LEN + 1];
    uint64_t  v;

    mw_key_text(text, MW_KEY_COUNTER, key);

    /* memcached's decr stops at 0 */
    (void) memcached_decrement(m, text, MW_KEY_TEXT_LEN, 1, &v);
}


/*
 * Moves the session's count marks (counted, pending) from what "from" has
 * to the values given, if the contact still has that session and those
 * marks: NGX_DECLINED when another send or a delivery changed them.  With
 * the cas "from" was read with, the first try needs no read.
 */

static ngx_int_t
ngx_mw_mc_mark(memcached_st *m, u_char *key, const mw_contact_rec_t *from,
    uint64_t cas, int64_t counted, int64_t pending, time_t now)
{
    int                 tries, n;
    char                text[MW_KEY_TEXT_LEN + 1];
    char                value[MW_CONTACT_TEXT_MAX + 1];
    ngx_uint_t          found;
    mw_contact_rec_t    c;
    memcached_return_t  rc;

    mw_key_text(text, MW_KEY_CONTACT, key);

    for (tries = 0; tries < NGX_MW_MC_CAS_TRIES; tries++) {

        if (cas) {
            c = *from;
            found = 1;

        } else if (ngx_mw_mc_read_contact(m, key, &c, &cas, &found)
                   != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!found || c.session != from->session
            || c.counted != from->counted || c.pending != from->pending)
        {
            return NGX_DECLINED;
        }

        c.counted = counted;
        c.pending = pending;

        n = mw_contact_encode(&c, value, sizeof(value));
        if (n < 0) {
            return NGX_ERROR;
        }

        ngx_mw_mc_call(m, text, rc,
                       memcached_cas(m, text, MW_KEY_TEXT_LEN, value, n,
                                     (time_t) mw_ttl(mw_contact_expiry(&c,
                                                                       now),
                                                     now),
                                     0, cas));

        if (rc == MEMCACHED_SUCCESS) {
            return NGX_OK;
        }

        if (rc != MEMCACHED_DATA_EXISTS && rc != MEMCACHED_NOTFOUND) {
            return NGX_ERROR;
        }

        cas = 0;
    }

    return NGX_ERROR;
}


/*
 * Another send is counting this session's conversation right now: its
 * pending mark is of this session and recent.  One that is not finished
 * within NGX_MW_MC_PENDING_TTL is taken for lost (its nginx stopped).
 */

static ngx_uint_t
ngx_mw_mc_pending(mw_contact_rec_t *c, time_t now)
{
    return c->pending != 0
           && c->counted < c->session
           && c->pending >= c->session
           && c->pending + NGX_MW_MC_PENDING_TTL >= (int64_t) now;
}


/*
 * The two counters and the contact, waiting for a send of the same
 * session that is counting it: its outcome decides this one (counted: no
 * count needed; refused: the limit decides again).  A send marks its
 * session pending before it counts; the counters and the contact are read
 * in one round trip, so a count may be seen before its mark: a refusal is
 * checked again by the caller.
 */

static ngx_int_t
ngx_mw_mc_read_send(memcached_st *m, ngx_mw_send_op_t *op,
    mw_contact_rec_t *c, uint64_t *cas)
{
    ngx_uint_t          found, polls;
    ngx_mw_mc_value_t   v[3];

    mw_key_text(v[0].key, MW_KEY_COUNTER, op->period);
    mw_key_text(v[1].key, MW_KEY_COUNTER, op->day);
    mw_key_text(v[2].key, MW_KEY_CONTACT, op->contact);

    for (polls = 0; /* void */; polls++) {

        if (ngx_mw_mc_read_ahead(m, v, 3, op->log) == NGX_OK) {
            op->limits.used = ngx_mw_mc_counter_value(
                                  v[0].found ? v[0].value : NULL, v[0].len);
            op->limits.daily_used = ngx_mw_mc_counter_value(
                                  v[1].found ? v[1].value : NULL, v[1].len);
            ngx_mw_mc_contact_value(c, v[2].found ? v[2].value : NULL,
                                    v[2].len);
            *cas = v[2].found ? v[2].cas : 0;

        } else {
            /* one by one, with the failures counted and retried */

            if (ngx_mw_mc_read_counter(m, op->period, &op->limits.used)
                != NGX_OK
                || ngx_mw_mc_read_counter(m, op->day, &op->limits.daily_used)
                   != NGX_OK
                || ngx_mw_mc_read_contact(m, op->contact, c, cas, &found)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (!found) {
                *cas = 0;
            }
        }

        if (!ngx_mw_mc_pending(c, op->now)
            || polls == NGX_MW_MC_PENDING_POLLS)
        {
            break;
        }

        ngx_msleep(10);
    }

    ngx_mw_mc_contact_state(&op->cs, c);
    op->counted = c->counted;

    return NGX_OK;
}


/*
 * A send's decision across the fleet.  Counters are memcached's atomic
 * incr, checked against the limit after it; the session's mark is the
 * contact's record, changed with cas.  A send that opens a session first
 * marks it pending, then counts, then marks it counted (or clears the
 * pending mark when the limit refused): a concurrent send of the same
 * session waits for that outcome instead of taking the limit's answer
 * for its own.
 */

static ngx_int_t
ngx_http_meta_webhook_mc_reserve(void *state, ngx_mw_send_op_t *op)
{
    ngx_mw_mc_t *mc = state;

    int64_t            v;
    uint64_t           cas, rcas;
    ngx_int_t          rc;
    ngx_uint_t         tries, period_counted, rechecked, found;
    memcached_st      *m;
    mw_contact_rec_t   c, p, r;

    op->rc = NGX_ERROR;

    m = ngx_mw_mc_get_handle(mc, op->log);
    if (m == NULL) {
        return NGX_OK;
    }

    rechecked = 0;

    for (tries = 0; /* void */; tries++) {

        if (ngx_mw_mc_read_send(m, op, &c, &cas) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, op->log, 0,
                          "meta_webhook: memcached could not be read for a "
                          "send");
            return NGX_OK;
        }

        mw_send_decide(&op->cs, &op->limits, (int) op->is_template,
                       (int64_t) op->now, &op->d);

        if (op->d.verdict == MW_SEND_LIMIT && !rechecked) {
            /*
             * The counters and the contact were read at once, maybe from
             * two servers: the count that refuses may be a concurrent
             * send's of this very session, whose pending mark the contact
             * did not show yet.  Read after the counters, the contact
             * shows it.
             */
            rechecked = 1;

            if (ngx_mw_mc_read_contact(m, op->contact, &r, &rcas, &found)
                != NGX_OK)
            {
                ngx_log_error(NGX_LOG_ERR, op->log, 0,
                              "meta_webhook: memcached could not be read "
                              "for a send");
                return NGX_OK;
            }

            if (r.session != c.session || r.counted != c.counted
                || r.pending != c.pending)
            {
                continue;
            }
        }

        if (op->d.verdict != MW_SEND_ALLOW || !op->d.session) {
            break;
        }

        /* the session's first: claim its count */

        op->mark = op->now > op->cs.session ? op->now : op->cs.session;

        rc = ngx_mw_mc_mark(m, op->contact, &c, cas, c.counted, op->mark,
                            op->now);

        if (rc == NGX_OK) {
            break;
        }

        if (rc != NGX_DECLINED || tries == NGX_MW_MC_CAS_TRIES) {
            ngx_log_error(NGX_LOG_ERR, op->log, 0,
                          "meta_webhook: memcached: the session's count "
                          "could not be marked for a send");
            return NGX_OK;
        }

        /* another send or a delivery changed the contact: look again */
    }

    op->rc = NGX_OK;

    if (op->d.verdict != MW_SEND_ALLOW) {
        return NGX_OK;
    }

    /* the record as marked pending, for the moves below */
    p = c;
    p.pending = op->d.session ? op->mark : c.pending;

    period_counted = 0;

    if (op->d.conversation) {
        rc = ngx_mw_mc_count(m, op->period, op->period_end, op->now,
                             op->limits.limit, &v);

        if (rc == NGX_DECLINED) {
            /* another node took the last one meanwhile */
            op->limits.used = v;
            op->d.verdict = MW_SEND_LIMIT;
            goto refused;
        }

        if (rc != NGX_OK) {
            op->rc = NGX_ERROR;
            goto refused;
        }

        period_counted = 1;
    }

    if (op->d.business_initiated) {
        rc = ngx_mw_mc_count(m, op->day, op->day_end, op->now,
                             op->limits.daily_limit, &v);

        if (rc != NGX_OK) {
            if (period_counted) {
                ngx_mw_mc_uncount(m, op->period);
            }

            if (rc == NGX_DECLINED) {
                op->limits.daily_used = v;
                op->d.verdict = MW_SEND_DAILY_LIMIT;

            } else {
                op->rc = NGX_ERROR;
            }

            goto refused;
        }
    }

    if (op->d.session) {
        rc = ngx_mw_mc_mark(m, op->contact, &p, 0, op->mark, 0, op->now);

        if (rc == NGX_ERROR) {
            /*
             * Counted, but the mark stays pending: a concurrent send
             * waits out NGX_MW_MC_PENDING_TTL at most, then counts the
             * session again; more counted, never less.
             */
            ngx_log_error(NGX_LOG_WARN, op->log, 0,
                          "meta_webhook: memcached: the session's count "
                          "could not be marked done");
        }

        /* NGX_DECLINED: the contact wrote again since, a new session */
    }

    return NGX_OK;

refused:

    if (op->d.session) {
        /* give the session back, for the next send to decide */
        (void) ngx_mw_mc_mark(m, op->contact, &p, 0, c.counted, 0, op->now);
    }

    op->d.conversation = 0;
    op->d.business_initiated = 0;
    op->d.session = 0;

    return NGX_OK;
}


static void
ngx_http_meta_webhook_mc_unreserve(void *state, ngx_mw_send_op_t *op)
{
    ngx_mw_mc_t *mc = state;

    memcached_st      *m;
    mw_contact_rec_t   c;

    if (op->rc != NGX_OK || op->d.verdict != MW_SEND_ALLOW) {
        return;
    }

    m = ngx_mw_mc_get_handle(mc, op->log);
    if (m == NULL) {
        return;
    }

    if (op->d.conversation) {
        ngx_mw_mc_uncount(m, op->period);
    }

    if (op->d.business_initiated) {
        ngx_mw_mc_uncount(m, op->day);
    }

    if (op->d.session) {
        ngx_memzero(&c, sizeof(mw_contact_rec_t));
        c.session = op->cs.session;
        c.counted = op->mark;

        (void) ngx_mw_mc_mark(m, op->contact, &c, 0, op->counted, 0,
                              op->now);
    }
}


static ngx_int_t
ngx_http_meta_webhook_mc_contact(void *state, u_char *key,
    mw_contact_state_t *cs)
{
    ngx_mw_mc_t *mc = state;

    uint64_t           cas;
    ngx_uint_t         found;
    memcached_st      *m;
    mw_contact_rec_t   c;

    m = ngx_mw_mc_get_handle(mc, mc->log);

    if (m == NULL
        || ngx_mw_mc_read_contact(m, key, &c, &cas, &found) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_mw_mc_contact_state(cs, &c);

    return NGX_OK;
}


static ngx_int_t
ngx_http_meta_webhook_mc_counter(void *state, u_char *key, int64_t *value)
{
    ngx_mw_mc_t *mc = state;

    memcached_st  *m;

    m = ngx_mw_mc_get_handle(mc, mc->log);

    if (m == NULL || ngx_mw_mc_read_counter(m, key, value) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_meta_webhook_mc_sent(void *state, u_char *sent, u_char *contact,
    time_t ttl, ngx_log_t *log)
{
    ngx_mw_mc_t *mc = state;

    char                key[MW_KEY_TEXT_LEN + 1];
    char                value[MW_KEY_HEX_LEN + 1];
    uint64_t            buffered;
    memcached_st       *m;
    memcached_return_t  rc;

    m = ngx_mw_mc_get_handle(mc, log);
    if (m == NULL) {
        return;
    }

    mw_key_text(key, MW_KEY_SENT, sent);
    mw_key_hex(contact, value);

    /*
     * Stored before the send is answered: Meta's status for the message
     * (a 131047 that names the recipient by another id) may reach another
     * node at once, and must find it there.  So not buffered, as sets
     * are (see ngx_mw_mc_get_handle): this one waits for the answer.
     */

    buffered = memcached_behavior_get(m, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS);
    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 0);

    ngx_mw_mc_call(m, key, rc,
                   memcached_set(m, key, MW_KEY_TEXT_LEN, value,
                                 MW_KEY_HEX_LEN,
                                 (time_t) mw_ttl(ngx_time() + ttl,
                                                 ngx_time()), 0));

    (void) memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS,
                                  buffered);

    if (rc != MEMCACHED_SUCCESS) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "meta_webhook: memcached: the record of a sent message "
                      "was not stored (%s): a 131047 for it that names its "
                      "recipient by another id will not close the window",
                      memcached_strerror(m, rc));
    }
}


/*
 * meta_webhook_state memcached HOST:PORT ... [connect_timeout=T]
 *     [poll_timeout=T] [dead_timeout=T] [protocol=ascii|binary]
 *     [thread_pool=NAME] [zone=NAME:SIZE]
 */

char *
ngx_http_meta_webhook_memcached(ngx_conf_t *cf,
    ngx_http_meta_webhook_main_conf_t *mmcf, ngx_str_t *args,
    ngx_uint_t nargs)
{
    char         *rv;
    u_char       *p;
    ssize_t       size;
    uint32_t      crc;
    ngx_str_t     name, s;
    ngx_int_t     t;
    ngx_uint_t    i;
    ngx_url_t    *u;
    ngx_mw_mc_t  *mc;

#if !(NGX_THREADS)
    return "requires nginx built with threads (--with-threads)";
#else

    mc = ngx_pcalloc(cf->pool, sizeof(ngx_mw_mc_t));
    if (mc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&mc->servers, cf->pool, 4, sizeof(ngx_url_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    mc->connect_timeout = 300;
    mc->poll_timeout = 300;
    mc->dead_timeout = 10;
    ngx_str_set(&mc->thread_pool_name, "default");
    /*
     * the new cycle's log: cf->log is the old cycle's while a reload
     * parses, and goes with it
     */
    mc->log = &cf->cycle->new_log;

    ngx_str_set(&name, "meta_webhook");
    size = 1024 * 1024;

    for (i = 0; i < nargs; i++) {

        if (ngx_strncmp(args[i].data, "connect_timeout=", 16) == 0
            || ngx_strncmp(args[i].data, "poll_timeout=", 13) == 0)
        {
            p = (u_char *) ngx_strchr(args[i].data, '=') + 1;
            s.data = p;
            s.len = args[i].data + args[i].len - p;

            t = ngx_parse_time(&s, 0);
            if (t == NGX_ERROR || t == 0) {
                goto invalid;
            }

            if (args[i].data[0] == 'c') {
                mc->connect_timeout = (ngx_msec_t) t;
            } else {
                mc->poll_timeout = (ngx_msec_t) t;
            }

            continue;
        }

        if (ngx_strncmp(args[i].data, "dead_timeout=", 13) == 0) {
            s.data = args[i].data + 13;
            s.len = args[i].len - 13;

            t = ngx_parse_time(&s, 1);
            if (t == NGX_ERROR || t == 0) {
                goto invalid;
            }

            mc->dead_timeout = (time_t) t;
            continue;
        }

        if (ngx_strncmp(args[i].data, "protocol=", 9) == 0) {
            s.data = args[i].data + 9;
            s.len = args[i].len - 9;

            if (s.len == 5 && ngx_strncmp(s.data, "ascii", 5) == 0) {
                mc->binary = 0;

            } else if (s.len == 6 && ngx_strncmp(s.data, "binary", 6) == 0) {
                mc->binary = 1;

            } else {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(args[i].data, "thread_pool=", 12) == 0) {
            mc->thread_pool_name.data = args[i].data + 12;
            mc->thread_pool_name.len = args[i].len - 12;
            continue;
        }

        if (ngx_strncmp(args[i].data, "zone=", 5) == 0) {
            name.data = args[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                goto invalid;
            }

            name.len = p - name.data;
            s.data = p + 1;
            s.len = args[i].data + args[i].len - s.data;

            size = ngx_parse_size(&s);
            if (name.len == 0 || size == NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        u = ngx_array_push(&mc->servers);
        if (u == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(u, sizeof(ngx_url_t));
        u->url = args[i];
        u->no_resolve = 1;

        if (ngx_parse_url(cf->pool, u) != NGX_OK || u->no_port
            || u->uri.len)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid memcached server \"%V\": HOST:PORT "
                               "expected", &args[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (mc->servers.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_state memcached\" needs at least "
                           "one HOST:PORT");
        return NGX_CONF_ERROR;
    }

    if (mc->servers.nelts > NGX_MW_RING_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_state memcached\" takes at most "
                           "%d servers", NGX_MW_RING_MAX);
        return NGX_CONF_ERROR;
    }

    mc->mmcf = mmcf;
    mmcf->ring_size = mc->servers.nelts;

    /* the ring's shared state survives a reload with the same servers */
    ngx_crc32_init(crc);
    u = mc->servers.elts;

    for (i = 0; i < mc->servers.nelts; i++) {
        ngx_crc32_update(&crc, u[i].url.data, u[i].url.len + 1);
    }

    ngx_crc32_final(crc);
    mmcf->ring_hash = crc | 1;

    mc->thread_pool = ngx_thread_pool_add(cf, &mc->thread_pool_name);
    if (mc->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the per-node counters of the status page */

    rv = ngx_http_meta_webhook_shm_zone(cf, mmcf, &name, (size_t) size);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    mmcf->ops = &ngx_http_meta_webhook_memcached_ops;
    mmcf->state = mc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &args[i]);
    return NGX_CONF_ERROR;
#endif
}
