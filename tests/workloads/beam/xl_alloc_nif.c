/* xl_alloc_nif.c: a C NIF library that allocates with enif_alloc, for the --alloc tests.
 *
 *   gcc -O2 -g -fPIC -shared -I$ERTS_INCLUDE -o xl_alloc_nif.so xl_alloc_nif.c
 *
 * alloc_blocks/3  alloc_blocks(K, S, F): K x enif_alloc(S), then enif_free of the first
 *                 F, the other K - F kept (leaked) in a global array; returns K - F.
 *                 Per call: alloc_count K, alloc_bytes K*S, free_count F, free_bytes
 *                 F*S, live K-F blocks of S bytes. It allocates nothing else: the
 *                 block array is on the stack, the result a small integer.
 *
 * work/2         work(Iters, Blocks): a busy loop of Iters steps (a few µs), and Blocks
 *                 times enif_alloc(64) + enif_free; returns the loop's result. A NIF
 *                 whose own time is known (the driver times it untraced too), whose
 *                 allocator calls xlperf's --alloc probes land inside.
 *
 * Every block is written through a volatile pointer. The leak array is not locked:
 * the driver calls the NIF from one Erlang process, one call at a time. */
#include <stddef.h>

#include <erl_nif.h>

#define XL_NIF __attribute__((visibility("default"), noipa)) ERL_NIF_TERM

#define XL_BLOCKS_MAX 256
#define XL_LEAK_MAX (1 << 16)

static void *leaked[XL_LEAK_MAX];
static size_t leaked_n;

XL_NIF xl_alloc_nif_alloc_blocks(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    int k, f;
    unsigned long s;
    void *b[XL_BLOCKS_MAX];
    (void)argc;
    if (!enif_get_int(env, argv[0], &k) || !enif_get_ulong(env, argv[1], &s) ||
        !enif_get_int(env, argv[2], &f) || k < 0 || k > XL_BLOCKS_MAX || f < 0 || f > k ||
        s == 0 || leaked_n + (size_t)(k - f) > XL_LEAK_MAX)
        return enif_make_badarg(env);
    for (int i = 0; i < k; i++) {
        volatile unsigned char *v = b[i] = enif_alloc(s);
        if (!b[i])
            return enif_make_badarg(env); /* never, short of memory */
        v[0] = 1;
        v[s - 1] = 2;
    }
    for (int i = 0; i < f; i++)
        enif_free(b[i]);
    for (int i = f; i < k; i++)
        leaked[leaked_n++] = b[i];
    return enif_make_int(env, k - f);
}

XL_NIF xl_alloc_nif_work(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    unsigned long iters;
    int blocks;
    (void)argc;
    if (!enif_get_ulong(env, argv[0], &iters) || !enif_get_int(env, argv[1], &blocks) ||
        blocks < 0)
        return enif_make_badarg(env);
    volatile unsigned long x = 1;
    for (unsigned long i = 0; i < iters; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    for (int i = 0; i < blocks; i++) {
        volatile unsigned char *v = enif_alloc(64);
        if (!v)
            return enif_make_badarg(env);
        v[0] = 1;
        enif_free((void *)v);
    }
    return enif_make_uint64(env, x);
}

static ErlNifFunc funcs[] = {
    {"alloc_blocks", 3, xl_alloc_nif_alloc_blocks, 0},
    {"work", 2, xl_alloc_nif_work, 0},
};

ERL_NIF_INIT(xl_alloc_nif, funcs, NULL, NULL, NULL, NULL)
