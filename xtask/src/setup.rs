//! `cargo xtask setup`: installs, only when missing, what building and testing need.
//! Every step checks first, so running it again costs a few process starts.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow, bail};

use crate::cmd;

/// Everything: the eBPF toolchain and the test toolchains.
pub fn all() -> anyhow::Result<()> {
    build_toolchain()?;
    test_toolchains()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// nightly + rust-src + bpf-linker: what xlperf/build.rs needs to build the eBPF object.
pub fn build_toolchain() -> anyhow::Result<()> {
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let components = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    bpf_linker()
}

/// bpf-linker must link the very libLLVM inside the nightly toolchain: an LLVM of another
/// version writes bitcode that rustc's cannot read (TOOLCHAIN.md).
fn bpf_linker() -> anyhow::Result<()> {
    let sysroot = PathBuf::from(
        cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let llvm_so = fs::read_dir(sysroot.join("lib"))
        .context("reading the nightly sysroot")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .ok_or_else(|| anyhow!("no libLLVM.so.*-rust-* in {}/lib", sysroot.display()))?;
    let llvm_name = llvm_so
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();

    if let Ok(path) = which("bpf-linker") {
        let ldd = cmd::capture(Command::new("ldd").arg(&path))?;
        let ldd = String::from_utf8_lossy(&ldd.stdout);
        let linked = ldd
            .lines()
            .any(|l| l.contains(&llvm_name) && !l.contains("not found"));
        if linked && cmd::works("bpf-linker", "--version") {
            return Ok(());
        }
        eprintln!(
            "xtask: {} does not load {llvm_name}; rebuilding it",
            path.display()
        );
    }

    let version = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .ok_or_else(|| anyhow!("cannot read nightly's LLVM version from `rustc +nightly -vV`"))?
        .to_owned();
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    let prefix = PathBuf::from(home).join(".cache/xlperf/llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in [lib.join("libLLVM.so"), lib.join(&llvm_name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm_so, &link)
            .with_context(|| format!("linking {} to {}", link.display(), llvm_so.display()))?;
    }
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

/// Whether a Debian package is installed (false where dpkg is missing).
fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The compilers and tracers the tests, demo and bench use.
pub fn test_toolchains() -> anyhow::Result<()> {
    let mut apt = Vec::new();
    for (program, package) in [
        ("gcc", "gcc"),
        ("nim", "nim"),
        ("bpftrace", "bpftrace"),
        ("python3", "python3"),
    ] {
        if which(program).is_err() {
            apt.push(package);
        }
    }
    // Erlang/OTP with its NIF headers and OTP's own crypto NIF, and Elixir: the NIF tests
    // trace them. Checked by package, as headers and NIF libraries are not programs.
    for (program, package) in [
        ("erl", "erlang-base"),
        ("erlc", "erlang-dev"),
        ("erl", "erlang-crypto"),
        ("elixir", "elixir"),
        // Prometheus's server and promtool: the `serve` test scrapes xlperf with a real
        // Prometheus, and the ops tests check and unit-test the alert rules in scripts/.
        ("promtool", "prometheus"),
    ] {
        let missing = if which("dpkg-query").is_ok() {
            !deb_installed(package)
        } else {
            which(program).is_err()
        };
        if missing && !apt.contains(&package) {
            apt.push(package);
        }
    }
    // Replacement allocators the --alloc tests preload: checked by their library file.
    for (library, package) in [
        ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "libjemalloc2"),
        (
            "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
            "libmimalloc2.0",
        ),
    ] {
        if !std::path::Path::new(library).exists() {
            apt.push(package);
        }
    }
    // PyYAML: the ops tests parse the Kubernetes manifest in scripts/ with it.
    if !python_has("yaml") && !apt.contains(&"python3-yaml") {
        apt.push("python3-yaml");
    }
    apt_install(&apt)?;
    if !python_has("ziglang") {
        cmd::run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "ziglang"]))?;
    }
    // Perfetto's own protobuf definitions: the export tests decode xlperf's traces with them.
    if !python_has("perfetto.protos.perfetto.trace.perfetto_trace_pb2") {
        cmd::run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "perfetto"]))?;
    }
    Ok(())
}

/// What the demo runs: a C compiler, Python, and an Erlang VM with OTP's crypto NIFs.
pub fn demo_toolchains() -> anyhow::Result<()> {
    let mut apt = Vec::new();
    for (program, package) in [("gcc", "gcc"), ("python3", "python3")] {
        if which(program).is_err() {
            apt.push(package);
        }
    }
    for (program, package) in [("erl", "erlang-base"), ("erl", "erlang-crypto")] {
        let missing = if which("dpkg-query").is_ok() {
            !deb_installed(package)
        } else {
            which(program).is_err()
        };
        if missing {
            apt.push(package);
        }
    }
    apt_install(&apt)
}

/// Installs Debian packages (after one `apt-get update`); nothing when none is missing.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if which("apt-get").is_err() {
        bail!(
            "missing {}; install them with your package manager",
            packages.join(", ")
        );
    }
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Finds `program` in $PATH.
pub fn which(program: &str) -> anyhow::Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{program} not found in PATH"))
}
