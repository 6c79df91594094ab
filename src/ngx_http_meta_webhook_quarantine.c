/*
 * Operator quarantine rules: named patterns compiled with nginx's own
 * regex engine (PCRE), handed to the core as a match callback.
 *
 * The rules file holds one rule a line, "NAME PATTERN", the pattern being
 * the rest of the line; blank lines and lines starting with '#' are
 * skipped.  NAME becomes the event's "reason" when the rule fires.
 */

#include "ngx_http_meta_webhook.h"


#define NGX_MW_MAX_RULE_NAME   64


char *
ngx_http_meta_webhook_load_rules(ngx_conf_t *cf,
    ngx_http_meta_webhook_loc_conf_t *lcf)
{
    u_char              *p, *last, *eol, *nl, *sp;
    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_str_t            file, text, name;
    ngx_uint_t           line, j;
    ngx_file_t           f;
    ngx_mw_rule_t       *rule;
    ngx_file_info_t      fi;
    ngx_regex_compile_t  rc;

    file = lcf->rules_file;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.name = file;
    f.log = cf->log;

    f.fd = ngx_open_file(file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (f.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &file);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(f.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &file);
        ngx_close_file(f.fd);
        return NGX_CONF_ERROR;
    }

    text.len = ngx_file_size(&fi);
    text.data = ngx_pnalloc(cf->temp_pool, text.len + 1);
    if (text.data == NULL) {
        ngx_close_file(f.fd);
        return NGX_CONF_ERROR;
    }

    if (ngx_read_file(&f, text.data, text.len, 0) != (ssize_t) text.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "could not read \"%V\"", &file);
        ngx_close_file(f.fd);
        return NGX_CONF_ERROR;
    }

    ngx_close_file(f.fd);

    lcf->rules = ngx_array_create(cf->pool, 4, sizeof(ngx_mw_rule_t));
    if (lcf->rules == NULL) {
        return NGX_CONF_ERROR;
    }

    last = text.data + text.len;

    for (line = 1, p = text.data; p < last; line++, p = nl + 1) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        eol = nl;

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        while (eol > p && (eol[-1] == '\r' || eol[-1] == ' '
                           || eol[-1] == '\t'))
        {
            eol--;
        }

        if (p == eol || *p == '#') {
            continue;
        }

        for (sp = p; sp < eol && *sp != ' ' && *sp != '\t'; sp++) {
            /* void */
        }

        name.data = p;
        name.len = sp - p;

        for (j = 0; j < name.len; j++) {
            if (!ngx_mw_is_token_char(p[j])
                || name.len > NGX_MW_MAX_RULE_NAME)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V:%ui: a rule name is a token of "
                                   "[A-Za-z0-9_.-], at most %d long",
                                   &file, line, NGX_MW_MAX_RULE_NAME);
                return NGX_CONF_ERROR;
            }
        }

        while (sp < eol && (*sp == ' ' || *sp == '\t')) {
            sp++;
        }

        if (sp == eol) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V:%ui: rule \"%V\" has no pattern",
                               &file, line, &name);
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

        rc.pattern.data = sp;
        rc.pattern.len = eol - sp;
        rc.pool = cf->pool;
        rc.err.len = NGX_MAX_CONF_ERRSTR;
        rc.err.data = errstr;

        if (ngx_regex_compile(&rc) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V:%ui: %V",
                               &file, line, &rc.err);
            return NGX_CONF_ERROR;
        }

        rule = ngx_array_push(lcf->rules);
        if (rule == NULL) {
            return NGX_CONF_ERROR;
        }

        rule->regex = rc.regex;

        /*
         * The core reports the name as a C string; the copy also outlives
         * the temporary pool the file was read into.
         */

        rule->name.len = name.len;
        rule->name.data = ngx_pnalloc(cf->pool, name.len + 1);
        if (rule->name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(rule->name.data, name.data, name.len);
        rule->name.data[name.len] = '\0';
    }

    return NGX_CONF_OK;
}


int
ngx_http_meta_webhook_rule_match(void *data, const char *text, size_t len,
    size_t *start, size_t *end, const char **name)
{
    ngx_array_t *rules = data;

    int             captures[3];
    ngx_int_t       rc;
    ngx_str_t       s;
    ngx_uint_t      i;
    ngx_mw_rule_t  *rule;

    s.data = (u_char *) text;
    s.len = len;

    rule = rules->elts;

    for (i = 0; i < rules->nelts; i++) {
        rc = ngx_regex_exec(rule[i].regex, &s, captures, 3);

        if (rc == NGX_REGEX_NO_MATCHED) {
            continue;
        }

        if (rc < 0) {
            /* a pattern that fails to run quarantines: fail safe */
            *start = 0;
            *end = len;
            *name = (const char *) rule[i].name.data;
            return 1;
        }

        *start = captures[0];
        *end = captures[1];
        *name = (const char *) rule[i].name.data;
        return 1;
    }

    return 0;
}
