//! The image tarballs' contents, read back as `ctr images import` would read them.

use integration::image::{Image, PAUSE_SCRIPT, REQUIRED_APPLETS};
use integration::{Need, require};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

/// Every entry of a tar file: path → (entry type byte, link target, contents).
fn entries(tar_bytes: &[u8]) -> BTreeMap<String, (u8, Option<String>, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let kind = entry.header().entry_type().as_byte();
        let link = entry
            .link_name()
            .expect("link")
            .map(|l| l.to_string_lossy().into_owned());
        assert_eq!(
            entry.header().mtime().expect("mtime"),
            1_577_836_800,
            "{path}"
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        out.insert(path, (kind, link, data));
    }
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

fn blob<'a>(files: &'a BTreeMap<String, (u8, Option<String>, Vec<u8>)>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    &files[&format!("blobs/sha256/{hex}")].2
}

fn read_image(
    path: &Path,
) -> (
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
    Vec<u8>,
) {
    let files = entries(&std::fs::read(path).expect("read tarball"));
    assert_eq!(
        json(&files["oci-layout"].2),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&files["index.json"].2);
    let manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest = json(blob(&files, manifest_digest));
    let config = json(blob(
        &files,
        manifest["config"]["digest"].as_str().expect("config"),
    ));
    let layer = blob(
        &files,
        manifest["layers"][0]["digest"].as_str().expect("layer"),
    )
    .to_vec();
    (index, manifest, config, layer)
}

#[test]
fn busybox_image_has_the_layout_names_and_rootfs_promised() {
    let Some(()) = require(&[Need::File("/bin/busybox")]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let image = Image::busybox("docker.io/shimless/busybox:test")
        .write_tar(&dir.path().join("busybox.tar"))
        .expect("write");
    assert_eq!(image.name(), "docker.io/shimless/busybox:test");
    let (index, manifest, config, layer) = read_image(image.path());

    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    let desc = &index["manifests"][0];
    assert_eq!(desc["digest"], image.digest());
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"],
        "docker.io/shimless/busybox:test"
    );
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "test"
    );
    assert_eq!(
        desc["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );

    assert_eq!(manifest["config"]["digest"], image.config_digest());
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["config"].get("Entrypoint"), None);
    assert_eq!(config["rootfs"]["type"], "layers");

    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&layer[..])
        .read_to_end(&mut tar)
        .expect("gunzip");
    let diff_id = format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(&tar));
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([diff_id]));
    let rootfs = entries(&tar);
    assert_eq!(
        rootfs["bin/busybox"].2,
        std::fs::read("/bin/busybox").expect("host busybox")
    );
    for applet in REQUIRED_APPLETS {
        assert_eq!(
            rootfs[&format!("bin/{applet}")].1.as_deref(),
            Some("busybox"),
            "{applet}"
        );
    }
    for dir in ["tmp/", "proc/", "sys/", "dev/", "etc/", "root/"] {
        assert_eq!(rootfs[dir].0, b'5', "{dir} is a directory");
    }
    assert!(String::from_utf8_lossy(&rootfs["etc/passwd"].2).starts_with("root:x:0:0:"));
    assert_eq!(rootfs["etc/group"].2, b"root:x:0:\n");
}

#[test]
fn pause_image_runs_the_pause_script_and_keeps_its_given_name() {
    let Some(()) = require(&[Need::File("/bin/busybox")]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let image = Image::pause("registry.k8s.io/pause:3.9")
        .write_tar(&dir.path().join("pause.tar"))
        .expect("write");
    let (index, _, config, _) = read_image(image.path());
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "registry.k8s.io/pause:3.9"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "3.9");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c", PAUSE_SCRIPT])
    );
    assert_eq!(config["config"].get("Cmd"), None);
}

#[test]
fn the_same_image_built_twice_is_the_same_bytes() {
    let Some(()) = require(&[Need::File("/bin/busybox")]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = Image::busybox("docker.io/shimless/busybox:test").env("A", "b");
    let first = builder.write_tar(&dir.path().join("1.tar")).expect("first");
    let second = builder
        .write_tar(&dir.path().join("2.tar"))
        .expect("second");
    assert_eq!(first.digest(), second.digest());
    assert_eq!(
        std::fs::read(first.path()).expect("1"),
        std::fs::read(second.path()).expect("2")
    );
    let plain = builder
        .clone()
        .gzip(false)
        .write_tar(&dir.path().join("3.tar"))
        .expect("plain");
    assert_ne!(plain.digest(), first.digest());
    assert_eq!(plain.config_digest(), first.config_digest());
    let (_, manifest, _, _) = read_image(plain.path());
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn a_bad_name_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.tar");
    let err = Image::busybox("Bad Name")
        .write_tar(&path)
        .expect_err("bad name");
    assert!(err.to_string().contains("\"Bad Name\""), "{err}");
    assert!(!path.exists());
}
