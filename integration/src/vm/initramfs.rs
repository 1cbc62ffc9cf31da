//! The guest's initial root filesystem: a cpio `newc` archive, written here rather than by a
//! crate (a fixed 110-byte ASCII header per entry; the kernel's unpacker is the only reader).

use std::io::{self, Read, Write};
use std::path::Path;

/// Writes the guest's initramfs to `path`: the console device, busybox, the `/init` script,
/// the program at `guest_program`, the extra `files` (host source, guest path), the libraries at
/// their host paths, and the mount points.
pub(super) fn write(
    path: &Path,
    script: &str,
    program: &Path,
    guest_program: &str,
    libs: &[std::path::PathBuf],
    files: &[(std::path::PathBuf, String)],
) -> io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut cpio = Cpio::new(io::BufWriter::new(file));
    cpio.char_device("dev/console", 0o600, (5, 1))?;
    cpio.file_from("bin/busybox", 0o755, Path::new(crate::bundle::BUSYBOX))?;
    cpio.bytes("init", 0o755, script.as_bytes())?;
    cpio.file_from(&guest_program[1..], 0o755, program)?;
    for (host, guest) in files {
        cpio.file_from(&guest[1..], 0o755, host)?;
    }
    for lib in libs {
        cpio.file_from(&lib.to_string_lossy()[1..], 0o755, lib)?;
    }
    for d in ["proc", "sys", "tmp", "run", "sbin", "usr/bin", "usr/sbin"] {
        cpio.dir(d)?;
    }
    cpio.finish()
}

/// A writer of the cpio `newc` format the kernel unpacks into its initial root filesystem:
/// per entry a 110-byte header of `070701` and thirteen 8-digit hex fields, the NUL-terminated
/// name padded to 4 bytes, the data padded to 4 bytes; `TRAILER!!!` ends the archive. Parent
/// directories are written before the first entry below them.
pub(super) struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: std::collections::BTreeSet<String>,
    written: u64,
}

impl<W: Write> Cpio<W> {
    pub(super) fn new(out: W) -> Self {
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

    pub(super) fn dir(&mut self, name: &str) -> io::Result<()> {
        self.parents(name)?;
        if self.dirs.insert(name.to_owned()) {
            self.header(name, 0o040_755, 0, (0, 0))?;
        }
        Ok(())
    }

    pub(super) fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, 0o020_000 | perm, 0, rdev)
    }

    pub(super) fn bytes(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, 0o100_000 | perm, data.len() as u64, (0, 0))?;
        self.put(data)?;
        self.pad()
    }

    /// The content of `src` (symlinks followed) as a regular file `name`.
    pub(super) fn file_from(&mut self, name: &str, perm: u32, src: &Path) -> io::Result<()> {
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

    pub(super) fn finish(mut self) -> io::Result<()> {
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
}
