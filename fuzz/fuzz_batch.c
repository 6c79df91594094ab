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
 * event per update, each the one mw_update_event() gives and carrying the
 * update's id, and a quarantined message's content is not in it.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mw_core.h"


#define FUZZ_NOW   1700000000


/*
 * jansson's allocator as the nginx glue installs one, the unit tests' own:
 * its free() takes only what its malloc() returned, so core memory
 * released the wrong way (plain free() of a jansson block, or the
 * reverse) aborts here.
 */
#include "../t/unit/tagged_alloc.h"


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    json_set_alloc_funcs(tagged_malloc, tagged_free);

    return 0;
}


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
    json_t                *back, *events, *ev, *id;
    mw_batch_t             b;
    mw_update_t           *u;
    unsigned char         *skip;
    mw_quarantine_conf_t   qc;

    memset(&qc, 0, sizeof(qc));
    qc.detectors = MW_DETECT_ALL;
    qc.match = fuzz_match;

    /* the first byte chooses whether quarantine is on at all */
    /*
     * the first byte chooses whether quarantine is on at all, and whether
     * the fast reader goes first
     */
    rc = mw_batch_parse(&b, (const char *) data, size,
                        (size && (data[0] & 2)) ? MW_JSON_FAST : 0,
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

        if (u->phone_number_id == NULL || u->id == NULL
            || memchr(u->contact, '\0', MW_CONTACT_MAX) == NULL)
        {
            abort();
        }

        if (u->cls == MW_CLASS_QUARANTINED) {
            ev = mw_update_event(&b, i);

            if (ev == NULL || json_object_get(ev, "content") != NULL) {
                abort();
            }

            json_decref(ev);
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
        events = json_object_get(back, "events");

        if (back == NULL || json_array_size(events) != b.nupdates) {
            abort();
        }

        /* each event is what mw_update_event() reads back, and has its id */
        for (i = 0; i < b.nupdates; i++) {
            ev = mw_update_event(&b, i);
            id = json_object_get(ev, "id");

            if (!json_equal(ev, json_array_get(events, i))
                || json_string_length(id) != b.updates[i].id_len
                || memcmp(json_string_value(id), b.updates[i].id,
                          b.updates[i].id_len) != 0)
            {
                abort();
            }

            json_decref(ev);
        }

        json_decref(back);
        mw_json_free(out);
    }

    /* and with every other update skipped */
    skip = calloc(b.nupdates ? b.nupdates : 1, 1);

    if (skip) {
        for (i = 0; i < b.nupdates; i += 2) {
            skip[i] = 1;
        }

        out = mw_batch_dump(&b, skip, &len);
        mw_json_free(out);
        free(skip);
    }

    mw_batch_free(&b);

    return 0;
}
