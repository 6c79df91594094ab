/*
 * core-bench: the core's CPU per delivery, without nginx, sockets or
 * state, so that a change to parsing, classification or the dump can be
 * measured in seconds and profiled with perf or callgrind.
 *
 * Build (from the repository root):
 *
 *   cc -O2 -Isrc bench/core_bench.c src/mw_*.c -ljansson -lcrypto \
 *       -o build/core_bench
 *
 * Run:
 *
 *   build/core_bench [-n SINGLE] [-m BATCHES] [-r ROUNDS] [-a] [-f]
 *       [-s | -b] [-p | -d]
 *
 *   -n  single-message deliveries per round (default 200000)
 *   -m  1000-update deliveries per round (default 200)
 *   -r  rounds; the best round is reported (default 5)
 *   -a  give jansson an arena allocator (json_set_alloc_funcs) that frees
 *       a whole delivery at once, as the nginx glue can with a request's
 *       pool; the batch is then released with mw_batch_drop()
 *   -f  parse with the fast reader first (MW_JSON_FAST, the glue's
 *       meta_webhook_json_reader fast)
 *   -s  only the single-message cases; -b only the batch cases
 *   -p  only the parse cases; -d only the parse+dump cases
 *
 * Where perf events are available, it also prints the instructions
 * retired per delivery or update, steadier than the time on a shared
 * machine.  Where they are not (a VM without a PMU), count them with
 * callgrind, which this program keeps quick enough for:
 *
 *   valgrind --tool=callgrind --collect-atstart=no \
 *       --toggle-collect=bench_case build/core_bench -n 2000 -m 2 -r 1 -s -p
 *
 * (Ir over the -n runs plus the warm-up's min(-n, 256) ones.)
 *
 * The deliveries are those bench/gen.js makes (and so what bench/run.sh
 * sends): Meta's shape and escaping, a text message from one of 5000
 * contacts with a distinct wamid, and for the batch 10 entries x 100
 * changes, 800 text messages and 200 delivered/read statuses with
 * conversation and pricing.  Quarantine detectors are on, as by default.
 *
 * Cases: "parse" is mw_batch_parse() + free, what a request costs when
 * $meta_webhook_events is not read; "parse+dump" adds mw_batch_dump().
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#endif

#include "mw_core.h"


#define BENCH_NOW        1795387600
/*
 * Distinct single deliveries, cycled: few enough to stay in the cache, as
 * a body nginx has just read does.
 */
#define BENCH_DISTINCT   256
#define BENCH_BATCHES    4          /* distinct 1000-update deliveries */
#define BENCH_UPDATES    1000


/* gen.js's texts and names, escaped as Meta escapes them */
static const char *const  bench_texts[] = {
    "Does it come in another color?",
    "Hi! Is my order #4821 shipped yet? https:\\/\\/example.com\\/o\\/4821",
    "Ol\\u00e1, voc\\u00eas entregam no s\\u00e1bado? \\ud83d\\ude0a",
    "I need to change my delivery address to 12 Baker St \\/ flat 3",
    "Thanks, that worked \\ud83d\\udc4d",
    "Can I pay 50\\u0025 now and the rest on delivery?",
    "ok",
    "Where can I find the invoice for last month? My email is "
        "ravi\\u0040example.com",
};

static const char *const  bench_names[] = {
    "Sheena Nelson", "Jo\\u00e3o Gon\\u00e7alves", "Ana Mar\\u00eda",
    "Ravi Kumar", "Zo\\u00eb M\\u00fcller", "Kenji Sato", "Fatima Zahra",
    "Li Wei"
};

#define BENCH_HEAD                                                          \
    "{\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":"          \
    "{\"display_phone_number\":\"15550783881\",\"phone_number_id\":"        \
    "\"106540352242922\"},"


typedef struct {
    char    *buf;
    size_t   len;
} bench_doc_t;


/* the arena: one chunk list, reset after each delivery */

typedef struct bench_chunk_s  bench_chunk_t;

struct bench_chunk_s {
    bench_chunk_t  *next;
    size_t          size;
    size_t          used;
};

static bench_chunk_t  *arena;
static size_t          arena_peak;


static void *
arena_malloc(size_t size)
{
    size_t          n;
    void           *p;
    bench_chunk_t  *c;

    size = (size + 15) & ~(size_t) 15;

    if (arena == NULL || arena->used + size > arena->size) {
        n = size > 65536 ? size : 65536;

        c = malloc(sizeof(bench_chunk_t) + 16 + n);
        if (c == NULL) {
            return NULL;
        }

        c->next = arena;
        c->size = n;
        c->used = 0;
        arena = c;
    }

    p = (char *) arena + ((sizeof(bench_chunk_t) + 15) & ~(size_t) 15)
        + arena->used;
    arena->used += size;

    return p;
}


static void
arena_free(void *p)
{
    (void) p;
}


static void
arena_reset(void)
{
    size_t          total;
    bench_chunk_t  *c, *next;

    total = 0;

    /* keep the newest chunk: the next delivery reuses it */
    for (c = arena ? arena->next : NULL; c; c = next) {
        next = c->next;
        total += c->size;
        free(c);
    }

    if (arena) {
        total += arena->used;
        arena->next = NULL;
        arena->used = 0;
    }

    if (total > arena_peak) {
        arena_peak = total;
    }
}


static size_t
bench_message(char *p, size_t n)
{
    size_t  k;

    k = n % 5000;

    return sprintf(p, BENCH_HEAD
                   "\"contacts\":[{\"profile\":{\"name\":\"%s\"},"
                   "\"wa_id\":\"1650555%04zu\"}],\"messages\":[{\"from\":"
                   "\"1650555%04zu\",\"id\":\"wamid.HBgLMTY1MDU1NT%06zuVAgA"
                   "SGBRtYzliMzY5N2MwMDAw%012zu=\",\"timestamp\":\"%zu\","
                   "\"text\":{\"body\":\"%s\"},\"type\":\"text\"}]},"
                   "\"field\":\"messages\"}",
                   bench_names[n % 8], k, k, k, n,
                   (size_t) BENCH_NOW - 3600 + n % 3600, bench_texts[n % 8]);
}


static size_t
bench_status(char *p, size_t n)
{
    size_t  k;

    k = n % 5000;

    return sprintf(p, BENCH_HEAD
                   "\"statuses\":[{\"id\":\"wamid.HBgLMTY1MDU1NT%06zuVAgA"
                   "SGBRtYzliMzY5N2MwMDAw%012zu=\",\"status\":\"%s\","
                   "\"timestamp\":\"%zu\",\"recipient_id\":\"1650555%04zu\","
                   "\"conversation\":{\"id\":\"9960e31a30d55164d0aae9b9%08zx"
                   "\",\"origin\":{\"type\":\"service\"}},\"pricing\":"
                   "{\"billable\":true,\"pricing_model\":\"CBP\","
                   "\"category\":\"service\"}}]},\"field\":\"messages\"}",
                   k, n, (n % 2) ? "read" : "delivered",
                   (size_t) BENCH_NOW - 3600 + n % 3600, k, n);
}


static void
bench_make(bench_doc_t *d, size_t first, size_t updates)
{
    char    *p;
    size_t   i, j;

    d->buf = malloc(1024 + 1024 * updates);
    if (d->buf == NULL) {
        exit(2);
    }

    p = d->buf;
    p += sprintf(p, "{\"object\":\"whatsapp_business_account\",\"entry\":[");

    for (i = 0; i < updates; i += 100) {
        p += sprintf(p, "%s{\"id\":\"102290129340398\",\"changes\":[",
                     i ? "," : "");

        for (j = i; j < updates && j < i + 100; j++) {
            if (j > i) {
                *p++ = ',';
            }

            if (updates > 1 && j % 5 == 4) {
                p += bench_status(p, first + j);

            } else {
                p += bench_message(p, first + j);
            }
        }

        p += sprintf(p, "]}");
    }

    p += sprintf(p, "]}");
    d->len = p - d->buf;
}


/*
 * Instructions retired in user space, from the kernel's counter: on a
 * shared machine the time of a round varies with the neighbours' work,
 * the instructions hardly do.  -1 where perf events are not available
 * (a container, perf_event_paranoid 3).
 */
static int       bench_fd = -1;
static unsigned  bench_opts;       /* -f: MW_JSON_FAST */


static void
bench_counter_open(void)
{
#ifdef __linux__
    struct perf_event_attr  pe;

    memset(&pe, 0, sizeof(pe));
    pe.type = PERF_TYPE_HARDWARE;
    pe.size = sizeof(pe);
    pe.config = PERF_COUNT_HW_INSTRUCTIONS;
    pe.exclude_kernel = 1;
    pe.exclude_hv = 1;

    bench_fd = syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0);
#endif
}


static double
bench_instructions(void)
{
    uint64_t  n;

    if (bench_fd == -1 || read(bench_fd, &n, sizeof(n)) != sizeof(n)) {
        return -1;
    }

    return (double) n;
}


static double
bench_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}


static size_t  bench_sink;


/* one delivery: parse, optionally dump, release */
static void
bench_one(const bench_doc_t *d, const mw_quarantine_conf_t *qc, int dump,
    int use_arena)
{
    int             rc;
    char           *out;
    size_t          len;
    mw_batch_t      b;
    json_free_t     jfree;
    json_malloc_t   jmalloc;

    rc = mw_batch_parse(&b, d->buf, d->len, bench_opts, qc, BENCH_NOW);

    if (rc != MW_BATCH_OK) {
        fprintf(stderr, "core-bench: parse failed: %s\n", b.error);
        exit(1);
    }

    bench_sink += b.nupdates + b.updates[0].key[0];

    if (dump) {
        out = mw_batch_dump(&b, NULL, &len);

        if (out == NULL) {
            fprintf(stderr, "core-bench: dump failed\n");
            exit(1);
        }

        bench_sink += len;

        /* the dump comes from jansson's allocator */
        json_get_alloc_funcs(&jmalloc, &jfree);
        jfree(out);
    }

    if (use_arena) {
        /* the arena releases the document: no json_decref() walk */
        mw_batch_drop(&b);
        arena_reset();

    } else {
        mw_batch_free(&b);
    }
}


static double  bench_insns;     /* of the best round, per delivery */


/* not inlined: callgrind's --toggle-collect names it */
static double bench_case(const bench_doc_t *docs, size_t ndocs,
    size_t iters, size_t rounds, const mw_quarantine_conf_t *qc, int dump,
    int use_arena) __attribute__((noinline));


static double
bench_case(const bench_doc_t *docs, size_t ndocs, size_t iters,
    size_t rounds, const mw_quarantine_conf_t *qc, int dump, int use_arena)
{
    size_t  r, i;
    double  t, best, n;

    /* warm-up: caches, the allocator's free lists, lazy library init */
    for (i = 0; i < ndocs && i < iters; i++) {
        bench_one(&docs[i % ndocs], qc, dump, use_arena);
    }

    best = 0;

    for (r = 0; r < rounds; r++) {
        n = bench_instructions();
        t = bench_ns();

        for (i = 0; i < iters; i++) {
            bench_one(&docs[i % ndocs], qc, dump, use_arena);
        }

        t = (bench_ns() - t) / iters;

        if (n >= 0) {
            n = (bench_instructions() - n) / iters;
        }

        if (r == 0 || t < best) {
            best = t;
            bench_insns = n;
        }
    }

    return best;
}


static void
bench_print(const char *name, double t, size_t updates)
{
    char  insns[32];

    if (bench_insns >= 0) {
        snprintf(insns, sizeof(insns), "%.0f", bench_insns / updates);

    } else {
        snprintf(insns, sizeof(insns), "n/a");
    }

    printf("  %-18s %8.0f ns/%s  %10s instructions/%s\n", name,
           t / updates, updates > 1 ? "update  " : "delivery", insns,
           updates > 1 ? "update" : "delivery");
}


int
main(int argc, char **argv)
{
    int                    c, use_arena, only, what;
    size_t                 i, nsingle, nbatch, rounds, bytes;
    double                 t;
    bench_doc_t           *single, *batch;
    mw_quarantine_conf_t   qc;

    nsingle = 200000;
    nbatch = 200;
    rounds = 5;
    use_arena = 0;
    only = 0;
    what = 0;

    while ((c = getopt(argc, argv, "n:m:r:afsbpd")) != -1) {
        switch (c) {
        case 'n':
            nsingle = strtoul(optarg, NULL, 10);
            break;
        case 'm':
            nbatch = strtoul(optarg, NULL, 10);
            break;
        case 'r':
            rounds = strtoul(optarg, NULL, 10);
            break;
        case 'a':
            use_arena = 1;
            break;
        case 'f':
            bench_opts = MW_JSON_FAST;
            break;
        case 's':
            only = 's';
            break;
        case 'b':
            only = 'b';
            break;
        case 'p':
        case 'd':
            what = c;
            break;
        default:
            fprintf(stderr, "usage: core_bench [-n N] [-m M] [-r R] [-a] "
                            "[-f] [-s|-b] [-p|-d]\n");
            return 2;
        }
    }

    if (rounds == 0) {
        rounds = 1;
    }

    memset(&qc, 0, sizeof(qc));
    qc.detectors = MW_DETECT_ALL;

    if (use_arena) {
        json_set_alloc_funcs(arena_malloc, arena_free);
    }

    bench_counter_open();

    single = malloc(BENCH_DISTINCT * sizeof(bench_doc_t));
    batch = malloc(BENCH_BATCHES * sizeof(bench_doc_t));

    if (single == NULL || batch == NULL) {
        return 2;
    }

    bytes = 0;

    for (i = 0; i < BENCH_DISTINCT; i++) {
        bench_make(&single[i], i, 1);
        bytes += single[i].len;
    }

    printf("core-bench: %s allocator, best of %zu rounds\n",
           use_arena ? "arena" : "malloc", rounds);

    if (only != 'b' && nsingle) {
        printf("single: %zu-byte deliveries (mean), %zu per round\n",
               bytes / BENCH_DISTINCT, nsingle);

        if (what != 'd') {
            t = bench_case(single, BENCH_DISTINCT, nsingle, rounds, &qc, 0,
                           use_arena);
            bench_print("single parse", t, 1);
        }

        if (what != 'p') {
            t = bench_case(single, BENCH_DISTINCT, nsingle, rounds, &qc, 1,
                           use_arena);
            bench_print("single parse+dump", t, 1);
        }
    }

    if (only != 's' && nbatch) {
        bytes = 0;

        for (i = 0; i < BENCH_BATCHES; i++) {
            bench_make(&batch[i], 100000 + i * BENCH_UPDATES, BENCH_UPDATES);
            bytes += batch[i].len;
        }

        printf("batch: %zu-byte deliveries of %d updates, %zu per round\n",
               bytes / BENCH_BATCHES, BENCH_UPDATES, nbatch);

        if (what != 'd') {
            t = bench_case(batch, BENCH_BATCHES, nbatch, rounds, &qc, 0,
                           use_arena);
            bench_print("batch parse", t, BENCH_UPDATES);
        }

        if (what != 'p') {
            t = bench_case(batch, BENCH_BATCHES, nbatch, rounds, &qc, 1,
                           use_arena);
            bench_print("batch parse+dump", t, BENCH_UPDATES);
        }
    }

    if (use_arena) {
        printf("arena: %zu bytes at most per delivery\n", arena_peak);
    }

    /* keeps the compiler from proving the work useless */
    return bench_sink == 1 ? 3 : 0;
}
