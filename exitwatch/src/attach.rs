//! Attaching to `sched_process_exit`, with fallback from the cheapest way to the most portable.

use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf};
use std::path::Path;

/// The underlying error an exitwatch error keeps as its source (aya's, the OS's).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How the program is attached to `sched_process_exit`.
///
/// ```
/// use exitwatch::AttachMode;
/// assert_ne!(AttachMode::Auto, AttachMode::RawTracePoint);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Try BTF tracepoint, then classic tracepoint, then raw tracepoint.
    Auto,
    /// `tp_btf` (needs kernel BTF; the cheapest).
    BtfTracePoint,
    /// A classic tracepoint through tracefs (a bpf_link needs Linux 5.15+).
    TracePoint,
    /// A raw tracepoint.
    RawTracePoint,
}

/// Why attaching in one [`AttachMode`] failed: the step, and aya's (or the OS's) error.
///
/// ```
/// use exitwatch::{AttachFailure, AttachMode};
/// let f = AttachFailure {
///     mode: AttachMode::TracePoint,
///     step: "attach",
///     source: std::io::Error::from_raw_os_error(1).into(),
/// };
/// assert!(f.is_permission_denied());
/// assert!(f.to_string().starts_with("TracePoint attach: "));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{mode:?} {step}: {source}")]
pub struct AttachFailure {
    /// The mode tried.
    pub mode: AttachMode,
    /// The step that failed (`read kernel BTF`, `load`, `attach`, ...).
    pub step: &'static str,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl AttachFailure {
    /// Whether the kernel refused for lack of privilege: `EPERM` anywhere in the error chain.
    ///
    /// ```
    /// use exitwatch::{AttachFailure, AttachMode};
    /// let einval = AttachFailure {
    ///     mode: AttachMode::RawTracePoint,
    ///     step: "load",
    ///     source: std::io::Error::from_raw_os_error(22).into(),
    /// };
    /// assert!(!einval.is_permission_denied());
    /// ```
    pub fn is_permission_denied(&self) -> bool {
        is_permission_denied(&*self.source)
    }
}

/// Whether `error` or one of its sources is the OS error `EPERM` (as `std::io::Error`, which
/// aya's syscall errors carry, or rustix's `Errno`).
pub(crate) fn is_permission_denied(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        let eperm = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()))
            || e.downcast_ref::<rustix::io::Errno>() == Some(&rustix::io::Errno::PERM);
        if eperm {
            return true;
        }
        next = e.source();
    }
    false
}

/// Mounts tracefs at /sys/kernel/tracing if it is not there (classic tracepoints need it).
fn ensure_tracefs() -> Result<(), rustix::io::Errno> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    rustix::mount::mount(
        "nodev",
        tracing,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
}

/// Names the failed `step` of attaching in `mode`, keeping the underlying error.
fn failed<E: Into<BoxError>>(
    mode: AttachMode,
    step: &'static str,
) -> impl FnOnce(E) -> AttachFailure {
    move |source| AttachFailure {
        mode,
        step,
        source: source.into(),
    }
}

/// The program `name` of the object, as type `T`.
fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    mode: AttachMode,
    name: &str,
) -> Result<&'a mut T, AttachFailure>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or_else(|| {
        failed(mode, "find the program")(format!("the object has no program {name}"))
    })?;
    program.try_into().map_err(failed(mode, "find the program"))
}

fn attach_btf(ebpf: &mut Ebpf) -> Result<FdLink, AttachFailure> {
    let mode = AttachMode::BtfTracePoint;
    let btf = Btf::from_sys_fs().map_err(failed(mode, "read kernel BTF"))?;
    let p: &mut BtfTracePoint = program(ebpf, mode, "exitwatch_btf")?;
    p.load("sched_process_exit", &btf)
        .map_err(failed(mode, "load"))?;
    let id = p.attach().map_err(failed(mode, "attach"))?;
    Ok(p.take_link(id)
        .map_err(failed(mode, "take the link"))?
        .into())
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<FdLink, AttachFailure> {
    let mode = AttachMode::TracePoint;
    ensure_tracefs().map_err(failed(mode, "mount tracefs at /sys/kernel/tracing"))?;
    let p: &mut TracePoint = program(ebpf, mode, "exitwatch_tp")?;
    p.load().map_err(failed(mode, "load"))?;
    let id = p
        .attach("sched", "sched_process_exit")
        .map_err(failed(mode, "attach"))?;
    let link = p.take_link(id).map_err(failed(mode, "take the link"))?;
    // Only bpf_link-based perf attachments (Linux 5.15+) can be pinned.
    FdLink::try_from(link).map_err(failed(mode, "make the link pinnable (needs Linux 5.15+)"))
}

fn attach_raw(ebpf: &mut Ebpf) -> Result<FdLink, AttachFailure> {
    let mode = AttachMode::RawTracePoint;
    let p: &mut RawTracePoint = program(ebpf, mode, "exitwatch_raw")?;
    p.load().map_err(failed(mode, "load"))?;
    let id = p
        .attach("sched_process_exit")
        .map_err(failed(mode, "attach"))?;
    Ok(p.take_link(id)
        .map_err(failed(mode, "take the link"))?
        .into())
}

/// Attaches in `mode`, or with [`AttachMode::Auto`] tries each mode in turn; on failure, every
/// attempt's failure in order (see `Error::from_attach_failures`).
pub(crate) fn attach(ebpf: &mut Ebpf, mode: AttachMode) -> Result<FdLink, Vec<AttachFailure>> {
    let modes: &[AttachMode] = match mode {
        AttachMode::Auto => &[
            AttachMode::BtfTracePoint,
            AttachMode::TracePoint,
            AttachMode::RawTracePoint,
        ],
        _ => std::slice::from_ref(&mode),
    };
    let mut failures = Vec::new();
    for &m in modes {
        let attempt = match m {
            AttachMode::BtfTracePoint => attach_btf(ebpf),
            AttachMode::TracePoint => attach_tracepoint(ebpf),
            AttachMode::RawTracePoint | AttachMode::Auto => attach_raw(ebpf),
        };
        match attempt {
            Ok(link) => return Ok(link),
            Err(failure) => failures.push(failure),
        }
    }
    Err(failures)
}
