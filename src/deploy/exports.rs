//! What an image exports in `/exports`: templates, `manifest.json` and `hostfs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The files an image ships under `/exports`, read from a checked-out rootfs.
#[derive(Debug, Default)]
pub struct Exports {
    pub config_template: Option<String>,
    /// `config.json` used verbatim (discouraged; only when there is no template).
    pub config_verbatim: Option<String>,
    pub service_template: Option<String>,
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

impl Exports {
    pub fn read(rootfs: &Path) -> Result<Exports> {
        let dir = rootfs.join("exports");
        let manifest = match read_optional(&dir.join("manifest.json"))? {
            Some(text) => serde_json::from_str(&text).context("parsing the image's /exports/manifest.json")?,
            None => ExportsManifest::default(),
        };
        let hostfs = dir.join("hostfs");
        Ok(Exports {
            config_template: read_optional(&dir.join("config.json.template"))?,
            config_verbatim: read_optional(&dir.join("config.json"))?,
            service_template: read_optional(&dir.join("service.template"))?,
            tmpfiles_template: read_optional(&dir.join("tmpfiles.template"))?,
            manifest,
            hostfs: hostfs.is_dir().then_some(hostfs),
        })
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Some(text))
        }
        Ok(_) => bail!("{} is not a regular file", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
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
