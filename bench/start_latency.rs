//! `systemctl start` of a system container (ready once `started`: the unit's start job ends when
//! the container's process runs) against `runc run --detach` of the same bundle (which returns
//! once runc has started the process), side by side on one booted test host, RUNS times each
//! (default 31). Prints both medians and the difference: what sysctr's unit and watcher add.
//! For scale, a third line times `systemctl start` of a oneshot unit that runs /bin/true.
//! Run: cargo bench --bench start_latency   (RUNS=N to change the count)

// Benches stop at the first thing that is not as expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{Context, Result};
use common::*;

/// Runs `command` in the host's shell, its output to /dev/null (a detached container keeps
/// what it inherits open), and returns the milliseconds it took.
fn timed(host: &TestHost, command: &str) -> Result<f64> {
    let script = format!(
        "t0=$(date +%s%N); {command} </dev/null >/dev/null 2>&1 || exit 1; t1=$(date +%s%N); echo $((t1 - t0))"
    );
    let out = host.exec_ok(&["sh", "-c", &script])?;
    let nanos: f64 = out.trim().parse().with_context(|| format!("'{}'", out.trim()))?;
    Ok(nanos / 1e6)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(31);
    let registry = Registry::start()?;
    let work = tempfile::Builder::new().prefix("sysctr-bench.").tempdir_in("/var/tmp")?;
    let image = Image::new()
        .layer(busybox_layer())
        .cmd(&["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"])
        .label("atomic.type", "system");
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, "latest")?;
    let reference = registry.image_ref("bench/idle:latest");
    push(&layout, "latest", &reference)?;

    let host = TestHost::boot()?;
    let sysctr = sysctr_bin();
    let sysctr = sysctr.to_str().context("non-UTF-8 path")?;
    host.exec_ok(&[sysctr, "install", "--name", "idle", &reference])?;
    let bundle = "/var/lib/sysctr/deployments/idle";
    let noop = "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\nExecStart=/bin/true\n";
    std::fs::write(host.root().join("etc/systemd/system/noop.service"), noop)?;
    // Started more often than systemd's start limit allows by default.
    let dropins = host.root().join("etc/systemd/system/idle.service.d");
    std::fs::create_dir_all(&dropins)?;
    std::fs::write(dropins.join("bench.conf"), "[Unit]\nStartLimitIntervalSec=0\n")?;
    host.exec_ok(&["systemctl", "daemon-reload"])?;
    let (mut unit_ms, mut runc_ms, mut noop_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        noop_ms.push(timed(&host, "systemctl start noop.service")?);
        unit_ms
            .push(timed(&host, "systemctl start idle.service").map_err(|e| e.context(host.journal("idle.service")))?);
        host.exec_ok(&["systemctl", "stop", "idle.service"])?;
        runc_ms.push(timed(&host, &format!("runc --systemd-cgroup run --detach --bundle {bundle} alone"))?);
        host.exec_ok(&["runc", "--systemd-cgroup", "delete", "--force", "alone"])?;
    }
    let (unit, runc, noop) = (median(unit_ms), median(runc_ms), median(noop_ms));
    println!("runs: {runs} each, alternating");
    println!("systemctl start (ready once started):   median {unit:.1} ms");
    println!("runc run --detach of the same bundle:   median {runc:.1} ms");
    println!("systemctl start of /bin/true (oneshot): median {noop:.1} ms");
    println!("the unit over runc alone:               {:.1} ms ({:.2}x)", unit - runc, unit / runc);
    Ok(())
}
