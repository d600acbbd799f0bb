use anyhow::Result;

use super::install::short_id;
use super::print_json;
use crate::deploy::{self, Layout, Origin, SlotStatus};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct StatusOpts {
    /// Name of the installed container.
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(layout: &Layout, systemd: &HostManager, opts: &StatusOpts) -> Result<()> {
    let status = deploy::status(layout, &opts.name, systemd).await?;
    if opts.json {
        return print_json("ContainerStatus", &status);
    }
    let unit = status.unit.as_deref().map_or(String::new(), |u| format!(" ({u})"));
    println!("{}: {}{unit}", status.name, status.state);
    if status.origin == Origin::Image {
        println!("  origin: the OS image (changes with it)");
    } else {
        println!("  origin: host");
    }
    print_slot("current", &status.current);
    match &status.previous {
        Some(previous) => print_slot("previous", previous),
        None => println!("  previous: none"),
    }
    println!("  auto-update: {}", if status.auto_update { "yes" } else { "no (--no-auto-update)" });
    if let Some(health) = &status.health {
        let output = if health.last_output.is_empty() {
            String::new()
        } else {
            format!(": {}", health.last_output.replace('\n', " | "))
        };
        println!(
            "  health: {} since {} ({} failed in a row; last check {}{output})",
            health.state, health.since, health.failures, health.last_result
        );
    }
    if let Some(pending) = &status.pending {
        println!("  pending: {pending}; run `sysctr recover`");
    }
    Ok(())
}

fn print_slot(which: &str, slot: &SlotStatus) {
    let id = short_id(slot.image_id.trim_start_matches("sha256:"));
    println!(
        "  {which}: slot {}, {} (image {id}, manifest {}), built {}",
        slot.slot, slot.image, slot.manifest_digest, slot.created
    );
    if !slot.values.is_empty() {
        let values: Vec<String> = slot.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("    values: {}", values.join(" "));
    }
    if let Some(failed) = &slot.failed_update {
        println!(
            "    update to {} failed at {}, rolled back: {}",
            failed.image,
            failed.at,
            crate::output::printable(&failed.reason)
        );
    }
    match &slot.ready {
        Some(ready) => {
            let check = ready.health.as_ref().map_or(String::new(), |h| {
                let command = crate::output::printable(&h.command.join(" ")).into_owned();
                format!(", check `{command}` every {}", humantime::format_duration(h.interval))
            });
            println!("    ready: {} (within {}{check})", ready.ready, humantime::format_duration(ready.start_timeout));
        }
        None => println!("    ready: as the image's unit says"),
    }
    let listen = slot.listen.stream.iter().chain(&slot.listen.datagram);
    let listen: Vec<&str> = listen.map(String::as_str).collect();
    if !listen.is_empty() {
        println!("    listen: {}", listen.join(" "));
    }
}
