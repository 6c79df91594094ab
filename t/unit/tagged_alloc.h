/*
 * A jansson allocator for the unit tests, as the nginx glue installs one:
 * its free() accepts only what its malloc() returned, so a core result
 * released with plain free(), or plain malloc()ed memory given to
 * mw_json_free(), fails (ASan reports the former, the tag check the
 * latter).  tagged_live counts the blocks not yet released.
 */

#ifndef TAGGED_ALLOC_H_INCLUDED
#define TAGGED_ALLOC_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

#define TAG        0x6d776a73u

static size_t  tagged_live;


static void *
tagged_malloc(size_t size)
{
    unsigned char  *p;

    p = malloc(size + 16);
    if (p == NULL) {
        return NULL;
    }

    *(unsigned *) p = TAG;
    tagged_live++;

    return p + 16;
}


static void
tagged_free(void *ptr)
{
    unsigned char  *p;

    if (ptr == NULL) {
        return;
    }

    p = (unsigned char *) ptr - 16;

    if (*(unsigned *) p != TAG) {
        printf("# jansson's free() got memory it did not allocate\n");
        abort();
    }

    *(unsigned *) p = 0;
    tagged_live--;
    free(p);
}


#endif /* TAGGED_ALLOC_H_INCLUDED */
