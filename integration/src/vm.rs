//! Running one program inside a Debian kernel under qemu, for what this host cannot offer (a
//! pure cgroup v2 hierarchy with controllers, another kernel version).
//!
//! [`Vm::run`] builds an initramfs (a `newc` cpio) holding static busybox, an `/init` script,
//! the program and the shared libraries `ldd` names for it (dynamic loader included), boots
//! [`kernel()`] with `qemu-system-x86_64 -accel tcg` (no KVM needed; bookworm's kernel reached
//! `/init` in 9.7–18.5 s on the 2 busy cores of the machine this was written on, see
//! [`VmRun::booted_after`]), and in the guest mounts proc, sysfs, devtmpfs, tmpfs on `/tmp` and
//! cgroup2 (with `nsdelegate`) on `/sys/fs/cgroup`, runs the program as root with the given arguments and
//! environment, prints its exit code after a marker unique to the run, and powers off. The
//! console (the guest's `ttyS0`) is the program's stdout and stderr; it comes back as
//! [`VmRun::output`].
//!
//! The kernel is `SHIMLESS_VM_KERNEL` or, by default, the bookworm kernel that
//! `scripts/install-deps` extracts (never installs) to
//! `/var/cache/shimless/kernels/vmlinuz-bookworm`. Debian builds into it everything the guest
//! uses (serial console, initramfs, devtmpfs, tmpfs, cgroup2 and its controllers), so no module
//! is loaded. The kernel command line has `cgroup_no_v1=all`: no v1 controller can be mounted.
//!
//! The initramfs is written by a small writer here rather than a crate: `newc` is a fixed
//! 110-byte ASCII header per entry, and the kernel's unpacker is the only reader.
//!
//! # Example
//!
//! ```no_run
//! use integration::vm::{NEEDS, Vm};
//! use integration::require;
//!
//! // In a #[test]: skip by hand (fail under CI) without qemu or a kernel.
//! let Some(()) = require(&NEEDS) else { return Ok(()) };
//! let run = Vm::new()
//!     .env("GREETING", "hi")
//!     .run("/bin/busybox".as_ref(), ["sh", "-c", "echo $GREETING; exit 3"])?;
//! assert_eq!(run.exit_code, 3);
//! assert!(run.output.contains("hi"));
//! # Ok::<(), integration::vm::VmError>(())
//! ```

use crate::Need;
use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable naming the kernel image to boot instead of [`DEFAULT_KERNEL`].
pub const KERNEL_ENV: &str = "SHIMLESS_VM_KERNEL";
/// Where `scripts/install-deps` puts a bookworm kernel image.
pub const DEFAULT_KERNEL: &str = "/var/cache/shimless/kernels/vmlinuz-bookworm";
/// The emulator.
pub const QEMU: &str = "qemu-system-x86_64";
/// The static busybox that becomes the guest's shell and tools (the one bundles are made of).
pub use crate::bundle::BUSYBOX;
/// What [`Vm::run`] needs from the host, for [`crate::require`].
///
/// ```
/// assert_eq!(integration::vm::NEEDS.len(), 3);
/// ```
pub const NEEDS: [Need; 3] = [Need::Program(QEMU), Need::VmKernel, Need::File(BUSYBOX)];
/// How long [`Vm::run`] lets a guest run unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the guest program lives inside the VM.
const GUEST_DIR: &str = "/opt/vm";

/// The kernel image [`Vm::new`] boots: `$SHIMLESS_VM_KERNEL`, else [`DEFAULT_KERNEL`].
///
/// ```
/// let k = integration::vm::kernel();
/// assert!(k.is_absolute() || std::env::var_os(integration::vm::KERNEL_ENV).is_some());
/// ```
pub fn kernel() -> PathBuf {
    std::env::var_os(KERNEL_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_KERNEL), PathBuf::from)
}

/// Why a VM run failed.
///
/// ```
/// use integration::vm::VmError;
/// let e = VmError::TimedOut { after: std::time::Duration::from_secs(1), output: "booting".into() };
/// assert!(e.to_string().contains("booting"));
/// ```
#[derive(Debug)]
pub enum VmError {
    /// No kernel image at the path [`Vm`] was given.
    NoKernel {
        /// Where it looked.
        path: PathBuf,
    },
    /// A file could not be read or written, or a program not started.
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or program.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `ldd` could not name every library the program needs.
    Libraries {
        /// The program.
        program: PathBuf,
        /// What `ldd` printed.
        ldd: String,
    },
    /// An argument or environment entry the `/init` script cannot carry.
    BadArgument {
        /// The refused value.
        value: String,
    },
    /// The guest was still running at the deadline; qemu was killed.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// The console up to then.
        output: String,
    },
    /// qemu ended without the exit-code line (kernel panic, qemu error, program hung the init).
    NoExitCode {
        /// qemu's exit status.
        status: String,
        /// The console and qemu's stderr.
        output: String,
    },
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::NoKernel { path } => write!(
                f,
                "no kernel image at {} (set {KERNEL_ENV}, or run scripts/install-deps for {DEFAULT_KERNEL})",
                path.display()
            ),
            VmError::Io { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())?;
                if path == Path::new(QEMU) {
                    f.write_str(" (install qemu-system-x86: scripts/install-deps)")?;
                }
                Ok(())
            }
            VmError::Libraries { program, ldd } => write!(
                f,
                "cannot list the shared libraries of {}: ldd said {ldd:?}",
                program.display()
            ),
            VmError::BadArgument { value } => write!(
                f,
                "{value:?} cannot be passed to the guest: arguments and environment values must be free of NUL, and names plain [A-Za-z0-9_]"
            ),
            VmError::TimedOut { after, output } => write!(
                f,
                "the VM still ran after {after:?} and was killed (raise Vm::timeout if it is just slow); console:\n{output}"
            ),
            VmError::NoExitCode { status, output } => write!(
                f,
                "qemu ended ({status}) before the guest printed its exit code; console:\n{output}"
            ),
        }
    }
}

impl std::error::Error for VmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VmError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VmError + 'a {
    move |source| VmError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The outcome of a guest run.
///
/// ```
/// let run = integration::vm::VmRun {
///     exit_code: 0,
///     output: "hello\n".into(),
///     booted_after: std::time::Duration::from_secs(3),
///     elapsed: std::time::Duration::from_secs(4),
/// };
/// assert!(run.output.lines().any(|l| l == "hello"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRun {
    /// The program's exit code (128 + n when killed by signal n, as the shell reports it).
    pub exit_code: i32,
    /// Everything the guest printed on its console (carriage returns removed), the marker
    /// lines included.
    pub output: String,
    /// From starting qemu to the guest's `/init` having mounted everything.
    pub booted_after: Duration,
    /// From starting qemu to its exit.
    pub elapsed: Duration,
}

/// A VM to run one program in; see the [module docs](self).
///
/// ```no_run
/// let run = integration::vm::Vm::new()
///     .memory_mib(512)
///     .cpus(2)
///     .timeout(std::time::Duration::from_secs(60))
///     .run("/bin/busybox".as_ref(), ["true"])?;
/// assert_eq!(run.exit_code, 0);
/// # Ok::<(), integration::vm::VmError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Vm {
    kernel: PathBuf,
    memory_mib: u32,
    cpus: u32,
    timeout: Duration,
    kernel_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm::new()
    }
}

impl Vm {
    /// 1 GiB, one CPU, [`kernel()`], [`DEFAULT_TIMEOUT`].
    pub fn new() -> Vm {
        Vm {
            kernel: kernel(),
            memory_mib: 1024,
            cpus: 1,
            timeout: DEFAULT_TIMEOUT,
            kernel_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Boots this kernel image instead.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Vm {
        self.kernel = path.into();
        self
    }

    /// Guest memory in MiB (the initramfs, unpacked, lives in it too).
    pub fn memory_mib(mut self, mib: u32) -> Vm {
        self.memory_mib = mib;
        self
    }

    /// Virtual CPUs (TCG runs each on a host thread).
    pub fn cpus(mut self, n: u32) -> Vm {
        self.cpus = n.max(1);
        self
    }

    /// How long the whole run may take before qemu is killed.
    pub fn timeout(mut self, timeout: Duration) -> Vm {
        self.timeout = timeout;
        self
    }

    /// One more kernel command-line argument.
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Vm {
        self.kernel_args.push(arg.into());
        self
    }

    /// An environment variable for the program.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Vm {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Boots, runs `program` with `args` as root in the guest (working directory `/tmp`), and
    /// returns its exit code and the console. Temporary files are removed whatever happens.
    pub fn run<I, S>(&self, program: &Path, args: I) -> Result<VmRun, VmError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if !self.kernel.is_file() {
            return Err(VmError::NoKernel {
                path: self.kernel.clone(),
            });
        }
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let marker = format!(
            "shimless-vm-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let name = program
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| VmError::BadArgument {
                value: program.display().to_string(),
            })?;
        let guest_program = format!("{GUEST_DIR}/{name}");
        let libs = libraries(program)?;
        let script = init_script(&marker, &guest_program, &args, &self.env, &libs)?;

        let dir = tempfile::Builder::new()
            .prefix("shimless-vm-")
            .tempdir()
            .map_err(io_err("create a temporary directory", Path::new("/tmp")))?;
        let initrd = dir.path().join("initramfs.cpio");
        let file = std::fs::File::create(&initrd).map_err(io_err("create", &initrd))?;
        let mut cpio = Cpio::new(BufWriter::new(file));
        let written = (|| {
            cpio.char_device("dev/console", 0o600, (5, 1))?;
            cpio.file_from("bin/busybox", 0o755, Path::new(BUSYBOX))?;
            cpio.bytes("init", 0o755, script.as_bytes())?;
            cpio.file_from(&guest_program[1..], 0o755, program)?;
            for lib in &libs {
                cpio.file_from(&lib.to_string_lossy()[1..], 0o755, lib)?;
            }
            for d in ["proc", "sys", "tmp", "run", "sbin", "usr/bin", "usr/sbin"] {
                cpio.dir(d)?;
            }
            cpio.finish()
        })();
        written.map_err(io_err("write the initramfs", &initrd))?;

        let mut append =
            String::from("console=ttyS0 quiet loglevel=1 panic=-1 cgroup_no_v1=all rdinit=/init");
        for a in &self.kernel_args {
            append.push(' ');
            append.push_str(a);
        }
        let started = Instant::now();
        let mut child = Command::new(QEMU)
            .args(["-accel", "tcg", "-nographic", "-no-reboot", "-nodefaults"])
            .args(["-serial", "stdio", "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(&append)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("start", Path::new(QEMU)))?;

        let console = Arc::new(Mutex::new(Console::default()));
        let booted_line = format!("{marker} booted");
        let stdout = child.stdout.take().map(|out| {
            let console = Arc::clone(&console);
            std::thread::spawn(move || read_console(out, &console, &booted_line, started))
        });
        let mut stderr_text = String::new();
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            })
        });

        let deadline = started + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let elapsed = started.elapsed();
        if let Some(t) = stdout {
            let _ = t.join();
        }
        if let Some(t) = stderr {
            stderr_text = t.join().unwrap_or_default();
        }
        drop(dir);
        let console = std::mem::take(&mut *console.lock().unwrap_or_else(|p| p.into_inner()));
        let mut output = console.text;
        let Some(status) = status else {
            output.push_str(&stderr_text);
            return Err(VmError::TimedOut {
                after: self.timeout,
                output,
            });
        };
        let exit_line = format!("{marker} exit ");
        let code = output
            .lines()
            .find_map(|l| l.find(&exit_line).map(|i| &l[i + exit_line.len()..]))
            .and_then(|c| c.trim().parse().ok());
        match code {
            Some(exit_code) => Ok(VmRun {
                exit_code,
                output,
                booted_after: console.booted_after.unwrap_or(elapsed),
                elapsed,
            }),
            None => {
                output.push_str(&stderr_text);
                Err(VmError::NoExitCode {
                    status: status.to_string(),
                    output,
                })
            }
        }
    }
}

#[derive(Debug, Default)]
struct Console {
    text: String,
    booted_after: Option<Duration>,
}

fn read_console(out: impl Read, console: &Mutex<Console>, booted_line: &str, started: Instant) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).replace('\r', "");
        let mut c = console.lock().unwrap_or_else(|p| p.into_inner());
        // The firmware's escape sequences may precede the guest's first line.
        if c.booted_after.is_none() && text.trim_end().ends_with(booted_line) {
            c.booted_after = Some(started.elapsed());
        }
        c.text.push_str(&text);
    }
}

/// Quotes `s` for the guest's shell (single quotes carry anything, newlines included, but NUL).
fn quote(s: &str) -> Result<String, VmError> {
    if s.contains('\0') {
        return Err(VmError::BadArgument {
            value: s.to_owned(),
        });
    }
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}

fn init_script(
    marker: &str,
    program: &str,
    args: &[String],
    env: &[(String, String)],
    libs: &[PathBuf],
) -> Result<String, VmError> {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tmpfs tmpfs /run\n\
         mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup\n\
         cd /tmp\n",
    );
    s.push_str(&format!("echo {marker} booted\n"));
    let mut lib_dirs: Vec<String> = libs
        .iter()
        .filter_map(|l| l.parent())
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    lib_dirs.sort();
    lib_dirs.dedup();
    let mut line = String::new();
    if !lib_dirs.is_empty() {
        line.push_str(&format!("LD_LIBRARY_PATH={} ", quote(&lib_dirs.join(":"))?));
    }
    for (k, v) in env {
        let plain = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !plain {
            return Err(VmError::BadArgument { value: k.clone() });
        }
        line.push_str(&format!("{k}={} ", quote(v)?));
    }
    line.push_str(&quote(program)?);
    for a in args {
        line.push(' ');
        line.push_str(&quote(a)?);
    }
    s.push_str(&line);
    s.push_str("\ncode=$?\n");
    // The kernel's log only when something went wrong: it is quiet on the console.
    s.push_str("[ \"$code\" -eq 0 ] || { echo '--- dmesg (tail) ---'; dmesg | tail -n 40; }\n");
    s.push_str(&format!("echo {marker} exit $code\n"));
    s.push_str("sync\npoweroff -f\n");
    Ok(s)
}

/// The shared libraries `program` loads, dynamic loader included, as `ldd` resolves them on
/// this host; empty for a static program.
fn libraries(program: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(io_err("run ldd on", program))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() || text.contains("not found") {
        return Err(VmError::Libraries {
            program: program.to_owned(),
            ldd: text,
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line.trim(),
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A writer of the cpio `newc` format the kernel unpacks into its initial root filesystem:
/// per entry a 110-byte header of `070701` and thirteen 8-digit hex fields, the NUL-terminated
/// name padded to 4 bytes, the data padded to 4 bytes; `TRAILER!!!` ends the archive. Parent
/// directories are written before the first entry below them.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: std::collections::BTreeSet<String>,
    written: u64,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Cpio {
            out,
            ino: 1,
            dirs: std::collections::BTreeSet::new(),
            written: 0,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is {size} bytes, over newc's 4 GiB"),
            )
        })?;
        let name_len = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name_len as u32,
            0,
        ];
        self.ino += 1;
        let mut h = String::with_capacity(110 + name_len);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        h.push_str(name);
        h.push('\0');
        self.put(h.as_bytes())?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..n as usize])
    }

    fn parents(&mut self, name: &str) -> io::Result<()> {
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            let dir = &name[..at + i];
            at += i + 1;
            if self.dirs.insert(dir.to_owned()) {
                self.header(dir, 0o040_755, 0, (0, 0))?;
            }
        }
        Ok(())
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        self.parents(name)?;
        if self.dirs.insert(name.to_owned()) {
            self.header(name, 0o040_755, 0, (0, 0))?;
        }
        Ok(())
    }

    fn char_device(&mut self, name: &str, perm: u32, rdev: (u32, u32)) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, 0o020_000 | perm, 0, rdev)
    }

    fn bytes(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, 0o100_000 | perm, data.len() as u64, (0, 0))?;
        self.put(data)?;
        self.pad()
    }

    /// The content of `src` (symlinks followed) as a regular file `name`.
    fn file_from(&mut self, name: &str, perm: u32, src: &Path) -> io::Result<()> {
        let mut f = std::fs::File::open(src)?;
        let len = f.metadata()?.len();
        self.parents(name)?;
        self.header(name, 0o100_000 | perm, len, (0, 0))?;
        let copied = io::copy(&mut (&mut f).take(len), &mut self.out)?;
        self.written += copied;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being copied", src.display()),
            ));
        }
        self.pad()
    }

    fn finish(mut self) -> io::Result<()> {
        self.header("TRAILER!!!", 0, 0, (0, 0))?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_parents_come_first() {
        let mut buf = Vec::new();
        let mut c = Cpio::new(&mut buf);
        c.bytes("a/b/f", 0o644, b"hello").unwrap();
        c.finish().unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let starts: Vec<usize> = text.match_indices("070701").map(|(i, _)| i).collect();
        let names: Vec<&str> = starts
            .iter()
            .map(|&at| text[at + 110..].split('\0').next().unwrap())
            .collect();
        assert_eq!(names, ["a", "a/b", "a/b/f", "TRAILER!!!"]);
        assert_eq!(buf.len() % 4, 0);
        // "a/b/f": filesize is the 7th field; header 110 + name 6 = 116 (aligned), then the
        // 5 data bytes padded to 8, then the trailer.
        let at = starts[2];
        assert_eq!(&text[at + 6 + 6 * 8..at + 6 + 7 * 8], "00000005");
        assert_eq!(&buf[at + 116..at + 121], b"hello");
        assert_eq!(&buf[at + 121..at + 124], [0, 0, 0]);
        assert_eq!(starts[3], at + 124);
    }

    #[test]
    fn arguments_are_quoted_for_the_guest_shell() {
        assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
        assert_eq!(quote("a\nb").unwrap(), "'a\nb'");
        assert!(quote("a\0b").is_err());
        let s = init_script(
            "m",
            "/opt/vm/p",
            &["--x".into(), "a b".into()],
            &[("K".into(), "v".into())],
            &[PathBuf::from("/lib/x/libc.so.6")],
        )
        .unwrap();
        assert!(
            s.contains("LD_LIBRARY_PATH='/lib/x' K='v' '/opt/vm/p' '--x' 'a b'\n"),
            "{s}"
        );
        assert!(init_script("m", "/p", &[], &[("A=B".into(), "v".into())], &[]).is_err());
    }

    #[test]
    fn a_static_program_needs_no_library_and_a_dynamic_one_its_loader() {
        if Path::new(BUSYBOX).exists() {
            assert_eq!(
                libraries(Path::new(BUSYBOX)).unwrap(),
                Vec::<PathBuf>::new()
            );
        }
        let exe = std::env::current_exe().unwrap();
        let libs = libraries(&exe).unwrap();
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.is_file()), "{libs:?}");
    }
}
