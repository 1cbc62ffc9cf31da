//! `shimless-probe file PATH VALIDITY`: exit 0 if PATH was modified within VALIDITY seconds,
//! 1 (with the reason on stdout) if it is stale, missing or unreadable, 2 on a bad command line.
//!
//! The same check `shimlessd` answers an exec of this command with, here with `/` as the root:
//! put the binary in an image or a volume and one pod spec works on any runtime. Build it static
//! with `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p fileprobe --bin
//! shimless-probe --target x86_64-unknown-linux-gnu` (see the crate's README).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let outcome = match args() {
        Err(usage) => fileprobe::ProbeOutcome::Usage(usage),
        Ok(args) => match fileprobe::open_root("/") {
            Ok(root) => fileprobe::run_command(&root, &args, std::time::SystemTime::now()),
            Err(gone) => fileprobe::ProbeOutcome::Failed(gone),
        },
    };
    // A closed stdout or stderr must not turn the answer into a panic: the code still counts.
    let _ = std::io::stdout().write_all(outcome.stdout().as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr().as_bytes());
    ExitCode::from(outcome.exit_code())
}

/// The arguments after the program name, each valid UTF-8.
fn args() -> Result<Vec<String>, fileprobe::UsageError> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| fileprobe::UsageError::NotUnicode(a.to_string_lossy().into_owned()))
        })
        .collect()
}
