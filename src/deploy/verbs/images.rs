//! Image maintenance: `info` (what an image asks for), `rmi` and `prune`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use oci_spec::image::ImageConfiguration;
use serde::Serialize;

use super::recovery::lock_and_recover;
use crate::deploy::deployment::exports::ExportsManifest;
use crate::deploy::host::layout::{Deployment, Layout};
use crate::reference::ImageRef;
use crate::store::{Pruned, Store, StoredImage};
use crate::systemd::ServiceManager;
use crate::template::{placeholders, FORCED_VARIABLES, HOST_VARIABLES};

const TEMPLATES: [&str; 3] = ["config.json.template", "service.template", "tmpfiles.template"];

/// What an image is and which template variables it takes.
#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub reference: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    /// Variables with a default in the image's manifest.json, and that default.
    pub defaults: BTreeMap<String, String>,
    /// Variables the host provides unless the image or `--set` does.
    pub host_provided: Vec<String>,
    /// Variables that must be given with `--set`.
    pub required: Vec<String>,
}

pub fn info(layout: &Layout, image: &ImageRef) -> Result<ImageInfo> {
    let store = Store::open(&layout.repo())?;
    let stored = stored_image(&store, image)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&stored.config_raw).context("reading the stored image config")?;
    let read = |path: &str| -> Result<Option<String>> {
        store
            .read_image_file(&stored.commit, path)?
            .map(|bytes| String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8")))
            .transpose()
    };
    let manifest: ExportsManifest = match read("exports/manifest.json")? {
        Some(text) => ExportsManifest::parse(&text)?,
        None => ExportsManifest::default(),
    };
    let mut used = BTreeSet::new();
    let mut templates: Vec<(String, String)> = Vec::new();
    for name in TEMPLATES {
        if let Some(text) = read(&format!("exports/{name}"))? {
            templates.push((name.to_string(), text));
        }
    }
    for path in &manifest.installed_files_template {
        if let Some(text) = read(&format!("exports/hostfs/{}", path.trim_start_matches('/')))? {
            templates.push((path.clone(), text));
        }
    }
    for (from, to) in &manifest.rename_files {
        templates.push((format!("renameFiles[{from}]"), to.clone()));
    }
    for (name, text) in &templates {
        used.extend(placeholders(text).with_context(|| format!("reading the placeholders of {name}"))?);
    }

    let set_by_sysctr: BTreeSet<&str> = FORCED_VARIABLES.iter().copied().chain(["UUID"]).collect();
    let defaults: BTreeMap<String, String> = manifest
        .default_values
        .iter()
        .filter(|(k, _)| used.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let host_provided = HOST_VARIABLES
        .iter()
        .filter(|v| used.contains(**v) && !defaults.contains_key(**v))
        .map(|v| v.to_string())
        .collect();
    let required = used
        .iter()
        .filter(|v| {
            !defaults.contains_key(*v) && !HOST_VARIABLES.contains(&v.as_str()) && !set_by_sysctr.contains(v.as_str())
        })
        .cloned()
        .collect();
    Ok(ImageInfo {
        reference: stored.reference.clone(),
        image_id: format!("sha256:{}", stored.image_id()?),
        labels: config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default().into_iter().collect(),
        defaults,
        host_provided,
        required,
    })
}

/// Removes an image from the store; refuses one a deployment uses unless `force`.
pub async fn rmi(layout: &Layout, image: &ImageRef, force: bool, systemd: &impl ServiceManager) -> Result<()> {
    let (_lock, _) = lock_and_recover(layout, systemd, None).await?;
    let store = Store::open(&layout.repo())?;
    let stored = stored_image(&store, image)?;
    let users: Vec<String> = all_deployments(layout)?
        .into_iter()
        .filter(|d| d.image == stored.reference)
        .map(|d| format!("{} (slot {})", d.name, d.slot))
        .collect();
    if !users.is_empty() && !force {
        bail!("{} is used by {}; uninstall or update them first, or pass --force", stored.reference, users.join(", "));
    }
    store.remove_image(&stored.reference)?;
    Ok(())
}

/// What `prune` removed.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    /// What went from the image store.
    #[serde(flatten)]
    pub store: Pruned,
    pub slots: Vec<String>,
}

/// Removes deployment slots no installed container can use, unreferenced layers and objects.
pub async fn prune(layout: &Layout, systemd: &impl ServiceManager) -> Result<PruneReport> {
    let (_lock, _) = lock_and_recover(layout, systemd, None).await?;
    let installed: BTreeSet<String> = layout.installed_names()?.into_iter().collect();
    let mut slots = Vec::new();
    for entry in std::fs::read_dir(layout.deployments()).context("reading the deployments")? {
        let entry = entry.context("reading the deployments")?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_symlink() {
            continue;
        }
        let owner = file_name.rsplit_once('.').map(|(name, _)| name).unwrap_or(&file_name);
        let orphaned = file_name.starts_with('.') || !installed.contains(owner);
        if orphaned {
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            slots.push(file_name);
        }
    }
    let store =
        if layout.repo().join("config").exists() { Store::open(&layout.repo())?.prune()? } else { Pruned::default() };
    Ok(PruneReport { store, slots })
}

pub(in crate::deploy) fn stored_image(store: &Store, image: &ImageRef) -> Result<StoredImage> {
    store
        .image(&image.canonical())?
        .with_context(|| format!("{image} is not in the store (`sysctr images` lists what is)"))
}

/// Every slot's record, active or not.
fn all_deployments(layout: &Layout) -> Result<Vec<Deployment>> {
    let mut out = Vec::new();
    for name in layout.installed_names()? {
        for slot in [0, 1] {
            if let Ok(d) = layout.read_slot_info(&name, slot) {
                out.push(d);
            }
        }
    }
    Ok(out)
}
