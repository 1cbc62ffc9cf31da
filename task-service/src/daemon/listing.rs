//! What the runtime says of the recovered containers: one `runc list` per runtime root, read
//! once at recovery, instead of one `runc state` per record (a runtime process each: about
//! 5 ms apiece here, the larger part of a restart's time with 1,000 containers).
//!
//! A root whose listing fails falls back to `runc state` for each of its containers, and so
//! does a container whose init was recorded as created: a `runc start` still on its way when
//! the daemon died changes it after the listing was taken, so it is asked once that call ended.

use runc_driver::{Runc, State};
use std::collections::HashMap;
use std::path::PathBuf;

/// A runtime as recovery meets it: binary, root, systemd cgroup driver.
type RuntimeKey = (PathBuf, PathBuf, bool);

/// The listings read so far, per runtime (`None`: it could not be listed).
#[derive(Default)]
pub(super) struct Listings {
    by_runtime: HashMap<RuntimeKey, Option<HashMap<String, State>>>,
}

/// What the runtime knows of one container.
pub(super) struct Known {
    /// The runtime has a container of that id.
    pub(super) exists: bool,
    /// Its state, when it has one and it could be read.
    pub(super) state: Option<State>,
}

impl Listings {
    /// What `runc` (whose runtime is `key`) says of container `id`: from its root's listing,
    /// read on first use, or, when `fresh` is asked or the root cannot be listed, from
    /// `runc state`.
    pub(super) async fn of(
        &mut self,
        runc: &Runc,
        key: RuntimeKey,
        id: &str,
        fresh: bool,
    ) -> Known {
        if !fresh {
            if !self.by_runtime.contains_key(&key) {
                let listed = runc.list().await.ok().map(|states| {
                    states
                        .into_iter()
                        .map(|s| (s.id.clone(), s))
                        .collect::<HashMap<_, _>>()
                });
                self.by_runtime.insert(key.clone(), listed);
            }
            if let Some(Some(all)) = self.by_runtime.get(&key) {
                let state = all.get(id).cloned();
                return Known {
                    exists: state.is_some(),
                    state,
                };
            }
        }
        let answer = runc.state(id).await;
        Known {
            exists: !matches!(answer, Err(runc_driver::Error::NotFound { .. })),
            state: answer.ok(),
        }
    }
}
