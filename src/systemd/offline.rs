//! Enabling a unit in a root directory that is not running (an OS image being composed), the
//! way `systemctl --root DIR enable` does: symlinks from the unit's `[Install]` section.

/// The symlinks enabling `unit_name` creates, as (link path relative to the root, target).
/// `WantedBy=T` gives `etc/systemd/system/T.wants/NAME`, `RequiredBy=T` gives `T.requires/NAME`,
/// `Alias=A` gives `etc/systemd/system/A`; all point at `/etc/systemd/system/NAME`.
pub fn install_links(unit_text: &str, unit_name: &str) -> Vec<(String, String)> {
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
            let link = match key.trim() {
                "WantedBy" => format!("etc/systemd/system/{item}.wants/{unit_name}"),
                "RequiredBy" => format!("etc/systemd/system/{item}.requires/{unit_name}"),
                "Alias" => format!("etc/systemd/system/{item}"),
                _ => continue,
            };
            links.push((link, target.clone()));
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_install_section_only() {
        let unit = "[Unit]\nDescription=x\nWantedBy=ignored.target\n\n[Service]\nExecStart=/bin/x\n\n[Install]\n\
                    WantedBy=multi-user.target  other.target\nRequiredBy=containerd.service\nAlias=etcd2.service\n";
        let links = install_links(unit, "etcd.service");
        let expected = [
            "etc/systemd/system/multi-user.target.wants/etcd.service",
            "etc/systemd/system/other.target.wants/etcd.service",
            "etc/systemd/system/containerd.service.requires/etcd.service",
            "etc/systemd/system/etcd2.service",
        ];
        assert_eq!(links.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), expected);
        assert!(links.iter().all(|(_, t)| t == "/etc/systemd/system/etcd.service"));
        assert!(install_links("[Service]\nExecStart=/bin/x\n", "x.service").is_empty());
    }
}
