//! Builds the eBPF object with clang when it is installed, else uses the committed one
//! (`bpf/exit_tracker.bpf.o`), so users without clang can build the crate.
//!
//! The build is reproducible: run from the crate directory with a relative source path,
//! `-fdebug-prefix-map` hiding the directory, and debug info stripped (BTF kept), the object
//! is byte-identical wherever the crate sits — a test checks the committed one against a fresh
//! build.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "bpf/exit_tracker.bpf.c";
const COMMITTED: &str = "bpf/exit_tracker.bpf.o";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed={COMMITTED}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("exit_tracker.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    match compile(&clang, &manifest, &out) {
        Ok(()) => {}
        Err(why) => {
            println!("cargo:warning=using the committed eBPF object ({why})");
            std::fs::copy(manifest.join(COMMITTED), &out)
                .expect("the committed eBPF object is missing");
        }
    }
}

fn compile(clang: &str, manifest: &Path, out: &Path) -> Result<(), String> {
    let unstripped = out.with_extension("unstripped.o");
    let status = Command::new(clang)
        .current_dir(manifest)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-fdebug-prefix-map={}=.", manifest.display()))
        .args(["-c", SOURCE, "-o"])
        .arg(&unstripped)
        .status()
        .map_err(|e| format!("{clang} not runnable: {e}"))?;
    if !status.success() {
        return Err(format!("{clang} failed: {status}"));
    }
    let strip = Command::new("llvm-strip")
        .arg("-g")
        .arg(&unstripped)
        .arg("-o")
        .arg(out)
        .status()
        .map_err(|e| format!("llvm-strip not runnable: {e}"))?;
    if !strip.success() {
        return Err(format!("llvm-strip failed: {strip}"));
    }
    Ok(())
}
