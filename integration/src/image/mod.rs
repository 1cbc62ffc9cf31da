//! OCI image-layout tarballs built from the host's static busybox, for `ctr images import`.
//!
//! Tests against a real containerd need images, and this workspace fetches nothing from a
//! registry: an [`ImageBuilder`] writes an [OCI image layout] as one tar file — `oci-layout`,
//! `index.json` and `blobs/sha256/…` holding one gzipped layer, the image config and the
//! manifest — that `ctr images import` (containerd 1.7) takes as it is.
//!
//! The layer is a small root filesystem: `/bin/busybox` (a copy of the host's
//! [`BUSYBOX`]) with a symlink per applet (`sh`, `sleep`, `echo`, `cat`,
//! `ps`, `kill`, …), `/etc/passwd` and `/etc/group` naming root, and empty `/tmp` (mode 1777),
//! `/proc`, `/sys`, `/dev` and `/root`. The config sets `PATH=/bin`, `Cmd ["sh"]`, and the
//! host's architecture (`amd64` here) and `linux`.
//!
//! Two images are made of it:
//! - [`Image::busybox`]: a general-purpose image; a test gives the command (`ctr run … sh -c …`);
//! - [`Image::pause`]: what CRI starts as a pod's sandbox. Its entrypoint waits forever, using
//!   no CPU, and exits 0 at once on SIGTERM or SIGINT (see [`PAUSE_SCRIPT`]).
//!
//! The name goes into the index as the manifest's `io.containerd.image.name` annotation (which
//! is the name `ctr images import` gives the image) and its tag as
//! `org.opencontainers.image.ref.name` (what other tools read). Everything in the tarball has
//! fixed times, owners and order, so building the same image twice gives the same bytes and the
//! same [`Image::digest`].
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
//!
//! # Example
//!
//! ```no_run
//! use integration::image::Image;
//!
//! let dir = tempfile::tempdir()?;
//! let image = Image::busybox("docker.io/shimless/busybox:test")
//!     .write_tar(&dir.path().join("busybox.tar"))?;
//! assert_eq!(image.name(), "docker.io/shimless/busybox:test");
//! assert!(image.digest().starts_with("sha256:"));
//! // then: ctr -n test images import <dir>/busybox.tar   (or Containerd::import)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, Descriptor, DescriptorBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayout,
    OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder, SCHEMA_VERSION, Sha256Digest,
};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use crate::bundle::BUSYBOX;
use layer::{Tar, gzip, rootfs_layer};

mod layer;

/// The annotation containerd reads, on a manifest of an imported index, as the image's name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The shell script the [`Image::pause`] image runs as `sh -c`: it sleeps in the background and
/// `wait`s (a shell's `wait` is interrupted by a trapped signal, a foreground `sleep` is not),
/// and exits 0 on SIGTERM or SIGINT. As PID 1 of its PID namespace, its exit takes the
/// background `sleep` with it.
pub const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done";

/// The applets a test may count on in every image (the image has all that the host's busybox
/// offers; writing fails if one of these is missing).
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "true", "false", "touch", "ls", "ps", "id", "env", "kill",
    "head", "dd", "yes", "date",
];

/// Every file in the image and the tarball has this modification time (2020-01-01T00:00:00Z),
/// so that equal inputs give equal bytes.
const MTIME: u64 = 1_577_836_800;

/// Why an image could not be written.
///
/// ```
/// use integration::image::ImageError;
/// let err = ImageError::BadName("Not A Name".into());
/// assert!(err.to_string().contains("\"Not A Name\""));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image name is empty, has whitespace or upper case in its repository, or an empty tag.
    #[error(
        "{0:?} is not an image name: give one like \"docker.io/shimless/busybox:test\" \
         (lower-case repository, optional :tag, no spaces)"
    )]
    BadName(String),
    /// The host's busybox could not be read or listed.
    #[error("cannot use the host's busybox at {path}: {source} (install busybox-static)")]
    Busybox {
        /// Where it was looked for.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The host's busybox lacks an applet every image promises (see [`REQUIRED_APPLETS`]).
    #[error("the host's busybox at {BUSYBOX} has no `{0}` applet: install Debian's busybox-static")]
    MissingApplet(String),
    /// The OCI types refused a value (a bug here, not in the caller's input).
    #[error("building the OCI {what}: {source}")]
    Spec {
        /// Which document.
        what: &'static str,
        /// What `oci-spec` said.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Writing the tarball failed.
    #[error("cannot write the image tarball {path}: {source}")]
    Write {
        /// The tarball's path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// An image written by [`ImageBuilder::write_tar`]: its name, manifest digest and tarball.
///
/// ```no_run
/// use integration::image::Image;
/// let image = Image::pause("registry.k8s.io/pause:3.9").write_tar("/tmp/pause.tar".as_ref())?;
/// println!("{} is {} at {}", image.name(), image.digest(), image.path().display());
/// # Ok::<(), integration::image::ImageError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    name: String,
    digest: String,
    config_digest: String,
    path: PathBuf,
}

impl Image {
    /// A busybox image named `name` (e.g. `docker.io/shimless/busybox:test`): `Cmd ["sh"]`,
    /// `PATH=/bin`.
    ///
    /// ```
    /// let builder = integration::image::Image::busybox("docker.io/shimless/busybox:test");
    /// assert_eq!(builder.name(), "docker.io/shimless/busybox:test");
    /// ```
    pub fn busybox(name: impl Into<String>) -> ImageBuilder {
        ImageBuilder {
            name: name.into(),
            entrypoint: None,
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            gzip: true,
        }
    }

    /// A pause image named `name` (what CRI's `sandbox_image` names, e.g.
    /// `registry.k8s.io/pause:3.9`): entrypoint `sh -c` [`PAUSE_SCRIPT`], which waits forever
    /// and exits 0 on SIGTERM or SIGINT.
    ///
    /// ```
    /// let builder = integration::image::Image::pause("registry.k8s.io/pause:3.9");
    /// assert_eq!(builder.name(), "registry.k8s.io/pause:3.9");
    /// ```
    pub fn pause(name: impl Into<String>) -> ImageBuilder {
        Image::busybox(name)
            .entrypoint(["/bin/sh", "-c", PAUSE_SCRIPT])
            .cmd(Vec::<String>::new())
    }

    /// The image's name, as `ctr images ls` shows it after the import.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest's digest (`sha256:…`): the image's identity in containerd.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The image config's digest (`sha256:…`): the image ID CRI reports.
    pub fn config_digest(&self) -> &str {
        &self.config_digest
    }

    /// The tarball written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Builds an image tarball: start from [`Image::busybox`] or [`Image::pause`].
///
/// ```no_run
/// use integration::image::Image;
/// let image = Image::busybox("docker.io/shimless/greeter:1")
///     .entrypoint(["/bin/sh", "-c"])
///     .cmd(["echo $GREETING"])
///     .env("GREETING", "hello")
///     .write_tar("/tmp/greeter.tar".as_ref())?;
/// # Ok::<(), integration::image::ImageError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuilder {
    name: String,
    entrypoint: Option<Vec<String>>,
    cmd: Vec<String>,
    env: Vec<String>,
    gzip: bool,
}

impl ImageBuilder {
    /// The name the image will have.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config's `Entrypoint` (none by default).
    pub fn entrypoint<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// The config's `Cmd` (`["sh"]` by default; empty leaves it out).
    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `key=value` to the config's `Env` (after `PATH=/bin`).
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.env
            .push(format!("{}={}", key.as_ref(), value.as_ref()));
        self
    }

    /// Whether the layer is gzipped (`application/vnd.oci.image.layer.v1.tar+gzip`, the
    /// default) or a plain tar (`…layer.v1.tar`).
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Writes the image as an OCI-layout tarball at `path` (replacing any file there).
    pub fn write_tar(&self, path: &Path) -> Result<Image, ImageError> {
        let tag = tag_of(&self.name)?;
        let layer = rootfs_layer()?;
        let diff_id = sha256(&layer);
        let (layer_blob, layer_type) = if self.gzip {
            (
                gzip(&layer).map_err(|e| write_err(path, e))?,
                MediaType::ImageLayerGzip,
            )
        } else {
            (layer, MediaType::ImageLayer)
        };

        let config_blob = self.config_blob(diff_id, path)?;
        let config_desc = descriptor(MediaType::ImageConfig, &config_blob)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(config_desc.clone())
            .layers(vec![descriptor(layer_type, &layer_blob)?])
            .build()
            .map_err(spec_err("manifest"))?;
        let manifest_blob = canonical_json(&manifest, path)?;

        let manifest_desc = self.manifest_descriptor(&manifest_blob, tag)?;
        let mut blobs = [
            (config_desc.digest().digest().to_string(), &config_blob),
            (sha256_hex(&layer_blob), &layer_blob),
            (manifest_desc.digest().digest().to_string(), &manifest_blob),
        ];
        blobs.sort();
        let bytes = archive(&manifest_desc, blobs, path)?;
        std::fs::write(path, bytes).map_err(|e| write_err(path, e))?;
        Ok(Image {
            name: self.name.clone(),
            digest: manifest_desc.digest().to_string(),
            config_digest: config_desc.digest().to_string(),
            path: path.to_owned(),
        })
    }

    /// The image configuration (environment, entrypoint, command, the one layer's diff id) as
    /// canonical JSON.
    fn config_blob(&self, diff_id: String, path: &Path) -> Result<Vec<u8>, ImageError> {
        let mut config = ConfigBuilder::default()
            .env(self.env.clone())
            .working_dir("/");
        if let Some(entrypoint) = &self.entrypoint {
            config = config.entrypoint(entrypoint.clone());
        }
        if !self.cmd.is_empty() {
            config = config.cmd(self.cmd.clone());
        }
        let image_config = ImageConfigurationBuilder::default()
            .architecture(host_arch())
            .os(Os::Linux)
            .config(config.build().map_err(spec_err("image config"))?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![diff_id])
                    .build()
                    .map_err(spec_err("rootfs"))?,
            )
            .build()
            .map_err(spec_err("image config"))?;
        canonical_json(&image_config, path)
    }

    /// The index's descriptor of the manifest, annotated with the image's name and `tag` (what
    /// `ctr images import` names the image by) and the host's platform.
    fn manifest_descriptor(
        &self,
        manifest_blob: &[u8],
        tag: &str,
    ) -> Result<Descriptor, ImageError> {
        let mut manifest_desc = descriptor(MediaType::ImageManifest, manifest_blob)?;
        manifest_desc.set_annotations(Some(HashMap::from([
            (ANNOTATION_CONTAINERD_NAME.to_string(), self.name.clone()),
            (ANNOTATION_REF_NAME.to_string(), tag.to_string()),
        ])));
        manifest_desc.set_platform(Some(
            PlatformBuilder::default()
                .architecture(host_arch())
                .os(Os::Linux)
                .build()
                .map_err(spec_err("platform"))?,
        ));
        Ok(manifest_desc)
    }
}

/// The OCI-layout tarball: `oci-layout`, `index.json` naming the manifest, and the blobs
/// (sorted by digest) under `blobs/sha256/`.
fn archive(
    manifest_desc: &Descriptor,
    blobs: [(String, &Vec<u8>); 3],
    path: &Path,
) -> Result<Vec<u8>, ImageError> {
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc.clone()])
        .build()
        .map_err(spec_err("index"))?;
    let layout: OciLayout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_err("oci-layout"))?;
    let layout = canonical_json(&layout, path)?;
    let index = canonical_json(&index, path)?;
    (|| {
        let mut tar = Tar::new();
        tar.file("oci-layout", &layout, 0o644)?;
        tar.file("index.json", &index, 0o644)?;
        tar.dir("blobs/")?;
        tar.dir("blobs/sha256/")?;
        for (hex, blob) in blobs {
            tar.file(&format!("blobs/sha256/{hex}"), blob, 0o444)?;
        }
        tar.finish()
    })()
    .map_err(|e| write_err(path, e))
}

/// The tag of an image name (`latest` when there is none), or why the name is no name.
fn tag_of(name: &str) -> Result<&str, ImageError> {
    let bad = || ImageError::BadName(name.to_string());
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('@') {
        return Err(bad());
    }
    // A ':' after the last '/' starts the tag; one before it is a registry's port.
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo_last, tag) = match last.split_once(':') {
        Some((repo, tag)) => (repo, tag),
        None => (last, "latest"),
    };
    let repo_len = name.len() - last.len() + repo_last.len();
    let repo = &name[..repo_len];
    let path = repo.split_once('/').map_or(repo, |(_, p)| p);
    if repo_last.is_empty() || tag.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad());
    }
    Ok(tag)
}

fn host_arch() -> Arch {
    Arch::from(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    })
}

fn spec_err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> ImageError {
    move |source| ImageError::Spec { what, source }
}

fn write_err(path: &Path, source: io::Error) -> ImageError {
    ImageError::Write {
        path: path.to_owned(),
        source,
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn descriptor(media_type: MediaType, blob: &[u8]) -> Result<Descriptor, ImageError> {
    let digest = Sha256Digest::from_str(&sha256_hex(blob)).map_err(spec_err("digest"))?;
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(blob.len() as u64)
        .build()
        .map_err(spec_err("descriptor"))
}

/// JSON with object keys sorted (the OCI types keep annotations in a `HashMap`, whose order
/// changes from run to run), so that equal documents have equal digests.
fn canonical_json<T: serde::Serialize>(doc: &T, path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut value = serde_json::to_value(doc).map_err(|e| write_err(path, e.into()))?;
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(|e| write_err(path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_taken_after_the_last_slash() {
        assert_eq!(tag_of("docker.io/shimless/busybox:test").ok(), Some("test"));
        assert_eq!(tag_of("registry.k8s.io/pause:3.9").ok(), Some("3.9"));
        assert_eq!(tag_of("localhost:5000/busybox").ok(), Some("latest"));
        assert_eq!(tag_of("busybox").ok(), Some("latest"));
    }

    #[test]
    fn bad_names_are_refused_with_the_name() {
        for bad in [
            "",
            "a b:c",
            "docker.io/Shimless/busybox:x",
            "busybox:",
            "x/:tag",
            "busybox@sha256:00",
        ] {
            let err = tag_of(bad).expect_err(bad);
            assert!(
                matches!(&err, ImageError::BadName(n) if n == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn canonical_json_sorts_annotation_keys() {
        let mut desc = descriptor(MediaType::ImageManifest, b"{}").expect("descriptor");
        desc.set_annotations(Some(HashMap::from([
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
            ("m".to_string(), "3".to_string()),
        ])));
        let json =
            String::from_utf8(canonical_json(&desc, Path::new("x")).expect("json")).expect("utf8");
        assert_eq!(
            json,
            "{\"annotations\":{\"a\":\"2\",\"m\":\"3\",\"z\":\"1\"},\
             \"digest\":\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\",\
             \"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"size\":2}"
        );
    }
}
