//! `containerd-shim-shimless-v2`: the runtime v2 binary containerd runs for shimless. It leaves
//! no process behind per container: `start` makes sure the node's one front and daemon run and
//! prints where they listen; `delete` cleans one container up. See `task_service::shim`.
//!
//! containerd configuration (the seed's):
//!
//! ```toml
//! [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.unified]
//!   runtime_type = "io.containerd.runc.v2"
//!   runtime_path = "/usr/local/bin/containerd-shim-shimless-v2"
//! ```

use std::io::Write;
use task_service::config::{Config, default_path};
use task_service::shim::{self, flags::Flags};

fn main() {
    let code = match run() {
        Ok(answer) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&answer).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("containerd-shim-shimless-v2: cannot write the answer: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("containerd-shim-shimless-v2: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let flags = Flags::parse(std::env::args().skip(1))?;
    let path = default_path();
    let config = Config::load(&path)?;
    Ok(shim::run(&flags, &config, &path)?)
}
