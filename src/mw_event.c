/*
 * nginx-meta-webhook: normalize and classify a delivery.
 *
 * A delivery is entry[] x changes[] x (messages[] | statuses[] | errors[]);
 * each item becomes one update with a normalized event, a dedupe key and,
 * for a contact, the contact's state key.  The envelope is checked
 * strictly, because a body of the wrong shape is not a delivery at all;
 * inside it everything is lenient, because an odd message from Meta must
 * still reach the application rather than be lost.
 *
 * Events share the parsed document's strings and objects by reference
 * count instead of copying them: a delivery is parsed once per request and
 * copies would be most of the work.
 */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mw_core.h"


#define MW_TS_MAX            ((int64_t) 1 << 62)

#define mw_strlen(s)         (sizeof(s) - 1)


/* strings every event uses: made once per batch and shared */
typedef enum {
    MW_S_EMPTY = 0,
    MW_S_WHATSAPP,
    MW_S_MESSAGE,
    MW_S_STATUS,
    MW_S_ERROR,
    MW_S_CHANGE,
    MW_S_SUPPORTED,
    MW_S_UNSUPPORTED,
    MW_S_QUARANTINED,
    MW_S_REACTION,
    MW_S_DELETED,
    MW_S_UNSUPPORTED_ATTACHMENT,
    MW_S_UNSUPPORTED_TYPE,
    MW_S_IN,
    MW_S_OUT,
    MW_S_QUARANTINE_RULE,
    MW_S_COUNT
} mw_str_e;

static const char *mw_strings[MW_S_COUNT] = {
    "",
    "whatsapp",
    "message",
    "status",
    "error",
    "change",
    "supported",
    "unsupported",
    "quarantined",
    "reaction",
    "deleted",
    "unsupported_attachment",
    "unsupported_type",
    "in",
    "out",
    "quarantine_rule"
};


typedef struct {
    mw_batch_t                  *batch;
    const mw_quarantine_conf_t  *qc;
    int64_t                      now;
    int                          nomem;

    json_t                      *waba_id;       /* entry[].id */
    int64_t                      entry_time;    /* entry[].time, or -1 */

    json_t                      *pnid;          /* NULL when absent */
    const char                  *pnid_s;        /* "" when absent */
    size_t                       pnid_len;
    json_t                      *display;       /* NULL when absent */
    json_t                      *contacts;      /* value.contacts[] */
    int                          one_sender;    /* messages[]: one from */

    json_t                      *str[MW_S_COUNT];
} mw_ctx_t;


/* Media types accepted inline, by message type (see docs/events.md). */

static const char *const mw_mime_image[] = {
    "image/jpeg", "image/png", NULL
};

static const char *const mw_mime_video[] = {
    "video/mp4", "video/3gpp", NULL
};

static const char *const mw_mime_audio[] = {
    "audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg", NULL
};

static const char *const mw_mime_sticker[] = {
    "image/webp", NULL
};

/*
 * Attachments: plain text, PDF, the Microsoft Office formats Meta lists,
 * CSV, and any media type that would be accepted as image, video or audio
 * (people send mp3 and photos as documents).  Executables, archives and
 * scripts are not on the list on purpose.
 */
static const char *const mw_mime_document[] = {
    "text/plain",
    "text/csv",
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml."
        "document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml."
        "presentation",
    "image/jpeg", "image/png", "image/webp",
    "video/mp4", "video/3gpp",
    "audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg",
    NULL
};


#define MW_T_ARRAY           0x01   /* the type's member is an array */
#define MW_T_UNSUPPORTED     0x02   /* always unsupported, for reason */

typedef struct {
    const char              *name;
    size_t                   len;
    unsigned                 flags;
    int                      scan_depth;    /* -1: not scanned */
    const char *const       *mimes;         /* media: allowed types */
    mw_str_e                 reason;        /* MW_T_UNSUPPORTED */
} mw_type_t;

#define mw_type(name, flags, depth, mimes, reason)                          \
    { name, mw_strlen(name), flags, depth, mimes, reason }

/*
 * scan_depth: how many levels of nested objects below the type's member
 * the quarantine scan descends (interactive replies sit one level down,
 * an edit's new text two).  Shared contacts and system notices are not
 * scanned: they are phone numbers by nature, which the card detector
 * would misread.
 */
static const mw_type_t mw_types[] = {
    mw_type("text", 0, 0, NULL, 0),
    mw_type("image", 0, 0, mw_mime_image, 0),
    mw_type("video", 0, 0, mw_mime_video, 0),
    mw_type("audio", 0, 0, mw_mime_audio, 0),
    mw_type("document", 0, 0, mw_mime_document, 0),
    mw_type("sticker", 0, 0, mw_mime_sticker, 0),
    mw_type("location", 0, 0, NULL, 0),
    mw_type("contacts", MW_T_ARRAY, -1, NULL, 0),
    mw_type("interactive", 0, 1, NULL, 0),
    mw_type("button", 0, 0, NULL, 0),
    mw_type("order", 0, 0, NULL, 0),
    mw_type("system", 0, -1, NULL, 0),
    mw_type("request_welcome", 0, -1, NULL, 0),
    mw_type("edit", 0, 2, NULL, 0),
    mw_type("reaction", MW_T_UNSUPPORTED, -1, NULL, MW_S_REACTION),
    mw_type("revoke", MW_T_UNSUPPORTED, -1, NULL, MW_S_DELETED),
    { NULL, 0, 0, -1, NULL, 0 }
};

/* members whose text is user-written, hence scanned */
static const char *const mw_scan_keys[] = {
    "body", "caption", "filename", "title", "description", "text",
    "name", "address", "response_json", NULL
};


static int mw_envelope(mw_ctx_t *ctx);
static int mw_change_messages(mw_ctx_t *ctx, json_t *value);
static void mw_change_other(mw_ctx_t *ctx, json_t *field, json_t *value);
static void mw_message(mw_ctx_t *ctx, json_t *msg);
static mw_class_e mw_classify(mw_ctx_t *ctx, const mw_type_t *t,
    json_t *obj, mw_str_e *reason, const char **qname);
static void mw_refs(mw_ctx_t *ctx, json_t *ev, json_t *type, json_t *obj);
static void mw_status(mw_ctx_t *ctx, json_t *st);
static void mw_status_deleted(mw_ctx_t *ctx, json_t *st, json_t *id,
    int64_t ts);
static void mw_error_item(mw_ctx_t *ctx, json_t *item);
static void mw_malformed(mw_ctx_t *ctx, const char *member, json_t *item);
static const mw_type_t *mw_type_find(const char *name, size_t len);
static int mw_mime_allowed(json_t *mime, const char *const *list);
static const char *mw_scan(mw_ctx_t *ctx, json_t *obj, int depth);
static mw_optin_e mw_optin(json_t *text);
static void mw_contact(mw_ctx_t *ctx, mw_update_t *u, json_t *ev,
    const char *key, json_t *raw, int profile);
static json_t *mw_profile_name(mw_ctx_t *ctx, json_t *raw);
static int64_t mw_timestamp(json_t *v);
static int mw_code(json_t *error);
static mw_update_t *mw_update_add(mw_ctx_t *ctx, mw_kind_e kind,
    int64_t ts);
static json_t *mw_event_new(mw_ctx_t *ctx, mw_str_e kind, json_t *id,
    int64_t ts);
static void mw_event_id(mw_ctx_t *ctx, mw_update_t *u);
static void mw_key_content(mw_ctx_t *ctx, unsigned char *out,
    const char **parts, size_t *lens, size_t n, json_t *item);
static json_t *mw_str(mw_ctx_t *ctx, mw_str_e s);
static void mw_set(mw_ctx_t *ctx, json_t *obj, const char *key, json_t *v);
static int mw_str_is(json_t *s, const char *lit, size_t len);
static int mw_dump_cb(const char *buf, size_t size, void *data);


int
mw_batch_parse(mw_batch_t *b, const char *buf, size_t len,
    const mw_quarantine_conf_t *qc, int64_t now)
{
    int        rc;
    size_t     i;
    mw_ctx_t   ctx;

    memset(b, 0, sizeof(mw_batch_t));

    b->root = mw_json_parse(buf, len, b->error, sizeof(b->error));

    if (b->root == NULL) {
        return strcmp(b->error, MW_JSON_ENOMEM) == 0 ? MW_BATCH_ENOMEM
                                                     : MW_BATCH_EJSON;
    }

    memset(&ctx, 0, sizeof(mw_ctx_t));
    ctx.batch = b;
    ctx.qc = qc;
    ctx.now = now;

    rc = mw_envelope(&ctx);

    if (rc == MW_BATCH_OK && ctx.nomem) {
        rc = MW_BATCH_ENOMEM;
    }

    if (rc == MW_BATCH_ENOMEM && b->error[0] == '\0') {
        snprintf(b->error, sizeof(b->error), "out of memory");
    }

    for (i = 0; i < MW_S_COUNT; i++) {
        json_decref(ctx.str[i]);
    }

    if (rc != MW_BATCH_OK) {
        /* no half-built batch may be mistaken for a usable one */
        for (i = 0; i < b->nupdates; i++) {
            json_decref(b->updates[i].event);
        }

        free(b->updates);
        b->updates = NULL;
        b->nupdates = 0;
        b->nalloc = 0;
    }

    return rc;
}


void
mw_batch_free(mw_batch_t *b)
{
    size_t  i;

    if (b == NULL) {
        return;
    }

    for (i = 0; i < b->nupdates; i++) {
        json_decref(b->updates[i].event);
    }

    free(b->updates);
    json_decref(b->root);

    b->updates = NULL;
    b->nupdates = 0;
    b->nalloc = 0;
    b->root = NULL;
}


int
mw_event_set_window(mw_update_t *u, int64_t expires)
{
    json_t  *w;

    if (u == NULL || u->event == NULL) {
        return -1;
    }

    w = json_object();
    if (w == NULL) {
        return -1;
    }

    if (json_object_set_new_nocheck(w, "expires_at", json_integer(expires))
        != 0)
    {
        json_decref(w);
        return -1;
    }

    return json_object_set_new_nocheck(u->event, "window", w);
}


typedef struct {
    char    *buf;
    size_t   len;
    size_t   cap;
} mw_dump_t;


char *
mw_batch_dump(const mw_batch_t *b, const unsigned char *skip, size_t *len)
{
    size_t     i;
    int        first;
    mw_dump_t  d;

    /* a typical event is a few hundred bytes: one allocation usually */
    d.cap = 64 + 512 * b->nupdates;
    d.len = 0;
    d.buf = malloc(d.cap);

    if (d.buf == NULL) {
        return NULL;
    }

    if (mw_dump_cb("{\"events\":[", mw_strlen("{\"events\":["), &d) != 0) {
        goto failed;
    }

    first = 1;

    for (i = 0; i < b->nupdates; i++) {
        if ((skip && skip[i]) || b->updates[i].event == NULL) {
            continue;
        }

        if (!first && mw_dump_cb(",", 1, &d) != 0) {
            goto failed;
        }

        first = 0;

        /* JSON_COMPACT: no newline; jansson escapes control characters */
        if (json_dump_callback(b->updates[i].event, mw_dump_cb, &d,
                               JSON_COMPACT)
            != 0)
        {
            goto failed;
        }
    }

    /* "]}" and the terminating NUL */
    if (mw_dump_cb("]}", 3, &d) != 0) {
        goto failed;
    }

    d.len--;

    if (len) {
        *len = d.len;
    }

    return d.buf;

failed:

    free(d.buf);
    return NULL;
}


static int
mw_dump_cb(const char *buf, size_t size, void *data)
{
    char       *p;
    size_t      cap;
    mw_dump_t  *d;

    d = data;

    if (d->len + size > d->cap) {
        cap = d->cap * 2;

        if (cap < d->len + size) {
            cap = d->len + size;
        }

        p = realloc(d->buf, cap);
        if (p == NULL) {
            return -1;
        }

        d->buf = p;
        d->cap = cap;
    }

    memcpy(d->buf + d->len, buf, size);
    d->len += size;

    return 0;
}


static int
mw_envelope(mw_ctx_t *ctx)
{
    size_t       i, j;
    json_t      *root, *entry, *e, *changes, *c, *field, *value;
    mw_batch_t  *b;

    b = ctx->batch;
    root = b->root;

    if (!json_is_object(root)) {
        snprintf(b->error, sizeof(b->error), "root is not an object");
        return MW_BATCH_ESHAPE;
    }

    if (!mw_str_is(json_object_get(root, "object"),
                   "whatsapp_business_account",
                   mw_strlen("whatsapp_business_account")))
    {
        snprintf(b->error, sizeof(b->error),
                 "object is not whatsapp_business_account");
        return MW_BATCH_ESHAPE;
    }

    entry = json_object_get(root, "entry");

    if (!json_is_array(entry)) {
        snprintf(b->error, sizeof(b->error), "entry is not an array");
        return MW_BATCH_ESHAPE;
    }

    for (i = 0; i < json_array_size(entry); i++) {
        e = json_array_get(entry, i);

        if (!json_is_object(e)) {
            snprintf(b->error, sizeof(b->error),
                     "entry[%zu] is not an object", i);
            return MW_BATCH_ESHAPE;
        }

        ctx->waba_id = json_object_get(e, "id");

        if (!json_is_string(ctx->waba_id)) {
            snprintf(b->error, sizeof(b->error),
                     "entry[%zu].id is not a string", i);
            return MW_BATCH_ESHAPE;
        }

        changes = json_object_get(e, "changes");

        if (!json_is_array(changes)) {
            snprintf(b->error, sizeof(b->error),
                     "entry[%zu].changes is not an array", i);
            return MW_BATCH_ESHAPE;
        }

        ctx->entry_time = mw_timestamp(json_object_get(e, "time"));

        for (j = 0; j < json_array_size(changes); j++) {
            c = json_array_get(changes, j);

            if (!json_is_object(c)) {
                snprintf(b->error, sizeof(b->error),
                         "entry[%zu].changes[%zu] is not an object", i, j);
                return MW_BATCH_ESHAPE;
            }

            field = json_object_get(c, "field");
            value = json_object_get(c, "value");

            if (!json_is_string(field)) {
                snprintf(b->error, sizeof(b->error),
                         "entry[%zu].changes[%zu].field is not a string",
                         i, j);
                return MW_BATCH_ESHAPE;
            }

            if (value == NULL) {
                snprintf(b->error, sizeof(b->error),
                         "entry[%zu].changes[%zu].value is missing", i, j);
                return MW_BATCH_ESHAPE;
            }

            if (mw_str_is(field, "messages", mw_strlen("messages"))) {
                if (mw_change_messages(ctx, value) != MW_BATCH_OK) {
                    snprintf(b->error, sizeof(b->error),
                             "entry[%zu].changes[%zu].value is not an "
                             "object", i, j);
                    return MW_BATCH_ESHAPE;
                }

            } else {
                mw_change_other(ctx, field, value);
            }

            if (ctx->nomem) {
                return MW_BATCH_ENOMEM;
            }
        }
    }

    return MW_BATCH_OK;
}


static int
mw_change_messages(mw_ctx_t *ctx, json_t *value)
{
    size_t   i;
    json_t  *meta, *list, *item, *first, *v;

    if (!json_is_object(value)) {
        return MW_BATCH_ESHAPE;
    }

    meta = json_object_get(value, "metadata");

    ctx->pnid = json_object_get(meta, "phone_number_id");

    if (json_is_string(ctx->pnid)) {
        ctx->pnid_s = json_string_value(ctx->pnid);
        ctx->pnid_len = json_string_length(ctx->pnid);

    } else {
        ctx->pnid = NULL;
        ctx->pnid_s = "";
        ctx->pnid_len = 0;
    }

    ctx->display = json_object_get(meta, "display_phone_number");

    if (!json_is_string(ctx->display)) {
        ctx->display = NULL;
    }

    ctx->contacts = json_object_get(value, "contacts");

    if (!json_is_array(ctx->contacts)) {
        ctx->contacts = NULL;
    }

    list = json_object_get(value, "messages");

    /*
     * A lone contacts[] entry names the sender even when its wa_id is
     * written differently from "from" (Meta warns they may differ), but
     * only while every message of the change comes from one sender.
     */
    ctx->one_sender = 1;
    first = NULL;

    json_array_foreach(list, i, item) {
        v = json_object_get(item, "from");

        if (first == NULL) {
            first = v;

        } else if (!json_equal(first, v)) {
            ctx->one_sender = 0;
            break;
        }
    }

    if (json_is_array(list)) {
        json_array_foreach(list, i, item) {
            if (json_is_object(item)) {
                mw_message(ctx, item);

            } else {
                mw_malformed(ctx, "messages", item);
            }
        }

    } else if (list) {
        mw_malformed(ctx, "messages", list);
    }

    list = json_object_get(value, "statuses");

    if (json_is_array(list)) {
        json_array_foreach(list, i, item) {
            if (json_is_object(item)) {
                mw_status(ctx, item);

            } else {
                mw_malformed(ctx, "statuses", item);
            }
        }

    } else if (list) {
        mw_malformed(ctx, "statuses", list);
    }

    list = json_object_get(value, "errors");

    if (json_is_array(list)) {
        json_array_foreach(list, i, item) {
            mw_error_item(ctx, item);
        }

    } else if (list) {
        mw_error_item(ctx, list);
    }

    return MW_BATCH_OK;
}


/*
 * A change of any other field (template status, account update, ...) is
 * handed on whole: the application may want it, and nothing here needs
 * to understand it.
 */
static void
mw_change_other(mw_ctx_t *ctx, json_t *field, json_t *value)
{
    json_t       *ev, *pnid;
    const char   *parts[4];
    size_t        lens[4];
    mw_update_t  *u;

    /* a change value may carry the business number too */
    pnid = json_object_get(json_object_get(value, "metadata"),
                           "phone_number_id");

    if (json_is_string(pnid)) {
        ctx->pnid = pnid;
        ctx->pnid_s = json_string_value(pnid);
        ctx->pnid_len = json_string_length(pnid);

    } else {
        ctx->pnid = NULL;
        ctx->pnid_s = "";
        ctx->pnid_len = 0;
    }

    ctx->display = NULL;
    ctx->contacts = NULL;

    ev = mw_event_new(ctx, MW_S_CHANGE, NULL, ctx->entry_time);
    mw_set(ctx, ev, "field", json_incref(field));
    mw_set(ctx, ev, "value", json_incref(value));

    u = mw_update_add(ctx, MW_KIND_CHANGE, ctx->entry_time);
    if (u == NULL) {
        json_decref(ev);
        return;
    }

    u->event = ev;

    parts[0] = "change";
    lens[0] = mw_strlen("change");
    parts[1] = json_string_value(ctx->waba_id);
    lens[1] = json_string_length(ctx->waba_id);
    parts[2] = json_string_value(field);
    lens[2] = json_string_length(field);

    mw_key_content(ctx, u->key, parts, lens, 3, value);
    mw_event_id(ctx, u);
}


/*
 * An item of messages[] or statuses[] that is not an object (or a member
 * that is not an array) cannot be read as a message, but it is still
 * something Meta delivered: it goes on as a "change" event carrying the
 * item as it is, with a key made from its content.
 */
static void
mw_malformed(mw_ctx_t *ctx, const char *member, json_t *item)
{
    json_t       *ev;
    const char   *parts[5];
    size_t        lens[5];
    mw_update_t  *u;

    ev = mw_event_new(ctx, MW_S_CHANGE, NULL, -1);
    mw_set(ctx, ev, "field", json_string_nocheck("messages"));
    mw_set(ctx, ev, "member", json_string_nocheck(member));
    mw_set(ctx, ev, "value", json_incref(item));

    u = mw_update_add(ctx, MW_KIND_CHANGE, -1);
    if (u == NULL) {
        json_decref(ev);
        return;
    }

    u->event = ev;

    parts[0] = "item";
    lens[0] = mw_strlen("item");
    parts[1] = json_string_value(ctx->waba_id);
    lens[1] = json_string_length(ctx->waba_id);
    parts[2] = ctx->pnid_s;
    lens[2] = ctx->pnid_len;
    parts[3] = member;
    lens[3] = strlen(member);

    mw_key_content(ctx, u->key, parts, lens, 4, item);
    mw_event_id(ctx, u);
}


static void
mw_message(mw_ctx_t *ctx, json_t *msg)
{
    int64_t           ts;
    json_t           *id, *type, *from, *ev, *obj, *ctxt, *c, *v, *errors;
    mw_str_e          reason;
    mw_class_e        cls;
    const char       *qname, *parts[3];
    size_t            lens[3];
    mw_update_t      *u;
    const mw_type_t  *t;

    id = json_object_get(msg, "id");
    if (!json_is_string(id)) {
        id = NULL;
    }

    type = json_object_get(msg, "type");
    if (!json_is_string(type)) {
        type = NULL;
    }

    from = json_object_get(msg, "from");
    if (!json_is_string(from)) {
        /* a contact known only by a business-scoped user id */
        from = json_object_get(msg, "from_user_id");
    }

    ts = mw_timestamp(json_object_get(msg, "timestamp"));

    ev = mw_event_new(ctx, MW_S_MESSAGE, id, ts);

    u = mw_update_add(ctx, MW_KIND_MESSAGE, ts);
    if (u == NULL) {
        json_decref(ev);
        return;
    }

    u->event = ev;

    mw_contact(ctx, u, ev, "from", from, 1);

    mw_set(ctx, ev, "type", type ? json_incref(type)
                                 : mw_str(ctx, MW_S_EMPTY));

    t = type ? mw_type_find(json_string_value(type),
                            json_string_length(type))
             : NULL;

    obj = t ? json_object_get(msg, t->name) : NULL;

    cls = mw_classify(ctx, t, obj, &reason, &qname);

    u->cls = cls;

    switch (cls) {

    case MW_CLASS_SUPPORTED:
        mw_set(ctx, ev, "class", mw_str(ctx, MW_S_SUPPORTED));
        mw_set(ctx, ev, "content", obj ? json_incref(obj) : json_object());
        break;

    case MW_CLASS_QUARANTINED:
        u->reason = qname;
        mw_set(ctx, ev, "class", mw_str(ctx, MW_S_QUARANTINED));

        v = json_string(qname);
        mw_set(ctx, ev, "reason",
               v ? v : mw_str(ctx, MW_S_QUARANTINE_RULE));
        break;

    default:
        u->reason = mw_strings[reason];
        mw_set(ctx, ev, "class", mw_str(ctx, MW_S_UNSUPPORTED));
        mw_set(ctx, ev, "reason", mw_str(ctx, reason));
        break;
    }

    /* a reply's context: only ids when the content is hidden */
    ctxt = json_object_get(msg, "context");

    if (json_is_object(ctxt)) {
        if (cls != MW_CLASS_QUARANTINED) {
            mw_set(ctx, ev, "context", json_incref(ctxt));

        } else {
            c = json_object();
            v = json_object_get(ctxt, "id");
            if (json_is_string(v)) {
                mw_set(ctx, c, "id", json_incref(v));
            }

            v = json_object_get(ctxt, "from");
            if (json_is_string(v)) {
                mw_set(ctx, c, "from", json_incref(v));
            }

            mw_set(ctx, ev, "context", c);
        }
    }

    mw_refs(ctx, ev, type, obj);

    if (cls == MW_CLASS_SUPPORTED
        && mw_str_is(type, "text", mw_strlen("text")))
    {
        u->optin = mw_optin(json_object_get(obj, "body"));

        if (u->optin != MW_OPTIN_NONE) {
            mw_set(ctx, ev, "optin",
                   mw_str(ctx, u->optin == MW_OPTIN_IN ? MW_S_IN
                                                       : MW_S_OUT));
        }
    }

    /* Meta's own errors (131051 for an unsupported type) */
    errors = json_object_get(msg, "errors");

    if (json_is_array(errors)) {
        mw_set(ctx, ev, "errors", json_incref(errors));

        u->error_code = mw_code(json_array_get(errors, 0));
    }

    if (mw_str_is(type, "unsupported", mw_strlen("unsupported"))) {
        v = json_object_get(json_object_get(msg, "unsupported"), "type");

        if (json_is_string(v)) {
            mw_set(ctx, ev, "subtype", json_incref(v));
        }
    }

    if (id && json_string_length(id)) {
        mw_key_message(u->key, json_string_value(id),
                       json_string_length(id));

    } else {
        /* without an id, only the content tells a retry from another */
        parts[0] = "message";
        lens[0] = mw_strlen("message");
        parts[1] = ctx->pnid_s;
        lens[1] = ctx->pnid_len;

        mw_key_content(ctx, u->key, parts, lens, 2, msg);
    }

    mw_event_id(ctx, u);
}


/*
 * The class of a message of type t (NULL: a type not known here) whose
 * member for the type is obj; reason or qname say why it is not shown.
 */
static mw_class_e
mw_classify(mw_ctx_t *ctx, const mw_type_t *t, json_t *obj,
    mw_str_e *reason, const char **qname)
{
    *reason = MW_S_EMPTY;
    *qname = NULL;

    if (t == NULL) {
        *reason = MW_S_UNSUPPORTED_TYPE;
        return MW_CLASS_UNSUPPORTED;
    }

    if (t->flags & MW_T_UNSUPPORTED) {
        *reason = t->reason;
        return MW_CLASS_UNSUPPORTED;
    }

    if (obj != NULL
        && ((t->flags & MW_T_ARRAY) ? !json_is_array(obj)
                                    : !json_is_object(obj)))
    {
        /* a member of the wrong JSON type could hide unscanned text */
        *reason = MW_S_UNSUPPORTED_TYPE;
        return MW_CLASS_UNSUPPORTED;
    }

    if (t->mimes
        && !mw_mime_allowed(json_object_get(obj, "mime_type"), t->mimes))
    {
        *reason = MW_S_UNSUPPORTED_ATTACHMENT;
        return MW_CLASS_UNSUPPORTED;
    }

    if (ctx->qc && t->scan_depth >= 0) {
        *qname = mw_scan(ctx, obj, t->scan_depth);

        if (*qname) {
            return MW_CLASS_QUARANTINED;
        }
    }

    return MW_CLASS_SUPPORTED;
}


/* what a reaction, a deletion or an edit refers to */
static void
mw_refs(mw_ctx_t *ctx, json_t *ev, json_t *type, json_t *obj)
{
    json_t  *v, *emoji;

    v = NULL;

    if (mw_str_is(type, "reaction", mw_strlen("reaction"))) {
        v = json_object_get(obj, "message_id");
        emoji = json_object_get(obj, "emoji");

        /* Meta drops the emoji when the contact takes a reaction back */
        if (!json_is_string(emoji) || json_string_length(emoji) == 0) {
            mw_set(ctx, ev, "removed", json_true());
        }

    } else if (mw_str_is(type, "revoke", mw_strlen("revoke"))
               || mw_str_is(type, "edit", mw_strlen("edit")))
    {
        v = json_object_get(obj, "original_message_id");

        if (!json_is_string(v)) {
            v = json_object_get(obj, "message_id");
        }
    }

    if (json_is_string(v)) {
        mw_set(ctx, ev, "related_id", json_incref(v));
    }
}


static void
mw_status(mw_ctx_t *ctx, json_t *st)
{
    int64_t       ts;
    json_t       *id, *status, *rcpt, *ev, *v;
    const char   *parts[3];
    size_t        lens[3];
    mw_update_t  *u;

    static const char  *copy[] = {
        "errors", "conversation", "pricing", "biz_opaque_callback_data",
        NULL
    };
    const char *const  *k;

    id = json_object_get(st, "id");
    if (!json_is_string(id)) {
        id = NULL;
    }

    status = json_object_get(st, "status");
    if (!json_is_string(status)) {
        status = NULL;
    }

    ts = mw_timestamp(json_object_get(st, "timestamp"));

    if (mw_str_is(status, "deleted", mw_strlen("deleted"))) {
        mw_status_deleted(ctx, st, id, ts);
        return;
    }

    ev = mw_event_new(ctx, MW_S_STATUS, id, ts);

    u = mw_update_add(ctx, MW_KIND_STATUS, ts);
    if (u == NULL) {
        json_decref(ev);
        return;
    }

    u->event = ev;
    u->status = status ? json_string_value(status) : "";

    mw_set(ctx, ev, "status", status ? json_incref(status)
                                     : mw_str(ctx, MW_S_EMPTY));

    rcpt = json_object_get(st, "recipient_id");
    if (!json_is_string(rcpt)) {
        rcpt = json_object_get(st, "recipient_user_id");
    }

    mw_contact(ctx, u, ev, "recipient", rcpt, 0);

    for (k = copy; *k; k++) {
        v = json_object_get(st, *k);

        if (v) {
            mw_set(ctx, ev, *k, json_incref(v));
        }
    }

    u->error_code = mw_code(json_array_get(json_object_get(st, "errors"),
                                           0));

    if (id && json_string_length(id)) {
        mw_key_status(u->key, json_string_value(id), json_string_length(id),
                      u->status,
                      status ? json_string_length(status) : 0);

    } else {
        parts[0] = "status";
        lens[0] = mw_strlen("status");
        parts[1] = ctx->pnid_s;
        lens[1] = ctx->pnid_len;

        mw_key_content(ctx, u->key, parts, lens, 2, st);
    }

    mw_event_id(ctx, u);
}


/*
 * Older payloads report a contact deleting a message as a status; it is
 * the contact's action on their own message, so it is shown as the
 * unsupported "deleted" message the product specification asks for.
 */
static void
mw_status_deleted(mw_ctx_t *ctx, json_t *st, json_t *id, int64_t ts)
{
    json_t       *ev, *rcpt, *v;
    const char   *parts[3];
    size_t        lens[3];
    mw_update_t  *u;

    ev = mw_event_new(ctx, MW_S_MESSAGE, id, ts);

    u = mw_update_add(ctx, MW_KIND_MESSAGE, ts);
    if (u == NULL) {
        json_decref(ev);
        return;
    }

    u->event = ev;
    u->cls = MW_CLASS_UNSUPPORTED;
    u->reason = mw_strings[MW_S_DELETED];

    rcpt = json_object_get(st, "recipient_id");
    if (!json_is_string(rcpt)) {
        rcpt = json_object_get(st, "recipient_user_id");
    }

    mw_contact(ctx, u, ev, "from", rcpt, 1);

    mw_set(ctx, ev, "type", mw_str(ctx, MW_S_DELETED));
    mw_set(ctx, ev, "class", mw_str(ctx, MW_S_UNSUPPORTED));
    mw_set(ctx, ev, "reason", mw_str(ctx, MW_S_DELETED));

    v = json_object_get(st, "errors");

    if (json_is_array(v)) {
        mw_set(ctx, ev, "errors", json_incref(v));
    }

    if (id && json_string_length(id)) {
        mw_key_message(u->key, json_string_value(id),
                       json_string_length(id));

    } else {
        parts[0] = "message";
        lens[0] = mw_strlen("message");
        parts[1] = ctx->pnid_s;
        lens[1] = ctx->pnid_len;

        mw_key_content(ctx, u->key, parts, lens, 2, st);
    }

    mw_event_id(ctx, u);
}


/* value.errors[]: a problem Meta reports about the number or the app */
static void
mw_error_item(mw_ctx_t *ctx, json_t *item)
{
    json_t       *ev, *list;
    const char   *parts[3];
    size_t        lens[3];
    mw_update_t  *u;

    ev = mw_event_new(ctx, MW_S_ERROR, NULL, -1);

    list = json_array();
    if (list && json_array_append(list, item) != 0) {
        json_decref(list);
        list = NULL;
    }

    mw_set(ctx, ev, "errors", list);

    u = mw_update_add(ctx, MW_KIND_ERROR, -1);
    if (u == NULL) {
        json_decref(ev);
        return;
    }

    u->event = ev;

    u->error_code = mw_code(item);

    parts[0] = "error";
    lens[0] = mw_strlen("error");
    parts[1] = ctx->pnid_s;
    lens[1] = ctx->pnid_len;

    mw_key_content(ctx, u->key, parts, lens, 2, item);
    mw_event_id(ctx, u);
}


static const mw_type_t *
mw_type_find(const char *name, size_t len)
{
    const mw_type_t  *t;

    for (t = mw_types; t->name; t++) {
        if (t->len == len && memcmp(t->name, name, len) == 0) {
            return t;
        }
    }

    return NULL;
}


/* case-insensitive, parameters (";codecs=opus") and blanks ignored */
static int
mw_mime_allowed(json_t *mime, const char *const *list)
{
    size_t              len;
    const char         *s, *p;
    const char *const  *m;

    if (!json_is_string(mime)) {
        return 0;
    }

    s = json_string_value(mime);
    len = json_string_length(mime);

    p = memchr(s, ';', len);
    if (p) {
        len = p - s;
    }

    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }

    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }

    for (m = list; *m; m++) {
        /* a NUL inside s differs from every byte of the listed name */
        if (strlen(*m) == len && strncasecmp(*m, s, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * Scans the user-written members of obj, and of the objects nested in it
 * down to depth levels; the first detector or rule that fires wins.
 */
static const char *
mw_scan(mw_ctx_t *ctx, json_t *obj, int depth)
{
    json_t             *v;
    const char         *key, *name;
    const char *const  *k;

    if (!json_is_object(obj)) {
        return NULL;
    }

    for (k = mw_scan_keys; *k; k++) {
        v = json_object_get(obj, *k);

        if (json_is_string(v)) {
            /* the whole length: a \u0000 must not end the scan early */
            name = mw_quarantine_scan(ctx->qc, json_string_value(v),
                                      json_string_length(v));
            if (name) {
                return name;
            }
        }
    }

    if (depth > 0) {
        json_object_foreach(obj, key, v) {
            if (json_is_object(v)) {
                name = mw_scan(ctx, v, depth - 1);
                if (name) {
                    return name;
                }
            }
        }
    }

    return NULL;
}


static mw_optin_e
mw_optin(json_t *text)
{
    size_t       len;
    const char  *s;

    if (!json_is_string(text)) {
        return MW_OPTIN_NONE;
    }

    s = json_string_value(text);
    len = json_string_length(text);

    while (len && (*s == ' ' || (*s >= '\t' && *s <= '\r'))) {
        s++;
        len--;
    }

    while (len && (s[len - 1] == ' '
                   || (s[len - 1] >= '\t' && s[len - 1] <= '\r')))
    {
        len--;
    }

    /* strncasecmp stops at a NUL in s, which then differs: no match */
    if ((len == 3 && strncasecmp(s, "YES", 3) == 0)
        || (len == 5 && strncasecmp(s, "START", 5) == 0)
        || (len == 9 && strncasecmp(s, "SUBSCRIBE", 9) == 0))
    {
        return MW_OPTIN_IN;
    }

    if (len == 4 && strncasecmp(s, "STOP", 4) == 0) {
        return MW_OPTIN_OUT;
    }

    return MW_OPTIN_NONE;
}


/*
 * Sets the event's contact member (key) and the update's contact: Meta's
 * form when it normalizes, otherwise the raw string in the event and no
 * contact in the update, so that no state is kept under a bad name.
 */
static void
mw_contact(mw_ctx_t *ctx, mw_update_t *u, json_t *ev, const char *key,
    json_t *raw, int profile)
{
    int          n;
    size_t       len;
    json_t      *name;
    const char  *s;

    u->contact[0] = '\0';

    if (!json_is_string(raw)) {
        mw_set(ctx, ev, key, mw_str(ctx, MW_S_EMPTY));
        raw = NULL;

    } else {
        s = json_string_value(raw);
        len = json_string_length(raw);

        n = mw_contact_normalize(s, len, u->contact);

        if (n <= 0) {
            u->contact[0] = '\0';
            mw_set(ctx, ev, key, json_incref(raw));

        } else if ((size_t) n == len && memcmp(u->contact, s, len) == 0) {
            /* the usual case: Meta's wa_id is already normal */
            mw_set(ctx, ev, key, json_incref(raw));

        } else {
            mw_set(ctx, ev, key, json_stringn_nocheck(u->contact, n));
        }
    }

    if (u->contact[0] && ctx->pnid_len) {
        mw_key_contact(u->contact_key, ctx->pnid_s, ctx->pnid_len,
                       u->contact, strlen(u->contact));
    }

    if (profile) {
        name = mw_profile_name(ctx, raw);

        if (name) {
            mw_set(ctx, ev, "profile_name", json_incref(name));
        }
    }
}


/* value.contacts[]: the one whose wa_id (or user id) is raw, or the only */
static json_t *
mw_profile_name(mw_ctx_t *ctx, json_t *raw)
{
    size_t   i, n;
    json_t  *c, *found, *name;

    if (ctx->contacts == NULL) {
        return NULL;
    }

    n = json_array_size(ctx->contacts);
    found = NULL;

    if (raw) {
        for (i = 0; i < n; i++) {
            c = json_array_get(ctx->contacts, i);

            if (json_equal(json_object_get(c, "wa_id"), raw)
                || json_equal(json_object_get(c, "user_id"), raw))
            {
                found = c;
                break;
            }
        }
    }

    if (found == NULL && n == 1 && ctx->one_sender) {
        found = json_array_get(ctx->contacts, 0);
    }

    name = json_object_get(json_object_get(found, "profile"), "name");

    return json_is_string(name) ? name : NULL;
}


/*
 * Meta sends Unix seconds as a decimal string; a JSON integer (or an
 * integral real, after an overflow retry) is accepted too.  Anything else,
 * negative or beyond 2^62 is "no timestamp": -1.
 */
static int64_t
mw_timestamp(json_t *v)
{
    size_t       i, len;
    double       d;
    int64_t      t;
    const char  *s;

    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);

        if (len == 0 || len > 19) {
            return -1;
        }

        t = 0;

        for (i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return -1;
            }

            if (t > (MW_TS_MAX - (s[i] - '0')) / 10) {
                return -1;
            }

            t = t * 10 + (s[i] - '0');
        }

        return t;
    }

    if (json_is_integer(v)) {
        t = json_integer_value(v);
        return (t >= 0 && t <= MW_TS_MAX) ? t : -1;
    }

    if (json_is_real(v)) {
        d = json_real_value(v);

        /* written so that NaN fails too */
        if (!(d >= 0 && d <= (double) MW_TS_MAX)) {
            return -1;
        }

        t = (int64_t) d;
        return ((double) t == d) ? t : -1;
    }

    return -1;
}


/* errors[].code as an int; 0 when absent or out of range */
static int
mw_code(json_t *error)
{
    double      d;
    json_t     *v;
    json_int_t  i;

    v = json_object_get(error, "code");

    if (json_is_integer(v)) {
        i = json_integer_value(v);
        return (i >= INT_MIN && i <= INT_MAX) ? (int) i : 0;
    }

    if (json_is_real(v)) {
        /* a cast of an out-of-range double is undefined: check first */
        d = json_real_value(v);
        return (d >= INT_MIN && d <= INT_MAX) ? (int) d : 0;
    }

    return 0;
}


static mw_update_t *
mw_update_add(mw_ctx_t *ctx, mw_kind_e kind, int64_t ts)
{
    size_t        n;
    mw_batch_t   *b;
    mw_update_t  *u;

    b = ctx->batch;

    if (ctx->nomem) {
        return NULL;
    }

    if (b->nupdates == b->nalloc) {
        n = b->nalloc ? 2 * b->nalloc : 4;

        u = realloc(b->updates, n * sizeof(mw_update_t));
        if (u == NULL) {
            ctx->nomem = 1;
            return NULL;
        }

        b->updates = u;
        b->nalloc = n;
    }

    u = &b->updates[b->nupdates++];
    memset(u, 0, sizeof(mw_update_t));

    u->kind = kind;
    u->timestamp = ts;
    u->window_from = mw_window_from(ts, ctx->now);
    u->phone_number_id = ctx->pnid_s ? ctx->pnid_s : "";

    return u;
}


static json_t *
mw_event_new(mw_ctx_t *ctx, mw_str_e kind, json_t *id, int64_t ts)
{
    json_t  *ev;

    ev = json_object();
    if (ev == NULL) {
        ctx->nomem = 1;
        return NULL;
    }

    mw_set(ctx, ev, "kind", mw_str(ctx, kind));
    mw_set(ctx, ev, "channel", mw_str(ctx, MW_S_WHATSAPP));
    mw_set(ctx, ev, "id", id ? json_incref(id) : mw_str(ctx, MW_S_EMPTY));
    mw_set(ctx, ev, "phone_number_id",
           ctx->pnid ? json_incref(ctx->pnid) : mw_str(ctx, MW_S_EMPTY));

    if (ctx->display) {
        mw_set(ctx, ev, "display_phone_number", json_incref(ctx->display));
    }

    mw_set(ctx, ev, "waba_id", json_incref(ctx->waba_id));
    mw_set(ctx, ev, "timestamp", ts >= 0 ? json_integer(ts) : json_null());

    return ev;
}


static void
mw_event_id(mw_ctx_t *ctx, mw_update_t *u)
{
    char  hex[MW_KEY_HEX_LEN + 1];

    mw_key_hex(u->key, hex);
    mw_set(ctx, u->event, "event_id",
           json_stringn_nocheck(hex, MW_KEY_HEX_LEN));
}


/*
 * A key from fixed parts and a canonical dump of item (compact, sorted
 * keys), for updates that have no id of their own.
 */
static void
mw_key_content(mw_ctx_t *ctx, unsigned char *out, const char **parts,
    size_t *lens, size_t n, json_t *item)
{
    char              *dump;
    json_free_t        jfree;
    json_malloc_t      jmalloc;

    dump = json_dumps(item, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (dump == NULL) {
        ctx->nomem = 1;
        return;
    }

    /* a dump holds no NUL: jansson writes \u0000 */
    parts[n] = dump;
    lens[n] = strlen(dump);

    mw_key_make(out, MW_KEY_DEDUPE, parts, lens, n + 1);

    /* the dump was allocated by jansson's allocator, maybe not malloc */
    json_get_alloc_funcs(&jmalloc, &jfree);
    jfree(dump);
}


static json_t *
mw_str(mw_ctx_t *ctx, mw_str_e s)
{
    if (ctx->str[s] == NULL) {
        ctx->str[s] = json_string_nocheck(mw_strings[s]);

        if (ctx->str[s] == NULL) {
            return NULL;
        }
    }

    return json_incref(ctx->str[s]);
}


/* json_object_set_new_nocheck() releases v on failure; NULL v is nomem */
static void
mw_set(mw_ctx_t *ctx, json_t *obj, const char *key, json_t *v)
{
    if (v == NULL || json_object_set_new_nocheck(obj, key, v) != 0) {
        ctx->nomem = 1;
    }
}


static int
mw_str_is(json_t *s, const char *lit, size_t len)
{
    return json_is_string(s)
           && json_string_length(s) == len
           && memcmp(json_string_value(s), lit, len) == 0;
}
