//! Running commands, with the command line in every error.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` and captures its output; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` and captures its output, whatever its exit status.
pub fn capture(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output()
        .with_context(|| format!("starting {}", display(cmd)))
}

/// Does `program` run at all (found, loadable)?
pub fn works(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(crate::root());
    c
}

/// Builds the xlperf binaries; returns the directory holding them.
pub fn build_xlperf(release: bool) -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "xlperf"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(crate::root()
        .join("target")
        .join(if release { "release" } else { "debug" }))
}

/// xlperf loads eBPF programs: the tasks that run it need root.
pub fn require_root(task: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "`cargo xtask {task}` loads eBPF programs and needs root: run `sudo -E cargo xtask {task}`"
        );
    }
    Ok(())
}
