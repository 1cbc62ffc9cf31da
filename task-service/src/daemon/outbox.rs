//! The persisted outbox of one containerd: the events the daemon has handed over for it and
//! containerd has not taken yet, in a file that outlives a `kill -9` of the daemon.
//!
//! An event is appended before it is queued for containerd, and marked taken ("acked
//! through" a sequence number) once containerd accepted it; a restarted daemon sends what is
//! not marked, in order, before anything new. A `TaskExit` also stays as evidence until its
//! container's record says the process exited ([`Outbox::settle`]): recovery re-publishes an
//! exit only when neither the outbox nor the record says it was handed over.
//!
//! The file is a sequence of records, each `length (u32 LE) | FNV-1a 64 of the payload (u64 LE)
//! | payload`, the payload being a kind byte, a sequence number (u64 LE) and a body: the
//! containerd address (the header), an event (containerd's `Envelope`, protobuf), or an ack.
//! One record is one `write`: a daemon killed mid-write leaves at most a torn last record,
//! which the next load skips (and logs) before rewriting the file whole. There is no `fsync`:
//! the file lives beside the records in `/run` and describes processes that cannot outlive
//! the node, and a write is durable against the death of the process without one.
//!
//! The header's sequence number is the file's format version
//! ([`OUTBOX_FORMAT`](crate::version::OUTBOX_FORMAT); `0` in files written before versions
//! existed, read as version 1). A file of a newer version is refused ([`LoadError::Newer`]),
//! never misread.
//!
//! The only duplicate a kill can cause is the event in flight (a containerd gets one at a
//! time): containerd accepted it, and the daemon died before it saw the answer.

use crate::api::containerd::events::TaskExit;
use crate::api::containerd::services::events::v1 as pb;
use crate::events::TaskEvent;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const HEADER: u8 = b'A';
const EVENT: u8 = b'E';
const ACKED: u8 = b'K';
/// Bytes before a record's payload: its length and checksum.
const FRAME: usize = 12;
/// The largest payload a record may have: an event is a few hundred bytes.
const MAX_PAYLOAD: usize = 1 << 20;
/// A file this large whose kept records take less than a quarter of it is rewritten.
const COMPACT_AT: u64 = 256 * 1024;

/// A `TaskExit` as recovery looks it up: namespace, container, process (the exec's id, or the
/// container's for its init) and PID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ExitKey {
    ns: String,
    container: String,
    id: String,
    pid: u32,
}

impl ExitKey {
    /// The key of the exit of process `id` (PID `pid`) of container `container` in `ns`.
    pub(crate) fn new(ns: &str, container: &str, id: &str, pid: u32) -> ExitKey {
        ExitKey {
            ns: ns.to_string(),
            container: container.to_string(),
            id: id.to_string(),
            pid,
        }
    }

    /// The key and exit of an envelope holding a `TaskExit`.
    fn of(envelope: &pb::Envelope) -> Option<(ExitKey, TaskExit)> {
        let Some(TaskEvent::Exit(exit)) = envelope.event.as_ref().and_then(TaskEvent::from_any)
        else {
            return None;
        };
        let key = ExitKey::new(&envelope.namespace, &exit.container_id, &exit.id, exit.pid);
        Some((key, exit))
    }
}

/// Why [`Outbox::load`] did not read a file.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// Written by a newer shimless: to be left as it is.
    Newer(crate::version::Newer),
    /// Unreadable (no header, an I/O error), with the path and why.
    Unreadable(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Newer(newer) => newer.fmt(f),
            LoadError::Unreadable(why) => f.write_str(why),
        }
    }
}

/// An event kept in memory because the file must keep it: not taken yet, or an exit not
/// settled.
#[derive(Debug)]
struct Kept {
    envelope: pb::Envelope,
    exit: Option<ExitKey>,
    bytes: u64,
}

/// One containerd's outbox (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Outbox {
    path: PathBuf,
    address: String,
    file: Option<File>,
    next_seq: u64,
    acked: u64,
    /// Kept events after `acked`.
    pending: usize,
    kept: BTreeMap<u64, Kept>,
    /// Every kept exit, by key: its sequence number.
    exits: HashMap<ExitKey, u64>,
    /// Exits kept as evidence until their record is saved, even once taken.
    unsettled: HashSet<ExitKey>,
    file_bytes: u64,
}

impl Outbox {
    /// A new, empty outbox for `address` in `dir` (the file is named for the address).
    pub(crate) fn create(dir: &Path, address: &str) -> std::io::Result<Outbox> {
        crate::state::create_private_dir(dir)?;
        let mut outbox = Outbox {
            path: dir.join(format!("{:016x}", fnv64(address.as_bytes()))),
            address: address.to_string(),
            file: None,
            next_seq: 1,
            acked: 0,
            pending: 0,
            kept: BTreeMap::new(),
            exits: HashMap::new(),
            unsettled: HashSet::new(),
            file_bytes: 0,
        };
        outbox.rewrite()?;
        Ok(outbox)
    }

    /// Reads back the outbox in `path`, skipping records that cannot be read (each problem
    /// is returned, to be logged), then rewrites the file whole. Every exit it holds is
    /// unsettled until [`Outbox::settle`] or [`Outbox::settle_all`]. An error: the file is of
    /// a newer format (left as it is), has no readable header (its containerd is unknown), or
    /// cannot be read or rewritten.
    pub(crate) fn load(path: &Path) -> Result<(Outbox, Vec<String>), LoadError> {
        let unreadable = |why: String| LoadError::Unreadable(format!("{}: {why}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
        let (records, problems) = decode(&bytes);
        let mut records = records.into_iter();
        let address = match records.next() {
            Some((HEADER, format, body)) => {
                let what = format!("outbox {}", path.display());
                let format = u32::try_from(format).unwrap_or(u32::MAX);
                crate::version::Newer::check(&what, format, crate::version::OUTBOX_FORMAT)
                    .map_err(LoadError::Newer)?;
                String::from_utf8(body)
                    .map_err(|_| unreadable("the header is not an address".into()))?
            }
            _ => return Err(unreadable("no readable header".into())),
        };
        let mut outbox = Outbox {
            path: path.to_owned(),
            address,
            file: None,
            next_seq: 1,
            acked: 0,
            pending: 0,
            kept: BTreeMap::new(),
            exits: HashMap::new(),
            unsettled: HashSet::new(),
            file_bytes: 0,
        };
        let mut problems: Vec<String> = problems
            .into_iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect();
        for (kind, seq, body) in records {
            match kind {
                EVENT => match pb::Envelope::decode(body.as_slice()) {
                    Ok(envelope) => outbox.keep(seq, envelope),
                    Err(e) => problems.push(format!("{}: event {seq}: {e}", path.display())),
                },
                ACKED => outbox.acked = outbox.acked.max(seq),
                _ => problems.push(format!("{}: record {seq} of unknown kind", path.display())),
            }
            outbox.next_seq = outbox.next_seq.max(seq + 1);
        }
        outbox.pending = outbox.kept.range(outbox.acked + 1..).count();
        outbox.prune();
        outbox
            .rewrite()
            .map_err(|e| unreadable(format!("rewrite: {e}")))?;
        Ok((outbox, problems))
    }

    /// The containerd address the events go to.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// How many events containerd has not taken yet.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending
    }

    /// The events containerd has not taken yet, oldest first, with their sequence numbers.
    pub(crate) fn pending(&self) -> impl Iterator<Item = (u64, &pb::Envelope)> {
        self.kept
            .range(self.acked + 1..)
            .map(|(seq, kept)| (*seq, &kept.envelope))
    }

    /// Appends `envelope`; its sequence number. A failed write is returned with the number:
    /// the event is still kept (and sent) from memory, only a restart would lose it.
    pub(crate) fn append(&mut self, envelope: pb::Envelope) -> (u64, Option<std::io::Error>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = encode(EVENT, seq, &envelope.encode_to_vec());
        let written = self.write(&record).err();
        self.keep(seq, envelope);
        (seq, written)
    }

    /// Marks every event up to `seq` as taken by containerd.
    pub(crate) fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.pending -= self.kept.range(self.acked + 1..=seq).count();
        self.acked = seq;
        if let Err(e) = self.write(&encode(ACKED, seq, &[])) {
            tracing::warn!(
                "shimlessd: cannot mark event {seq} for {} as taken in {}: {e} (a restart \
                 would send it again)",
                self.address,
                self.path.display()
            );
        }
        self.prune();
        self.compact();
    }

    /// The exit under `key`, if this outbox holds it: not taken by containerd yet, or taken
    /// and not settled.
    pub(crate) fn handed_over(&self, key: &ExitKey) -> Option<TaskExit> {
        let seq = self.exits.get(key)?;
        ExitKey::of(&self.kept.get(seq)?.envelope).map(|(_, exit)| exit)
    }

    /// Forgets the exit under `key` as evidence: its record says it exited.
    pub(crate) fn settle(&mut self, key: &ExitKey) {
        if self.unsettled.remove(key) {
            self.prune();
            self.compact();
        }
    }

    /// Forgets every exit as evidence (recovery has settled every record).
    pub(crate) fn settle_all(&mut self) {
        self.unsettled.clear();
        self.prune();
        self.compact();
    }

    fn keep(&mut self, seq: u64, envelope: pb::Envelope) {
        let exit = ExitKey::of(&envelope).map(|(key, _)| key);
        if let Some(key) = &exit {
            self.exits.insert(key.clone(), seq);
            self.unsettled.insert(key.clone());
        }
        let bytes = (FRAME + 9 + envelope.encoded_len()) as u64;
        if seq > self.acked {
            self.pending += 1;
        }
        self.kept.insert(
            seq,
            Kept {
                envelope,
                exit,
                bytes,
            },
        );
    }

    /// Drops from memory what containerd took and is not an unsettled exit.
    fn prune(&mut self) {
        let done: Vec<u64> = self
            .kept
            .range(..=self.acked)
            .filter(|(_, kept)| {
                kept.exit
                    .as_ref()
                    .is_none_or(|key| !self.unsettled.contains(key))
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in done {
            if let Some(key) = self.kept.remove(&seq).and_then(|kept| kept.exit)
                && self.exits.get(&key) == Some(&seq)
            {
                self.exits.remove(&key);
            }
        }
    }

    /// Rewrites the file when most of it is records nobody needs any more.
    fn compact(&mut self) {
        let kept: u64 = self.kept.values().map(|k| k.bytes).sum();
        if self.file_bytes >= COMPACT_AT
            && kept * 4 < self.file_bytes
            && let Err(e) = self.rewrite()
        {
            tracing::warn!("shimlessd: cannot compact {}: {e}", self.path.display());
        }
    }

    /// Writes the header, every kept event and the ack mark to a new file, and puts it in
    /// place of the old one.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let format = u64::from(crate::version::OUTBOX_FORMAT);
        let mut bytes = encode(HEADER, format, self.address.as_bytes());
        for (seq, kept) in &self.kept {
            bytes.extend(encode(EVENT, *seq, &kept.envelope.encode_to_vec()));
        }
        bytes.extend(encode(ACKED, self.acked, &[]));
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let temp = self.path.with_file_name(name);
        let written = (|| {
            let mut file = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(crate::state::FILE_MODE)
                .open(&temp)?;
            file.write_all(&bytes)?;
            std::fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        self.file = Some(File::options().append(true).open(&self.path)?);
        self.file_bytes = bytes.len() as u64;
        Ok(())
    }

    fn write(&mut self, record: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self
                .file
                .insert(File::options().append(true).open(&self.path)?),
        };
        file.write_all(record)?;
        self.file_bytes += record.len() as u64;
        Ok(())
    }
}

/// One record, framed.
fn encode(kind: u8, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(9 + body.len());
    payload.push(kind);
    payload.extend(seq.to_le_bytes());
    payload.extend(body);
    let mut record = Vec::with_capacity(FRAME + payload.len());
    record.extend((payload.len() as u32).to_le_bytes());
    record.extend(fnv64(&payload).to_le_bytes());
    record.extend(payload);
    record
}

/// A decoded record: kind, sequence number, body.
type Record = (u8, u64, Vec<u8>);

/// Every record of `bytes` that can be read, and what could not: a record whose checksum is
/// wrong is skipped; a length that runs past the end (a torn last record) or is impossible
/// ends the reading.
fn decode(bytes: &[u8]) -> (Vec<Record>, Vec<String>) {
    let (mut records, mut problems) = (Vec::new(), Vec::new());
    let mut at = 0;
    while at < bytes.len() {
        let Some(frame) = bytes.get(at..at + FRAME) else {
            problems.push(format!("torn record at byte {at} (skipped)"));
            break;
        };
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap_or_default()) as usize;
        let sum = u64::from_le_bytes(frame[4..].try_into().unwrap_or_default());
        if !(9..=MAX_PAYLOAD).contains(&len) {
            problems.push(format!(
                "impossible record length {len} at byte {at}: the rest is skipped"
            ));
            break;
        }
        let Some(payload) = bytes.get(at + FRAME..at + FRAME + len) else {
            problems.push(format!("torn record at byte {at} (skipped)"));
            break;
        };
        at += FRAME + len;
        if fnv64(payload) != sum {
            problems.push(format!(
                "record ending at byte {at} has a wrong checksum (skipped)"
            ));
            continue;
        }
        let seq = u64::from_le_bytes(payload[1..9].try_into().unwrap_or_default());
        records.push((payload[0], seq, payload[9..].to_vec()));
    }
    (records, problems)
}

/// FNV-1a, 64 bits: the records' checksum, and the outbox file's name from its address.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rewrites the header of the outbox at `path` with `format` as its version (0: as a build
/// before versions wrote it), for tests.
#[cfg(test)]
pub(crate) fn set_header_format(path: &Path, format: u64) {
    let bytes = std::fs::read(path).unwrap();
    let (records, problems) = decode(&bytes);
    assert!(problems.is_empty(), "{problems:?}");
    let mut rewritten = Vec::new();
    for (kind, seq, body) in records {
        let seq = if kind == HEADER { format } else { seq };
        rewritten.extend(encode(kind, seq, &body));
    }
    std::fs::write(path, rewritten).unwrap();
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
