//! Socket activation: the `NAME.socket` unit of a container that listens through systemd.
//!
//! A container gets a socket unit when it is installed with `--listen`/`--listen-datagram` (or
//! `listen` in an apply file), or when its image ships `/exports/socket.template`. systemd
//! listens; the first connection starts `NAME.service`, whose runc hands the sockets on to the
//! container (`LISTEN_FDS`, from fd 3). The socket is what is enabled and started, never the
//! service.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::template::{self, Forced};

/// The longest listen address accepted: more than any IP address with a port or interface, or
/// any `AF_UNIX` path (108 bytes), can be.
const MAX_ADDRESS: usize = 256;

/// What a container listens on through systemd, as `ListenStream=` and `ListenDatagram=` of
/// systemd.socket(5) take it: `8080`, `127.0.0.1:8080`, `[::1]:53`, `/run/NAME.sock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datagram: Vec<String>,
}

impl Listen {
    /// Checked addresses: each one non-empty, bounded and free of control characters,
    /// whitespace, quotes and backslashes (which a unit file would split or unquote).
    pub fn new(stream: Vec<String>, datagram: Vec<String>) -> Result<Listen> {
        for address in stream.iter().chain(&datagram) {
            check_address(address)?;
        }
        Ok(Listen { stream, datagram })
    }

    pub fn is_empty(&self) -> bool {
        self.stream.is_empty() && self.datagram.is_empty()
    }

    /// The `[Socket]` lines of these addresses.
    fn lines(&self) -> Result<String> {
        let mut text = String::new();
        let each =
            self.stream.iter().map(|a| ("ListenStream", a)).chain(self.datagram.iter().map(|a| ("ListenDatagram", a)));
        for (key, address) in each {
            check_address(address)?;
            // `%` starts a specifier in a unit file.
            text.push_str(&format!("{key}={}\n", address.replace('%', "%%")));
        }
        Ok(text)
    }
}

fn check_address(address: &str) -> Result<()> {
    let shown: String = address.chars().take(64).flat_map(char::escape_debug).collect();
    if address.is_empty() {
        bail!("listen address is empty");
    }
    if address.len() > MAX_ADDRESS {
        bail!("listen address \"{shown}...\" is longer than {MAX_ADDRESS} bytes");
    }
    if let Some(c) = address.chars().find(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '\'' | '\\')) {
        bail!(
            "listen address \"{shown}\" has {:?}: an address is a port, HOST:PORT or a socket path, \
             without whitespace, control characters, quotes or backslashes",
            c
        );
    }
    Ok(())
}

/// The socket unit of a container: the image's `socket.template` rendered as its service
/// template is (same variables, same escaping), with `listen` added; or, without a template,
/// one that listens on `listen` and is wanted by `sockets.target`. `None` when there is neither.
pub(in crate::deploy) fn render_socket(
    socket_template: Option<&str>,
    listen: &Listen,
    forced: &Forced,
    values: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let lines = listen.lines()?;
    match socket_template {
        Some(text) => {
            let mut unit = template::render_unit("socket.template", text, forced, values)?;
            if !lines.is_empty() {
                if !unit.ends_with('\n') {
                    unit.push('\n');
                }
                unit.push_str(&format!("\n# Added by sysctr: the addresses given at install.\n[Socket]\n{lines}"));
            }
            Ok(Some(unit))
        }
        None if listen.is_empty() => Ok(None),
        None => Ok(Some(format!(
            "# Written by sysctr: the first connection starts {name}.service.\n\
             [Unit]\n\
             Description=Sockets of {name}\n\
             \n\
             [Socket]\n\
             {lines}\n\
             [Install]\n\
             WantedBy=sockets.target\n",
            name = forced.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forced() -> Forced {
        Forced {
            name: "web".into(),
            destdir: "/var/lib/sysctr/deployments/web.0".into(),
            exec_start: "/usr/sbin/runc --systemd-cgroup run 'web'".into(),
            exec_stop: "/usr/sbin/runc --systemd-cgroup kill 'web'".into(),
            exec_startpre: String::new(),
            exec_stoppost: String::new(),
            host_uid: 0,
            host_gid: 0,
            image_name: "web".into(),
            image_id: "sha256:1234".into(),
        }
    }

    #[test]
    fn addresses_are_checked_with_the_bad_one_named() {
        assert!(Listen::new(
            vec!["8080".into(), "127.0.0.1:8080".into(), "/run/web.sock".into()],
            vec!["[::1]:53".into()]
        )
        .is_ok());
        for bad in ["", "80\n[Service]", "a b", "x\"y", "a\\b", &"9".repeat(300)] {
            let err = Listen::new(vec![bad.into()], Vec::new()).unwrap_err().to_string();
            assert!(err.starts_with("listen address") && !err.contains('\n'), "{err}");
        }
        let err = Listen::new(Vec::new(), vec!["80\u{7}".into()]).unwrap_err().to_string();
        assert!(err.contains("80\\u{7}"), "{err}");
    }

    #[test]
    fn the_default_socket_listens_and_is_wanted_by_sockets_target() {
        let listen = Listen::new(vec!["127.0.0.1:8080".into(), "/run/w%.sock".into()], vec!["9999".into()]).unwrap();
        let unit = render_socket(None, &listen, &forced(), &BTreeMap::new()).unwrap().unwrap();
        assert!(
            unit.contains("[Socket]\nListenStream=127.0.0.1:8080\nListenStream=/run/w%%.sock\nListenDatagram=9999\n"),
            "{unit}"
        );
        assert!(unit.ends_with("[Install]\nWantedBy=sockets.target\n"), "{unit}");
        assert!(unit.contains("Description=Sockets of web\n"), "{unit}");
        assert_eq!(render_socket(None, &Listen::default(), &forced(), &BTreeMap::new()).unwrap(), None);
    }

    #[test]
    fn a_socket_template_is_rendered_and_escaped_like_a_service_template() {
        let values = BTreeMap::from([("PORT".to_string(), "80%".to_string())]);
        let template = "[Socket]\nListenStream=$PORT\n[Install]\nWantedBy=sockets.target\n";
        let unit = render_socket(Some(template), &Listen::default(), &forced(), &values).unwrap().unwrap();
        assert!(unit.contains("ListenStream=80%%\n"), "{unit}");
        let listen = Listen::new(vec!["8080".into()], Vec::new()).unwrap();
        let unit = render_socket(Some(template), &listen, &forced(), &values).unwrap().unwrap();
        assert!(unit.ends_with("[Socket]\nListenStream=8080\n"), "{unit}");
        let hostile = BTreeMap::from([("PORT".to_string(), "80\nExecStartPre=/bin/evil".to_string())]);
        assert!(render_socket(Some(template), &Listen::default(), &forced(), &hostile).is_err());
    }
}
