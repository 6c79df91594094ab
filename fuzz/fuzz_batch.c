/*
 * libFuzzer target: a whole delivery through parse, normalize, classify,
 * dump and free, as the webhook runs it after the signature check.
 *
 * Build and run:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Isrc \
 *       fuzz/fuzz_batch.c src/mw_*.c -ljansson -lcrypto -o build/fuzz_batch
 *   build/fuzz_batch -max_total_time=60 -max_len=65536 fuzz/corpus-batch
 *
 * (-fno-sanitize-recover: undefined behaviour stops the run instead of
 * scrolling by in the log.)
 *
 * Besides the sanitizers' findings, it checks what the application relies
 * on: a dump is one line, its length is right, it parses back with one
 * event per update, and a quarantined message's content is not in it.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


#define FUZZ_NOW   1700000000


static int
fuzz_match(void *data, const char *text, size_t len, size_t *start,
    size_t *end, const char **name)
{
    size_t  i;

    (void) data;

    /* an operator rule: the word "phish" anywhere */
    for (i = 0; i + 5 <= len; i++) {
        if (memcmp(text + i, "phish", 5) == 0) {
            *start = i;
            *end = i + 5;
            *name = "phish_rule";
            return 1;
        }
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                    rc;
    char                  *out;
    size_t                 i, len;
    json_t                *back;
    mw_batch_t             b;
    mw_update_t           *u;
    unsigned char         *skip;
    mw_quarantine_conf_t   qc;

    memset(&qc, 0, sizeof(qc));
    qc.detectors = MW_DETECT_ALL;
    qc.match = fuzz_match;

    /* the first byte chooses whether quarantine is on at all */
    rc = mw_batch_parse(&b, (const char *) data, size,
                        (size && (data[0] & 1)) ? &qc : NULL, FUZZ_NOW);

    if (rc != MW_BATCH_OK) {
        if (b.nupdates != 0 || b.error[0] == '\0') {
            abort();
        }

        mw_batch_free(&b);
        return 0;
    }

    for (i = 0; i < b.nupdates; i++) {
        u = &b.updates[i];

        if (u->event == NULL || u->phone_number_id == NULL
            || memchr(u->contact, '\0', MW_CONTACT_MAX) == NULL)
        {
            abort();
        }

        if (u->cls == MW_CLASS_QUARANTINED
            && json_object_get(u->event, "content") != NULL)
        {
            abort();
        }

        if (i % 2 == 0 && u->kind == MW_KIND_MESSAGE && u->contact[0]) {
            mw_event_set_window(u, u->window_from + MW_WINDOW_SECONDS);
        }
    }

    out = mw_batch_dump(&b, NULL, &len);

    if (out) {
        if (strlen(out) != len || memchr(out, '\n', len)
            || memchr(out, '\r', len))
        {
            abort();
        }

        back = json_loadb(out, len, JSON_ALLOW_NUL, NULL);

        if (back == NULL
            || json_array_size(json_object_get(back, "events"))
               != b.nupdates)
        {
            abort();
        }

        json_decref(back);
        free(out);
    }

    /* and with every other update skipped */
    skip = calloc(b.nupdates ? b.nupdates : 1, 1);

    if (skip) {
        for (i = 0; i < b.nupdates; i += 2) {
            skip[i] = 1;
        }

        out = mw_batch_dump(&b, skip, &len);
        free(out);
        free(skip);
    }

    mw_batch_free(&b);

    return 0;
}
