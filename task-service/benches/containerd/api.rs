//! containerd's Containers and Tasks services (client side, generated from `benches/proto/`),
//! and the names the benches that drive containerd share.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod containers {
    include!(concat!(
        env!("OUT_DIR"),
        "/bench/containerd.services.containers.v1.rs"
    ));
}

pub mod tasks {
    include!(concat!(
        env!("OUT_DIR"),
        "/bench/containerd.services.tasks.v1.rs"
    ));
}

/// The stock runtime (one `containerd-shim-runc-v2` per container).
pub const STOCK: &str = "io.containerd.runc.v2";
/// shimless's runtime name.
pub const SHIMLESS: &str = "io.containerd.shimless.v2";
/// The type URL of an OCI spec in a container record.
pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The type URL of runc's runtime options.
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
/// This build's shim binary.
pub const SHIM_BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-shimless-v2");
