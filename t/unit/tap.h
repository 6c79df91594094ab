/*
 * A minimal TAP producer for the core's unit tests, so that prove runs
 * them beside the Perl tests and one summary line covers both.
 */

#ifndef TAP_H_INCLUDED
#define TAP_H_INCLUDED

#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <inttypes.h>

static int  tap_n;
static int  tap_failed;

#define ok(cond, ...)                                                      \
    tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define is_int(got, want, ...)                                             \
    do {                                                                   \
        int64_t g_ = (int64_t) (got), w_ = (int64_t) (want);               \
        if (!ok(g_ == w_, __VA_ARGS__)) {                                  \
            printf("#   got %" PRId64 ", want %" PRId64 "\n", g_, w_);     \
        }                                                                  \
    } while (0)

#define is_str(got, want, ...)                                             \
    do {                                                                   \
        const char *g_ = (got), *w_ = (want);                              \
        if (!ok(g_ && w_ ? strcmp(g_, w_) == 0 : g_ == w_, __VA_ARGS__)) { \
            printf("#   got '%s', want '%s'\n", g_ ? g_ : "(null)",        \
                   w_ ? w_ : "(null)");                                    \
        }                                                                  \
    } while (0)

static int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#include <stdarg.h>

static int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list  ap;

    printf("%s %d - ", pass ? "ok" : "not ok", ++tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");

    if (!pass) {
        tap_failed++;
        printf("#   failed at %s line %d\n", file, line);
    }

    return pass;
}

static int
done_testing(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif /* TAP_H_INCLUDED */
