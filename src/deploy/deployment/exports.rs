//! What an image exports in `/exports`: templates, `manifest.json` and `hostfs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::rooted::{EntryKind, Resolve, RootedDir};

/// The files an image ships under `/exports`, read from a checked-out rootfs.
#[derive(Debug, Default)]
pub struct Exports {
    pub config_template: Option<String>,
    /// `config.json` used verbatim (discouraged; only when there is no template).
    pub config_verbatim: Option<String>,
    pub service_template: Option<String>,
    /// A systemd.socket unit, rendered as the service template is (`deployment::socket`).
    pub socket_template: Option<String>,
    pub tmpfiles_template: Option<String>,
    pub manifest: ExportsManifest,
    /// The `hostfs` directory, if the image has one.
    pub hostfs: Option<PathBuf>,
}

/// `exports/manifest.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportsManifest {
    #[serde(default, deserialize_with = "scalar_map")]
    pub default_values: BTreeMap<String, String>,
    #[serde(default)]
    pub rename_files: BTreeMap<String, String>,
    #[serde(default)]
    pub installed_files_template: Vec<String>,
    #[serde(default)]
    pub no_container_service: bool,
    /// When the container is ready (`deployment::readiness`), as the image says.
    #[serde(default)]
    pub readiness: super::readiness::ReadySettings,
}

/// Images in the wild write some default values as JSON numbers or booleans.
fn scalar_map<'de, D: serde::Deserializer<'de>>(de: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, serde_json::Value> = BTreeMap::deserialize(de)?;
    raw.into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "defaultValues.{key} must be a string, found {other}"
                    )))
                }
            };
            Ok((key, text))
        })
        .collect()
}

impl ExportsManifest {
    /// Parses the text of `exports/manifest.json`.
    pub fn parse(text: &str) -> Result<ExportsManifest> {
        serde_json::from_str(text).context("parsing the image's /exports/manifest.json")
    }
}

/// The largest template or manifest read from an image.
const MAX_EXPORTED_FILE: u64 = 4 * 1024 * 1024;

impl Exports {
    /// Reads `/exports` of a checked-out rootfs, through no symlink the image may have planted
    /// (an `exports` pointing at the host's `/etc` must not make host files the image's).
    pub fn read(rootfs: &Path) -> Result<Exports> {
        let tree = RootedDir::open(rootfs, Resolve::NoSymlinks)?;
        let read = |name: &str| read_optional(&tree, &Path::new("exports").join(name));
        let manifest = match read("manifest.json")? {
            Some(text) => ExportsManifest::parse(&text)?,
            None => ExportsManifest::default(),
        };
        let hostfs = match tree.kind(Path::new("exports/hostfs"))? {
            Some(EntryKind::Dir) => Some(rootfs.join("exports/hostfs")),
            None => None,
            Some(_) => bail!("the image's /exports/hostfs is not a directory"),
        };
        Ok(Exports {
            config_template: read("config.json.template")?,
            config_verbatim: read("config.json")?,
            service_template: read("service.template")?,
            socket_template: read("socket.template")?,
            tmpfiles_template: read("tmpfiles.template")?,
            manifest,
            hostfs,
        })
    }
}

fn read_optional(tree: &RootedDir, relative: &Path) -> Result<Option<String>> {
    match tree.kind(relative)? {
        None => Ok(None),
        Some(EntryKind::File) => {
            let bytes = tree.read_file(relative, MAX_EXPORTED_FILE)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("the image's /{} is not UTF-8", relative.display()))?;
            Ok(Some(text))
        }
        Some(_) => bail!("the image's /{} is not a regular file", relative.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_accepts_the_public_images_shape() {
        let m: ExportsManifest = serde_json::from_str(
            r#"{"version": "1.0", "defaultValues": {"PORT": 2379, "DEBUG": false, "ADDTL_MOUNTS": ""},
                "renameFiles": {"/usr/local/bin/etcdctl": "/usr/local/bin/${NAME}ctl"},
                "installedFilesTemplate": ["/etc/x.conf"], "noContainerService": false, "useLinks": true}"#,
        )
        .unwrap();
        assert_eq!(m.default_values["PORT"], "2379");
        assert_eq!(m.default_values["DEBUG"], "false");
        assert_eq!(m.default_values["ADDTL_MOUNTS"], "");
        assert_eq!(m.rename_files["/usr/local/bin/etcdctl"], "/usr/local/bin/${NAME}ctl");
        let err = serde_json::from_str::<ExportsManifest>(r#"{"defaultValues": {"X": [1]}}"#).unwrap_err();
        assert!(err.to_string().contains("defaultValues.X"), "{err}");
    }
}
