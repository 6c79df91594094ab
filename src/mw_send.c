/*
 * The send path's core: validation of Meta's send-message request, the
 * Graph-style error body, and the help-desk rules that decide whether a
 * send may go to Meta and what it counts.
 *
 * Validation is deliberately shallow below the type's object: Meta stays
 * the authority on every field it documents, and a check here that is
 * stricter than Meta's would refuse messages Meta accepts.  What is
 * checked is what the module itself relies on (the recipient, the type,
 * hence the window rule that applies) and the mistakes a client makes
 * most often (a missing object, an over-long text).  Error messages name
 * fields and never quote the request: they reach logs, and the request
 * holds what an agent wrote to a customer.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


/* Meta's codes for request errors, by their documented meaning */
#define MW_GRAPH_PARAM_MISSING   131008  /* required parameter missing */
#define MW_GRAPH_VALUE_INVALID   131009  /* parameter value not valid */
#define MW_GRAPH_SERVICE         2       /* temporary, retry later */


typedef enum {
    MW_SEND_OBJ_TEXT,
    MW_SEND_OBJ_MEDIA,              /* "id" or "link" */
    MW_SEND_OBJ_TEMPLATE,
    MW_SEND_OBJ_ARRAY,              /* contacts */
    MW_SEND_OBJ_OTHER               /* an object Meta alone validates */
} mw_send_obj_e;


typedef struct {
    const char              *name;
    size_t                   len;
    mw_send_obj_e            check;
} mw_send_type_t;


#define mw_send_type(n, c)   { n, sizeof(n) - 1, c }

/* Meta's outbound message types */
static const mw_send_type_t  mw_send_types[] = {
    mw_send_type("text", MW_SEND_OBJ_TEXT),
    mw_send_type("image", MW_SEND_OBJ_MEDIA),
    mw_send_type("audio", MW_SEND_OBJ_MEDIA),
    mw_send_type("video", MW_SEND_OBJ_MEDIA),
    mw_send_type("document", MW_SEND_OBJ_MEDIA),
    mw_send_type("sticker", MW_SEND_OBJ_MEDIA),
    mw_send_type("location", MW_SEND_OBJ_OTHER),
    mw_send_type("contacts", MW_SEND_OBJ_ARRAY),
    mw_send_type("interactive", MW_SEND_OBJ_OTHER),
    mw_send_type("template", MW_SEND_OBJ_TEMPLATE),
    mw_send_type("reaction", MW_SEND_OBJ_OTHER),
    { NULL, 0, MW_SEND_OBJ_OTHER }
};

#define MW_SEND_TYPE_LIST                                                   \
    "text, image, audio, video, document, sticker, location, contacts, "    \
    "interactive, template, reaction"


static int mw_send_fail(mw_send_err_t *err, int status, int code,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static const mw_send_type_t *mw_send_type_find(const char *s, size_t len);
static int mw_send_check_string(json_t *parent, const char *key,
    const char *path, mw_send_err_t *err);
static int mw_send_check_text(json_t *text, mw_send_err_t *err);
static int mw_send_check_media(const mw_send_type_t *t, json_t *obj,
    mw_send_err_t *err);
static int mw_send_check_template(json_t *tpl, mw_send_err_t *err);
static size_t mw_utf8_chars(const char *s, size_t len, size_t stop);
static json_t *mw_graph_string(const char *s);


int
mw_send_parse(mw_send_req_t *req, const char *buf, size_t len,
    mw_send_err_t *err)
{
    int                    n;
    char                   reason[128];
    json_t                *root, *v, *obj;
    const mw_send_type_t  *t;

    memset(req, 0, sizeof(*req));
    memset(err, 0, sizeof(*err));

    root = mw_json_parse(buf, len, 0, reason, sizeof(reason));

    if (root == NULL) {
        if (strcmp(reason, MW_JSON_ENOMEM) == 0) {
            /* not the client's fault, and a retry may well succeed */
            return mw_send_fail(err, 503, MW_GRAPH_SERVICE,
                                "out of memory while reading the request");
        }

        return mw_send_fail(err, 400, MW_GRAPH_PARAM_INVALID,
                            "the request body is not valid JSON (%s)",
                            reason);
    }

    req->root = root;

    if (!json_is_object(root)) {
        mw_send_fail(err, 400, MW_GRAPH_PARAM_INVALID,
                     "the request body must be a JSON object");
        goto failed;
    }

    /*
     * Meta requires messaging_product and answers its absence itself;
     * nothing here depends on it, so only a wrong value is refused.
     */
    v = json_object_get(root, "messaging_product");

    if (v && !(json_is_string(v) && json_string_length(v) == 8
               && memcmp(json_string_value(v), "whatsapp", 8) == 0))
    {
        mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                     "messaging_product must be \"whatsapp\"");
        goto failed;
    }

    /* windows and accounting are per contact: no group sends here */
    v = json_object_get(root, "recipient_type");

    if (v && !(json_is_string(v) && json_string_length(v) == 10
               && memcmp(json_string_value(v), "individual", 10) == 0))
    {
        mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                     "recipient_type must be \"individual\"");
        goto failed;
    }

    v = json_object_get(root, "to");

    if (v == NULL) {
        mw_send_fail(err, 400, MW_GRAPH_PARAM_MISSING, "\"to\" is missing");
        goto failed;
    }

    if (!json_is_string(v)) {
        mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                     "\"to\" must be a string");
        goto failed;
    }

    /* the length, not strlen: a "\u0000" inside must not cut it short */
    n = mw_contact_normalize(json_string_value(v), json_string_length(v),
                             req->contact);

    if (n < 0) {
        req->contact[0] = '\0';
        mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                     "\"to\" is not a phone number or a WhatsApp user id");
        goto failed;
    }

    req->to = json_string_value(v);

    v = json_object_get(root, "type");

    if (v == NULL) {
        /*
         * Meta defaults a missing type to text.  Only a request that
         * carries a text object is taken that way: anything else would be
         * a guess, and the type decides which window rule applies.
         */
        if (json_object_get(root, "text") == NULL) {
            mw_send_fail(err, 400, MW_GRAPH_PARAM_MISSING,
                         "\"type\" is missing");
            goto failed;
        }

        t = &mw_send_types[0];

    } else if (!json_is_string(v)) {
        mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                     "\"type\" must be a string");
        goto failed;

    } else {
        t = mw_send_type_find(json_string_value(v), json_string_length(v));

        if (t == NULL) {
            /* the client's value is not echoed: it could be anything */
            mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                         "unknown type: must be one of " MW_SEND_TYPE_LIST);
            goto failed;
        }
    }

    /*
     * The type names the static table's string, not the document's: it
     * is then NUL-clean and outlives the document.
     */
    req->type = t->name;
    req->is_template = (t->check == MW_SEND_OBJ_TEMPLATE);

    obj = json_object_get(root, t->name);

    if (obj == NULL) {
        mw_send_fail(err, 400, MW_GRAPH_PARAM_MISSING,
                     "\"%s\" is missing (required for type %s)",
                     t->name, t->name);
        goto failed;
    }

    if (t->check == MW_SEND_OBJ_ARRAY) {
        if (!json_is_array(obj)) {
            mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                         "\"%s\" must be an array", t->name);
            goto failed;
        }

        if (json_array_size(obj) == 0) {
            mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                         "\"%s\" must not be empty", t->name);
            goto failed;
        }

    } else if (!json_is_object(obj)) {
        mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                     "\"%s\" must be an object", t->name);
        goto failed;
    }

    switch (t->check) {

    case MW_SEND_OBJ_TEXT:
        if (mw_send_check_text(obj, err) != 0) {
            goto failed;
        }
        break;

    case MW_SEND_OBJ_MEDIA:
        if (mw_send_check_media(t, obj, err) != 0) {
            goto failed;
        }
        break;

    case MW_SEND_OBJ_TEMPLATE:
        if (mw_send_check_template(obj, err) != 0) {
            goto failed;
        }
        break;

    default:
        break;
    }

    return 0;

failed:

    mw_send_free(req);
    req->type = NULL;
    req->is_template = 0;
    req->contact[0] = '\0';

    return -1;
}


void
mw_send_free(mw_send_req_t *req)
{
    if (req == NULL) {
        return;
    }

    /* safe twice, and after a failed parse */
    if (req->root) {
        json_decref(req->root);
        req->root = NULL;
    }

    req->to = NULL;
}


static int
mw_send_fail(mw_send_err_t *err, int status, int code, const char *fmt,
    ...)
{
    va_list  ap;

    err->status = status;
    err->code = code;

    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);

    return -1;
}


/* Exact, length-aware: "text\u0000x" is not "text". */

static const mw_send_type_t *
mw_send_type_find(const char *s, size_t len)
{
    const mw_send_type_t  *t;

    for (t = mw_send_types; t->name; t++) {
        if (t->len == len && memcmp(t->name, s, len) == 0) {
            return t;
        }
    }

    return NULL;
}


/*
 * parent[key] must be a non-empty string; path names it in messages.
 * Returns 0, or -1 with err filled.
 */
static int
mw_send_check_string(json_t *parent, const char *key, const char *path,
    mw_send_err_t *err)
{
    json_t  *v;

    v = json_object_get(parent, key);

    if (v == NULL) {
        return mw_send_fail(err, 400, MW_GRAPH_PARAM_MISSING,
                            "%s is missing", path);
    }

    if (!json_is_string(v)) {
        return mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                            "%s must be a string", path);
    }

    if (json_string_length(v) == 0) {
        return mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                            "%s is empty", path);
    }

    return 0;
}


static int
mw_send_check_text(json_t *text, mw_send_err_t *err)
{
    json_t  *body;

    if (mw_send_check_string(text, "body", "text.body", err) != 0) {
        return -1;
    }

    body = json_object_get(text, "body");

    /*
     * Meta's limit is in characters: 4096 "é" are 8192 bytes and allowed.
     * jansson has validated the UTF-8, so code points are the bytes that
     * do not continue a sequence.
     */
    if (mw_utf8_chars(json_string_value(body), json_string_length(body),
                      MW_TEXT_MAX + 1)
        > MW_TEXT_MAX)
    {
        return mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                            "text.body is longer than %d characters",
                            MW_TEXT_MAX);
    }

    return 0;
}


static int
mw_send_check_media(const mw_send_type_t *t, json_t *obj,
    mw_send_err_t *err)
{
    char     path[32];
    json_t  *id, *link;

    id = json_object_get(obj, "id");
    link = json_object_get(obj, "link");

    if (id == NULL && link == NULL) {
        return mw_send_fail(err, 400, MW_GRAPH_PARAM_MISSING,
                            "%s.id or %s.link is missing", t->name, t->name);
    }

    /* whichever is present must be usable: Meta would pick either */
    if (id) {
        snprintf(path, sizeof(path), "%s.id", t->name);

        if (mw_send_check_string(obj, "id", path, err) != 0) {
            return -1;
        }
    }

    if (link) {
        snprintf(path, sizeof(path), "%s.link", t->name);

        if (mw_send_check_string(obj, "link", path, err) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
mw_send_check_template(json_t *tpl, mw_send_err_t *err)
{
    json_t  *lang;

    if (mw_send_check_string(tpl, "name", "template.name", err) != 0) {
        return -1;
    }

    lang = json_object_get(tpl, "language");

    if (lang == NULL) {
        return mw_send_fail(err, 400, MW_GRAPH_PARAM_MISSING,
                            "template.language is missing");
    }

    if (!json_is_object(lang)) {
        return mw_send_fail(err, 400, MW_GRAPH_VALUE_INVALID,
                            "template.language must be an object");
    }

    return mw_send_check_string(lang, "code", "template.language.code",
                                err);
}


/*
 * Code points in valid UTF-8; counting stops at stop, so a 3 MB body
 * costs no more than the limit.
 */
static size_t
mw_utf8_chars(const char *s, size_t len, size_t stop)
{
    size_t                i, n;
    const unsigned char  *p;

    p = (const unsigned char *) s;
    n = 0;

    for (i = 0; i < len && n < stop; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            n++;
        }
    }

    return n;
}


char *
mw_graph_error(int code, const char *type, const char *message,
    const char *details, size_t *len)
{
    char    *out;
    json_t  *root, *error, *data;

    out = NULL;

    root = json_object();
    error = json_object();
    data = json_object();

    if (root == NULL || error == NULL || data == NULL) {
        goto done;
    }

    /* the order of Meta's own bodies: clients only ever key on names */
    if (json_object_set_new(error, "message",
                            mw_graph_string(message ? message : "")) != 0
        || json_object_set_new(error, "type",
                               mw_graph_string(type ? type
                                                    : "OAuthException"))
           != 0
        || json_object_set_new(error, "code", json_integer(code)) != 0
        || json_object_set_new(data, "messaging_product",
                               json_string("whatsapp")) != 0)
    {
        goto done;
    }

    if (details
        && json_object_set_new(data, "details", mw_graph_string(details))
           != 0)
    {
        goto done;
    }

    if (json_object_set(error, "error_data", data) != 0
        || json_object_set(root, "error", error) != 0)
    {
        goto done;
    }

    out = json_dumps(root, JSON_COMPACT);

    if (out && len) {
        *len = strlen(out);
    }

done:

    json_decref(data);
    json_decref(error);
    json_decref(root);

    return out;
}


/*
 * A JSON string of s, whose bytes may come from anywhere (a library's
 * error text, a header): invalid UTF-8 is replaced by '?' instead of
 * failing the whole error body.
 */
static json_t *
mw_graph_string(const char *s)
{
    char    *copy;
    size_t   i, len;
    json_t  *j;

    j = json_string(s);

    if (j) {
        return j;
    }

    len = strlen(s);
    copy = malloc(len + 1);

    if (copy == NULL) {
        return NULL;
    }

    for (i = 0; i < len; i++) {
        copy[i] = ((unsigned char) s[i] < 0x80) ? s[i] : '?';
    }

    copy[len] = '\0';

    j = json_string(copy);
    free(copy);

    return j;
}


void
mw_send_decide(const mw_contact_state_t *cs, const mw_limits_t *lim,
    int is_template, int64_t now, mw_send_decision_t *d)
{
    memset(d, 0, sizeof(*d));
    d->verdict = MW_SEND_ALLOW;

    if (mw_window_open(cs->window, now)) {

        /*
         * A user-initiated session: every business message in it, a
         * template too, belongs to one conversation, counted at the
         * first.  Once counted, nothing more is, and no limit refuses.
         *
         * The caller marks the session counted with a time not before
         * the session's start: max(now, cs->session).  now alone is not
         * enough, as a session may start up to MW_FUTURE_SKEW ahead of
         * the local clock, and every reply until then would count again.
         */
        if (cs->counted >= cs->session) {
            return;
        }

        if (lim->limit > 0 && lim->used >= lim->limit) {
            d->verdict = MW_SEND_LIMIT;
            return;
        }

        d->conversation = 1;
        d->session = 1;
        return;
    }

    if (!is_template) {
        d->verdict = MW_SEND_WINDOW_CLOSED;
        return;
    }

    /*
     * A business-initiated conversation.  The refusals come from the
     * most lasting reason to the least: the contact's choice (waiting
     * never helps), then the period's limit (resets last), then today's
     * cap; so the reason given is the one that decides when, if ever,
     * the send can succeed.
     */
    if (lim->require_optin) {
        if (cs->optin == MW_OPTIN_OUT) {
            d->verdict = MW_SEND_OPTED_OUT;
            return;
        }

        if (cs->optin != MW_OPTIN_IN) {
            d->verdict = MW_SEND_NO_OPTIN;
            return;
        }
    }

    if (lim->limit > 0 && lim->used >= lim->limit) {
        d->verdict = MW_SEND_LIMIT;
        return;
    }

    if (lim->daily_limit > 0 && lim->daily_used >= lim->daily_limit) {
        d->verdict = MW_SEND_DAILY_LIMIT;
        return;
    }

    d->conversation = 1;
    d->business_initiated = 1;
}
