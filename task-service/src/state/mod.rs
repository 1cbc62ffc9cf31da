//! Persistent records, one JSON file per container, written so that a crash at any instant
//! leaves either the old record or the new one, never a torn file.
//!
//! Layout: `<root>/<namespace>/<id>.json` (default root `/run/shimless/state`). A save writes a
//! temporary file in the same directory, fsyncs it, renames it over the record, and fsyncs the
//! directory. Temporary files a crash left behind are swept by [`StateStore::list`].

mod store;

pub use store::{Listing, StateError, StateStore};
