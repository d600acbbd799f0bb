use anyhow::Result;

use super::RegistryArgs;
use crate::deploy::{self, Layout};
use crate::store::Store;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct PullOpts {
    /// `[docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST]`, `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`
    /// or `docker-archive:PATH[:REF|:@N]`.
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(layout: &Layout, opts: &PullOpts) -> Result<()> {
    let image = opts.registry.image(&opts.image)?;
    let _lock = layout.lock()?;
    let store = Store::open_or_create(&layout.repo())?;
    let pulled = deploy::pull(&store, &image, &opts.registry.options()).await?;
    for skipped in &pulled.skipped {
        eprintln!("warning: not stored (OSTree cannot hold it): {skipped}");
    }
    for signature in &pulled.signatures {
        eprintln!("signature verified: {signature}");
    }
    println!(
        "pulled {} ({}): {} layers fetched, {} already present",
        pulled.image.reference, pulled.image.manifest_digest, pulled.layers_fetched, pulled.layers_present
    );
    Ok(())
}
