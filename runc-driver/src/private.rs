//! The driver's scratch files are private: an exec's process spec holds its environment
//! (often secrets), and the scratch directory its pid files, logs and console sockets.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The scratch directory's mode: its owner (root, for a node's daemon) only.
pub(crate) fn dir_permissions() -> std::fs::Permissions {
    std::fs::Permissions::from_mode(0o700)
}

/// Writes `bytes` to a new file at `path` readable by its owner only (0600).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_scratch_directory_and_exec_specs_are_owner_only() {
        let runc = crate::Runc::new("/bin/sh").unwrap();
        let scratch = runc.scratch_path("x");
        let dir = scratch.parent().unwrap();
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        let spec = runc.scratch_path("process");
        write(&spec, b"{\"env\":[\"TOKEN=secret\"]}").unwrap();
        assert_eq!(mode(&spec), 0o600);
    }
}
