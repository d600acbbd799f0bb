//! `list` and `images`: read from the deployment records and the store only, never the network.

use anyhow::{Context, Result};
use oci_spec::image::ImageManifest;
use serde::Serialize;

use std::collections::BTreeMap;

use crate::deploy::host::layout::{Deployment, Layout, Origin};
use crate::digest::Digest;
use crate::store::Store;
use crate::systemd::{ServiceManager, UnitState};

#[derive(Debug, Serialize)]
pub struct ContainerRow {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: ServiceState,
    pub created: String,
    pub slot: u8,
    pub runtime: String,
    /// Whether the host installed it or its OS image provides it.
    pub origin: Origin,
}

/// One row per installed container (its active slot), the host's own and those its OS image
/// provides, by name; with `all`, also one per previous slot, whose state is `previous`.
pub async fn list(layout: &Layout, all: bool, systemd: &impl ServiceManager) -> Result<Vec<ContainerRow>> {
    let image = layout.image_layout();
    let mut names: Vec<(String, &Layout)> = layout.installed_names()?.into_iter().map(|n| (n, layout)).collect();
    if let Some(image) = &image {
        names.extend(layout.image_provided_names()?.into_iter().map(|n| (n, image)));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = Vec::new();
    for (name, from) in names {
        let d = from.read_info(&name)?;
        let state = service_state(&d, systemd).await;
        let previous = if all { from.read_slot_info(&name, 1 - d.slot).ok() } else { None };
        rows.push(ContainerRow::new(d, state, from.origin()));
        if let Some(previous) = previous {
            rows.push(ContainerRow::new(previous, ServiceState::Previous, from.origin()));
        }
    }
    Ok(rows)
}

/// The state of a deployment's service as `list` and `status` show it. They work where systemd
/// cannot be asked (an offline root, no bus): the state is then `unknown`.
async fn service_state(d: &Deployment, systemd: &impl ServiceManager) -> ServiceState {
    if !d.has_service {
        ServiceState::NoService
    } else if !systemd.target().runs_units() {
        ServiceState::Unknown
    } else {
        match systemd.state(&Layout::unit_name(&d.name)).await {
            Ok(state) => ServiceState::Unit(state),
            Err(_) => ServiceState::Unknown,
        }
    }
}

/// A container's state as `list` and `status` show it, in JSON and in text alike: its service's
/// systemd state (`active` reads `running`), or why there is none to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// What systemd reports for the service.
    Unit(UnitState),
    /// The container was installed without a service.
    NoService,
    /// systemd cannot be asked (an offline root, no bus).
    Unknown,
    /// A slot that is not the active one.
    Previous,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Unit(UnitState::Active) => "running",
            ServiceState::Unit(state) => state.as_str(),
            ServiceState::NoService => "no service",
            ServiceState::Unknown => "unknown",
            ServiceState::Previous => "previous",
        }
    }
}

impl Serialize for ServiceState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything about one installed container (`sysctr status`).
#[derive(Debug, Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ServiceState,
    /// Whether the host installed it or its OS image provides it (and changes it).
    pub origin: Origin,
    pub unit: Option<String>,
    /// Its socket unit, for a socket-activated container: what is enabled and started, the
    /// service starting at the first connection.
    pub socket: Option<String>,
    /// Whether `update --all` updates it.
    pub auto_update: bool,
    pub current: SlotStatus,
    /// The deployment `rollback` would switch to, if there is one.
    pub previous: Option<SlotStatus>,
    /// A command on this container that was interrupted and awaits `sysctr recover`.
    pub pending: Option<String>,
    /// What the supervisor of a running `healthy` container last saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::supervise::HealthReport>,
}

/// One deployment slot of a container.
#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub slot: u8,
    pub image: String,
    /// `sha256:` and the digest of the image config.
    pub image_id: String,
    pub manifest_digest: String,
    /// When the slot was built: the last install, update or rebase that made it.
    pub created: String,
    /// The values given with `--set` (defaults come from the image).
    pub values: BTreeMap<String, String>,
    /// What systemd listens on for it (`--listen`), starting it at the first connection.
    #[serde(skip_serializing_if = "crate::deploy::Listen::is_empty")]
    pub listen: crate::deploy::Listen,
    /// When its unit counts as ready; `None` when the image's own unit decides.
    pub ready: Option<crate::supervise::plan::Readiness>,
    /// The last update away from it that failed and was rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_update: Option<crate::deploy::host::layout::FailedUpdate>,
}

impl SlotStatus {
    fn new(d: &Deployment) -> SlotStatus {
        SlotStatus {
            slot: d.slot,
            image: d.image.clone(),
            image_id: format!("sha256:{}", d.image_id),
            manifest_digest: d.manifest_digest.clone(),
            created: d.created.clone(),
            values: d.values.clone(),
            listen: d.listen.clone(),
            ready: d.readiness.clone(),
            failed_update: d.failed_update.clone(),
        }
    }
}

/// The status of the installed container `name`.
pub async fn status(layout: &Layout, name: &str, systemd: &impl ServiceManager) -> Result<ContainerStatus> {
    crate::reference::validate_container_name(name)?;
    let image = layout.image_provided(name).and(layout.image_layout());
    let from = image.as_ref().unwrap_or(layout);
    let current = from.read_info(name)?;
    let previous = from.read_slot_info(name, 1 - current.slot).ok();
    let pending = super::recovery::pending(layout)?
        .into_iter()
        .find(|p| p.container.as_deref() == Some(name))
        .map(|p| p.describe());
    let state = service_state(&current, systemd).await;
    let health = match (&current.readiness, state) {
        (Some(readiness), ServiceState::Unit(UnitState::Active | UnitState::Activating))
            if readiness.ready == crate::supervise::plan::ReadyMode::Healthy =>
        {
            let file = crate::deploy::deployment::bundle::run_file(name, "health");
            crate::supervise::read_health(&layout.host_dir()?, &file)?
        }
        _ => None,
    };
    Ok(ContainerStatus {
        name: name.to_string(),
        state,
        origin: from.origin(),
        unit: current.has_service.then(|| Layout::unit_name(name)),
        socket: current.has_socket.then(|| Layout::socket_name(name)),
        auto_update: current.auto_update,
        current: SlotStatus::new(&current),
        previous: previous.as_ref().map(SlotStatus::new),
        pending,
        health,
    })
}

impl ContainerRow {
    fn new(d: Deployment, state: ServiceState, origin: Origin) -> ContainerRow {
        ContainerRow {
            name: d.name,
            image: d.image,
            image_id: format!("sha256:{}", d.image_id),
            state,
            created: d.created,
            slot: d.slot,
            runtime: d.runtime,
            origin,
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
            image_id: format!("sha256:{image_id}"),
            manifest_digest: image.manifest_digest,
            size,
            used_by,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::ServiceState;
    use crate::systemd::UnitState;

    #[test]
    fn service_states_serialize_as_list_and_status_show_them() {
        let all = [
            (ServiceState::Unit(UnitState::Active), "running"),
            (ServiceState::Unit(UnitState::Reloading), "reloading"),
            (ServiceState::Unit(UnitState::Inactive), "inactive"),
            (ServiceState::Unit(UnitState::Failed), "failed"),
            (ServiceState::Unit(UnitState::Activating), "activating"),
            (ServiceState::Unit(UnitState::Deactivating), "deactivating"),
            (ServiceState::Unit(UnitState::Other), "other"),
            (ServiceState::NoService, "no service"),
            (ServiceState::Unknown, "unknown"),
            (ServiceState::Previous, "previous"),
        ];
        for (state, name) in all {
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(state.to_string(), name);
        }
    }

    #[test]
    fn unit_states_show_as_systemd_names_them_but_active_reads_running() {
        for state in [
            UnitState::Reloading,
            UnitState::Inactive,
            UnitState::Failed,
            UnitState::Activating,
            UnitState::Deactivating,
            UnitState::Other,
        ] {
            assert_eq!(ServiceState::Unit(state).as_str(), state.as_str());
        }
        assert_eq!(ServiceState::Unit(UnitState::Active).as_str(), "running");
    }
}
