//! containerd's wire types, generated from `proto/` at build time.
//!
//! Module paths mirror the protobuf packages (`containerd.task.v3` is
//! [`containerd::task::v3`], `containerd.v1.types` is [`containerd::v1::types`], ...), which is
//! what the generated code's cross-package references expect. Well-known types (`Any`,
//! `Timestamp`, `Empty`) are `prost_types`'.
//!
//! ```
//! use prost::Message;
//! use task_service::api::containerd::task::v3::CreateTaskRequest;
//!
//! let req = CreateTaskRequest { id: "web".into(), bundle: "/run/b/web".into(), ..Default::default() };
//! let bytes = req.encode_to_vec();
//! assert_eq!(CreateTaskRequest::decode(bytes.as_slice()).unwrap(), req);
//! ```

/// The `containerd.*` protobuf packages.
#[allow(missing_docs)] // generated code: containerd's API reference documents it
pub mod containerd {
    /// Package `containerd.types`: mounts, and the `RuntimeInfo` a shim prints for `-info`.
    pub mod types {
        include!(concat!(env!("OUT_DIR"), "/containerd.types.rs"));
    }

    /// Package `containerd.v1.types`.
    pub mod v1 {
        /// Package `containerd.v1.types`: process status and process info.
        pub mod types {
            include!(concat!(env!("OUT_DIR"), "/containerd.v1.types.rs"));
        }
    }

    /// Package `containerd.task`.
    pub mod task {
        /// Package `containerd.task.v3`: the shim Task service and its messages.
        pub mod v3 {
            include!(concat!(env!("OUT_DIR"), "/containerd.task.v3.rs"));
        }
    }

    /// Package `containerd.runc`.
    pub mod runc {
        /// Package `containerd.runc.v1`: the runtime options of `io.containerd.runc.v2`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/containerd.runc.v1.rs"));
        }
    }

    /// Package `containerd.services`.
    pub mod services {
        /// Package `containerd.services.events`.
        pub mod events {
            /// Package `containerd.services.events.v1`: the Events service (`Subscribe`, which
            /// shimless serves, and `Forward`, which it calls on containerd) and `Envelope`.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.events.v1.rs"
                ));
            }
        }
        /// Package `containerd.services.version`.
        pub mod version {
            /// Package `containerd.services.version.v1`: which containerd answers on a socket
            /// (the shim's `start` picks its bootstrap version by it).
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.version.v1.rs"
                ));
            }
        }
    }

    /// Package `containerd.runtime`.
    pub mod runtime {
        /// Package `containerd.runtime.bootstrap`.
        pub mod bootstrap {
            /// Package `containerd.runtime.bootstrap.v1`: what containerd 2.3+ writes on
            /// `start`'s stdin (`BootstrapParams`) and may read back (`BootstrapResult`).
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.runtime.bootstrap.v1.rs"
                ));
            }
        }
    }

    /// Package `containerd.events`: the task events a shim publishes.
    pub mod events {
        include!(concat!(env!("OUT_DIR"), "/containerd.events.rs"));
    }
}

/// Package `ttrpc`: the envelope of containerd's ttrpc protocol (request, response, status).
#[allow(missing_docs)] // generated code: proto/ttrpc/ttrpc.proto documents it
pub mod ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ttrpc.rs"));
}

/// The `shimless.*` protobuf packages: the daemon's own calls beside containerd's.
#[allow(missing_docs)] // generated code: proto/shimless/v1/admin.proto documents it
pub mod shimless {
    /// Package `shimless.v1`: `Admin/List`, what `shimlessctl ps` shows.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shimless.v1.rs"));
    }
}

/// The `io.containerd.*` protobuf packages.
#[allow(missing_docs)] // generated code: proto/containerd/cgroups/v1/metrics.proto documents it
pub mod io {
    /// Package `io.containerd`.
    pub mod containerd {
        /// Package `io.containerd.cgroups`.
        pub mod cgroups {
            /// Package `io.containerd.cgroups.v1`: the cgroup v1 `Metrics` of `Stats` (the
            /// fields shimless fills).
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/io.containerd.cgroups.v1.rs"));
            }
        }
    }
}

/// A time as protobuf's `Timestamp` (times before 1970 become the epoch).
///
/// ```
/// let t = task_service::api::timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500));
/// assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
/// ```
pub fn timestamp(at: std::time::SystemTime) -> prost_types::Timestamp {
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
