//! Runs test binaries on one kernel, for `scripts/kernel-matrix`: on this host's kernel, or in a
//! qemu TCG guest booting another kernel image ([`integration::vm`]), and prints one result
//! line per binary and a summary.
//!
//! ```text
//! kernel-matrix --name host -- target/debug/deps/pidfd-exits-1234 ...
//! kernel-matrix --name bullseye --kernel /var/cache/shimless/kernels/vmlinuz-bullseye \
//!     --file /usr/sbin/runc -- target/debug/deps/... ...
//! ```
//!
//! In the guest every binary runs with `--test-threads=1 --show-output` (the whole output of
//! passing tests too, so that a test that skipped is seen: `integration::require` prints a
//! `SKIP` line). Test binaries and files are stripped of debug information before they go into
//! the initramfs. Exit code 0 when every binary passed.

mod matrix;
mod report;

fn main() {
    std::process::exit(match matrix::main(std::env::args().skip(1).collect()) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("kernel-matrix: {e}");
            2
        }
    });
}
