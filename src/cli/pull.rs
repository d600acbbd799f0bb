use anyhow::{Context, Result};

use super::{print_json, ChangeReport, RegistryArgs};
use crate::deploy::{self, Layout};
use crate::store::Store;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct PullOpts {
    /// `[docker://]HOST[:PORT]/PATH[:TAG|@sha256:DIGEST]`, `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`
    /// or `docker-archive:PATH[:REF|:@N]`.
    pub image: String,
    /// Say whether the source has an image the store does not hold under this reference,
    /// fetching only its manifest and config (signatures checked); change nothing.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub report: ChangeReport,
}

/// `pull --check --json`: `changed` says whether a pull would store a new image.
#[derive(serde::Serialize)]
struct PullCheck<'a> {
    changed: bool,
    check: bool,
    reference: &'a str,
    /// What the source has now.
    manifest_digest: &'a str,
    /// What the store holds under the reference, if anything.
    stored_digest: Option<&'a str>,
}

/// `pull --json`.
#[derive(serde::Serialize)]
struct PullResult<'a> {
    /// Whether the store holds an image under this reference that it did not before.
    changed: bool,
    reference: &'a str,
    manifest_digest: &'a str,
    layers_fetched: usize,
    layers_present: usize,
    signatures: &'a [String],
    skipped: &'a [String],
}

/// Returns the exit code (see [`ChangeReport`]).
pub async fn run(layout: &Layout, opts: &PullOpts) -> Result<i32> {
    let image = opts.registry.image(&opts.image).await?;
    if opts.check {
        // Read only: no lock taken, no store created.
        let before = if layout.repo().exists() {
            Store::open(&layout.repo())?.image(&image.canonical())?.map(|stored| stored.manifest_digest)
        } else {
            None
        };
        let available = deploy::available_digest(&image, &opts.registry.options())
            .await
            .with_context(|| format!("checking {image}"))?;
        let changed = before.as_deref() != Some(available.as_str());
        let reference = image.canonical();
        if opts.report.json {
            let check = PullCheck {
                changed,
                check: true,
                reference: &reference,
                manifest_digest: &available,
                stored_digest: before.as_deref(),
            };
            print_json("PullCheck", &check)?;
        } else if changed {
            crate::say!("{reference}: the source has {available}, not in the store");
        } else {
            crate::say!("{reference}: up to date ({available})");
        }
        return Ok(opts.report.exit_code(changed));
    }
    let _lock = layout.lock()?;
    let store = Store::open_or_create(&layout.repo())?;
    let before = store.image(&image.canonical())?.map(|stored| stored.manifest_digest);
    let pulled = deploy::pull(&store, &image, &opts.registry.options()).await?;
    deploy::share_with_the_os_image(layout, &store)?;
    let changed = before.as_deref() != Some(pulled.image.manifest_digest.as_str());
    if opts.report.json {
        print_json(
            "PullResult",
            &PullResult {
                changed,
                reference: &pulled.image.reference,
                manifest_digest: &pulled.image.manifest_digest,
                layers_fetched: pulled.layers_fetched,
                layers_present: pulled.layers_present,
                signatures: &pulled.signatures,
                skipped: &pulled.skipped,
            },
        )?;
        return Ok(opts.report.exit_code(changed));
    }
    for skipped in &pulled.skipped {
        crate::output::warning(format!("not stored (OSTree cannot hold it): {skipped}"));
    }
    for signature in &pulled.signatures {
        crate::output::note(format!("signature verified: {signature}"));
    }
    crate::say!(
        "pulled {} ({}): {} layers fetched, {} already present",
        pulled.image.reference,
        pulled.image.manifest_digest,
        pulled.layers_fetched,
        pulled.layers_present
    );
    Ok(opts.report.exit_code(changed))
}
