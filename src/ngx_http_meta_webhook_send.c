/*
 * The send path: Meta's send-message request, with the base URL pointed
 * at nginx.
 *
 *   POST <location>/[vXX.X/]{phone_number_id}/messages
 *        validated (core), decided and counted under the state's lock
 *        (reserve), then forwarded to {graph_url}/{phone_number_id}/
 *        messages with libcurl in a thread pool; Meta's answer is passed
 *        back, and what was counted is given back when Meta refuses.
 *
 *   GET  <location>/[vXX.X/]{phone_number_id}/sessions/{contact}
 *        the contact's window and accounting, for an inbox to show.
 *
 * The request waits for the thread under r->main->blocked, holding the
 * count its content handler left, so neither a client that goes away nor
 * a worker that shuts down frees it while libcurl still writes into it.
 */

#include "ngx_http_meta_webhook.h"

#include <curl/curl.h>


#define NGX_MW_RESPONSE_MAX   (1024 * 1024)
#define NGX_MW_RESPONSE_FIRST 4096

typedef enum {
    NGX_MW_PATH_MESSAGES = 1,
    NGX_MW_PATH_SESSION
} ngx_mw_path_e;


typedef struct {
    ngx_uint_t                  kind;          /* ngx_mw_path_e */
    ngx_str_t                   phone_number_id;
    ngx_str_t                   contact;
} ngx_mw_path_t;


/* a session query or the status page, reading the state */

typedef struct {
    ngx_http_request_t         *request;
    ngx_mw_state_ops_t         *ops;
    void                       *state;
    ngx_uint_t                  status_page;

    u_char                      key[MW_KEY_LEN];       /* a session's */
    ngx_str_t                   phone_number_id;
    char                        contact[MW_CONTACT_MAX];
    ngx_mw_send_op_t            op;                    /* the periods */

    ngx_int_t                   rc;
    mw_contact_state_t          cs;
    int64_t                     used;
    int64_t                     daily;

    ngx_event_t                 guard;
} ngx_mw_read_task_t;


/* what a thread needs and gives back: no pointer into nginx's pools */

typedef struct {
    ngx_http_request_t         *request;
    ngx_mw_send_op_t            op;

    /* a blocking state is asked in the thread, around the call */
    ngx_mw_state_ops_t         *ops;
    void                       *state;
    ngx_uint_t                  blocking;

    char                       *url;
    char                       *auth;
    u_char                     *body;
    size_t                      body_len;
    ngx_uint_t                  attempts;      /* requests libcurl began */

    /*
     * A timer for the call's lifetime: a worker shutting down gracefully
     * (reload, quit) waits for timers, and would otherwise leave while
     * the call is in flight.
     */
    ngx_event_t                 guard;
    long                        connect_timeout;
    long                        timeout;

    long                        status;
    int                         curl_rc;
    u_char                     *response;      /* malloc()ed */
    size_t                      response_len;
    size_t                      response_size;
    ngx_uint_t                  truncated;
    char                        error[CURL_ERROR_SIZE];
} ngx_mw_send_task_t;


static ngx_int_t ngx_http_meta_webhook_not_allowed(ngx_http_request_t *r,
    char *allow);
static ngx_int_t ngx_http_meta_webhook_parse_path(ngx_http_request_t *r,
    ngx_mw_path_t *path);
static int ngx_http_meta_webhook_curl_prereq(void *userdata,
    char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
    int conn_local_port);
static ngx_int_t ngx_http_meta_webhook_session(ngx_http_request_t *r,
    ngx_mw_path_t *path);
static ngx_int_t ngx_http_meta_webhook_session_answer(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt);
static ngx_int_t ngx_http_meta_webhook_read_state(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt);
static void ngx_http_meta_webhook_read_thread(void *data, ngx_log_t *log);
static void ngx_http_meta_webhook_read_done(ngx_event_t *ev);
static ngx_int_t ngx_http_meta_webhook_read_answer(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt);
static ngx_int_t ngx_http_meta_webhook_status_answer(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt);
static void ngx_http_meta_webhook_send_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_meta_webhook_send_start(ngx_http_request_t *r);
static ngx_int_t ngx_http_meta_webhook_verdict(ngx_http_request_t *r,
    ngx_mw_send_task_t *t);
static void ngx_http_meta_webhook_send_thread(void *data, ngx_log_t *log);
static void ngx_http_meta_webhook_curl(ngx_mw_send_task_t *t);
static void ngx_http_meta_webhook_record_sent(ngx_mw_send_task_t *t);
static size_t ngx_http_meta_webhook_curl_write(char *ptr, size_t size,
    size_t nmemb, void *userdata);
static void ngx_http_meta_webhook_send_done(ngx_event_t *ev);
static ngx_int_t ngx_http_meta_webhook_send_finish(ngx_http_request_t *r,
    ngx_mw_send_task_t *t);
static ngx_int_t ngx_http_meta_webhook_refuse(ngx_http_request_t *r,
    ngx_uint_t status, int code, const char *message, const char *details);
static void ngx_http_meta_webhook_count_graph_error(
    ngx_http_meta_webhook_main_conf_t *mmcf, ngx_mw_send_task_t *t);


ngx_int_t
ngx_http_meta_webhook_send_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_mw_path_t                       path;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    if (ngx_http_meta_webhook_parse_path(r, &path) != NGX_OK) {
        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_NOT_FOUND,
                   MW_GRAPH_PARAM_INVALID,
                   "unknown path: POST {phone_number_id}/messages or GET "
                   "{phone_number_id}/sessions/{contact} expected", NULL);
    }

    if (path.kind == NGX_MW_PATH_MESSAGES) {
        /* every send is counted once, then in exactly one outcome */
        ngx_mw_count(mmcf, sends, 1);

        if (r->method != NGX_HTTP_POST) {
            ngx_mw_count(mmcf, refused_invalid, 1);
            return ngx_http_meta_webhook_not_allowed(r, "POST");
        }
    }

    if (!ngx_http_meta_webhook_serves(lcf, path.phone_number_id.data,
                                      path.phone_number_id.len))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: send refused: phone_number_id \"%V\" "
                      "is not listed in \"meta_webhook_account\"",
                      &path.phone_number_id);
        ngx_mw_count(mmcf, refused_forbidden, 1);

        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_FORBIDDEN, 200,
                   "this phone_number_id is not served here", NULL);
    }

    if (path.kind == NGX_MW_PATH_SESSION) {
        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
            return ngx_http_meta_webhook_not_allowed(r, "GET, HEAD");
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_meta_webhook_session(r, &path);
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_meta_webhook_send_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_meta_webhook_not_allowed(ngx_http_request_t *r, char *allow)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_meta_webhook_refuse(r, NGX_HTTP_NOT_ALLOWED,
               MW_GRAPH_PARAM_INVALID, "method not allowed here", NULL);
}


/*
 * The path below the location: an optional Graph API version, the
 * business number, then "messages", or "sessions" and a contact.
 */

static ngx_int_t
ngx_http_meta_webhook_parse_path(ngx_http_request_t *r, ngx_mw_path_t *path)
{
    u_char                    *p, *last, *seg[4];
    size_t                     len[4];
    ngx_uint_t                 n, i, first;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    last = r->uri.data + r->uri.len;

    if (clcf->name.len <= r->uri.len
        && ngx_strncmp(p, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    n = 0;

    while (p < last) {
        if (*p == '/') {
            p++;
            continue;
        }

        if (n == 4) {
            return NGX_ERROR;
        }

        seg[n] = p;

        while (p < last && *p != '/') {
            p++;
        }

        len[n] = p - seg[n];
        n++;
    }

    first = 0;

    if (n > 0 && len[0] > 1 && seg[0][0] == 'v'
        && seg[0][1] >= '0' && seg[0][1] <= '9')
    {
        first = 1;
    }

    if (n - first < 2) {
        return NGX_ERROR;
    }

    path->phone_number_id.data = seg[first];
    path->phone_number_id.len = len[first];

    for (i = 0; i < len[first]; i++) {
        if (seg[first][i] < '0' || seg[first][i] > '9') {
            return NGX_ERROR;
        }
    }

    if (len[first] == 0 || len[first] > 32) {
        return NGX_ERROR;
    }

    if (n - first == 2 && len[first + 1] == 8
        && ngx_strncmp(seg[first + 1], "messages", 8) == 0)
    {
        path->kind = NGX_MW_PATH_MESSAGES;
        return NGX_OK;
    }

    if (n - first == 3 && len[first + 1] == 8
        && ngx_strncmp(seg[first + 1], "sessions", 8) == 0)
    {
        path->kind = NGX_MW_PATH_SESSION;
        path->contact.data = seg[first + 2];
        path->contact.len = len[first + 2];
        return NGX_OK;
    }

    return NGX_ERROR;
}


/* The periods a send counts in, and their state keys. */

void
ngx_http_meta_webhook_periods(ngx_http_meta_webhook_loc_conf_t *lcf,
    time_t now, ngx_mw_send_op_t *op)
{
    size_t       lens[2];
    int64_t      start;
    const char  *parts[2];
    u_char       num[NGX_INT64_LEN];

    mw_period(now, (int) lcf->anchor_day, lcf->tz_offset, &start,
              &op->period_end);

    parts[0] = "period";
    lens[0] = sizeof("period") - 1;
    parts[1] = (const char *) num;
    lens[1] = ngx_sprintf(num, "%L", start) - num;
    mw_key_make(op->period, MW_KEY_COUNTER, parts, lens, 2);

    mw_day(now, lcf->tz_offset, &start, &op->day_end);

    parts[0] = "day";
    lens[0] = sizeof("day") - 1;
    lens[1] = ngx_sprintf(num, "%L", start) - num;
    mw_key_make(op->day, MW_KEY_COUNTER, parts, lens, 2);

    op->limits.limit = lcf->conversation_limit;
    op->limits.daily_limit = lcf->business_verified ? 0 : NGX_MW_DAILY_CAP;
    op->limits.require_optin = (int) lcf->require_optin;
}


static ngx_int_t
ngx_http_meta_webhook_session(ngx_http_request_t *r, ngx_mw_path_t *path)
{
    int                     n;
    u_char                 *p, *src;
    ngx_str_t               contact;
    ngx_mw_read_task_t     *rt;

    rt = ngx_pcalloc(r->pool, sizeof(ngx_mw_read_task_t));
    if (rt == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the contact may be written "+1 650 555 1234": unescape it first */

    contact.data = ngx_pnalloc(r->pool, path->contact.len + 1);
    if (contact.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = contact.data;
    src = path->contact.data;
    ngx_unescape_uri(&p, &src, path->contact.len, 0);
    contact.len = p - contact.data;

    n = mw_contact_normalize((const char *) contact.data, contact.len,
                             rt->contact);

    if (n < 0) {
        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_BAD_REQUEST,
                   MW_GRAPH_PARAM_INVALID, "the contact is not a phone "
                   "number or a user id", NULL);
    }

    mw_key_contact(rt->key, (const char *) path->phone_number_id.data,
                   path->phone_number_id.len, rt->contact, (size_t) n);

    rt->phone_number_id = path->phone_number_id;

    return ngx_http_meta_webhook_read_state(r, rt);
}


static ngx_int_t
ngx_http_meta_webhook_session_answer(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt)
{
    u_char              *p, *buf;
    time_t               now;
    const char          *optin;
    mw_contact_state_t  *cs;

    if (rt->rc != NGX_OK) {
        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   2, "the state cannot be read now", NULL);
    }

    cs = &rt->cs;
    now = ngx_time();

    optin = cs->optin == MW_OPTIN_IN ? "in"
            : cs->optin == MW_OPTIN_OUT ? "out" : "none";

    buf = ngx_pnalloc(r->pool, 256 + MW_CONTACT_MAX
                               + rt->phone_number_id.len);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(buf, "{\"phone_number_id\":\"%V\",\"contact\":\"%s\","
                    "\"open\":%s,\"expires_at\":%L,\"session_started_at\":%L,"
                    "\"conversation_counted\":%s,\"optin\":\"%s\"}",
                    &rt->phone_number_id, rt->contact,
                    mw_window_open(cs->window, now) ? "true" : "false",
                    cs->window, cs->session,
                    (mw_window_open(cs->window, now)
                     && cs->counted >= cs->session && cs->counted != 0)
                    ? "true" : "false",
                    optin);

    return ngx_http_meta_webhook_respond(r, NGX_HTTP_OK, "application/json",
                                         buf, p - buf);
}


/*
 * Reads what a session query or the status page shows: at once from a
 * state that does not block, in a thread from one that does.
 */

static ngx_int_t
ngx_http_meta_webhook_read_state(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt)
{
    ngx_thread_task_t                  *task;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    rt->request = r;
    rt->ops = mmcf->ops;
    rt->state = mmcf->state;

    if (mmcf->ops == NULL) {
        rt->rc = NGX_ERROR;
        return ngx_http_meta_webhook_read_answer(r, rt);
    }

    if (!mmcf->ops->blocking) {
        ngx_http_meta_webhook_read_thread(rt, r->connection->log);
        return ngx_http_meta_webhook_read_answer(r, rt);
    }

#if (NGX_THREADS)

    task = ngx_thread_task_alloc(r->pool, 0);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    task->ctx = rt;
    task->handler = ngx_http_meta_webhook_read_thread;
    task->event.handler = ngx_http_meta_webhook_read_done;
    task->event.data = rt;

    if (lcf->thread_pool == NULL) {
        lcf->thread_pool = ngx_thread_pool_get((ngx_cycle_t *) ngx_cycle,
                                               &lcf->thread_pool_name);
    }

    if (lcf->thread_pool == NULL
        || ngx_thread_task_post(lcf->thread_pool, task) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* counted for the finalization when the thread is done */
    r->main->count++;
    ngx_http_meta_webhook_hold(r, &rt->guard, 10000);

    return NGX_DONE;

#else

    return NGX_HTTP_INTERNAL_SERVER_ERROR;

#endif
}


static void
ngx_http_meta_webhook_read_thread(void *data, ngx_log_t *log)
{
    ngx_mw_read_task_t *rt = data;

    if (!rt->status_page) {
        rt->rc = rt->ops->contact(rt->state, rt->key, &rt->cs);
        return;
    }

    rt->rc = NGX_OK;

    if (rt->ops->counter(rt->state, rt->op.period, &rt->used) != NGX_OK) {
        rt->used = -1;
    }

    if (rt->ops->counter(rt->state, rt->op.day, &rt->daily) != NGX_OK) {
        rt->daily = -1;
    }
}


static void
ngx_http_meta_webhook_read_done(ngx_event_t *ev)
{
    ngx_mw_read_task_t *rt = ev->data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = rt->request;
    c = r->connection;

    ngx_http_meta_webhook_resume(r, &rt->guard);

    rc = ngx_http_meta_webhook_read_answer(r, rt);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_meta_webhook_read_answer(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt)
{
    return rt->status_page ? ngx_http_meta_webhook_status_answer(r, rt)
                           : ngx_http_meta_webhook_session_answer(r, rt);
}


static void
ngx_http_meta_webhook_send_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_meta_webhook_send_start(r);

    if (rc == NGX_AGAIN) {
        /* the thread's completion finalizes the request */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_meta_webhook_send_start(ngx_http_request_t *r)
{
    size_t                              len;
    ngx_int_t                           rc;
    ngx_str_t                           body, id;
    mw_send_req_t                       req;
    mw_send_err_t                       err;
    ngx_mw_path_t                       path;
    ngx_thread_task_t                  *task;
    ngx_mw_send_task_t                 *t;
    ngx_mw_json_arena_t                *arena, *prev;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    if (ngx_http_meta_webhook_parse_path(r, &path) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    id = path.phone_number_id;

    if (ngx_http_meta_webhook_read_body(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&req, sizeof(mw_send_req_t));

    /*
     * The request's document from an arena: no malloc() per value.  Only
     * the normalized contact and the type are used after validation
     * (copied into req), so the document and its arena go back before
     * the call: sixteen sends in flight need one arena, not sixteen.
     */
    arena = ngx_http_meta_webhook_json_arena_get(r->connection->log);
    prev = ngx_http_meta_webhook_json_use(arena);

    rc = mw_send_parse(&req, (const char *) body.data, body.len, &err);

    (void) ngx_http_meta_webhook_json_use(prev);

    mw_send_free(&req);
    ngx_http_meta_webhook_json_arena_put(arena);

    if (rc != 0) {
        ngx_mw_count(mmcf, refused_invalid, 1);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "meta_webhook: send refused: %s", err.message);

        return ngx_http_meta_webhook_refuse(r, err.status, err.code,
                                            err.message, NULL);
    }

    task = ngx_thread_task_alloc(r->pool, sizeof(ngx_mw_send_task_t));
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t = task->ctx;
    t->request = r;

    mw_key_contact(t->op.contact, (const char *) id.data, id.len,
                   req.contact, ngx_strlen(req.contact));

    t->op.is_template = req.is_template;
    t->op.now = ngx_time();
    t->op.log = r->connection->log;
    ngx_http_meta_webhook_periods(lcf, t->op.now, &t->op);

    t->ops = mmcf->ops;
    t->state = mmcf->state;
    t->blocking = mmcf->ops->blocking;

    if (!t->blocking) {
        if (mmcf->ops->reserve(mmcf->state, &t->op) != NGX_OK) {
            t->op.rc = NGX_ERROR;
        }

        rc = ngx_http_meta_webhook_verdict(r, t);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    /* forward the client's exact bytes with the configured token */

    len = lcf->graph_url.len + sizeof("/") + id.len + sizeof("/messages");

    t->url = ngx_pnalloc(r->pool, len);
    if (t->url == NULL) {
        goto failed;
    }

    (void) ngx_sprintf((u_char *) t->url, "%V/%V/messages%Z",
                       &lcf->graph_url, &id);

    t->auth = (char *) lcf->auth_header.data;
    t->body = body.data;
    t->body_len = body.len;
    t->connect_timeout = (long) lcf->graph_connect_timeout;
    t->timeout = (long) lcf->graph_timeout;

    task->handler = ngx_http_meta_webhook_send_thread;
    task->event.handler = ngx_http_meta_webhook_send_done;
    task->event.data = t;

    if (ngx_thread_task_post(lcf->thread_pool, task) != NGX_OK) {
        goto failed;
    }

    ngx_http_meta_webhook_hold(r, &t->guard, lcf->graph_timeout
                                             + lcf->graph_connect_timeout
                                             + 5000);

    return NGX_AGAIN;

failed:

    if (!t->blocking) {
        mmcf->ops->unreserve(mmcf->state, &t->op);
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * The answer to a send the rules refused, or NGX_DECLINED when it may go.
 */

static ngx_int_t
ngx_http_meta_webhook_verdict(ngx_http_request_t *r, ngx_mw_send_task_t *t)
{
    u_char                             *p;
    const char                         *why;
    ngx_http_meta_webhook_main_conf_t  *mmcf;
    u_char                              when[NGX_INT64_LEN + 64];

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    if (t->op.rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "meta_webhook: send refused: the %V state cannot "
                      "count it now", &mmcf->ops->name);
        ngx_mw_count(mmcf, refused_state, 1);

        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   2, "the conversation state cannot be updated now; "
                   "nothing was sent", NULL);
    }

    switch (t->op.d.verdict) {

    case MW_SEND_ALLOW:
        return NGX_DECLINED;

    case MW_SEND_WINDOW_CLOSED:
        ngx_mw_count(mmcf, refused_window, 1);

        if (t->op.cs.window) {
            p = ngx_sprintf(when, "the window closed at %L (Unix time)%Z",
                            t->op.cs.window);
        } else {
            p = ngx_sprintf(when, "the contact has not written to this "
                            "number%Z");
        }

        (void) p;

        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_BAD_REQUEST,
                   MW_GRAPH_WINDOW_CLOSED,
                   "Re-engagement message: more than 24 hours have passed "
                   "since the recipient last replied; only a template may "
                   "be sent", (const char *) when);

    case MW_SEND_LIMIT:
    case MW_SEND_DAILY_LIMIT:

        if (t->op.d.verdict == MW_SEND_LIMIT) {
            ngx_mw_count(mmcf, refused_limit, 1);
            why = "the conversation limit of this period is reached "
                  "(meta_webhook_conversation_limit)";
            p = ngx_sprintf(when, "%L conversations used; the limit resets "
                            "at %L (Unix time)%Z", t->op.limits.used,
                            t->op.period_end);

        } else {
            ngx_mw_count(mmcf, refused_daily, 1);
            why = "an unverified business may start 50 conversations a day "
                  "(meta_webhook_business_verified off)";
            p = ngx_sprintf(when, "%L business-initiated conversations "
                            "today; the cap resets at %L (Unix time)%Z",
                            t->op.limits.daily_used, t->op.day_end);
        }

        (void) p;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: send refused: %s", why);

        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_TOO_MANY_REQUESTS,
                   4,
                   why, (const char *) when);

    case MW_SEND_NO_OPTIN:
    case MW_SEND_OPTED_OUT:
        ngx_mw_count(mmcf, refused_optin, 1);

        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_FORBIDDEN, 200,
                   t->op.d.verdict == MW_SEND_OPTED_OUT
                   ? "the contact opted out (STOP): business-initiated "
                     "messages are not sent"
                   : "the contact has not opted in (YES, START or "
                     "SUBSCRIBE): business-initiated messages are not sent",
                   NULL);
    }

    return NGX_DECLINED;
}


/* In a thread of the pool: no nginx call but for logging. */

static void
ngx_http_meta_webhook_send_thread(void *data, ngx_log_t *log)
{
    ngx_mw_send_task_t *t = data;

    ngx_uint_t  ok;

    if (t->blocking) {
        /* decided and counted here: the state blocks */
        t->op.log = log;

        if (t->ops->reserve(t->state, &t->op) != NGX_OK) {
            t->op.rc = NGX_ERROR;
        }

        if (t->op.rc != NGX_OK || t->op.d.verdict != MW_SEND_ALLOW) {
            return;
        }
    }

    ngx_http_meta_webhook_curl(t);

    if (!t->blocking) {
        return;
    }

    ok = (t->curl_rc == CURLE_OK && t->status >= 200 && t->status < 300);

    if (ok) {
        ngx_http_meta_webhook_record_sent(t);

    } else {
        t->ops->unreserve(t->state, &t->op);
    }
}


/*
 * One handle per thread, kept, so that keep-alive to Meta holds.  What
 * never changes is set once on it; what belongs to a request is set for
 * each, every time, so that nothing of one request is left for the next.
 * The header list depends on the token only: kept while the token is the
 * same.
 */

static MW_TLS CURL               *ngx_mw_curl;
static MW_TLS struct curl_slist  *ngx_mw_curl_headers;
static MW_TLS u_char             *ngx_mw_curl_auth;


static CURL *
ngx_http_meta_webhook_curl_handle(void)
{
    CURL  *curl;

    if (ngx_mw_curl) {
        return ngx_mw_curl;
    }

    curl = curl_easy_init();
    if (curl == NULL) {
        return NULL;
    }

    /*
     * libcurl sends a request again, on a new connection, when the
     * kept-alive one it was sent on dies before any answer: the message
     * may have arrived, and may not go out twice.  The callback it calls
     * before each request it begins refuses the second.
     */
    (void) curl_easy_setopt(curl, CURLOPT_POST, 1L);
    (void) curl_easy_setopt(curl, CURLOPT_PREREQFUNCTION,
                            ngx_http_meta_webhook_curl_prereq);
    (void) curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION,
                            ngx_http_meta_webhook_curl_write);

    /* timers, not signals: this is one thread among nginx's */
    (void) curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);

    (void) curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    (void) curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    (void) curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    (void) curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    (void) curl_easy_setopt(curl, CURLOPT_USERAGENT, "nginx-meta-webhook");

    ngx_mw_curl = curl;

    return curl;
}


static struct curl_slist *
ngx_http_meta_webhook_curl_header_list(const char *auth)
{
    size_t              len;
    struct curl_slist  *headers, *h;

    if (ngx_mw_curl_headers && ngx_strcmp(ngx_mw_curl_auth, auth) == 0) {
        return ngx_mw_curl_headers;
    }

    if (ngx_mw_curl_headers) {
        curl_slist_free_all(ngx_mw_curl_headers);
        ngx_mw_curl_headers = NULL;
        ngx_free(ngx_mw_curl_auth);
        ngx_mw_curl_auth = NULL;
    }

    len = ngx_strlen(auth) + 1;

    ngx_mw_curl_auth = ngx_alloc(len, ngx_cycle->log);
    if (ngx_mw_curl_auth == NULL) {
        return NULL;
    }

    ngx_memcpy(ngx_mw_curl_auth, auth, len);

    headers = curl_slist_append(NULL, auth);
    h = headers ? curl_slist_append(headers, "Content-Type: application/json")
                : NULL;
    h = h ? curl_slist_append(h, "Expect:") : NULL;

    if (h == NULL) {
        curl_slist_free_all(headers);
        ngx_free(ngx_mw_curl_auth);
        ngx_mw_curl_auth = NULL;
        return NULL;
    }

    ngx_mw_curl_headers = h;

    return h;
}


static void
ngx_http_meta_webhook_curl(ngx_mw_send_task_t *t)
{
    CURL               *curl;
    struct curl_slist  *headers;

    curl = ngx_http_meta_webhook_curl_handle();
    if (curl == NULL) {
        t->curl_rc = CURLE_FAILED_INIT;
        return;
    }

    headers = ngx_http_meta_webhook_curl_header_list(t->auth);
    if (headers == NULL) {
        t->curl_rc = CURLE_OUT_OF_MEMORY;
        return;
    }

    (void) curl_easy_setopt(curl, CURLOPT_URL, t->url);
    (void) curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

    /*
     * The body from memory, not through a read callback: libcurl then
     * sends it in the same packet as the headers (one send() and no
     * 64 KB upload buffer per call).
     */
    (void) curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t) t->body_len);
    (void) curl_easy_setopt(curl, CURLOPT_POSTFIELDS, t->body);
    (void) curl_easy_setopt(curl, CURLOPT_PREREQDATA, t);
    (void) curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
    (void) curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, t->error);
    (void) curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                            t->connect_timeout);
    (void) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, t->timeout);

    t->error[0] = '\0';
    t->curl_rc = curl_easy_perform(curl);

    if (t->curl_rc == CURLE_OK) {
        (void) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &t->status);
    }

    /* the task and its error buffer end with the request: unhook them */
    (void) curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
    (void) curl_easy_setopt(curl, CURLOPT_PREREQDATA, NULL);
    (void) curl_easy_setopt(curl, CURLOPT_WRITEDATA, NULL);
    (void) curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
}


/*
 * Connected (or a kept-alive connection taken), the request about to be
 * sent: from now on the message may reach Meta.  A second request in the
 * same call is libcurl's resend after a connection died unanswered.
 */

static int
ngx_http_meta_webhook_curl_prereq(void *userdata, char *conn_primary_ip,
    char *conn_local_ip, int conn_primary_port, int conn_local_port)
{
    ngx_mw_send_task_t *t = userdata;

    if (t->attempts++) {
        return CURL_PREREQFUNC_ABORT;
    }

    return CURL_PREREQFUNC_OK;
}


static size_t
ngx_http_meta_webhook_curl_write(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    ngx_mw_send_task_t *t = userdata;

    size_t   n, room, want;
    u_char  *p;

    n = size * nmemb;

    /*
     * Meta's answers are a few hundred bytes: the buffer starts small and
     * doubles.  A buffer of the largest size on every send came from the
     * top of the thread's heap, which glibc gave back after each send and
     * the kernel faulted in again for the next.
     */

    if (n > t->response_size - t->response_len) {

        want = t->response_size ? t->response_size : NGX_MW_RESPONSE_FIRST;

        while (want < t->response_len + n && want < NGX_MW_RESPONSE_MAX) {
            want *= 2;
        }

        if (want > NGX_MW_RESPONSE_MAX) {
            want = NGX_MW_RESPONSE_MAX;
        }

        if (want > t->response_size) {
            p = realloc(t->response, want);
            if (p == NULL) {
                return 0;
            }

            t->response = p;
            t->response_size = want;
        }
    }

    room = t->response_size - t->response_len;

    if (n > room) {
        /* an answer this large is not Meta's: keep what fits */
        t->truncated = 1;
        n = room;
    }

    p = t->response + t->response_len;
    memcpy(p, ptr, n);
    t->response_len += n;

    return size * nmemb;
}


static void
ngx_http_meta_webhook_send_done(ngx_event_t *ev)
{
    ngx_mw_send_task_t *t = ev->data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = t->request;
    c = r->connection;

    ngx_http_meta_webhook_resume(r, &t->guard);

    rc = ngx_http_meta_webhook_send_finish(r, t);

    free(t->response);
    t->response = NULL;
    t->response_size = 0;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_meta_webhook_send_finish(ngx_http_request_t *r,
    ngx_mw_send_task_t *t)
{
    u_char                             *p;
    ngx_int_t                           rc;
    ngx_uint_t                          ok;
    ngx_mw_json_arena_t                *arena, *prev;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    if (t->blocking) {
        rc = ngx_http_meta_webhook_verdict(r, t);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    ok = (t->curl_rc == CURLE_OK && t->status >= 200 && t->status < 300);

    /*
     * Settled whatever became of the client: Meta's answer decides what
     * was counted.  Sends are never retried here; the caller decides.
     * A blocking state was settled in the thread already.
     */

    if (!ok) {
        if (!t->blocking) {
            mmcf->ops->unreserve(mmcf->state, &t->op);
        }

        if (t->op.d.conversation) {
            ngx_mw_count(mmcf, conversations_rolled_back, 1);
        }
    }

    if (t->curl_rc != CURLE_OK) {

        if (t->curl_rc == CURLE_OPERATION_TIMEDOUT) {
            ngx_mw_count(mmcf, graph_timeouts, 1);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "meta_webhook: the Graph API did not answer in "
                          "time (%s); nothing counted, not retried",
                          t->error[0] ? t->error : "timeout");

            return ngx_http_meta_webhook_refuse(r,
                       NGX_HTTP_GATEWAY_TIME_OUT, 2,
                       "the Graph API did not answer in time; the message "
                       "may or may not have been sent", NULL);
        }

        if (t->attempts) {
            ngx_mw_count(mmcf, graph_failures, 1);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "meta_webhook: the connection to the Graph API "
                          "broke after the message was sent: %s (curl %d); "
                          "not resent", t->error[0] ? t->error
                                        : curl_easy_strerror(t->curl_rc),
                          t->curl_rc);

            return ngx_http_meta_webhook_refuse(r, NGX_HTTP_BAD_GATEWAY, 2,
                       "the connection to the Graph API broke; the message "
                       "may or may not have been sent, and was not resent",
                       NULL);
        }

        ngx_mw_count(mmcf, graph_failures, 1);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "meta_webhook: the Graph API could not be reached: "
                      "%s (curl %d); nothing counted, not retried",
                      t->error[0] ? t->error
                                  : curl_easy_strerror(t->curl_rc),
                      t->curl_rc);

        return ngx_http_meta_webhook_refuse(r, NGX_HTTP_BAD_GATEWAY, 2,
                   "the Graph API could not be reached; nothing was sent",
                   NULL);
    }

    if (ok) {
        ngx_mw_count(mmcf, sends_accepted, 1);

        if (!t->blocking) {
            /* in the event loop: Meta's answer read into an arena */
            arena = ngx_http_meta_webhook_json_arena_get(r->connection->log);
            prev = ngx_http_meta_webhook_json_use(arena);

            ngx_http_meta_webhook_record_sent(t);

            (void) ngx_http_meta_webhook_json_use(prev);
            ngx_http_meta_webhook_json_arena_put(arena);
        }

    } else {
        ngx_http_meta_webhook_count_graph_error(mmcf, t);
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "meta_webhook: the Graph API refused a send with "
                      "HTTP %l; its answer is passed back", t->status);
    }

    if (t->truncated) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "meta_webhook: the Graph API's answer was cut to "
                      "%uz bytes", t->response_len);
    }

    p = ngx_pnalloc(r->pool, t->response_len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (t->response_len) {
        ngx_memcpy(p, t->response, t->response_len);
    }

    return ngx_http_meta_webhook_respond(r, (ngx_uint_t) t->status,
                                         "application/json", p,
                                         t->response_len);
}


/*
 * Remembers the contact of each message id in Meta's answer, so that a
 * "failed" status for it (131047) closes the window this send used, even
 * when the status names the contact otherwise (a user id for a number).
 */

static void
ngx_http_meta_webhook_record_sent(ngx_mw_send_task_t *t)
{
    size_t         i;
    json_t        *root, *messages, *id;
    json_error_t   e;
    u_char         key[MW_KEY_LEN];

    root = json_loadb((const char *) t->response, t->response_len, 0, &e);
    messages = json_object_get(root, "messages");

    for (i = 0; i < json_array_size(messages) && i < 8; i++) {
        id = json_object_get(json_array_get(messages, i), "id");

        if (json_is_string(id)) {
            mw_key_sent(key, json_string_value(id), json_string_length(id));
            t->ops->sent(t->state, key, t->op.contact, 8 * 86400,
                         t->op.log);
        }
    }

    json_decref(root);
}


/* Meta's error code, read from its answer, counted in the open table. */

static void
ngx_http_meta_webhook_count_graph_error(
    ngx_http_meta_webhook_main_conf_t *mmcf, ngx_mw_send_task_t *t)
{
    long           code;
    ngx_uint_t     i;
    json_t        *root, *v;
    json_error_t   e;

    if (mmcf->counters == NULL) {
        return;
    }

    code = 0;

    root = json_loadb((const char *) t->response, t->response_len, 0, &e);
    v = json_object_get(json_object_get(root, "error"), "code");

    if (json_is_integer(v) && json_integer_value(v) > 0
        && json_integer_value(v) < 10000000)
    {
        code = (long) json_integer_value(v);
    }

    json_decref(root);

    if (code == 0) {
        code = -t->status;     /* no code: counted by HTTP status */
    }

    for (i = 0; i < NGX_MW_ERROR_CODES; i++) {
        if ((long) mmcf->counters->graph_errors[i].code == code
            || ngx_atomic_cmp_set(&mmcf->counters->graph_errors[i].code, 0,
                                  (ngx_atomic_uint_t) code))
        {
            (void) ngx_atomic_fetch_add(
                               &mmcf->counters->graph_errors[i].count, 1);
            return;
        }
    }
}


static ngx_int_t
ngx_http_meta_webhook_refuse(ngx_http_request_t *r, ngx_uint_t status,
    int code, const char *message, const char *details)
{
    char       *json;
    size_t      len;
    u_char     *p;

    json = mw_graph_error(code, "OAuthException", message, details, &len);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        mw_json_free(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, json, len);
    mw_json_free(json);

    return ngx_http_meta_webhook_respond(r, status, "application/json", p,
                                         len);
}


/* meta_webhook_status: the counters, as JSON */

ngx_int_t
ngx_http_meta_webhook_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_mw_read_task_t                 *rt;
    ngx_http_meta_webhook_loc_conf_t   *lcf;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);

    rt = ngx_pcalloc(r->pool, sizeof(ngx_mw_read_task_t));
    if (rt == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rt->status_page = 1;
    ngx_http_meta_webhook_periods(lcf, ngx_time(), &rt->op);

    return ngx_http_meta_webhook_read_state(r, rt);
}


static ngx_int_t
ngx_http_meta_webhook_status_answer(ngx_http_request_t *r,
    ngx_mw_read_task_t *rt)
{
    u_char                             *buf, *p;
    size_t                              size;
    int64_t                             used, daily;
    ngx_uint_t                          i, first, out;
    ngx_mw_counters_t                  *c, zero;
    ngx_http_meta_webhook_loc_conf_t   *lcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_meta_webhook_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_meta_webhook_module);

    c = mmcf->counters;

    if (c == NULL) {
        ngx_memzero(&zero, sizeof(ngx_mw_counters_t));
        c = &zero;
    }

    /* counts the state could not give are shown null */
    used = (rt->rc == NGX_OK) ? rt->used : -1;
    daily = (rt->rc == NGX_OK) ? rt->daily : -1;

    size = 4096 + NGX_MW_ERROR_CODES * (2 * NGX_ATOMIC_T_LEN + 8);

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(buf, "{\"state\":{\"backend\":\"%V\",",
                    mmcf->ops ? &mmcf->ops->name : &lcf->thread_pool_name);

    if (mmcf->ops == &ngx_http_meta_webhook_shm_ops && mmcf->entries) {
        /* how full the zone is */
        p = ngx_sprintf(p, "\"entries\":%uA,", *mmcf->entries);
    }

    if (mmcf->ring_size && mmcf->ring) {
        /* the node's view of the memcached ring */
        out = 0;

        for (i = 0; i < mmcf->ring_size; i++) {
            if ((time_t) mmcf->ring->servers[i].dead_until > ngx_time()) {
                out++;
            }
        }

        p = ngx_sprintf(p, "\"servers\":%ui,\"out_of_ring\":%ui,",
                        mmcf->ring_size, out);
    }

    p = ngx_sprintf(p,
            "\"errors\":%uA,\"evictions\":%uA},"
            "\"deliveries\":{\"received\":%uA,\"signatures_missing\":%uA,"
            "\"signatures_refused\":%uA,\"unlisted\":%uA,"
            "\"dead_letters\":%uA,\"busy\":%uA},"
            "\"handshakes\":{\"received\":%uA,\"refused\":%uA},"
            "\"updates\":{\"received\":%uA,\"handed_off\":%uA,"
            "\"released\":%uA,\"duplicates\":%uA,\"statuses\":%uA},"
            "\"messages\":{\"supported\":%uA,\"quarantined\":%uA,"
            "\"unsupported\":{\"reaction\":%uA,\"deleted\":%uA,"
            "\"unsupported_attachment\":%uA,\"unsupported_type\":%uA},"
            "\"optins\":%uA,\"optouts\":%uA},",
            c->state_errors, c->evictions,
            c->deliveries, c->signatures_missing, c->signatures_refused,
            c->unlisted, c->dead_letters, c->busy,
            c->handshakes, c->handshakes_refused,
            c->updates, c->handed_off, c->released, c->duplicates,
            c->statuses,
            c->supported, c->quarantined, c->unsupported_reaction,
            c->unsupported_deleted, c->unsupported_attachment,
            c->unsupported_type, c->optins, c->optouts);

    p = ngx_sprintf(p,
            "\"sends\":{\"received\":%uA,\"accepted\":%uA,"
            "\"refused\":{\"invalid\":%uA,\"forbidden\":%uA,"
            "\"window_closed\":%uA,\"conversation_limit\":%uA,"
            "\"daily_limit\":%uA,\"optin\":%uA,\"state\":%uA},"
            "\"graph_timeouts\":%uA,\"graph_failures\":%uA,"
            "\"conversations_rolled_back\":%uA,\"graph_errors\":{",
            c->sends, c->sends_accepted, c->refused_invalid,
            c->refused_forbidden, c->refused_window, c->refused_limit,
            c->refused_daily, c->refused_optin, c->refused_state,
            c->graph_timeouts, c->graph_failures,
            c->conversations_rolled_back);

    first = 1;

    for (i = 0; i < NGX_MW_ERROR_CODES; i++) {
        if (c->graph_errors[i].code == 0) {
            continue;
        }

        p = ngx_sprintf(p, "%s\"%l\":%uA", first ? "" : ",",
                        (long) c->graph_errors[i].code,
                        c->graph_errors[i].count);
        first = 0;
    }

    p = ngx_sprintf(p, "}},\"conversations\":{\"used\":");
    p = (used < 0) ? ngx_cpymem(p, "null", 4) : ngx_sprintf(p, "%L", used);
    p = ngx_sprintf(p, ",\"limit\":%i,\"period_resets_at\":%L,"
                    "\"business_initiated_today\":",
                    lcf->conversation_limit, rt->op.period_end);
    p = (daily < 0) ? ngx_cpymem(p, "null", 4) : ngx_sprintf(p, "%L", daily);
    p = ngx_sprintf(p, ",\"daily_limit\":%i,\"day_resets_at\":%L}}",
                    lcf->business_verified ? 0 : NGX_MW_DAILY_CAP,
                    rt->op.day_end);

    return ngx_http_meta_webhook_respond(r, NGX_HTTP_OK, "application/json",
                                         buf, p - buf);
}
