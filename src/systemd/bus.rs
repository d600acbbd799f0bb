//! systemd on a running host, over D-Bus: reload, enable/disable unit files, start/stop units
//! and wait for the job's result. Connected on first use, so commands that never need systemd
//! work without it.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use zbus::{proxy, Connection, OwnedObjectPath};

use super::{ChangeLog, ServiceManager, Target, Tmpfiles, UnitState};

const DESTINATION: &str = "org.freedesktop.systemd1";
/// How long a start or stop job may take before we stop waiting; systemd's own default job
/// timeouts are shorter, so this only catches a bus that went silent.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting to the bus may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a freshly started service must stay up to count as started.
const SETTLE_TIME: Duration = Duration::from_millis(1500);

/// A job [`Bus::run_job`] asks systemd for and waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Start,
    Stop,
}

impl Job {
    /// The verb, as messages say it: "asking systemd to start UNIT".
    fn as_str(self) -> &'static str {
        match self {
            Job::Start => "start",
            Job::Stop => "stop",
        }
    }
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    #[zbus(property)]
    fn bound_by(&self) -> zbus::Result<Vec<String>>;
}

/// An open connection to the system's systemd.
struct Connected {
    connection: Connection,
    manager: ManagerProxy<'static>,
}

/// systemd over D-Bus, connected on first use.
#[derive(Default)]
pub struct Bus {
    connected: OnceCell<Connected>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bus")
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    async fn connected(&self) -> Result<&Connected> {
        self.connected
            .get_or_try_init(|| async {
                let connect = async {
                    let connection = Connection::system().await.context(
                        "connecting to the system D-Bus (is this host running systemd? for an offline tree use --root)",
                    )?;
                    let manager = ManagerProxy::new(&connection).await.context("reaching systemd over D-Bus")?;
                    manager.subscribe().await.context("subscribing to systemd job signals")?;
                    Ok::<_, anyhow::Error>(Connected { connection, manager })
                };
                tokio::time::timeout(CALL_TIMEOUT, connect)
                    .await
                    .with_context(|| format!("timed out after {CALL_TIMEOUT:?} connecting to systemd over D-Bus"))?
            })
            .await
    }

    async fn manager(&self) -> Result<&ManagerProxy<'static>> {
        Ok(&self.connected().await?.manager)
    }

    async fn run_job(&self, unit: &str, verb: Job) -> Result<()> {
        let manager = self.manager().await?;
        // Listen before asking, or a fast job's signal could be missed.
        let mut removed = manager.receive_job_removed().await.context("listening for systemd job results")?;
        let job = match verb {
            Job::Start => manager.start_unit(unit, "replace").await,
            Job::Stop => manager.stop_unit(unit, "replace").await,
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

    async fn unit(&self, unit: &str) -> Result<Option<UnitProxy<'_>>> {
        let connected = self.connected().await?;
        let path = match connected.manager.get_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("looking up {unit}")),
        };
        let proxy = UnitProxy::builder(&connected.connection)
            .destination(DESTINATION)
            .path(path)
            .build()
            .await
            .with_context(|| format!("reaching {unit} over D-Bus"))?;
        Ok(Some(proxy))
    }
}

impl ServiceManager for Bus {
    fn target(&self) -> Target {
        Target::Booted
    }

    async fn reload(&self) -> Result<()> {
        self.manager().await?.reload().await.context("asking systemd to reload its units")
    }

    async fn enable(&self, unit: &str, changes: &mut dyn ChangeLog) -> Result<()> {
        changes.enabling(unit)?;
        self.manager()
            .await?
            .enable_unit_files(&[unit], false, false)
            .await
            .with_context(|| format!("enabling {unit}"))?;
        Ok(())
    }

    async fn disable(&self, unit: &str, changes: Option<&mut dyn ChangeLog>) -> Result<()> {
        if let Some(changes) = changes {
            changes.disabling(unit)?;
        }
        self.manager().await?.disable_unit_files(&[unit], false).await.with_context(|| format!("disabling {unit}"))?;
        Ok(())
    }

    async fn start(&self, unit: &str) -> Result<()> {
        self.run_job(unit, Job::Start).await
    }

    async fn queue_start(&self, unit: &str) -> Result<()> {
        let manager = self.manager().await?;
        tokio::time::timeout(JOB_TIMEOUT, manager.start_unit(unit, "replace"))
            .await
            .with_context(|| format!("timed out asking systemd to start {unit}"))?
            .with_context(|| format!("asking systemd to start {unit}"))?;
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<()> {
        self.run_job(unit, Job::Stop).await
    }

    /// A simple service's start job succeeds as soon as its process is forked: look again a
    /// moment later.
    async fn ensure_stays_active(&self, unit: &str) -> Result<()> {
        tokio::time::sleep(SETTLE_TIME).await;
        let state = self.state(unit).await?;
        if state != UnitState::Active {
            bail!("{unit} did not stay up after starting (state: {}); see `journalctl -u {unit}`", state.as_str());
        }
        Ok(())
    }

    async fn state(&self, unit: &str) -> Result<UnitState> {
        let Some(proxy) = self.unit(unit).await? else { return Ok(UnitState::Inactive) };
        let state = proxy.active_state().await.with_context(|| format!("reading the state of {unit}"))?;
        Ok(UnitState::from_active_state(&state))
    }

    /// systemd's RequiredBy, from `Requires=` and `[Install] RequiredBy=`.
    async fn required_by(&self, unit: &str) -> Result<Vec<String>> {
        let Some(proxy) = self.unit(unit).await? else { return Ok(Vec::new()) };
        let mut units = proxy.required_by().await.with_context(|| format!("reading what requires {unit}"))?;
        let bound = proxy.bound_by().await.with_context(|| format!("reading what is bound to {unit}"))?;
        units.extend(bound.into_iter().filter(|b| !units.contains(b)).collect::<Vec<_>>());
        Ok(units)
    }

    async fn is_enabled(&self, unit: &str) -> Result<bool> {
        match self.manager().await?.get_unit_file_state(unit).await {
            Ok(state) => Ok(state == "enabled"),
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.DBus.Error.FileNotFound" => {
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("reading whether {unit} is enabled")),
        }
    }

    fn tmpfiles(&self, action: Tmpfiles, file: &Path) -> Result<()> {
        let flag = match action {
            Tmpfiles::Create => "--create",
            Tmpfiles::Remove => "--remove",
        };
        let output = std::process::Command::new("systemd-tmpfiles")
            .arg(flag)
            .arg(file)
            .output()
            .context("running systemd-tmpfiles")?;
        if !output.status.success() {
            bail!(
                "systemd-tmpfiles {flag} {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Job;

    #[test]
    fn job_verbs_read_as_in_messages() {
        assert_eq!([Job::Start, Job::Stop].map(|job| job.to_string()), ["start", "stop"]);
    }
}
