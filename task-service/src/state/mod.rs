//! Persistent records, one JSON file per container, written so that a crash at any instant
//! leaves either the old record or the new one, never a torn file.
//!
//! Layout: `<root>/<namespace>/<id>.json` (default root `/run/shimless/state`), directories
//! 0700 and records 0600 (a record names a container's bundle, stdio and runtime: root's
//! business only). A save writes a temporary file in the same directory and renames it over the
//! record. Temporary files a crash left behind are swept by [`StateStore::list`].
//!
//! # Why there is no fsync
//!
//! A rename is atomic against a crash of the *process*: the page cache is the kernel's, so a
//! daemon killed at any instant leaves the old record or the new one, and the next daemon reads
//! exactly that. An fsync adds durability against a crash of the *machine* only, and there it
//! buys nothing: the records describe processes that cannot outlive a reboot, and on a node
//! `/run` is a tmpfs that a reboot empties anyway (where an fsync is free and useless). On a
//! disk-backed state directory (this VM's ext4 `/run`, a `--state-dir` on `/var`) the two
//! fsyncs a save used to make (file, then directory) cost a journal commit each on the exit
//! path: that was most of the exit → `Wait` latency when a hundred containers exit at once.
//! What a power loss can leave there (an old or an empty record of a container that no longer
//! exists) is what recovery handles anyway: a record whose runtime state is gone.
//!
//! # One daemon per directory
//!
//! [`StateLock`] holds an exclusive lock on the state directory (a POSIX record lock on
//! `<dir>.lock`, which a forked runtime never shares) for the daemon's lifetime: a second
//! `shimlessd` on the same directory is refused before it binds a socket or reads a record
//! (binding would unlink the first daemon's live socket, and recovering the same records twice
//! would run every container's clean-up twice), and a daemon started right after `kill -9` of
//! the last one finds the lock free.

mod lock;
mod store;

pub use lock::{LockError, StateLock};
pub(crate) use store::{FILE_MODE, create_private_dir};
pub use store::{Listing, StateError, StateStore};
