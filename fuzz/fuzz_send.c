/*
 * libFuzzer target: a send-message request through validation, the
 * Graph-style error body and the help-desk rules, as the send path runs
 * them before anything reaches Meta.
 *
 * Build and run:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Isrc \
 *       fuzz/fuzz_send.c src/mw_*.c -ljansson -lcrypto -o build/fuzz_send
 *   build/fuzz_send -max_total_time=60 build/fuzz/corpus-send
 *
 * The shared corpus holds webhook deliveries, not send requests, so an
 * input whose first byte is below 4 is spliced into a valid request
 * instead of parsed as it is: as the text body, as "to", or as the rest
 * of the object.  The deep checks are then reached from the first run.
 *
 * Besides the sanitizers' findings, it checks what the glue relies on: an
 * accepted request has a known type, a normalized contact and a text body
 * within the limit; a refused one keeps nothing, has a known status and
 * code, and its error body parses back; a refusal counts nothing.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


#define FUZZ_NOW   1700000000


static const char *const  fuzz_types[] = {
    "text", "image", "audio", "video", "document", "sticker", "location",
    "contacts", "interactive", "template", "reaction", NULL
};


static char *
fuzz_splice(const uint8_t *data, size_t size, size_t *len)
{
    char        *buf;
    size_t       hl, tl;
    const char  *head, *tail;

    switch (data[0]) {

    case 0:
        head = "{\"messaging_product\":\"whatsapp\",\"to\":\"16505551234\","
               "\"type\":\"text\",\"text\":{\"body\":\"";
        tail = "\"}}";
        break;

    case 1:
        head = "{\"to\":\"";
        tail = "\",\"type\":\"template\",\"template\":{\"name\":\"a\","
               "\"language\":{\"code\":\"en\"}}}";
        break;

    case 2:
        head = "{\"to\":\"US.13491208655302741918\",";
        tail = "}";
        break;

    default:
        head = "{\"to\":\"+1 650 555 1234\",\"type\":\"";
        tail = "\",\"image\":{\"id\":\"1\"},\"template\":{}}";
        break;
    }

    hl = strlen(head);
    tl = strlen(tail);

    buf = malloc(hl + size - 1 + tl);
    if (buf == NULL) {
        return NULL;
    }

    memcpy(buf, head, hl);
    memcpy(buf + hl, data + 1, size - 1);
    memcpy(buf + hl + size - 1, tail, tl);

    *len = hl + size - 1 + tl;

    return buf;
}


static void
fuzz_check_accepted(const mw_send_req_t *req)
{
    size_t       i, n, len;
    json_t      *body;
    const char  *s;

    if (req->root == NULL || req->to == NULL || req->type == NULL
        || memchr(req->contact, '\0', MW_CONTACT_MAX) == NULL
        || req->contact[0] == '\0')
    {
        abort();
    }

    for (i = 0; fuzz_types[i]; i++) {
        if (strcmp(req->type, fuzz_types[i]) == 0) {
            break;
        }
    }

    if (fuzz_types[i] == NULL
        || req->is_template != (strcmp(req->type, "template") == 0))
    {
        abort();
    }

    if (strcmp(req->type, "text") == 0) {
        body = json_object_get(json_object_get(req->root, "text"), "body");

        if (!json_is_string(body)) {
            abort();
        }

        s = json_string_value(body);
        len = json_string_length(body);
        n = 0;

        for (i = 0; i < len; i++) {
            n += ((unsigned char) s[i] & 0xc0) != 0x80;
        }

        if (n == 0 || n > MW_TEXT_MAX) {
            abort();
        }
    }
}


static void
fuzz_check_refused(const mw_send_req_t *req, const mw_send_err_t *err,
    const uint8_t *data, size_t size)
{
    char    *out;
    size_t   len, dlen;
    char     details[64];
    json_t  *back;

    if (req->root != NULL || req->type != NULL
        || memchr(err->message, '\0', sizeof(err->message)) == NULL
        || err->message[0] == '\0'
        || !(err->status == 400 || err->status == 503)
        || !(err->code == MW_GRAPH_PARAM_INVALID || err->code == 131008
             || err->code == 131009 || err->code == 2))
    {
        abort();
    }

    /* arbitrary bytes as details: the body must stay valid JSON */
    dlen = size < sizeof(details) - 1 ? size : sizeof(details) - 1;
    memcpy(details, data, dlen);
    details[dlen] = '\0';

    out = mw_graph_error(err->code, "OAuthException", err->message,
                         details, &len);
    if (out == NULL) {
        return;
    }

    back = json_loadb(out, len, JSON_REJECT_DUPLICATES, NULL);

    if (back == NULL || strlen(out) != len
        || json_integer_value(json_object_get(json_object_get(back, "error"),
                                              "code"))
           != err->code)
    {
        abort();
    }

    json_decref(back);
    mw_json_free(out);
}


static void
fuzz_decide(const uint8_t *data, size_t size, int is_template)
{
    uint8_t             b[8];
    mw_limits_t         lim;
    mw_send_decision_t  d;
    mw_contact_state_t  cs;

    memset(b, 0, sizeof(b));
    memcpy(b, data, size < sizeof(b) ? size : sizeof(b));

    cs.window = FUZZ_NOW + (int64_t) (b[0] % 5) * 43200 - 86400;
    cs.session = FUZZ_NOW - (int64_t) (b[1] % 4) * 40000;
    cs.counted = FUZZ_NOW - (int64_t) (b[2] % 4) * 40000;
    cs.optin = b[3] % 3;

    lim.limit = b[4] % 4;
    lim.used = b[5] % 5;
    lim.daily_limit = b[6] % 3;
    lim.daily_used = b[7] % 4;
    lim.require_optin = b[3] & 0x80;

    mw_send_decide(&cs, &lim, is_template, FUZZ_NOW, &d);

    if (d.verdict != MW_SEND_ALLOW
        && (d.conversation || d.business_initiated || d.session))
    {
        abort();
    }

    if (d.conversation && lim.limit > 0 && lim.used >= lim.limit) {
        abort();
    }

    if (d.business_initiated
        && (d.session || mw_window_open(cs.window, FUZZ_NOW)
            || (lim.daily_limit > 0 && lim.daily_used >= lim.daily_limit)
            || (lim.require_optin && cs.optin != MW_OPTIN_IN)))
    {
        abort();
    }

    if (d.verdict == MW_SEND_WINDOW_CLOSED
        && (is_template || mw_window_open(cs.window, FUZZ_NOW)))
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             rc;
    char           *spliced;
    size_t          len;
    const char     *buf;
    mw_send_req_t   req;
    mw_send_err_t   err;

    spliced = NULL;
    buf = (const char *) data;
    len = size;

    if (size > 0 && data[0] < 4) {
        spliced = fuzz_splice(data, size, &len);
        if (spliced == NULL) {
            return 0;
        }

        buf = spliced;
    }

    rc = mw_send_parse(&req, buf, len, &err);

    if (rc == 0) {
        fuzz_check_accepted(&req);
        fuzz_decide(data, size, req.is_template);

    } else if (rc == -1) {
        fuzz_check_refused(&req, &err, data, size);

    } else {
        abort();
    }

    mw_send_free(&req);
    mw_send_free(&req);

    free(spliced);

    return 0;
}
