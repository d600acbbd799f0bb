use anyhow::Result;

use super::print_json;
use crate::deploy::{self, Layout};

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct InfoOpts {
    /// An image in the store.
    pub image: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(layout: &Layout, opts: &InfoOpts) -> Result<()> {
    let info = deploy::info(layout, &super::image_arg(&opts.image)?)?;
    if opts.json {
        return print_json("ImageInfo", &info);
    }
    println!("Image: {}", info.reference);
    println!("Image ID: {}", info.image_id);
    println!("Labels:");
    for (key, value) in &info.labels {
        println!("  {key}={value}");
    }
    println!("Variables with a default (override with --set):");
    for (key, value) in &info.defaults {
        println!("  {key}={value}");
    }
    for key in &info.host_provided {
        println!("  {key} (provided by the host)");
    }
    println!("Variables that must be set with --set:");
    for key in &info.required {
        println!("  {key}");
    }
    Ok(())
}
