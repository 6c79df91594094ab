/*
 * nginx-meta-webhook: the module definition, its directives and their
 * configuration, its variables, and the phases it hooks.
 */

#include "ngx_http_meta_webhook.h"

#include <curl/curl.h>


#define NGX_MW_DEFAULT_ZONE        "meta_webhook"
#define NGX_MW_DEFAULT_ZONE_SIZE   (10 * 1024 * 1024)


static ngx_int_t ngx_http_meta_webhook_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_meta_webhook_init(ngx_conf_t *cf);
static void *ngx_http_meta_webhook_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_meta_webhook_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_meta_webhook_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_meta_webhook_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);

static char *ngx_http_meta_webhook_state(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_meta_webhook(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_meta_webhook_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_http_meta_webhook_free_key(void *data);
static void ngx_http_meta_webhook_wipe(void *data);
static char *ngx_http_meta_webhook_dead_letter_path(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_meta_webhook_account(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_meta_webhook_detectors(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

static char *ngx_http_meta_webhook_send(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_meta_webhook_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_meta_webhook_conversation_limit(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_meta_webhook_timezone(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_meta_webhook_merge_send(ngx_conf_t *cf,
    ngx_http_meta_webhook_loc_conf_t *prev,
    ngx_http_meta_webhook_loc_conf_t *conf);
static ngx_int_t ngx_http_meta_webhook_init_module(ngx_cycle_t *cycle);
static void ngx_http_meta_webhook_exit_process(ngx_cycle_t *cycle);
static void ngx_http_meta_webhook_exit_master(ngx_cycle_t *cycle);

static ngx_int_t ngx_http_meta_webhook_events_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_meta_webhook_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_meta_webhook_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


/*
 * "fast": the core's reader first, jansson for whatever it does not take
 * (src/mw_json.c); "jansson": json_loadb() alone.
 */
static ngx_conf_enum_t  ngx_http_meta_webhook_json_readers[] = {
    { ngx_string("fast"), MW_JSON_FAST },
    { ngx_string("jansson"), 0 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_meta_webhook_commands[] = {

    { ngx_string("meta_webhook_state"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_meta_webhook_state,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_meta_webhook,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook_verify_token"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, verify_token),
      NULL },

    { ngx_string("meta_webhook_app_secret_file"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_meta_webhook_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, secret_file),
      NULL },

    { ngx_string("meta_webhook_app_secret_previous_file"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_meta_webhook_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, previous_secret_file),
      NULL },

    { ngx_string("meta_webhook_dead_letter_path"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_meta_webhook_dead_letter_path,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, dead_letter_path),
      NULL },

    { ngx_string("meta_webhook_account"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_meta_webhook_account,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook_quarantine_rules"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, rules_file),
      NULL },

    { ngx_string("meta_webhook_quarantine_detectors"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_meta_webhook_detectors,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook_json_reader"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, json_opts),
      &ngx_http_meta_webhook_json_readers },

    { ngx_string("meta_webhook_claim_timeout"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, claim_timeout),
      NULL },

    { ngx_string("meta_webhook_dedupe_ttl"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, dedupe_ttl),
      NULL },

    { ngx_string("meta_webhook_send"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_meta_webhook_send,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook_graph_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, graph_url),
      NULL },

    { ngx_string("meta_webhook_access_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_meta_webhook_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, token_file),
      NULL },

    { ngx_string("meta_webhook_conversation_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_meta_webhook_conversation_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook_business_verified"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, business_verified),
      NULL },

    { ngx_string("meta_webhook_require_optin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, require_optin),
      NULL },

    { ngx_string("meta_webhook_timezone"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_meta_webhook_timezone,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("meta_webhook_graph_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, graph_timeout),
      NULL },

    { ngx_string("meta_webhook_graph_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, graph_connect_timeout),
      NULL },

    { ngx_string("meta_webhook_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_meta_webhook_loc_conf_t, thread_pool_name),
      NULL },

    { ngx_string("meta_webhook_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_meta_webhook_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_meta_webhook_module_ctx = {
    ngx_http_meta_webhook_add_variables,   /* preconfiguration */
    ngx_http_meta_webhook_init,            /* postconfiguration */

    ngx_http_meta_webhook_create_main_conf, /* create main configuration */
    ngx_http_meta_webhook_init_main_conf,  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_meta_webhook_create_loc_conf, /* create location configuration */
    ngx_http_meta_webhook_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_meta_webhook_module = {
    NGX_MODULE_V1,
    &ngx_http_meta_webhook_module_ctx,     /* module context */
    ngx_http_meta_webhook_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_meta_webhook_init_module,     /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_meta_webhook_exit_process,    /* exit process */
    ngx_http_meta_webhook_exit_master,     /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_meta_webhook_vars[] = {

    { ngx_string("meta_webhook_events"), NULL,
      ngx_http_meta_webhook_events_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("meta_webhook_result"), NULL,
      ngx_http_meta_webhook_result_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("meta_webhook_updates"), NULL,
      ngx_http_meta_webhook_count_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("meta_webhook_new"), NULL,
      ngx_http_meta_webhook_count_variable, 1,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_meta_webhook_results[] = {
    ngx_string(""),
    ngx_string("handshake"),
    ngx_string("refused"),
    ngx_string("new"),
    ngx_string("duplicate"),
    ngx_string("busy"),
    ngx_string("dead_letter"),
    ngx_string("state_error")
};


static ngx_int_t
ngx_http_meta_webhook_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_meta_webhook_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_meta_webhook_events_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    char                         *json;
    size_t                        len;
    ngx_pool_t                   *pool;
    ngx_http_meta_webhook_ctx_t  *ctx;

    ctx = ngx_http_meta_webhook_get_ctx(r);

    if (ctx == NULL || ctx->batch.root == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* built on first use: a location that never reads it never pays */

    if (!ctx->events_built) {
        /* from the request's pool: it lives as long as the request */
        pool = ngx_http_meta_webhook_json_pool(r->main->pool);
        json = mw_batch_dump(&ctx->batch, ctx->skip, &len);
        (void) ngx_http_meta_webhook_json_pool(pool);

        if (json == NULL) {
            return NGX_ERROR;
        }

        ctx->events.data = (u_char *) json;
        ctx->events.len = len;
        ctx->events_built = 1;
    }

    v->data = ctx->events.data;
    v->len = ctx->events.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_meta_webhook_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_meta_webhook_ctx_t  *ctx;

    ctx = ngx_http_meta_webhook_get_ctx(r);

    if (ctx == NULL || ctx->result == NGX_MW_RESULT_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_meta_webhook_results[ctx->result].data;
    v->len = ngx_http_meta_webhook_results[ctx->result].len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_meta_webhook_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_uint_t                    n;
    ngx_http_meta_webhook_ctx_t  *ctx;

    ctx = ngx_http_meta_webhook_get_ctx(r);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    n = data ? ctx->nnew : ctx->batch.nupdates;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%ui", n) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static void *
ngx_http_meta_webhook_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    /* before any JSON is parsed: jansson's allocator is process-wide */
    ngx_http_meta_webhook_json_init();

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_meta_webhook_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->shm_zone = NULL;
     *     mmcf->ops = NULL;
     *     mmcf->state = NULL;
     *     mmcf->counters = NULL;
     */

    mmcf->used = 0;

    return mmcf;
}


static char *
ngx_http_meta_webhook_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_meta_webhook_main_conf_t *mmcf = conf;

    ngx_str_t  name = ngx_string(NGX_MW_DEFAULT_ZONE);

    if (!mmcf->used || mmcf->ops != NULL) {
        return NGX_CONF_OK;
    }

    /* no meta_webhook_state: the embedded default, one automatic zone */

    return ngx_http_meta_webhook_shm_zone(cf, mmcf, &name,
                                          NGX_MW_DEFAULT_ZONE_SIZE);
}


static void *
ngx_http_meta_webhook_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_meta_webhook_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_meta_webhook_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->verify_token = { 0, NULL };
     *     lcf->keys = { NULL, NULL };
     *     lcf->nkeys = 0;
     *     lcf->secret_file = { 0, NULL };
     *     lcf->previous_secret_file = { 0, NULL };
     *     lcf->dead_letter_path = { 0, NULL };
     *     lcf->rules_file = { 0, NULL };
     *     lcf->qconf = { 0, NULL, NULL };
     */

    lcf->enable = NGX_CONF_UNSET;
    lcf->accounts = NGX_CONF_UNSET_PTR;
    lcf->rules = NGX_CONF_UNSET_PTR;
    lcf->detectors = NGX_CONF_UNSET_UINT;
    lcf->claim_timeout = NGX_CONF_UNSET;
    lcf->dedupe_ttl = NGX_CONF_UNSET;
    lcf->json_opts = NGX_CONF_UNSET_UINT;

    lcf->send = NGX_CONF_UNSET;
    lcf->conversation_limit = NGX_CONF_UNSET;
    lcf->anchor_day = NGX_CONF_UNSET;
    lcf->business_verified = NGX_CONF_UNSET;
    lcf->require_optin = NGX_CONF_UNSET;
    lcf->tz_offset = NGX_CONF_UNSET;
    lcf->graph_timeout = NGX_CONF_UNSET_MSEC;
    lcf->graph_connect_timeout = NGX_CONF_UNSET_MSEC;

    return lcf;
}


static char *
ngx_http_meta_webhook_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_meta_webhook_loc_conf_t *prev = parent;
    ngx_http_meta_webhook_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /* "meta_webhook" marks one location: nested ones are not endpoints */
    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable = 0;
    }

    ngx_conf_merge_str_value(conf->verify_token, prev->verify_token, "");
    ngx_conf_merge_str_value(conf->dead_letter_path, prev->dead_letter_path,
                             "");
    ngx_conf_merge_str_value(conf->rules_file, prev->rules_file, "");
    ngx_conf_merge_ptr_value(conf->accounts, prev->accounts, NULL);
    ngx_conf_merge_uint_value(conf->detectors, prev->detectors,
                              MW_DETECT_ALL);
    ngx_conf_merge_sec_value(conf->claim_timeout, prev->claim_timeout, 60);
    ngx_conf_merge_sec_value(conf->dedupe_ttl, prev->dedupe_ttl, 8 * 86400);
    ngx_conf_merge_uint_value(conf->json_opts, prev->json_opts,
                              MW_JSON_FAST);

    if (conf->secret_file.len == 0) {
        conf->secret_file = prev->secret_file;
        conf->keys[0] = prev->keys[0];
    }

    if (conf->previous_secret_file.len == 0) {
        conf->previous_secret_file = prev->previous_secret_file;
        conf->keys[1] = prev->keys[1];
    }

    conf->nkeys = 0;

    if (conf->keys[0]) {
        conf->nkeys = 1;

        if (conf->keys[1]) {
            conf->nkeys = 2;
        }
    }

    if (conf->rules == NGX_CONF_UNSET_PTR) {
        if (conf->rules_file.len && conf->rules_file.data
                                    != prev->rules_file.data)
        {
            if (ngx_http_meta_webhook_load_rules(cf, conf) != NGX_CONF_OK) {
                return NGX_CONF_ERROR;
            }

        } else {
            conf->rules = (prev->rules == NGX_CONF_UNSET_PTR) ? NULL
                                                              : prev->rules;
        }
    }

    if (ngx_http_meta_webhook_merge_send(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    conf->qconf.detectors = conf->detectors;
    conf->qconf.match = conf->rules ? ngx_http_meta_webhook_rule_match
                                    : NULL;
    conf->qconf.match_data = conf->rules;

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    if (conf->keys[0] == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook\" requires "
                           "\"meta_webhook_app_secret_file\": without the "
                           "app secret no delivery can be verified");
        return NGX_CONF_ERROR;
    }

    if (conf->verify_token.len == 0) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"meta_webhook\" has no "
                           "\"meta_webhook_verify_token\": Meta's "
                           "verification handshake will be refused");
    }

    if (conf->claim_timeout < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_claim_timeout\" must be at "
                           "least 1s, and should exceed the hand-off's "
                           "own timeouts");
        return NGX_CONF_ERROR;
    }

    if (conf->dead_letter_path.len == 0) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"meta_webhook\" has no "
                           "\"meta_webhook_dead_letter_path\": signed "
                           "deliveries that cannot be parsed will be "
                           "logged and dropped");
    }

    if (conf->dedupe_ttl < 7 * 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_dedupe_ttl\" must be at least 7d: "
                           "Meta retries a delivery for up to 7 days");
        return NGX_CONF_ERROR;
    }

    if (conf->dedupe_ttl > 30 * 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_dedupe_ttl\" must be at most 30d");
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /* 0 is "unlimited" */
    if (clcf->client_max_body_size
        && clcf->client_max_body_size < NGX_MW_MIN_BODY_SIZE)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"meta_webhook\" location \"%V\" allows bodies "
                           "of %O bytes at most: Meta sends up to 3 MB, "
                           "set \"client_max_body_size 4m\"",
                           &clcf->name, clcf->client_max_body_size);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_meta_webhook_state(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_meta_webhook_main_conf_t *mmcf = conf;

    u_char     *p;
    ssize_t     size;
    ngx_str_t  *value, name, s;

    value = cf->args->elts;

    if (mmcf->ops != NULL) {
        return "is duplicate";
    }

    if (ngx_strcmp(value[1].data, "memcached") == 0) {
        return ngx_http_meta_webhook_memcached(cf, mmcf, &value[2],
                                               cf->args->nelts - 2);
    }

    if (ngx_strcmp(value[1].data, "shm") != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown meta_webhook_state backend \"%V\"; "
                           "\"shm\" or \"memcached\" expected", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, NGX_MW_DEFAULT_ZONE);
    size = NGX_MW_DEFAULT_ZONE_SIZE;

    if (cf->args->nelts > 3) {
        return "takes at most one \"zone=\" parameter with shm";
    }

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "zone=", 5) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        name.data = value[2].data + 5;
        p = (u_char *) ngx_strchr(name.data, ':');

        if (p == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid zone size \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        name.len = p - name.data;

        s.data = p + 1;
        s.len = value[2].data + value[2].len - s.data;

        size = ngx_parse_size(&s);

        if (name.len == 0 || size == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid zone \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_meta_webhook_shm_zone(cf, mmcf, &name, (size_t) size);
}


static char *
ngx_http_meta_webhook(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    if (lcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->enable = 1;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_meta_webhook_module);
    mmcf->used = 1;

    /*
     * The module answers 200 itself unless the location hands the events
     * on (proxy_pass and the like set their handler, before or after).
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == NULL) {
        clcf->handler = ngx_http_meta_webhook_content_handler;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_meta_webhook_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    u_char           *buf;
    size_t            len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t        *value, *field;
    ngx_uint_t            token;
    ngx_file_info_t       fi;
    mw_hmac_key_t       **key;
    ngx_pool_cleanup_t   *cln;

    field = (ngx_str_t *) ((u_char *) lcf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    key = (cmd->offset == offsetof(ngx_http_meta_webhook_loc_conf_t,
                                   secret_file))
          ? &lcf->keys[0] : &lcf->keys[1];

    token = (cmd->offset == offsetof(ngx_http_meta_webhook_loc_conf_t,
                                     token_file));

    value = cf->args->elts;
    *field = value[1];

    if (ngx_conf_full_name(cf->cycle, field, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(field->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", field);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", field);
        ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    if (ngx_file_size(&fi) > 4096) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is too large for a secret", field);
        ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    if (fi.st_mode & S_IROTH) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "secret file \"%V\" is readable by others; "
                           "chmod o-r it", field);
    }

    buf = ngx_pnalloc(cf->temp_pool, 4097);
    if (buf == NULL) {
        ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, buf, 4097);
    ngx_close_file(fd);

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%V\" failed", field);
        return NGX_CONF_ERROR;
    }

    /* a trailing newline is the editor's, not the secret's */
    len = n;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'
                   || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    {
        len--;
    }

    if (len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%V\" is empty", field);
        return NGX_CONF_ERROR;
    }

    if (token) {
        /* the header libcurl sends; wiped when the configuration goes */

        lcf->auth_header.len = sizeof("Authorization: Bearer ") - 1 + len;
        lcf->auth_header.data = ngx_pnalloc(cf->pool,
                                            lcf->auth_header.len + 1);
        if (lcf->auth_header.data == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) ngx_sprintf(lcf->auth_header.data,
                           "Authorization: Bearer %*s%Z", len, buf);
        ngx_explicit_memzero(buf, n);

        for (n = 0; n < (ssize_t) len; n++) {
            if (lcf->auth_header.data[sizeof("Authorization: Bearer ") - 1
                                      + n] < 0x21)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "token file \"%V\" holds spaces or "
                                   "control characters", field);
                return NGX_CONF_ERROR;
            }
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_http_meta_webhook_wipe;
        cln->data = &lcf->auth_header;

        return NGX_CONF_OK;
    }

    *key = mw_hmac_key_new(buf, len);

    ngx_explicit_memzero(buf, n);

    if (*key == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the prepared key is freed with the configuration that holds it */

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        mw_hmac_key_free(*key);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_meta_webhook_free_key;
    cln->data = *key;

    return NGX_CONF_OK;
}


static void
ngx_http_meta_webhook_free_key(void *data)
{
    mw_hmac_key_free(data);
}


static void
ngx_http_meta_webhook_wipe(void *data)
{
    ngx_str_t *s = data;

    ngx_explicit_memzero(s->data, s->len);
}


static char *
ngx_http_meta_webhook_dead_letter_path(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    ngx_str_t        *value;
    ngx_file_info_t   fi;

    if (lcf->dead_letter_path.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lcf->dead_letter_path = value[1];

    if (ngx_conf_full_name(cf->cycle, &lcf->dead_letter_path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* a delivery answered 200 must have somewhere to go: check it now */

    if (ngx_file_info(lcf->dead_letter_path.data, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_file_info_n " \"%V\" failed",
                           &lcf->dead_letter_path);
        return NGX_CONF_ERROR;
    }

    if (!ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" is not a directory",
                           &lcf->dead_letter_path);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_meta_webhook_account(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    ngx_str_t         *value, *num;
    ngx_uint_t         i, j;
    ngx_mw_account_t  *acc;

    value = cf->args->elts;

    if (lcf->accounts == NGX_CONF_UNSET_PTR) {
        lcf->accounts = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_mw_account_t));
        if (lcf->accounts == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    acc = lcf->accounts->elts;

    for (i = 0; i < lcf->accounts->nelts; i++) {
        if (acc[i].waba_id.len == value[1].len
            && ngx_strncmp(acc[i].waba_id.data, value[1].data,
                           value[1].len) == 0)
        {
            acc = &acc[i];
            goto found;
        }
    }

    acc = ngx_array_push(lcf->accounts);
    if (acc == NULL) {
        return NGX_CONF_ERROR;
    }

    acc->waba_id = value[1];

    if (ngx_array_init(&acc->numbers, cf->pool, 4, sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

found:

    for (i = 2; i < cf->args->nelts; i++) {

        for (j = 0; j < value[i].len; j++) {
            if (value[i].data[j] < '0' || value[i].data[j] > '9') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid phone_number_id \"%V\": "
                                   "digits expected", &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        num = ngx_array_push(&acc->numbers);
        if (num == NULL) {
            return NGX_CONF_ERROR;
        }

        *num = value[i];
    }

    if (acc->numbers.nelts > NGX_MW_MAX_NUMBERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "account \"%V\" lists %ui phone numbers; "
                           "a WhatsApp Business Account has at most %d",
                           &acc->waba_id, acc->numbers.nelts,
                           NGX_MW_MAX_NUMBERS);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_meta_webhook_detectors(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lcf->detectors != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lcf->detectors = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "off") == 0 && cf->args->nelts == 2) {
            return NGX_CONF_OK;
        }

        if (ngx_strcmp(value[i].data, "card") == 0) {
            lcf->detectors |= MW_DETECT_CARD;

        } else if (ngx_strcmp(value[i].data, "iban") == 0) {
            lcf->detectors |= MW_DETECT_IBAN;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown detector \"%V\"; use \"card\" "
                               "and/or \"iban\", or \"off\" alone",
                               &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_meta_webhook_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * The precontent phase runs after access control (allow, deny,
     * auth_request), so an operator's own restrictions apply first, and
     * before the content handler that hands the events on.
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_meta_webhook_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_meta_webhook_log_handler;

    return NGX_OK;
}


static char *
ngx_http_meta_webhook_send(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    if (lcf->send != NGX_CONF_UNSET) {
        return "is duplicate";
    }

#if !(NGX_THREADS)
    return "requires nginx built with threads (--with-threads)";
#else

    lcf->send = 1;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_meta_webhook_module);
    mmcf->used = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_meta_webhook_send_handler;

    return NGX_CONF_OK;
#endif
}


static char *
ngx_http_meta_webhook_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_meta_webhook_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_meta_webhook_module);
    mmcf->used = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_meta_webhook_status_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_meta_webhook_conversation_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value, s;

    if (lcf->conversation_limit != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid conversation limit \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    lcf->conversation_limit = n;
    lcf->anchor_day = 1;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "anchor_day=", 11) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.data = value[2].data + 11;
        s.len = value[2].len - 11;

        n = ngx_atoi(s.data, s.len);
        if (n < 1 || n > 31) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "anchor_day must be a day of the month, 1 to "
                               "31 (a day past a month's end means its last "
                               "day)");
            return NGX_CONF_ERROR;
        }

        lcf->anchor_day = n;
    }

    return NGX_CONF_OK;
}


/* "UTC", or a fixed offset "+HH:MM" / "-HH:MM": no daylight saving. */

static char *
ngx_http_meta_webhook_timezone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_meta_webhook_loc_conf_t *lcf = conf;

    u_char     *p;
    ngx_int_t   h, m;
    ngx_str_t  *value;

    if (lcf->tz_offset != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    p = value[1].data;

    if (value[1].len == 3 && ngx_strncasecmp(p, (u_char *) "UTC", 3) == 0) {
        lcf->tz_offset = 0;
        return NGX_CONF_OK;
    }

    if (value[1].len != 6 || (p[0] != '+' && p[0] != '-') || p[3] != ':') {
        goto invalid;
    }

    h = ngx_atoi(p + 1, 2);
    m = ngx_atoi(p + 4, 2);

    if (h == NGX_ERROR || m == NGX_ERROR || h > 14 || m > 59) {
        goto invalid;
    }

    lcf->tz_offset = (h * 3600 + m * 60) * (p[0] == '-' ? -1 : 1);

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid time zone \"%V\": \"UTC\" or an offset "
                       "such as \"+02:00\" expected", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_meta_webhook_merge_send(ngx_conf_t *cf,
    ngx_http_meta_webhook_loc_conf_t *prev,
    ngx_http_meta_webhook_loc_conf_t *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (conf->send == NGX_CONF_UNSET) {
        conf->send = 0;
    }

    ngx_conf_merge_str_value(conf->graph_url, prev->graph_url,
                             "https://graph.facebook.com/v23.0");
    ngx_conf_merge_str_value(conf->thread_pool_name, prev->thread_pool_name,
                             "default");

    if (conf->token_file.len == 0) {
        conf->token_file = prev->token_file;
        conf->auth_header = prev->auth_header;
    }

    if (conf->conversation_limit == NGX_CONF_UNSET) {
        conf->conversation_limit = prev->conversation_limit;
        conf->anchor_day = prev->anchor_day;
    }

    if (conf->conversation_limit == NGX_CONF_UNSET) {
        conf->conversation_limit = 0;
        conf->anchor_day = 1;
    }

    ngx_conf_merge_value(conf->business_verified, prev->business_verified,
                         0);
    ngx_conf_merge_value(conf->require_optin, prev->require_optin, 0);
    ngx_conf_merge_value(conf->tz_offset, prev->tz_offset, 0);
    ngx_conf_merge_msec_value(conf->graph_timeout, prev->graph_timeout,
                              10000);
    ngx_conf_merge_msec_value(conf->graph_connect_timeout,
                              prev->graph_connect_timeout, 3000);

    while (conf->graph_url.len
           && conf->graph_url.data[conf->graph_url.len - 1] == '/')
    {
        conf->graph_url.len--;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

#if (NGX_THREADS)
    if (clcf->handler == ngx_http_meta_webhook_status_handler) {
        /* a state that blocks is read in a thread */
        conf->thread_pool = ngx_thread_pool_add(cf, &conf->thread_pool_name);
        if (conf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }
#endif

    if (!conf->send) {
        return NGX_CONF_OK;
    }


    if (conf->auth_header.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_send\" requires "
                           "\"meta_webhook_access_token_file\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_strncmp(conf->graph_url.data, "https://", 8) != 0
        && ngx_strncmp(conf->graph_url.data, "http://", 7) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"meta_webhook_graph_url\" must be an http or "
                           "https URL");
        return NGX_CONF_ERROR;
    }

    if (conf->graph_timeout >= 20000) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"meta_webhook_graph_timeout\" of 20s or more "
                           "outlasts Meta's own patience");
    }

#if (NGX_THREADS)
    conf->thread_pool = ngx_thread_pool_add(cf, &conf->thread_pool_name);
    if (conf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }
#endif

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_meta_webhook_init_module(ngx_cycle_t *cycle)
{
    static ngx_uint_t  initialized;

    /* once, before the workers and their threads exist */

    if (!initialized) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "meta_webhook: curl_global_init() failed");
            return NGX_ERROR;
        }

        initialized = 1;
    }

    return NGX_OK;
}


static void
ngx_http_meta_webhook_exit_master(ngx_cycle_t *cycle)
{
    curl_global_cleanup();
}


/* a worker's kept JSON arenas (a single process's too), for a clean exit */

static void
ngx_http_meta_webhook_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_meta_webhook_json_exit();
}
