//! What a restarted daemon found and did: [`Recovery`].

use std::fmt;

/// The outcome of [`Daemon::recover`](super::Daemon::recover): every container of the previous
/// run, sorted into what happened to it. Names are `namespace/id`.
///
/// ```
/// let mut r = task_service::service::Recovery::default();
/// r.exited_while_down.push(("default/web".into(), 137));
/// assert_eq!(r.to_string(), "adopted 0 running, 1 exited while down (default/web: 137)");
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Live containers taken back (re-opened by PID and start time).
    pub adopted: Vec<String>,
    /// Containers whose init exited while no daemon ran, with the exit code containerd gets
    /// (from exitwatch's kernel record).
    pub exited_while_down: Vec<(String, u32)>,
    /// Containers already stopped before the restart, kept for `Wait`/`Delete`.
    pub stopped: Vec<String>,
    /// Containers whose init is gone with no record of how: reported with code 255.
    pub lost: Vec<String>,
    /// Deletes interrupted by the restart (the runtime had removed the container, the record
    /// was still there): finished by removing the record.
    pub finished_deletes: Vec<String>,
    /// Runtime containers with no record (the daemon stopped between `runc create` and the
    /// record's write): deleted with `--force`.
    pub orphans_removed: Vec<String>,
    /// Records that could not be read, left in place for a human, with the reason.
    pub unreadable: Vec<String>,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "adopted {} running, {} exited while down",
            self.adopted.len(),
            self.exited_while_down.len()
        )?;
        if !self.exited_while_down.is_empty() {
            let exits: Vec<String> = self
                .exited_while_down
                .iter()
                .map(|(name, code)| format!("{name}: {code}"))
                .collect();
            write!(f, " ({})", exits.join(", "))?;
        }
        let lists = [
            ("already stopped", &self.stopped),
            ("lost (code 255)", &self.lost),
            ("interrupted deletes finished", &self.finished_deletes),
            ("orphans removed", &self.orphans_removed),
            ("unreadable records", &self.unreadable),
        ];
        for (what, list) in lists {
            if !list.is_empty() {
                write!(f, ", {} {what} ({})", list.len(), list.join(", "))?;
            }
        }
        Ok(())
    }
}
