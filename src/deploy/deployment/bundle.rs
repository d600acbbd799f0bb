//! The runtime bundle of a container an OS image provides. Its slot is under `/usr`, read-only
//! once the image runs, so the start-time fit cannot rewrite the slot's `config.json` in place:
//! each start writes the fitted config to `/run/sysctr/NAME/config.json` instead, its root made
//! the slot's `rootfs` by absolute path, and the unit runs `runc run --bundle` there. `/run` is
//! empty at each boot, so a new OS image's deployments are what the next boot fits and runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::deploy::host::layout::Layout;
use crate::rooted::Resolve;
use crate::spec;

/// Where the bundles of image containers are written at start, on the host.
const RUN_DIR: &str = "/run/sysctr";

/// The bundle directory of container `name`, as the host sees it.
pub(in crate::deploy) fn bundle_dir(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// A file the supervisor of `name` keeps while it runs (`pid`, `health`):
/// `/run/sysctr/.ready/NAME.EXT`, apart from the bundles, whose names are containers' names
/// (which never start with a dot).
pub(in crate::deploy) fn run_file(name: &str, extension: &str) -> PathBuf {
    Path::new(RUN_DIR).join(".ready").join(format!("{name}.{extension}"))
}

/// `config` (the slot's, fitted to this host) with a relative root made absolute: the slot's
/// directory as the host sees it, joined with that root.
pub(in crate::deploy) fn with_absolute_root(config: &str, slot_on_host: &Path) -> Result<String> {
    let mut value: Value = serde_json::from_str(config).context("reading config.json")?;
    let Some(root) = value.get_mut("root").and_then(Value::as_object_mut) else {
        bail!("config.json has no root");
    };
    let path = root.get("path").and_then(Value::as_str).unwrap_or(spec::ROOTFS);
    if !path.starts_with('/') {
        let absolute = slot_on_host.join(path).to_string_lossy().into_owned();
        root.insert("path".into(), Value::from(absolute));
    }
    serde_json::to_string_pretty(&value).context("serializing config.json")
}

/// Writes `config` as the bundle of `name` at `bundle` (absolute, on the host beneath the
/// layout's root), its root pointed at the slot `slot_on_host`. Written whole at every start:
/// what an earlier start (or an older OS image) left there is never used.
pub(in crate::deploy) fn write_bundle(layout: &Layout, config: &str, slot_on_host: &Path, bundle: &Path) -> Result<()> {
    let Ok(relative) = bundle.strip_prefix("/") else {
        bail!("the bundle directory {} is not an absolute path", bundle.display());
    };
    let config = with_absolute_root(config, slot_on_host)?;
    let host = layout.host_dir()?;
    host.create_dir_all(relative)?;
    let dir = host
        .open_dir(relative, Resolve::NoSymlinks)?
        .with_context(|| format!("{} vanished while it was being created", bundle.display()))?;
    dir.replace_file(Path::new("config.json"), config.as_bytes(), 0o600)
        .with_context(|| format!("writing the bundle in {}", bundle.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_root_becomes_the_slots_rootfs() {
        let config = r#"{"root": {"path": "rootfs", "readonly": true}, "process": {"args": ["/bin/sh"]}}"#;
        let out = with_absolute_root(config, Path::new("/usr/lib/sysctr/deployments/svc.0")).unwrap();
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["root"]["path"], "/usr/lib/sysctr/deployments/svc.0/rootfs");
        assert_eq!(value["root"]["readonly"], true);
        assert_eq!(value["process"]["args"][0], "/bin/sh");
        let absolute = r#"{"root": {"path": "/elsewhere"}}"#;
        let out: Value = serde_json::from_str(&with_absolute_root(absolute, Path::new("/x")).unwrap()).unwrap();
        assert_eq!(out["root"]["path"], "/elsewhere");
    }
}
