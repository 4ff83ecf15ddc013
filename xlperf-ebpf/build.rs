use which::which;

/// Rebuild the eBPF object whenever bpf-linker changes: a linker built against another
/// LLVM produces an object the kernel may reject.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
