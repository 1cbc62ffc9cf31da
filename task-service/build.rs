//! Generates the gRPC server and client code for containerd's shim Task API (and the task event
//! types) from `proto/`, and Kubernetes' CRI (`runtime.v1`, used by the CRI tests and bench
//! only), with tonic's codegen but without its transport (that would pull in a tokio runtime;
//! the daemon serves HTTP/2 with hyper on smol instead).
//!
//! The containerd benchmark's client of containerd's own Containers and Tasks services
//! (`benches/proto/`, a subset of containerd 1.7's) is generated too, client only, into
//! `$OUT_DIR/bench/`: only `benches/containerd.rs` includes it.
//!
//! protoc comes from `protoc-bin-vendored` unless `PROTOC` names one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=benches/proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_with_config(
            config,
            &[
                PathBuf::from("proto/containerd/task/v3/shim.proto"),
                PathBuf::from("proto/containerd/events/task.proto"),
                PathBuf::from("proto/containerd/runc/v1/options.proto"),
                PathBuf::from("proto/containerd/services/events/v1/events.proto"),
                PathBuf::from("proto/shimless/v1/admin.proto"),
                PathBuf::from("proto/containerd/cgroups/v1/metrics.proto"),
                PathBuf::from("proto/containerd/services/version/v1/version.proto"),
                PathBuf::from("proto/containerd/types/introspection.proto"),
                PathBuf::from("proto/containerd/runtime/bootstrap/v1/bootstrap.proto"),
                PathBuf::from("proto/ttrpc/ttrpc.proto"),
                // Kubernetes' CRI (the part the CRI tests send): only `tests/cri.rs` and
                // `benches/cri.rs` include it.
                PathBuf::from("proto/k8s/cri/runtime_v1.proto"),
            ],
            &[PathBuf::from("proto"), protoc_bin_vendored::include_path()?],
        )?;

    let bench_out =
        PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?).join("bench");
    std::fs::create_dir_all(&bench_out)?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_transport(false)
        .build_server(false)
        .out_dir(&bench_out)
        .compile_with_config(
            config,
            &[
                PathBuf::from("benches/proto/containers.proto"),
                PathBuf::from("benches/proto/tasks.proto"),
            ],
            &[
                PathBuf::from("benches/proto"),
                protoc_bin_vendored::include_path()?,
            ],
        )?;
    Ok(())
}
