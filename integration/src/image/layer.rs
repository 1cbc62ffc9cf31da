//! The image's one layer and the tar writer both archives use: fixed owners, times and order,
//! so the same input gives the same bytes.

use super::{ImageError, MTIME, REQUIRED_APPLETS};
use crate::bundle::BUSYBOX;
use std::io::{self, Write as _};
use std::process::Command;

/// Gzips `bytes` with no time or name in the header.
pub(super) fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    // GzBuilder writes mtime 0 and no file name: the same input gives the same output.
    let mut encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// The layer: busybox, its applets, /etc and the empty system directories.
pub(super) fn rootfs_layer() -> Result<Vec<u8>, ImageError> {
    let busybox_err = |source| ImageError::Busybox {
        path: BUSYBOX.into(),
        source,
    };
    let binary = std::fs::read(BUSYBOX).map_err(busybox_err)?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(busybox_err)?;
    if !list.status.success() {
        return Err(busybox_err(io::Error::other(format!(
            "`{BUSYBOX} --list` failed: {}",
            list.status
        ))));
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    if let Some(missing) = REQUIRED_APPLETS
        .iter()
        .find(|a| applets.binary_search(&a.to_string()).is_err())
    {
        return Err(ImageError::MissingApplet(missing.to_string()));
    }

    let io_err = |source| ImageError::Busybox {
        path: BUSYBOX.into(),
        source,
    };
    let mut tar = Tar::new();
    for dir in ["bin/", "dev/", "etc/", "proc/", "root/", "sys/"] {
        tar.dir(dir).map_err(io_err)?;
    }
    tar.dir_mode("tmp/", 0o1777).map_err(io_err)?;
    tar.file("bin/busybox", &binary, 0o755).map_err(io_err)?;
    for applet in &applets {
        tar.symlink(&format!("bin/{applet}"), "busybox")
            .map_err(io_err)?;
    }
    tar.file("etc/group", b"root:x:0:\n", 0o644)
        .map_err(io_err)?;
    tar.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    )
    .map_err(io_err)?;
    tar.finish().map_err(io_err)
}

/// A tar archive in memory whose entries all have root owners and [`MTIME`].
pub(super) struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub(super) fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    pub(super) fn file(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<&mut Tar> {
        let mut header = Tar::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut header, path, data)?;
        Ok(self)
    }

    pub(super) fn dir(&mut self, path: &str) -> io::Result<&mut Tar> {
        self.dir_mode(path, 0o755)
    }

    fn dir_mode(&mut self, path: &str, mode: u32) -> io::Result<&mut Tar> {
        let mut header = Tar::header(tar::EntryType::Directory, mode, 0);
        self.0.append_data(&mut header, path, io::empty())?;
        Ok(self)
    }

    fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Tar> {
        let mut header = Tar::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut header, path, target)?;
        Ok(self)
    }

    pub(super) fn finish(self) -> io::Result<Vec<u8>> {
        self.0.into_inner()
    }
}
