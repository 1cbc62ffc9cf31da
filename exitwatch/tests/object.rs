//! The committed eBPF object is exactly what clang builds from the committed source.

use integration::{Need, require};
use std::process::Command;

#[test]
fn the_committed_object_matches_a_fresh_clang_build() {
    let Some(()) = require(&[Need::Program("clang"), Need::Program("llvm-strip")]) else {
        return;
    };
    let manifest = env!("CARGO_MANIFEST_DIR");
    let out = tempfile::tempdir().unwrap();
    let unstripped = out.path().join("fresh.unstripped.o");
    let fresh = out.path().join("fresh.o");
    // The same invocation as build.rs.
    let built = Command::new("clang")
        .current_dir(manifest)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-fdebug-prefix-map={manifest}=."))
        .args(["-c", "bpf/exit_tracker.bpf.c", "-o"])
        .arg(&unstripped)
        .status()
        .unwrap();
    assert!(built.success());
    assert!(
        Command::new("llvm-strip")
            .arg("-g")
            .arg(&unstripped)
            .arg("-o")
            .arg(&fresh)
            .status()
            .unwrap()
            .success()
    );
    let committed = std::fs::read(format!("{manifest}/bpf/exit_tracker.bpf.o")).unwrap();
    assert!(
        std::fs::read(&fresh).unwrap() == committed,
        "bpf/exit_tracker.bpf.o is stale: rebuild it (see build.rs) and commit it"
    );
}
