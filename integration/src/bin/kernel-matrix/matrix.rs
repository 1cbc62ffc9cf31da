//! The run on one kernel: arguments, the shell script that runs every binary (on the host, or as
//! the guest's program), and the summary.

use crate::report::{self, Binary, Facts};
use integration::vm::{BUSYBOX, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the command line asked for.
#[derive(Debug, Default)]
struct Args {
    name: String,
    kernel: Option<PathBuf>,
    files: Vec<PathBuf>,
    modules: Vec<PathBuf>,
    binaries: Vec<PathBuf>,
    skip: Vec<String>,
    only: Vec<(String, String)>,
    timeout: Option<Duration>,
}

const USAGE: &str = "usage: kernel-matrix --name NAME [--kernel VMLINUZ] [--file PATH]... [--insmod MODULE.ko]... \
                     [--skip TEST]... [--only BINARY=FILTER]... [--timeout-secs N] -- TEST_BINARY...";

fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value; {USAGE}"));
        match arg.as_str() {
            "--name" => a.name = value("--name")?,
            "--kernel" => a.kernel = Some(value("--kernel")?.into()),
            "--file" => a.files.push(value("--file")?.into()),
            "--insmod" => a.modules.push(value("--insmod")?.into()),
            "--skip" => a.skip.push(value("--skip")?),
            "--only" => {
                let v = value("--only")?;
                let (bin, filter) = v
                    .split_once('=')
                    .ok_or(format!("--only {v:?} is not BINARY=FILTER; {USAGE}"))?;
                a.only.push((bin.to_owned(), filter.to_owned()));
            }
            "--timeout-secs" => {
                let v = value("--timeout-secs")?;
                let secs = v
                    .parse()
                    .map_err(|_| format!("--timeout-secs {v:?} is not a number of seconds"))?;
                a.timeout = Some(Duration::from_secs(secs));
            }
            "--" => a.binaries.extend(it.by_ref().map(PathBuf::from)),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if a.name.is_empty() || a.binaries.is_empty() {
        return Err(format!(
            "a --name and at least one test binary are needed; {USAGE}"
        ));
    }
    Ok(a)
}

/// Quotes for the shell (single quotes; the paths here never hold NUL).
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script: the kernel's facts, then every binary between marker lines.
fn script(a: &Args) -> String {
    let mut s = String::from(
        "ip link set lo up 2>/dev/null\n\
         mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
         echo \"kernel-matrix-fact release $(uname -r)\"\n\
         if [ -e /sys/kernel/btf/vmlinux ]; then echo 'kernel-matrix-fact btf yes'; else echo 'kernel-matrix-fact btf no'; fi\n\
         kill=no\n\
         for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do\n\
           grep -qs '^0::' /proc/self/cgroup || continue\n\
           if mkdir \"$root/kernel-matrix-probe\" 2>/dev/null; then\n\
             [ -e \"$root/kernel-matrix-probe/cgroup.kill\" ] && kill=yes\n\
             rmdir \"$root/kernel-matrix-probe\"\n\
           fi\n\
         done\n\
         echo \"kernel-matrix-fact cgroup.kill $kill\"\n",
    );
    // Modules the tests need that the guest kernel does not build in (overlayfs).
    if a.kernel.is_some() {
        for m in &a.modules {
            let m = q(&m.to_string_lossy());
            s.push_str(&format!(
                "insmod {m} || echo kernel-matrix: insmod {m} failed\n"
            ));
        }
    }
    let mut skips = String::new();
    for t in &a.skip {
        skips.push_str(&format!(" --skip {}", q(t)));
    }
    for b in &a.binaries {
        let p = q(&b.to_string_lossy());
        let name = report::short_name(b);
        let mut filters = String::new();
        for (_, f) in a.only.iter().filter(|(bin, _)| *bin == name) {
            filters.push(' ');
            filters.push_str(&q(f));
        }
        s.push_str(&format!(
            "echo kernel-matrix-begin {p}\n\
             {p} --test-threads=1 --show-output{skips}{filters} </dev/null 2>&1\n\
             echo kernel-matrix-rc {p} $?\n"
        ));
    }
    s
}

/// Runs the script here, on the host's kernel.
fn on_host(a: &Args) -> Result<String, String> {
    let out = Command::new(BUSYBOX)
        .args(["sh", "-c", &script(a)])
        .env_remove("CGROUPFOLD_TEST_IN_VM")
        .output()
        .map_err(|e| format!("cannot run {BUSYBOX}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A copy of `path` without debug information (the initramfs lives in the guest's memory).
fn stripped(path: &Path, dir: &Path, n: usize) -> Result<PathBuf, String> {
    let out = dir.join(format!("{n}"));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run strip (binutils): {e}"))?;
    if ok.success() {
        Ok(out)
    } else {
        // Not an ELF file (a script): carried as it is.
        Ok(path.to_owned())
    }
}

/// Runs the script as the program of a guest booting `kernel`.
fn in_guest(a: &Args, kernel: &Path) -> Result<String, String> {
    let dir = tempfile::Builder::new()
        .prefix("kernel-matrix-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let mut vm = Vm::new()
        .kernel(kernel)
        .memory_mib(4096)
        .tmpfs_root()
        .timeout(a.timeout.unwrap_or(Duration::from_secs(40 * 60)))
        .env("CGROUPFOLD_TEST_IN_VM", "1");
    for m in &a.modules {
        let guest = m
            .to_str()
            .filter(|g| g.starts_with('/'))
            .ok_or(format!("{} must be an absolute UTF-8 path", m.display()))?;
        vm = vm.file(m, guest);
    }
    for (n, f) in a.files.iter().chain(&a.binaries).enumerate() {
        let guest = f
            .to_str()
            .filter(|g| g.starts_with('/'))
            .ok_or(format!("{} must be an absolute UTF-8 path", f.display()))?;
        vm = vm.file(stripped(f, dir.path(), n)?, guest);
    }
    let run = vm
        .run(BUSYBOX.as_ref(), ["sh", "-c", &script(a)])
        .map_err(|e| e.to_string())?;
    eprintln!(
        "kernel-matrix: {}: booted after {:.1?}, whole run {:.1?}",
        a.name, run.booted_after, run.elapsed
    );
    Ok(run.output)
}

/// Parses the arguments, runs, prints; `Ok(true)` when every binary passed.
pub(crate) fn main(args: Vec<String>) -> Result<bool, String> {
    let a = parse(args)?;
    let started = Instant::now();
    let output = match &a.kernel {
        None => on_host(&a)?,
        Some(k) => in_guest(&a, k)?,
    };
    let binaries: Vec<Binary> = a
        .binaries
        .iter()
        .map(|b| report::binary(&output, b))
        .collect();
    let facts = Facts::from_output(&output);
    let green = report::print(&a.name, &facts, &binaries, started.elapsed());
    if !green {
        println!("---- output on {} ----\n{output}", a.name);
    }
    Ok(green)
}
