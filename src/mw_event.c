/*
 * nginx-meta-webhook: normalize and classify a delivery.
 *
 * A delivery is entry[] x changes[] x (messages[] | statuses[] | errors[]);
 * each item becomes one update with its class, a dedupe key and, for a
 * contact, the contact's state key.  The envelope is checked strictly,
 * because a body of the wrong shape is not a delivery at all; inside it
 * everything is lenient, because an odd message from Meta must still
 * reach the application rather than be lost.
 *
 * Parsing extracts only what deciding about an update takes.  The
 * normalized event is written by mw_batch_dump(), straight from the
 * parsed document into the output buffer: most requests never read the
 * events, and for those that do, building a jansson object per event only
 * to serialize it at once was most of the work.  The writer reproduces
 * jansson's compact serialization byte for byte (the same escapes, number
 * formats and member order), so the output is what json_dumps() of the
 * same event would give.
 */

#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mw_core.h"


#define MW_TS_MAX            ((int64_t) 1 << 62)

#define mw_strlen(s)         (sizeof(s) - 1)


/* the shapes of events, by what the update was parsed from */
typedef enum {
    MW_FORM_MESSAGE = 0,
    MW_FORM_STATUS,
    MW_FORM_DELETED,                /* a legacy "deleted" status */
    MW_FORM_ERROR,                  /* an item of value.errors[] */
    MW_FORM_CHANGE,                 /* a change of another field */
    MW_FORM_ITEM                    /* a malformed messages/statuses item */
} mw_form_e;


#define MW_REASON_DELETED            "deleted"
#define MW_REASON_REACTION           "reaction"
#define MW_REASON_ATTACHMENT         "unsupported_attachment"
#define MW_REASON_TYPE               "unsupported_type"
#define MW_REASON_RULE               "quarantine_rule"


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
    const char              *reason;        /* MW_T_UNSUPPORTED */
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
    mw_type("text", 0, 0, NULL, NULL),
    mw_type("image", 0, 0, mw_mime_image, NULL),
    mw_type("video", 0, 0, mw_mime_video, NULL),
    mw_type("audio", 0, 0, mw_mime_audio, NULL),
    mw_type("document", 0, 0, mw_mime_document, NULL),
    mw_type("sticker", 0, 0, mw_mime_sticker, NULL),
    mw_type("location", 0, 0, NULL, NULL),
    mw_type("contacts", MW_T_ARRAY, -1, NULL, NULL),
    mw_type("interactive", 0, 1, NULL, NULL),
    mw_type("button", 0, 0, NULL, NULL),
    mw_type("order", 0, 0, NULL, NULL),
    mw_type("system", 0, -1, NULL, NULL),
    mw_type("request_welcome", 0, -1, NULL, NULL),
    mw_type("edit", 0, 2, NULL, NULL),
    mw_type("reaction", MW_T_UNSUPPORTED, -1, NULL, MW_REASON_REACTION),
    mw_type("revoke", MW_T_UNSUPPORTED, -1, NULL, MW_REASON_DELETED),
    { NULL, 0, 0, -1, NULL, NULL }
};

#define MW_TYPE_TEXT         (&mw_types[0])

/*
 * Members whose text is user-written, hence scanned, in the order they
 * are scanned: the first detector or rule that fires names the reason.
 */
static const char *const mw_scan_keys[] = {
    "body", "caption", "filename", "title", "description", "text",
    "name", "address", "response_json", NULL
};

#define MW_SCAN_KEYS         9


/* the output buffer of mw_batch_dump(), from jansson's allocator */
typedef struct {
    char                    *buf;
    size_t                   len;
    size_t                   cap;
    int                      failed;
    json_malloc_t            alloc;
    json_free_t              free;
} mw_out_t;


static int mw_envelope(mw_ctx_t *ctx);
static int mw_change_messages(mw_ctx_t *ctx, json_t *value);
static void mw_change_other(mw_ctx_t *ctx, json_t *field, json_t *value);
static void mw_message(mw_ctx_t *ctx, json_t *msg);
static mw_class_e mw_classify(mw_ctx_t *ctx, const mw_type_t *t,
    json_t *obj, const char **reason);
static void mw_status(mw_ctx_t *ctx, json_t *st);
static void mw_status_deleted(mw_ctx_t *ctx, json_t *st, json_t *id,
    int64_t ts);
static void mw_error_item(mw_ctx_t *ctx, json_t *item);
static void mw_malformed(mw_ctx_t *ctx, const char *member, json_t *item);
static const mw_type_t *mw_type_find(const char *name, size_t len);
static int mw_mime_allowed(json_t *mime, const char *const *list);
static const char *mw_scan(mw_ctx_t *ctx, json_t *obj, int depth);
static int mw_scan_rank(const char *key, size_t len);
static mw_optin_e mw_optin(json_t *text);
static json_t *mw_recipient(json_t *st);
static void mw_contact(mw_ctx_t *ctx, mw_update_t *u, json_t *raw);
static int64_t mw_timestamp(json_t *v);
static int mw_code(json_t *error);
static mw_update_t *mw_update_add(mw_ctx_t *ctx, mw_kind_e kind,
    mw_form_e form, json_t *item, json_t *id, int64_t ts);
static void mw_key_content(mw_ctx_t *ctx, unsigned char *out,
    const char **parts, size_t *lens, size_t n, json_t *item);
static void mw_key_message_update(mw_ctx_t *ctx, mw_update_t *u,
    json_t *item);
static int mw_str_is(json_t *s, const char *lit, size_t len);

static void mw_event_write(mw_out_t *o, const mw_update_t *u);
static void mw_write_message(mw_out_t *o, const mw_update_t *u);
static void mw_write_status(mw_out_t *o, const mw_update_t *u);
static void mw_write_contact(mw_out_t *o, const mw_update_t *u,
    const char *member, size_t mlen, int profile);
static json_t *mw_profile_name(const mw_event_src_t *src, json_t *raw);
static void mw_write_json(mw_out_t *o, json_t *v);
static void mw_write_str(mw_out_t *o, const char *s, size_t len);
static void mw_write_jstr(mw_out_t *o, json_t *s);
static void mw_write_int(mw_out_t *o, int64_t n);
static void mw_write_real(mw_out_t *o, double d);
static int mw_out_grow(mw_out_t *o, size_t n);
static int mw_utf8_valid(const char *s, size_t len);


/* o->len + n fits, or o->failed */
#define mw_out_reserve(o, n)                                                \
    ((o)->cap - (o)->len >= (n) || mw_out_grow(o, n) == 0)

#define mw_out_lit(o, s)     mw_out_put(o, s, mw_strlen(s))


static inline void
mw_out_put(mw_out_t *o, const char *s, size_t n)
{
    if (mw_out_reserve(o, n)) {
        memcpy(o->buf + o->len, s, n);
        o->len += n;
    }
}


static inline void
mw_out_ch(mw_out_t *o, char c)
{
    if (mw_out_reserve(o, 1)) {
        o->buf[o->len++] = c;
    }
}


int
mw_batch_parse(mw_batch_t *b, const char *buf, size_t len, unsigned opts,
    const mw_quarantine_conf_t *qc, int64_t now)
{
    int        rc;
    mw_ctx_t   ctx;

    memset(b, 0, sizeof(mw_batch_t));

    b->len = len;
    b->root = mw_json_parse(buf, len, opts, b->error, sizeof(b->error));

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

    if (rc != MW_BATCH_OK) {
        /* no half-built batch may be mistaken for a usable one */
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
    if (b == NULL) {
        return;
    }

    json_decref(b->root);
    mw_batch_drop(b);
}


void
mw_batch_drop(mw_batch_t *b)
{
    if (b == NULL) {
        return;
    }

    /* the updates only borrow from the document: nothing to release */
    free(b->updates);

    b->updates = NULL;
    b->nupdates = 0;
    b->nalloc = 0;
    b->root = NULL;
}


int
mw_event_set_window(mw_update_t *u, int64_t expires)
{
    if (u == NULL) {
        return -1;
    }

    u->window_expires = expires;

    return 0;
}


char *
mw_batch_dump(const mw_batch_t *b, const unsigned char *skip, size_t *len)
{
    size_t    i;
    int       first;
    mw_out_t  o;

    json_get_alloc_funcs(&o.alloc, &o.free);

    /*
     * An event carries most of its update's bytes and adds about 250 of
     * its own; Meta's \u escapes of non-ASCII text come out shorter.  One
     * allocation is then the rule, even for a 1000-update batch.
     */
    o.cap = 64 + b->len + 256 * b->nupdates;
    o.len = 0;
    o.failed = 0;
    o.buf = o.alloc(o.cap);

    if (o.buf == NULL) {
        return NULL;
    }

    mw_out_lit(&o, "{\"events\":[");

    first = 1;

    for (i = 0; i < b->nupdates; i++) {
        if (skip && skip[i]) {
            continue;
        }

        if (!first) {
            mw_out_ch(&o, ',');
        }

        first = 0;

        mw_event_write(&o, &b->updates[i]);
    }

    /* "]}" and the terminating NUL */
    mw_out_put(&o, "]}", 3);

    if (o.failed) {
        o.free(o.buf);
        return NULL;
    }

    o.len--;

    if (len) {
        *len = o.len;
    }

    return o.buf;
}


json_t *
mw_update_event(const mw_batch_t *b, size_t i)
{
    json_t    *ev;
    mw_out_t   o;

    if (b == NULL || i >= b->nupdates) {
        return NULL;
    }

    json_get_alloc_funcs(&o.alloc, &o.free);

    o.cap = 1024;
    o.len = 0;
    o.failed = 0;
    o.buf = o.alloc(o.cap);

    if (o.buf == NULL) {
        return NULL;
    }

    mw_event_write(&o, &b->updates[i]);

    /* the dump escapes a NUL inside a string as \u0000 */
    ev = o.failed ? NULL : json_loadb(o.buf, o.len, JSON_ALLOW_NUL, NULL);

    o.free(o.buf);

    return ev;
}


static int
mw_out_grow(mw_out_t *o, size_t n)
{
    char    *p;
    size_t   cap;

    if (o->failed) {
        return -1;
    }

    /* jansson's allocator has no realloc() */
    cap = 2 * o->cap;

    if (cap - o->len < n) {
        cap = o->len + n;
    }

    p = o->alloc(cap);

    if (p == NULL) {
        o->failed = 1;
        return -1;
    }

    memcpy(p, o->buf, o->len);
    o->free(o->buf);

    o->buf = p;
    o->cap = cap;

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
    json_t       *pnid;
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

    u = mw_update_add(ctx, MW_KIND_CHANGE, MW_FORM_CHANGE, value, NULL,
                      ctx->entry_time);
    if (u == NULL) {
        return;
    }

    u->src.type = field;

    parts[0] = "change";
    lens[0] = mw_strlen("change");
    parts[1] = json_string_value(ctx->waba_id);
    lens[1] = json_string_length(ctx->waba_id);
    parts[2] = json_string_value(field);
    lens[2] = json_string_length(field);

    mw_key_content(ctx, u->key, parts, lens, 3, value);
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
    const char   *parts[5];
    size_t        lens[5];
    mw_update_t  *u;

    u = mw_update_add(ctx, MW_KIND_CHANGE, MW_FORM_ITEM, item, NULL, -1);
    if (u == NULL) {
        return;
    }

    u->src.member = member;

    parts[0] = "item";
    lens[0] = mw_strlen("item");
    parts[1] = json_string_value(ctx->waba_id);
    lens[1] = json_string_length(ctx->waba_id);
    parts[2] = ctx->pnid_s;
    lens[2] = ctx->pnid_len;
    parts[3] = member;
    lens[3] = strlen(member);

    mw_key_content(ctx, u->key, parts, lens, 4, item);
}


static void
mw_message(mw_ctx_t *ctx, json_t *msg)
{
    int64_t           ts;
    json_t           *id, *type, *from, *obj, *errors;
    mw_class_e        cls;
    const char       *reason;
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

    u = mw_update_add(ctx, MW_KIND_MESSAGE, MW_FORM_MESSAGE, msg, id, ts);
    if (u == NULL) {
        return;
    }

    mw_contact(ctx, u, from);

    t = type ? mw_type_find(json_string_value(type),
                            json_string_length(type))
             : NULL;

    obj = t ? json_object_get(msg, t->name) : NULL;

    u->src.type = type;
    u->src.obj = obj;

    cls = mw_classify(ctx, t, obj, &reason);

    u->cls = cls;
    u->reason = reason;

    if (cls == MW_CLASS_SUPPORTED && t == MW_TYPE_TEXT) {
        u->optin = mw_optin(json_object_get(obj, "body"));
    }

    /* Meta's own errors (131051 for an unsupported type) */
    errors = json_object_get(msg, "errors");

    if (json_is_array(errors)) {
        u->error_code = mw_code(json_array_get(errors, 0));
    }

    mw_key_message_update(ctx, u, msg);
}


/*
 * The class of a message of type t (NULL: a type not known here) whose
 * member for the type is obj; reason says why it is not shown: a static
 * name, or the quarantine detector's or rule's.
 */
static mw_class_e
mw_classify(mw_ctx_t *ctx, const mw_type_t *t, json_t *obj,
    const char **reason)
{
    const char  *name;

    *reason = NULL;

    if (t == NULL) {
        *reason = MW_REASON_TYPE;
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
        *reason = MW_REASON_TYPE;
        return MW_CLASS_UNSUPPORTED;
    }

    if (t->mimes
        && !mw_mime_allowed(json_object_get(obj, "mime_type"), t->mimes))
    {
        *reason = MW_REASON_ATTACHMENT;
        return MW_CLASS_UNSUPPORTED;
    }

    if (ctx->qc && t->scan_depth >= 0) {
        name = mw_scan(ctx, obj, t->scan_depth);

        if (name) {
            *reason = name;
            return MW_CLASS_QUARANTINED;
        }
    }

    return MW_CLASS_SUPPORTED;
}


static void
mw_status(mw_ctx_t *ctx, json_t *st)
{
    int64_t       ts;
    json_t       *id, *status;
    const char   *parts[3];
    size_t        lens[3];
    mw_update_t  *u;

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

    u = mw_update_add(ctx, MW_KIND_STATUS, MW_FORM_STATUS, st, id, ts);
    if (u == NULL) {
        return;
    }

    u->status = status ? json_string_value(status) : "";
    u->src.type = status;

    mw_contact(ctx, u, mw_recipient(st));

    u->error_code = mw_code(json_array_get(json_object_get(st, "errors"),
                                           0));

    if (u->id_len) {
        mw_key_status(u->key, u->id, u->id_len, u->status,
                      status ? json_string_length(status) : 0);

    } else {
        parts[0] = "status";
        lens[0] = mw_strlen("status");
        parts[1] = ctx->pnid_s;
        lens[1] = ctx->pnid_len;

        mw_key_content(ctx, u->key, parts, lens, 2, st);
    }
}


/*
 * Older payloads report a contact deleting a message as a status; it is
 * the contact's action on their own message, so it is shown as the
 * unsupported "deleted" message the product specification asks for.
 */
static void
mw_status_deleted(mw_ctx_t *ctx, json_t *st, json_t *id, int64_t ts)
{
    mw_update_t  *u;

    u = mw_update_add(ctx, MW_KIND_MESSAGE, MW_FORM_DELETED, st, id, ts);
    if (u == NULL) {
        return;
    }

    u->cls = MW_CLASS_UNSUPPORTED;
    u->reason = MW_REASON_DELETED;

    mw_contact(ctx, u, mw_recipient(st));

    mw_key_message_update(ctx, u, st);
}


/* value.errors[]: a problem Meta reports about the number or the app */
static void
mw_error_item(mw_ctx_t *ctx, json_t *item)
{
    const char   *parts[3];
    size_t        lens[3];
    mw_update_t  *u;

    u = mw_update_add(ctx, MW_KIND_ERROR, MW_FORM_ERROR, item, NULL, -1);
    if (u == NULL) {
        return;
    }

    u->error_code = mw_code(item);

    parts[0] = "error";
    lens[0] = mw_strlen("error");
    parts[1] = ctx->pnid_s;
    lens[1] = ctx->pnid_len;

    mw_key_content(ctx, u->key, parts, lens, 2, item);
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
 *
 * One walk over obj's members finds the scanned ones (a message object
 * has a handful of members, against nine names looked up one by one);
 * they are then scanned in mw_scan_keys' order, so the reason given is
 * the same whatever order Meta wrote the members in.
 */
static const char *
mw_scan(mw_ctx_t *ctx, json_t *obj, int depth)
{
    int          r, nested;
    json_t      *v, *found[MW_SCAN_KEYS];
    unsigned     seen;
    const char  *key, *name;

    if (!json_is_object(obj)) {
        return NULL;
    }

    seen = 0;
    nested = 0;

    json_object_foreach(obj, key, v) {
        if (json_is_string(v)) {
            r = mw_scan_rank(key, strlen(key));

            if (r >= 0) {
                found[r] = v;
                seen |= 1u << r;
            }

        } else if (json_is_object(v)) {
            nested = 1;
        }
    }

    for (r = 0; seen; r++, seen >>= 1) {
        if (seen & 1) {
            /* the whole length: a \u0000 must not end the scan early */
            name = mw_quarantine_scan(ctx->qc, json_string_value(found[r]),
                                      json_string_length(found[r]));
            if (name) {
                return name;
            }
        }
    }

    if (depth > 0 && nested) {
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


/* the index of key in mw_scan_keys, or -1 */
static int
mw_scan_rank(const char *key, size_t len)
{
    int  r;

    for (r = 0; mw_scan_keys[r]; r++) {
        if (mw_scan_keys[r][0] == key[0]
            && strlen(mw_scan_keys[r]) == len
            && memcmp(mw_scan_keys[r], key, len) == 0)
        {
            return r;
        }
    }

    return -1;
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


static json_t *
mw_recipient(json_t *st)
{
    json_t  *rcpt;

    rcpt = json_object_get(st, "recipient_id");

    if (!json_is_string(rcpt)) {
        rcpt = json_object_get(st, "recipient_user_id");
    }

    return rcpt;
}


/*
 * The update's contact: Meta's form when it normalizes, otherwise none,
 * so that no state is kept under a bad name (the event then shows the
 * raw string).
 */
static void
mw_contact(mw_ctx_t *ctx, mw_update_t *u, json_t *raw)
{
    int  n;

    u->contact[0] = '\0';

    if (!json_is_string(raw)) {
        return;
    }

    u->src.raw = raw;

    n = mw_contact_normalize(json_string_value(raw), json_string_length(raw),
                             u->contact);

    if (n <= 0) {
        u->contact[0] = '\0';
        return;
    }

    if (ctx->pnid_len) {
        mw_key_contact(u->contact_key, ctx->pnid_s, ctx->pnid_len,
                       u->contact, n);
    }
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
mw_update_add(mw_ctx_t *ctx, mw_kind_e kind, mw_form_e form, json_t *item,
    json_t *id, int64_t ts)
{
    size_t        n;
    mw_batch_t   *b;
    mw_update_t  *u;

    b = ctx->batch;

    if (ctx->nomem) {
        return NULL;
    }

    if (b->nupdates == b->nalloc) {
        /*
         * Most deliveries hold one update.  Two fit glibc's small bins
         * (below 1 KB): a larger first request would consolidate the
         * fast bins, all of a parse's jansson values, on every delivery.
         */
        n = b->nalloc ? 2 * b->nalloc : 2;

        u = realloc(b->updates, n * sizeof(mw_update_t));
        if (u == NULL) {
            ctx->nomem = 1;
            return NULL;
        }

        b->updates = u;
        b->nalloc = n;
    }

    u = &b->updates[b->nupdates++];

    /*
     * Not a memset of the whole update: contact[] alone is 160 bytes,
     * and mw_contact() writes its first byte.
     */
    u->kind = kind;
    u->cls = MW_CLASS_NONE;
    u->optin = MW_OPTIN_NONE;
    u->reason = NULL;
    u->phone_number_id = ctx->pnid_s ? ctx->pnid_s : "";
    u->status = NULL;
    u->contact[0] = '\0';
    u->timestamp = ts;
    u->window_from = mw_window_from(ts, ctx->now);
    u->window_expires = 0;
    u->error_code = 0;
    memset(u->key, 0, MW_KEY_LEN);
    memset(u->contact_key, 0, MW_KEY_LEN);

    if (id) {
        u->id = json_string_value(id);
        u->id_len = json_string_length(id);

    } else {
        u->id = "";
        u->id_len = 0;
    }

    memset(&u->src, 0, sizeof(mw_event_src_t));
    u->src.form = form;
    u->src.item = item;
    u->src.waba_id = ctx->waba_id;
    u->src.pnid = ctx->pnid;
    u->src.display = ctx->display;
    u->src.contacts = ctx->contacts;
    u->src.one_sender = ctx->one_sender;

    return u;
}


/*
 * A key from fixed parts and a canonical dump of item (compact, sorted
 * keys), for updates that have no id of their own.
 */
static void
mw_key_content(mw_ctx_t *ctx, unsigned char *out, const char **parts,
    size_t *lens, size_t n, json_t *item)
{
    char  *dump;

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
    mw_json_free(dump);
}


/*
 * A message's dedupe key: its id, or without one (only the content then
 * tells a retry from another message) the business number and the item.
 */
static void
mw_key_message_update(mw_ctx_t *ctx, mw_update_t *u, json_t *item)
{
    const char  *parts[3];         /* mw_key_content() adds the item */
    size_t       lens[3];

    if (u->id_len) {
        mw_key_message(u->key, u->id, u->id_len);
        return;
    }

    parts[0] = "message";
    lens[0] = mw_strlen("message");
    parts[1] = ctx->pnid_s;
    lens[1] = ctx->pnid_len;

    mw_key_content(ctx, u->key, parts, lens, 2, item);
}


static int
mw_str_is(json_t *s, const char *lit, size_t len)
{
    return json_is_string(s)
           && json_string_length(s) == len
           && memcmp(json_string_value(s), lit, len) == 0;
}


/* ---------------------------------------------------------------------- */
/* the events                                                             */

/*
 * Every event starts with kind, channel, id, phone_number_id,
 * display_phone_number (when known), waba_id and timestamp, and ends with
 * event_id and, once the state has answered, window; in between come the
 * members of its form.  The order is the one docs/events.md shows, which
 * applications may have come to rely on: it must not change.
 */
static void
mw_event_write(mw_out_t *o, const mw_update_t *u)
{
    size_t                 i;
    char                   hex[MW_KEY_HEX_LEN + 1];
    json_t                *v;
    const mw_event_src_t  *src;

    static const char  *kinds[] = {
        NULL, "message", "status", "error", "change"
    };

    static const char  *copy[] = {
        "errors", "conversation", "pricing", "biz_opaque_callback_data",
        NULL
    };

    src = &u->src;

    mw_out_lit(o, "{\"kind\":");
    mw_write_str(o, kinds[u->kind], strlen(kinds[u->kind]));
    mw_out_lit(o, ",\"channel\":\"whatsapp\",\"id\":");
    mw_write_str(o, u->id, u->id_len);
    mw_out_lit(o, ",\"phone_number_id\":");
    mw_write_jstr(o, src->pnid);

    if (src->display) {
        mw_out_lit(o, ",\"display_phone_number\":");
        mw_write_jstr(o, src->display);
    }

    mw_out_lit(o, ",\"waba_id\":");
    mw_write_jstr(o, src->waba_id);
    mw_out_lit(o, ",\"timestamp\":");

    if (u->timestamp >= 0) {
        mw_write_int(o, u->timestamp);

    } else {
        mw_out_lit(o, "null");
    }

    switch (src->form) {

    case MW_FORM_MESSAGE:
        mw_write_message(o, u);
        break;

    case MW_FORM_STATUS:
        mw_write_status(o, u);
        break;

    case MW_FORM_DELETED:
        mw_write_contact(o, u, "from", mw_strlen("from"), 1);
        mw_out_lit(o, ",\"type\":\"deleted\",\"class\":\"unsupported\","
                      "\"reason\":\"deleted\"");

        v = json_object_get(src->item, "errors");

        if (json_is_array(v)) {
            mw_out_lit(o, ",\"errors\":");
            mw_write_json(o, v);
        }

        break;

    case MW_FORM_ERROR:
        mw_out_lit(o, ",\"errors\":[");
        mw_write_json(o, src->item);
        mw_out_ch(o, ']');
        break;

    case MW_FORM_CHANGE:
        mw_out_lit(o, ",\"field\":");
        mw_write_jstr(o, src->type);
        mw_out_lit(o, ",\"value\":");
        mw_write_json(o, src->item);
        break;

    default: /* MW_FORM_ITEM */
        mw_out_lit(o, ",\"field\":\"messages\",\"member\":");
        mw_write_str(o, src->member, strlen(src->member));
        mw_out_lit(o, ",\"value\":");
        mw_write_json(o, src->item);
        break;
    }

    /* the status copies, kept here to keep the switch short */
    if (src->form == MW_FORM_STATUS) {
        for (i = 0; copy[i]; i++) {
            v = json_object_get(src->item, copy[i]);

            if (v) {
                mw_out_lit(o, ",\"");
                mw_out_put(o, copy[i], strlen(copy[i]));
                mw_out_lit(o, "\":");
                mw_write_json(o, v);
            }
        }
    }

    mw_key_hex(u->key, hex);
    mw_out_lit(o, ",\"event_id\":\"");
    mw_out_put(o, hex, MW_KEY_HEX_LEN);
    mw_out_ch(o, '"');

    if (u->window_expires != 0) {
        mw_out_lit(o, ",\"window\":{\"expires_at\":");
        mw_write_int(o, u->window_expires);
        mw_out_ch(o, '}');
    }

    mw_out_ch(o, '}');
}


static void
mw_write_message(mw_out_t *o, const mw_update_t *u)
{
    json_t                *type, *obj, *ctxt, *v, *emoji;
    const mw_event_src_t  *src;

    src = &u->src;
    type = src->type;
    obj = src->obj;

    mw_write_contact(o, u, "from", mw_strlen("from"), 1);

    mw_out_lit(o, ",\"type\":");
    mw_write_jstr(o, type);

    switch (u->cls) {

    case MW_CLASS_SUPPORTED:
        mw_out_lit(o, ",\"class\":\"supported\",\"content\":");

        if (obj) {
            mw_write_json(o, obj);

        } else {
            mw_out_lit(o, "{}");
        }

        break;

    case MW_CLASS_QUARANTINED:
        mw_out_lit(o, ",\"class\":\"quarantined\",\"reason\":");

        /* a rule's name is the operator's bytes: JSON needs UTF-8 */
        if (mw_utf8_valid(u->reason, strlen(u->reason))) {
            mw_write_str(o, u->reason, strlen(u->reason));

        } else {
            mw_out_lit(o, "\"" MW_REASON_RULE "\"");
        }

        break;

    default:
        mw_out_lit(o, ",\"class\":\"unsupported\",\"reason\":");
        mw_write_str(o, u->reason, strlen(u->reason));
        break;
    }

    /* a reply's context: only ids when the content is hidden */
    ctxt = json_object_get(src->item, "context");

    if (json_is_object(ctxt)) {
        mw_out_lit(o, ",\"context\":");

        if (u->cls != MW_CLASS_QUARANTINED) {
            mw_write_json(o, ctxt);

        } else {
            mw_out_ch(o, '{');

            v = json_object_get(ctxt, "id");

            if (json_is_string(v)) {
                mw_out_lit(o, "\"id\":");
                mw_write_jstr(o, v);
            }

            if (json_is_string(json_object_get(ctxt, "from"))) {
                if (json_is_string(v)) {
                    mw_out_ch(o, ',');
                }

                mw_out_lit(o, "\"from\":");
                mw_write_jstr(o, json_object_get(ctxt, "from"));
            }

            mw_out_ch(o, '}');
        }
    }

    /* what a reaction, a deletion or an edit refers to */
    v = NULL;

    if (mw_str_is(type, "reaction", mw_strlen("reaction"))) {
        v = json_object_get(obj, "message_id");
        emoji = json_object_get(obj, "emoji");

        /* Meta drops the emoji when the contact takes a reaction back */
        if (!json_is_string(emoji) || json_string_length(emoji) == 0) {
            mw_out_lit(o, ",\"removed\":true");
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
        mw_out_lit(o, ",\"related_id\":");
        mw_write_jstr(o, v);
    }

    if (u->optin == MW_OPTIN_IN) {
        mw_out_lit(o, ",\"optin\":\"in\"");

    } else if (u->optin == MW_OPTIN_OUT) {
        mw_out_lit(o, ",\"optin\":\"out\"");
    }

    /* Meta's own errors (131051 for an unsupported type) */
    v = json_object_get(src->item, "errors");

    if (json_is_array(v)) {
        mw_out_lit(o, ",\"errors\":");
        mw_write_json(o, v);
    }

    if (mw_str_is(type, "unsupported", mw_strlen("unsupported"))) {
        v = json_object_get(json_object_get(src->item, "unsupported"),
                            "type");

        if (json_is_string(v)) {
            mw_out_lit(o, ",\"subtype\":");
            mw_write_jstr(o, v);
        }
    }
}


static void
mw_write_status(mw_out_t *o, const mw_update_t *u)
{
    mw_out_lit(o, ",\"status\":");
    mw_write_jstr(o, u->src.type);

    mw_write_contact(o, u, "recipient", mw_strlen("recipient"), 0);
}


/*
 * The contact member: Meta's form when it normalizes (the same bytes as
 * Meta's in the usual case), otherwise the raw string, "" when none; then
 * the profile name for a message.
 */
static void
mw_write_contact(mw_out_t *o, const mw_update_t *u, const char *member,
    size_t mlen, int profile)
{
    json_t  *name;

    mw_out_lit(o, ",\"");
    mw_out_put(o, member, mlen);
    mw_out_lit(o, "\":");

    if (u->contact[0]) {
        mw_write_str(o, u->contact, strlen(u->contact));

    } else {
        mw_write_jstr(o, u->src.raw);
    }

    if (profile) {
        name = mw_profile_name(&u->src, u->src.raw);

        if (name) {
            mw_out_lit(o, ",\"profile_name\":");
            mw_write_jstr(o, name);
        }
    }
}


/* value.contacts[]: the one whose wa_id (or user id) is raw, or the only */
static json_t *
mw_profile_name(const mw_event_src_t *src, json_t *raw)
{
    size_t   i, n;
    json_t  *c, *found, *name;

    if (src->contacts == NULL) {
        return NULL;
    }

    n = json_array_size(src->contacts);
    found = NULL;

    if (raw) {
        for (i = 0; i < n; i++) {
            c = json_array_get(src->contacts, i);

            if (json_equal(json_object_get(c, "wa_id"), raw)
                || json_equal(json_object_get(c, "user_id"), raw))
            {
                found = c;
                break;
            }
        }
    }

    if (found == NULL && n == 1 && src->one_sender) {
        found = json_array_get(src->contacts, 0);
    }

    name = json_object_get(json_object_get(found, "profile"), "name");

    return json_is_string(name) ? name : NULL;
}


/*
 * A value of the document, as jansson's json_dumps(JSON_COMPACT) writes
 * it: members in the object's own order, no blanks.  The depth is the
 * document's, bounded by mw_json_parse().
 */
static void
mw_write_json(mw_out_t *o, json_t *v)
{
    int      first;
    void    *it;
    size_t   i, n;

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        mw_out_ch(o, '{');
        first = 1;

        for (it = json_object_iter(v); it; it = json_object_iter_next(v, it))
        {
            if (!first) {
                mw_out_ch(o, ',');
            }

            first = 0;

            mw_write_str(o, json_object_iter_key(it),
                         json_object_iter_key_len(it));
            mw_out_ch(o, ':');
            mw_write_json(o, json_object_iter_value(it));
        }

        mw_out_ch(o, '}');
        break;

    case JSON_ARRAY:
        mw_out_ch(o, '[');
        n = json_array_size(v);

        for (i = 0; i < n; i++) {
            if (i) {
                mw_out_ch(o, ',');
            }

            mw_write_json(o, json_array_get(v, i));
        }

        mw_out_ch(o, ']');
        break;

    case JSON_STRING:
        mw_write_str(o, json_string_value(v), json_string_length(v));
        break;

    case JSON_INTEGER:
        mw_write_int(o, json_integer_value(v));
        break;

    case JSON_REAL:
        mw_write_real(o, json_real_value(v));
        break;

    case JSON_TRUE:
        mw_out_lit(o, "true");
        break;

    case JSON_FALSE:
        mw_out_lit(o, "false");
        break;

    default:
        mw_out_lit(o, "null");
        break;
    }
}


/* a string value of the document, or "" for NULL */
static void
mw_write_jstr(mw_out_t *o, json_t *s)
{
    if (json_is_string(s)) {
        mw_write_str(o, json_string_value(s), json_string_length(s));

    } else {
        mw_out_lit(o, "\"\"");
    }
}


/*
 * Bytes to escape in a string, as jansson does without JSON_ENSURE_ASCII
 * or JSON_ESCAPE_SLASH: the quote, the backslash and the control
 * characters.  The strings are valid UTF-8 (the parser checked them, and
 * the core's own are ASCII), so a byte at a time is a code point at a
 * time here: no byte of a multibyte sequence is below 0x80.
 */
static const unsigned char  mw_escape[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    'u', 'u', 'u', 'u', 0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\'
};


static void
mw_write_str(mw_out_t *o, const char *s, size_t len)
{
    char                 *p;
    size_t                i, run;
    unsigned char         c, e;
    const unsigned char  *q;

    static const char  hex[] = "0123456789ABCDEF";

    /* the usual string has nothing to escape: one copy */
    if (!mw_out_reserve(o, len + 2)) {
        return;
    }

    q = (const unsigned char *) s;
    p = o->buf + o->len;
    *p++ = '"';

    run = 0;

    for (i = 0; i < len; i++) {
        c = q[i];
        e = mw_escape[c];

        if (e == 0) {
            continue;
        }

        /* the run before the escape, then room for the rest and "\u00XX" */
        memcpy(p, q + run, i - run);
        p += i - run;
        run = i + 1;

        o->len = p - o->buf;

        if (!mw_out_reserve(o, 6 + (len - i) + 1)) {
            return;
        }

        p = o->buf + o->len;
        *p++ = '\\';

        if (e == 'u') {
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0x0f];

        } else {
            *p++ = e;
        }
    }

    memcpy(p, q + run, len - run);
    p += len - run;
    *p++ = '"';

    o->len = p - o->buf;
}


static void
mw_write_int(mw_out_t *o, int64_t n)
{
    char      buf[24], *p;
    uint64_t  m;

    p = buf + sizeof(buf);

    /* the magnitude as unsigned: -INT64_MIN does not fit an int64_t */
    m = n < 0 ? -(uint64_t) n : (uint64_t) n;

    do {
        *--p = (char) ('0' + m % 10);
        m /= 10;
    } while (m);

    if (n < 0) {
        *--p = '-';
    }

    mw_out_put(o, p, buf + sizeof(buf) - p);
}


/*
 * As jansson writes a real: "%.17g" with the locale's decimal point
 * turned into '.', ".0" appended when the result would read back as an
 * integer, and the exponent's '+' and leading zeros removed.
 */
static void
mw_write_real(mw_out_t *o, double d)
{
    int          n;
    char         buf[64], *p, *e, *z;
    const char  *point;

    n = snprintf(buf, sizeof(buf) - 2, "%.17g", d);

    if (n < 0 || (size_t) n >= sizeof(buf) - 2) {
        o->failed = 1;
        return;
    }

    point = localeconv()->decimal_point;

    if (point[0] != '.' && (p = strchr(buf, point[0])) != NULL) {
        *p = '.';
    }

    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        buf[n++] = '.';
        buf[n++] = '0';
        buf[n] = '\0';
    }

    e = strchr(buf, 'e');

    if (e) {
        e++;

        if (*e == '-') {
            e++;
        }

        for (z = e; *z == '+' || *z == '0'; z++) {
            /* void */
        }

        memmove(e, z, buf + n + 1 - z);
        n -= z - e;
    }

    mw_out_put(o, buf, n);
}


/*
 * Strict UTF-8 as jansson checks it: no overlong forms, no surrogates,
 * nothing above U+10FFFF.
 */
static int
mw_utf8_valid(const char *s, size_t len)
{
    size_t               i, n, k;
    uint32_t             cp;
    const unsigned char  *p;

    p = (const unsigned char *) s;

    for (i = 0; i < len; i += n) {
        if (p[i] < 0x80) {
            n = 1;
            continue;
        }

        if (p[i] >= 0xc2 && p[i] <= 0xdf) {
            n = 2;
            cp = p[i] & 0x1f;

        } else if (p[i] >= 0xe0 && p[i] <= 0xef) {
            n = 3;
            cp = p[i] & 0x0f;

        } else if (p[i] >= 0xf0 && p[i] <= 0xf4) {
            n = 4;
            cp = p[i] & 0x07;

        } else {
            return 0;
        }

        if (len - i < n) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)
            || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}
