//! Entry points for the fuzz targets in `fuzz/`, built only with the cargo feature `fuzzing`.
//!
//! Each one is the production parser that reads outside input, reached here because its module
//! keeps it private. Nothing in here is used by sysctr itself.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::template::{Forced, HostDefaults, Inputs};

/// Whether a containers-registries.conf text marks `registry` as `insecure = true`.
pub fn registries_conf_marks_insecure(conf_text: &str, registry: &str) -> Result<bool> {
    let mut conf = crate::registry::RegistriesConf::default();
    conf.merge(conf_text)?;
    // Where it would be pulled from, too: every path of the prefix matching runs.
    let _ = conf.candidates(&format!("{registry}/x"), false);
    let _ = conf.resolve_short_name(registry);
    Ok(conf.is_insecure(registry))
}

/// Whether `registry` (`HOST[:PORT]`) is on the loopback network, which sysctr reaches over
/// plain HTTP.
pub fn registry_is_loopback(registry: &str) -> bool {
    crate::registry::is_loopback(registry)
}

/// A host file an image's `hostfs` would install, as planned from its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedHostFile {
    /// Absolute path on the host.
    pub path: String,
    /// `Some(target)` for a symlink.
    pub symlink: Option<String>,
    /// Whether this is a directory.
    pub dir: bool,
    /// A regular file's content, templates rendered.
    pub bytes: Vec<u8>,
}

/// Parses an image's `exports/manifest.json` as an install does, resolves the template values
/// with its `defaultValues` (see [`crate::template::resolve`]), then plans the host files of the
/// `hostfs` tree at `hostfs`: `renameFiles` rendered and applied, `installedFilesTemplate` files
/// rendered.
pub fn plan_host_files(
    manifest_json: &str,
    hostfs: &Path,
    host: &HostDefaults,
    forced: &Forced,
    user_set: &BTreeMap<String, String>,
) -> Result<Vec<PlannedHostFile>> {
    use crate::deploy::PlannedContent;
    let manifest = crate::deploy::ExportsManifest::parse(manifest_json)?;
    let values = crate::template::resolve(&Inputs {
        host,
        manifest_defaults: &manifest.default_values,
        user_set,
        uuid: "0f6f6a2c5c1d4e3b9a8b7c6d5e4f3a2b",
        forced,
    })?;
    let planned = crate::deploy::plan_host_files(hostfs, &manifest, &values)?;
    Ok(planned
        .into_iter()
        .map(|file| {
            let (symlink, dir, bytes) = match file.content {
                PlannedContent::File { bytes, .. } => (None, false, bytes),
                PlannedContent::Symlink { target } => (Some(target), false, Vec::new()),
                PlannedContent::Dir { .. } => (None, true, Vec::new()),
            };
            PlannedHostFile { path: file.path, symlink, dir, bytes }
        })
        .collect())
}

/// What the signature code makes of outside bytes: a signature from a lookaside or a registry
/// (an OpenPGP message, checked against no trusted key), its claim (both claim types), a
/// `signedIdentity` and a registries.d file. Returns whether the message was accepted as a valid
/// signature, which with no trusted key must never happen.
pub fn signature_inputs(message: &[u8], claim: &[u8], identity: &str, registries_d: &str) -> bool {
    crate::signature::fuzz_inputs(message, claim, identity, registries_d)
}
