/* xl_nif.c: the C NIF library of the BEAM workloads.
 *
 * One source, two modules: the module name comes from XL_MODULE, e.g.
 *   gcc -O2 -fPIC -shared -I$ERTS_INCLUDE -DXL_MODULE=xl_nif        -o xl_nif.so xl_nif.c
 *   gcc -O2 -fPIC -shared -I$ERTS_INCLUDE -DXL_MODULE=Elixir.XlNif  -o xl_nif_elixir.so xl_nif.c
 *
 * add/2             normal NIF: the sum of two integers
 * sleep_ms/1        normal NIF that sleeps N ms and returns ok: a long NIF on a
 *                   normal scheduler, on purpose
 * dirty_sleep_ms/1  the same on a dirty CPU scheduler
 * io_sleep_ms/1     the same on a dirty I/O scheduler
 */
#include <errno.h>
#include <time.h>

#include <erl_nif.h>

#ifndef XL_MODULE
#define XL_MODULE xl_nif
#endif

/* The NIFs are exported, distinct functions (dynamic symbols xl_nif_add,
 * xl_nif_sleep_ms, xl_nif_dirty_sleep_ms, xl_nif_io_sleep_ms), so a probe can name
 * each and no two NIFs share an address. The three sleeping NIFs have identical
 * bodies: noipa rules out gcc's identical code folding (-fipa-icf, on at -O2) making
 * two of them thunks to the third (exported -fPIC functions are not folded today;
 * this keeps it so under other flags). */
#define XL_NIF __attribute__((visibility("default"), noipa)) ERL_NIF_TERM

XL_NIF xl_nif_add(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifSInt64 a, b;
    (void)argc;
    if (!enif_get_int64(env, argv[0], &a) || !enif_get_int64(env, argv[1], &b))
        return enif_make_badarg(env);
    /* wraps on overflow instead of undefined behaviour */
    return enif_make_int64(env, (ErlNifSInt64)((ErlNifUInt64)a + (ErlNifUInt64)b));
}

/* Sleeps argv[0] milliseconds (nanosleep, resumed after signals); returns ok. */
static inline ERL_NIF_TERM sleep_body(ErlNifEnv *env, const ERL_NIF_TERM argv[])
{
    unsigned long ms;
    struct timespec req, rem;
    if (!enif_get_ulong(env, argv[0], &ms))
        return enif_make_badarg(env);
    req.tv_sec = (time_t)(ms / 1000);
    req.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&req, &rem) == -1 && errno == EINTR)
        req = rem;
    return enif_make_atom(env, "ok");
}

XL_NIF xl_nif_sleep_ms(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return sleep_body(env, argv);
}

XL_NIF xl_nif_dirty_sleep_ms(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return sleep_body(env, argv);
}

XL_NIF xl_nif_io_sleep_ms(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return sleep_body(env, argv);
}

static ErlNifFunc funcs[] = {
    {"add", 2, xl_nif_add, 0},
    {"sleep_ms", 1, xl_nif_sleep_ms, 0},
    {"dirty_sleep_ms", 1, xl_nif_dirty_sleep_ms, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"io_sleep_ms", 1, xl_nif_io_sleep_ms, ERL_NIF_DIRTY_JOB_IO_BOUND},
};

/* ERL_NIF_INIT stringifies its NAME argument with #NAME, which does not expand
 * macros: passing XL_MODULE directly would name the module "XL_MODULE". One more
 * level of macro expands XL_MODULE first; a dotted name such as Elixir.XlNif
 * stringifies as written ("Elixir.XlNif"). */
#define XL_NIF_INIT(NAME) ERL_NIF_INIT(NAME, funcs, NULL, NULL, NULL, NULL)
XL_NIF_INIT(XL_MODULE)
