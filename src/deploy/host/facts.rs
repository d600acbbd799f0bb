//! Facts of the host a container is installed on, looked up beneath its root or taken from the
//! service manager's idea of it, never from the machine running sysctr when that is not the
//! target: the OCI runtime, the units and tmpfiles.d files a container's names would mask, and
//! the ids and capabilities a container is set up with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::layout::Layout;
use crate::systemd::Target;
use crate::template;

const RUNTIME_CANDIDATES: [&str; 3] = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];
/// Where tmpfiles.d files come from other than `/etc/tmpfiles.d`, where one masks them: the
/// system's packages, the local administrator's, and the runtime's.
const VENDOR_TMPFILES_DIRS: [&str; 4] =
    ["usr/lib/tmpfiles.d", "lib/tmpfiles.d", "usr/local/lib/tmpfiles.d", "run/tmpfiles.d"];

/// What a container is set up with that depends on the host it runs on.
pub(in crate::deploy) struct HostFacts {
    pub uid: u32,
    pub gid: u32,
    pub all_process_capabilities: String,
    /// Whether each start fits the config to the host (capabilities it can grant, host files it
    /// has; see `fit_to_host`), rather than the install.
    pub fit_at_start: bool,
}

/// On a booted host, the facts of the running one. In an OS image being composed, the container
/// runs under the target's system manager, as root, with a bounding set known only once it boots:
/// every capability sysctr knows is offered, and the unit narrows the config to the target's set
/// at each start. Nothing is taken from the machine that composes the image.
pub(in crate::deploy) fn host_facts(target: Target) -> Result<HostFacts> {
    Ok(match target {
        Target::Booted => HostFacts {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            all_process_capabilities: template::all_process_capabilities(
                template::host_cap_last_cap()?,
                template::host_bounding_set()?,
            ),
            fit_at_start: false,
        },
        Target::Offline => HostFacts {
            uid: 0,
            gid: 0,
            all_process_capabilities: template::all_process_capabilities(u32::MAX, u64::MAX),
            fit_at_start: true,
        },
    })
}

/// The unit file outside `/etc` that `NAME.service` would shadow, if there is one. An OS
/// image's own unit goes among the vendor units: one of that name elsewhere than `/etc` (where
/// an administrator's override is meant to win) would be shadowed or shadow it.
pub(in crate::deploy) fn vendor_unit(layout: &Layout, name: &str) -> Result<Option<String>> {
    let dirs: Vec<&str> =
        crate::systemd::units_elsewhere().iter().copied().filter(|dir| *dir != layout.unit_dir()).collect();
    first_present(layout, &dirs, &Layout::unit_name(name))
}

/// The tmpfiles.d file outside `/etc` that `NAME.conf` would mask, if there is one.
pub(in crate::deploy) fn vendor_tmpfiles(layout: &Layout, name: &str) -> Result<Option<String>> {
    let dirs: Vec<&str> = VENDOR_TMPFILES_DIRS.iter().copied().filter(|dir| *dir != layout.tmpfiles_dir()).collect();
    first_present(layout, &dirs, &Layout::tmpfiles_name(name))
}

/// `/DIR/FILE` of the first of `dirs` that has `file`, looked up beneath the host's root.
fn first_present(layout: &Layout, dirs: &[&str], file: &str) -> Result<Option<String>> {
    let host = layout.host_dir()?;
    for dir in dirs {
        if host.kind(&Path::new(dir).join(file))?.is_some() {
            return Ok(Some(format!("/{dir}/{file}")));
        }
    }
    Ok(None)
}

/// Picks the OCI runtime, as a path on the host the container runs on, looked up beneath its
/// root: `--runtime`, else runc from the usual places.
pub(in crate::deploy) fn find_runtime(layout: &Layout, requested: Option<&Path>) -> Result<PathBuf> {
    let host = layout.host_dir()?;
    if let Some(path) = requested {
        if !path.is_absolute() {
            bail!("--runtime must be an absolute path, got {}", path.display());
        }
        if !host.is_file(path)? {
            bail!("--runtime {} does not exist", path.display());
        }
        return Ok(path.to_path_buf());
    }
    for candidate in RUNTIME_CANDIDATES {
        if host.is_file(Path::new(candidate))? {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!("no OCI runtime found (looked for {}); install runc or pass --runtime", RUNTIME_CANDIDATES.join(", "))
}
