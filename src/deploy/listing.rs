//! `list` and `images`: read from the deployment records and the store only, never the network.

use anyhow::{Context, Result};
use oci_spec::image::ImageManifest;
use serde::Serialize;

use super::layout::Layout;
use crate::digest::Digest;
use crate::store::Store;
use crate::systemd::{ServiceManager, UnitState};

#[derive(Debug, Serialize)]
pub struct ContainerRow {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `running`, `failed`, `inactive`, `no service`, `unknown` when systemd cannot be asked, or
    /// `previous` for a slot that is not the active one.
    pub state: String,
    pub created: String,
    pub slot: u8,
    pub runtime: String,
}

/// One row per installed container (its active slot); with `all`, also one per previous slot,
/// whose state is `previous`.
pub async fn list(layout: &Layout, all: bool, systemd: &impl ServiceManager) -> Result<Vec<ContainerRow>> {
    let names = layout.installed_names()?;
    let mut rows = Vec::new();
    for name in names {
        let d = layout.read_info(&name)?;
        // Listing works where systemd cannot be asked (an offline root, no bus): states are
        // then unknown.
        let state = if !d.has_service {
            "no service".to_string()
        } else if !systemd.runs_units() {
            "unknown".to_string()
        } else {
            match systemd.state(&Layout::unit_name(&name)).await {
                Ok(UnitState::Active) => "running".to_string(),
                Ok(other) => other.as_str().to_string(),
                Err(_) => "unknown".to_string(),
            }
        };
        let previous = if all { layout.read_slot_info(&name, 1 - d.slot).ok() } else { None };
        rows.push(ContainerRow::new(d, state));
        if let Some(previous) = previous {
            rows.push(ContainerRow::new(previous, "previous".to_string()));
        }
    }
    Ok(rows)
}

impl ContainerRow {
    fn new(d: super::layout::Deployment, state: String) -> ContainerRow {
        ContainerRow {
            name: d.name,
            image: d.image,
            image_id: d.image_id,
            state,
            created: d.created,
            slot: d.slot,
            runtime: d.runtime,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ImageRow {
    pub reference: String,
    pub image_id: String,
    pub manifest_digest: String,
    /// Sum of the layers' unpacked file sizes.
    pub size: u64,
    pub used_by: Vec<String>,
}

pub fn images(layout: &Layout) -> Result<Vec<ImageRow>> {
    if !layout.repo().join("config").exists() {
        return Ok(Vec::new());
    }
    let store = Store::open(&layout.repo())?;
    let deployments: Vec<_> = layout.installed_names()?.iter().map(|n| layout.read_info(n)).collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for image in store.images()? {
        let manifest: ImageManifest = serde_json::from_slice(&image.manifest_raw)
            .with_context(|| format!("reading the stored manifest of {}", image.reference))?;
        let image_id = image.image_id()?;
        let mut size = 0;
        for layer in manifest.layers() {
            size += store.layer_unpacked_size(&Digest::parse(layer.digest().as_ref())?)?.unwrap_or(0);
        }
        let used_by = deployments.iter().filter(|d| d.image == image.reference).map(|d| d.name.clone()).collect();
        rows.push(ImageRow {
            reference: image.reference,
            image_id,
            manifest_digest: image.manifest_digest,
            size,
            used_by,
        });
    }
    Ok(rows)
}
