/* A library whose work is in a function with no exported symbol: once the library is
 * stripped, hidden_double has no name anywhere, and only `--ffi LIB:0xOFFSET` can trace
 * it. xl_hidden is exported so that dl_driver can call it. */
#include <stdint.h>

/* noipa: never inlined, cloned or folded, so xl_hidden really calls it. */
static __attribute__((noipa, used)) int64_t hidden_double(int64_t x) { return 2 * x + (x & 1); }

int64_t xl_hidden(int64_t x) { return hidden_double(x) + 1; }
