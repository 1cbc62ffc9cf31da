//! What runs in the guest: its `/init` script and the libraries the program needs.

use super::{VmError, io_err};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Quotes `s` for the guest's shell (single quotes carry anything, newlines included, but NUL).
pub(super) fn quote(s: &str) -> Result<String, VmError> {
    if s.contains('\0') {
        return Err(VmError::BadArgument {
            value: s.to_owned(),
        });
    }
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}

/// The start of `/init` with [`Vm::tmpfs_root`](super::Vm::tmpfs_root): the initramfs's files
/// copied onto a tmpfs that becomes the root (`switch_root` empties the initramfs and runs
/// `/init` again from the tmpfs, which then finds `/.tmpfs-root` and goes on).
const TO_TMPFS_ROOT: &str = "#!/bin/busybox sh\n\
    if [ ! -e /.tmpfs-root ]; then\n\
      /bin/busybox mkdir /newroot\n\
      /bin/busybox mount -t tmpfs -o mode=0755 tmpfs /newroot\n\
      for e in /*; do [ \"$e\" = /newroot ] || /bin/busybox cp -a \"$e\" /newroot/; done\n\
      /bin/busybox touch /newroot/.tmpfs-root\n\
      exec /bin/busybox switch_root /newroot /init\n\
    fi\n";

/// The guest's `/init`: mounts, the marker line once booted, the program with its
/// environment and libraries, its exit code after the marker, and power-off; first, with
/// `tmpfs_root`, the move onto a tmpfs root ([`TO_TMPFS_ROOT`]).
pub(super) fn init_script(
    marker: &str,
    program: &str,
    args: &[String],
    env: &[(String, String)],
    libs: &[PathBuf],
    tmpfs_root: bool,
) -> Result<String, VmError> {
    let mut s = String::from(if tmpfs_root {
        TO_TMPFS_ROOT
    } else {
        "#!/bin/busybox sh\n"
    });
    s.push_str(
        "/bin/busybox --install -s\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         ln -s /proc/self/fd /dev/fd\n\
         ln -s /proc/self/fd/0 /dev/stdin\n\
         ln -s /proc/self/fd/1 /dev/stdout\n\
         ln -s /proc/self/fd/2 /dev/stderr\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tmpfs tmpfs /run\n\
         mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup\n\
         cd /tmp\n",
    );
    s.push_str(&format!("echo {marker} booted\n"));
    let mut lib_dirs: Vec<String> = libs
        .iter()
        .filter_map(|l| l.parent())
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    lib_dirs.sort();
    lib_dirs.dedup();
    let mut line = String::new();
    if !lib_dirs.is_empty() {
        line.push_str(&format!("LD_LIBRARY_PATH={} ", quote(&lib_dirs.join(":"))?));
    }
    for (k, v) in env {
        let plain = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if !plain {
            return Err(VmError::BadArgument { value: k.clone() });
        }
        line.push_str(&format!("{k}={} ", quote(v)?));
    }
    line.push_str(&quote(program)?);
    for a in args {
        line.push(' ');
        line.push_str(&quote(a)?);
    }
    s.push_str(&line);
    s.push_str("\ncode=$?\n");
    // The kernel's log only when something went wrong: it is quiet on the console.
    s.push_str("[ \"$code\" -eq 0 ] || { echo '--- dmesg (tail) ---'; dmesg | tail -n 40; }\n");
    s.push_str(&format!("echo {marker} exit $code\n"));
    s.push_str("sync\npoweroff -f\n");
    Ok(s)
}

/// The shared libraries `program` loads, dynamic loader included, as `ldd` resolves them on
/// this host; empty for a static program.
pub(super) fn libraries(program: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(io_err("run ldd on", program))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() || text.contains("not found") {
        return Err(VmError::Libraries {
            program: program.to_owned(),
            ldd: text,
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line.trim(),
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::BUSYBOX;

    #[test]
    fn arguments_are_quoted_for_the_guest_shell() {
        assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
        assert_eq!(quote("a\nb").unwrap(), "'a\nb'");
        assert!(quote("a\0b").is_err());
        let s = init_script(
            "m",
            "/opt/vm/p",
            &["--x".into(), "a b".into()],
            &[("K".into(), "v".into())],
            &[PathBuf::from("/lib/x/libc.so.6")],
            false,
        )
        .unwrap();
        assert!(
            s.contains("LD_LIBRARY_PATH='/lib/x' K='v' '/opt/vm/p' '--x' 'a b'\n"),
            "{s}"
        );
        assert!(init_script("m", "/p", &[], &[("A=B".into(), "v".into())], &[], false).is_err());
    }

    #[test]
    fn a_static_program_needs_no_library_and_a_dynamic_one_its_loader() {
        if Path::new(BUSYBOX).exists() {
            assert_eq!(
                libraries(Path::new(BUSYBOX)).unwrap(),
                Vec::<PathBuf>::new()
            );
        }
        let exe = std::env::current_exe().unwrap();
        let libs = libraries(&exe).unwrap();
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.is_file()), "{libs:?}");
    }
}
