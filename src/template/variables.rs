//! Template variables: where each value comes from and which source wins.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::substitute::is_identifier;

/// Default of `RUN_DIRECTORY`.
const RUN_DIRECTORY: &str = "/run";
/// Default of `STATE_DIRECTORY`.
const STATE_DIRECTORY: &str = "/var/lib";
/// Default of `CONF_DIRECTORY`.
const CONF_DIRECTORY: &str = "/etc";

/// The variable holding the identifier generated once at install.
const UUID: &str = "UUID";

/// Variables the host provides when neither the image nor the user does (`PIDFILE` included).
pub const HOST_VARIABLES: [&str; 6] =
    ["RUN_DIRECTORY", "STATE_DIRECTORY", "CONF_DIRECTORY", "PIDFILE", "RUNTIME", "ALL_PROCESS_CAPABILITIES"];

/// Variables sysctr always sets itself, whatever the image or the user says.
pub const FORCED_VARIABLES: [&str; 10] = [
    "NAME",
    "DESTDIR",
    "EXEC_START",
    "EXEC_STOP",
    "EXEC_STARTPRE",
    "EXEC_STOPPOST",
    "HOST_UID",
    "HOST_GID",
    "IMAGE_NAME",
    "IMAGE_ID",
];

/// Values that depend on the host; the image and `--set` may override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDefaults {
    /// Path of the runtime binary (`RUNTIME`).
    pub runtime: String,
    /// `ALL_PROCESS_CAPABILITIES`, see [`super::all_process_capabilities`].
    pub all_process_capabilities: String,
}

/// Values sysctr sets for every deployment; nothing overrides them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    /// `NAME`: the container (and unit) name.
    pub name: String,
    /// `DESTDIR`: the deployment slot directory holding `config.json` and `rootfs/`.
    pub destdir: String,
    /// `EXEC_START`.
    pub exec_start: String,
    /// `EXEC_STOP`.
    pub exec_stop: String,
    /// `EXEC_STARTPRE` (may be empty).
    pub exec_startpre: String,
    /// `EXEC_STOPPOST` (may be empty).
    pub exec_stoppost: String,
    /// `HOST_UID`.
    pub host_uid: u32,
    /// `HOST_GID`.
    pub host_gid: u32,
    /// `IMAGE_NAME`.
    pub image_name: String,
    /// `IMAGE_ID`.
    pub image_id: String,
}

/// Every source of template values, for [`resolve`].
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Lowest precedence.
    pub host: &'a HostDefaults,
    /// `defaultValues` of the image's `manifest.json`: beat the host defaults.
    pub manifest_defaults: &'a BTreeMap<String, String>,
    /// What the user set with `--set`: beats the host and the image.
    pub user_set: &'a BTreeMap<String, String>,
    /// `UUID`, generated once at install: beats all of the above.
    pub uuid: &'a str,
    /// Beats everything.
    pub forced: &'a Forced,
}

/// The final template values: host defaults < manifest defaults < `--set` < `UUID` < forced.
///
/// `PIDFILE`, unless set by the image or the user, is derived from the final `RUN_DIRECTORY`.
/// Refuses a `--set` of `UUID`, of a forced variable, or of a name that is not an identifier.
pub fn resolve(inputs: &Inputs<'_>) -> Result<BTreeMap<String, String>> {
    for name in inputs.user_set.keys() {
        check_user_variable(name)?;
    }
    let host = inputs.host;
    let mut values: BTreeMap<String, String> = [
        ("RUN_DIRECTORY", RUN_DIRECTORY),
        ("STATE_DIRECTORY", STATE_DIRECTORY),
        ("CONF_DIRECTORY", CONF_DIRECTORY),
        ("RUNTIME", host.runtime.as_str()),
        ("ALL_PROCESS_CAPABILITIES", host.all_process_capabilities.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    values.extend(inputs.manifest_defaults.clone());
    values.extend(inputs.user_set.clone());

    let forced = inputs.forced;
    if !values.contains_key("PIDFILE") {
        let pidfile = format!("{}/container-{}.pid", values["RUN_DIRECTORY"], forced.name);
        values.insert("PIDFILE".to_owned(), pidfile);
    }
    values.insert(UUID.to_owned(), inputs.uuid.to_owned());
    values.extend(forced.variables().into_iter().map(|(k, v)| (k.to_owned(), v)));
    Ok(values)
}

impl Forced {
    /// Each forced variable with its value, in the order of [`FORCED_VARIABLES`].
    pub(super) fn variables(&self) -> [(&'static str, String); 10] {
        let variables = [
            ("NAME", self.name.clone()),
            ("DESTDIR", self.destdir.clone()),
            ("EXEC_START", self.exec_start.clone()),
            ("EXEC_STOP", self.exec_stop.clone()),
            ("EXEC_STARTPRE", self.exec_startpre.clone()),
            ("EXEC_STOPPOST", self.exec_stoppost.clone()),
            ("HOST_UID", self.host_uid.to_string()),
            ("HOST_GID", self.host_gid.to_string()),
            ("IMAGE_NAME", self.image_name.clone()),
            ("IMAGE_ID", self.image_id.clone()),
        ];
        debug_assert!(variables.iter().map(|(k, _)| *k).eq(FORCED_VARIABLES));
        variables
    }
}

/// Parses a `--set NAME=VALUE` argument. The value may be empty and may contain `=`.
///
/// Refuses a name that is not an identifier, and names sysctr sets itself.
pub fn parse_set(arg: &str) -> Result<(String, String)> {
    let Some((name, value)) = arg.split_once('=') else {
        bail!("invalid --set argument '{arg}': expected NAME=VALUE");
    };
    if !is_identifier(name) {
        bail!(
            "invalid --set argument '{arg}': '{name}' is not a variable name \
             (ASCII letters, digits and '_', not starting with a digit)"
        );
    }
    check_user_variable(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Refuses a user-set variable that is not an identifier or that sysctr sets itself.
fn check_user_variable(name: &str) -> Result<()> {
    if !is_identifier(name) {
        bail!("--set {name}=...: '{name}' is not a variable name");
    }
    if name == UUID || FORCED_VARIABLES.contains(&name) {
        bail!("--set {name}=...: {name} is set by sysctr and cannot be overridden");
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::template::test_values as map;

    fn host() -> HostDefaults {
        HostDefaults { runtime: "/usr/bin/runc".to_owned(), all_process_capabilities: "\"CAP_CHOWN\"".to_owned() }
    }

    /// The values sysctr computes for an etcd container, as the template tests use them.
    pub(in crate::template) fn forced() -> Forced {
        Forced {
            name: "etcd".to_owned(),
            destdir: "/var/lib/containers/atomic/etcd.0".to_owned(),
            exec_start: "/usr/bin/runc --systemd-cgroup run 'etcd'".to_owned(),
            exec_stop: "/usr/bin/runc --systemd-cgroup kill 'etcd'".to_owned(),
            exec_startpre: String::new(),
            exec_stoppost: String::new(),
            host_uid: 0,
            host_gid: 5,
            image_name: "docker.io/library/etcd:latest".to_owned(),
            image_id: "sha256:abcd".to_owned(),
        }
    }

    fn resolve_with(manifest: &[(&str, &str)], user: &[(&str, &str)]) -> Result<BTreeMap<String, String>> {
        let (host, forced) = (host(), forced());
        resolve(&Inputs {
            host: &host,
            manifest_defaults: &map(manifest),
            user_set: &map(user),
            uuid: "0b9f5a8e-uuid",
            forced: &forced,
        })
    }

    #[test]
    fn host_defaults_apply_when_nothing_else_is_set() {
        let values = resolve_with(&[], &[]).unwrap();
        let expected = [
            ("RUN_DIRECTORY", "/run"),
            ("STATE_DIRECTORY", "/var/lib"),
            ("CONF_DIRECTORY", "/etc"),
            ("PIDFILE", "/run/container-etcd.pid"),
            ("RUNTIME", "/usr/bin/runc"),
            ("ALL_PROCESS_CAPABILITIES", "\"CAP_CHOWN\""),
            ("UUID", "0b9f5a8e-uuid"),
            ("NAME", "etcd"),
            ("DESTDIR", "/var/lib/containers/atomic/etcd.0"),
            ("EXEC_START", "/usr/bin/runc --systemd-cgroup run 'etcd'"),
            ("EXEC_STOP", "/usr/bin/runc --systemd-cgroup kill 'etcd'"),
            ("EXEC_STARTPRE", ""),
            ("EXEC_STOPPOST", ""),
            ("HOST_UID", "0"),
            ("HOST_GID", "5"),
            ("IMAGE_NAME", "docker.io/library/etcd:latest"),
            ("IMAGE_ID", "sha256:abcd"),
        ];
        assert_eq!(values, map(&expected));
    }

    #[test]
    fn precedence() {
        // (manifest defaults, --set, variable, expected value)
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(Pairs, Pairs, &str, &str)] = &[
            (&[], &[], "CONF_DIRECTORY", "/etc"),
            (&[("CONF_DIRECTORY", "/etc/etcd")], &[], "CONF_DIRECTORY", "/etc/etcd"),
            (&[], &[("CONF_DIRECTORY", "/opt")], "CONF_DIRECTORY", "/opt"),
            (&[("CONF_DIRECTORY", "/etc/etcd")], &[("CONF_DIRECTORY", "/opt")], "CONF_DIRECTORY", "/opt"),
            (&[("RUNTIME", "/bin/crun")], &[], "RUNTIME", "/bin/crun"),
            (&[("ETCD_PORT", "2379")], &[], "ETCD_PORT", "2379"),
            (&[("ETCD_PORT", "2379")], &[("ETCD_PORT", "4001")], "ETCD_PORT", "4001"),
            (&[], &[("EXTRA", "")], "EXTRA", ""),
            // PIDFILE follows the final RUN_DIRECTORY...
            (&[("RUN_DIRECTORY", "/var/run")], &[], "PIDFILE", "/var/run/container-etcd.pid"),
            (&[("RUN_DIRECTORY", "/var/run")], &[("RUN_DIRECTORY", "/tmp")], "PIDFILE", "/tmp/container-etcd.pid"),
            // ...unless it is set itself.
            (&[("PIDFILE", "/p.pid")], &[("RUN_DIRECTORY", "/tmp")], "PIDFILE", "/p.pid"),
            (&[("PIDFILE", "/p.pid")], &[("PIDFILE", "/q.pid")], "PIDFILE", "/q.pid"),
            // UUID and forced values beat the image.
            (&[("UUID", "from-image")], &[], "UUID", "0b9f5a8e-uuid"),
            (&[("NAME", "other")], &[], "NAME", "etcd"),
            (&[("EXEC_START", "/bin/sh")], &[], "EXEC_START", "/usr/bin/runc --systemd-cgroup run 'etcd'"),
            (&[("HOST_UID", "1000")], &[], "HOST_UID", "0"),
            (&[("IMAGE_ID", "x")], &[], "IMAGE_ID", "sha256:abcd"),
        ];
        for (manifest, user, variable, expected) in cases {
            let values = resolve_with(manifest, user).unwrap();
            assert_eq!(
                values.get(*variable).map(String::as_str),
                Some(*expected),
                "{variable} with manifest {manifest:?} and --set {user:?}"
            );
        }
    }

    #[test]
    fn set_of_reserved_variables_is_refused() {
        for name in FORCED_VARIABLES.iter().chain(&["UUID"]) {
            let message = resolve_with(&[], &[(name, "x")]).unwrap_err().to_string();
            assert_eq!(message, format!("--set {name}=...: {name} is set by sysctr and cannot be overridden"));
        }
        let message = resolve_with(&[], &[("NOT-A-NAME", "x")]).unwrap_err().to_string();
        assert!(message.contains("'NOT-A-NAME' is not a variable name"), "{message}");
    }

    #[test]
    fn parse_set_accepts_name_value() {
        let cases = [
            ("A=b", "A", "b"),
            ("A=", "A", ""),
            ("_x1=a=b==c", "_x1", "a=b==c"),
            ("ETCD_INITIAL_CLUSTER=a=http://1.2.3.4:2380", "ETCD_INITIAL_CLUSTER", "a=http://1.2.3.4:2380"),
            ("V= spaces and 'quotes' ", "V", " spaces and 'quotes' "),
            ("RUN_DIRECTORY=/var/run", "RUN_DIRECTORY", "/var/run"),
        ];
        for (arg, name, value) in cases {
            assert_eq!(parse_set(arg).unwrap(), (name.to_owned(), value.to_owned()), "{arg}");
        }
    }

    #[test]
    fn parse_set_refuses_bad_arguments() {
        let cases = [
            ("A", "invalid --set argument 'A': expected NAME=VALUE"),
            ("", "invalid --set argument '': expected NAME=VALUE"),
            ("=v", "invalid --set argument '=v': '' is not a variable name"),
            ("1A=v", "'1A' is not a variable name"),
            ("A-B=v", "invalid --set argument 'A-B=v': 'A-B' is not a variable name"),
            (" A=v", "' A' is not a variable name"),
            ("Ä=v", "'Ä' is not a variable name"),
            ("${A}=v", "'${A}' is not a variable name"),
            ("NAME=x", "--set NAME=...: NAME is set by sysctr and cannot be overridden"),
            ("UUID=x", "--set UUID=...: UUID is set by sysctr and cannot be overridden"),
            ("EXEC_START=/bin/sh", "EXEC_START is set by sysctr and cannot be overridden"),
        ];
        for (arg, expected) in cases {
            let message = parse_set(arg).unwrap_err().to_string();
            assert!(message.contains(expected), "{arg:?}: {message}");
        }
    }
}
