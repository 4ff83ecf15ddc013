# elixir_driver.exs: calls into native code from Elixir.
#
#   elixir elixir_driver.exs [preload] [nowait] MODE ARGS...
#
# Modes:
#   nif Adds Sleeps SleepMs Dirty DirtyMs Io
#       XlNif.add(1, 2) Adds times, XlNif.sleep_ms(SleepMs) Sleeps times (normal
#       scheduler), XlNif.dirty_sleep_ms(DirtyMs) Dirty times (dirty CPU scheduler),
#       XlNif.io_sleep_ms(DirtyMs) Io times (dirty I/O scheduler); XlNif loads the
#       xl_nif.c library built with -DXL_MODULE=Elixir.XlNif from $XL_NIF_SO
#   rustler Adds Heavy HeavyMs
#       XlRnif.add(1, 2) Adds times, XlRnif.heavy(HeavyMs) Heavy times (dirty CPU
#       scheduler); XlRnif loads the Rustler crate from $XL_RNIF_SO
# ($XL_NIF_SO and $XL_RNIF_SO are paths without ".so", as :erlang.load_nif/2 wants.)
#
# Protocol: as beam_driver.erl. Prints "ready", waits for a line ("go") on stdin, does
# the calls, prints "sum S" and "done", halts with status 0; nowait skips ready/go.
# A script's modules are compiled and loaded in memory when their defmodule runs, so
# the modules are defined by functions called after "go" (before "ready" with preload):
# until then no NIF library is loaded. Any failure halts with status 2.

defmodule_nif = fn ->
  defmodule XlNif do
    @on_load :load_nif

    def load_nif do
      :erlang.load_nif(String.to_charlist(System.fetch_env!("XL_NIF_SO")), 0)
    end

    def add(_a, _b), do: :erlang.nif_error(:not_loaded)
    def sleep_ms(_ms), do: :erlang.nif_error(:not_loaded)
    def dirty_sleep_ms(_ms), do: :erlang.nif_error(:not_loaded)
    def io_sleep_ms(_ms), do: :erlang.nif_error(:not_loaded)
  end

  :ok
end

defmodule_rnif = fn ->
  defmodule XlRnif do
    @on_load :load_nif

    def load_nif do
      :erlang.load_nif(String.to_charlist(System.fetch_env!("XL_RNIF_SO")), 0)
    end

    def add(_a, _b), do: :erlang.nif_error(:not_loaded)
    def heavy(_ms), do: :erlang.nif_error(:not_loaded)
  end

  :ok
end

repeat = fn f, n -> Enum.each(1..n//1, fn _ -> f.() end) end

run = fn args ->
  {opts, rest} = Enum.split_while(args, &(&1 in ["preload", "nowait"]))

  {define, work} =
    case rest do
      ["nif", adds, sleeps, sleep_ms, dirty, dirty_ms, io] ->
        [adds, sleeps, sleep_ms, dirty, dirty_ms, io] =
          Enum.map([adds, sleeps, sleep_ms, dirty, dirty_ms, io], &String.to_integer/1)

        {defmodule_nif,
         fn ->
           sum = Enum.reduce(1..adds//1, 0, fn _, sum -> sum + XlNif.add(1, 2) end)
           repeat.(fn -> :ok = XlNif.sleep_ms(sleep_ms) end, sleeps)
           repeat.(fn -> :ok = XlNif.dirty_sleep_ms(dirty_ms) end, dirty)
           repeat.(fn -> :ok = XlNif.io_sleep_ms(dirty_ms) end, io)
           sum
         end}

      ["rustler", adds, heavy, heavy_ms] ->
        [adds, heavy, heavy_ms] = Enum.map([adds, heavy, heavy_ms], &String.to_integer/1)

        {defmodule_rnif,
         fn ->
           sum = Enum.reduce(1..adds//1, 0, fn _, sum -> sum + XlRnif.add(1, 2) end)
           repeat.(fn -> ^heavy_ms = XlRnif.heavy(heavy_ms) end, heavy)
           sum
         end}

      _ ->
        raise ArgumentError,
              "usage: elixir_driver.exs [preload] [nowait] " <>
                "nif Adds Sleeps SleepMs Dirty DirtyMs Io | rustler Adds Heavy HeavyMs; " <>
                "got #{inspect(args)}"
    end

  preload = "preload" in opts
  if preload, do: :ok = define.()

  if "nowait" not in opts do
    IO.puts("ready")

    case IO.gets("") do
      line when is_binary(line) -> :ok
      other -> raise "no go line on stdin: #{inspect(other)}"
    end
  end

  if not preload, do: :ok = define.()
  sum = work.()
  IO.puts("sum #{sum}\ndone")
end

try do
  run.(System.argv())
  System.halt(0)
rescue
  e ->
    IO.puts(:stderr, "elixir_driver: " <> Exception.format(:error, e, __STACKTRACE__))
    System.halt(2)
end
