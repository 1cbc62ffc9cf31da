//! The bench's flags (see the bench's module docs).

use integration::containerd::Version;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) sizes: Vec<usize>,
    pub(crate) seq: usize,
    pub(crate) conc: usize,
    pub(crate) rounds: usize,
    pub(crate) crun: bool,
    /// shimless's `containerd_protocol` (`ttrpc` or `grpc`), when given.
    pub(crate) protocol: Option<String>,
    /// A directory (a tmpfs, as a node's `/run`) for shimless's records, else the bench's own.
    pub(crate) state_in: Option<PathBuf>,
    /// Where the plot goes (none for containerd 2.1 unless `--svg` is given).
    pub(crate) svg: Option<PathBuf>,
    /// Which containerd (`--containerd 1.7|2.1`).
    pub(crate) containerd: Version,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    let mut args = Args {
        sizes: vec![10, 100, 1000],
        seq: 50,
        conc: 160,
        rounds: 2,
        crun: false,
        protocol: None,
        state_in: None,
        svg: None,
        containerd: Version::V1_7,
    };
    let mut svg = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value (see the module docs)"))
        };
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{name} {v:?}: expected a whole number"))
        };
        match arg.as_str() {
            "--sizes" => {
                let v = value("--sizes")?;
                args.sizes = v
                    .split(',')
                    .filter(|n| !n.trim().is_empty())
                    .map(|n| number("--sizes", n.trim().to_string()))
                    .collect::<Result<_, _>>()?;
            }
            "--seq" => args.seq = number("--seq", value("--seq")?)?,
            "--conc" => args.conc = number("--conc", value("--conc")?)?,
            "--rounds" => args.rounds = number("--rounds", value("--rounds")?)?.max(1),
            "--crun" => args.crun = true,
            "--containerd-protocol" => args.protocol = Some(value("--containerd-protocol")?),
            "--svg" => svg = Some(PathBuf::from(value("--svg")?)),
            "--containerd" => {
                let v = value("--containerd")?;
                args.containerd = v.parse().map_err(|e| format!("--containerd: {e}"))?;
            }
            "--state-in" => args.state_in = Some(PathBuf::from(value("--state-in")?)),
            // cargo bench passes `--bench`; libtest-style flags are not ours.
            _ => {}
        }
    }
    args.svg = match (svg, args.containerd) {
        (Some(path), _) => Some(path),
        (None, Version::V1_7) => Some(workspace.join("docs/shimless-vs-stock.svg")),
        (None, _) => None,
    };
    Ok(args)
}
