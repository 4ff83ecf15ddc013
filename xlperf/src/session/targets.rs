//! Who a session traces, resolved before anything is attached: every check that can be
//! made before the kernel is touched (a pid that is not there, a library not mapped, a
//! glob that names nothing, a BEAM where none is) is made here, for `record` before the
//! programs are even loaded.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use xlperf_common::TracepointLayout;

use super::drain::Names;
use crate::{
    cli::{FfiSpec, ProbeArgs},
    probe::{
        ProbeError,
        alloc::AllocTracing,
        beam::{self, tracing::NifTracing},
        boundary::BoundaryTable,
        bpf::{loader, tracepoints},
        kernel::{self, KernelFunction},
        library::{self, Found, Scope},
        pending,
        proc::target,
    },
};

/// One target, as the command line names it.
pub enum Target<'a> {
    /// A running process. With `wait`, libraries it does not map yet are attached when
    /// it does (a process found by `--comm`); without, they are an error (`-p`).
    Pid { pid: u32, wait: bool },
    /// A command to start, held before exec until its probes are in.
    Command {
        program: PathBuf,
        argv: &'a [String],
        /// `--json`: stdout carries the summary only, the command's output goes to stderr.
        stdout_to_stderr: bool,
    },
    /// Every process that runs the named files.
    All,
}

/// What the probe flags ask for, checked once.
pub struct Wants {
    pub probes: ProbeArgs,
    pub specs: Vec<FfiSpec>,
    /// `--kmem`: kernel allocations too.
    pub kmem: bool,
    /// Where the scheduler and allocation tracepoints keep their fields on this kernel.
    pub layout: Option<TracepointLayout>,
    /// Whether probe costs are measured (and taken out of every figure).
    pub calibrate: bool,
    /// `--kfunc`: the kernel functions its globs name.
    pub kfuncs: Vec<KernelFunction>,
}

impl Wants {
    pub fn new(probes: &ProbeArgs, kmem: bool) -> anyhow::Result<Self> {
        let specs = probes
            .ffi
            .iter()
            .map(|s| FfiSpec::parse(s))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!(e))?;
        let layout = (probes.alloc || probes.sched)
            .then(|| tracepoints::layout(kmem))
            .transpose()?;
        let kfuncs = kernel::resolve(&probes.kfunc, probes.max_functions)?;
        Ok(Self {
            probes: probes.clone(),
            specs,
            kmem,
            layout,
            calibrate: true,
            kfuncs,
        })
    }

    /// `list`'s watch: the NIF calls of a BEAM, counted and not timed, so not calibrated
    /// (the calibration's probes would make a short watch slow to end).
    pub fn counting_nifs() -> Self {
        let probes = ProbeArgs {
            ffi: Vec::new(),
            nif: true,
            nif_mode: beam::NifMode::Auto,
            long_nif: std::time::Duration::from_millis(1),
            alloc: false,
            sched: false,
            syscalls: false,
            kfunc: Vec::new(),
            max_functions: usize::MAX,
            ring_size: loader::DEFAULT_RING_BYTES,
        };
        Self {
            probes,
            specs: Vec::new(),
            kmem: false,
            layout: None,
            calibrate: false,
            kfuncs: Vec::new(),
        }
    }

    /// Allocations and scheduling are worth recording in any process, crossings or not.
    pub fn whole_process(&self) -> bool {
        self.probes.alloc || self.probes.sched || self.probes.syscalls || !self.kfuncs.is_empty()
    }

    /// NIFs are traced when asked for, or when a BEAM is given no --ffi.
    fn nifs(&self) -> bool {
        self.probes.nif || self.specs.is_empty()
    }
}

/// A target resolved: what to attach to it once the programs are loaded.
pub struct Prepared<'a> {
    pub(super) who: Who<'a>,
    /// Its --ffi boundaries in files it maps (or, for a command, will surely map).
    pub(super) ids: Vec<u32>,
    /// --ffi specs whose library it has not mapped yet.
    pub(super) later: Vec<FfiSpec>,
    /// Whether its NIFs are traced.
    pub(super) nifs: bool,
    pub(super) alloc: Option<AllocTracing>,
}

pub(super) enum Who<'a> {
    Pid(u32),
    Command {
        program: PathBuf,
        argv: &'a [String],
        stdout_to_stderr: bool,
    },
    All,
}

/// What resolution learns and the drain names records with: the boundary table, the NIF
/// tracing of the one VM traced, and the names seen so far.
#[derive(Default)]
pub struct Crossings {
    pub table: BoundaryTable,
    pub nif: Option<NifTracing>,
    pub names: Names,
    /// Functions of libraries commands have not mapped yet, as far as known now.
    expected_later: usize,
    /// `--kfunc`'s functions, by boundary id, once added to the table.
    pub kernel: Vec<(u32, KernelFunction)>,
}

impl Crossings {
    /// Resolves `target`; nothing is attached.
    pub fn prepare<'a>(
        &mut self,
        wants: &Wants,
        target: Target<'a>,
    ) -> anyhow::Result<Prepared<'a>> {
        if self.kernel.is_empty() {
            for function in &wants.kfuncs {
                self.kernel
                    .push((self.table.add_kernel(function), function.clone()));
            }
        }
        let prepared = match target {
            Target::Pid { pid, wait } => self.prepare_pid(wants, pid, wait)?,
            Target::Command {
                program,
                argv,
                stdout_to_stderr,
            } => self.prepare_command(wants, program, argv, stdout_to_stderr)?,
            Target::All => self.prepare_all(wants)?,
        };
        let count = self.table.len() + self.expected_later;
        if count > wants.probes.max_functions {
            return Err(ProbeError::TooManyFunctions {
                count,
                max: wants.probes.max_functions,
            }
            .into());
        }
        Ok(prepared)
    }

    fn prepare_pid<'a>(
        &mut self,
        wants: &Wants,
        pid: u32,
        wait: bool,
    ) -> anyhow::Result<Prepared<'a>> {
        target::check_target(pid)?;
        let (mut ids, mut later) = (Vec::new(), Vec::new());
        for spec in &wants.specs {
            match library::find(&spec.library, &Scope::Pid(pid)) {
                Ok(Found::File(path)) => push_new(&mut ids, self.table.add_file(spec, &path)?),
                Err(ProbeError::NotMapped { .. }) if wait => later.push(spec.clone()),
                Ok(Found::Later { .. }) => later.push(spec.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        let vm = beam::vm_of_pid(pid)?;
        let nifs = match &vm {
            Some(vm) if wants.nifs() => self.use_vm(wants, vm)?,
            Some(_) => false,
            None if wants.probes.nif => return Err(ProbeError::NotBeam { pid }.into()),
            None if wants.specs.is_empty() && !wants.whole_process() => {
                let what = format!("pid {pid} ({})", target::comm(pid));
                return Err(ProbeError::NothingToTrace { what }.into());
            }
            None => false,
        };
        let alloc = wants
            .probes
            .alloc
            .then(|| AllocTracing::prepare(&Scope::Pid(pid), vm.as_deref()))
            .transpose()?;
        Ok(Prepared {
            who: Who::Pid(pid),
            ids,
            later,
            nifs,
            alloc,
        })
    }

    fn prepare_command<'a>(
        &mut self,
        wants: &Wants,
        program: PathBuf,
        argv: &'a [String],
        stdout_to_stderr: bool,
    ) -> anyhow::Result<Prepared<'a>> {
        let (ids, later, expected) =
            pending::add_for_command(&mut self.table, &wants.specs, &program)?;
        self.expected_later += expected;
        let vm = if wants.probes.nif || beam::is_launcher(&program) {
            Some(beam::vm_for_program(&program)?)
        } else {
            None
        };
        let nifs = match &vm {
            Some(vm) if wants.nifs() => self.use_vm(wants, vm)?,
            Some(_) => false,
            None if wants.specs.is_empty() && !wants.whole_process() => {
                let what = argv.first().cloned().unwrap_or_default();
                return Err(ProbeError::NothingToTrace { what }.into());
            }
            None => false,
        };
        let alloc = wants
            .probes
            .alloc
            .then(|| AllocTracing::prepare(&Scope::Program(&program), vm.as_deref()))
            .transpose()?;
        Ok(Prepared {
            who: Who::Command {
                program,
                argv,
                stdout_to_stderr,
            },
            ids,
            later,
            nifs,
            alloc,
        })
    }

    /// `--all`: the --ffi functions in every process that maps their libraries, and with
    /// --nif the NIFs of every BEAM running the `erl` in PATH.
    fn prepare_all<'a>(&mut self, wants: &Wants) -> anyhow::Result<Prepared<'a>> {
        if wants.whole_process() {
            return Err(ProbeError::AllNeedsProcess.into());
        }
        if wants.specs.is_empty() && !wants.probes.nif {
            return Err(ProbeError::AllNeedsProbe.into());
        }
        let mut ids = Vec::new();
        for spec in &wants.specs {
            push_new(&mut ids, self.table.add(spec, &Scope::All)?);
        }
        let nifs =
            wants.probes.nif && self.use_vm(wants, &beam::vm_for_program(Path::new("erl"))?)?;
        if self
            .nif
            .as_ref()
            .is_some_and(|n| matches!(n.mode, beam::tracing::Mode::Fptr { .. }))
        {
            return Err(ProbeError::FptrNeedsProcess.into());
        }
        Ok(Prepared {
            who: Who::All,
            ids,
            later: Vec::new(),
            nifs,
            alloc: None,
        })
    }

    /// Traces the NIFs of `vm`: one VM per session (its dispatch probes name every NIF).
    fn use_vm(&mut self, wants: &Wants, vm: &Path) -> Result<bool, ProbeError> {
        match &self.nif {
            Some(nif) if nif.vm != vm => Err(ProbeError::DifferentVms {
                first: nif.vm.clone(),
                second: vm.to_path_buf(),
            }),
            Some(_) => Ok(true),
            None => {
                let nif = NifTracing::prepare(vm, wants.probes.nif_mode)?;
                self.names.nif_site = nif.dispatch_site();
                self.nif = Some(nif);
                Ok(true)
            }
        }
    }
}

fn push_new(ids: &mut Vec<u32>, new: Vec<u32>) {
    for id in new {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
}
