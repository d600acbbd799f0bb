//! systemd's Manager over D-Bus: reload, enable/disable unit files, start/stop units and wait
//! for the job's result. No `systemctl` subprocess anywhere.

mod offline;
mod ordering;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use zbus::{proxy, Connection, OwnedObjectPath};

pub use offline::install_links;
pub use ordering::{check_dependencies, check_dependencies_of_set};

const DESTINATION: &str = "org.freedesktop.systemd1";
/// How long a start or stop job may take before we stop waiting; systemd's own default job
/// timeouts are shorter, so this only catches a bus that went silent.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a freshly started service must stay up to count as started.
const SETTLE_TIME: Duration = Duration::from_millis(1500);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<(String, String, String)>>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String) -> zbus::Result<()>;
}

#[proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn required_by(&self) -> zbus::Result<Vec<String>>;
}

/// A connection to the system's systemd.
pub struct Systemd {
    connection: Connection,
    manager: ManagerProxy<'static>,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Systemd")
    }
}

impl Systemd {
    pub async fn connect() -> Result<Systemd> {
        let connection = Connection::system()
            .await
            .context("connecting to the system D-Bus (is this host running systemd? for an offline tree use --root)")?;
        let manager = ManagerProxy::new(&connection).await.context("reaching systemd over D-Bus")?;
        manager.subscribe().await.context("subscribing to systemd job signals")?;
        Ok(Systemd { connection, manager })
    }

    pub async fn reload(&self) -> Result<()> {
        self.manager.reload().await.context("asking systemd to reload its units")
    }

    /// Enables units (by name), as `systemctl enable` would.
    pub async fn enable(&self, units: &[&str]) -> Result<()> {
        self.manager
            .enable_unit_files(units, false, false)
            .await
            .with_context(|| format!("enabling {}", units.join(" ")))?;
        Ok(())
    }

    /// Whether a unit file is enabled (`systemctl is-enabled` says `enabled`).
    pub async fn is_enabled(&self, unit: &str) -> Result<bool> {
        match self.manager.get_unit_file_state(unit).await {
            Ok(state) => Ok(state == "enabled"),
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.DBus.Error.FileNotFound" => Ok(false),
            Err(e) => Err(e).with_context(|| format!("reading whether {unit} is enabled")),
        }
    }

    pub async fn disable(&self, units: &[&str]) -> Result<()> {
        self.manager
            .disable_unit_files(units, false)
            .await
            .with_context(|| format!("disabling {}", units.join(" ")))?;
        Ok(())
    }

    /// Starts a unit and waits for the job's result; fails unless it is `done`.
    pub async fn start(&self, unit: &str) -> Result<()> {
        self.run_job(unit, "start").await
    }

    /// Stops a unit and waits for the job's result.
    pub async fn stop(&self, unit: &str) -> Result<()> {
        self.run_job(unit, "stop").await
    }

    async fn run_job(&self, unit: &str, verb: &str) -> Result<()> {
        // Listen before asking, or a fast job's signal could be missed.
        let mut removed = self.manager.receive_job_removed().await.context("listening for systemd job results")?;
        let job = match verb {
            "start" => self.manager.start_unit(unit, "replace").await,
            _ => self.manager.stop_unit(unit, "replace").await,
        }
        .with_context(|| format!("asking systemd to {verb} {unit}"))?;
        let wait = async {
            while let Some(signal) = removed.next().await {
                let args = signal.args().context("reading a JobRemoved signal")?;
                if args.job == job {
                    return Ok(args.result);
                }
            }
            bail!("the D-Bus connection closed while waiting for the {verb} job of {unit}")
        };
        let result = tokio::time::timeout(JOB_TIMEOUT, wait)
            .await
            .with_context(|| format!("timed out waiting for systemd to {verb} {unit}"))??;
        if result != "done" {
            bail!("systemd could not {verb} {unit} (job result: {result}); see `journalctl -u {unit}`");
        }
        Ok(())
    }

    /// After a successful start job, checks that the unit is still active a moment later: a
    /// simple service's start job succeeds as soon as its process is forked.
    pub async fn ensure_stays_active(&self, unit: &str) -> Result<()> {
        tokio::time::sleep(SETTLE_TIME).await;
        let state = self.active_state(unit).await?;
        if state != "active" {
            bail!("{unit} did not stay up after starting (state: {state}); see `journalctl -u {unit}`");
        }
        Ok(())
    }

    /// The units that require this one (systemd's RequiredBy, from `Requires=` and
    /// `[Install] RequiredBy=`): stopping this unit stops them.
    pub async fn required_by(&self, unit: &str) -> Result<Vec<String>> {
        let Some(proxy) = self.unit(unit).await? else { return Ok(Vec::new()) };
        proxy.required_by().await.with_context(|| format!("reading what requires {unit}"))
    }

    async fn unit(&self, unit: &str) -> Result<Option<UnitProxy<'_>>> {
        let path = match self.manager.get_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("looking up {unit}")),
        };
        let proxy = UnitProxy::builder(&self.connection)
            .destination(DESTINATION)
            .path(path)
            .build()
            .await
            .with_context(|| format!("reaching {unit} over D-Bus"))?;
        Ok(Some(proxy))
    }

    /// The unit's ActiveState (`active`, `failed`, `inactive`, ...); `inactive` if not loaded.
    pub async fn active_state(&self, unit: &str) -> Result<String> {
        let Some(proxy) = self.unit(unit).await? else { return Ok("inactive".to_string()) };
        proxy.active_state().await.with_context(|| format!("reading the state of {unit}"))
    }
}
