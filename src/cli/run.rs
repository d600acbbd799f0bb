use std::path::PathBuf;

use anyhow::Result;

use super::{parse_sets, RegistryArgs};
use crate::deploy::{self, Layout, RunRequest};
use crate::systemd::HostManager;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RunOpts {
    /// OCI runtime to run the container with (default: runc).
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// NAME given to the templates of an image labelled atomic.run=once.
    #[arg(long)]
    pub name: Option<String>,
    /// Set a template variable of an image labelled atomic.run=once, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// `[docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST]`, `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`
    /// or `docker-archive:PATH[:REF|:@N]`.
    pub image: String,
    /// Command to run instead of the image's own.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Returns the container's exit code, which becomes sysctr's.
pub async fn run(layout: &Layout, systemd: &HostManager, opts: &RunOpts) -> Result<i32> {
    let request = RunRequest {
        image: opts.registry.image(&opts.image).await?,
        command: opts.command.clone(),
        runtime: opts.runtime.clone(),
        registry: opts.registry.options(),
        name: opts.name.clone(),
        values: parse_sets(&opts.set)?,
    };
    deploy::run_once(layout, &request, systemd).await
}
