//! [`StateStore`]: atomic JSON records keyed by (namespace, container id).

use crate::ids::{ContainerId, InvalidId, Namespace};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".json";
const TEMP_MARK: &str = ".tmp-";
/// Records hold a container's command line and environment (through its bundle and stdio
/// paths): readable by their owner (root) only.
pub(crate) const DIR_MODE: u32 = 0o700;
/// See [`DIR_MODE`].
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// What went wrong reading or writing a record. Each variant names the file.
///
/// ```
/// use task_service::state::StateError;
/// let e = StateError::Corrupt { path: "/run/shimless/state/default/web.json".into(), reason: "EOF".into() };
/// assert!(e.to_string().contains("web.json"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation: `create`, `write`, `rename`, ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A record exists but does not parse; it is left in place for a human to look at.
    #[error("record {path} is corrupt ({reason}); it was left in place: inspect or remove it")]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// A record written by a newer shimless, in a format this one does not read: refused
    /// rather than misread, and left in place (with its container) for the newer shimless.
    #[error("{newer}")]
    Newer {
        /// The record file.
        path: PathBuf,
        /// Its version and the newest this build reads.
        newer: crate::version::Newer,
    },
    /// A file in the state directory has a name that no container could have.
    #[error("unexpected file {path} in the state directory: {source}")]
    Stray {
        /// The file.
        path: PathBuf,
        /// Why its name is not a valid namespace or id.
        #[source]
        source: InvalidId,
    },
    /// A file in the state directory that is not a record: not `<namespace>/<id>.json`.
    #[error(
        "unexpected file {path} in the state directory: records are <namespace>/<id>.json; \
         move it elsewhere"
    )]
    NotARecord {
        /// The file.
        path: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The one field of a record read before the rest: its format version (0 if absent).
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    format: u32,
}

/// JSON records of containers, one file each, saved atomically.
///
/// ```
/// use task_service::ids::{ContainerId, Namespace};
/// use task_service::state::StateStore;
///
/// let dir = tempfile::tempdir()?;
/// let store = StateStore::new(dir.path());
/// let (ns, id) = (Namespace::new("default")?, ContainerId::new("web")?);
/// store.save(&ns, &id, &vec![1, 2, 3])?;
/// assert_eq!(store.load::<Vec<u32>>(&ns, &id)?, Some(vec![1, 2, 3]));
/// assert_eq!(store.list()?, vec![(ns.clone(), id.clone())]);
/// store.remove(&ns, &id)?;
/// assert_eq!(store.load::<Vec<u32>>(&ns, &id)?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    /// A store rooted at `root` (created on first save).
    ///
    /// ```
    /// let store = task_service::state::StateStore::new("/run/shimless/state");
    /// assert_eq!(store.root(), std::path::Path::new("/run/shimless/state"));
    /// ```
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateStore { root: root.into() }
    }

    /// The directory holding the records.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, ns: &Namespace, id: &ContainerId) -> PathBuf {
        self.root.join(ns.as_str()).join(format!("{id}{SUFFIX}"))
    }

    /// Saves `record` for (`ns`, `id`), replacing any previous one atomically: after a crash of
    /// the daemon the file holds either the previous record or this one. Directories are made
    /// 0700 and the record is 0600.
    ///
    /// No fsync: see the [module docs](super) for why durability across a power loss would buy
    /// nothing here and what it would cost.
    pub fn save<T: Serialize>(
        &self,
        ns: &Namespace,
        id: &ContainerId,
        record: &T,
    ) -> Result<(), StateError> {
        let dir = self.root.join(ns.as_str());
        create_private_dir(&dir).map_err(io_err("create", &dir))?;
        let path = self.path(ns, id);
        // Unique per save: two saves of one record may run at once on different threads.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!(
            ".{id}{SUFFIX}{TEMP_MARK}{}-{n}",
            std::process::id()
        ));
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StateError::Io {
            op: "serialize",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let written = (|| {
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&temp)
                .map_err(io_err("create", &temp))?;
            file.write_all(&bytes).map_err(io_err("write", &temp))?;
            fs::rename(&temp, &path).map_err(io_err("rename", &path))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Loads the record of (`ns`, `id`); `None` if there is none. A record whose `format`
    /// field is newer than [`RECORD_FORMAT`](crate::version::RECORD_FORMAT) is refused with
    /// [`StateError::Newer`] before it is parsed as a `T` (a record without the field is
    /// version 1).
    ///
    /// ```
    /// use task_service::ids::{ContainerId, Namespace};
    /// use task_service::state::{StateError, StateStore};
    /// let dir = tempfile::tempdir()?;
    /// let store = StateStore::new(dir.path());
    /// let (ns, id) = (Namespace::new("default")?, ContainerId::new("web")?);
    /// std::fs::create_dir(dir.path().join("default"))?;
    /// std::fs::write(dir.path().join("default/web.json"), br#"{"format": 99, "x": 1}"#)?;
    /// let err = store.load::<serde_json::Value>(&ns, &id).unwrap_err();
    /// assert!(matches!(err, StateError::Newer { .. }), "{err}");
    /// assert!(dir.path().join("default/web.json").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load<T: DeserializeOwned>(
        &self,
        ns: &Namespace,
        id: &ContainerId,
    ) -> Result<Option<T>, StateError> {
        let path = self.path(ns, id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        if let Ok(Peek { format }) = serde_json::from_slice::<Peek>(&bytes) {
            let what = format!("record {}", path.display());
            crate::version::Newer::check(&what, format, crate::version::RECORD_FORMAT).map_err(
                |newer| StateError::Newer {
                    path: path.clone(),
                    newer,
                },
            )?;
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Removes the record of (`ns`, `id`); removing a missing record is not an error.
    pub fn remove(&self, ns: &Namespace, id: &ContainerId) -> Result<(), StateError> {
        let path = self.path(ns, id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Moves the record of (`ns`, `id`) aside, to `<id>.json.<mark>` beside it, for a human
    /// to look at (a record that could not be read, before a rebuilt one replaces it); its new
    /// path. Later listings report the file as not a record.
    ///
    /// ```
    /// use task_service::ids::{ContainerId, Namespace};
    /// let dir = tempfile::tempdir()?;
    /// let store = task_service::state::StateStore::new(dir.path());
    /// let (ns, id) = (Namespace::new("default")?, ContainerId::new("web")?);
    /// store.save(&ns, &id, &1)?;
    /// let aside = store.set_aside(&ns, &id, "unreadable")?;
    /// assert!(aside.ends_with("default/web.json.unreadable"));
    /// assert_eq!(store.load::<u32>(&ns, &id)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_aside(
        &self,
        ns: &Namespace,
        id: &ContainerId,
        mark: &str,
    ) -> Result<PathBuf, StateError> {
        let path = self.path(ns, id);
        let aside = path.with_file_name(format!("{id}{SUFFIX}.{mark}"));
        fs::rename(&path, &aside).map_err(io_err("rename", &path))?;
        Ok(aside)
    }

    /// Every (namespace, id) that has a record, sorted; temporary files left by a crash are
    /// deleted on the way. A file whose name no container could have is an error, not skipped
    /// (see [`StateStore::listing`] for a listing that reports such files and goes on).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = task_service::state::StateStore::new(dir.path());
    /// std::fs::create_dir_all(dir.path().join("default"))?;
    /// std::fs::write(dir.path().join("default/x.json~"), b"")?;
    /// assert!(store.list().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list(&self) -> Result<Vec<(Namespace, ContainerId)>, StateError> {
        let listing = self.listing()?;
        match listing.strays.into_iter().next() {
            Some(stray) => Err(stray),
            None => Ok(listing.records),
        }
    }

    /// Every (namespace, id) that has a record, sorted, and beside them every entry of the
    /// state directory that is not a record (`x.json~`, `.keep`, `lost+found`, an unreadable
    /// namespace directory), each as the error naming it. One odd entry never hides the
    /// records next to it; only an unreadable state directory fails the whole listing.
    ///
    /// ```
    /// use task_service::ids::{ContainerId, Namespace};
    /// let dir = tempfile::tempdir()?;
    /// let store = task_service::state::StateStore::new(dir.path());
    /// store.save(&Namespace::new("default")?, &ContainerId::new("web")?, &1)?;
    /// std::fs::write(dir.path().join("default/web.json~"), b"")?;
    /// std::fs::create_dir(dir.path().join("lost+found"))?;
    /// let listing = store.listing()?;
    /// assert_eq!(listing.records.len(), 1);
    /// assert_eq!(listing.strays.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listing(&self) -> Result<Listing, StateError> {
        let mut listing = Listing::default();
        let namespaces = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(io_err("read", &self.root)(e)),
        };
        for ns_entry in namespaces {
            let ns_entry = ns_entry.map_err(io_err("read", &self.root))?;
            let ns_path = ns_entry.path();
            let name = ns_entry.file_name().to_string_lossy().into_owned();
            match Namespace::new(name) {
                Ok(ns) if ns_path.is_dir() => list_namespace(&ns, &ns_path, &mut listing),
                Ok(_) => listing.strays.push(not_a_directory(ns_path)),
                Err(source) => listing.strays.push(StateError::Stray {
                    path: ns_path,
                    source,
                }),
            }
        }
        listing.records.sort();
        Ok(listing)
    }
}

/// What [`StateStore::listing`] found: the records, and the entries that are not records.
///
/// ```
/// let listing = task_service::state::Listing::default();
/// assert!(listing.records.is_empty() && listing.strays.is_empty());
/// ```
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Listing {
    /// Every (namespace, id) that has a record, sorted.
    pub records: Vec<(Namespace, ContainerId)>,
    /// Every other entry, as the error that names it and says why it is not a record.
    pub strays: Vec<StateError>,
}

/// Lists one namespace directory into `listing`: its records, its strays, its temporary files
/// deleted.
fn list_namespace(ns: &Namespace, ns_path: &Path, listing: &mut Listing) {
    let entries = match fs::read_dir(ns_path) {
        Ok(entries) => entries,
        Err(e) => return listing.strays.push(io_err("read", ns_path)(e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return listing.strays.push(io_err("read", ns_path)(e)),
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(TEMP_MARK) {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let Some(id) = name.strip_suffix(SUFFIX) else {
            listing
                .strays
                .push(StateError::NotARecord { path: entry.path() });
            continue;
        };
        match ContainerId::new(id) {
            Ok(id) => listing.records.push((ns.clone(), id)),
            Err(source) => listing.strays.push(StateError::Stray {
                path: entry.path(),
                source,
            }),
        }
    }
}

/// The error for a namespace entry of the state directory that is a file, not a directory.
fn not_a_directory(path: PathBuf) -> StateError {
    StateError::NotARecord { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Namespace, ContainerId) {
        (
            Namespace::new("k8s.io").unwrap(),
            ContainerId::new("web").unwrap(),
        )
    }

    #[test]
    fn a_save_replaces_the_previous_record_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        store.save(&ns, &id, &"x".repeat(10_000)).unwrap();
        store.save(&ns, &id, &"short").unwrap();
        assert_eq!(
            store.load::<String>(&ns, &id).unwrap().as_deref(),
            Some("short")
        );
        let files: Vec<_> = fs::read_dir(dir.path().join("k8s.io")).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file may remain");
    }

    #[test]
    fn a_crash_mid_save_leaves_the_old_record_and_a_temp_file_that_list_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        store.save(&ns, &id, &1u32).unwrap();
        // What a crash between write and rename leaves: a half-written temporary file.
        let temp = dir.path().join("k8s.io/.web.json.tmp-999");
        fs::write(&temp, b"{\"half").unwrap();
        assert_eq!(store.load::<u32>(&ns, &id).unwrap(), Some(1));
        assert_eq!(store.list().unwrap(), vec![ids()]);
        assert!(!temp.exists());
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_path_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        fs::create_dir_all(dir.path().join("k8s.io")).unwrap();
        let path = dir.path().join("k8s.io/web.json");
        fs::write(&path, b"not json").unwrap();
        match store.load::<u32>(&ns, &id) {
            Err(StateError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
        assert!(path.exists());
    }

    #[test]
    fn a_newer_record_is_refused_naming_the_file_and_both_versions_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        fs::create_dir_all(dir.path().join("k8s.io")).unwrap();
        let path = dir.path().join("k8s.io/web.json");
        let newer = crate::version::RECORD_FORMAT + 1;
        // A field this build would misread (a number where it expects a string).
        let text = format!(r#"{{"format": {newer}, "bundle": 7}}"#);
        fs::write(&path, &text).unwrap();
        match store.load::<serde_json::Value>(&ns, &id) {
            Err(StateError::Newer { path: p, newer: e }) => {
                assert_eq!(p, path);
                assert_eq!(
                    (e.found, e.supported),
                    (newer, crate::version::RECORD_FORMAT)
                );
                let message = StateError::Newer { path: p, newer: e }.to_string();
                assert!(message.contains(&path.display().to_string()), "{message}");
                assert!(message.contains(&format!("version {newer}")), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "left as it was");
        assert_eq!(
            store.list().unwrap(),
            vec![ids()],
            "still listed as a record"
        );
    }

    #[test]
    fn records_without_a_format_or_of_an_older_or_the_current_one_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        fs::create_dir_all(dir.path().join("k8s.io")).unwrap();
        let path = dir.path().join("k8s.io/web.json");
        for text in [
            r#"{"x": 1}"#.to_string(),
            r#"{"format": 1, "x": 1}"#.to_string(),
            format!(r#"{{"format": {}, "x": 1}}"#, crate::version::RECORD_FORMAT),
        ] {
            fs::write(&path, &text).unwrap();
            let loaded = store.load::<serde_json::Value>(&ns, &id).unwrap().unwrap();
            assert_eq!(loaded["x"], 1, "{text}");
        }
    }

    #[test]
    fn records_and_their_directories_are_private_to_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let store = StateStore::new(&root);
        let (ns, id) = ids();
        store.save(&ns, &id, &"secret env").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("k8s.io")), 0o700);
        assert_eq!(mode(&root.join("k8s.io/web.json")), 0o600);
    }

    #[test]
    fn a_stray_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("default")).unwrap();
        fs::write(dir.path().join("default/bad name.json"), b"{}").unwrap();
        let err = StateStore::new(dir.path()).list().unwrap_err();
        assert!(matches!(err, StateError::Stray { .. }), "{err}");
        assert!(err.to_string().contains("bad name.json"), "{err}");
    }

    #[test]
    fn stray_entries_are_reported_beside_the_records_they_never_hide() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        store.save(&ns, &id, &1u32).unwrap();
        fs::write(dir.path().join("k8s.io/web.json~"), b"").unwrap();
        fs::write(dir.path().join("k8s.io/.keep"), b"").unwrap();
        fs::write(dir.path().join("k8s.io/notes"), b"").unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        fs::write(dir.path().join("stray-file"), b"").unwrap();
        let listing = store.listing().unwrap();
        assert_eq!(listing.records, vec![ids()]);
        let mut named: Vec<String> = listing
            .strays
            .iter()
            .map(|e| e.to_string().split_whitespace().nth(2).unwrap().to_string())
            .collect();
        named.sort();
        let root = dir.path().display();
        assert_eq!(
            named,
            vec![
                format!("{root}/k8s.io/.keep"),
                format!("{root}/k8s.io/notes"),
                format!("{root}/k8s.io/web.json~"),
                format!("{root}/lost+found"),
                format!("{root}/stray-file"),
            ]
        );
    }

    #[test]
    fn an_empty_or_missing_store_lists_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            StateStore::new(dir.path().join("absent"))
                .list()
                .unwrap()
                .is_empty()
        );
        let store = StateStore::new(dir.path());
        let (ns, id) = ids();
        store.remove(&ns, &id).unwrap();
        assert_eq!(store.load::<u32>(&ns, &id).unwrap(), None);
    }
}
