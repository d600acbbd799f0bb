//! Enabling a unit in a root directory that is not running (an OS image being composed), the
//! way `systemctl --root DIR enable` does: symlinks from the unit's `[Install]` section.

use anyhow::{bail, Result};

/// Unit types an `[Install]` value may name.
const UNIT_SUFFIXES: [&str; 11] =
    [".service", ".socket", ".target", ".device", ".mount", ".automount", ".swap", ".timer", ".path", ".slice", ".scope"];

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

/// The symlinks enabling `unit_name` creates, as (link path relative to the root, target).
/// `WantedBy=T` gives `etc/systemd/system/T.wants/NAME`, `RequiredBy=T` gives `T.requires/NAME`,
/// `Alias=A` gives `etc/systemd/system/A`; all point at `/etc/systemd/system/NAME`. Every value
/// must be a unit name: `Alias=../../x` would otherwise name a file anywhere.
pub fn install_links(unit_text: &str, unit_name: &str) -> Result<Vec<(String, String)>> {
    let target = format!("/etc/systemd/system/{unit_name}");
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
                "WantedBy" => format!("etc/systemd/system/{item}.wants/{unit_name}"),
                "RequiredBy" => format!("etc/systemd/system/{item}.requires/{unit_name}"),
                "Alias" => format!("etc/systemd/system/{item}"),
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
        let links = install_links(unit, "etcd.service").unwrap();
        let expected = [
            "etc/systemd/system/multi-user.target.wants/etcd.service",
            "etc/systemd/system/other.target.wants/etcd.service",
            "etc/systemd/system/containerd.service.requires/etcd.service",
            "etc/systemd/system/etcd2.service",
        ];
        assert_eq!(links.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), expected);
        assert!(links.iter().all(|(_, t)| t == "/etc/systemd/system/etcd.service"));
        assert!(install_links("[Service]\nExecStart=/bin/x\n", "x.service").unwrap().is_empty());
    }

    #[test]
    fn install_values_must_be_unit_names() {
        for bad in ["../../../etc/passwd", "/etc/x.service", "a/b.service", "x", ".service", "x.conf", "sp ace.service", "x.service\0"] {
            let unit = format!("[Install]\nAlias={bad}\n");
            let err = install_links(&unit, "x.service").unwrap_err();
            assert!(format!("{err:#}").contains("is not a unit name"), "{bad}: {err:#}");
        }
        for good in ["multi-user.target", "getty@tty1.service", "dev-disk-by\\x2duuid.device", "a:b.socket"] {
            check_unit_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
}
