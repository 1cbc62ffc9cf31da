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

mod guest;
mod initramfs;

use crate::Need;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
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
    files: Vec<(PathBuf, String)>,
    tmpfs_root: bool,
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
            files: Vec::new(),
            tmpfs_root: false,
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

    /// One more file for the guest: `host`'s content at the absolute path `guest`, executable,
    /// with the shared libraries `ldd` names for it (none for a static program or a script).
    /// For programs the guest program starts, such as test binaries run by a shell script, or
    /// `runc`.
    ///
    /// ```no_run
    /// let run = integration::vm::Vm::new()
    ///     .file("/usr/sbin/runc", "/usr/sbin/runc")
    ///     .run("/bin/busybox".as_ref(), ["sh", "-c", "/usr/sbin/runc --version"])?;
    /// assert_eq!(run.exit_code, 0);
    /// # Ok::<(), integration::vm::VmError>(())
    /// ```
    pub fn file(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Vm {
        self.files.push((host.into(), guest.into()));
        self
    }

    /// Moves the guest's root from the initramfs onto a tmpfs (`switch_root`) before the program
    /// runs: `pivot_root(2)`, which runc uses to enter a container's root, refuses the
    /// initramfs (the kernel's `rootfs` can never be unmounted). Copying costs memory for a
    /// moment (the initramfs is emptied after the switch) and a few seconds of boot.
    ///
    /// ```no_run
    /// let run = integration::vm::Vm::new()
    ///     .tmpfs_root()
    ///     .run("/bin/busybox".as_ref(), ["sh", "-c", "grep ' / ' /proc/mounts"])?;
    /// assert!(run.output.contains("tmpfs / tmpfs"));
    /// # Ok::<(), integration::vm::VmError>(())
    /// ```
    pub fn tmpfs_root(mut self) -> Vm {
        self.tmpfs_root = true;
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
        let mut libs = guest::libraries(program)?;
        for (host, guest_path) in &self.files {
            if !guest_path.starts_with('/') || guest_path.len() < 2 {
                return Err(VmError::BadArgument {
                    value: guest_path.clone(),
                });
            }
            libs.extend(guest::libraries(host)?);
        }
        libs.sort();
        libs.dedup();
        let script = guest::init_script(
            &marker,
            &guest_program,
            &args,
            &self.env,
            &libs,
            self.tmpfs_root,
        )?;
        let dir = tempfile::Builder::new()
            .prefix("shimless-vm-")
            .tempdir()
            .map_err(io_err("create a temporary directory", Path::new("/tmp")))?;
        let initrd = dir.path().join("initramfs.cpio");
        initramfs::write(
            &initrd,
            &script,
            program,
            &guest_program,
            &libs,
            &self.files,
        )
        .map_err(io_err("write the initramfs", &initrd))?;
        let boot = self.boot(&initrd, &marker)?;
        drop(dir);
        self.outcome(boot, &marker)
    }

    /// Starts qemu on `initrd`, collects its console until it exits or the timeout kills it.
    fn boot(&self, initrd: &Path, marker: &str) -> Result<Boot, VmError> {
        let started = Instant::now();
        let mut child = self
            .qemu(initrd)
            .spawn()
            .map_err(io_err("start", Path::new(QEMU)))?;
        let console = Arc::new(Mutex::new(Console::default()));
        let booted_line = format!("{marker} booted");
        let stdout = child.stdout.take().map(|out| {
            let console = Arc::clone(&console);
            std::thread::spawn(move || read_console(out, &console, &booted_line, started))
        });
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            })
        });
        let status = wait_until(&mut child, started + self.timeout);
        let elapsed = started.elapsed();
        if let Some(t) = stdout {
            let _ = t.join();
        }
        let stderr = stderr
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let console = std::mem::take(&mut *console.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(Boot {
            status,
            console,
            stderr,
            elapsed,
        })
    }

    /// The qemu command line: TCG, the console on stdio, this VM's memory, CPUs and kernel.
    fn qemu(&self, initrd: &Path) -> Command {
        let mut append =
            String::from("console=ttyS0 quiet loglevel=1 panic=-1 cgroup_no_v1=all rdinit=/init");
        for a in &self.kernel_args {
            append.push(' ');
            append.push_str(a);
        }
        let mut qemu = Command::new(QEMU);
        qemu.args(["-accel", "tcg", "-nographic", "-no-reboot", "-nodefaults"])
            .args(["-serial", "stdio", "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(&append)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        qemu
    }

    /// The run's result: the exit code the guest printed after `marker`, or why there is none
    /// (qemu's stderr appended to the console).
    fn outcome(&self, boot: Boot, marker: &str) -> Result<VmRun, VmError> {
        let mut output = boot.console.text;
        let Some(status) = boot.status else {
            output.push_str(&boot.stderr);
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
                booted_after: boot.console.booted_after.unwrap_or(boot.elapsed),
                elapsed: boot.elapsed,
            }),
            None => {
                output.push_str(&boot.stderr);
                Err(VmError::NoExitCode {
                    status: status.to_string(),
                    output,
                })
            }
        }
    }
}

/// What one boot left: qemu's status (`None` if it was killed at the deadline), the console,
/// qemu's stderr, and how long it ran.
struct Boot {
    status: Option<std::process::ExitStatus>,
    console: Console,
    stderr: String,
    elapsed: Duration,
}

/// Waits for `child` to exit; at `deadline` kills and reaps it and returns `None`.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
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
