/*
 * mw_batch_parse() and friends: normalization, classification, keys and
 * the dump the application receives.
 *
 * Payloads are written with single quotes for readability; sq() turns
 * them into JSON.
 */

#include <stdlib.h>
#include <string.h>

#include "mw_core.h"
#include "tap.h"
#include "tagged_alloc.h"


#define NOW        1700000500
#define TS         1700000000

#define ENV_HEAD                                                           \
    "{'object':'whatsapp_business_account','entry':[{'id':'WABA1',"        \
    "'changes':[{'field':'messages','value':{"                             \
    "'messaging_product':'whatsapp',"                                      \
    "'metadata':{'display_phone_number':'15550001111',"                    \
    "'phone_number_id':'PN1'},"                                            \
    "'contacts':[{'profile':{'name':'Ann'},'wa_id':'16505551234'}],"
#define ENV_TAIL   "}}]}]}"

/* one inbound message from 16505551234 with id wamid.M1 */
#define MSG(body)                                                          \
    ENV_HEAD "'messages':[{'from':'16505551234','id':'wamid.M1',"          \
    "'timestamp':'1700000000'," body "}]" ENV_TAIL


static char  sqbuf[1 << 20];

static const mw_quarantine_conf_t  *qconf;

/*
 * The helpers read an update's event through mw_update_event(), which
 * reads back what mw_batch_dump() writes for it: the assertions check the
 * output itself.  cur is the batch the updates belong to; held keeps the
 * events handed out alive until the next parse, so that the strings the
 * helpers return stay valid meanwhile.
 */
static const mw_batch_t  *cur;
static json_t            *held;
static unsigned           popts;         /* mw_batch_parse() opts */


static const char *
sq(const char *s)
{
    size_t  i;

    for (i = 0; s[i] && i < sizeof(sqbuf) - 1; i++) {
        sqbuf[i] = (s[i] == '\'') ? '"' : s[i];
    }

    sqbuf[i] = '\0';
    return sqbuf;
}


static int
parse(mw_batch_t *b, const char *s)
{
    const char  *j;

    j = sq(s);
    json_array_clear(held);
    cur = b;
    return mw_batch_parse(b, j, strlen(j), popts, qconf, NOW);
}


static json_t *
event(const mw_update_t *u)
{
    json_t  *ev;

    ev = mw_update_event(cur, u - cur->updates);

    if (ev == NULL) {
        ok(0, "update %zu: event reads back", (size_t) (u - cur->updates));
        return NULL;
    }

    json_array_append_new(held, ev);

    return ev;
}


static json_t *
get(const mw_update_t *u, const char *key)
{
    return json_object_get(event(u), key);
}


static const char *
str(const mw_update_t *u, const char *key)
{
    return json_string_value(get(u, key));
}


static const char *
path(const mw_update_t *u, const char *k1, const char *k2)
{
    return json_string_value(json_object_get(get(u, k1), k2));
}


static int
has(const mw_update_t *u, const char *key)
{
    return get(u, key) != NULL;
}


static char *
dump(const mw_batch_t *b, const unsigned char *skip)
{
    size_t  len;
    char   *s;

    s = mw_batch_dump(b, skip, &len);
    if (s && strlen(s) != len) {
        ok(0, "dump length matches");
    }

    return s;
}


static int
no_raw_newline(const char *s)
{
    return strchr(s, '\n') == NULL && strchr(s, '\r') == NULL;
}


static void
hex_of(const unsigned char key[MW_KEY_LEN], char out[MW_KEY_HEX_LEN + 1])
{
    mw_key_hex(key, out);
}


/* ------------------------------------------------------------------ */

static void
test_text(void)
{
    int            rc;
    char           hex[MW_KEY_HEX_LEN + 1], *d;
    unsigned char  k[MW_KEY_LEN];
    mw_batch_t     b;
    mw_update_t   *u;

    rc = parse(&b, MSG("'type':'text','text':{'body':'hello'},"
                       "'context':{'from':'15550001111','id':'wamid.C'}"));
    is_int(rc, MW_BATCH_OK, "text: parses");
    is_int(b.nupdates, 1, "text: one update");
    u = &b.updates[0];

    is_int(u->kind, MW_KIND_MESSAGE, "text: kind");
    is_int(u->cls, MW_CLASS_SUPPORTED, "text: class");
    is_int(u->optin, MW_OPTIN_NONE, "text: no opt-in");
    ok(u->reason == NULL, "text: no reason");
    is_str(u->phone_number_id, "PN1", "text: u->phone_number_id");
    is_str(u->contact, "16505551234", "text: u->contact");
    is_int(u->timestamp, TS, "text: u->timestamp");
    is_int(u->window_from, TS, "text: window from the message's time");
    is_int(u->error_code, 0, "text: no error code");

    mw_key_message(k, "wamid.M1", 8);
    ok(memcmp(k, u->key, MW_KEY_LEN) == 0, "text: key by message id");
    mw_key_contact(k, "PN1", 3, "16505551234", 11);
    ok(memcmp(k, u->contact_key, MW_KEY_LEN) == 0, "text: contact key");

    is_str(str(u, "kind"), "message", "text: event kind");
    is_str(str(u, "channel"), "whatsapp", "text: channel");
    is_str(str(u, "id"), "wamid.M1", "text: id");
    is_str(str(u, "phone_number_id"), "PN1", "text: phone_number_id");
    is_str(str(u, "display_phone_number"), "15550001111",
           "text: display_phone_number");
    is_str(str(u, "waba_id"), "WABA1", "text: waba_id");
    is_int(json_integer_value(get(u, "timestamp")), TS, "text: timestamp");
    ok(json_is_integer(get(u, "timestamp")), "text: timestamp integer");
    is_str(str(u, "from"), "16505551234", "text: from");
    is_str(str(u, "profile_name"), "Ann", "text: profile_name");
    is_str(str(u, "type"), "text", "text: type");
    is_str(str(u, "class"), "supported", "text: class string");
    ok(!has(u, "reason"), "text: no reason member");
    is_str(path(u, "content", "body"), "hello", "text: content.body");
    is_str(path(u, "context", "id"), "wamid.C", "text: context copied");
    ok(!has(u, "optin"), "text: no optin member");
    ok(!has(u, "window"), "text: window not set by the parser");

    hex_of(u->key, hex);
    is_str(str(u, "event_id"), hex, "text: event_id is the key in hex");

    is_int(mw_event_set_window(u, TS + 86400), 0, "set_window");
    is_int(json_integer_value(json_object_get(get(u, "window"),
                                              "expires_at")),
           TS + 86400, "window.expires_at");

    d = dump(&b, NULL);
    ok(d && strncmp(d, "{\"events\":[{\"kind\":\"message\",", 29) == 0,
       "dump starts with the events array");
    ok(d && strstr(d, "\"window\":{\"expires_at\":1700086400}") != NULL,
       "dump has the window");
    ok(d && d[strlen(d) - 1] == '}' && no_raw_newline(d),
       "dump is one line");
    mw_json_free(d);

    mw_batch_free(&b);
    mw_batch_free(&b);
    ok(b.root == NULL && b.updates == NULL, "free twice is harmless");
}


typedef struct {
    const char  *type;
    const char  *member;       /* single-quoted JSON members */
    mw_class_e   cls;
    const char  *reason;
    const char  *content_key;  /* a member of content to expect */
} type_case_t;


static void
test_types(void)
{
    int           rc;
    char          buf[2048];
    size_t        i;
    mw_batch_t    b;
    mw_update_t  *u;

    static const type_case_t  cases[] = {
        { "image", "'image':{'mime_type':'image/jpeg','sha256':'ab',"
                   "'id':'77','caption':'look'}",
          MW_CLASS_SUPPORTED, NULL, "caption" },
        { "image", "'image':{'mime_type':'image/png','id':'77'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "image", "'image':{'mime_type':'image/gif','id':'77'}",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "video", "'video':{'mime_type':'video/mp4','id':'78'}",
          MW_CLASS_SUPPORTED, NULL, "mime_type" },
        { "video", "'video':{'mime_type':'video/3gpp','id':'78'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "video", "'video':{'mime_type':'video/quicktime','id':'78'}",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "audio", "'audio':{'mime_type':'Audio/OGG; codecs=opus',"
                   "'id':'79','voice':true}",
          MW_CLASS_SUPPORTED, NULL, "voice" },
        { "audio", "'audio':{'mime_type':'audio/aac','id':'79'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "audio", "'audio':{'mime_type':'audio/amr','id':'79'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "audio", "'audio':{'mime_type':'audio/mpeg','id':'79'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "audio", "'audio':{'mime_type':'audio/mp4','id':'79'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "audio", "'audio':{'mime_type':'audio/wav','id':'79'}",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "document", "'document':{'mime_type':'application/pdf',"
                      "'filename':'a.pdf','id':'80'}",
          MW_CLASS_SUPPORTED, NULL, "filename" },
        { "document", "'document':{'mime_type':'application/vnd."
                      "openxmlformats-officedocument.wordprocessingml."
                      "document','id':'80'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "document", "'document':{'mime_type':'text/plain','id':'80'}",
          MW_CLASS_SUPPORTED, NULL, "id" },
        { "document", "'document':{'mime_type':'audio/mpeg','id':'80',"
                      "'filename':'song.mp3'}",
          MW_CLASS_SUPPORTED, NULL, "filename" },
        { "document", "'document':{'mime_type':'application/x-msdownload',"
                      "'filename':'setup.exe','id':'80'}",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "document", "'document':{'filename':'x.bin','id':'80'}",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "document", "",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "sticker", "'sticker':{'mime_type':'image/webp','id':'81',"
                     "'animated':false}",
          MW_CLASS_SUPPORTED, NULL, "animated" },
        { "sticker", "'sticker':{'mime_type':'image/png','id':'81'}",
          MW_CLASS_UNSUPPORTED, "unsupported_attachment", NULL },
        { "location", "'location':{'latitude':1.5,'longitude':2.5,"
                      "'name':'Cafe'}",
          MW_CLASS_SUPPORTED, NULL, "name" },
        { "contacts", "'contacts':[{'name':{'formatted_name':'Bo'},"
                      "'phones':[{'phone':'+1 650 555 0000'}]}]",
          MW_CLASS_SUPPORTED, NULL, NULL },
        { "interactive", "'interactive':{'type':'button_reply',"
                         "'button_reply':{'id':'b1','title':'Yes'}}",
          MW_CLASS_SUPPORTED, NULL, "button_reply" },
        { "interactive", "'interactive':{'type':'list_reply',"
                         "'list_reply':{'id':'l1','title':'A',"
                         "'description':'d'}}",
          MW_CLASS_SUPPORTED, NULL, "list_reply" },
        { "button", "'button':{'text':'Hi','payload':'P'}",
          MW_CLASS_SUPPORTED, NULL, "payload" },
        { "order", "'order':{'catalog_id':'c','product_items':[]}",
          MW_CLASS_SUPPORTED, NULL, "catalog_id" },
        { "system", "'system':{'body':'changed','type':"
                    "'user_changed_number','wa_id':'16505550000'}",
          MW_CLASS_SUPPORTED, NULL, "type" },
        { "request_welcome", "",
          MW_CLASS_SUPPORTED, NULL, NULL },
        { "edit", "'edit':{'original_message_id':'wamid.O',"
                  "'message':{'type':'text','text':{'body':'new'}}}",
          MW_CLASS_SUPPORTED, NULL, "original_message_id" },
        { "reaction", "'reaction':{'message_id':'wamid.R','emoji':'x'}",
          MW_CLASS_UNSUPPORTED, "reaction", NULL },
        { "revoke", "'revoke':{'original_message_id':'wamid.D'}",
          MW_CLASS_UNSUPPORTED, "deleted", NULL },
        { "unknown", "'errors':[{'code':131051}]",
          MW_CLASS_UNSUPPORTED, "unsupported_type", NULL },
        { "poll", "'poll':{'name':'q'}",
          MW_CLASS_UNSUPPORTED, "unsupported_type", NULL },
        { "ephemeral", "",
          MW_CLASS_UNSUPPORTED, "unsupported_type", NULL },
        { "text", "'text':'not an object'",
          MW_CLASS_UNSUPPORTED, "unsupported_type", NULL },
        { NULL, NULL, 0, NULL, NULL }
    };

    for (i = 0; cases[i].type; i++) {
        snprintf(buf, sizeof(buf), MSG("'type':'%s'%s%s"), cases[i].type,
                 cases[i].member[0] ? "," : "", cases[i].member);

        rc = parse(&b, buf);
        is_int(rc, MW_BATCH_OK, "%s #%zu: parses", cases[i].type, i);

        if (rc != MW_BATCH_OK || b.nupdates != 1) {
            ok(0, "%s #%zu: one update", cases[i].type, i);
            mw_batch_free(&b);
            continue;
        }

        u = &b.updates[0];

        is_int(u->cls, cases[i].cls, "%s #%zu: class", cases[i].type, i);
        is_str(str(u, "type"), cases[i].type, "%s #%zu: type",
               cases[i].type, i);
        is_str(str(u, "class"),
               cases[i].cls == MW_CLASS_SUPPORTED ? "supported"
                                                  : "unsupported",
               "%s #%zu: class string", cases[i].type, i);
        is_str(u->reason, cases[i].reason, "%s #%zu: u->reason",
               cases[i].type, i);
        is_str(str(u, "reason"), cases[i].reason, "%s #%zu: reason",
               cases[i].type, i);

        if (cases[i].cls == MW_CLASS_SUPPORTED) {
            ok(json_is_object(get(u, "content"))
               || json_is_array(get(u, "content")),
               "%s #%zu: content present", cases[i].type, i);

            if (cases[i].content_key) {
                ok(json_object_get(get(u, "content"),
                                   cases[i].content_key) != NULL,
                   "%s #%zu: content.%s", cases[i].type, i,
                   cases[i].content_key);
            }

        } else {
            ok(!has(u, "content"), "%s #%zu: no content", cases[i].type,
               i);
        }

        mw_batch_free(&b);
    }

    /* request_welcome has no member: content is {} */
    rc = parse(&b, MSG("'type':'request_welcome'"));
    u = &b.updates[0];
    ok(json_is_object(get(u, "content"))
       && json_object_size(get(u, "content")) == 0,
       "request_welcome: content {}");
    mw_batch_free(&b);

    /* contacts: content is Meta's array */
    rc = parse(&b, MSG("'type':'contacts','contacts':[{'name':"
                       "{'formatted_name':'Bo'}}]"));
    u = &b.updates[0];
    is_int(json_array_size(get(u, "content")), 1, "contacts: array kept");
    mw_batch_free(&b);
}


static void
test_related(void)
{
    mw_batch_t    b;
    mw_update_t  *u;

    parse(&b, MSG("'type':'reaction','reaction':{'message_id':'wamid.R',"
                  "'emoji':'\\ud83d\\udc4d'}"));
    u = &b.updates[0];
    is_str(str(u, "related_id"), "wamid.R", "reaction: related_id");
    ok(!has(u, "removed"), "reaction with emoji: not removed");
    ok(!has(u, "content"), "reaction: no content");
    is_str(str(u, "reason"), "reaction", "reaction: reason");
    mw_batch_free(&b);

    parse(&b, MSG("'type':'reaction','reaction':{'message_id':'wamid.R'}"));
    u = &b.updates[0];
    ok(get(u, "removed") == json_true(), "reaction without emoji: removed");
    is_str(str(u, "related_id"), "wamid.R", "removed reaction: related_id");
    mw_batch_free(&b);

    parse(&b, MSG("'type':'reaction','reaction':{'message_id':'wamid.R',"
                  "'emoji':''}"));
    u = &b.updates[0];
    ok(get(u, "removed") == json_true(), "reaction emoji '': removed");
    mw_batch_free(&b);

    parse(&b, MSG("'type':'revoke','revoke':{'original_message_id':"
                  "'wamid.D'}"));
    u = &b.updates[0];
    is_str(str(u, "related_id"), "wamid.D", "revoke: related_id");
    is_str(str(u, "reason"), "deleted", "revoke: reason deleted");
    is_int(u->cls, MW_CLASS_UNSUPPORTED, "revoke: unsupported");
    mw_batch_free(&b);

    parse(&b, MSG("'type':'edit','edit':{'original_message_id':'wamid.O',"
                  "'message':{'type':'text','text':{'body':'x'}}}"));
    u = &b.updates[0];
    is_str(str(u, "related_id"), "wamid.O", "edit: related_id");
    is_str(json_string_value(json_object_get(json_object_get(
               json_object_get(get(u, "content"), "message"), "text"),
               "body")), "x", "edit: content is Meta's edit object");
    mw_batch_free(&b);

    parse(&b, MSG("'type':'unsupported','unsupported':{'type':"
                  "'poll_creation'},'errors':[{'code':131051,'title':"
                  "'Message type unknown','error_data':{'details':"
                  "'Message type is currently not supported.'}}]"));
    u = &b.updates[0];
    is_str(str(u, "type"), "unsupported", "unsupported: type");
    is_str(str(u, "reason"), "unsupported_type", "unsupported: reason");
    is_str(str(u, "subtype"), "poll_creation", "unsupported: subtype");
    is_int(u->error_code, 131051, "unsupported: error_code");
    is_int(json_integer_value(json_object_get(json_array_get(
               get(u, "errors"), 0), "code")), 131051,
           "unsupported: errors copied");
    ok(!has(u, "content"), "unsupported: no content");
    mw_batch_free(&b);
}


static void
test_statuses(void)
{
    int            rc;
    size_t         i;
    unsigned char  k[MW_KEY_LEN];
    mw_batch_t     b;
    mw_update_t   *u;

    rc = parse(&b, ENV_HEAD "'statuses':["
        "{'id':'wamid.S','status':'sent','timestamp':'1700000001',"
        "'recipient_id':'16505551234','conversation':{'id':'CV',"
        "'expiration_timestamp':'1700086400','origin':{'type':"
        "'service'}},'pricing':{'billable':true,'pricing_model':'CBP',"
        "'category':'service'},'biz_opaque_callback_data':'T1'},"
        "{'id':'wamid.S','status':'delivered','timestamp':'1700000002',"
        "'recipient_id':'16505551234'},"
        "{'id':'wamid.S','status':'read','timestamp':'1700000003',"
        "'recipient_id':'16505551234'},"
        "{'id':'wamid.F','status':'failed','timestamp':'1700000004',"
        "'recipient_id':'16505551234','errors':[{'code':131047,"
        "'title':'Re-engagement message'}]},"
        "{'id':'wamid.G','status':'failed','timestamp':'1700000005',"
        "'recipient_id':'+1 (650) 555-1234','errors':[{'code':131026,"
        "'title':'Message undeliverable'}]}"
        "]" ENV_TAIL);

    is_int(rc, MW_BATCH_OK, "statuses: parse");
    is_int(b.nupdates, 5, "statuses: five updates");

    for (i = 0; i < b.nupdates; i++) {
        u = &b.updates[i];
        is_int(u->kind, MW_KIND_STATUS, "status %zu: kind", i);
        is_int(u->cls, MW_CLASS_NONE, "status %zu: no class", i);
        is_str(str(u, "kind"), "status", "status %zu: event kind", i);
        is_str(str(u, "recipient"), "16505551234",
               "status %zu: recipient normalized", i);
        is_str(u->contact, "16505551234", "status %zu: contact", i);
        is_int(u->timestamp, TS + 1 + (int) i, "status %zu: timestamp", i);
        ok(!has(u, "class") && !has(u, "content"),
           "status %zu: no class, no content", i);
    }

    u = &b.updates[0];
    is_str(u->status, "sent", "sent: u->status");
    is_str(str(u, "status"), "sent", "sent: status");
    is_str(path(u, "conversation", "id"), "CV", "sent: conversation");
    is_str(path(u, "pricing", "category"), "service", "sent: pricing");
    is_str(str(u, "biz_opaque_callback_data"), "T1",
           "sent: biz_opaque_callback_data");
    ok(!has(u, "errors"), "sent: no errors");
    mw_key_status(k, "wamid.S", 7, "sent", 4);
    ok(memcmp(k, u->key, MW_KEY_LEN) == 0, "sent: key by (id, status)");

    is_str(b.updates[1].status, "delivered", "delivered");
    is_str(b.updates[2].status, "read", "read");
    ok(memcmp(b.updates[0].key, b.updates[1].key, MW_KEY_LEN) != 0,
       "sent and delivered of one message differ");

    u = &b.updates[3];
    is_str(u->status, "failed", "failed: status");
    is_int(u->error_code, 131047, "failed: 131047");
    is_int(json_integer_value(json_object_get(json_array_get(
               get(u, "errors"), 0), "code")), 131047,
           "failed: errors copied");

    u = &b.updates[4];
    is_int(u->error_code, 131026, "failed: 131026");
    is_str(path(u, "errors", "title"), NULL, "errors is an array");
    mw_batch_free(&b);

    /* codes that do not fit an int are 0, not undefined behaviour */
    rc = parse(&b, ENV_HEAD "'statuses':[{'id':'a','status':'failed',"
        "'errors':[{'code':1e300}]},{'id':'b','status':'failed',"
        "'errors':[{'code':-99999999999}]},{'id':'c','status':'failed',"
        "'errors':[{'code':'131047'}]},{'id':'d','status':'failed',"
        "'errors':[{'code':131047.0}]}],'errors':[{'code':-1e300}]"
        ENV_TAIL);
    is_int(rc, MW_BATCH_OK, "odd codes: parse");
    is_int(b.updates[0].error_code, 0, "code 1e300: 0");
    is_int(b.updates[1].error_code, 0, "code beyond int: 0");
    is_int(b.updates[2].error_code, 0, "code as a string: 0");
    is_int(b.updates[3].error_code, 131047, "code as a real: read");
    is_int(b.updates[4].error_code, 0, "error item code -1e300: 0");
    mw_batch_free(&b);

    /* older payloads: a deletion reported as a status */
    rc = parse(&b, ENV_HEAD "'statuses':[{'id':'wamid.DEL','status':"
        "'deleted','timestamp':'1700000000','recipient_id':'16505551234'}]"
        ENV_TAIL);
    is_int(rc, MW_BATCH_OK, "legacy deleted: parse");
    u = &b.updates[0];
    is_int(u->kind, MW_KIND_MESSAGE, "legacy deleted: a message");
    is_int(u->cls, MW_CLASS_UNSUPPORTED, "legacy deleted: unsupported");
    is_str(u->reason, "deleted", "legacy deleted: u->reason");
    is_str(str(u, "kind"), "message", "legacy deleted: event kind");
    is_str(str(u, "type"), "deleted", "legacy deleted: type");
    is_str(str(u, "reason"), "deleted", "legacy deleted: reason");
    is_str(str(u, "from"), "16505551234", "legacy deleted: from");
    is_str(str(u, "id"), "wamid.DEL", "legacy deleted: id");
    is_str(str(u, "profile_name"), "Ann", "legacy deleted: profile");
    ok(!has(u, "content") && !has(u, "status"),
       "legacy deleted: no content, no status");
    mw_key_message(k, "wamid.DEL", 9);
    ok(memcmp(k, u->key, MW_KEY_LEN) == 0, "legacy deleted: message key");
    mw_batch_free(&b);
}


static void
test_mixed(void)
{
    int            rc;
    char          *d;
    const char    *parts[3];
    size_t         lens[3];
    unsigned char  k[MW_KEY_LEN], skip[8];
    json_t        *j;
    mw_batch_t     b;

    rc = parse(&b,
        "{'object':'whatsapp_business_account','entry':["
        "{'id':'WABA1','changes':["
          "{'field':'messages','value':{'metadata':{'phone_number_id':"
          "'PN1'},'statuses':[{'id':'wamid.S1','status':'read',"
          "'recipient_id':'111111'}],'messages':[{'from':'222222','id':"
          "'wamid.M1','type':'text','text':{'body':'a'}}],"
          "'errors':[{'code':131000,'title':'Something went wrong'}]}},"
          "{'field':'message_template_status_update','value':{'event':"
          "'APPROVED','message_template_id':12,'reason':'NONE'}}]},"
        "{'id':'WABA2','time':1700000009,'changes':["
          "{'field':'messages','value':{'metadata':{'phone_number_id':"
          "'PN2'},'messages':[{'from':'333333','id':'wamid.M2','type':"
          "'text','text':{'body':'b'}}]}}]}]}");

    is_int(rc, MW_BATCH_OK, "mixed: parse");
    is_int(b.nupdates, 5, "mixed: five updates");

    is_int(b.updates[0].kind, MW_KIND_MESSAGE, "mixed: messages first");
    is_str(str(&b.updates[0], "id"), "wamid.M1", "mixed: 0 is wamid.M1");
    is_int(b.updates[1].kind, MW_KIND_STATUS, "mixed: then statuses");
    is_int(b.updates[2].kind, MW_KIND_ERROR, "mixed: then errors");
    is_int(b.updates[3].kind, MW_KIND_CHANGE, "mixed: other field");
    is_int(b.updates[4].kind, MW_KIND_MESSAGE, "mixed: second entry");
    is_str(b.updates[4].phone_number_id, "PN2", "mixed: PN2");
    is_str(str(&b.updates[4], "waba_id"), "WABA2", "mixed: WABA2");
    ok(!has(&b.updates[0], "profile_name"), "no contacts: no profile");

    /* value.errors[] */
    is_str(str(&b.updates[2], "kind"), "error", "error: kind");
    is_int(b.updates[2].error_code, 131000, "error: code");
    ok(json_is_null(get(&b.updates[2], "timestamp")), "error: ts null");
    is_int(json_integer_value(json_object_get(json_array_get(
               get(&b.updates[2], "errors"), 0), "code")), 131000,
           "error: errors[0]");
    parts[0] = "error";
    lens[0] = 5;
    parts[1] = "PN1";
    lens[1] = 3;
    parts[2] = "{\"code\":131000,\"title\":\"Something went wrong\"}";
    lens[2] = strlen(parts[2]);
    mw_key_make(k, MW_KEY_DEDUPE, parts, lens, 3);
    ok(memcmp(k, b.updates[2].key, MW_KEY_LEN) == 0, "error: key");

    /* another field */
    is_str(str(&b.updates[3], "kind"), "change", "change: kind");
    is_str(str(&b.updates[3], "field"), "message_template_status_update",
           "change: field");
    is_str(path(&b.updates[3], "value", "event"), "APPROVED",
           "change: value as is");
    is_str(str(&b.updates[3], "waba_id"), "WABA1", "change: waba_id");
    is_str(str(&b.updates[3], "id"), "", "change: id empty");
    ok(json_is_null(get(&b.updates[3], "timestamp")),
       "change: no entry time, null");
    parts[0] = "change";
    lens[0] = 6;
    parts[1] = "WABA1";
    lens[1] = 5;
    parts[2] = "message_template_status_update";
    lens[2] = strlen(parts[2]);
    {
        const char  *p4[4];
        size_t       l4[4];

        p4[0] = parts[0]; l4[0] = lens[0];
        p4[1] = parts[1]; l4[1] = lens[1];
        p4[2] = parts[2]; l4[2] = lens[2];
        p4[3] = "{\"event\":\"APPROVED\",\"message_template_id\":12,"
                "\"reason\":\"NONE\"}";
        l4[3] = strlen(p4[3]);
        mw_key_make(k, MW_KEY_DEDUPE, p4, l4, 4);
    }
    ok(memcmp(k, b.updates[3].key, MW_KEY_LEN) == 0,
       "change: key over the sorted compact value");

    ok(json_is_null(get(&b.updates[4], "timestamp")),
       "message without timestamp: null");
    is_int(b.updates[4].window_from, NOW, "no timestamp: window from now");

    /* skip */
    memset(skip, 0, sizeof(skip));
    skip[0] = 1;
    skip[2] = 1;
    skip[3] = 1;
    d = dump(&b, skip);
    j = json_loads(d, 0, NULL);
    is_int(json_array_size(json_object_get(j, "events")), 2,
           "dump skips updates");
    is_str(json_string_value(json_object_get(json_array_get(
               json_object_get(j, "events"), 0), "id")), "wamid.S1",
           "dump: first kept update");
    json_decref(j);
    mw_json_free(d);

    mw_batch_free(&b);
}


static void
test_big_batch(void)
{
    int          rc;
    char        *buf, *d;
    size_t       i, n, cap;
    json_t      *j;
    mw_batch_t   b;

    cap = 200 * 1000 + 1024;
    buf = malloc(cap);
    n = snprintf(buf, cap, "%s", sq(ENV_HEAD "'messages':["));

    for (i = 0; i < 1000; i++) {
        n += snprintf(buf + n, cap - n,
                      "%s{\"from\":\"1650555%04zu\",\"id\":\"wamid.%zu\","
                      "\"timestamp\":\"%zu\",\"type\":\"text\","
                      "\"text\":{\"body\":\"m%zu\"}}",
                      i ? "," : "", i, i, (size_t) TS + i, i);
    }

    n += snprintf(buf + n, cap - n, "%s", sq("]" ENV_TAIL));

    json_array_clear(held);
    cur = &b;
    rc = mw_batch_parse(&b, buf, n, popts, NULL, NOW);
    is_int(rc, MW_BATCH_OK, "1000: parse");
    is_int(b.nupdates, 1000, "1000: every update");
    is_str(str(&b.updates[999], "id"), "wamid.999", "1000: last id");
    is_str(b.updates[999].contact, "16505550999", "1000: last contact");
    is_int(b.updates[999].timestamp, TS + 999, "1000: last timestamp");
    ok(!has(&b.updates[999], "profile_name"),
       "1000: no profile for an unlisted contact");
    is_str(str(&b.updates[0], "profile_name"), NULL,
           "1000: one contact, many senders: no guess");

    d = dump(&b, NULL);
    j = json_loads(d, 0, NULL);
    is_int(json_array_size(json_object_get(j, "events")), 1000,
           "1000: dump has 1000 events");
    ok(no_raw_newline(d), "1000: one line");
    json_decref(j);
    mw_json_free(d);
    mw_batch_free(&b);
    free(buf);
}


static void
test_shape(void)
{
    int          rc;
    size_t       n;
    char        *buf;
    mw_batch_t   b;

    static const struct {
        const char  *json;
        int          rc;
        const char  *error;
    } cases[] = {
        { "[]", MW_BATCH_ESHAPE, "root is not an object" },
        { "'x'", MW_BATCH_ESHAPE, "root is not an object" },
        { "{'object':'page','entry':[]}", MW_BATCH_ESHAPE,
          "object is not whatsapp_business_account" },
        { "{'entry':[]}", MW_BATCH_ESHAPE,
          "object is not whatsapp_business_account" },
        { "{'object':'whatsapp_business_account'}", MW_BATCH_ESHAPE,
          "entry is not an array" },
        { "{'object':'whatsapp_business_account','entry':{'id':'1',"
          "'changes':[]}}", MW_BATCH_ESHAPE, "entry is not an array" },
        { "{'object':'whatsapp_business_account','entry':[1]}",
          MW_BATCH_ESHAPE, "entry[0] is not an object" },
        { "{'object':'whatsapp_business_account','entry':[{'changes':[]}]}",
          MW_BATCH_ESHAPE, "entry[0].id is not a string" },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1'}]}",
          MW_BATCH_ESHAPE, "entry[0].changes is not an array" },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1',"
          "'changes':[[]]}]}",
          MW_BATCH_ESHAPE, "entry[0].changes[0] is not an object" },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1',"
          "'changes':[{'value':{}}]}]}",
          MW_BATCH_ESHAPE, "entry[0].changes[0].field is not a string" },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1',"
          "'changes':[{'field':'messages'}]}]}",
          MW_BATCH_ESHAPE, "entry[0].changes[0].value is missing" },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1',"
          "'changes':[{'field':'messages','value':[]}]}]}",
          MW_BATCH_ESHAPE, "entry[0].changes[0].value is not an object" },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1',"
          "'changes':[]}]}", MW_BATCH_OK, "" },
        { "{'object':'whatsapp_business_account','entry':[]}",
          MW_BATCH_OK, "" },
        { "{'object':'whatsapp_business_account','entry':[],'entry':[]}",
          MW_BATCH_EJSON, NULL },
        { "{'object':'whatsapp_business_account','entry':[{'id':'1',"
          "'changes':[{'field':'messages','value':{}}]}]}",
          MW_BATCH_OK, "" },
        { "not json", MW_BATCH_EJSON, "not JSON at byte 3" },
        { NULL, 0, NULL }
    };

    for (n = 0; cases[n].json; n++) {
        rc = parse(&b, cases[n].json);
        is_int(rc, cases[n].rc, "shape #%zu: result", n);

        if (cases[n].error) {
            is_str(b.error, cases[n].error, "shape #%zu: reason", n);
        }

        if (rc != MW_BATCH_OK) {
            is_int(b.nupdates, 0, "shape #%zu: no updates left", n);
        }

        mw_batch_free(&b);
    }

    rc = parse(&b, "{'object':'whatsapp_business_account','entry':[{'id':"
                   "'1','changes':[]}]}");
    is_int(b.nupdates, 0, "changes []: zero updates");
    buf = mw_batch_dump(&b, NULL, &n);
    is_str(buf, "{\"events\":[]}", "changes []: empty events");
    is_int(n, 13, "changes []: dump length");
    mw_json_free(buf);
    mw_batch_free(&b);

    /* a malformed body after the depth bound and the UTF-8 check */
    buf = malloc(100001);
    memset(buf, '[', 100000);
    rc = mw_batch_parse(&b, buf, 100000, popts, NULL, NOW);
    is_int(rc, MW_BATCH_EJSON, "100000 brackets: EJSON");
    is_str(b.error, "nesting deeper than 64 at byte 64",
           "100000 brackets: reason");
    mw_batch_free(&b);
    free(buf);

    rc = parse(&b, MSG("'type':'text','text':{'body':'caf\xc3\x28'}"));
    is_int(rc, MW_BATCH_EJSON, "invalid UTF-8: EJSON");
    ok(strncmp(b.error, "invalid UTF-8 at byte ", 22) == 0,
       "invalid UTF-8: reason %s", b.error);
    mw_batch_free(&b);

    rc = parse(&b, MSG("'type':'text','text':{'body':'a\\ud800'}"));
    is_int(rc, MW_BATCH_EJSON, "lone surrogate: EJSON");
    mw_batch_free(&b);

    rc = parse(&b, MSG("'type':'text','type':'image','text':{'body':'a'}"));
    is_int(rc, MW_BATCH_EJSON, "duplicate key in a message: EJSON");
    ok(strncmp(b.error, "duplicate key at byte ", 22) == 0,
       "duplicate key: reason %s", b.error);
    mw_batch_free(&b);
}


static void
test_values(void)
{
    int           rc;
    char         *d;
    size_t        i;
    json_t       *body;
    mw_batch_t    b;
    mw_update_t  *u;

    static const struct {
        const char  *ts;
        int64_t      want;
    } tss[] = {
        { "'1700000000'", 1700000000 },
        { "1700000000", 1700000000 },
        { "1700000000.0", 1700000000 },
        { "'0'", 0 },
        { "'abc'", -1 },
        { "''", -1 },
        { "' 1700000000'", -1 },
        { "'-5'", -1 },
        { "-5", -1 },
        { "'1.5'", -1 },
        { "1.5", -1 },
        { "'4611686018427387904'", (int64_t) 1 << 62 },
        { "'4611686018427387905'", -1 },
        { "'99999999999999999999'", -1 },
        { "4611686018427387905", -1 },
        { "true", -1 },
        { "null", -1 },
        { "{}", -1 },
        { NULL, 0 }
    };

    for (i = 0; tss[i].ts; i++) {
        char  buf[1024];

        snprintf(buf, sizeof(buf), ENV_HEAD "'messages':[{'from':"
                 "'16505551234','id':'wamid.T','timestamp':%s,'type':"
                 "'text','text':{'body':'x'}}]" ENV_TAIL, tss[i].ts);
        rc = parse(&b, buf);
        is_int(rc, MW_BATCH_OK, "timestamp %s: parses", tss[i].ts);
        u = &b.updates[0];
        is_int(u->timestamp, tss[i].want, "timestamp %s", tss[i].ts);

        if (tss[i].want < 0) {
            ok(json_is_null(get(u, "timestamp")), "timestamp %s: null",
               tss[i].ts);
            is_int(u->window_from, NOW, "timestamp %s: window from now",
                   tss[i].ts);

        } else {
            is_int(json_integer_value(get(u, "timestamp")), tss[i].want,
                   "timestamp %s: event", tss[i].ts);
        }

        mw_batch_free(&b);
    }

    /* a future timestamp cannot hold a window open */
    rc = parse(&b, ENV_HEAD "'messages':[{'from':'16505551234','id':'w',"
               "'timestamp':'1800000000','type':'text','text':{'body':"
               "'x'}}]" ENV_TAIL);
    is_int(b.updates[0].window_from, NOW + MW_FUTURE_SKEW,
           "future timestamp clamped");
    mw_batch_free(&b);

    /* an integer beyond 2^63 anywhere does not lose the batch */
    rc = parse(&b, "{'object':'whatsapp_business_account','entry':[{'id':"
               "'W','time':18446744073709551616,'changes':[{'field':"
               "'messages','value':{'metadata':{'phone_number_id':'P'},"
               "'messages':[{'from':'16505551234','id':'wamid.B',"
               "'timestamp':1700000000,'type':'text','text':{'body':'x'},"
               "'huge':123456789012345678901234567890}]}}]}]}");
    is_int(rc, MW_BATCH_OK, "integer over 2^63: batch parses");
    is_int(b.nupdates, 1, "integer over 2^63: update kept");
    is_int(b.updates[0].timestamp, TS,
           "integer timestamp read back after the real retry");
    mw_batch_free(&b);

    /* \u0000 inside a text: kept and escaped again */
    rc = parse(&b, MSG("'type':'text','text':{'body':'a\\u0000b'}"));
    is_int(rc, MW_BATCH_OK, "NUL in text: parses");
    body = json_object_get(get(&b.updates[0], "content"), "body");
    is_int(json_string_length(body), 3, "NUL in text: length 3");
    d = dump(&b, NULL);
    ok(d && strstr(d, "\"body\":\"a\\u0000b\"") != NULL,
       "NUL in text: re-escaped in the dump");
    mw_json_free(d);
    mw_batch_free(&b);

    /* CRLF in a profile name never reaches the output raw */
    rc = parse(&b, "{'object':'whatsapp_business_account','entry':[{'id':"
               "'W','changes':[{'field':'messages','value':{'metadata':"
               "{'phone_number_id':'P'},'contacts':[{'profile':{'name':"
               "'Eve\\r\\nX-Injected: 1'},'wa_id':'16505551234'}],"
               "'messages':[{'from':'16505551234','id':'wamid.E','type':"
               "'text','text':{'body':'line1\\nline2'}}]}}]}]}");
    is_int(rc, MW_BATCH_OK, "CRLF: parses");
    is_str(str(&b.updates[0], "profile_name"), "Eve\r\nX-Injected: 1",
           "CRLF: profile name kept");
    d = dump(&b, NULL);
    ok(d && no_raw_newline(d), "CRLF: no raw CR or LF in the dump");
    ok(d && strstr(d, "Eve\\r\\nX-Injected: 1") != NULL,
       "CRLF: escaped in the dump");
    mw_json_free(d);
    mw_batch_free(&b);

    /* unknown fields anywhere are ignored */
    rc = parse(&b, "{'object':'whatsapp_business_account','x':1,'entry':"
               "[{'id':'W','y':[{}],'changes':[{'field':'messages','z':2,"
               "'value':{'metadata':{'phone_number_id':'P','q':0},"
               "'future':{'a':1},'messages':[{'from':'16505551234','id':"
               "'wamid.U','type':'text','text':{'body':'hi','new':1},"
               "'novel':true}]}}]}]}");
    is_int(rc, MW_BATCH_OK, "unknown fields: parse");
    is_int(b.nupdates, 1, "unknown fields: one update");
    is_int(b.updates[0].cls, MW_CLASS_SUPPORTED, "unknown fields: class");
    ok(!has(&b.updates[0], "novel"), "unknown message member not copied");
    mw_batch_free(&b);
}


static void
test_contacts(void)
{
    int           rc;
    mw_batch_t    b;
    mw_update_t  *u;

    /* business-scoped user id, no phone number */
    rc = parse(&b, "{'object':'whatsapp_business_account','entry':[{'id':"
               "'W','changes':[{'field':'messages','value':{'metadata':"
               "{'phone_number_id':'P'},'contacts':[{'profile':{'name':"
               "'A'},'user_id':'US.111'},{'profile':{'name':'B'},"
               "'user_id':'US.13491208655302741918'}],'messages':[{"
               "'from_user_id':'US.13491208655302741918','id':'wamid.Z',"
               "'type':'text','text':{'body':'x'}}]}}]}]}");
    is_int(rc, MW_BATCH_OK, "bsuid: parse");
    u = &b.updates[0];
    is_str(str(u, "from"), "US.13491208655302741918", "bsuid: from");
    is_str(u->contact, "US.13491208655302741918", "bsuid: contact");
    is_str(str(u, "profile_name"), "B", "bsuid: matching profile");
    mw_batch_free(&b);

    /* a contact that does not normalize: raw in the event, no state */
    rc = parse(&b, ENV_HEAD "'messages':[{'from':'bad id with spaces',"
               "'id':'wamid.N','type':'text','text':{'body':'x'}}]"
               ENV_TAIL);
    u = &b.updates[0];
    is_str(str(u, "from"), "bad id with spaces", "bad contact: raw kept");
    is_str(u->contact, "", "bad contact: no u->contact");
    is_str(str(u, "profile_name"), "Ann",
           "bad contact: the only contact's profile");
    mw_batch_free(&b);

    /* a phone written for humans is normalized in the event */
    rc = parse(&b, ENV_HEAD "'messages':[{'from':'+1 650-555-1234',"
               "'id':'wamid.N','type':'text','text':{'body':'x'}}]"
               ENV_TAIL);
    u = &b.updates[0];
    is_str(str(u, "from"), "16505551234", "phone: normalized from");
    is_str(u->contact, "16505551234", "phone: contact");
    mw_batch_free(&b);

    /* no from at all */
    rc = parse(&b, ENV_HEAD "'messages':[{'id':'wamid.N','type':'text',"
               "'text':{'body':'x'}}]" ENV_TAIL);
    u = &b.updates[0];
    is_str(str(u, "from"), "", "no from: empty");
    is_str(u->contact, "", "no from: no contact");
    mw_batch_free(&b);

    /* no phone_number_id: no contact key */
    rc = parse(&b, "{'object':'whatsapp_business_account','entry':[{'id':"
               "'W','changes':[{'field':'messages','value':{'messages':"
               "[{'from':'16505551234','id':'i','type':'text'}]}}]}]}");
    u = &b.updates[0];
    is_str(u->phone_number_id, "", "no metadata: phone_number_id empty");
    is_str(str(u, "phone_number_id"), "", "no metadata: event empty");
    {
        unsigned char  zero[MW_KEY_LEN];

        memset(zero, 0, sizeof(zero));
        ok(memcmp(u->contact_key, zero, MW_KEY_LEN) == 0,
           "no metadata: no contact key");
    }
    ok(json_is_object(get(u, "content")), "text without member: {}");
    mw_batch_free(&b);
}


static void
test_malformed_items(void)
{
    int           rc;
    mw_batch_t    b;
    mw_update_t  *u;

    rc = parse(&b, ENV_HEAD "'messages':[42,{'from':'16505551234','id':"
               "'wamid.OK','type':'text','text':{'body':'x'}},'s'],"
               "'statuses':{'id':'x'}" ENV_TAIL);
    is_int(rc, MW_BATCH_OK, "malformed items: parse");
    is_int(b.nupdates, 4, "malformed items: nothing lost");

    u = &b.updates[0];
    is_int(u->kind, MW_KIND_CHANGE, "non-object message: change");
    is_str(str(u, "field"), "messages", "non-object message: field");
    is_str(str(u, "member"), "messages", "non-object message: member");
    is_int(json_integer_value(get(u, "value")), 42,
           "non-object message: value as is");
    is_str(str(u, "phone_number_id"), "PN1",
           "non-object message: phone_number_id");

    is_int(b.updates[1].kind, MW_KIND_MESSAGE, "good message kept");
    ok(memcmp(b.updates[0].key, b.updates[2].key, MW_KEY_LEN) != 0,
       "different malformed items, different keys");

    u = &b.updates[3];
    is_int(u->kind, MW_KIND_CHANGE, "statuses not an array: change");
    is_str(str(u, "member"), "statuses", "statuses member");
    is_str(path(u, "value", "id"), "x", "statuses: value as is");
    mw_batch_free(&b);

    /* messages without an id do not share one key */
    rc = parse(&b, ENV_HEAD "'messages':[{'from':'16505551234','type':"
               "'text','text':{'body':'a'}},{'from':'16505551234','type':"
               "'text','text':{'body':'b'}}],'statuses':[{'status':"
               "'sent'},{'status':'read'}]" ENV_TAIL);
    is_int(b.nupdates, 4, "id-less: four updates");
    ok(memcmp(b.updates[0].key, b.updates[1].key, MW_KEY_LEN) != 0,
       "id-less messages: distinct keys");
    ok(memcmp(b.updates[2].key, b.updates[3].key, MW_KEY_LEN) != 0,
       "id-less statuses: distinct keys");
    is_str(str(&b.updates[0], "id"), "", "id-less: id empty");
    is_str(str(&b.updates[2], "recipient"), "", "no recipient: empty");
    mw_batch_free(&b);

    /* and the same content twice is one key: a retry */
    rc = parse(&b, ENV_HEAD "'messages':[{'from':'16505551234','type':"
               "'text','text':{'body':'a'}},{'type':'text','from':"
               "'16505551234','text':{'body':'a'}}]" ENV_TAIL);
    ok(memcmp(b.updates[0].key, b.updates[1].key, MW_KEY_LEN) == 0,
       "id-less: same content, same key whatever the order");
    mw_batch_free(&b);

    /* type missing */
    rc = parse(&b, ENV_HEAD "'messages':[{'from':'16505551234','id':'x'}]"
               ENV_TAIL);
    u = &b.updates[0];
    is_str(str(u, "type"), "", "no type: empty type");
    is_str(str(u, "reason"), "unsupported_type", "no type: reason");
    mw_batch_free(&b);
}


/* ------------------------------------------------------------------ */
/* quarantine and opt-in                                               */

static int
rule_match(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name)
{
    const char  *w;
    size_t       i, wl;

    w = data;
    wl = strlen(w);

    for (i = 0; i + wl <= len; i++) {
        if (memcmp(text + i, w, wl) == 0) {
            *start = i;
            *end = i + wl;
            *name = "phishing_link";
            return 1;
        }
    }

    return 0;
}


static void
test_quarantine(void)
{
    int                    rc;
    char                  *d;
    size_t                 i;
    mw_batch_t             b;
    mw_update_t           *u;
    mw_quarantine_conf_t   qc;

    static const struct {
        const char  *msg;
        const char  *secret;
        const char  *reason;
    } cases[] = {
        { "'type':'text','text':{'body':'my card 4111 1111 1111 1111 ok'}",
          "4111", MW_REASON_CARD },
        { "'type':'image','image':{'mime_type':'image/jpeg','id':'1',"
          "'caption':'pay to DE89 3704 0044 0532 0130 00'}",
          "3704", MW_REASON_IBAN },
        { "'type':'document','document':{'mime_type':'application/pdf',"
          "'id':'1','filename':'4111111111111111.pdf'}",
          "411111", MW_REASON_CARD },
        { "'type':'video','video':{'mime_type':'video/mp4','id':'1',"
          "'caption':'4111111111111111'}",
          "411111", MW_REASON_CARD },
        { "'type':'sticker','sticker':{'mime_type':'image/webp','id':'1',"
          "'caption':'4111111111111111'}",
          "411111", MW_REASON_CARD },
        { "'type':'button','button':{'payload':'p','text':"
          "'4111111111111111'}",
          "411111", MW_REASON_CARD },
        { "'type':'interactive','interactive':{'type':'list_reply',"
          "'list_reply':{'id':'l','title':'t','description':"
          "'4111111111111111'}}",
          "411111", MW_REASON_CARD },
        { "'type':'interactive','interactive':{'type':'button_reply',"
          "'button_reply':{'id':'l','title':'4111 1111 1111 1111'}}",
          "4111", MW_REASON_CARD },
        { "'type':'edit','edit':{'original_message_id':'wamid.O',"
          "'message':{'type':'text','text':{'body':"
          "'4111 1111 1111 1111'}}}",
          "4111", MW_REASON_CARD },
        { "'type':'text','text':{'body':'visit evil.example now'}",
          "evil.example", "phishing_link" },
        { "'type':'text','text':{'body':'x\\u0000 4111 1111 1111 1111'}",
          "4111", MW_REASON_CARD },
        { NULL, NULL, NULL }
    };

    memset(&qc, 0, sizeof(qc));
    qc.detectors = MW_DETECT_ALL;
    qc.match = rule_match;
    qc.match_data = "evil.example";
    qconf = &qc;

    for (i = 0; cases[i].msg; i++) {
        char  buf[2048];

        snprintf(buf, sizeof(buf),
                 MSG("%s,'context':{'from':'1','id':'wamid.CTX',"
                     "'forwarded':true}"),
                 cases[i].msg);
        rc = parse(&b, buf);
        is_int(rc, MW_BATCH_OK, "quarantine #%zu: parse", i);
        u = &b.updates[0];
        is_int(u->cls, MW_CLASS_QUARANTINED, "quarantine #%zu: class", i);
        is_str(u->reason, cases[i].reason, "quarantine #%zu: u->reason", i);
        is_str(str(u, "class"), "quarantined",
               "quarantine #%zu: class string", i);
        is_str(str(u, "reason"), cases[i].reason,
               "quarantine #%zu: reason", i);
        ok(!has(u, "content"), "quarantine #%zu: no content", i);
        is_str(path(u, "context", "id"), "wamid.CTX",
               "quarantine #%zu: context id kept", i);
        ok(json_object_get(get(u, "context"), "forwarded") == NULL,
           "quarantine #%zu: context reduced to ids", i);
        is_int(u->optin, MW_OPTIN_NONE, "quarantine #%zu: no opt-in", i);

        d = dump(&b, NULL);
        ok(d && strstr(d, cases[i].secret) == NULL,
           "quarantine #%zu: the hidden text is nowhere in the dump", i);
        mw_json_free(d);
        mw_batch_free(&b);
    }

    /* near misses stay supported */
    rc = parse(&b, MSG("'type':'text','text':{'body':"
                       "'order 4111 1111 1111 1112'}"));
    is_int(b.updates[0].cls, MW_CLASS_SUPPORTED, "Luhn-invalid: supported");
    mw_batch_free(&b);

    rc = parse(&b, MSG("'type':'image','image':{'mime_type':'image/jpeg',"
                       "'id':'4111111111111111','sha256':"
                       "'4111111111111111'}"));
    is_int(b.updates[0].cls, MW_CLASS_SUPPORTED,
           "media ids are not scanned");
    mw_batch_free(&b);

    rc = parse(&b, MSG("'type':'contacts','contacts':[{'phones':[{"
                       "'phone':'4111111111111111'}]}]"));
    is_int(b.updates[0].cls, MW_CLASS_SUPPORTED,
           "shared contacts are not scanned");
    mw_batch_free(&b);

    /* unsupported beats quarantine: no content is shown either way */
    rc = parse(&b, MSG("'type':'document','document':{'mime_type':"
                       "'application/x-msdownload','filename':"
                       "'4111111111111111.exe'}"));
    is_str(b.updates[0].reason, "unsupported_attachment",
           "unsupported attachment is not scanned");
    d = dump(&b, NULL);
    ok(d && strstr(d, "411111") == NULL, "unsupported: filename hidden");
    mw_json_free(d);
    mw_batch_free(&b);

    /* qc NULL: no scanning */
    qconf = NULL;
    rc = parse(&b, MSG("'type':'text','text':{'body':"
                       "'4111 1111 1111 1111'}"));
    is_int(b.updates[0].cls, MW_CLASS_SUPPORTED, "no qc: supported");
    mw_batch_free(&b);
}


static void
test_optin(void)
{
    char          buf[1024];
    size_t        i;
    mw_batch_t    b;
    mw_update_t  *u;

    static const struct {
        const char  *body;
        mw_optin_e   want;
    } cases[] = {
        { "YES", MW_OPTIN_IN },
        { " yes\\n", MW_OPTIN_IN },
        { "Start", MW_OPTIN_IN },
        { "\\tSUBSCRIBE ", MW_OPTIN_IN },
        { "subscribe", MW_OPTIN_IN },
        { "STOP", MW_OPTIN_OUT },
        { "\\r\\nstop\\r\\n", MW_OPTIN_OUT },
        { "yes please", MW_OPTIN_NONE },
        { "YES\\u0000", MW_OPTIN_NONE },
        { "STOPP", MW_OPTIN_NONE },
        { "", MW_OPTIN_NONE },
        { "Y E S", MW_OPTIN_NONE },
        { NULL, 0 }
    };

    for (i = 0; cases[i].body; i++) {
        snprintf(buf, sizeof(buf), MSG("'type':'text','text':{'body':'%s'}"),
                 cases[i].body);
        parse(&b, buf);
        u = &b.updates[0];
        is_int(u->optin, cases[i].want, "optin '%s'", cases[i].body);
        is_str(str(u, "optin"),
               cases[i].want == MW_OPTIN_IN ? "in"
               : cases[i].want == MW_OPTIN_OUT ? "out" : NULL,
               "optin '%s': event", cases[i].body);
        mw_batch_free(&b);
    }

    parse(&b, MSG("'type':'button','button':{'text':'STOP','payload':'x'}"));
    is_int(b.updates[0].optin, MW_OPTIN_NONE, "a button is not a keyword");
    mw_batch_free(&b);
}


/* ------------------------------------------------------------------ */
/* the dump, byte for byte, and the update fields the glue reads       */

/*
 * A delivery with every form of event (messages of several types and
 * classes, a malformed item, statuses, a legacy deletion, an error item,
 * another field), escapes, reals and windows.  golden_out is what the
 * first implementation, which built a jansson object per event and
 * serialized it with json_dump_callback(), wrote for it: the events the
 * application receives must not change by a byte.
 */
static const char  golden_in[] =
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"WAB"
    "A\\\"1\",\"time\":1700000009,\"changes\":[{\"field\":\"messages\","
    "\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"disp"
    "lay_phone_number\":\"15550001111\",\"phone_number_id\":\"PN1\"},\""
    "contacts\":[{\"profile\":{\"name\":\"Ann \\u00e9\\ud83d\\ude00\\t"
    "\"},\"wa_id\":\"16505551234\"}],\"messages\":[{\"from\":\"16505551"
    "234\",\"id\":\"wamid.M1\",\"timestamp\":\"1700000000\",\"type\":\""
    "text\",\"text\":{\"body\":\"Hi \\/ <b>\\u0000\\u001f\"},\"context"
    "\":{\"from\":\"1\",\"id\":\"wamid.C\",\"forwarded\":true}},{\"from"
    "\":\"+1 650-555-1234\",\"id\":\"wamid.M2\",\"timestamp\":170000000"
    "1,\"type\":\"location\",\"location\":{\"latitude\":-33.8688197,\"l"
    "ongitude\":151.2092955,\"name\":\"Cafe\",\"n\":-0.0,\"big\":1e300}"
    "},{\"from\":\"16505551234\",\"id\":\"wamid.M3\",\"type\":\"text\","
    "\"text\":{\"body\":\"visit evil.example now\"},\"context\":{\"from"
    "\":\"1\",\"id\":\"wamid.C2\",\"forwarded\":true}},{\"from\":\"1650"
    "5551234\",\"id\":\"wamid.M4\",\"type\":\"reaction\",\"reaction\":{"
    "\"message_id\":\"wamid.R\"}},{\"from\":\"16505551234\",\"id\":\"wa"
    "mid.M5\",\"type\":\"unsupported\",\"unsupported\":{\"type\":\"poll"
    "\"},\"errors\":[{\"code\":131051,\"title\":\"x\"}]},{\"from\":\"16"
    "505551234\",\"id\":\"wamid.M6\",\"type\":\"text\",\"text\":{\"body"
    "\":\" STOP\\n\"}},42],\"statuses\":[{\"id\":\"wamid.S1\",\"status"
    "\":\"read\",\"timestamp\":\"1700000002\",\"recipient_id\":\"165055"
    "51234\",\"conversation\":{\"id\":\"CV\",\"origin\":{\"type\":\"ser"
    "vice\"}},\"pricing\":{\"billable\":true,\"pricing_model\":\"CBP\","
    "\"category\":\"service\"},\"biz_opaque_callback_data\":\"T\"},{\"i"
    "d\":\"wamid.D\",\"status\":\"deleted\",\"recipient_id\":\"16505551"
    "234\",\"errors\":[{\"code\":1}]}],\"errors\":[{\"code\":131000,\"t"
    "itle\":\"Something went wrong\"}]}},{\"field\":\"message_template_"
    "status_update\",\"value\":{\"event\":\"APPROVED\",\"message_templa"
    "te_id\":12,\"reason\":\"NONE\",\"metadata\":{\"phone_number_id\":"
    "\"PN9\"}}}]}]}";

static const char  golden_out[] =
    "{\"events\":[{\"kind\":\"message\",\"channel\":\"whatsapp\",\"id\""
    ":\"wamid.M1\",\"phone_number_id\":\"PN1\",\"display_phone_number\""
    ":\"15550001111\",\"waba_id\":\"WABA\\\"1\",\"timestamp\":170000000"
    "0,\"from\":\"16505551234\",\"profile_name\":\"Ann \303\251\360\237"
    "\230\200\\t\",\"type\":\"text\",\"class\":\"supported\",\"content"
    "\":{\"body\":\"Hi / <b>\\u0000\\u001F\"},\"context\":{\"from\":\"1"
    "\",\"id\":\"wamid.C\",\"forwarded\":true},\"event_id\":\"117cfb958"
    "fab08174fedec8754ee1631\",\"window\":{\"expires_at\":1700086400}},"
    "{\"kind\":\"message\",\"channel\":\"whatsapp\",\"id\":\"wamid.M2\""
    ",\"phone_number_id\":\"PN1\",\"display_phone_number\":\"1555000111"
    "1\",\"waba_id\":\"WABA\\\"1\",\"timestamp\":1700000001,\"from\":\""
    "16505551234\",\"type\":\"location\",\"class\":\"supported\",\"cont"
    "ent\":{\"latitude\":-33.868819700000003,\"longitude\":151.2092955,"
    "\"name\":\"Cafe\",\"n\":-0.0,\"big\":1.0000000000000001e300},\"eve"
    "nt_id\":\"2e8faef66c7be5a91c376e8d31f8c218\"},{\"kind\":\"message"
    "\",\"channel\":\"whatsapp\",\"id\":\"wamid.M3\",\"phone_number_id"
    "\":\"PN1\",\"display_phone_number\":\"15550001111\",\"waba_id\":\""
    "WABA\\\"1\",\"timestamp\":null,\"from\":\"16505551234\",\"profile_"
    "name\":\"Ann \303\251\360\237\230\200\\t\",\"type\":\"text\",\"cla"
    "ss\":\"quarantined\",\"reason\":\"phishing_link\",\"context\":{\"i"
    "d\":\"wamid.C2\",\"from\":\"1\"},\"event_id\":\"8fba3f7408abdc5ec5"
    "b148c40eec85e9\",\"window\":{\"expires_at\":1700086402}},{\"kind\""
    ":\"message\",\"channel\":\"whatsapp\",\"id\":\"wamid.M4\",\"phone_"
    "number_id\":\"PN1\",\"display_phone_number\":\"15550001111\",\"wab"
    "a_id\":\"WABA\\\"1\",\"timestamp\":null,\"from\":\"16505551234\","
    "\"profile_name\":\"Ann \303\251\360\237\230\200\\t\",\"type\":\"re"
    "action\",\"class\":\"unsupported\",\"reason\":\"reaction\",\"remov"
    "ed\":true,\"related_id\":\"wamid.R\",\"event_id\":\"53ff2afaaac9a5"
    "8d22f4a336457b25e6\"},{\"kind\":\"message\",\"channel\":\"whatsapp"
    "\",\"id\":\"wamid.M5\",\"phone_number_id\":\"PN1\",\"display_phone"
    "_number\":\"15550001111\",\"waba_id\":\"WABA\\\"1\",\"timestamp\":"
    "null,\"from\":\"16505551234\",\"profile_name\":\"Ann \303\251\360"
    "\237\230\200\\t\",\"type\":\"unsupported\",\"class\":\"unsupported"
    "\",\"reason\":\"unsupported_type\",\"errors\":[{\"code\":131051,\""
    "title\":\"x\"}],\"subtype\":\"poll\",\"event_id\":\"2af1da3640e509"
    "bac1a12328344f7681\",\"window\":{\"expires_at\":1700086404}},{\"ki"
    "nd\":\"message\",\"channel\":\"whatsapp\",\"id\":\"wamid.M6\",\"ph"
    "one_number_id\":\"PN1\",\"display_phone_number\":\"15550001111\","
    "\"waba_id\":\"WABA\\\"1\",\"timestamp\":null,\"from\":\"1650555123"
    "4\",\"profile_name\":\"Ann \303\251\360\237\230\200\\t\",\"type\":"
    "\"text\",\"class\":\"supported\",\"content\":{\"body\":\" STOP\\n"
    "\"},\"optin\":\"out\",\"event_id\":\"b7e1760c84e013ce8c41429e4f1c4"
    "c5f\"},{\"kind\":\"change\",\"channel\":\"whatsapp\",\"id\":\"\","
    "\"phone_number_id\":\"PN1\",\"display_phone_number\":\"15550001111"
    "\",\"waba_id\":\"WABA\\\"1\",\"timestamp\":null,\"field\":\"messag"
    "es\",\"member\":\"messages\",\"value\":42,\"event_id\":\"011589391"
    "0a78644e4a4fbaad1169662\"},{\"kind\":\"status\",\"channel\":\"what"
    "sapp\",\"id\":\"wamid.S1\",\"phone_number_id\":\"PN1\",\"display_p"
    "hone_number\":\"15550001111\",\"waba_id\":\"WABA\\\"1\",\"timestam"
    "p\":1700000002,\"status\":\"read\",\"recipient\":\"16505551234\","
    "\"conversation\":{\"id\":\"CV\",\"origin\":{\"type\":\"service\"}}"
    ",\"pricing\":{\"billable\":true,\"pricing_model\":\"CBP\",\"catego"
    "ry\":\"service\"},\"biz_opaque_callback_data\":\"T\",\"event_id\":"
    "\"94f32b6f180799591a1189c5f45e8675\"},{\"kind\":\"message\",\"chan"
    "nel\":\"whatsapp\",\"id\":\"wamid.D\",\"phone_number_id\":\"PN1\","
    "\"display_phone_number\":\"15550001111\",\"waba_id\":\"WABA\\\"1\""
    ",\"timestamp\":null,\"from\":\"16505551234\",\"profile_name\":\"An"
    "n \303\251\360\237\230\200\\t\",\"type\":\"deleted\",\"class\":\"u"
    "nsupported\",\"reason\":\"deleted\",\"errors\":[{\"code\":1}],\"ev"
    "ent_id\":\"a61c4a6d1a597805f5e51fab22d12541\",\"window\":{\"expire"
    "s_at\":1700086408}},{\"kind\":\"error\",\"channel\":\"whatsapp\","
    "\"id\":\"\",\"phone_number_id\":\"PN1\",\"display_phone_number\":"
    "\"15550001111\",\"waba_id\":\"WABA\\\"1\",\"timestamp\":null,\"err"
    "ors\":[{\"code\":131000,\"title\":\"Something went wrong\"}],\"eve"
    "nt_id\":\"83eb228b9b06696d9dad9ce38157ae4a\"},{\"kind\":\"change\""
    ",\"channel\":\"whatsapp\",\"id\":\"\",\"phone_number_id\":\"PN9\","
    "\"waba_id\":\"WABA\\\"1\",\"timestamp\":1700000009,\"field\":\"mes"
    "sage_template_status_update\",\"value\":{\"event\":\"APPROVED\",\""
    "message_template_id\":12,\"reason\":\"NONE\",\"metadata\":{\"phone"
    "_number_id\":\"PN9\"}},\"event_id\":\"80bbe9eb7ff938df2ae92601abfa"
    "9941\"}]}";


static void
test_golden(void)
{
    int                    rc;
    char                  *d;
    size_t                 i, len;
    mw_batch_t             b;
    mw_quarantine_conf_t   qc;

    memset(&qc, 0, sizeof(qc));
    qc.detectors = MW_DETECT_ALL;
    qc.match = rule_match;
    qc.match_data = "evil.example";

    json_array_clear(held);
    cur = &b;
    rc = mw_batch_parse(&b, golden_in, sizeof(golden_in) - 1, popts, &qc,
                        NOW);
    is_int(rc, MW_BATCH_OK, "golden: parses");
    is_int(b.nupdates, 11, "golden: eleven updates");

    for (i = 0; i < b.nupdates; i++) {
        if (b.updates[i].kind == MW_KIND_MESSAGE && b.updates[i].contact[0]
            && i % 2 == 0)
        {
            mw_event_set_window(&b.updates[i], 1700086400 + i);
        }
    }

    d = mw_batch_dump(&b, NULL, &len);
    is_int(len, sizeof(golden_out) - 1, "golden: length");
    ok(d && len == sizeof(golden_out) - 1
       && memcmp(d, golden_out, len) == 0, "golden: byte for byte");

    if (d && (len != sizeof(golden_out) - 1
              || memcmp(d, golden_out, len) != 0))
    {
        printf("# got  %s\n# want %s\n", d, golden_out);
    }

    mw_json_free(d);
    mw_batch_free(&b);
}


static void
test_ids(void)
{
    int           rc;
    char         *d;
    size_t        len;
    json_t       *root;
    mw_batch_t    b;
    mw_update_t  *u;

    rc = parse(&b, ENV_HEAD "'messages':[{'from':'16505551234','id':"
               "'wamid.A\\u0000B','type':'text','text':{'body':'x'}},"
               "{'from':'16505551234','type':'text'}],'statuses':[{'id':"
               "'wamid.S','status':'failed','errors':[{'code':131047}]},"
               "{'status':'sent'}],'errors':[{'code':1}]}},{'field':'x',"
               "'value':{" ENV_TAIL);
    is_int(rc, MW_BATCH_OK, "ids: parse");
    is_int(b.nupdates, 6, "ids: six updates");

    u = &b.updates[0];
    is_int(u->id_len, 9, "message id: length counts the NUL");
    ok(memcmp(u->id, "wamid.A\0B", 9) == 0, "message id: bytes");
    is_str(u->id, "wamid.A", "message id: NUL-terminated as jansson keeps it");

    is_str(b.updates[1].id, "", "message without id: \"\"");
    is_int(b.updates[1].id_len, 0, "message without id: 0");
    is_str(b.updates[2].id, "wamid.S", "status id");
    is_int(b.updates[2].id_len, 7, "status id length");
    is_int(b.updates[2].error_code, 131047, "status: error code");
    is_str(b.updates[3].id, "", "status without id: \"\"");
    is_str(b.updates[4].id, "", "error item: \"\"");
    is_int(b.updates[4].kind, MW_KIND_ERROR, "error item kind");
    is_str(b.updates[5].id, "", "change: \"\"");
    is_int(b.updates[5].kind, MW_KIND_CHANGE, "change kind");

    for (len = 0; len < b.nupdates; len++) {
        is_int(b.updates[len].window_expires, 0, "update %zu: no window",
               len);
    }

    is_int(mw_event_set_window(NULL, 1), -1, "set_window(NULL)");
    is_int(mw_event_set_window(&b.updates[0], TS + 86400), 0,
           "set_window");
    is_int(b.updates[0].window_expires, TS + 86400, "window recorded");
    is_int(json_integer_value(json_object_get(get(&b.updates[0], "window"),
                                              "expires_at")),
           TS + 86400, "window in the event");
    ok(!has(&b.updates[1], "window"), "no window on another update");

    /* a window set again replaces the first, as a member set twice did */
    mw_event_set_window(&b.updates[0], TS + 2 * 86400);
    d = mw_batch_dump(&b, NULL, &len);
    ok(d && strstr(d, "\"window\":{\"expires_at\":1700172800}}") != NULL
       && strstr(d, "1700086400") == NULL, "window set twice: the last");
    mw_json_free(d);

    ok(mw_update_event(&b, b.nupdates) == NULL,
       "mw_update_event beyond the batch: NULL");

    /*
     * mw_batch_drop(): the updates go, the document is the caller's
     * (here released by hand, as a pool allocator would at once).
     */
    root = b.root;
    mw_batch_drop(&b);
    ok(b.updates == NULL && b.nupdates == 0 && b.root == NULL,
       "drop: the batch is empty");
    mw_batch_drop(&b);
    mw_batch_free(&b);
    ok(1, "drop, drop again and free after it: harmless");
    json_decref(root);

    /* a failed parse leaves nothing to drop but the document */
    rc = parse(&b, "{'object':'page'}");
    is_int(rc, MW_BATCH_ESHAPE, "drop after a failure: parse");
    root = b.root;
    mw_batch_drop(&b);
    json_decref(root);
}


int
main(void)
{
    json_set_alloc_funcs(tagged_malloc, tagged_free);

    held = json_array();

    /* everything twice: with jansson alone, then with the fast reader */
    for (popts = 0; popts <= MW_JSON_FAST; popts += MW_JSON_FAST) {
        printf("# parsing with%s the fast reader\n",
               popts ? "" : "out");
        test_text();
        test_types();
        test_related();
        test_statuses();
        test_mixed();
        test_big_batch();
        test_shape();
        test_values();
        test_contacts();
        test_malformed_items();
        test_quarantine();
        test_optin();
        test_golden();
        test_ids();
    }

    json_decref(held);
    is_int(tagged_live, 0, "every jansson allocation released");

    return done_testing();
}
