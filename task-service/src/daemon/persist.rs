//! Saving and removing container records: a numbered snapshot is written unless a newer one
//! was, or the container was deleted meanwhile.

use super::Daemon;
use super::container::{Entry, Key, Snapshot};
use super::errors;
use super::record::Record;
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use std::sync::Arc;
use tonic::Status;

impl Daemon {
    /// Saves `record` now, on the calling thread (call it from the blocking pool, or where
    /// nothing else can run yet).
    pub(super) fn save(&self, key: &Key, record: &Record) -> Result<(), Status> {
        self.inner
            .store
            .save(&key.0, &key.1, record)
            .map_err(|e| errors::internal("save the record", e))
    }

    /// Saves a snapshot unless a newer one was saved already or the container was deleted
    /// meanwhile; on the blocking pool (a save writes and renames a file).
    pub(super) async fn persist(
        &self,
        key: &Key,
        entry: &Entry,
        snapshot: Snapshot,
    ) -> Result<bool, Status> {
        let mut written = entry.save_lock.lock().await;
        if !self.is_current(key, entry) || snapshot.seq <= *written {
            return Ok(false);
        }
        self.save_off_executor(key, snapshot.record).await?;
        *written = snapshot.seq;
        Ok(true)
    }

    /// Whether `entry` is still the container under `key` (not deleted meanwhile).
    pub(super) fn is_current(&self, key: &Key, entry: &Entry) -> bool {
        lock(&self.inner.containers)
            .get(key)
            .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), entry))
    }

    /// Saves on the blocking pool: a save is file I/O, and a burst of exits must not queue
    /// behind each other's writes on the executor's threads.
    async fn save_off_executor(&self, key: &Key, record: Record) -> Result<(), Status> {
        let store = self.inner.store.clone();
        let (ns, id) = key.clone();
        smol::unblock(move || store.save(&ns, &id, &record))
            .await
            .map_err(|e| errors::internal("save the record", e))
    }

    /// Removes a deleted container's record and forgets the container; ordered after any save
    /// in progress, so no save writes the record back.
    pub(super) async fn forget_container(&self, key: &Key, entry: &Entry) -> Result<(), Status> {
        let _saving = entry.save_lock.lock().await;
        let (store, (ns, id)) = (self.inner.store.clone(), key.clone());
        smol::unblock(move || store.remove(&ns, &id))
            .await
            .map_err(|e| errors::internal("remove the record", e))?;
        lock(&self.inner.containers).remove(key);
        self.unwatch_oom(key);
        Ok(())
    }

    /// Forgets a container whose runtime side is gone: its rootfs mounts and its record.
    pub(super) fn drop_record(
        &self,
        ns: &Namespace,
        id: &ContainerId,
        record: &Record,
    ) -> Result<(), Status> {
        if record.rootfs_mounted {
            crate::rootfs::unmount_all(&record.bundle);
        }
        self.inner
            .store
            .remove(ns, id)
            .map_err(|e| errors::internal("remove the record", e))
    }
}
