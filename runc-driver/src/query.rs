//! Commands that read a container's state, or change its resources.

use crate::Error;
use crate::call::Call;
use crate::runtime::{Flavor, Runc};
use crate::types::{Features, State, Stats, Version};
use crate::validate::validate_id;

fn parse<T: serde::de::DeserializeOwned>(command: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Io {
        command,
        what: "parse the output",
        source: e.into(),
    })
}

impl Runc {
    /// `runc state`.
    ///
    /// ```no_run
    /// # async fn f(runc: &runc_driver::Runc) -> Result<(), runc_driver::Error> {
    /// let state = runc.state("web").await?;
    /// println!("{} is {:?}, pid {}", state.id, state.status, state.pid);
    /// # Ok(()) }
    /// ```
    pub async fn state(&self, id: &str) -> Result<State, Error> {
        validate_id(id)?;
        let out = self.run(Call::new("state", id).arg(id)).await?;
        parse("state", &out.stdout)
    }

    /// `runc list`: every container under this root.
    pub async fn list(&self) -> Result<Vec<State>, Error> {
        let out = self
            .run(Call::new("list", "").arg("--format").arg("json"))
            .await?;
        // runc prints `null` when there are none.
        let states: Option<Vec<State>> = parse("list", &out.stdout)?;
        Ok(states.unwrap_or_default())
    }

    /// `runc ps`: the host PIDs of every process in the container.
    pub async fn ps(&self, id: &str) -> Result<Vec<i32>, Error> {
        validate_id(id)?;
        let out = self
            .run(Call::new("ps", id).arg("--format").arg("json").arg(id))
            .await?;
        let pids: Option<Vec<i32>> = parse("ps", &out.stdout)?;
        Ok(pids.unwrap_or_default())
    }

    /// `runc update --resources -`: new limits for the container's cgroup.
    pub async fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), Error> {
        validate_id(id)?;
        let json = serde_json::to_vec(resources).map_err(|e| Error::Io {
            command: "update",
            what: "encode resources",
            source: e.into(),
        })?;
        let mut call = Call::new("update", id).arg("--resources").arg("-").arg(id);
        call.stdin_data = Some(json);
        self.run(call).await.map(drop)
    }

    /// `runc events --stats`: one sample of the container's resource usage. crun has no
    /// `events` command: [`Error::Unsupported`].
    pub async fn stats(&self, id: &str) -> Result<Stats, Error> {
        validate_id(id)?;
        if self.flavor() == Flavor::Crun {
            return Err(Error::Unsupported {
                command: "events",
                runtime: self.binary().display().to_string(),
            });
        }
        let out = self
            .run(Call::new("events", id).arg("--stats").arg(id))
            .await?;
        #[derive(serde::Deserialize)]
        struct Event {
            data: Stats,
        }
        Ok(parse::<Event>("events", &out.stdout)?.data)
    }

    /// `runc features`: what the runtime supports ([`Error::Unsupported`] where the command is
    /// missing, as in crun 1.8).
    pub async fn features(&self) -> Result<Features, Error> {
        let out = self.run(Call::new("features", "")).await;
        match out {
            Ok(out) => parse("features", &out.stdout),
            Err(Error::Runtime { message, .. })
                if message.contains("unknown command") || message.contains("Incorrect Usage") =>
            {
                Err(Error::Unsupported {
                    command: "features",
                    runtime: self.binary().display().to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `runc --version`.
    pub async fn version(&self) -> Result<Version, Error> {
        let mut call = Call::new("version", "");
        call.args = vec!["--version".into()];
        let out = self.run(call).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        Version::parse(&text).ok_or_else(|| Error::Io {
            command: "version",
            what: "parse the output",
            source: std::io::Error::other(format!("unexpected output {text:?}")),
        })
    }
}
