//! Boots a test host with the etcd -> flannel -> containerd chain installed BOOTS times (default
//! 20) and a bare host as many times, and prints how many chain boots reached a serving CRI and
//! the medians of boot-to-ready against the bare boot-to-multi-user.target.
//! Run: cargo bench --bench boot_chain   (BOOTS=N to change the count)

// Tests stop at the first thing that is not as expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;

fn property(host: &TestHost, unit: Option<&str>, name: &str) -> Result<u64> {
    let mut args = vec!["systemctl", "show", "-P", name];
    args.extend(unit);
    let text = host.exec_ok(&args)?;
    text.trim().parse().with_context(|| format!("{name} of {unit:?}: '{}'", text.trim()))
}

/// Milliseconds from systemd's start to `unit` becoming active, in this boot.
fn since_boot(host: &TestHost, unit: &str) -> Result<f64> {
    let start = property(host, None, "UserspaceTimestampMonotonic")?;
    let active = property(host, Some(unit), "ActiveEnterTimestampMonotonic")?;
    Ok(active.saturating_sub(start) as f64 / 1000.0)
}

/// For one unit of this boot: milliseconds from systemd starting its command to the container's
/// process being created (runc and sysctr's share: the fork of the container's init, a little
/// before it executes the daemon), and from there to the unit being ready (the daemon's own).
fn split(host: &TestHost, name: &str) -> Result<(f64, f64)> {
    let unit = format!("{name}.service");
    let started = property(host, Some(&unit), "ExecMainStartTimestampMonotonic")? as f64;
    let ready = property(host, Some(&unit), "ActiveEnterTimestampMonotonic")? as f64;
    let state: serde_json::Value = serde_json::from_str(&host.exec_ok(&["runc", "state", name])?)?;
    let pid = state["pid"].as_u64().context("runc state has no pid")?;
    // Field 22 of /proc/PID/stat, after the parenthesized name: start time in clock ticks since
    // boot, on the clock systemd's monotonic timestamps use.
    let stat = host.exec_ok(&["cat", &format!("/proc/{pid}/stat")])?;
    let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
    let ticks: f64 = after_name.split_whitespace().nth(19).context("short stat")?.parse()?;
    let per_second: f64 = host.exec_ok(&["getconf", "CLK_TCK"])?.trim().parse()?;
    let created = ticks / per_second * 1e6;
    Ok(((created - started) / 1000.0, (ready - created) / 1000.0))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let boots: usize = std::env::var("BOOTS").ok().and_then(|b| b.parse().ok()).unwrap_or(20);
    let registry = Registry::start()?;
    let work = tempfile::Builder::new().prefix("sysctr-bench.").tempdir_in("/var/tmp")?;
    let file = prepare_node(&registry, work.path())?;

    let mut bare = TestHost::boot()?;
    let mut bare_ms = Vec::new();
    for _ in 0..boots {
        bare.reboot()?;
        bare_ms.push(since_boot(&bare, "multi-user.target")?);
    }
    drop(bare);

    let mut host = TestHost::boot()?;
    anyhow::ensure!(apply_node(&host, &file)?.status.success(), "sysctr apply failed");

    let mut ready_ms = Vec::new();
    let (mut runtime_ms, mut daemon_ms) = (Vec::new(), Vec::new());
    let mut successes = 0;
    for _ in 0..boots {
        host.reboot()?;
        let ready = wait_for("a serving CRI", Duration::from_secs(60), Duration::from_millis(100), || {
            Ok(cri_serving(&host).then_some(()))
        });
        if ready.is_ok() {
            successes += 1;
            ready_ms.push(since_boot(&host, "containerd.service")?);
            let (mut runtime, mut daemon) = (0.0, 0.0);
            for name in ["etcd", "flannel", "containerd"] {
                let (r, d) = split(&host, name)?;
                (runtime, daemon) = (runtime + r, daemon + d);
            }
            runtime_ms.push(runtime);
            daemon_ms.push(daemon);
        }
    }
    let (bare, chain) = (median(bare_ms), median(ready_ms));
    println!("boots: {boots}; chain came up with a serving CRI: {successes}/{boots}");
    println!("bare host, systemd start -> multi-user.target:     median {bare:.0} ms");
    println!("chain host, systemd start -> containerd ready:     median {chain:.0} ms");
    println!("ratio chain / bare:                                {:.2}x", chain / bare);
    println!("of the chain, summed over its three units (medians; clock ticks of 10 ms):");
    println!("  unit start -> container process created (sysctr, runc): {:.0} ms", median(runtime_ms));
    println!("  container process created -> ready (the daemons):      {:.0} ms", median(daemon_ms));
    Ok(())
}
