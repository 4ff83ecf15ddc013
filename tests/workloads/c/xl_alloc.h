/* libxlalloc.so: see xl_alloc.c for what each function does, exactly. */
#include <stddef.h>
void xl_alloc_blocks(int k, size_t s, int f);
void xl_alloc_outer(int k, size_t s, int f);
void xl_alloc_variety(size_t s);
void xl_map(int n, size_t len);
void xl_pipes(int n);
void xl_sleep_ms(int ms);
void xl_write_null(int n);
void xl_spin_ms(int ms);
int xl_read_fd(int fd);
