//! One daemon that serves containerd's shim Task API (`containerd.task.v3.Task`) for every
//! container of the node.
//!
//! The binaries are `shimlessd` (the daemon: [`service::Daemon`] served by [`grpc::serve`]) and
//! `shimlessctl`. The pieces: [`api`] (containerd's wire types and services, generated from the
//! `.proto` files in this crate and checked against an independent implementation in
//! `tests/conformance.rs`), [`grpc`] (HTTP/2 on smol over a unix socket, peer-uid checks and
//! deadlines), [`service`] (the Task service, the exit pipeline through pidfd and exitwatch, and
//! recovery after a restart), [`model`] (the pure container state machine), [`state`] (atomic
//! records), [`stdio`] and [`console`] (streams and terminals), [`events`], [`config`],
//! [`options`] and [`ids`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use task_service::{config::Config, grpc, service::Daemon};
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
pub mod config;
pub mod console;
pub mod events;
pub mod front;
pub mod grpc;
pub mod ids;
pub mod logcap;
pub mod model;
pub mod options;
pub mod rootfs;
pub mod service;
pub mod shim;
pub mod state;
pub mod stdio;
