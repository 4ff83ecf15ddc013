%% 'Elixir.XlRnif': an Erlang module under the Elixir name that the Rustler crate
%% (tests/workloads/rustler, rustler::init!("Elixir.XlRnif")) registers its NIFs for.
%% The file is named after the module because erlc insists on it.
%% Loading the module runs init/0, which loads the library named by the environment
%% variable XL_RNIF_SO (a path without ".so", as erlang:load_nif/2 wants).
-module('Elixir.XlRnif').
-export([add/2, heavy/1]).
-on_load(init/0).

init() ->
    case os:getenv("XL_RNIF_SO") of
        false -> {error, xl_rnif_so_unset};
        Path -> erlang:load_nif(Path, 0)
    end.

add(_A, _B) -> erlang:nif_error(not_loaded).
heavy(_Ms) -> erlang:nif_error(not_loaded).
