//! Command-line parsing and output. Each verb lives in its own file, turns its options into a
//! checked request and calls one `deploy` function; no logic of its own.

mod apply;
mod docs;
mod images;
mod info;
mod install;
mod list;
mod login;
mod mount;
mod progress;
mod prune;
mod pull;
mod recover;
mod rmi;
mod rollback;
mod run;
mod status;
mod uninstall;
mod update;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::deploy::{self, Layout, DEFAULT_STORAGE, IMAGE_STORAGE};
use crate::registry::{RegistryOptions, DEFAULT_REGISTRIES_CONF};
use crate::rooted::{Resolve, RootedDir};
use crate::store::{parse_size, LayerLimits};
use crate::systemd::{Bus, HostManager, Offline};

/// Install OCI images as systemd services run by runc, with no container daemon.
#[derive(Debug, Parser, PartialEq, Eq)]
#[command(name = "sysctr", version)]
pub struct Opts {
    /// Storage directory: the OSTree image store and the deployments [default: ROOT/var/lib/sysctr].
    #[arg(long, global = true, env = "SYSCTR_STORAGE")]
    pub storage: Option<PathBuf>,

    /// Work on the root directory of an OS image instead of this host: files only, no systemd,
    /// units enabled by symlinks as `systemctl --root` does.
    #[arg(long, global = true, default_value = "/")]
    pub root: PathBuf,

    /// With --root: install the containers the OS image itself provides. Store and deployments
    /// go under ROOT/usr/lib/sysctr, units and tmpfiles.d files under ROOT/usr/lib, as vendor
    /// files; they change only with the OS image.
    #[arg(long, global = true)]
    pub os_image: bool,

    /// Say more: -v sysctr's steps, -vv the registry client's requests too, -vvv everything
    /// (RUST_LOG, if set, decides instead).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Say only errors and what was asked for (tables, --json): no notes, warnings or progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Pull an image into the store.
    #[command(after_help = "Examples:
  sysctr pull registry.lan:5000/k8s/etcd:3.5
  sysctr pull oci-archive:/media/images/etcd.tar:3.5      # an air-gapped host
  sysctr pull --json --detailed-exitcode registry.lan:5000/k8s/etcd:3.5")]
    Pull(pull::PullOpts),
    /// Check credentials against a registry and save them for pulls (containers-auth.json).
    #[command(after_help = "Examples:
  printf '%s' \"$TOKEN\" | sysctr login -u deploy --password-stdin registry.lan:5000")]
    Login(login::LoginOpts),
    /// Remove a registry's credentials saved by `sysctr login`.
    #[command(after_help = "Examples:
  sysctr logout registry.lan:5000")]
    Logout(login::LogoutOpts),
    /// Install an image as a systemd service.
    #[command(after_help = "Examples:
  sysctr install --now registry.lan:5000/k8s/etcd:3.5
  sysctr install --name etcd --set ETCD_NAME=node1 registry.lan:5000/k8s/etcd:3.5
  sysctr --root /mnt/image install registry.lan:5000/k8s/etcd:3.5   # into an OS image, offline
  sysctr install --now --no-block registry.lan:5000/k8s/etcd:3.5")]
    Install(install::InstallOpts),
    /// Stop and remove an installed container; its image stays in the store.
    #[command(after_help = "Examples:
  sysctr uninstall etcd")]
    Uninstall(uninstall::UninstallOpts),
    /// Move a container to a new deployment: a newer image, other values, or another image.
    #[command(after_help = "Examples:
  sysctr update etcd                       # the newer image behind the same reference
  sysctr update --set ETCD_NAME=node2 etcd
  sysctr update --rebase registry.lan:5000/k8s/etcd:3.6 etcd
  sysctr update --check --all              # what would change; nothing is touched
  sysctr update --all --json --detailed-exitcode")]
    Update(update::UpdateOpts),
    /// Switch a container back to its previous deployment.
    #[command(after_help = "Examples:
  sysctr rollback etcd")]
    Rollback(rollback::RollbackOpts),
    /// List installed containers.
    #[command(after_help = "Examples:
  sysctr list
  sysctr list --all --json")]
    List(list::ListOpts),
    /// Show one container: its service, both deployments, values and what is pending.
    #[command(after_help = "Examples:
  sysctr status etcd
  sysctr status --json etcd")]
    Status(status::StatusOpts),
    /// List images in the store.
    #[command(after_help = "Examples:
  sysctr images --json")]
    Images(images::ImagesOpts),
    /// Show an image's labels and the template variables it takes.
    #[command(after_help = "Examples:
  sysctr info registry.lan:5000/k8s/etcd:3.5   # the variables to --set")]
    Info(info::InfoOpts),
    /// Remove an image from the store.
    #[command(after_help = "Examples:
  sysctr rmi registry.lan:5000/k8s/etcd:3.4")]
    Rmi(rmi::RmiOpts),
    /// Remove unused layers, objects and orphaned deployment slots.
    #[command(after_help = "Examples:
  sysctr prune")]
    Prune(prune::PruneOpts),
    /// Show a container's or an image's root filesystem, read-only, at a directory.
    #[command(after_help = "Examples:
  sysctr mount etcd /mnt/etcd && ls /mnt/etcd && sysctr umount /mnt/etcd")]
    Mount(mount::MountOpts),
    /// Undo `sysctr mount`.
    #[command(after_help = "Examples:
  sysctr umount /mnt/etcd")]
    Umount(mount::UmountOpts),
    /// Run an image once in the foreground, with a throw-away writable root; nothing stays.
    #[command(after_help = "Examples:
  sysctr run registry.lan:5000/tools/debug:latest
  sysctr run --set RECEIVER=World registry.lan:5000/demo/hello:v1 echo hi")]
    Run(run::RunOpts),
    /// Converge to the system containers listed in a TOML file: install, update, leave alone.
    #[command(after_help = "Examples:
  sysctr apply node.toml
  sysctr apply /etc/sysctr                  # every *.toml there, as sysctr-apply.service does
  sysctr apply --dry-run --prune node.toml  # what would change, and why
  sysctr apply --json --detailed-exitcode node.toml")]
    Apply(apply::ApplyOpts),
    /// Finish or undo interrupted commands, or drop them with --abandon.
    #[command(after_help = "Examples:
  sysctr recover")]
    Recover(recover::RecoverOpts),
    /// Fit a container's config.json to this host: its capability bounding set, and an empty
    /// stand-in for /etc/hosts or /etc/resolv.conf where it has none. Run by the units of
    /// containers installed into an OS image (--root), before each start.
    #[command(hide = true, alias = "fit-capabilities")]
    FitHost(FitHostOpts),
    /// Write the man pages and shell completions into a directory (for packages).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct FitHostOpts {
    /// Leave the slot as it is and write the fitted config.json into this directory, the bundle
    /// runc runs (containers an OS image provides, whose slot is read-only).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    pub name: String,
}

/// Where registry credentials are read from and saved to.
#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct AuthArgs {
    /// The auth file (containers-auth.json(5)) to use instead of podman's usual ones.
    #[arg(long, value_name = "PATH", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
}

impl AuthArgs {
    fn files(&self) -> crate::registry::AuthFiles {
        crate::registry::AuthFiles { explicit: self.authfile.clone() }
    }
}

/// How to connect to a registry: what `login` needs, and the start of what pulls need.
#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct ConnectionArgs {
    /// Require HTTPS and verify certificates (`false`: plain HTTP for this registry).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,

    /// Give up on a registry that sends nothing for this many seconds: while connecting, before
    /// answering, or in the middle of a blob.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "SYSCTR_REGISTRY_TIMEOUT",
        default_value_t = crate::registry::DEFAULT_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub registry_timeout: u64,

    /// Registry configuration (containers-registries.conf(5)): locations, mirrors, insecure and
    /// blocked registries, short names. Its drop-ins are read from the same path plus `.d`.
    #[arg(long, value_name = "PATH", env = "CONTAINERS_REGISTRIES_CONF", default_value = DEFAULT_REGISTRIES_CONF)]
    pub registries_conf: PathBuf,

    /// Follow this signature policy (containers-policy.json(5)) instead of
    /// /etc/containers/policy.json, without which nothing is pulled (as with podman and skopeo).
    /// With --root too, the policy is this machine's, not the root's.
    #[arg(long, value_name = "PATH")]
    pub signature_policy: Option<PathBuf>,

    /// Where signatures are found (containers-registries.d(5)): the lookaside of each registry
    /// namespace, and whether sigstore signatures are attached in the registry.
    #[arg(long, value_name = "DIR", default_value = crate::registry::DEFAULT_REGISTRIES_D)]
    pub registries_d: PathBuf,

    /// Trust the CA certificates (`*.crt`) of this directory for the registry, instead of its
    /// directory under /etc/containers/certs.d and /etc/docker/certs.d.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    #[command(flatten)]
    pub auth: AuthArgs,
}

impl ConnectionArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            tls_verify: self.tls_verify,
            timeout: std::time::Duration::from_secs(self.registry_timeout),
            auth: self.auth.files(),
            registries_conf: self.registries_conf.clone(),
            cert_dir: self.cert_dir.clone(),
            signature_policy: self.signature_policy.clone(),
            registries_d: self.registries_d.clone(),
            ..Default::default()
        }
    }
}

impl RegistryArgs {
    /// An image named on the command line, short names resolved (see
    /// [`crate::registry::parse_image_candidates`]); of several, the first whose registry has it.
    async fn image(&self, input: &str) -> Result<crate::reference::ImageRef> {
        let candidates = crate::registry::parse_image_candidates(input, &self.connection.registries_conf)?;
        crate::deploy::first_available(input, candidates, &self.options()).await
    }
}

/// An image named by a command that does not pull: short names resolved by the registries
/// configuration of `CONTAINERS_REGISTRIES_CONF`, or the system's.
fn image_arg(input: &str) -> Result<crate::reference::ImageRef> {
    let conf = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
        .map_or_else(|| PathBuf::from(DEFAULT_REGISTRIES_CONF), PathBuf::from);
    crate::registry::parse_image(input, &conf)
}

/// Options for reaching a registry, shared by the verbs that pull.
#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct RegistryArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Refuse an image whose manifest lists more layers than this.
    #[arg(
        long,
        value_name = "N",
        env = "SYSCTR_MAX_LAYERS",
        default_value_t = crate::registry::DEFAULT_MAX_LAYERS as u64,
        value_parser = clap::value_parser!(u64).range(1..=100_000)
    )]
    pub max_layers: u64,

    /// Refuse a layer with more tar members and implied directories than this.
    #[arg(long, value_name = "N", env = "SYSCTR_MAX_LAYER_ENTRIES", default_value_t = LayerLimits::DEFAULT.entries,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_layer_entries: u64,

    /// Refuse a layer that unpacks to more than this (K, M, G, T suffixes).
    #[arg(long, value_name = "SIZE", env = "SYSCTR_MAX_LAYER_SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_layer_size: u64,

    /// Refuse a tar member whose headers (long names, PAX records, sparse map) take more than this.
    #[arg(long, value_name = "SIZE", env = "SYSCTR_MAX_TAR_HEADER", default_value = "1M", value_parser = parse_size)]
    pub max_tar_header: u64,

    /// Refuse a layer path or link target longer than this many bytes.
    #[arg(long, value_name = "BYTES", env = "SYSCTR_MAX_PATH_LENGTH", default_value_t = LayerLimits::DEFAULT.path_length,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_path_length: u64,

    /// Refuse a layer path with more components than this.
    #[arg(long, value_name = "N", env = "SYSCTR_MAX_PATH_DEPTH", default_value_t = LayerLimits::DEFAULT.depth,
        value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_path_depth: u64,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            // At most 100,000 by the parser.
            max_layers: usize::try_from(self.max_layers).unwrap_or(usize::MAX),
            layer_limits: LayerLimits {
                entries: self.max_layer_entries,
                bytes: self.max_layer_size,
                header: self.max_tar_header,
                path_length: self.max_path_length,
                depth: self.max_path_depth,
            },
            progress: progress::for_terminal(),
            ..self.connection.options()
        }
    }
}

/// Runs the command line; returns the process exit code.
pub async fn run() -> Result<i32> {
    let opts = Opts::parse();
    crate::output::init(opts.verbose, opts.quiet);
    if let Command::GenerateDocs { dir } = &opts.command {
        docs::generate(dir)?;
        return Ok(0);
    }
    let layout = layout(&opts)?;
    // The one place that decides what the target is: the booted host this runs on, or a root
    // on disk (`--root` other than `/`) where nothing runs. Everything else asks the manager.
    let systemd = if layout.root == Path::new("/") {
        HostManager::Bus(Bus::new())
    } else {
        HostManager::Offline(Offline::with_unit_dir(&layout.root, layout.unit_dir()))
    };
    let code = dispatch(&opts, &layout, &systemd).await?;
    if layout.os_image {
        deploy::clamp_image_times(&layout)?;
    }
    Ok(code)
}

/// Runs the verb `opts` names; returns the process exit code.
async fn dispatch(opts: &Opts, layout: &Layout, systemd: &HostManager) -> Result<i32> {
    match &opts.command {
        Command::Pull(o) => return pull::run(layout, o).await,
        Command::Login(o) => login::run(o).await,
        Command::Logout(o) => login::run_logout(o),
        Command::Install(o) => return install::run(layout, systemd, o).await,
        Command::Uninstall(o) => uninstall::run(layout, systemd, o).await,
        Command::Update(o) => return update::run(layout, systemd, o).await,
        Command::Rollback(o) => rollback::run(layout, systemd, o).await,
        Command::List(o) => list::run(layout, systemd, o).await,
        Command::Status(o) => status::run(layout, systemd, o).await,
        Command::Images(o) => images::run(layout, o),
        Command::Info(o) => info::run(layout, o),
        Command::Rmi(o) => rmi::run(layout, systemd, o).await,
        Command::Prune(o) => prune::run(layout, systemd, o).await,
        Command::Mount(o) => mount::run(layout, o),
        Command::Umount(o) => mount::run_umount(layout, o),
        Command::Run(o) => return run::run(layout, systemd, o).await,
        Command::Apply(o) => return apply::run(layout, systemd, o).await,
        Command::Recover(o) => recover::run(layout, systemd, o).await,
        Command::FitHost(o) => {
            crate::reference::validate_container_name(&o.name)?;
            let fit = deploy::fit_to_host(layout, &o.name, o.bundle.as_deref())?;
            if !fit.dropped_capabilities.is_empty() {
                let dropped = fit.dropped_capabilities.join(", ");
                println!("{}: not in this host's bounding set, left out: {dropped}", o.name);
            }
            for change in &fit.host_files {
                println!("{}: {change}", o.name);
            }
            Ok(())
        }
        Command::GenerateDocs { .. } => Ok(()),
    }?;
    Ok(0)
}

fn layout(opts: &Opts) -> Result<Layout> {
    if !opts.root.is_absolute() || !opts.root.is_dir() {
        anyhow::bail!("--root {} is not an absolute path to a directory", opts.root.display());
    }
    if opts.os_image && opts.root == Path::new("/") {
        anyhow::bail!(
            "--os-image composes the containers of an OS image offline: it needs --root DIR, the image's root \
             (a booted host sees the containers its OS image provides without it)"
        );
    }
    // Resolved as the target sees its own symlinks (`var -> /elsewhere` is the target's
    // /elsewhere), so that the storage never lands on the machine composing the target.
    let root = RootedDir::open(&opts.root, Resolve::InRoot)?;
    let state_in_root = Path::new(DEFAULT_STORAGE.trim_start_matches('/'));
    if opts.os_image {
        if let Some(storage) = &opts.storage {
            anyhow::bail!(
                "--storage {} cannot be used with --os-image: the OS image's store is ROOT/{IMAGE_STORAGE}",
                storage.display()
            );
        }
        return Ok(Layout::os_image(
            &root.real_path(Path::new(""))?,
            &root.real_path(Path::new(IMAGE_STORAGE))?,
            &root.real_path(state_in_root)?,
        ));
    }
    let storage = match &opts.storage {
        Some(storage) => storage.clone(),
        None => opts.root.join(state_in_root),
    };
    let Ok(in_root) = storage.strip_prefix(&opts.root) else {
        anyhow::bail!("the storage {} must be inside --root {}", storage.display(), opts.root.display());
    };
    Ok(Layout::with_image_storage(
        &root.real_path(Path::new(""))?,
        &root.real_path(in_root)?,
        &root.real_path(Path::new(IMAGE_STORAGE))?,
    ))
}

/// Parses repeated `--set KEY=VALUE` arguments; a later one for the same key wins.
fn parse_sets(args: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    args.iter().map(|arg| crate::template::parse_set(arg)).collect()
}

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The version of every `--json` document; a field's meaning never changes within one.
pub const JSON_API_VERSION: &str = "sysctr/v1";

/// Prints one `--json` document: `apiVersion` and `kind`, then `items` for a list, or the
/// fields of an object.
fn print_json<T: serde::Serialize>(kind: &str, value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&json_document(kind, value)?)?);
    Ok(())
}

fn json_document<T: serde::Serialize>(kind: &str, value: &T) -> Result<serde_json::Value> {
    use serde_json::Value;
    let mut document = serde_json::Map::new();
    document.insert("apiVersion".into(), Value::from(JSON_API_VERSION));
    document.insert("kind".into(), Value::from(kind));
    match serde_json::to_value(value)? {
        Value::Array(items) => {
            document.insert("items".into(), Value::Array(items));
        }
        Value::Object(fields) => document.extend(fields),
        other => anyhow::bail!("a {kind} is not a JSON object or list: {other}"),
    }
    Ok(Value::Object(document))
}

/// How the verbs that change things report (`apply`, `update`, `pull`).
#[derive(Debug, Clone, Copy, Default, clap::Args, PartialEq, Eq)]
pub struct ChangeReport {
    /// Print one JSON document (apiVersion sysctr/v1) saying what was done and whether anything
    /// changed (`"changed"`), instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Exit 2 when something changed and 0 when nothing did (1 stays an error), for scripts and
    /// configuration tools (Ansible's `changed_when`), as `terraform plan -detailed-exitcode`.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

impl ChangeReport {
    /// The exit code for a run that `changed` something (or not).
    fn exit_code(self, changed: bool) -> i32 {
        if self.detailed_exitcode && changed {
            2
        } else {
            0
        }
    }
}

/// One container's part in a change report.
#[derive(Debug, serde::Serialize)]
struct ContainerChange {
    name: String,
    action: ChangeAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// What a change report says of one container, in JSON and in text alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum ChangeAction {
    /// Done (`apply`, `update`).
    Installed,
    Updated,
    Removed,
    Unchanged,
    /// Found by `update --check`.
    UpdateAvailable,
    UpToDate,
    /// `update --all` could not update (or check) this one.
    Failed,
    /// Planned by `apply --dry-run`.
    Install,
    Update,
    Remove,
}

impl ChangeAction {
    /// Every action, for tests that pin their names.
    #[cfg(test)]
    const ALL: [ChangeAction; 10] = [
        ChangeAction::Installed,
        ChangeAction::Updated,
        ChangeAction::Removed,
        ChangeAction::Unchanged,
        ChangeAction::UpdateAvailable,
        ChangeAction::UpToDate,
        ChangeAction::Failed,
        ChangeAction::Install,
        ChangeAction::Update,
        ChangeAction::Remove,
    ];

    /// The name, as in JSON output.
    fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Installed => "installed",
            ChangeAction::Updated => "updated",
            ChangeAction::Removed => "removed",
            ChangeAction::Unchanged => "unchanged",
            ChangeAction::UpdateAvailable => "update-available",
            ChangeAction::UpToDate => "up-to-date",
            ChangeAction::Failed => "failed",
            ChangeAction::Install => "install",
            ChangeAction::Update => "update",
            ChangeAction::Remove => "remove",
        }
    }
}

impl std::fmt::Display for ChangeAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_actions_serialize_as_their_names() {
        let names: Vec<String> =
            ChangeAction::ALL.iter().map(|a| serde_json::to_value(a).unwrap().as_str().unwrap().to_string()).collect();
        assert_eq!(
            names,
            [
                "installed",
                "updated",
                "removed",
                "unchanged",
                "update-available",
                "up-to-date",
                "failed",
                "install",
                "update",
                "remove"
            ]
        );
        for action in ChangeAction::ALL {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
            assert_eq!(action.to_string(), action.as_str());
        }
    }

    #[test]
    fn container_change_json_is_unchanged() {
        let change = ContainerChange { name: "web".into(), action: ChangeAction::UpdateAvailable, detail: None };
        assert_eq!(serde_json::to_string(&change).unwrap(), r#"{"name":"web","action":"update-available"}"#);
    }

    #[test]
    fn parses_install() {
        let opts = Opts::try_parse_from([
            "sysctr",
            "--storage",
            "/s",
            "install",
            "--name",
            "hello",
            "--set",
            "A=1",
            "--set",
            "B=x=y",
            "--now",
            "--tls-verify=false",
            "127.0.0.1:5000/demo/hello",
        ])
        .unwrap();
        assert_eq!(opts.storage, Some(PathBuf::from("/s")));
        let Command::Install(i) = opts.command else { panic!("not install") };
        assert_eq!(i.name.as_deref(), Some("hello"));
        assert_eq!(i.set, ["A=1", "B=x=y"]);
        assert!(i.now);
        assert_eq!(i.registry.connection.tls_verify, Some(false));
        let options = i.registry.options();
        assert_eq!(options.timeout, crate::registry::DEFAULT_TIMEOUT);
        assert_eq!(options.max_layers, crate::registry::DEFAULT_MAX_LAYERS);
        assert_eq!(options.layer_limits, LayerLimits::DEFAULT);
    }

    #[test]
    fn parses_layer_bounds() {
        let opts = Opts::try_parse_from([
            "sysctr",
            "pull",
            "--max-layer-entries",
            "10",
            "--max-layer-size",
            "2G",
            "--max-tar-header",
            "64K",
            "--max-path-depth",
            "6000",
            "x",
        ])
        .unwrap();
        let Command::Pull(p) = opts.command else { panic!("not pull") };
        let expected =
            LayerLimits { entries: 10, bytes: 2 << 30, header: 64 << 10, depth: 6000, ..LayerLimits::DEFAULT };
        assert_eq!(p.registry.options().layer_limits, expected);
        for bad in [["--max-layer-size", "1.5G"], ["--max-tar-header", "0"], ["--max-path-depth", "0"]] {
            assert!(Opts::try_parse_from(["sysctr", "pull", bad[0], bad[1], "x"]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_registry_bounds() {
        let opts =
            Opts::try_parse_from(["sysctr", "pull", "--registry-timeout", "3", "--max-layers", "1000", "x"]).unwrap();
        let Command::Pull(p) = opts.command else { panic!("not pull") };
        let options = p.registry.options();
        assert_eq!(options.timeout, std::time::Duration::from_secs(3));
        assert_eq!(options.max_layers, 1000);
        for bad in [["--registry-timeout", "0"], ["--registry-timeout", "soon"], ["--max-layers", "0"]] {
            assert!(Opts::try_parse_from(["sysctr", "pull", bad[0], bad[1], "x"]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn os_image_needs_a_root_and_puts_the_store_under_its_usr() {
        let opts = Opts::try_parse_from(["sysctr", "--os-image", "list"]).unwrap();
        let err = format!("{:#}", layout(&opts).unwrap_err());
        assert!(err.contains("--os-image") && err.contains("needs --root"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let opts = Opts::try_parse_from(["sysctr", "--root", root, "--os-image", "--storage", root, "list"]).unwrap();
        assert!(format!("{:#}", layout(&opts).unwrap_err()).contains("cannot be used with --os-image"));

        let opts = Opts::try_parse_from(["sysctr", "--root", root, "--os-image", "list"]).unwrap();
        let image = layout(&opts).unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert!(image.os_image);
        assert_eq!(image.storage, real.join("usr/lib/sysctr"));
        assert_eq!(image.state, real.join("var/lib/sysctr"));
        assert_eq!((image.unit_dir(), image.tmpfiles_dir()), ("usr/lib/systemd/system", "usr/lib/tmpfiles.d"));

        let opts = Opts::try_parse_from(["sysctr", "--root", root, "list"]).unwrap();
        let host = layout(&opts).unwrap();
        assert!(!host.os_image);
        assert_eq!(
            (host.storage.clone(), host.state.clone()),
            (real.join("var/lib/sysctr"), real.join("var/lib/sysctr"))
        );
        assert_eq!(host.unit_dir(), "etc/systemd/system");
        assert!(!dir.path().join("usr").exists() && !dir.path().join("var").exists(), "parsing wrote into the root");
    }

    #[test]
    fn refuses_unknown_and_missing_arguments() {
        assert!(Opts::try_parse_from(["sysctr", "install"]).is_err());
        assert!(Opts::try_parse_from(["sysctr", "frobnicate"]).is_err());
        assert!(Opts::try_parse_from(["sysctr", "pull", "--tls-verify=maybe", "x"]).is_err());
    }
}
