/*
 * The send path's core: request validation, the Graph-style error body,
 * the help-desk rules (mw_send_decide) and the session bookkeeping of an
 * inbound message (mw_session_advance).
 */

#include <stdlib.h>

#include "mw_core.h"
#include "tap.h"
#include "tagged_alloc.h"


#define NOW          1800000000
#define HOUR         3600


/* ---------------------------------------------------------------------- */
/* request validation                                                      */

/*
 * Parses a request that must be refused; checks status, code, message,
 * and that nothing is kept.  want_msg NULL: the message is not compared,
 * only required to be non-empty.
 */
static void
refused(const char *body, size_t len, int status, int code,
    const char *want_msg, const char *what)
{
    int             rc;
    mw_send_req_t   req;
    mw_send_err_t   err;

    rc = mw_send_parse(&req, body, len, &err);

    is_int(rc, -1, "%s: refused", what);
    is_int(err.status, status, "%s: HTTP status", what);
    is_int(err.code, code, "%s: Graph code", what);

    if (want_msg) {
        is_str(err.message, want_msg, "%s: message", what);

    } else {
        ok(err.message[0] != '\0', "%s: has a message", what);
    }

    ok(req.root == NULL && req.type == NULL && req.contact[0] == '\0',
       "%s: nothing kept", what);

    mw_send_free(&req);
}


static void
refused_s(const char *body, int code, const char *want_msg, const char *what)
{
    refused(body, strlen(body), 400, code, want_msg, what);
}


/* Parses a request that must be accepted; the caller frees req. */
static int
accepted(mw_send_req_t *req, const char *body, size_t len, const char *what)
{
    int            rc;
    mw_send_err_t  err;

    rc = mw_send_parse(req, body, len, &err);

    if (!ok(rc == 0, "%s: accepted", what)) {
        printf("#   refused: %d %d %s\n", err.status, err.code, err.message);
    }

    return rc;
}


static void
accepted_type(const char *body, const char *type, int is_template,
    const char *what)
{
    mw_send_req_t  req;

    if (accepted(&req, body, strlen(body), what) == 0) {
        is_str(req.type, type, "%s: type", what);
        is_int(req.is_template, is_template, "%s: is_template", what);
        ok(req.root != NULL, "%s: document kept", what);
    }

    mw_send_free(&req);
}


/* A text request whose body is n copies of the UTF-8 sequence unit. */
static char *
text_body(const char *unit, size_t n, size_t *len)
{
    char        *buf, *p;
    size_t       ulen, i;
    const char  *head = "{\"messaging_product\":\"whatsapp\","
                        "\"to\":\"16505551234\",\"type\":\"text\","
                        "\"text\":{\"body\":\"";
    const char  *tail = "\"}}";

    ulen = strlen(unit);
    buf = malloc(strlen(head) + ulen * n + strlen(tail) + 1);

    if (buf == NULL) {
        abort();
    }

    p = buf;
    memcpy(p, head, strlen(head));
    p += strlen(head);

    for (i = 0; i < n; i++) {
        memcpy(p, unit, ulen);
        p += ulen;
    }

    memcpy(p, tail, strlen(tail) + 1);
    p += strlen(tail);

    *len = (size_t) (p - buf);

    return buf;
}


static void
test_not_json(void)
{
    mw_send_req_t  req;
    mw_send_err_t  err;

    refused("", 0, 400, MW_GRAPH_PARAM_INVALID,
            "the request body is not valid JSON (empty body)", "empty body");

    refused_s("{\"to\":", MW_GRAPH_PARAM_INVALID,
              "the request body is not valid JSON (truncated JSON at byte 6)",
              "truncated JSON");

    refused_s("to=16505551234&type=text", MW_GRAPH_PARAM_INVALID, NULL,
              "a form body");

    refused_s("{\"to\":\"1\",\"to\":\"16505551234\",\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              MW_GRAPH_PARAM_INVALID, NULL, "duplicate \"to\"");

    mw_send_parse(&req, "{\"text\":{\"body\":\"a\",\"body\":\"b\"}}", 31,
                  &err);
    ok(strncmp(err.message, "the request body is not valid JSON (", 36) == 0
       && strstr(err.message, "duplicate key") != NULL,
       "a nested duplicate key is named as such: %s", err.message);
    mw_send_free(&req);

    refused_s("[{\"to\":\"16505551234\"}]", MW_GRAPH_PARAM_INVALID,
              "the request body must be a JSON object", "an array");
    refused_s("\"text\"", MW_GRAPH_PARAM_INVALID,
              "the request body must be a JSON object", "a string");

    /* the reason never quotes the input */
    mw_send_parse(&req, "{\"to\": secret-token}", 20, &err);
    ok(strstr(err.message, "secret") == NULL,
       "a syntax error does not quote the body: %s", err.message);
    mw_send_free(&req);
}


static void
test_envelope(void)
{
    refused_s("{\"messaging_product\":\"sms\",\"to\":\"16505551234\","
              "\"type\":\"text\",\"text\":{\"body\":\"hi\"}}",
              131009, "messaging_product must be \"whatsapp\"",
              "messaging_product sms");
    refused_s("{\"messaging_product\":1,\"to\":\"16505551234\","
              "\"type\":\"text\",\"text\":{\"body\":\"hi\"}}",
              131009, "messaging_product must be \"whatsapp\"",
              "messaging_product a number");
    refused_s("{\"recipient_type\":\"group\",\"to\":\"16505551234\","
              "\"type\":\"text\",\"text\":{\"body\":\"hi\"}}",
              131009, "recipient_type must be \"individual\"",
              "recipient_type group");

    accepted_type("{\"to\":\"16505551234\",\"type\":\"text\","
                  "\"text\":{\"body\":\"hi\"}}", "text", 0,
                  "messaging_product absent");
    accepted_type("{\"messaging_product\":\"whatsapp\","
                  "\"recipient_type\":\"individual\","
                  "\"to\":\"16505551234\",\"type\":\"text\","
                  "\"context\":{\"message_id\":\"wamid.X\"},"
                  "\"text\":{\"body\":\"hi\",\"preview_url\":false}}",
                  "text", 0, "a complete text request");
}


static void
test_to(void)
{
    mw_send_req_t  req;
    mw_send_err_t  err;
    const char    *b;

    refused_s("{\"type\":\"text\",\"text\":{\"body\":\"hi\"}}",
              131008, "\"to\" is missing", "no to");
    refused_s("{\"to\":16505551234,\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" must be a string", "to a number");
    refused_s("{\"to\":null,\"type\":\"text\",\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" must be a string", "to null");
    refused_s("{\"to\":\"\",\"type\":\"text\",\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" is not a phone number or a WhatsApp user id",
              "to empty");
    refused_s("{\"to\":\"US.1234\\u0001567\",\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" is not a phone number or a WhatsApp user id",
              "to with a control character");
    refused_s("{\"to\":\"US.1234\\n567\",\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" is not a phone number or a WhatsApp user id",
              "to with a newline");
    refused_s("{\"to\":\"16505551234\\u0000evil\",\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" is not a phone number or a WhatsApp user id",
              "to with an escaped NUL is not cut short");
    /* a user id is a country code, a dot and up to 128 characters */
    {
        mw_send_req_t  req;
        const char    *b = "{\"to\":\"US.01234567890123456789012345678"
                           "901234567890123456789012345678901234567890123"
                           "4567890123456789\",\"type\":\"text\","
                           "\"text\":{\"body\":\"hi\"}}";

        if (accepted(&req, b, strlen(b), "a 93-character user id") == 0) {
            is_int(strlen(req.contact), 93, "the user id is kept whole");
        }

        mw_send_free(&req);
    }
    refused_s("{\"to\":\"US.0123456789012345678901234567890123456789"
              "0123456789012345678901234567890123456789"
              "0123456789012345678901234567890123456789"
              "0123456789012345678901234567890123456789\",\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" is not a phone number or a WhatsApp user id",
              "to longer than a contact");
    refused_s("{\"to\":\"john doe\",\"type\":\"text\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"to\" is not a phone number or a WhatsApp user id",
              "to with a space, not a phone number");

    mw_send_parse(&req, "{\"to\":\"secret\\u0001x\",\"type\":\"text\","
                  "\"text\":{\"body\":\"hi\"}}", 50, &err);
    ok(strstr(err.message, "secret") == NULL,
       "the refused \"to\" is not quoted");
    mw_send_free(&req);

    b = "{\"messaging_product\":\"whatsapp\",\"to\":\"+1 650 555 1234\","
        "\"type\":\"text\",\"text\":{\"body\":\"hi\"}}";

    if (accepted(&req, b, strlen(b), "+1 650 555 1234") == 0) {
        is_str(req.contact, "16505551234", "normalized to the wa_id");
        is_str(req.to, "+1 650 555 1234", "to kept as the client wrote it");
    }

    mw_send_free(&req);

    b = "{\"to\":\"+1 (650) 555-1234\",\"type\":\"text\","
        "\"text\":{\"body\":\"hi\"}}";

    if (accepted(&req, b, strlen(b), "+1 (650) 555-1234") == 0) {
        is_str(req.contact, "16505551234", "punctuation dropped too");
    }

    mw_send_free(&req);

    b = "{\"to\":\"16505551234\",\"type\":\"text\","
        "\"text\":{\"body\":\"hi\"}}";

    if (accepted(&req, b, strlen(b), "a wa_id") == 0) {
        is_str(req.contact, "16505551234", "a wa_id is itself");
    }

    mw_send_free(&req);

    b = "{\"to\":\"US.13491208655302741918\",\"type\":\"text\","
        "\"text\":{\"body\":\"hi\"}}";

    if (accepted(&req, b, strlen(b), "a business-scoped user id") == 0) {
        is_str(req.contact, "US.13491208655302741918",
               "a business-scoped user id is kept exactly");
        is_str(req.to, "US.13491208655302741918", "and to points at it");
    }

    mw_send_free(&req);
    mw_send_free(&req);
    ok(req.root == NULL, "mw_send_free twice is harmless");
}


static void
test_type(void)
{
    mw_send_req_t  req;
    mw_send_err_t  err;

    refused_s("{\"to\":\"16505551234\"}",
              131008, "\"type\" is missing", "no type, no text");
    refused_s("{\"to\":\"16505551234\",\"image\":{\"id\":\"1\"}}",
              131008, "\"type\" is missing",
              "no type, an image object: not guessed");

    accepted_type("{\"to\":\"16505551234\",\"text\":{\"body\":\"hi\"}}",
                  "text", 0, "no type with a text object is text");

    refused_s("{\"to\":\"16505551234\",\"text\":\"hi\"}",
              131009, "\"text\" must be an object",
              "no type, text not an object");

    refused_s("{\"to\":\"16505551234\",\"type\":\"poll\","
              "\"poll\":{}}",
              131009, "unknown type: must be one of text, image, audio, "
              "video, document, sticker, location, contacts, interactive, "
              "template, reaction", "type poll");
    refused_s("{\"to\":\"16505551234\",\"type\":\"TEXT\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, NULL, "type is case-sensitive");
    refused_s("{\"to\":\"16505551234\",\"type\":\"text\\u0000x\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, NULL, "type with an escaped NUL");
    refused_s("{\"to\":\"16505551234\",\"type\":\"\","
              "\"text\":{\"body\":\"hi\"}}",
              131009, NULL, "type empty");
    refused_s("{\"to\":\"16505551234\",\"type\":7,"
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"type\" must be a string", "type a number");
    refused_s("{\"to\":\"16505551234\",\"type\":[\"text\"],"
              "\"text\":{\"body\":\"hi\"}}",
              131009, "\"type\" must be a string", "type an array");

    mw_send_parse(&req, "{\"to\":\"16505551234\",\"type\":\"hunter2\"}", 37,
                  &err);
    ok(strstr(err.message, "hunter2") == NULL,
       "an unknown type is not quoted");
    mw_send_free(&req);
}


static void
test_type_objects(void)
{
    size_t       i;
    char         body[256], msg[128];
    const char  *objects[] = { "text", "image", "audio", "video",
                               "document", "sticker", "location",
                               "interactive", "template", "reaction" };

    for (i = 0; i < sizeof(objects) / sizeof(objects[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"to\":\"16505551234\",\"type\":\"%s\"}", objects[i]);
        snprintf(msg, sizeof(msg), "\"%s\" is missing (required for type %s)",
                 objects[i], objects[i]);
        refused_s(body, 131008, msg, objects[i]);

        snprintf(body, sizeof(body),
                 "{\"to\":\"16505551234\",\"type\":\"%s\",\"%s\":\"x\"}",
                 objects[i], objects[i]);
        snprintf(msg, sizeof(msg), "\"%s\" must be an object", objects[i]);
        refused_s(body, 131009, msg, objects[i]);

        snprintf(body, sizeof(body),
                 "{\"to\":\"16505551234\",\"type\":\"%s\",\"%s\":[{}]}",
                 objects[i], objects[i]);
        refused_s(body, 131009, msg, objects[i]);
    }

    refused_s("{\"to\":\"16505551234\",\"type\":\"text\",\"text\":null}",
              131009, "\"text\" must be an object", "text null");

    /* another type's object is not the one asked for */
    refused_s("{\"to\":\"16505551234\",\"type\":\"image\","
              "\"text\":{\"body\":\"hi\"}}",
              131008, "\"image\" is missing (required for type image)",
              "type image with a text object");

    refused_s("{\"to\":\"16505551234\",\"type\":\"contacts\"}",
              131008, "\"contacts\" is missing (required for type contacts)",
              "contacts missing");
    refused_s("{\"to\":\"16505551234\",\"type\":\"contacts\","
              "\"contacts\":{\"name\":{}}}",
              131009, "\"contacts\" must be an array", "contacts an object");
    refused_s("{\"to\":\"16505551234\",\"type\":\"contacts\","
              "\"contacts\":[]}",
              131009, "\"contacts\" must not be empty", "contacts empty");

    accepted_type("{\"to\":\"16505551234\",\"type\":\"contacts\","
                  "\"contacts\":[{\"name\":{\"formatted_name\":\"A\"}}]}",
                  "contacts", 0, "contacts");
    accepted_type("{\"to\":\"16505551234\",\"type\":\"location\","
                  "\"location\":{\"latitude\":1.5,\"longitude\":2}}",
                  "location", 0, "location");
    accepted_type("{\"to\":\"16505551234\",\"type\":\"interactive\","
                  "\"interactive\":{\"type\":\"button\"}}",
                  "interactive", 0, "interactive");
    accepted_type("{\"to\":\"16505551234\",\"type\":\"reaction\","
                  "\"reaction\":{\"message_id\":\"wamid.X\","
                  "\"emoji\":\"\\ud83d\\ude00\"}}",
                  "reaction", 0, "reaction");
}


static void
test_text(void)
{
    char           *b;
    size_t          len;
    mw_send_req_t   req;
    mw_send_err_t   err;

    refused_s("{\"to\":\"16505551234\",\"type\":\"text\",\"text\":{}}",
              131008, "text.body is missing", "text without body");
    refused_s("{\"to\":\"16505551234\",\"type\":\"text\","
              "\"text\":{\"body\":42}}",
              131009, "text.body must be a string", "text.body a number");
    refused_s("{\"to\":\"16505551234\",\"type\":\"text\","
              "\"text\":{\"body\":\"\"}}",
              131009, "text.body is empty", "text.body empty");

    b = text_body("a", MW_TEXT_MAX, &len);
    accepted(&req, b, len, "4096 ASCII characters");
    mw_send_free(&req);
    free(b);

    b = text_body("a", MW_TEXT_MAX + 1, &len);
    refused(b, len, 400, 131009, "text.body is longer than 4096 characters",
            "4097 ASCII characters");
    free(b);

    /* two bytes each: 8192 bytes, still 4096 characters */
    b = text_body("\xc3\xa9", MW_TEXT_MAX, &len);
    ok(len > 2 * MW_TEXT_MAX, "4096 x e-acute is over 8192 bytes");
    accepted(&req, b, len, "4096 x e-acute (multi-byte) is allowed");
    mw_send_free(&req);
    free(b);

    b = text_body("\xc3\xa9", MW_TEXT_MAX + 1, &len);
    refused(b, len, 400, 131009, "text.body is longer than 4096 characters",
            "4097 x e-acute");
    free(b);

    /* the same, written as JSON escapes: counted after decoding */
    b = text_body("\\u00e9", MW_TEXT_MAX, &len);
    accepted(&req, b, len, "4096 x \\u00e9 escapes");
    mw_send_free(&req);
    free(b);

    /* four bytes each (outside the BMP), as a surrogate pair escape */
    b = text_body("\\ud83d\\ude00", MW_TEXT_MAX, &len);
    accepted(&req, b, len, "4096 emoji are 4096 characters");
    mw_send_free(&req);
    free(b);

    b = text_body("\xf0\x9f\x98\x80", MW_TEXT_MAX + 1, &len);
    refused(b, len, 400, 131009, "text.body is longer than 4096 characters",
            "4097 emoji");
    free(b);

    /* an escaped NUL is a character too */
    b = text_body("\\u0000", MW_TEXT_MAX + 1, &len);
    refused(b, len, 400, 131009, "text.body is longer than 4096 characters",
            "4097 escaped NULs");
    free(b);

    /* a long body is refused without being quoted */
    b = text_body("secret ", 1000, &len);
    mw_send_parse(&req, b, len, &err);
    ok(strstr(err.message, "secret") == NULL,
       "the over-long body is not quoted");
    mw_send_free(&req);
    free(b);

    /* invalid UTF-8 inside the body: not JSON as jansson reads it */
    refused_s("{\"to\":\"16505551234\",\"type\":\"text\","
              "\"text\":{\"body\":\"\xc3\"}}",
              MW_GRAPH_PARAM_INVALID, NULL, "text.body with invalid UTF-8");
}


static void
test_template(void)
{
    accepted_type("{\"messaging_product\":\"whatsapp\","
                  "\"to\":\"16505551234\",\"type\":\"template\","
                  "\"template\":{\"name\":\"hello_world\","
                  "\"language\":{\"code\":\"en_US\"}}}",
                  "template", 1, "a template");
    accepted_type("{\"to\":\"16505551234\",\"type\":\"template\","
                  "\"template\":{\"name\":\"order\","
                  "\"language\":{\"code\":\"de\","
                  "\"policy\":\"deterministic\"},"
                  "\"components\":[{\"type\":\"body\",\"parameters\":"
                  "[{\"type\":\"text\",\"text\":\"42\"}]}]}}",
                  "template", 1, "a template with components");

    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"language\":{\"code\":\"en_US\"}}}",
              131008, "template.name is missing", "template without name");
    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"name\":1,\"language\":{\"code\":\"en_US\"}}}",
              131009, "template.name must be a string",
              "template.name a number");
    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"name\":\"\",\"language\":{\"code\":\"en\"}}}",
              131009, "template.name is empty", "template.name empty");
    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"name\":\"hello_world\"}}",
              131008, "template.language is missing",
              "template without language");
    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"name\":\"hello_world\",\"language\":\"en\"}}",
              131009, "template.language must be an object",
              "template.language a string");
    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"name\":\"hello_world\",\"language\":{}}}",
              131008, "template.language.code is missing",
              "template.language without code");
    refused_s("{\"to\":\"16505551234\",\"type\":\"template\","
              "\"template\":{\"name\":\"hello_world\","
              "\"language\":{\"code\":[]}}}",
              131009, "template.language.code must be a string",
              "template.language.code an array");
}


static void
test_media(void)
{
    size_t       i;
    char         body[256], msg[128];
    const char  *media[] = { "image", "audio", "video", "document",
                             "sticker" };

    for (i = 0; i < sizeof(media) / sizeof(media[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"to\":\"16505551234\",\"type\":\"%s\","
                 "\"%s\":{\"id\":\"1234567890\"}}", media[i], media[i]);
        accepted_type(body, media[i], 0, media[i]);

        snprintf(body, sizeof(body),
                 "{\"to\":\"16505551234\",\"type\":\"%s\","
                 "\"%s\":{\"link\":\"https://example.com/f\"}}",
                 media[i], media[i]);
        accepted_type(body, media[i], 0, media[i]);

        snprintf(body, sizeof(body),
                 "{\"to\":\"16505551234\",\"type\":\"%s\","
                 "\"%s\":{\"caption\":\"c\"}}", media[i], media[i]);
        snprintf(msg, sizeof(msg), "%s.id or %s.link is missing",
                 media[i], media[i]);
        refused_s(body, 131008, msg, media[i]);
    }

    refused_s("{\"to\":\"16505551234\",\"type\":\"image\","
              "\"image\":{\"id\":1234567890}}",
              131009, "image.id must be a string", "image.id a number");
    refused_s("{\"to\":\"16505551234\",\"type\":\"document\","
              "\"document\":{\"link\":\"\"}}",
              131009, "document.link is empty", "document.link empty");
    refused_s("{\"to\":\"16505551234\",\"type\":\"video\","
              "\"video\":{\"id\":\"1\",\"link\":null}}",
              131009, "video.link must be a string",
              "video with a good id and a null link");
}


static void
test_messages_fit(void)
{
    mw_send_req_t  req;
    mw_send_err_t  err;
    char           body[512];

    /* the longest message: the list of types, well inside the buffer */
    snprintf(body, sizeof(body), "{\"to\":\"16505551234\",\"type\":\"x\"}");
    mw_send_parse(&req, body, strlen(body), &err);
    ok(strlen(err.message) < sizeof(err.message) - 1,
       "the longest message is not truncated");
    mw_send_free(&req);
}


/* ---------------------------------------------------------------------- */
/* Graph-style error body                                                  */

static void
test_graph_error(void)
{
    char        *s;
    size_t       len;
    json_t      *j, *e, *d;
    json_error_t je;

    s = mw_graph_error(131047, "OAuthException", "Re-engagement message",
                       "window closed", &len);

    is_str(s, "{\"error\":{\"message\":\"Re-engagement message\","
              "\"type\":\"OAuthException\",\"code\":131047,"
              "\"error_data\":{\"messaging_product\":\"whatsapp\","
              "\"details\":\"window closed\"}}}",
           "the documented shape, compact");
    is_int(len, s ? strlen(s) : 0, "length returned");
    mw_json_free(s);

    s = mw_graph_error(131009, NULL, "say \"hi\"\n\\ \x01 \xc3\xa9",
                       "tab\there </script>", &len);
    ok(s != NULL, "escapes needed");
    ok(s && strchr(s, '\n') == NULL && strchr(s, '\x01') == NULL,
       "one line, no raw control characters");

    j = s ? json_loadb(s, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    ok(j != NULL, "parses back");

    e = json_object_get(j, "error");
    d = json_object_get(e, "error_data");
    is_str(json_string_value(json_object_get(e, "message")),
           "say \"hi\"\n\\ \x01 \xc3\xa9", "message round-trips");
    is_str(json_string_value(json_object_get(e, "type")), "OAuthException",
           "type defaults to OAuthException");
    is_int(json_integer_value(json_object_get(e, "code")), 131009, "code");
    is_str(json_string_value(json_object_get(d, "messaging_product")),
           "whatsapp", "error_data.messaging_product");
    is_str(json_string_value(json_object_get(d, "details")),
           "tab\there </script>", "details round-trip");
    is_int(json_object_size(e), 4, "error has exactly 4 members");
    json_decref(j);
    mw_json_free(s);

    s = mw_graph_error(100, "OAuthException", "m", NULL, &len);
    is_str(s, "{\"error\":{\"message\":\"m\",\"type\":\"OAuthException\","
              "\"code\":100,\"error_data\":{\"messaging_product\":"
              "\"whatsapp\"}}}", "no details: the member is left out");
    mw_json_free(s);

    /* bytes that are not UTF-8 cannot make the body invalid */
    s = mw_graph_error(2, "OAuthException", "bad \xff\xfe bytes", "\xc3",
                       &len);
    ok(s != NULL, "invalid UTF-8 still gives a body");
    j = s ? json_loadb(s, len, 0, &je) : NULL;
    e = json_object_get(j, "error");
    is_str(json_string_value(json_object_get(e, "message")), "bad ?? bytes",
           "invalid bytes replaced");
    is_str(json_string_value(json_object_get(json_object_get(e, "error_data"),
                                             "details")),
           "?", "in details too");
    json_decref(j);
    mw_json_free(s);

    s = mw_graph_error(-1, "", NULL, NULL, NULL);
    ok(s != NULL && strstr(s, "\"message\":\"\"") != NULL
       && strstr(s, "\"code\":-1") != NULL,
       "NULL message and len are accepted");
    mw_json_free(s);
}


/* ---------------------------------------------------------------------- */
/* help-desk rules                                                         */

static void
state(mw_contact_state_t *cs, int64_t window, int64_t session,
    int64_t counted, int optin)
{
    cs->window = window;
    cs->session = session;
    cs->counted = counted;
    cs->optin = optin;
}


static void
limits(mw_limits_t *lim, int64_t limit, int64_t used, int64_t daily,
    int64_t daily_used, int optin)
{
    lim->limit = limit;
    lim->used = used;
    lim->daily_limit = daily;
    lim->daily_used = daily_used;
    lim->require_optin = optin;
}


#define is_decision(d, v, c, b, s, what)                                    \
    do {                                                                    \
        is_int((d).verdict, v, "%s: verdict", what);                        \
        ok((d).conversation == (c) && (d).business_initiated == (b)         \
           && (d).session == (s),                                           \
           "%s: counts conversation=%d business=%d session=%d", what,       \
           c, b, s);                                                        \
    } while (0)


static void
test_decide_window(void)
{
    int64_t             session;
    mw_limits_t         lim;
    mw_send_decision_t  d;
    mw_contact_state_t  cs;

    limits(&lim, 1000, 10, 50, 0, 0);
    session = NOW - 2 * HOUR;

    /* the contact wrote 2 h ago: window open until 22 h from now */
    state(&cs, session + MW_WINDOW_SECONDS, session, 0, MW_OPTIN_NONE);
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "open window, first business message");

    /* the glue records counted = session when the send succeeded */
    cs.counted = session;
    mw_send_decide(&cs, &lim, 0, NOW + 60, &d);
    is_decision(d, MW_SEND_ALLOW, 0, 0, 0,
                "second message of the same session");

    mw_send_decide(&cs, &lim, 1, NOW + 120, &d);
    is_decision(d, MW_SEND_ALLOW, 0, 0, 0,
                "a template inside a counted session counts nothing");

    /* the window closes: text refused, whatever was counted */
    mw_send_decide(&cs, &lim, 0, session + MW_WINDOW_SECONDS, &d);
    is_decision(d, MW_SEND_WINDOW_CLOSED, 0, 0, 0,
                "closed at expiry, text: 131047");
    mw_send_decide(&cs, &lim, 0, session + MW_WINDOW_SECONDS - 1, &d);
    is_decision(d, MW_SEND_ALLOW, 0, 0, 0, "one second before expiry");

    /* the contact writes again after the close: a new session */
    cs.window = NOW + 2 * MW_WINDOW_SECONDS;
    cs.session = NOW + MW_WINDOW_SECONDS;
    mw_send_decide(&cs, &lim, 0, NOW + MW_WINDOW_SECONDS + 10, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "a new session after the window reopened counts again");

    /* never written */
    state(&cs, 0, 0, 0, MW_OPTIN_NONE);
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_WINDOW_CLOSED, 0, 0, 0,
                "no window ever: text refused");

    /* every free-form type is refused the same way: only is_template */
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0,
                "closed window, template: a business-initiated conversation");

    /* an open template inside an uncounted session is the session's one */
    state(&cs, NOW + HOUR, NOW - 23 * HOUR, 0, MW_OPTIN_NONE);
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "template as the first message of an open session");
}


static void
test_decide_limits(void)
{
    int64_t             session;
    mw_limits_t         lim;
    mw_send_decision_t  d;
    mw_contact_state_t  cs;

    session = NOW - HOUR;

    /* the daily cap of an unverified business */
    state(&cs, NOW - 10, NOW - 10 - MW_WINDOW_SECONDS, 0, MW_OPTIN_NONE);
    limits(&lim, 0, 0, 50, 49, 0);
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0, "49 business-initiated today");

    lim.daily_used = 50;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_DAILY_LIMIT, 0, 0, 0,
                "50 business-initiated today: refused");

    lim.daily_used = 70;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_DAILY_LIMIT, 0, 0, 0, "over the cap: refused");

    lim.daily_limit = 0;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0,
                "verified business (daily 0): no cap");

    /* the daily cap is for business-initiated conversations only */
    state(&cs, session + MW_WINDOW_SECONDS, session, 0, MW_OPTIN_NONE);
    limits(&lim, 0, 0, 50, 50, 0);
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "daily cap reached, user-initiated session still counts");

    /* the monthly limit, inside an open window */
    limits(&lim, 1000, 999, 0, 0, 0);
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1, "999 of 1000 used");

    lim.used = 1000;
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_LIMIT, 0, 0, 0,
                "1000 of 1000: refused even inside an open window");

    cs.counted = session;
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 0, 0, 0,
                "limit reached, session already counted: allowed");

    lim.used = 5000;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 0, 0, 0,
                "far over the limit, counted session, template: allowed");

    /* limit 0 is unlimited */
    state(&cs, session + MW_WINDOW_SECONDS, session, 0, MW_OPTIN_NONE);
    limits(&lim, 0, 1000000, 0, 1000000, 0);
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1, "limit 0: unlimited (session)");
    cs.window = 0;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0,
                "limit 0, daily 0: unlimited (business-initiated)");

    /* a closed window with the monthly limit reached */
    limits(&lim, 1000, 1000, 50, 0, 0);
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_LIMIT, 0, 0, 0,
                "template over the monthly limit");

    /* both limits reached: the period's limit, which resets last */
    lim.daily_used = 50;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_LIMIT, 0, 0, 0,
                "both limits reached: the monthly one is named");

    /* a closed window with text: the window, not the limits */
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_WINDOW_CLOSED, 0, 0, 0,
                "text, window closed, limits reached: the window is named");
}


static void
test_decide_optin(void)
{
    int64_t             session;
    mw_limits_t         lim;
    mw_send_decision_t  d;
    mw_contact_state_t  cs;

    state(&cs, 0, 0, 0, MW_OPTIN_NONE);
    limits(&lim, 1000, 0, 50, 0, 1);

    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_NO_OPTIN, 0, 0, 0,
                "opt-in required, none recorded");

    cs.optin = MW_OPTIN_IN;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0, "opted in");

    cs.optin = MW_OPTIN_OUT;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_OPTED_OUT, 0, 0, 0, "opted out (STOP)");

    /* the contact's choice comes before any limit */
    limits(&lim, 1000, 1000, 50, 50, 1);
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_OPTED_OUT, 0, 0, 0,
                "opted out and limits reached: the opt-out is named");
    cs.optin = MW_OPTIN_NONE;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_NO_OPTIN, 0, 0, 0,
                "no opt-in and limits reached: the opt-in is named");
    cs.optin = MW_OPTIN_IN;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_LIMIT, 0, 0, 0, "opted in, limits reached");

    /* opt-in is not required: STOP is the application's business */
    limits(&lim, 0, 0, 0, 0, 0);
    cs.optin = MW_OPTIN_OUT;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0,
                "opted out, opt-in not enforced: allowed");

    /* only business-initiated sends need it */
    session = NOW - HOUR;
    state(&cs, session + MW_WINDOW_SECONDS, session, 0, MW_OPTIN_OUT);
    limits(&lim, 0, 0, 0, 0, 1);
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "opted out, open window, reply: allowed");
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "opted out, open window, template: allowed");
    cs.optin = MW_OPTIN_NONE;
    mw_send_decide(&cs, &lim, 1, NOW, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "no opt-in, open window, template: allowed");

    /* a closed window and text: the window is the reason, not opt-in */
    cs.window = NOW;
    mw_send_decide(&cs, &lim, 0, NOW, &d);
    is_decision(d, MW_SEND_WINDOW_CLOSED, 0, 0, 0,
                "no opt-in, closed window, text: the window is named");
}


/* ---------------------------------------------------------------------- */
/* mw_session_advance (mw_rules.c)                                         */

static void
test_session_advance(void)
{
    int64_t  window, session;

    window = 0;
    session = 0;
    mw_session_advance(&window, &session, NOW);
    is_int(window, NOW + MW_WINDOW_SECONDS, "first message opens a window");
    is_int(session, NOW, "and starts a session at the message");

    mw_session_advance(&window, &session, NOW + HOUR);
    is_int(window, NOW + HOUR + MW_WINDOW_SECONDS,
           "a message in the open window moves it forward");
    is_int(session, NOW, "and keeps the session");

    mw_session_advance(&window, &session, NOW + 10);
    is_int(window, NOW + HOUR + MW_WINDOW_SECONDS,
           "an older message does not move the window");
    is_int(session, NOW, "nor the session");

    mw_session_advance(&window, &session, NOW - 2 * MW_WINDOW_SECONDS);
    is_int(window, NOW + HOUR + MW_WINDOW_SECONDS,
           "a much older (retried) message moves nothing");
    is_int(session, NOW, "the session neither");

    mw_session_advance(&window, &session, NOW + HOUR + MW_WINDOW_SECONDS);
    is_int(window, NOW + HOUR + 2 * MW_WINDOW_SECONDS,
           "a message at the instant the window closed reopens it");
    is_int(session, NOW + HOUR + MW_WINDOW_SECONDS,
           "and starts a new session");

    mw_session_advance(&window, &session, NOW + 5 * MW_WINDOW_SECONDS);
    is_int(window, NOW + 6 * MW_WINDOW_SECONDS,
           "a message days after the close");
    is_int(session, NOW + 5 * MW_WINDOW_SECONDS, "restarts the session");

    /* closed by Meta's refusal: window and session at the refusal */
    window = NOW + 5 * MW_WINDOW_SECONDS + HOUR;
    session = window;
    mw_session_advance(&window, &session, NOW + 5 * MW_WINDOW_SECONDS + 10);
    is_int(window, NOW + 5 * MW_WINDOW_SECONDS + HOUR,
           "a window closed by a refusal: an older message does not reopen "
           "it");
    is_int(session, NOW + 5 * MW_WINDOW_SECONDS + HOUR,
           "nor start a session");
    mw_session_advance(&window, &session, NOW + 5 * MW_WINDOW_SECONDS + HOUR);
    is_int(window, NOW + 6 * MW_WINDOW_SECONDS + HOUR,
           "a message at the refusal's instant reopens it");
    is_int(session, NOW + 5 * MW_WINDOW_SECONDS + HOUR,
           "in a session of its own");
}


/* The whole cycle, as the glue drives it: inbound, reply, reply, close. */

static void
test_cycle(void)
{
    int64_t             t;
    mw_limits_t         lim;
    mw_send_decision_t  d;
    mw_contact_state_t  cs;

    memset(&cs, 0, sizeof(cs));
    limits(&lim, 1000, 0, 50, 0, 0);

    t = NOW;
    mw_session_advance(&cs.window, &cs.session, t);

    mw_send_decide(&cs, &lim, 0, t + 60, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1, "cycle: first reply counts");
    cs.counted = cs.session;
    lim.used++;

    /* the contact writes again inside the window: same session */
    mw_session_advance(&cs.window, &cs.session, t + HOUR);
    mw_send_decide(&cs, &lim, 0, t + HOUR + 60, &d);
    is_decision(d, MW_SEND_ALLOW, 0, 0, 0,
                "cycle: reply after the contact's second message");

    /* the window closes; a template re-engages */
    t += HOUR + MW_WINDOW_SECONDS;
    mw_send_decide(&cs, &lim, 0, t, &d);
    is_decision(d, MW_SEND_WINDOW_CLOSED, 0, 0, 0, "cycle: closed");
    mw_send_decide(&cs, &lim, 1, t, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 1, 0, "cycle: template re-engages");
    lim.used++;
    lim.daily_used++;

    /* the contact answers the template: a new session, counted again */
    mw_session_advance(&cs.window, &cs.session, t + 600);
    mw_send_decide(&cs, &lim, 0, t + 660, &d);
    is_decision(d, MW_SEND_ALLOW, 1, 0, 1,
                "cycle: reply in the session the template opened");
    is_int(lim.used, 2, "cycle: two conversations so far");
}


int
main(void)
{
    json_set_alloc_funcs(tagged_malloc, tagged_free);

    test_not_json();
    test_envelope();
    test_to();
    test_type();
    test_type_objects();
    test_text();
    test_template();
    test_media();
    test_messages_fit();
    test_graph_error();
    test_decide_window();
    test_decide_limits();
    test_decide_optin();
    test_session_advance();
    test_cycle();

    is_int(tagged_live, 0, "every jansson allocation released");

    return done_testing();
}
