/*
 * jansson's memory, from a request's arena or pool.
 *
 * A delivery's whole JSON tree (a 1000-update batch is tens of thousands
 * of small values) is allocated and freed one value at a time by default;
 * from an arena (below) or the request's pool it is bump-allocated and
 * released with the request in one go.  Each block carries a tag in
 * front, so a block allocated outside any request (malloc) and one from
 * an arena or a pool can never be confused, whatever frees them.
 *
 * jansson's allocator is process-wide: nginx-meta-webhook installs it when
 * its configuration is read, before any JSON is parsed.
 */

#include "ngx_http_meta_webhook.h"


#define NGX_MW_JSON_HEADER    16      /* keeps jansson's blocks aligned */
#define NGX_MW_JSON_HEAP      0x48
#define NGX_MW_JSON_POOL      0x50


static MW_TLS ngx_pool_t  *ngx_http_meta_webhook_json_current;

static void *ngx_http_meta_webhook_json_arena_alloc(ngx_mw_json_arena_t *a,
    size_t size);
static MW_TLS ngx_mw_json_arena_t  *ngx_http_meta_webhook_json_in;


static void *
ngx_http_meta_webhook_json_malloc(size_t size)
{
    u_char      *p;
    ngx_pool_t  *pool;

    pool = ngx_http_meta_webhook_json_current;

    if (ngx_http_meta_webhook_json_in) {
        p = ngx_http_meta_webhook_json_arena_alloc(
                    ngx_http_meta_webhook_json_in, size + NGX_MW_JSON_HEADER);
        if (p == NULL) {
            return NULL;
        }

        p[0] = NGX_MW_JSON_POOL;

    } else if (pool) {
        p = ngx_palloc(pool, size + NGX_MW_JSON_HEADER);
        if (p == NULL) {
            return NULL;
        }

        p[0] = NGX_MW_JSON_POOL;

    } else {
        p = malloc(size + NGX_MW_JSON_HEADER);
        if (p == NULL) {
            return NULL;
        }

        p[0] = NGX_MW_JSON_HEAP;
    }

    return p + NGX_MW_JSON_HEADER;
}


static void
ngx_http_meta_webhook_json_free(void *ptr)
{
    u_char  *p;

    if (ptr == NULL) {
        return;
    }

    p = (u_char *) ptr - NGX_MW_JSON_HEADER;

    if (p[0] == NGX_MW_JSON_HEAP) {
        free(p);
    }

    /* a pool's block goes with its request */
}


void
ngx_http_meta_webhook_json_init(void)
{
    json_set_alloc_funcs(ngx_http_meta_webhook_json_malloc,
                         ngx_http_meta_webhook_json_free);
}


/*
 * A delivery's own arena for its document, in large chunks, kept for the
 * next delivery when the request is done.  From the request's pool, a
 * 1000-update batch took some nine hundred 4 KB blocks, each a malloc()
 * of memory the kernel had to fault in, gave them all back at the
 * request's end (glibc trims the heap), and faulted them in again for the
 * next batch.  An arena kept in the worker is written over instead.  (An
 * nginx pool reset for reuse would not do: its allocations start again at
 * the first block and walk every full one.)  Only the event loop parses
 * deliveries, so the list of kept arenas needs no lock.
 */

#define NGX_MW_JSON_CHUNK      (64 * 1024)
#define NGX_MW_JSON_LARGE      (8 * 1024)          /* malloc()ed alone */
#define NGX_MW_JSON_KEPT       4                   /* arenas kept */
#define NGX_MW_JSON_KEPT_SIZE  (16 * 1024 * 1024)  /* all kept, in bytes */


typedef struct ngx_mw_json_chunk_s  ngx_mw_json_chunk_t;

struct ngx_mw_json_chunk_s {
    ngx_mw_json_chunk_t        *next;
    u_char                     *end;
};


struct ngx_mw_json_arena_s {
    ngx_mw_json_chunk_t        *first;
    ngx_mw_json_chunk_t        *current;
    u_char                     *last;
    ngx_mw_json_chunk_t        *large;       /* end unused */
    size_t                      size;
};


static ngx_mw_json_arena_t  *ngx_http_meta_webhook_json_kept[NGX_MW_JSON_KEPT];
static ngx_uint_t            ngx_http_meta_webhook_json_nkept;
static size_t                ngx_http_meta_webhook_json_kept_size;


static u_char *
ngx_http_meta_webhook_json_chunk_data(ngx_mw_json_chunk_t *c)
{
    return ngx_align_ptr((u_char *) c + sizeof(ngx_mw_json_chunk_t),
                         NGX_MW_JSON_HEADER);
}


static void *
ngx_http_meta_webhook_json_arena_alloc(ngx_mw_json_arena_t *a, size_t size)
{
    u_char               *p;
    ngx_mw_json_chunk_t  *c;

    size = ngx_align(size, NGX_MW_JSON_HEADER);

    if (size > NGX_MW_JSON_LARGE) {
        c = ngx_alloc(sizeof(ngx_mw_json_chunk_t) + NGX_MW_JSON_HEADER
                      + size, ngx_cycle->log);
        if (c == NULL) {
            return NULL;
        }

        c->next = a->large;
        a->large = c;

        return ngx_http_meta_webhook_json_chunk_data(c);
    }

    if (a->current == NULL || (size_t) (a->current->end - a->last) < size) {

        if (a->current && a->current->next) {
            c = a->current->next;

        } else {
            c = ngx_alloc(NGX_MW_JSON_CHUNK, ngx_cycle->log);
            if (c == NULL) {
                return NULL;
            }

            c->next = NULL;
            c->end = (u_char *) c + NGX_MW_JSON_CHUNK;
            a->size += NGX_MW_JSON_CHUNK;

            if (a->current) {
                a->current->next = c;

            } else {
                a->first = c;
            }
        }

        a->current = c;
        a->last = ngx_http_meta_webhook_json_chunk_data(c);
    }

    p = a->last;
    a->last += size;

    return p;
}


static void
ngx_http_meta_webhook_json_arena_free(ngx_mw_json_arena_t *a,
    ngx_uint_t all)
{
    ngx_mw_json_chunk_t  *c, *next;

    for (c = a->large; c; c = next) {
        next = c->next;
        ngx_free(c);
    }

    a->large = NULL;
    a->current = a->first;
    a->last = a->first ? ngx_http_meta_webhook_json_chunk_data(a->first)
                       : NULL;

    if (!all) {
        return;
    }

    for (c = a->first; c; c = next) {
        next = c->next;
        ngx_free(c);
    }

    ngx_free(a);
}


static void
ngx_http_meta_webhook_json_arena_done(void *data)
{
    ngx_http_meta_webhook_json_arena_put(data);
}


/*
 * An arena for one parse, given back with ..._arena_put() once its
 * document is freed: a worker keeps a few for the next parses.  NULL when
 * none can be had (jansson then allocates as before).
 */

ngx_mw_json_arena_t *
ngx_http_meta_webhook_json_arena_get(ngx_log_t *log)
{
    ngx_mw_json_arena_t  *a;

    if (ngx_http_meta_webhook_json_nkept) {
        a = ngx_http_meta_webhook_json_kept[
                                      --ngx_http_meta_webhook_json_nkept];
        ngx_http_meta_webhook_json_kept_size -= a->size;

        return a;
    }

    a = ngx_alloc(sizeof(ngx_mw_json_arena_t), log);
    if (a == NULL) {
        return NULL;
    }

    ngx_memzero(a, sizeof(ngx_mw_json_arena_t));

    return a;
}


void
ngx_http_meta_webhook_json_arena_put(ngx_mw_json_arena_t *a)
{
    if (a == NULL) {
        return;
    }

    if (ngx_http_meta_webhook_json_nkept == NGX_MW_JSON_KEPT
        || ngx_http_meta_webhook_json_kept_size + a->size
           > NGX_MW_JSON_KEPT_SIZE)
    {
        ngx_http_meta_webhook_json_arena_free(a, 1);
        return;
    }

    ngx_http_meta_webhook_json_arena_free(a, 0);
    ngx_http_meta_webhook_json_kept[ngx_http_meta_webhook_json_nkept++] = a;
    ngx_http_meta_webhook_json_kept_size += a->size;
}


/* An arena that lives as long as pool does; NULL when none can be had. */

ngx_mw_json_arena_t *
ngx_http_meta_webhook_json_arena(ngx_pool_t *pool)
{
    ngx_pool_cleanup_t   *cln;
    ngx_mw_json_arena_t  *a;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    a = ngx_http_meta_webhook_json_arena_get(pool->log);
    if (a == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_meta_webhook_json_arena_done;
    cln->data = a;

    return a;
}


void
ngx_http_meta_webhook_json_exit(void)
{
    while (ngx_http_meta_webhook_json_nkept) {
        ngx_http_meta_webhook_json_arena_free(
            ngx_http_meta_webhook_json_kept[--ngx_http_meta_webhook_json_nkept],
            1);
    }

    ngx_http_meta_webhook_json_kept_size = 0;
}


/* jansson allocates from a (NULL: as before); returns the previous one. */

ngx_mw_json_arena_t *
ngx_http_meta_webhook_json_use(ngx_mw_json_arena_t *a)
{
    ngx_mw_json_arena_t  *prev;

    prev = ngx_http_meta_webhook_json_in;
    ngx_http_meta_webhook_json_in = a;

    return prev;
}


ngx_pool_t *
ngx_http_meta_webhook_json_pool(ngx_pool_t *pool)
{
    ngx_pool_t  *prev;

    prev = ngx_http_meta_webhook_json_current;
    ngx_http_meta_webhook_json_current = pool;

    return prev;
}
