/*
 * The webhook endpoint: Meta's handshake, and each delivery from the raw
 * body to the events handed on.
 *
 *   precontent phase   handshake, or: signature header, read the whole
 *                      body, verify, parse and classify (core), claim the
 *                      dedupe keys and advance windows (state), then let
 *                      the content handler hand the events on, or answer
 *                      200 at once when nothing is new;
 *   content phase      the operator's proxy_pass, or our own 200;
 *   log phase          commit the claims on a 2xx answer, else release
 *                      them so that Meta's retry is processed.
 */

#include "ngx_http_meta_webhook.h"


typedef struct {
    const u_char               *key;
    ngx_uint_t                  index;
} ngx_mw_sorted_key_t;


static void ngx_http_meta_webhook_mask_token(ngx_http_request_t *r);
static ngx_int_t ngx_http_meta_webhook_handshake(ngx_http_request_t *r,
    ngx_http_meta_webhook_loc_conf_t *lcf, ngx_http_meta_webhook_ctx_t *ctx);
static ngx_int_t ngx_http_meta_webhook_signature(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx);
static void ngx_http_meta_webhook_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_meta_webhook_ingest(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx);
static ngx_int_t ngx_http_meta_webhook_served(ngx_http_request_t *r,
    ngx_http_meta_webhook_loc_conf_t *lcf, ngx_http_meta_webhook_ctx_t *ctx);
static ngx_int_t ngx_http_meta_webhook_claim(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx);
static ngx_int_t ngx_http_meta_webhook_claimed(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx);
static void ngx_http_meta_webhook_classified(
    ngx_http_meta_webhook_main_conf_t *mmcf, mw_update_t *u);
static void ngx_http_meta_webhook_dead_letter(ngx_http_request_t *r,
    ngx_http_meta_webhook_loc_conf_t *lcf, ngx_str_t *body,
    const char *reason);
static ngx_int_t ngx_http_meta_webhook_send(ngx_http_request_t *r,
    ngx_str_t *text);
static void ngx_http_meta_webhook_settle(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx, ngx_uint_t commit);
static void ngx_http_meta_webhook_cleanup(void *data);
static void ngx_http_meta_webhook_claim_done(ngx_mw_ingest_t *op);
static void ngx_http_meta_webhook_claim_again(ngx_event_t *ev);
static ngx_int_t ngx_http_meta_webhook_release_new(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx);
static void ngx_http_meta_webhook_guard(ngx_event_t *ev);
static int ngx_libc_cdecl ngx_http_meta_webhook_cmp_keys(const void *one,
    const void *two);


ngx_int_t
ngx_http_meta_webhook_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_meta_webhook_ctx_t        *ctx;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);

    if (!lcf->enable || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_meta_webhook_get_ctx(r);

    if (ctx) {
        /* re-entered once the body is read and the delivery ingested */

        if (ctx->answer) {
            ctx->answer = 0;
            rc = ngx_http_meta_webhook_send(r, NULL);
            ngx_http_finalize_request(r, rc);
            return NGX_DONE;
        }

        return ctx->status;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_meta_webhook_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The context is also kept as a pool cleanup: an error_page or other
     * internal redirect clears the module contexts, and the log phase
     * must still find the claims to settle them.
     */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_meta_webhook_cleanup;
    cln->data = ctx;

    ctx->op.data = r;
    ngx_http_set_ctx(r, ctx, ngx_http_meta_webhook_module);

    if (r->method == NGX_HTTP_GET) {
        ngx_mw_count(mmcf, handshakes, 1);
        return ngx_http_meta_webhook_handshake(r, lcf, ctx);
    }

    /* whatever the method, a verify token must not reach the logs */
    ngx_http_meta_webhook_mask_token(r);

    if (r->method != NGX_HTTP_POST) {
        ctx->result = NGX_MW_RESULT_REFUSED;
        return NGX_HTTP_NOT_ALLOWED;
    }

    ngx_mw_count(mmcf, deliveries, 1);

    /* refused on the headers alone: such a body is never read or parsed */

    rc = ngx_http_meta_webhook_signature(r, ctx);
    if (rc != NGX_OK) {
        ctx->result = NGX_MW_RESULT_REFUSED;
        return rc;
    }

    ctx->status = NGX_DONE;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_meta_webhook_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


ngx_http_meta_webhook_ctx_t *
ngx_http_meta_webhook_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_meta_webhook_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_meta_webhook_module);

    if (ctx || !r->main->internal) {
        return ctx;
    }

    for (cln = r->main->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_meta_webhook_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r->main, ctx, ngx_http_meta_webhook_module);
            return ctx;
        }
    }

    return NULL;
}


/* Compares a secret in time that depends on its length only. */

static ngx_uint_t
ngx_http_meta_webhook_equal(ngx_str_t *given, ngx_str_t *secret)
{
    u_char      diff;
    ngx_uint_t  i;

    diff = (u_char) (given->len != secret->len);

    for (i = 0; i < secret->len; i++) {
        diff |= secret->data[i] ^ (i < given->len ? given->data[i] : 0);
    }

    return diff == 0;
}


/* Overwrites every hub.verify_token value in s with '*'. */

static void
ngx_http_meta_webhook_mask_arg(ngx_str_t *s)
{
    u_char  *p, *last;

    static u_char  name[] = "hub.verify_token=";

    if (s->data == NULL) {
        return;
    }

    p = s->data;
    last = s->data + s->len;

    for ( ;; ) {
        p = ngx_strlcasestrn(p, last, name, sizeof(name) - 2);
        if (p == NULL) {
            return;
        }

        p += sizeof(name) - 1;

        /* only an argument: at the start, or after '?' or '&' */
        if (p - (sizeof(name) - 1) != s->data
            && p[-(ssize_t) sizeof(name)] != '?'
            && p[-(ssize_t) sizeof(name)] != '&')
        {
            continue;
        }

        while (p < last && *p != '&' && *p != ' ' && *p != '#') {
            *p++ = '*';
        }
    }
}


/*
 * The token travels in the query string, and so in the request line that
 * the access log and the error log's context print: once read, it is
 * masked where those find it.
 */

static void
ngx_http_meta_webhook_mask_token(ngx_http_request_t *r)
{
    if (r->args.len == 0) {
        return;
    }

    ngx_http_meta_webhook_mask_arg(&r->request_line);
    ngx_http_meta_webhook_mask_arg(&r->args);
    ngx_http_meta_webhook_mask_arg(&r->unparsed_uri);
}


static ngx_int_t
ngx_http_meta_webhook_handshake(ngx_http_request_t *r,
    ngx_http_meta_webhook_loc_conf_t *lcf, ngx_http_meta_webhook_ctx_t *ctx)
{
    u_char                             *dst, *src;
    ngx_int_t                           rc;
    ngx_str_t                           mode, token, challenge;
    ngx_uint_t                          i;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    ctx->result = NGX_MW_RESULT_REFUSED;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_arg(r, (u_char *) "hub.verify_token", 16, &token) != NGX_OK
        || token.len > 1024)
    {
        token.len = 0;
    }

    dst = ngx_pnalloc(r->pool, token.len + 1);
    if (dst == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    src = token.data;
    token.data = dst;
    ngx_unescape_uri(&dst, &src, token.len, 0);
    token.len = dst - token.data;

    ngx_http_meta_webhook_mask_token(r);

    if (ngx_http_arg(r, (u_char *) "hub.mode", 8, &mode) != NGX_OK
        || mode.len != 9 || ngx_strncmp(mode.data, "subscribe", 9) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "meta_webhook: handshake refused: "
                      "hub.mode is not \"subscribe\"");
        ngx_mw_count(mmcf, handshakes_refused, 1);
        return NGX_HTTP_FORBIDDEN;
    }

    if (lcf->verify_token.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "meta_webhook: handshake refused: "
                      "no \"meta_webhook_verify_token\" is configured");
        ngx_mw_count(mmcf, handshakes_refused, 1);
        return NGX_HTTP_FORBIDDEN;
    }

    if (!ngx_http_meta_webhook_equal(&token, &lcf->verify_token)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: handshake refused: hub.verify_token "
                      "does not match \"meta_webhook_verify_token\"");
        ngx_mw_count(mmcf, handshakes_refused, 1);
        return NGX_HTTP_FORBIDDEN;
    }

    /*
     * The challenge is reflected, so it must be harmless: Meta sends a
     * number; anything but a short token is refused, never echoed.
     */

    if (ngx_http_arg(r, (u_char *) "hub.challenge", 13, &challenge) != NGX_OK
        || challenge.len == 0 || challenge.len > NGX_MW_MAX_CHALLENGE)
    {
        goto invalid;
    }

    for (i = 0; i < challenge.len; i++) {
        if (!ngx_mw_is_token_char(challenge.data[i]))
        {
            goto invalid;
        }
    }

    ctx->result = NGX_MW_RESULT_HANDSHAKE;

    rc = ngx_http_meta_webhook_send(r, &challenge);
    ngx_http_finalize_request(r, rc);

    return NGX_DONE;

invalid:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "meta_webhook: handshake refused: hub.challenge is not a "
                  "token of at most %d characters of [A-Za-z0-9_.-]",
                  NGX_MW_MAX_CHALLENGE);
    ngx_mw_count(mmcf, handshakes_refused, 1);

    return NGX_HTTP_BAD_REQUEST;
}


static ngx_int_t
ngx_http_meta_webhook_signature(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx)
{
    ngx_uint_t                          i, n, sha1;
    ngx_list_part_t                    *part;
    ngx_table_elt_t                    *h, *sig;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    n = 0;
    sha1 = 0;
    sig = NULL;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("X-Hub-Signature-256") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-Hub-Signature-256",
                               h[i].key.len) == 0)
        {
            sig = &h[i];
            n++;

        } else if (h[i].key.len == sizeof("X-Hub-Signature") - 1
                   && ngx_strncasecmp(h[i].key.data,
                                      (u_char *) "X-Hub-Signature",
                                      h[i].key.len) == 0)
        {
            sha1 = 1;
        }
    }

    if (n == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "meta_webhook: delivery refused: no "
                      "X-Hub-Signature-256 header%s",
                      sha1 ? " (the sha1 X-Hub-Signature alone is not "
                             "accepted)" : "");
        ngx_mw_count(mmcf, signatures_missing, 1);
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (n > 1) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: delivery refused: %ui "
                      "X-Hub-Signature-256 headers", n);
        ngx_mw_count(mmcf, signatures_refused, 1);
        return NGX_HTTP_FORBIDDEN;
    }

    if (mw_sig_parse(sig->value.data, sig->value.len, ctx->expected) != 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: delivery refused: malformed "
                      "X-Hub-Signature-256 header (\"sha256=\" and 64 hex "
                      "digits expected, %uz bytes given)", sig->value.len);
        ngx_mw_count(mmcf, signatures_refused, 1);
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


static void
ngx_http_meta_webhook_body_handler(ngx_http_request_t *r)
{
    ngx_http_meta_webhook_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_meta_webhook_module);

    ctx->status = ngx_http_meta_webhook_ingest(r, ctx);

    if (ctx->status == NGX_AGAIN) {
        /* the state backend completes in a thread and resumes the phases */
        return;
    }

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * The raw body as one piece of memory: the HMAC and the parser need the
 * exact bytes, whether nginx kept them in memory or in a temporary file.
 */

ngx_int_t
ngx_http_meta_webhook_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    off_t         len, size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_set(body, "");

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    body->data = ngx_pnalloc(r->pool, (size_t) len);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = body->data;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            size = b->file_last - b->file_pos;
            n = ngx_read_file(b->file, p, (size_t) size, b->file_pos);

            if (n != (ssize_t) size) {
                ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                              "meta_webhook: could not read the body back "
                              "from \"%V\"", &b->file->name);
                return NGX_ERROR;
            }

            p += size;
            continue;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    body->len = p - body->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_meta_webhook_ingest(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx)
{
    int                                 m, rc;
    ngx_str_t                           body;
    ngx_pool_t                         *pool;
    ngx_mw_json_arena_t                *arena;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    if (ngx_http_meta_webhook_read_body(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    m = mw_sig_verify(lcf->keys, lcf->nkeys, body.data, body.len,
                      ctx->expected);

    if (m == -2) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "meta_webhook: HMAC-SHA256 failed in libcrypto");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (m < 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: delivery refused: X-Hub-Signature-256 "
                      "does not match the %uz-byte body; if Meta's "
                      "deliveries are refused, check "
                      "\"meta_webhook_app_secret_file\"", body.len);
        ngx_mw_count(mmcf, signatures_refused, 1);
        ctx->result = NGX_MW_RESULT_REFUSED;
        return NGX_HTTP_FORBIDDEN;
    }

    if (m == 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "meta_webhook: delivery signed with the previous app "
                      "secret (\"meta_webhook_app_secret_previous_file\")");
    }

    /*
     * The document's values come from a pool that goes with the request:
     * no value-by-value free of a thousand-update batch.
     */
    pool = ngx_http_meta_webhook_json_pool(r->pool);
    arena = ngx_http_meta_webhook_json_use(
                               ngx_http_meta_webhook_json_arena(r->pool));

    rc = mw_batch_parse(&ctx->batch, (const char *) body.data, body.len,
                        lcf->json_opts, &lcf->qconf, (int64_t) ngx_time());

    (void) ngx_http_meta_webhook_json_use(arena);
    (void) ngx_http_meta_webhook_json_pool(pool);

    if (rc == MW_BATCH_ENOMEM) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != MW_BATCH_OK) {
        /* signed by Meta: retrying it for 7 days would not make it usable */
        ngx_http_meta_webhook_dead_letter(r, lcf, &body, ctx->batch.error);
        mw_batch_drop(&ctx->batch);
        ngx_memzero(&ctx->batch, sizeof(mw_batch_t));

        ngx_mw_count(mmcf, dead_letters, 1);
        ctx->result = NGX_MW_RESULT_DEAD_LETTER;
        ctx->answer = 1;
        return NGX_OK;
    }

    ngx_mw_count(mmcf, updates, ctx->batch.nupdates);

    rc = ngx_http_meta_webhook_served(r, lcf, ctx);
    if (rc != NGX_OK) {
        ngx_mw_count(mmcf, unlisted, 1);
        ctx->result = NGX_MW_RESULT_REFUSED;
        return rc;
    }

    if (ctx->batch.nupdates == 0) {
        ctx->result = NGX_MW_RESULT_DUPLICATE;
        ctx->answer = 1;
        return NGX_OK;
    }

    return ngx_http_meta_webhook_claim(r, ctx);
}


/*
 * With meta_webhook_account, a delivery for a number this endpoint does
 * not serve is refused: Meta keeps retrying it, so nothing is lost while
 * the operator fixes the list.
 */

static ngx_int_t
ngx_http_meta_webhook_served(ngx_http_request_t *r,
    ngx_http_meta_webhook_loc_conf_t *lcf, ngx_http_meta_webhook_ctx_t *ctx)
{
    size_t        len, j;
    ngx_uint_t    i;
    const char   *id;
    mw_update_t  *u;

    if (lcf->accounts == NULL) {
        return NGX_OK;
    }

    for (i = 0; i < ctx->batch.nupdates; i++) {
        u = &ctx->batch.updates[i];
        id = u->phone_number_id;

        if (id == NULL || id[0] == '\0') {
            continue;
        }

        len = ngx_strlen(id);

        if (ngx_http_meta_webhook_serves(lcf, (const u_char *) id, len)) {
            continue;
        }

        /* the id comes from the payload: log it only if it is a number */

        for (j = 0; j < len; j++) {
            if (id[j] < '0' || id[j] > '9') {
                break;
            }
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: delivery refused: phone_number_id "
                      "\"%s\" is not listed in \"meta_webhook_account\"; "
                      "Meta retries it until the list is fixed",
                      (j == len && len <= 32) ? id : "(not a number)");

        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


/* Whether a phone_number_id is listed; every one is when none are. */

ngx_uint_t
ngx_http_meta_webhook_serves(ngx_http_meta_webhook_loc_conf_t *lcf,
    const u_char *id, size_t len)
{
    ngx_str_t         *num;
    ngx_uint_t         j, k;
    ngx_mw_account_t  *acc;

    if (lcf->accounts == NULL) {
        return 1;
    }

    acc = lcf->accounts->elts;

    for (j = 0; j < lcf->accounts->nelts; j++) {
        num = acc[j].numbers.elts;

        for (k = 0; k < acc[j].numbers.nelts; k++) {
            if (num[k].len == len && ngx_strncmp(num[k].data, id, len) == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/* Every inbound message opens or refreshes its contact's window. */

static ngx_uint_t
ngx_http_meta_webhook_opens_window(mw_update_t *u)
{
    return u->kind == MW_KIND_MESSAGE && u->contact[0] != '\0'
           && u->phone_number_id && u->phone_number_id[0] != '\0';
}


static ngx_uint_t
ngx_http_meta_webhook_closes_window(mw_update_t *u)
{
    return u->kind == MW_KIND_STATUS
           && u->error_code == MW_GRAPH_WINDOW_CLOSED
           && u->contact[0] != '\0'
           && u->phone_number_id && u->phone_number_id[0] != '\0';
}


static ngx_int_t
ngx_http_meta_webhook_claim(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx)
{
    ngx_int_t                           rc;
    ngx_uint_t                          i, n, nc, nk;
    mw_update_t                        *u;
    ngx_mw_ingest_t                    *op;
    ngx_mw_sorted_key_t                *sorted;
    ngx_mw_contact_op_t                *co;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    static uint64_t                     seq, salt;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    n = ctx->batch.nupdates;
    op = &ctx->op;

    ctx->skip = ngx_pcalloc(r->pool, n);
    sorted = ngx_palloc(r->pool, n * sizeof(ngx_mw_sorted_key_t));
    op->claims = ngx_palloc(r->pool, n * sizeof(ngx_mw_claim_t));
    op->contacts = ngx_palloc(r->pool, n * sizeof(ngx_mw_contact_op_t));

    if (ctx->skip == NULL || sorted == NULL || op->claims == NULL
        || op->contacts == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the same update twice in one delivery is handed off once */

    for (i = 0; i < n; i++) {
        sorted[i].key = ctx->batch.updates[i].key;
        sorted[i].index = i;
    }

    ngx_qsort(sorted, n, sizeof(ngx_mw_sorted_key_t),
              ngx_http_meta_webhook_cmp_keys);

    for (i = 1; i < n; i++) {
        if (ngx_memcmp(sorted[i].key, sorted[i - 1].key, MW_KEY_LEN) == 0) {
            ctx->skip[sorted[i].index] = 1;
        }
    }

    nk = 0;
    nc = 0;

    for (i = 0; i < n; i++) {
        u = &ctx->batch.updates[i];

        if (!ctx->skip[i]) {
            ngx_memcpy(op->claims[nk].key, u->key, MW_KEY_LEN);
            op->claims[nk].result = NGX_MW_CLAIM_NEW;
            nk++;
        }

        /*
         * Every inbound message advances its contact's window, even one
         * seen before: max() makes that idempotent, and the event needs
         * the window as it stands.
         */

        if (ngx_http_meta_webhook_opens_window(u)) {
            co = &op->contacts[nc++];
            ngx_memcpy(co->key, u->contact_key, MW_KEY_LEN);
            co->from = u->window_from;
            co->optin = u->optin;
            co->optin_ts = u->timestamp >= 0 ? u->timestamp
                                             : (int64_t) ngx_time();
            co->close = 0;
            co->expires = 0;

        } else if (ngx_http_meta_webhook_closes_window(u)) {
            /*
             * Meta is the authority on the window: its refusal of a
             * free-form message closes the window at that moment.
             */
            co = &op->contacts[nc++];
            ngx_memcpy(co->key, u->contact_key, MW_KEY_LEN);
            co->from = u->window_from;
            co->optin = MW_OPTIN_NONE;
            co->optin_ts = 0;
            co->close = 1;
            co->expires = 0;

            mw_key_sent(co->sent, u->id, u->id_len);
        }
    }

    op->nclaims = nk;
    op->ncontacts = nc;
    op->now = ngx_time();
    op->claim_timeout = lcf->claim_timeout;
    op->dedupe_ttl = lcf->dedupe_ttl;
    ctx->dedupe_ttl = lcf->dedupe_ttl;
    op->log = r->connection->log;
    op->rc = NGX_OK;

    /*
     * Unique among the workers of this host and its successors, and, with
     * a random salt, of the other nodes of a fleet (whose workers may have
     * the same pids, in containers).
     */
    if (salt == 0) {
        salt = ((uint64_t) ngx_random() << 33) ^ ((uint64_t) ngx_random() << 2)
               ^ (uint64_t) ngx_pid;
    }

    op->owner = salt ^ ((uint64_t) op->now << 20) ^ ++seq;

    if (op->owner == 0) {
        op->owner = 1;
    }

    op->pool = r->pool;
    op->done = ngx_http_meta_webhook_claim_done;

    rc = mmcf->ops->ingest(mmcf->state, op);

    if (rc == NGX_AGAIN) {
        /*
         * The state works in a thread: the request waits, blocked so that
         * nothing frees it meanwhile, and with a timer so that a worker
         * shutting down gracefully waits for it too.
         */
        ngx_http_meta_webhook_hold(r, &ctx->guard,
                                   (ngx_msec_t) lcf->claim_timeout * 1000);

        return NGX_AGAIN;
    }

    if (rc != NGX_OK) {
        op->rc = NGX_ERROR;
    }

    return ngx_http_meta_webhook_claimed(r, ctx);
}


/*
 * Gives back the claims this delivery has just made, leaving the list of
 * its claims whole (a busy delivery may claim them again).
 */

static ngx_int_t
ngx_http_meta_webhook_release_new(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx)
{
    ngx_uint_t                          i, n;
    ngx_mw_claim_t                     *held;
    ngx_mw_ingest_t                    *op;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    op = &ctx->op;
    n = 0;

    for (i = 0; i < op->nclaims; i++) {
        if (op->claims[i].result == NGX_MW_CLAIM_NEW) {
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    held = ngx_palloc(r->pool, n * sizeof(ngx_mw_claim_t));
    if (held == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < op->nclaims; i++) {
        if (op->claims[i].result == NGX_MW_CLAIM_NEW) {
            held[n++] = op->claims[i];
        }
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);
    mmcf->ops->settle(mmcf->state, held, n, op->owner, 0, 0, 0,
                      r->connection->log);

    return NGX_OK;
}


static void
ngx_http_meta_webhook_claim_again(ngx_event_t *ev)
{
    ngx_int_t                           rc;
    ngx_mw_ingest_t                    *op;
    ngx_http_request_t                 *r;
    ngx_http_meta_webhook_ctx_t        *ctx;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    r = ev->data;
    ctx = ngx_http_meta_webhook_get_ctx(r);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);
    op = &ctx->op;

    op->now = ngx_time();
    op->rc = NGX_OK;

    rc = mmcf->ops->ingest(mmcf->state, op);

    if (rc == NGX_AGAIN) {
        return;
    }

    if (rc != NGX_OK) {
        op->rc = NGX_ERROR;
    }

    op->done(op);
}


static void
ngx_http_meta_webhook_claim_done(ngx_mw_ingest_t *op)
{
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_meta_webhook_ctx_t  *ctx;

    r = op->data;
    c = r->connection;

    ctx = ngx_http_meta_webhook_get_ctx(r);

    ngx_http_meta_webhook_resume(r, &ctx->guard);

    ctx->status = ngx_http_meta_webhook_claimed(r, ctx);

    if (ctx->status == NGX_AGAIN) {
        /* busy: looked at again shortly */
        return;
    }

    if (c->error) {
        /* the request was terminated meanwhile: nothing is handed off */
        if (ctx->result == NGX_MW_RESULT_NEW) {
            ngx_http_meta_webhook_settle(r, ctx, 0);
        }

        r->write_event_handler(r);
        ngx_http_run_posted_requests(c);
        return;
    }

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/*
 * A request waiting for a thread of the pool: blocked, so that nothing
 * frees it while the thread writes into it, and with a timer, because a
 * worker shutting down gracefully waits for timers, not for threads.
 */

void
ngx_http_meta_webhook_hold(ngx_http_request_t *r, ngx_event_t *guard,
    ngx_msec_t timeout)
{
    r->main->blocked++;
    r->write_event_handler = ngx_http_request_empty_handler;

    guard->handler = ngx_http_meta_webhook_guard;
    guard->data = r;
    guard->log = r->connection->log;
    ngx_add_timer(guard, timeout);
}


/* Back on the event loop, once the thread is done. */

void
ngx_http_meta_webhook_resume(ngx_http_request_t *r, ngx_event_t *guard)
{
    ngx_http_set_log_request(r->connection->log, r);

    r->main->blocked--;

    if (guard->timer_set) {
        ngx_del_timer(guard);
    }
}


static void
ngx_http_meta_webhook_guard(ngx_event_t *ev)
{
    /* the thread's own timeouts are shorter: if this fires, only say so */
    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "meta_webhook: a thread of the pool has not finished "
                  "within its timeouts");
}


static int ngx_libc_cdecl
ngx_http_meta_webhook_cmp_keys(const void *one, const void *two)
{
    int                         rc;
    const ngx_mw_sorted_key_t  *a = one, *b = two;

    rc = ngx_memcmp(a->key, b->key, MW_KEY_LEN);

    if (rc != 0) {
        return rc;
    }

    /* keep the first occurrence first: it is the one handed off */
    return (a->index > b->index) - (a->index < b->index);
}


static ngx_int_t
ngx_http_meta_webhook_claimed(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx)
{
    ngx_uint_t                          i, j, busy, dups;
    mw_update_t                        *u;
    ngx_mw_ingest_t                    *op;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);
    op = &ctx->op;

    if (op->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "meta_webhook: delivery answered 503: the %V state "
                      "could not record it (%s); Meta retries it",
                      &mmcf->ops->name,
                      op->rc == NGX_DECLINED ? "full" : "failed");
        ngx_mw_count(mmcf, state_errors, 1);
        ctx->result = NGX_MW_RESULT_STATE_ERROR;
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    busy = 0;

    for (i = 0; i < op->nclaims; i++) {
        if (op->claims[i].result == NGX_MW_CLAIM_BUSY) {
            busy++;
        }
    }

    ctx->held = op->claims;
    ctx->nheld = 0;

    if (busy && ctx->busy_waits < NGX_MW_BUSY_WAITS) {
        /*
         * Most often the other request has been answered already and its
         * commit, made in its log phase, comes within moments: give our
         * own claims back and look again shortly, without blocking the
         * worker or a thread.
         */

        if (ngx_http_meta_webhook_release_new(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->busy_waits++;

        ngx_http_meta_webhook_hold(r, &ctx->guard,
                                   (ngx_msec_t) op->claim_timeout * 1000);

        ctx->again.handler = ngx_http_meta_webhook_claim_again;
        ctx->again.data = r;
        ctx->again.log = r->connection->log;
        ngx_add_timer(&ctx->again, NGX_MW_BUSY_WAIT);

        return NGX_AGAIN;
    }

    if (busy) {
        /*
         * Another request is handing some of these updates off right now.
         * Its outcome is unknown, so this copy must not be acknowledged:
         * forget our own claims and let Meta retry the whole delivery.
         */

        if (ngx_http_meta_webhook_release_new(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->settled = 1;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "meta_webhook: delivery answered 503: %ui of its "
                      "updates are being handed off by another request; "
                      "Meta retries it", busy);
        ngx_mw_count(mmcf, busy, 1);
        ctx->result = NGX_MW_RESULT_BUSY;
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* claims were made in update order, skipping in-delivery repeats */

    dups = 0;

    for (i = 0, j = 0; i < ctx->batch.nupdates; i++) {
        if (ctx->skip[i]) {
            dups++;
            continue;
        }

        if (op->claims[j].result == NGX_MW_CLAIM_DUPLICATE) {
            ctx->skip[i] = 1;
            dups++;

        } else {
            op->claims[ctx->nheld++] = op->claims[j];
            ngx_http_meta_webhook_classified(mmcf, &ctx->batch.updates[i]);
        }

        j++;
    }

    for (i = 0, j = 0; i < ctx->batch.nupdates && j < op->ncontacts; i++) {
        u = &ctx->batch.updates[i];

        if (ngx_http_meta_webhook_closes_window(u)) {
            j++;
            continue;
        }

        if (ngx_http_meta_webhook_opens_window(u)) {
            if (mw_event_set_window(u, op->contacts[j].expires) != 0) {
                /* nothing was handed off: Meta's retry must be processed */
                ngx_http_meta_webhook_settle(r, ctx, 0);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            j++;
        }
    }

    ctx->nnew = ctx->nheld;
    ngx_mw_count(mmcf, duplicates, dups);

    if (ctx->nnew == 0) {
        ctx->result = NGX_MW_RESULT_DUPLICATE;
        ctx->answer = 1;
        return NGX_OK;
    }

    ctx->result = NGX_MW_RESULT_NEW;

    return NGX_DECLINED;
}


static void
ngx_http_meta_webhook_classified(ngx_http_meta_webhook_main_conf_t *mmcf,
    mw_update_t *u)
{
    if (u->kind == MW_KIND_STATUS) {
        ngx_mw_count(mmcf, statuses, 1);
        return;
    }

    if (u->kind != MW_KIND_MESSAGE) {
        return;
    }

    if (u->optin == MW_OPTIN_IN) {
        ngx_mw_count(mmcf, optins, 1);

    } else if (u->optin == MW_OPTIN_OUT) {
        ngx_mw_count(mmcf, optouts, 1);
    }

    switch (u->cls) {

    case MW_CLASS_SUPPORTED:
        ngx_mw_count(mmcf, supported, 1);
        break;

    case MW_CLASS_QUARANTINED:
        ngx_mw_count(mmcf, quarantined, 1);
        break;

    case MW_CLASS_UNSUPPORTED:

        if (u->reason == NULL) {
            break;
        }

        if (ngx_strcmp(u->reason, "reaction") == 0) {
            ngx_mw_count(mmcf, unsupported_reaction, 1);

        } else if (ngx_strcmp(u->reason, "deleted") == 0) {
            ngx_mw_count(mmcf, unsupported_deleted, 1);

        } else if (ngx_strcmp(u->reason, "unsupported_attachment") == 0) {
            ngx_mw_count(mmcf, unsupported_attachment, 1);

        } else {
            ngx_mw_count(mmcf, unsupported_type, 1);
        }

        break;

    default:
        break;
    }
}


/*
 * Keeps a signed but unusable body for the operator.  Whatever the
 * detectors and rules would quarantine is masked first: hidden content
 * must not surface through the dead-letter directory either.
 */

static void
ngx_http_meta_webhook_dead_letter(ngx_http_request_t *r,
    ngx_http_meta_webhook_loc_conf_t *lcf, ngx_str_t *body,
    const char *reason)
{
    u_char          *copy, *name;
    size_t           masked;
    ssize_t          n;
    ngx_fd_t         fd;
    const char      *parts[1];
    unsigned char    key[MW_KEY_LEN];
    char             hex[MW_KEY_HEX_LEN + 1];
    size_t           lens[1];

    parts[0] = (const char *) body->data;
    lens[0] = body->len;
    mw_key_make(key, MW_KEY_DEDUPE, parts, lens, 1);
    mw_key_hex(key, hex);

    if (lcf->dead_letter_path.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "meta_webhook: signed delivery %s of %uz bytes is "
                      "unusable (%s) and answered 200; it is not kept: "
                      "set \"meta_webhook_dead_letter_path\"",
                      hex, body->len, reason);
        return;
    }

    copy = ngx_pnalloc(r->pool, body->len + 1);
    name = ngx_pnalloc(r->pool, lcf->dead_letter_path.len
                                + sizeof("/-.json") + NGX_TIME_T_LEN
                                + MW_KEY_HEX_LEN);
    if (copy == NULL || name == NULL) {
        goto failed;
    }

    ngx_memcpy(copy, body->data, body->len);
    masked = mw_quarantine_redact(&lcf->qconf, (char *) copy, body->len);

    (void) ngx_sprintf(name, "%V/%T-%s.json%Z", &lcf->dead_letter_path,
                    ngx_time(), hex);

    fd = ngx_open_file(name, NGX_FILE_WRONLY, NGX_FILE_TRUNCATE, 0600);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                      "meta_webhook: " ngx_open_file_n " \"%s\" failed",
                      name);
        goto failed;
    }

    n = ngx_write_fd(fd, copy, body->len);

    if (ngx_close_file(fd) == NGX_FILE_ERROR || n != (ssize_t) body->len) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                      "meta_webhook: could not write \"%s\"", name);
        goto failed;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "meta_webhook: signed delivery of %uz bytes is unusable "
                  "(%s); kept as \"%s\"%s and answered 200",
                  body->len, reason, name,
                  masked ? " with quarantined content masked" : "");
    return;

failed:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "meta_webhook: signed delivery %s of %uz bytes is "
                  "unusable (%s) and answered 200, but could not be kept",
                  hex, body->len, reason);
}


static ngx_int_t
ngx_http_meta_webhook_send(ngx_http_request_t *r, ngx_str_t *text)
{
    return ngx_http_meta_webhook_respond(r, NGX_HTTP_OK, "text/plain",
                                         text ? text->data : NULL,
                                         text ? text->len : 0);
}


/* Answers with a body of the module's own, whatever the status. */

ngx_int_t
ngx_http_meta_webhook_respond(ngx_http_request_t *r, ngx_uint_t status,
    char *type, u_char *data, size_t len)
{
    ngx_str_t                  ct;
    ngx_http_complex_value_t   cv;

    ngx_memzero(&cv, sizeof(ngx_http_complex_value_t));

    cv.value.data = data;
    cv.value.len = len;

    ct.data = (u_char *) type;
    ct.len = ngx_strlen(type);

    return ngx_http_send_response(r, status, &ct, &cv);
}


ngx_int_t
ngx_http_meta_webhook_content_handler(ngx_http_request_t *r)
{
    ngx_http_meta_webhook_ctx_t  *ctx;

    ctx = ngx_http_meta_webhook_get_ctx(r);

    if (ctx == NULL || ctx->result != NGX_MW_RESULT_NEW) {
        /* only an ingested delivery reaches here; anything else is lost */
        return NGX_HTTP_NOT_FOUND;
    }

    return ngx_http_meta_webhook_send(r, NULL);
}


static void
ngx_http_meta_webhook_settle(ngx_http_request_t *r,
    ngx_http_meta_webhook_ctx_t *ctx, ngx_uint_t commit)
{
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    if (ctx->settled) {
        return;
    }

    ctx->settled = 1;

    if (ctx->nheld == 0) {
        return;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    /* the TTL was taken when claiming: a redirect may change location */
    mmcf->ops->settle(mmcf->state, ctx->held, ctx->nheld, ctx->op.owner,
                      commit, ctx->dedupe_ttl,
                      ctx->op.now + ctx->op.claim_timeout,
                      r->connection->log);
}


/*
 * Whether the application has the updates: the answer Meta got was a 2xx
 * (it will not retry), or the upstream answered 2xx even if Meta hung up
 * meanwhile (the application has them; Meta's retry is a duplicate).
 */

static ngx_uint_t
ngx_http_meta_webhook_handed_off(ngx_http_request_t *r)
{
    ngx_uint_t                  status;
    ngx_http_upstream_state_t  *state;

    status = r->headers_out.status;

    if (status >= 200 && status < 300) {
        return 1;
    }

    if (r->upstream_states == NULL || r->upstream_states->nelts == 0) {
        return 0;
    }

    state = r->upstream_states->elts;
    status = state[r->upstream_states->nelts - 1].status;

    return (status >= 200 && status < 300);
}


ngx_int_t
ngx_http_meta_webhook_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                          status, commit;
    ngx_http_meta_webhook_ctx_t        *ctx;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_meta_webhook_get_ctx(r);

    if (ctx == NULL || ctx->settled || ctx->result != NGX_MW_RESULT_NEW) {
        return NGX_OK;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    status = r->headers_out.status;
    commit = ngx_http_meta_webhook_handed_off(r);

    ngx_http_meta_webhook_settle(r, ctx, commit);

    if (commit) {
        ngx_mw_count(mmcf, handed_off, ctx->nheld);
        return NGX_OK;
    }

    ngx_mw_count(mmcf, released, ctx->nheld);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "meta_webhook: hand-off answered %ui: %ui updates "
                  "released, Meta's retry will hand them off",
                  status, ctx->nheld);

    return NGX_OK;
}


static void
ngx_http_meta_webhook_cleanup(void *data)
{
    ngx_http_meta_webhook_ctx_t *ctx = data;

    ngx_http_request_t                 *r;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    /*
     * A request that ends without its log phase (a worker shutting down)
     * releases its claims here rather than leaving them to their lease.
     */

    if (!ctx->settled && ctx->nheld && ctx->result == NGX_MW_RESULT_NEW) {
        r = ctx->op.data;
        mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

        ctx->settled = 1;
        mmcf->ops->settle(mmcf->state, ctx->held, ctx->nheld, ctx->op.owner,
                          0, 0, 0, ngx_cycle->log);
    }

    /* the values are in the request's pool: only the batch's own memory */
    mw_batch_drop(&ctx->batch);
}
