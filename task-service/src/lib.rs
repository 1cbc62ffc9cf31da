//! One daemon that serves containerd's shim Task API (`containerd.task.v3.Task`) for every
//! container of the node.
//!
//! This crate will compose the leaf crates (`pidfd`, `exitwatch`, `runc-driver`, `fileprobe`,
//! `cgroupfold`) on smol, and hold the container state machine, persistence, recovery, the gRPC
//! surface and the binaries (`shimlessd`, its front, `containerd-shim-shimless-v2`,
//! `shimlessctl`).
//!
//! What exists so far is the wire layer, [`api`]: containerd's task v3 service and messages and
//! its task event types, generated from the `.proto` files in this crate (written to
//! containerd's schema: same packages, names and field numbers) with tonic's codegen and no
//! transport, and checked against an independent implementation in `tests/conformance.rs`.

pub mod api;
pub mod config;
pub mod console;
pub mod events;
pub mod grpc;
pub mod ids;
pub mod model;
pub mod options;
pub mod service;
pub mod state;
pub mod stdio;
