//! The BEAM workloads: Erlang and Elixir programs calling NIFs (C and Rustler) and
//! crypto, from tests/workloads/beam and tests/workloads/rustler.
//!
//! The drivers (beam_driver.erl, elixir_driver.exs) take `[preload] [nowait] MODE ARGS...`:
//! - `crypto N` (Erlang only): `crypto:hash(sha256, <<"abc">>)` N times;
//! - `nif Adds Sleeps SleepMs Dirty DirtyMs Io`: `add(1, 2)` Adds times, `sleep_ms(SleepMs)`
//!   Sleeps times (normal scheduler), `dirty_sleep_ms(DirtyMs)` Dirty times (dirty CPU
//!   scheduler), `io_sleep_ms(DirtyMs)` Io times (dirty I/O scheduler), from xl_nif.c;
//! - `rustler Adds Heavy HeavyMs`: `add(1, 2)` Adds times and `heavy(HeavyMs)` Heavy
//!   times (dirty CPU scheduler), from the Rustler crate;
//! - `alloc K S F M` (Erlang only): `xl_alloc_nif:alloc_blocks(K, S, F)` M times, each
//!   K × `enif_alloc(S)` with the first F freed and the rest leaked (xl_alloc_nif.c).
//!
//! They print `ready`, wait for a line on stdin, do the calls, print `sum S` (`hashes N`
//! in crypto mode) and `done`, and exit 0. `nowait` skips ready/go (for a program the
//! tracer starts itself). The native library (the NIF .so, crypto.so) is loaded by the
//! first call after `go`, unless `preload` loads it (no call) before `ready`.
//!
//! `erl` and `elixir` are shell scripts that exec erlexec, which execs beam.smp: the
//! pid of the spawned command is the pid of the VM (it forks one helper child,
//! erl_child_setup, which runs no Erlang code).

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
};

use crate::{build_dir, run_ok, workload_src};

/// The built BEAM workloads.
pub struct BeamWorkloads {
    /// The `-pa` directory: beam_driver.beam, xl_nif.beam, xl_alloc_nif.beam,
    /// Elixir.XlRnif.beam.
    pub dir: PathBuf,
    /// xl_nif.c built for the Erlang module `xl_nif`.
    pub nif_so: PathBuf,
    /// xl_alloc_nif.c (the Erlang module `xl_alloc_nif`, allocating with enif_alloc).
    pub alloc_nif_so: PathBuf,
    /// xl_nif.c built for the Elixir module `Elixir.XlNif` (elixir_driver.exs).
    pub elixir_nif_so: PathBuf,
    /// The Elixir driver script (run in place: Elixir compiles it in memory).
    pub elixir_script: PathBuf,
}

/// Builds the BEAM workloads once per test binary (erlc, gcc).
pub fn beam_workloads() -> &'static BeamWorkloads {
    static ONCE: OnceLock<BeamWorkloads> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = build_dir("beam");
        let src = workload_src("beam");
        run_ok(
            Command::new("erlc").arg("-o").arg(&dir).args(
                [
                    "beam_driver.erl",
                    "xl_nif.erl",
                    "xl_alloc_nif.erl",
                    "Elixir.XlRnif.erl",
                ]
                .map(|f| src.join(f)),
            ),
        );
        let include =
            erl_eval(r#"io:format("~s", [filename:join([code:root_dir(), "usr", "include"])])"#);
        let nif = |source: &str, module: &str, out: PathBuf| {
            run_ok(
                Command::new("gcc")
                    .args(["-O2", "-g", "-fPIC", "-shared"])
                    .arg(format!("-I{include}"))
                    .arg(format!("-DXL_MODULE={module}"))
                    .arg("-o")
                    .arg(&out)
                    .arg(src.join(source)),
            );
            out
        };
        BeamWorkloads {
            nif_so: nif("xl_nif.c", "xl_nif", dir.join("xl_nif.so")),
            elixir_nif_so: nif("xl_nif.c", "Elixir.XlNif", dir.join("xl_nif_elixir.so")),
            alloc_nif_so: nif(
                "xl_alloc_nif.c",
                "xl_alloc_nif",
                dir.join("xl_alloc_nif.so"),
            ),
            elixir_script: src.join("elixir_driver.exs"),
            dir,
        }
    })
}

/// Builds the Rustler crate (module `Elixir.XlRnif`) once per test binary; returns the .so.
/// Its first build downloads rustler from crates.io (or needs it in cargo's cache).
pub fn rustler_nif() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let target_dir = build_dir("rustler");
        run_ok(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--locked",
                    "--manifest-path",
                ])
                .arg(workload_src("rustler/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir),
        );
        target_dir.join("release/libxl_rnif.so")
    })
    .clone()
}

/// The path `erlang:load_nif/2` wants for `so`: the same without its `.so`.
pub fn load_path(so: &Path) -> String {
    let s = crate::s(so);
    s.strip_suffix(".so")
        .unwrap_or_else(|| panic!("{s} does not end in .so"))
        .to_string()
}

/// OTP's crypto NIF library (priv/lib/crypto.so of the crypto application); it links
/// the system's libcrypto.so.3, which does the hashing.
pub fn crypto_so() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let so = PathBuf::from(erl_eval(
            r#"io:format("~s", [filename:join([code:priv_dir(crypto), "lib", "crypto.so"])])"#,
        ));
        assert!(so.is_file(), "{} is missing", so.display());
        so
    })
    .clone()
}

/// A driver command line: program, arguments and the environment it needs.
#[derive(Clone, Debug)]
pub struct BeamInvocation {
    /// Absolute path of `erl` or `elixir`.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// XL_NIF_SO, and XL_RNIF_SO for the rustler mode (load paths, without `.so`).
    pub env: Vec<(String, String)>,
}

impl BeamInvocation {
    /// Program and arguments, e.g. to pass after `--` to xlperf, which must then run
    /// with [`env`](Self::env) set (its child inherits it): see [`set_env`](Self::set_env).
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![crate::s(&self.program).to_string()];
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// `/usr/bin/env VAR=VALUE... program args...`: the same command needing no
    /// environment from its parent. env execs the program, so the pid is unchanged.
    pub fn env_argv(&self) -> Vec<String> {
        let mut argv = vec!["/usr/bin/env".to_string()];
        argv.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(self.argv());
        argv
    }

    /// Sets the environment the driver needs on `cmd` (the driver itself or a tracer
    /// that starts it).
    pub fn set_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
    }

    /// Runs `xlperf ARGS -- DRIVER` with the driver's environment; returns its output.
    pub fn under_xlperf(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(crate::xlperf_bin());
        cmd.args(args)
            .arg("--")
            .args(self.argv())
            .stdin(Stdio::null());
        self.set_env(&mut cmd);
        cmd.output().expect("run xlperf")
    }

    /// The driver as a command, ready to spawn.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        self.set_env(&mut cmd);
        cmd
    }
}

/// `erl -noshell -pa DIR -s beam_driver main ARGS...` with XL_NIF_SO (and XL_RNIF_SO,
/// building the Rustler crate, when ARGS name the rustler mode; XL_ALLOC_NIF_SO when
/// they name the alloc or work mode).
pub fn erl_invocation(w: &BeamWorkloads, args: &[&str]) -> BeamInvocation {
    let mut full: Vec<String> = ["-noshell", "-pa", crate::s(&w.dir), "-s", "beam_driver"]
        .map(String::from)
        .into();
    full.push("main".into());
    full.extend(args.iter().map(|a| a.to_string()));
    let mut env = nif_env(&w.nif_so, args);
    if args.contains(&"alloc") || args.contains(&"work") {
        env.push(("XL_ALLOC_NIF_SO".to_string(), load_path(&w.alloc_nif_so)));
    }
    BeamInvocation {
        program: on_path("erl"),
        args: full,
        env,
    }
}

/// `elixir elixir_driver.exs ARGS...` with XL_NIF_SO (the Elixir.XlNif build) and
/// XL_RNIF_SO for the rustler mode. Run it from a directory holding no .beam files
/// (not [`BeamWorkloads::dir`]): Erlang's code path starts with ".", and the Erlang
/// Elixir.XlRnif.beam there would be loaded in place of the script's XlRnif.
pub fn elixir_invocation(w: &BeamWorkloads, args: &[&str]) -> BeamInvocation {
    let mut full = vec![crate::s(&w.elixir_script).to_string()];
    full.extend(args.iter().map(|a| a.to_string()));
    BeamInvocation {
        program: on_path("elixir"),
        args: full,
        env: nif_env(&w.elixir_nif_so, args),
    }
}

/// [`erl_invocation`] as a command.
pub fn erl_command(w: &BeamWorkloads, args: &[&str]) -> Command {
    erl_invocation(w, args).command()
}

/// [`elixir_invocation`] as a command.
pub fn elixir_command(w: &BeamWorkloads, args: &[&str]) -> Command {
    elixir_invocation(w, args).command()
}

fn nif_env(nif_so: &Path, args: &[&str]) -> Vec<(String, String)> {
    let mut env = vec![("XL_NIF_SO".to_string(), load_path(nif_so))];
    if args.contains(&"rustler") {
        env.push(("XL_RNIF_SO".to_string(), load_path(&rustler_nif())));
    }
    env
}

/// Whether `lib` is mapped in process `pid`.
pub fn is_mapped(pid: u32, lib: &Path) -> bool {
    let lib = std::fs::canonicalize(lib).expect("canonical lib");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .any(|line| line.split_whitespace().nth(5).map(Path::new) == Some(&lib))
}

/// A BEAM driver started without `nowait`: it has printed "ready" and waits for [`go`](Self::go).
pub struct WaitingBeam {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl WaitingBeam {
    /// Starts the Erlang driver with `args` (e.g. `["nif", "10", "0", "0", "0", "0", "0"]`).
    pub fn erl(args: &[&str]) -> Self {
        Self::start(&erl_invocation(beam_workloads(), args))
    }

    /// Starts the Elixir driver with `args`.
    pub fn elixir(args: &[&str]) -> Self {
        Self::start(&elixir_invocation(beam_workloads(), args))
    }

    /// Starts `inv` and waits for its "ready"; checks that its pid is beam.smp's.
    pub fn start(inv: &BeamInvocation) -> Self {
        assert!(
            !inv.args.iter().any(|a| a == "nowait"),
            "WaitingBeam needs a driver that waits"
        );
        let mut child = inv
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {inv:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut driver = Self {
            child,
            stdin,
            stdout,
        };
        let mut line = String::new();
        driver.stdout.read_line(&mut line).expect("read ready");
        assert_eq!(line.trim(), "ready", "{inv:?} did not get ready");
        let exe = std::fs::read_link(format!("/proc/{}/exe", driver.pid())).expect("exe");
        assert_eq!(
            exe.file_name(),
            Some(OsStr::new("beam.smp")),
            "{inv:?} is not beam.smp"
        );
        driver
    }

    /// The pid of the VM (beam.smp).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the driver do its calls, waits for it to exit successfully after printing
    /// "done", and returns what it printed after "ready" (e.g. "sum 30\ndone\n").
    pub fn go(&mut self) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n").expect("write go");
        }
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).expect("read driver");
        let status = self.child.wait().expect("wait driver");
        assert!(status.success(), "BEAM driver failed: {status}\n{out}");
        assert_eq!(
            out.lines().last(),
            Some("done"),
            "BEAM driver did not finish"
        );
        out
    }
}

impl Drop for WaitingBeam {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `erl` prints for `expr` (an expression that prints).
fn erl_eval(expr: &str) -> String {
    let mut cmd = Command::new("erl");
    cmd.args(["-noshell", "-eval"])
        .arg(format!("{expr}, halt()."));
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The absolute path of `name` on $PATH.
fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}
