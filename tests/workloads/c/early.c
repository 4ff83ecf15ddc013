/* early CALLS: calls xl_add once from a constructor (before main runs) and CALLS times
 * from the first lines of main, then exits at once: calls made in the program's first
 * millisecond, which a tracer only sees if it attached before the program started. */
#include <stdlib.h>
#include "xlcalc.h"

__attribute__((constructor)) static void before_main(void) { xl_add(40, 2); }

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 1;
    volatile int64_t sum = 0;
    for (long i = 0; i < calls; i++) sum += xl_add(i, i);
    return (int)(sum & 0) + 3; /* a distinctive exit status */
}
