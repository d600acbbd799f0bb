//! `ALL_PROCESS_CAPABILITIES`: every capability the host kernel knows.

use anyhow::{Context, Result};

/// Where the kernel publishes its highest capability number.
const CAP_LAST_CAP: &str = "/proc/sys/kernel/cap_last_cap";

/// Linux capability names, indexed by capability number (`linux/capability.h`).
const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities `0..=cap_last_cap` that are also in `bounding` (a bit mask, bit N for
/// capability N), each quoted, joined by `",\n"`: the inside of a JSON array. Numbers this
/// table has no name for are left out. A capability outside the host's bounding set could never
/// be granted: runc would refuse to start the container.
#[must_use]
pub fn all_process_capabilities(cap_last_cap: u32, bounding: u64) -> String {
    let count = usize::try_from(cap_last_cap).map_or(CAPABILITIES.len(), |last| last.saturating_add(1));
    CAPABILITIES
        .iter()
        .enumerate()
        .take(count)
        .filter(|(number, _)| bounding & (1u64 << number) != 0)
        .map(|(_, name)| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(",\n")
}

/// The number of a capability named as in `linux/capability.h` (`CAP_SYS_ADMIN`), if known.
#[must_use]
pub fn capability_number(name: &str) -> Option<u32> {
    CAPABILITIES.iter().position(|known| *known == name).and_then(|n| u32::try_from(n).ok())
}

/// The bounding capability set of this process (`CapBnd` in /proc/self/status).
pub fn host_bounding_set() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let hex =
        status.lines().find_map(|line| line.strip_prefix("CapBnd:")).context("no CapBnd line in /proc/self/status")?;
    u64::from_str_radix(hex.trim(), 16).with_context(|| format!("parsing CapBnd '{}'", hex.trim()))
}

/// The highest capability number of the running kernel.
pub fn host_cap_last_cap() -> Result<u32> {
    let text = std::fs::read_to_string(CAP_LAST_CAP).with_context(|| format!("reading {CAP_LAST_CAP}"))?;
    parse_cap_last_cap(&text).with_context(|| format!("parsing {CAP_LAST_CAP}"))
}

fn parse_cap_last_cap(text: &str) -> Result<u32> {
    let text = text.trim();
    text.parse().with_context(|| format!("'{text}' is not a capability number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_outside_the_bounding_set_are_left_out() {
        // nspawn drops CAP_SYS_RESOURCE (24): runc could not grant it there.
        let list = all_process_capabilities(40, 0x1ff_feff_ffff);
        assert!(!list.contains("CAP_SYS_RESOURCE"), "{list}");
        assert!(list.contains("CAP_SYS_ADMIN") && list.contains("CAP_CHECKPOINT_RESTORE"));
        assert_eq!(list.lines().count(), 40);
        assert!(host_bounding_set().unwrap() & 1 != 0, "CAP_CHOWN is in any root bounding set");
    }

    #[test]
    fn lists_every_capability_up_to_the_last() {
        let all = all_process_capabilities(40, u64::MAX);
        let names: Vec<&str> = all.split(",\n").collect();
        assert_eq!(names.len(), 41);
        assert_eq!(names.first(), Some(&"\"CAP_CHOWN\""));
        assert_eq!(names[21], "\"CAP_SYS_ADMIN\"");
        assert_eq!(names.last(), Some(&"\"CAP_CHECKPOINT_RESTORE\""));
        assert!(all.starts_with("\"CAP_CHOWN\",\n\"CAP_DAC_OVERRIDE\",\n"));
        assert!(!all.ends_with('\n') && !all.ends_with(','));
        // Inside brackets it is a JSON array of strings.
        let parsed: Vec<String> = serde_json::from_str(&format!("[{all}]")).unwrap();
        assert_eq!(parsed.len(), 41);
    }

    #[test]
    fn stops_at_the_last_capability() {
        let cases = [(0, "\"CAP_CHOWN\""), (1, "\"CAP_CHOWN\",\n\"CAP_DAC_OVERRIDE\"")];
        for (last, expected) in cases {
            assert_eq!(all_process_capabilities(last, u64::MAX), expected);
        }
        assert_eq!(all_process_capabilities(37, u64::MAX).split(",\n").count(), 38);
        assert!(all_process_capabilities(37, u64::MAX).ends_with("\"CAP_AUDIT_READ\""));
        // Numbers past the table are skipped.
        assert_eq!(all_process_capabilities(63, u64::MAX), all_process_capabilities(40, u64::MAX));
        assert_eq!(all_process_capabilities(u32::MAX, u64::MAX), all_process_capabilities(40, u64::MAX));
    }

    #[test]
    fn parses_cap_last_cap() {
        assert_eq!(parse_cap_last_cap("40\n").unwrap(), 40);
        assert_eq!(parse_cap_last_cap("  37 ").unwrap(), 37);
        for bad in ["", "-1", "forty", "40 41"] {
            let err = parse_cap_last_cap(bad).unwrap_err();
            assert!(format!("{err:#}").contains("is not a capability number"), "{bad:?}");
        }
    }

    #[test]
    fn reads_the_host_value() {
        // Only where /proc is available: the value is then a known or future capability number.
        if std::path::Path::new(CAP_LAST_CAP).exists() {
            assert!(host_cap_last_cap().unwrap() >= 30);
        }
    }
}
