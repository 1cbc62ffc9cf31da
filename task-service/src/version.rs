//! Format versions of what shimless keeps and speaks across an upgrade: container records
//! (and the intents they begin as), the outboxes of events, and the protocol between
//! `shimless-front` and `shimlessd`.
//!
//! A live upgrade runs a new binary against what an older one wrote, and a rollback runs an
//! older binary against what a newer one wrote. Each format carries a version number; a build
//! reads every version up to its own (a file written before versions existed is version 1),
//! and refuses a newer one with [`Newer`], naming the file or peer and both versions, instead
//! of misreading it. What it refuses it leaves in place: recovery never deletes a record it
//! cannot read as its own, nor its container.
//!
//! | format | version | what changed |
//! |---|---|---|
//! | record (`<state>/<ns>/<id>.json`) | 1 | the first; its `format` field absent or `1` |
//! | outbox (`<state>.outbox/<hash>`) | 1 | the first; its header's sequence number `0` or `1` |
//! | front↔daemon protocol | 1 | the first; `Health/Status` without `protocol_version`, or `1` |

/// The version of the container records this build writes, and the newest it reads.
pub const RECORD_FORMAT: u32 = 1;

/// The version of the outbox files this build writes, and the newest it reads.
pub const OUTBOX_FORMAT: u32 = 1;

/// The version of the front↔daemon protocol this build speaks, and the newest it accepts from
/// a peer (`shimlessd` reports its own in `Health/Status`).
pub const PROTOCOL: u32 = 1;

/// What marks the build tag in the binaries (see [`build`]).
pub const BUILD_TAG_MARK: &str = "SHIMLESS_BUILD_TAG=";

/// The bytes after [`BUILD_TAG_MARK`] that hold the tag, padded with NULs.
pub const BUILD_TAG_LEN: usize = 40;

const MARK_LEN: usize = BUILD_TAG_MARK.len();

/// The mark and the tag: `SHIMLESS_BUILD_TAG` at build time (`dev` without it), cut to
/// [`BUILD_TAG_LEN`] bytes.
const fn tagged() -> [u8; MARK_LEN + BUILD_TAG_LEN] {
    let mut out = [0u8; MARK_LEN + BUILD_TAG_LEN];
    let mark = BUILD_TAG_MARK.as_bytes();
    let tag = match option_env!("SHIMLESS_BUILD_TAG") {
        Some(tag) => tag.as_bytes(),
        None => b"dev",
    };
    let mut i = 0;
    while i < MARK_LEN {
        out[i] = mark[i];
        i += 1;
    }
    let mut j = 0;
    while j < tag.len() && j < BUILD_TAG_LEN {
        out[MARK_LEN + j] = tag[j];
        j += 1;
    }
    out
}

/// One copy of the mark and tag in the binary's read-only data, read at run time (never
/// folded into the code), so that a copy of a binary can be given another tag in place.
static BUILD_TAG: [u8; MARK_LEN + BUILD_TAG_LEN] = tagged();

/// This build's identity as `shimless-front` (`Front/Info`) and `shimlessd` (`Health/Status`)
/// report it: the crate's version, `+`, and the build tag (`SHIMLESS_BUILD_TAG` when it was
/// built, else `dev`). The tag is kept in the binary after [`BUILD_TAG_MARK`], so a test can
/// make a second build out of a copy of a binary (as `tests/upgrade.rs` does) without
/// compiling it again.
///
/// ```
/// let build = task_service::version::build();
/// assert!(build.starts_with(concat!(env!("CARGO_PKG_VERSION"), "+")), "{build}");
/// ```
pub fn build() -> String {
    let bytes = std::hint::black_box(&BUILD_TAG);
    let tag = &bytes[MARK_LEN..];
    let end = tag.iter().position(|b| *b == 0).unwrap_or(tag.len());
    format!(
        "{}+{}",
        env!("CARGO_PKG_VERSION"),
        String::from_utf8_lossy(&tag[..end])
    )
}

/// The version a format number read from a file or a peer stands for: `0` (the field is
/// absent: written before versions existed) is version 1.
///
/// ```
/// assert_eq!(task_service::version::normalize(0), 1);
/// assert_eq!(task_service::version::normalize(3), 3);
/// ```
pub fn normalize(found: u32) -> u32 {
    found.max(1)
}

/// Something of a newer format than this build reads: refused, never misread, and left in
/// place.
///
/// ```
/// use task_service::version::{Newer, RECORD_FORMAT};
/// let e = Newer::check("record /run/shimless/state/k8s.io/web.json", 2, RECORD_FORMAT).unwrap_err();
/// assert_eq!(e.found, 2);
/// assert!(e.to_string().contains("web.json is of version 2, newer than the 1"), "{e}");
/// assert!(Newer::check("an old record", 0, RECORD_FORMAT).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is of version {found}, newer than the {supported} this shimless reads: refused, not \
     misread, and left as it is (run the newer shimless again, or see \"Roll back\" in \
     task-service/README.md)"
)]
pub struct Newer {
    /// The file or peer, as the message names it.
    pub what: String,
    /// Its version.
    pub found: u32,
    /// The newest version this build reads.
    pub supported: u32,
}

impl Newer {
    /// `Ok` if version `found` (normalized, see [`normalize`]) of `what` is at most
    /// `supported`, else the error naming both.
    pub fn check(what: &str, found: u32, supported: u32) -> Result<(), Newer> {
        let found = normalize(found);
        if found <= supported {
            return Ok(());
        }
        Err(Newer {
            what: what.to_string(),
            found,
            supported,
        })
    }
}
