/*
 * jansson's memory, from the request's pool.
 *
 * A delivery's whole JSON tree (a 1000-update batch is tens of thousands
 * of small values) is allocated and freed one value at a time by default;
 * with the request's pool it is bump-allocated and released with the
 * request in one go.  Each block carries a tag in front, so a block
 * allocated outside any request (malloc) and one from a pool can never be
 * confused, whatever frees them.
 *
 * jansson's allocator is process-wide: nginx-meta-webhook installs it when
 * its configuration is read, before any JSON is parsed.
 */

#include "ngx_http_meta_webhook.h"


#define NGX_MW_JSON_HEADER    16      /* keeps jansson's blocks aligned */
#define NGX_MW_JSON_HEAP      0x48
#define NGX_MW_JSON_POOL      0x50


static MW_TLS ngx_pool_t  *ngx_http_meta_webhook_json_current;


static void *
ngx_http_meta_webhook_json_malloc(size_t size)
{
    u_char      *p;
    ngx_pool_t  *pool;

    pool = ngx_http_meta_webhook_json_current;

    if (pool) {
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


ngx_pool_t *
ngx_http_meta_webhook_json_pool(ngx_pool_t *pool)
{
    ngx_pool_t  *prev;

    prev = ngx_http_meta_webhook_json_current;
    ngx_http_meta_webhook_json_current = pool;

    return prev;
}
