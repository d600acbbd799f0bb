//! Enabling a unit in a root directory that is not running (an OS image being composed), the
//! way `systemctl --root DIR enable` does: symlinks from the unit's `[Install]` section, made
//! beneath the root's handle. Nothing runs there: starting and stopping are refused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{ChangeLog, ServiceManager, Target, Tmpfiles, UnitState};
use crate::rooted::{EntryKind, Resolve, RootedDir};

/// Where units are installed and enabled, unless told otherwise: the administrator's directory.
const UNIT_DIR: &str = "etc/systemd/system";
/// The largest unit file read back.
const MAX_UNIT_FILE: u64 = 1024 * 1024;

/// The units of an OS image tree that is not running.
#[derive(Debug)]
pub struct Offline {
    root: PathBuf,
    /// Where the units are and their enablement links go, relative to the root.
    unit_dir: &'static str,
}

impl Offline {
    pub fn new(root: &Path) -> Offline {
        Offline::with_unit_dir(root, UNIT_DIR)
    }

    /// Units in `unit_dir` (relative to the root), enabled by links in that directory: an OS
    /// image's vendor units in `usr/lib/systemd/system`, as its packages' are.
    pub fn with_unit_dir(root: &Path, unit_dir: &'static str) -> Offline {
        Offline { root: root.to_path_buf(), unit_dir }
    }

    fn host(&self) -> Result<RootedDir> {
        RootedDir::open(&self.root, Resolve::InRoot)
    }

    /// Every symlink that enables `unit`: in `*.wants/` and `*.requires/` directories, and
    /// aliases pointing at it, as `systemctl disable` finds them.
    fn links_to(&self, host: &RootedDir, unit: &str) -> Result<Vec<PathBuf>> {
        let unit_dir = Path::new(self.unit_dir);
        let target = format!("/{}/{unit}", self.unit_dir);
        let mut links = Vec::new();
        for name in host.list_dir(unit_dir)? {
            let entry = unit_dir.join(&name);
            let text = name.to_string_lossy();
            if text.ends_with(".wants") || text.ends_with(".requires") {
                let link = entry.join(unit);
                if host.kind(&link)? == Some(EntryKind::Symlink) {
                    links.push(link);
                }
            } else if host.kind(&entry)? == Some(EntryKind::Symlink) && host.read_link(&entry)? == Path::new(&target) {
                links.push(entry);
            }
        }
        Ok(links)
    }

    fn refuse<T>(&self, what: &str, unit: &str) -> Result<T> {
        bail!("cannot {what} {unit} in an offline root ({}): nothing runs there", self.root.display())
    }
}

impl ServiceManager for Offline {
    fn target(&self) -> Target {
        Target::Offline
    }

    async fn reload(&self) -> Result<()> {
        Ok(())
    }

    async fn enable(&self, unit: &str, changes: &mut dyn ChangeLog) -> Result<()> {
        let host = self.host()?;
        let unit_file = Path::new(self.unit_dir).join(unit);
        let text = host.read_file(&unit_file, MAX_UNIT_FILE).with_context(|| format!("enabling {unit}"))?;
        let text = String::from_utf8(text).with_context(|| format!("{} is not UTF-8", unit_file.display()))?;
        // Everything is checked before the first link: what is there already stays as it is.
        check_install_links(&host, &text, unit, self.unit_dir)?;
        for (link, target) in install_links(&text, unit, self.unit_dir)? {
            let link = Path::new(&link);
            if host.kind(link)?.is_some() {
                continue; // a link to a unit of this name, as the check found
            }
            for dir in host.missing_dirs(link.parent().unwrap_or(Path::new("")))? {
                changes.creating_dir(&dir)?;
                host.create_dir(&dir, 0o755)?;
            }
            changes.saving(link)?;
            host.symlink(link, Path::new(&target)).with_context(|| format!("enabling {unit}"))?;
        }
        Ok(())
    }

    async fn disable(&self, unit: &str, mut changes: Option<&mut dyn ChangeLog>) -> Result<()> {
        let host = self.host()?;
        for link in self.links_to(&host, unit)? {
            if let Some(changes) = changes.as_deref_mut() {
                changes.saving(&link)?;
            }
            host.remove_file(&link).with_context(|| format!("disabling {unit}"))?;
        }
        Ok(())
    }

    async fn start(&self, unit: &str) -> Result<()> {
        self.refuse("start", unit)
    }

    async fn queue_start(&self, unit: &str) -> Result<()> {
        self.refuse("start", unit)
    }

    async fn stop(&self, unit: &str) -> Result<()> {
        self.refuse("stop", unit)
    }

    async fn ensure_stays_active(&self, unit: &str) -> Result<()> {
        self.refuse("start", unit)
    }

    async fn state(&self, _unit: &str) -> Result<UnitState> {
        Ok(UnitState::Inactive)
    }

    async fn required_by(&self, _unit: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn is_enabled(&self, unit: &str) -> Result<bool> {
        Ok(!self.links_to(&self.host()?, unit)?.is_empty())
    }

    fn tmpfiles(&self, _action: Tmpfiles, _file: &Path) -> Result<()> {
        // systemd-tmpfiles-setup.service applies them at the first boot.
        Ok(())
    }
}

/// Unit types an `[Install]` value may name.
const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".target",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".timer",
    ".path",
    ".slice",
    ".scope",
];

/// Checks that `name` is a unit name (systemd's grammar: `[A-Za-z0-9:_.@\\-]`, a known type
/// suffix, at most 255 bytes), so that it can only ever be one file name in a unit directory.
pub fn check_unit_name(name: &str) -> Result<()> {
    let stem = UNIT_SUFFIXES.iter().find_map(|suffix| name.strip_suffix(suffix));
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.@\\-".contains(&b));
    if name.len() > 255 || !valid_chars || stem.is_none_or(str::is_empty) || name.starts_with('.') {
        bail!("'{name}' is not a unit name");
    }
    Ok(())
}

/// Checks, as `systemctl enable` does, that enabling `unit_name` (installed in `unit_dir`, relative
/// to the root) creates its `[Install]` links
/// without replacing anything: a path already there must be a link to a unit file of this
/// very name (systemd takes `/lib/systemd/system/NAME` and `/etc/systemd/system/NAME` for the
/// same unit). An `Alias=` must be of the unit's own type and must not name a unit the root
/// already has.
pub fn check_install_links(root: &RootedDir, unit_text: &str, unit_name: &str, unit_dir: &str) -> Result<()> {
    let unit_type = unit_name.rsplit_once('.').map(|(_, suffix)| suffix);
    for (link, target) in install_links(unit_text, unit_name, unit_dir)? {
        let link = Path::new(&link);
        if let Some(alias) = link.strip_prefix(unit_dir).ok().and_then(Path::to_str).filter(|a| !a.contains('/')) {
            if alias.rsplit_once('.').map(|(_, suffix)| suffix) != unit_type {
                bail!("{unit_name} has Alias={alias}: an alias must be of the unit's own type");
            }
            for dir in super::UNIT_DIRS.iter().filter(|dir| **dir != unit_dir) {
                if root.kind(&Path::new(dir).join(alias))?.is_some() {
                    bail!("{unit_name} has Alias={alias}, but the system has that unit (/{dir}/{alias})");
                }
            }
        }
        match root.kind(link)? {
            None => {}
            Some(EntryKind::Symlink) if root.read_link(link)?.file_name() == Path::new(&target).file_name() => {}
            Some(_) => bail!(
                "enabling {unit_name} would replace /{}, which is not a link to it; \
                 systemctl enable refuses that too",
                link.display()
            ),
        }
    }
    Ok(())
}

/// The symlinks enabling `unit_name`, installed in `unit_dir` (relative to the root), creates, as
/// (link path relative to the root, target). With `etc/systemd/system`, `WantedBy=T` gives
/// `etc/systemd/system/T.wants/NAME`, `RequiredBy=T` gives `T.requires/NAME`, `Alias=A` gives
/// `etc/systemd/system/A`; all point at `/etc/systemd/system/NAME`. Every value must be a unit
/// name: `Alias=../../x` would otherwise name a file anywhere.
pub fn install_links(unit_text: &str, unit_name: &str, unit_dir: &str) -> Result<Vec<(String, String)>> {
    let target = format!("/{unit_dir}/{unit_name}");
    let mut links = Vec::new();
    let mut in_install = false;
    for line in unit_text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| in_install) else { continue };
        for item in value.split_whitespace() {
            let key = key.trim();
            if ["WantedBy", "RequiredBy", "Alias"].contains(&key) {
                check_unit_name(item).map_err(|e| e.context(format!("[Install] {key}= of {unit_name}")))?;
            }
            let link = match key {
                "WantedBy" => format!("{unit_dir}/{item}.wants/{unit_name}"),
                "RequiredBy" => format!("{unit_dir}/{item}.requires/{unit_name}"),
                "Alias" => format!("{unit_dir}/{item}"),
                _ => continue,
            };
            links.push((link, target.clone()));
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_install_section_only() {
        let unit = "[Unit]\nDescription=x\nWantedBy=ignored.target\n\n[Service]\nExecStart=/bin/x\n\n[Install]\n\
                    WantedBy=multi-user.target  other.target\nRequiredBy=containerd.service\nAlias=etcd2.service\n";
        let links = install_links(unit, "etcd.service", UNIT_DIR).unwrap();
        let expected = [
            "etc/systemd/system/multi-user.target.wants/etcd.service",
            "etc/systemd/system/other.target.wants/etcd.service",
            "etc/systemd/system/containerd.service.requires/etcd.service",
            "etc/systemd/system/etcd2.service",
        ];
        assert_eq!(links.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), expected);
        assert!(links.iter().all(|(_, t)| t == "/etc/systemd/system/etcd.service"));
        assert!(install_links("[Service]\nExecStart=/bin/x\n", "x.service", UNIT_DIR).unwrap().is_empty());
        let vendor = install_links(unit, "etcd.service", "usr/lib/systemd/system").unwrap();
        assert_eq!(vendor[0].0, "usr/lib/systemd/system/multi-user.target.wants/etcd.service");
        assert!(vendor.iter().all(|(_, t)| t == "/usr/lib/systemd/system/etcd.service"));
    }

    #[test]
    fn install_values_must_be_unit_names() {
        for bad in [
            "../../../etc/passwd",
            "/etc/x.service",
            "a/b.service",
            "x",
            ".service",
            "x.conf",
            "sp ace.service",
            "x.service\0",
        ] {
            let unit = format!("[Install]\nAlias={bad}\n");
            let err = install_links(&unit, "x.service", UNIT_DIR).unwrap_err();
            assert!(format!("{err:#}").contains("is not a unit name"), "{bad}: {err:#}");
        }
        for good in ["multi-user.target", "getty@tty1.service", "dev-disk-by\\x2duuid.device", "a:b.socket"] {
            check_unit_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
}
