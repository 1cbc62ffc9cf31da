//! Attaching to `sched_process_exit`, with fallback from the cheapest way to the most portable.

use crate::error::Error;
use crate::watch::AttachMode;
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf};

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("the object has no program {name}"))?;
    program.try_into().map_err(|e| format!("{name}: {e}"))
}

fn attach_one(ebpf: &mut Ebpf, mode: AttachMode) -> Result<FdLink, String> {
    match mode {
        AttachMode::BtfTracePoint => {
            let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
            let p: &mut BtfTracePoint = program(ebpf, "exitwatch_btf")?;
            p.load("sched_process_exit", &btf)
                .map_err(|e| format!("tp_btf load: {e}"))?;
            let id = p.attach().map_err(|e| format!("tp_btf attach: {e}"))?;
            Ok(p.take_link(id).map_err(|e| e.to_string())?.into())
        }
        AttachMode::TracePoint => {
            crate::mounts::ensure_tracefs()?;
            let p: &mut TracePoint = program(ebpf, "exitwatch_tp")?;
            p.load().map_err(|e| format!("tracepoint load: {e}"))?;
            let id = p
                .attach("sched", "sched_process_exit")
                .map_err(|e| format!("tracepoint attach: {e}"))?;
            let link = p.take_link(id).map_err(|e| e.to_string())?;
            // Only bpf_link-based perf attachments (Linux 5.15+) can be pinned.
            FdLink::try_from(link).map_err(|e| format!("tracepoint link cannot be pinned: {e}"))
        }
        AttachMode::RawTracePoint => {
            let p: &mut RawTracePoint = program(ebpf, "exitwatch_raw")?;
            p.load().map_err(|e| format!("raw tracepoint load: {e}"))?;
            let id = p
                .attach("sched_process_exit")
                .map_err(|e| format!("raw tracepoint attach: {e}"))?;
            Ok(p.take_link(id).map_err(|e| e.to_string())?.into())
        }
        AttachMode::Auto => unreachable_auto(),
    }
}

fn unreachable_auto() -> Result<FdLink, String> {
    Err("Auto is expanded by attach()".into())
}

/// Attaches in `mode`, or with [`AttachMode::Auto`] tries each mode in turn.
pub(crate) fn attach(ebpf: &mut Ebpf, mode: AttachMode) -> Result<FdLink, Error> {
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
        match attach_one(ebpf, m) {
            Ok(link) => return Ok(link),
            Err(why) => failures.push(why),
        }
    }
    if failures
        .iter()
        .any(|f| f.contains("Operation not permitted"))
    {
        return Err(Error::PermissionDenied {
            what: "attach the eBPF program",
        });
    }
    Err(Error::Attach(failures.join("; ")))
}
