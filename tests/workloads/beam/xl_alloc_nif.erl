%% xl_alloc_nif: the Erlang face of xl_alloc_nif.so (see xl_alloc_nif.c).
%% Loading the module runs init/0, which loads the NIF library named by the
%% environment variable XL_ALLOC_NIF_SO (a path without ".so", as erlang:load_nif/2 wants).
-module(xl_alloc_nif).
-export([alloc_blocks/3, work/2]).
-on_load(init/0).

init() ->
    case os:getenv("XL_ALLOC_NIF_SO") of
        false -> {error, xl_alloc_nif_so_unset};
        Path -> erlang:load_nif(Path, 0)
    end.

alloc_blocks(_K, _S, _F) -> erlang:nif_error(not_loaded).
work(_Iters, _Blocks) -> erlang:nif_error(not_loaded).
