#include <stdint.h>
int64_t xl_add(int64_t a, int64_t b);
int64_t xl_square(int64_t x);
void xl_inner(int ms);
void xl_outer(int ms);
