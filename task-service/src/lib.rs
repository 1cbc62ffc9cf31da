//! One daemon that serves containerd's shim Task API (`containerd.task.v3.Task`) for every
//! container of the node.
//!
//! Each binary has the module of the same job:
//!
//! | binary | module | what it is |
//! |---|---|---|
//! | `shimlessd` | [`daemon`] ([`daemon::Daemon`]) | the Task service for every container, served by [`grpc::serve`] |
//! | `shimless-front` | [`front`] | the socket containerd dials (one per namespace, ttrpc or gRPC), forwarding to `shimlessd` and holding calls while it is away; it starts and supervises `shimlessd` |
//! | `containerd-shim-shimless-v2` | [`shim`] | the runtime v2 binary containerd runs: `start` makes sure the front serves, `delete` cleans one container up |
//! | `shimlessctl` | [`client`] | a client of `shimlessd` by hand; [`client::Client`] is the one client every binary, test and bench uses |
//!
//! Inside [`daemon`], one module per job: per-container state, the one spawn path of an init's
//! `Create` and an exec's `Start`, exit watching, lifecycle calls, the Task and Admin handlers
//! (short, delegating), recovery after a restart. It composes the leaf crates: `runc-driver`
//! runs the runtime, `pidfd` and `exitwatch` give exit statuses (`waitid` as the child
//! subreaper, the kernel's record, `PIDFD_INFO_EXIT`), `cgroupfold` reads OOM kills.
//!
//! The other pieces: [`api`] (containerd's wire types and services, generated from the `.proto`
//! files in this crate and checked against an independent implementation in
//! `tests/conformance.rs`), [`grpc`] (HTTP/2 on smol over a unix socket, peer-uid checks and
//! deadlines; its sockets from [`listen`]), [`model`] (the pure container state machine), [`state`] (atomic records),
//! [`stdio`] and [`console`] (streams and terminals), [`rootfs`], [`events`], [`config`],
//! [`options`], [`probes`] (the pod annotation of daemon-run probes), [`ids`] and [`version`]
//! (the format versions of records, outboxes and the front↔daemon protocol).
//!
//! ```no_run
//! use std::sync::Arc;
//! use task_service::{config::Config, daemon::Daemon, grpc};
//! let ex = Arc::new(smol::Executor::new());
//! let config = Config::default();
//! let daemon = Daemon::new(config.clone(), ex.clone())?;
//! smol::block_on(ex.run(async {
//!     println!("{}", daemon.recover().await?);
//!     let listener = grpc::listen::bind(&config.socket)?;
//!     grpc::serve(listener, daemon.into_router(), ex.clone(), grpc::ServeConfig::default()).await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! }))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod api;
pub mod client;
pub mod config;
pub mod console;
pub mod daemon;
pub mod events;
pub mod fold;
pub mod front;
pub mod grpc;
pub mod ids;
pub mod listen;
mod lock;
pub mod logcap;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod options;
pub mod probes;
pub mod rootfs;
pub mod shim;
pub mod state;
pub mod stdio;
pub mod version;
