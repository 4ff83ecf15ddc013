%% beam_driver: calls into native code from Erlang.
%%
%%   erl -noshell -pa DIR -s beam_driver main [preload] [nowait] MODE ARGS...
%%
%% (arguments arrive as atoms with -s, as strings with -run; both work)
%%
%% Modes:
%%   crypto N                              crypto:hash(sha256, <<"abc">>) N times
%%   nif Adds Sleeps SleepMs Dirty DirtyMs Io
%%       xl_nif:add(1, 2) Adds times, xl_nif:sleep_ms(SleepMs) Sleeps times (normal
%%       scheduler), xl_nif:dirty_sleep_ms(DirtyMs) Dirty times (dirty CPU scheduler),
%%       xl_nif:io_sleep_ms(DirtyMs) Io times (dirty I/O scheduler); needs XL_NIF_SO
%%   files N                               file:read_file("/proc/self/stat") N times
%%   rustler Adds Heavy HeavyMs
%%       'Elixir.XlRnif':add(1, 2) Adds times, 'Elixir.XlRnif':heavy(HeavyMs) Heavy
%%       times (dirty CPU scheduler); needs XL_RNIF_SO
%%   alloc K S F M
%%       xl_alloc_nif:alloc_blocks(K, S, F) M times (K x enif_alloc(S), F of them freed,
%%       K - F leaked, per call); prints "leaked M*(K-F)"; needs XL_ALLOC_NIF_SO
%%   work Iters Blocks M
%%       xl_alloc_nif:work(Iters, Blocks) M times, each timed; prints "median_ns T", the
%%       median wall time of one call as Erlang sees it; needs XL_ALLOC_NIF_SO
%%
%% Protocol: prints "ready", waits for a line ("go") on stdin, does the calls, prints
%% "sum S" (the sum of the add results; "hashes N" in crypto mode) and "done", halts
%% with status 0. With nowait
%% it skips ready/go. The native library (crypto.so, the NIF .so) is not loaded before
%% "ready" unless preload is given: then the module is loaded (running its on_load,
%% which loads the library) without calling any of its functions.
%% Any failure prints to stderr and halts with status 2.
-module(beam_driver).
-export([main/0, main/1]).

main() -> main([]).

main(Args) ->
    try run([arg(A) || A <- Args]) of
        ok -> halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "beam_driver ~p: ~p:~p~n~p~n", [Args, Class, Reason, Stack]),
            halt(2)
    end.

arg(A) when is_atom(A) -> atom_to_list(A);
arg(A) when is_list(A) -> A;
arg(A) when is_binary(A) -> binary_to_list(A).

run(Args) ->
    {Opts, Rest} = lists:splitwith(fun(A) -> A =:= "preload" orelse A =:= "nowait" end, Args),
    {Module, Work} = mode(Rest),
    Preload = lists:member("preload", Opts),
    Wait = not lists:member("nowait", Opts),
    Preload andalso preload(Module),
    Wait andalso wait_go(),
    {Label, Value} = Work(),
    io:format("~s ~b~ndone~n", [Label, Value]),
    ok.

mode(["crypto", N]) ->
    {crypto, fun() -> {hashes, hashes(int(N), 0)} end};
mode(["nif", Adds, Sleeps, SleepMs, Dirty, DirtyMs, Io]) ->
    {xl_nif, fun() ->
        Sum = nif_adds(int(Adds), 0),
        repeat(fun() -> ok = xl_nif:sleep_ms(int(SleepMs)) end, int(Sleeps)),
        repeat(fun() -> ok = xl_nif:dirty_sleep_ms(int(DirtyMs)) end, int(Dirty)),
        repeat(fun() -> ok = xl_nif:io_sleep_ms(int(DirtyMs)) end, int(Io)),
        {sum, Sum}
    end};
mode(["rustler", Adds, Heavy, HeavyMs]) ->
    Ms = int(HeavyMs),
    {'Elixir.XlRnif', fun() ->
        Sum = rustler_adds(int(Adds), 0),
        repeat(fun() -> Ms = 'Elixir.XlRnif':heavy(Ms) end, int(Heavy)),
        {sum, Sum}
    end};
mode(["alloc", K, S, F, M]) ->
    Leaked = int(K) - int(F),
    {xl_alloc_nif, fun() ->
        repeat(fun() -> Leaked = xl_alloc_nif:alloc_blocks(int(K), int(S), int(F)) end, int(M)),
        {leaked, Leaked * int(M)}
    end};
mode(["work", Iters, Blocks, M]) ->
    {xl_alloc_nif, fun() ->
        {median_ns, median([timed_work(int(Iters), int(Blocks)) || _ <- lists:seq(1, int(M))])}
    end};
mode(["files", N]) ->
    {file, fun() -> {files, read_files(int(N), 0)} end};
mode(Other) ->
    erlang:error({usage, Other,
                  "[preload] [nowait] crypto N | nif Adds Sleeps SleepMs Dirty DirtyMs Io"
                  " | rustler Adds Heavy HeavyMs | files N | alloc K S F M"
                  " | work Iters Blocks M"}).

int(S) -> list_to_integer(S).

timed_work(Iters, Blocks) ->
    T0 = erlang:monotonic_time(nanosecond),
    _ = xl_alloc_nif:work(Iters, Blocks),
    erlang:monotonic_time(nanosecond) - T0.

median(Xs) -> lists:nth(length(Xs) div 2 + 1, lists:sort(Xs)).

%% Loads Module, which runs its on_load (crypto's loads crypto.so), calling nothing else.
preload(Module) ->
    {module, Module} = code:ensure_loaded(Module),
    true.

wait_go() ->
    io:put_chars("ready\n"),
    case io:get_line("") of
        Line when is_list(Line) -> true;
        Other -> erlang:error({no_go_line, Other})
    end.

%% prim_file:read_file_nif/1, a NIF built into the VM, once per read.
read_files(0, Done) -> Done;
read_files(N, Done) ->
    {ok, _} = file:read_file("/proc/self/stat"),
    read_files(N - 1, Done + 1).

hashes(0, Done) -> Done;
hashes(N, Done) ->
    <<_:256>> = crypto:hash(sha256, <<"abc">>),
    hashes(N - 1, Done + 1).

nif_adds(0, Sum) -> Sum;
nif_adds(N, Sum) -> nif_adds(N - 1, Sum + xl_nif:add(1, 2)).

rustler_adds(0, Sum) -> Sum;
rustler_adds(N, Sum) -> rustler_adds(N - 1, Sum + 'Elixir.XlRnif':add(1, 2)).

repeat(_F, 0) -> ok;
repeat(F, N) -> F(), repeat(F, N - 1).
