use anyhow::Result;

use super::install::short_id;
use super::{print_json, print_table};
use crate::deploy::{self, Layout};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ImagesOpts {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only this image, if the store has it (its reference resolved as `pull` resolves it,
    /// without asking a registry).
    pub image: Option<String>,
}

pub fn run(layout: &Layout, opts: &ImagesOpts) -> Result<()> {
    let mut rows = deploy::images(layout)?;
    if let Some(image) = &opts.image {
        let reference = super::image_arg(image)?.canonical();
        rows.retain(|row| row.reference == reference);
    }
    if opts.json {
        return print_json("ImageList", &rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.reference.clone(), short_id(&r.image_id).to_string(), human_size(r.size), r.used_by.join(",")])
        .collect();
    print_table(&["REF", "IMAGE-ID", "SIZE", "USED-BY"], &table);
    Ok(())
}

pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
