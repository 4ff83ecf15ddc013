%% xl_nif: the Erlang face of xl_nif.so (built with -DXL_MODULE=xl_nif).
%% Loading the module runs init/0, which loads the NIF library named by the
%% environment variable XL_NIF_SO (a path without ".so", as erlang:load_nif/2 wants).
-module(xl_nif).
-export([add/2, sleep_ms/1, dirty_sleep_ms/1, io_sleep_ms/1]).
-on_load(init/0).

init() ->
    case os:getenv("XL_NIF_SO") of
        false -> {error, xl_nif_so_unset};
        Path -> erlang:load_nif(Path, 0)
    end.

add(_A, _B) -> erlang:nif_error(not_loaded).
sleep_ms(_Ms) -> erlang:nif_error(not_loaded).
dirty_sleep_ms(_Ms) -> erlang:nif_error(not_loaded).
io_sleep_ms(_Ms) -> erlang:nif_error(not_loaded).
