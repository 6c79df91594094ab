/*
 * The embedded state backend: one shared memory zone for all workers.
 *
 * Entries live in a hash table keyed by their 16-byte digest (the digest
 * is evenly spread already, so its first bytes index the buckets; a
 * lookup costs one or two cache misses where a tree of a million entries
 * costs twenty), and on one of these queues:
 *
 *   inflight   claims of deliveries being handed off, oldest at the tail;
 *              never evicted: each must be able to commit or release;
 *   dedupe     committed dedupe keys, least recently used (committed or
 *              seen again) at the tail, which is also expiry order: the
 *              reaper stops at the first live one;
 *   contacts   windows, least recently used at the tail: a contact
 *              lives a day past its window, so use order is nearly
 *              expiry order, and the reaper looks at a few tail entries
 *              past live ones;
 *   kept       contacts with an opt-in or opt-out, which live 400 days:
 *              in a queue of their own, or the first few of them to fall
 *              silent would hide every expired window behind them;
 *
 *   tallies    conversation counts of the current periods: a handful,
 *              never evicted (a lost count would lift a limit).
 *
 * When the zone is full, the least recently used of the dedupe and contact
 * tails goes first, so that eviction is least-recently-used across them.
 *
 * The tree and the queues survive "nginx -s reload".
 */

#include "ngx_http_meta_webhook.h"
#include "mw_state.h"

#define NGX_MW_EVICT_BATCH       16
#define NGX_MW_REAP_LOOK         8


typedef struct ngx_mw_shm_node_s  ngx_mw_shm_node_t;

struct ngx_mw_shm_node_s {
    ngx_mw_shm_node_t          *next;        /* in its bucket */
    ngx_queue_t                 queue;
    int64_t                     expires;
    uint64_t                    used;        /* last use, for eviction */

    union {
        uint64_t                owner;       /* dedupe: delivery in flight */
        int64_t                 count;       /* counter */

        struct {                             /* contact: Unix seconds */
            uint32_t            window;      /* expires_at */
            uint32_t            session;     /* the session began */
            uint32_t            counted;     /* a conversation counted */
            uint32_t            optin_ts;    /* the keyword came */
        } c;

        u_char                  contact[MW_KEY_LEN];   /* sent: to whom */
    } u;

    u_char                      type;        /* mw_key_type_e */
    u_char                      optin;       /* MW_OPTIN_* */
    u_char                      key[MW_KEY_LEN];
};


typedef struct {
    ngx_mw_shm_node_t         **buckets;
    ngx_uint_t                  mask;        /* buckets - 1 */
    ngx_queue_t                 inflight;    /* claims, oldest at the tail */
    ngx_queue_t                 dedupe;      /* committed, oldest at tail */
    ngx_queue_t                 contacts;    /* least recently used at tail */
    ngx_queue_t                 kept;        /* the same, with an opt-in */
    ngx_queue_t                 tallies;     /* counters, never evicted */
    ngx_atomic_t                entries;
    uint64_t                    uses;        /* orders uses within a second */
    time_t                      last_evict_log;
    ngx_mw_counters_t           counters;
    ngx_mw_ring_t               ring;
} ngx_mw_shm_sh_t;


typedef struct {
    ngx_mw_shm_sh_t                     *sh;
    ngx_slab_pool_t                     *shpool;
    ngx_str_t                            name;
    ngx_http_meta_webhook_main_conf_t   *mmcf;
} ngx_mw_shm_t;


static ngx_int_t ngx_http_meta_webhook_shm_init(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_meta_webhook_shm_ingest(void *state,
    ngx_mw_ingest_t *op);
static ngx_int_t ngx_http_meta_webhook_shm_reserve(void *state,
    ngx_mw_send_op_t *op);
static void ngx_http_meta_webhook_shm_unreserve(void *state,
    ngx_mw_send_op_t *op);
static ngx_int_t ngx_http_meta_webhook_shm_contact(void *state, u_char *key,
    mw_contact_state_t *cs);
static ngx_int_t ngx_http_meta_webhook_shm_counter(void *state, u_char *key,
    int64_t *value);
static void ngx_http_meta_webhook_shm_sent(void *state, u_char *sent,
    u_char *contact, time_t ttl, ngx_log_t *log);
static void ngx_http_meta_webhook_shm_settle(void *state,
    ngx_mw_claim_t *claims, ngx_uint_t n, uint64_t owner, ngx_uint_t commit,
    time_t ttl, time_t lease, ngx_log_t *log);


ngx_mw_state_ops_t  ngx_http_meta_webhook_shm_ops = {
    ngx_string("shm"),
    0,
    ngx_http_meta_webhook_shm_ingest,
    ngx_http_meta_webhook_shm_settle,
    ngx_http_meta_webhook_shm_reserve,
    ngx_http_meta_webhook_shm_unreserve,
    ngx_http_meta_webhook_shm_contact,
    ngx_http_meta_webhook_shm_counter,
    ngx_http_meta_webhook_shm_sent
};


static ngx_mw_shm_node_t **
ngx_mw_shm_bucket(ngx_mw_shm_t *ctx, const u_char *key)
{
    uint64_t  h;

    /* the key is a digest already: its first bytes are evenly spread */
    ngx_memcpy(&h, key, sizeof(uint64_t));

    return &ctx->sh->buckets[h & ctx->sh->mask];
}


static ngx_mw_shm_node_t *
ngx_mw_shm_lookup(ngx_mw_shm_t *ctx, const u_char *key)
{
    ngx_mw_shm_node_t  *n;

    for (n = *ngx_mw_shm_bucket(ctx, key); n; n = n->next) {
        if (ngx_memcmp(n->key, key, MW_KEY_LEN) == 0) {
            return n;
        }
    }

    return NULL;
}


static void
ngx_mw_shm_delete(ngx_mw_shm_t *ctx, ngx_mw_shm_node_t *n)
{
    ngx_mw_shm_node_t  **p;

    ngx_queue_remove(&n->queue);

    for (p = ngx_mw_shm_bucket(ctx, n->key); *p; p = &(*p)->next) {
        if (*p == n) {
            *p = n->next;
            break;
        }
    }

    ngx_slab_free_locked(ctx->shpool, n);
    ctx->sh->entries--;
}


/*
 * Reaps expired entries from the queues' tails: enough to keep pace with
 * arrivals, bounded so that one delivery never pays for a whole zone.
 */

static void
ngx_mw_shm_expire(ngx_mw_shm_t *ctx, int64_t now)
{
    ngx_uint_t          i, n;
    ngx_queue_t        *q, *prev, *queues[3];
    ngx_mw_shm_node_t  *node;

    /* in-flight leases and committed keys expire in queue order */

    queues[0] = &ctx->sh->inflight;
    queues[1] = &ctx->sh->dedupe;

    for (i = 0; i < 2; i++) {
        for (n = 0; n < NGX_MW_EVICT_BATCH && !ngx_queue_empty(queues[i]);
             n++)
        {
            q = ngx_queue_last(queues[i]);
            node = ngx_queue_data(q, ngx_mw_shm_node_t, queue);

            if (node->expires > now) {
                break;
            }

            ngx_mw_shm_delete(ctx, node);
        }
    }

    /* contacts and counters do not: look past a few live ones */

    queues[0] = &ctx->sh->contacts;
    queues[1] = &ctx->sh->kept;
    queues[2] = &ctx->sh->tallies;

    for (i = 0; i < 3; i++) {
        q = ngx_queue_last(queues[i]);

        for (n = 0; n < NGX_MW_REAP_LOOK
                    && q != ngx_queue_sentinel(queues[i]); n++)
        {
            prev = ngx_queue_prev(q);
            node = ngx_queue_data(q, ngx_mw_shm_node_t, queue);

            if (node->expires <= now) {
                ngx_mw_shm_delete(ctx, node);
            }

            q = prev;
        }
    }
}


/* The least recently used of the evictable queues' tails. */

static ngx_mw_shm_node_t *
ngx_mw_shm_least_used(ngx_mw_shm_t *ctx)
{
    ngx_uint_t          i;
    ngx_queue_t        *queues[3];
    ngx_mw_shm_node_t  *n, *least;

    queues[0] = &ctx->sh->dedupe;
    queues[1] = &ctx->sh->contacts;
    queues[2] = &ctx->sh->kept;

    least = NULL;

    for (i = 0; i < 3; i++) {
        if (ngx_queue_empty(queues[i])) {
            continue;
        }

        n = ngx_queue_data(ngx_queue_last(queues[i]), ngx_mw_shm_node_t,
                           queue);

        if (least == NULL || n->used < least->used) {
            least = n;
        }
    }

    return least;
}


/* A contact's queue, by what it holds. */

static ngx_queue_t *
ngx_mw_shm_contact_queue(ngx_mw_shm_t *ctx, ngx_mw_shm_node_t *n)
{
    return (n->optin != MW_OPTIN_NONE) ? &ctx->sh->kept : &ctx->sh->contacts;
}


static ngx_mw_shm_node_t *
ngx_mw_shm_alloc(ngx_mw_shm_t *ctx, int64_t now, ngx_log_t *log)
{
    ngx_uint_t          i;
    ngx_mw_shm_node_t  *n;

    n = ngx_slab_alloc_locked(ctx->shpool, sizeof(ngx_mw_shm_node_t));
    if (n != NULL) {
        goto done;
    }

    /*
     * The zone is full: evict the least recently used committed entries,
     * dedupe keys and contacts alike.  Claims in flight are never touched:
     * a delivery being handed off must be able to commit or release.
     */

    for (i = 0; i < NGX_MW_EVICT_BATCH; i++) {
        n = ngx_mw_shm_least_used(ctx);
        if (n == NULL) {
            break;
        }

        ngx_mw_shm_delete(ctx, n);
    }

    if (i == 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "meta_webhook: state zone \"%V\" is full of claims "
                      "in flight and nothing can be evicted; "
                      "increase its size", &ctx->name);
        return NULL;
    }

    (void) ngx_atomic_fetch_add(&ctx->sh->counters.evictions, i);

    if (ctx->sh->last_evict_log != (time_t) now) {
        ctx->sh->last_evict_log = (time_t) now;
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "meta_webhook: state zone \"%V\" is full, evicted "
                      "%ui live entries; the dedupe horizon or contact "
                      "windows are now shorter than configured, increase "
                      "the zone",
                      &ctx->name, i);
    }

    n = ngx_slab_alloc_locked(ctx->shpool, sizeof(ngx_mw_shm_node_t));
    if (n == NULL) {
        return NULL;
    }

done:

    ngx_memzero(n, sizeof(ngx_mw_shm_node_t));
    ctx->sh->entries++;

    return n;
}


static void
ngx_mw_shm_insert(ngx_mw_shm_t *ctx, ngx_mw_shm_node_t *n, const u_char *key,
    u_char type, ngx_queue_t *queue)
{
    ngx_mw_shm_node_t  **b;

    ngx_memcpy(n->key, key, MW_KEY_LEN);
    n->type = type;

    b = ngx_mw_shm_bucket(ctx, key);
    n->next = *b;
    *b = n;

    ngx_queue_insert_head(queue, &n->queue);
}


static int64_t
ngx_mw_shm_clamp(int64_t t)
{
    /* contact times are kept in 32 bits: enough until 2106 */
    return t < 0 ? 0 : (t > (int64_t) UINT32_MAX ? (int64_t) UINT32_MAX : t);
}


static void
ngx_mw_shm_get_contact(ngx_mw_shm_node_t *n, mw_contact_rec_t *c)
{
    c->window = n->u.c.window;
    c->session = n->u.c.session;
    c->counted = n->u.c.counted;
    c->optin_ts = n->u.c.optin_ts;
    c->optin = n->optin;
}


static void
ngx_mw_shm_put_contact(ngx_mw_shm_node_t *n, mw_contact_rec_t *c,
    int64_t now)
{
    n->u.c.window = (uint32_t) ngx_mw_shm_clamp(c->window);
    n->u.c.session = (uint32_t) ngx_mw_shm_clamp(c->session);
    n->u.c.counted = (uint32_t) ngx_mw_shm_clamp(c->counted);
    n->u.c.optin_ts = (uint32_t) ngx_mw_shm_clamp(c->optin_ts);
    n->optin = (u_char) c->optin;
    n->expires = mw_contact_expiry(c, now);
}


static void
ngx_mw_shm_contact_update(ngx_mw_shm_node_t *n, ngx_mw_contact_op_t *co,
    int64_t now)
{
    mw_contact_rec_t  c;

    ngx_mw_shm_get_contact(n, &c);

    if (co->close) {
        mw_contact_close(&c, co->from);

    } else {
        mw_contact_message(&c, co->from, (int) co->optin, co->optin_ts);
    }

    ngx_mw_shm_put_contact(n, &c, now);
    co->expires = c.window;
}


static ngx_int_t
ngx_http_meta_webhook_shm_ingest(void *state, ngx_mw_ingest_t *op)
{
    ngx_mw_shm_t *ctx = state;

    ngx_uint_t            i;
    ngx_mw_claim_t       *c;
    ngx_mw_shm_node_t    *n;
    ngx_mw_contact_op_t  *co;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ngx_mw_shm_expire(ctx, op->now);

    for (i = 0; i < op->nclaims; i++) {
        c = &op->claims[i];
        n = ngx_mw_shm_lookup(ctx, c->key);

        if (n != NULL && n->expires <= op->now) {
            /* a lapsed lease: its delivery died; take the claim over */
            ngx_mw_shm_delete(ctx, n);
            n = NULL;
        }

        if (n != NULL) {
            if (n->u.owner) {
                c->result = NGX_MW_CLAIM_BUSY;

            } else {
                /*
                 * A retry is a use: it moves to the head with a fresh
                 * expiry, which keeps the queue in expiry order too.
                 */
                c->result = NGX_MW_CLAIM_DUPLICATE;
                n->expires = op->now + op->dedupe_ttl;
                n->used = ++ctx->sh->uses;
                ngx_queue_remove(&n->queue);
                ngx_queue_insert_head(&ctx->sh->dedupe, &n->queue);
            }

            continue;
        }

        n = ngx_mw_shm_alloc(ctx, op->now, op->log);
        if (n == NULL) {
            goto full;
        }

        n->u.owner = op->owner;
        n->expires = op->now + op->claim_timeout;
        ngx_mw_shm_insert(ctx, n, c->key, MW_KEY_DEDUPE, &ctx->sh->inflight);

        c->result = NGX_MW_CLAIM_NEW;
    }

    for (i = 0; i < op->ncontacts; i++) {
        co = &op->contacts[i];

        if (co->close) {
            /* a message sent through the path names its own contact */
            n = ngx_mw_shm_lookup(ctx, co->sent);

            if (n != NULL && n->type == MW_KEY_SENT && n->expires > op->now) {
                ngx_memcpy(co->key, n->u.contact, MW_KEY_LEN);
            }

            n = ngx_mw_shm_lookup(ctx, co->key);

            /* no window known: nothing to close */
            if (n == NULL || n->expires <= op->now) {
                co->expires = 0;
                continue;
            }

            ngx_mw_shm_contact_update(n, co, op->now);
            continue;
        }

        n = ngx_mw_shm_lookup(ctx, co->key);

        if (n != NULL && n->expires <= op->now) {
            ngx_mw_shm_delete(ctx, n);
            n = NULL;
        }

        if (n == NULL) {
            n = ngx_mw_shm_alloc(ctx, op->now, op->log);
            if (n == NULL) {
                goto full;
            }

            ngx_mw_shm_insert(ctx, n, co->key, MW_KEY_CONTACT,
                              &ctx->sh->contacts);
        }

        n->used = ++ctx->sh->uses;

        ngx_mw_shm_contact_update(n, co, op->now);

        ngx_queue_remove(&n->queue);
        ngx_queue_insert_head(ngx_mw_shm_contact_queue(ctx, n), &n->queue);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    op->rc = NGX_OK;
    return NGX_OK;

full:

    /* undo this delivery's claims: it is answered 503 and retried */

    for (i = 0; i < op->nclaims; i++) {
        c = &op->claims[i];

        if (c->result != NGX_MW_CLAIM_NEW) {
            continue;
        }

        n = ngx_mw_shm_lookup(ctx, c->key);

        if (n != NULL && n->u.owner == op->owner) {
            ngx_mw_shm_delete(ctx, n);
        }

        c->result = NGX_MW_CLAIM_BUSY;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    op->rc = NGX_DECLINED;
    return NGX_OK;
}


static void
ngx_http_meta_webhook_shm_settle(void *state, ngx_mw_claim_t *claims,
    ngx_uint_t n, uint64_t owner, ngx_uint_t commit, time_t ttl,
    time_t lease, ngx_log_t *log)
{
    ngx_mw_shm_t *ctx = state;

    time_t              now;
    ngx_uint_t          i, lapsed;
    ngx_mw_shm_node_t  *node;

    now = ngx_time();
    lapsed = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < n; i++) {
        node = ngx_mw_shm_lookup(ctx, claims[i].key);

        /* a claim whose lease lapsed may belong to another delivery now */
        if (node == NULL || node->u.owner != owner) {
            lapsed++;
            continue;
        }

        if (commit) {
            node->u.owner = 0;
            node->expires = now + ttl;
            node->used = ++ctx->sh->uses;
            ngx_queue_remove(&node->queue);
            ngx_queue_insert_head(&ctx->sh->dedupe, &node->queue);

        } else {
            ngx_mw_shm_delete(ctx, node);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (lapsed && commit) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "meta_webhook: %ui updates were handed off after "
                      "their claims lapsed; a retry of them may be handed "
                      "off again: raise \"meta_webhook_claim_timeout\" "
                      "above the upstream's timeouts", lapsed);
    }
}


static void
ngx_mw_shm_read_contact(ngx_mw_shm_node_t *n, mw_contact_state_t *cs)
{
    if (n == NULL) {
        ngx_memzero(cs, sizeof(mw_contact_state_t));
        return;
    }

    cs->window = n->u.c.window;
    cs->session = n->u.c.session;
    cs->counted = n->u.c.counted;
    cs->optin = n->optin;
}


/* A live counter, made when absent; NULL when the zone is full. */

static ngx_mw_shm_node_t *
ngx_mw_shm_counter(ngx_mw_shm_t *ctx, u_char *key, int64_t end, int64_t now,
    ngx_log_t *log)
{
    ngx_mw_shm_node_t  *n;

    n = ngx_mw_shm_lookup(ctx, key);

    if (n != NULL && n->expires > now) {
        return n;
    }

    if (n != NULL) {
        ngx_mw_shm_delete(ctx, n);
    }

    n = ngx_mw_shm_alloc(ctx, now, log);
    if (n == NULL) {
        return NULL;
    }

    /* kept a day past its period, for the status page */
    n->expires = end + 86400;
    ngx_mw_shm_insert(ctx, n, key, MW_KEY_COUNTER, &ctx->sh->tallies);

    return n;
}


static ngx_int_t
ngx_http_meta_webhook_shm_reserve(void *state, ngx_mw_send_op_t *op)
{
    ngx_mw_shm_t *ctx = state;

    ngx_mw_shm_node_t  *c, *period, *day;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ngx_mw_shm_expire(ctx, op->now);

    c = ngx_mw_shm_lookup(ctx, op->contact);

    if (c != NULL && c->expires <= op->now) {
        ngx_mw_shm_delete(ctx, c);
        c = NULL;
    }

    period = ngx_mw_shm_counter(ctx, op->period, op->period_end, op->now,
                                op->log);
    day = ngx_mw_shm_counter(ctx, op->day, op->day_end, op->now, op->log);

    if (period == NULL || day == NULL) {
        goto failed;
    }

    ngx_mw_shm_read_contact(c, &op->cs);

    op->limits.used = period->u.count;
    op->limits.daily_used = day->u.count;

    mw_send_decide(&op->cs, &op->limits, (int) op->is_template,
                   (int64_t) op->now, &op->d);

    op->counted = op->cs.counted;

    if (op->d.verdict != MW_SEND_ALLOW) {
        goto done;
    }

    if (op->d.session) {
        /* only an open window gets here: its contact exists */
        if (c == NULL) {
            goto failed;
        }

        /*
         * The session may begin a little ahead of this clock (a message's
         * timestamp may lead it by MW_FUTURE_SKEW): mark it counted at
         * its start at least, or every reply until then would count.
         */
        op->mark = op->now > op->cs.session ? op->now : op->cs.session;
        c->u.c.counted = (uint32_t) ngx_mw_shm_clamp(op->mark);
        c->used = ++ctx->sh->uses;
        ngx_queue_remove(&c->queue);
        ngx_queue_insert_head(ngx_mw_shm_contact_queue(ctx, c), &c->queue);
    }

    if (op->d.conversation) {
        period->u.count++;
    }

    if (op->d.business_initiated) {
        day->u.count++;
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    op->rc = NGX_OK;
    return NGX_OK;

failed:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    op->rc = NGX_ERROR;
    return NGX_OK;
}


static void
ngx_http_meta_webhook_shm_unreserve(void *state, ngx_mw_send_op_t *op)
{
    ngx_mw_shm_t *ctx = state;

    ngx_mw_shm_node_t  *n;

    if (op->d.verdict != MW_SEND_ALLOW) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (op->d.conversation) {
        n = ngx_mw_shm_lookup(ctx, op->period);
        if (n != NULL && n->u.count > 0) {
            n->u.count--;
        }
    }

    if (op->d.business_initiated) {
        n = ngx_mw_shm_lookup(ctx, op->day);
        if (n != NULL && n->u.count > 0) {
            n->u.count--;
        }
    }

    if (op->d.session) {
        /* unless a later send of the same session counted it since */
        n = ngx_mw_shm_lookup(ctx, op->contact);
        if (n != NULL && n->u.c.counted
                         == (uint32_t) ngx_mw_shm_clamp(op->mark))
        {
            n->u.c.counted = (uint32_t) ngx_mw_shm_clamp(op->counted);
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static ngx_int_t
ngx_http_meta_webhook_shm_contact(void *state, u_char *key,
    mw_contact_state_t *cs)
{
    ngx_mw_shm_t *ctx = state;

    ngx_mw_shm_node_t  *n;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    n = ngx_mw_shm_lookup(ctx, key);
    ngx_mw_shm_read_contact(n, cs);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


static ngx_int_t
ngx_http_meta_webhook_shm_counter(void *state, u_char *key, int64_t *value)
{
    ngx_mw_shm_t *ctx = state;

    ngx_mw_shm_node_t  *n;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    n = ngx_mw_shm_lookup(ctx, key);
    *value = (n != NULL && n->expires > ngx_time()) ? n->u.count : 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


static void
ngx_http_meta_webhook_shm_sent(void *state, u_char *sent, u_char *contact,
    time_t ttl, ngx_log_t *log)
{
    ngx_mw_shm_t *ctx = state;

    time_t              now;
    ngx_mw_shm_node_t  *n;

    now = ngx_time();

    ngx_shmtx_lock(&ctx->shpool->mutex);

    n = ngx_mw_shm_lookup(ctx, sent);

    if (n == NULL) {
        n = ngx_mw_shm_alloc(ctx, now, log);

        if (n == NULL) {
            /* a status then falls back to its own recipient: no harm */
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return;
        }

        ngx_mw_shm_insert(ctx, n, sent, MW_KEY_SENT, &ctx->sh->dedupe);

    } else {
        ngx_queue_remove(&n->queue);
        ngx_queue_insert_head(&ctx->sh->dedupe, &n->queue);
    }

    ngx_memcpy(n->u.contact, contact, MW_KEY_LEN);
    n->expires = now + ttl;
    n->used = ++ctx->sh->uses;

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


char *
ngx_http_meta_webhook_shm_zone(ngx_conf_t *cf,
    ngx_http_meta_webhook_main_conf_t *mmcf, ngx_str_t *name, size_t size)
{
    ngx_mw_shm_t    *ctx;
    ngx_shm_zone_t  *shm_zone;

    if (size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "meta_webhook_state zone \"%V\" is too small",
                           name);
        return NGX_CONF_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_mw_shm_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx->name = *name;
    ctx->mmcf = mmcf;

    shm_zone = ngx_shared_memory_add(cf, name, size,
                                     &ngx_http_meta_webhook_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "meta_webhook_state zone \"%V\" is already used",
                           name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_meta_webhook_shm_init;
    shm_zone->data = ctx;

    mmcf->shm_zone = shm_zone;
    mmcf->ops = &ngx_http_meta_webhook_shm_ops;
    mmcf->state = ctx;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_meta_webhook_shm_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_mw_shm_t  *octx = data;

    size_t         len, n;
    ngx_mw_shm_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* reload: keep every claim, window and counter */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        goto done;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        goto done;
    }

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_mw_shm_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(ctx->sh, sizeof(ngx_mw_shm_sh_t));
    ctx->shpool->data = ctx->sh;

    /*
     * About one bucket per two entries the zone can hold: an eighth of a
     * zone of 128-byte entries, at most.
     */
    n = 1;

    while (n * 2 < shm_zone->shm.size / 256) {
        n *= 2;
    }

    ctx->sh->buckets = ngx_slab_calloc(ctx->shpool,
                                       n * sizeof(ngx_mw_shm_node_t *));
    if (ctx->sh->buckets == NULL) {
        return NGX_ERROR;
    }

    ctx->sh->mask = n - 1;

    ngx_queue_init(&ctx->sh->inflight);
    ngx_queue_init(&ctx->sh->dedupe);
    ngx_queue_init(&ctx->sh->contacts);
    ngx_queue_init(&ctx->sh->kept);
    ngx_queue_init(&ctx->sh->tallies);

    len = sizeof(" in meta_webhook_state zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in meta_webhook_state zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled by eviction, with a log line of its own */
    ctx->shpool->log_nomem = 0;

done:

    ctx->mmcf->counters = &ctx->sh->counters;
    ctx->mmcf->entries = &ctx->sh->entries;
    ctx->mmcf->ring = &ctx->sh->ring;

    /*
     * The memcached ring's state is kept across a reload, unless the
     * server list changed: then every server starts in the ring, and one
     * still down leaves it again after its first failures.
     */
    if (ctx->sh->ring.hash != ctx->mmcf->ring_hash) {
        ngx_memzero(&ctx->sh->ring, sizeof(ngx_mw_ring_t));
        ctx->sh->ring.hash = ctx->mmcf->ring_hash;
    }

    return NGX_OK;
}
