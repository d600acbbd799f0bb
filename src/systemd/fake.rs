//! An in-memory systemd for tests: keeps unit states, records every call, and fails where a
//! test tells it to.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Result};

use super::{ChangeLog, ServiceManager, Target, Tmpfiles, UnitState};

#[derive(Debug, Default)]
struct State {
    calls: Vec<String>,
    enabled: BTreeSet<String>,
    active: BTreeSet<String>,
    failing_start: BTreeSet<String>,
    unreachable: bool,
}

#[derive(Debug, Default)]
pub struct Fake {
    state: Mutex<State>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// A systemd that cannot be reached: every call fails, as without D-Bus.
    pub fn unreachable() -> Fake {
        let fake = Fake::default();
        fake.lock().unreachable = true;
        fake
    }

    /// The next start of `unit` fails, as for a service that exits at once.
    pub fn fail_next_start_of(&self, unit: &str) {
        self.lock().failing_start.insert(unit.to_string());
    }

    pub fn set_reachable(&self, reachable: bool) {
        self.lock().unreachable = !reachable;
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn is_active(&self, unit: &str) -> bool {
        self.lock().active.contains(unit)
    }

    pub fn is_enabled_now(&self, unit: &str) -> bool {
        self.lock().enabled.contains(unit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn call(&self, what: String) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut state = self.lock();
        if state.unreachable {
            bail!("connecting to the system D-Bus: no bus (fake)");
        }
        state.calls.push(what);
        Ok(state)
    }
}

impl ServiceManager for Fake {
    fn target(&self) -> Target {
        Target::Booted
    }

    async fn reload(&self) -> Result<()> {
        self.call("reload".into()).map(drop)
    }

    async fn enable(&self, unit: &str, changes: &mut dyn ChangeLog) -> Result<()> {
        changes.enabling(unit)?;
        self.call(format!("enable {unit}"))?.enabled.insert(unit.to_string());
        Ok(())
    }

    async fn disable(&self, unit: &str, changes: Option<&mut dyn ChangeLog>) -> Result<()> {
        if let Some(changes) = changes {
            changes.disabling(unit)?;
        }
        self.call(format!("disable {unit}"))?.enabled.remove(unit);
        Ok(())
    }

    async fn start(&self, unit: &str) -> Result<()> {
        let mut state = self.call(format!("start {unit}"))?;
        if state.failing_start.remove(unit) {
            bail!("systemd could not start {unit} (job result: failed) (fake)");
        }
        state.active.insert(unit.to_string());
        Ok(())
    }

    async fn queue_start(&self, unit: &str) -> Result<()> {
        let mut state = self.call(format!("queue start {unit}"))?;
        state.active.insert(unit.to_string());
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<()> {
        self.call(format!("stop {unit}"))?.active.remove(unit);
        Ok(())
    }

    async fn ensure_stays_active(&self, unit: &str) -> Result<()> {
        if !self.call(format!("check {unit}"))?.active.contains(unit) {
            bail!("{unit} did not stay up after starting (fake)");
        }
        Ok(())
    }

    async fn state(&self, unit: &str) -> Result<UnitState> {
        let active = self.call(format!("state {unit}"))?.active.contains(unit);
        Ok(if active { UnitState::Active } else { UnitState::Inactive })
    }

    async fn required_by(&self, unit: &str) -> Result<Vec<String>> {
        self.call(format!("required-by {unit}")).map(|_| Vec::new())
    }

    async fn is_enabled(&self, unit: &str) -> Result<bool> {
        Ok(self.call(format!("is-enabled {unit}"))?.enabled.contains(unit))
    }

    fn tmpfiles(&self, action: Tmpfiles, file: &Path) -> Result<()> {
        self.call(format!("tmpfiles {action:?} {}", file.display())).map(drop)
    }
}
