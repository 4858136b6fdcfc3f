/* Software prefetch of a byte range into L2. One channel of NCHW data is N short runs of H*W
   values, C runs apart: the hardware prefetchers start over at every run, so a pass over a
   channel waits on memory at each run's start unless the next run is asked for early. */
#ifndef CNORM_PREFETCH_H
#define CNORM_PREFETCH_H
#include <stddef.h>

static inline void cn_prefetch(const void *p, ptrdiff_t bytes) {
#if defined(__GNUC__)
    const char *c = (const char *)p;
    for (ptrdiff_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 2);
#else
    (void)p; (void)bytes;
#endif
}

#endif
