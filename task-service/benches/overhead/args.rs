//! The overhead bench's flags (see the bench's module docs).

use integration::containerd::Version;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub(crate) struct Args {
    /// Containers per round made one at a time.
    pub(crate) seq: usize,
    /// Containers per round made 16 at a time.
    pub(crate) conc: usize,
    pub(crate) rounds: usize,
    /// The OCI runtimes measured (`runc`, `crun`).
    pub(crate) runtimes: Vec<String>,
    /// A directory (a tmpfs, as a node's `/run`) for shimless's records, else the bench's own.
    pub(crate) state_in: Option<PathBuf>,
    /// Where the plot goes (none for containerd 2.1 unless `--svg` is given).
    pub(crate) svg: Option<PathBuf>,
    /// Which containerd (`--containerd 1.7|2.1`).
    pub(crate) containerd: Version,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seq: 40,
        conc: 96,
        rounds: 2,
        runtimes: vec!["runc".into(), "crun".into()],
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
            "--seq" => args.seq = number("--seq", value("--seq")?)?.max(1),
            "--conc" => args.conc = number("--conc", value("--conc")?)?.max(1),
            "--rounds" => args.rounds = number("--rounds", value("--rounds")?)?.max(1),
            "--runtimes" => {
                args.runtimes = value("--runtimes")?
                    .split(',')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect();
                if let Some(bad) = args
                    .runtimes
                    .iter()
                    .find(|r| !["runc", "crun"].contains(&r.as_str()))
                {
                    return Err(format!("--runtimes: {bad:?} is not runc or crun"));
                }
            }
            "--state-in" => args.state_in = Some(PathBuf::from(value("--state-in")?)),
            "--svg" => svg = Some(PathBuf::from(value("--svg")?)),
            "--containerd" => {
                let v = value("--containerd")?;
                args.containerd = v.parse().map_err(|e| format!("--containerd: {e}"))?;
            }
            // cargo bench passes `--bench`; libtest-style flags are not ours.
            _ => {}
        }
    }
    args.svg = match (svg, args.containerd) {
        (Some(path), _) => Some(path),
        (None, Version::V1_7) => Some(super::default_svg()),
        (None, _) => None,
    };
    Ok(args)
}
