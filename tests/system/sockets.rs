//! A socket-activated container on a booted host: systemd listens, the first connection starts
//! the service, and runc hands the socket on to the container (`LISTEN_FDS`, fd 3), which answers
//! on it. Uninstall takes the socket away with the rest.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;

use super::common::registry::free_port;
use super::common::*;
use super::{assert_same, host_file, snapshot, sysctr_ok, unit_property, wait_active, Setup};

#[test]
fn the_first_connection_starts_the_service_which_answers_on_the_passed_socket() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&socket_server_image(), "demo/echo");
    let host = TestHost::boot()?;
    sysctr_ok(&host, &["pull", &image]);
    let before = snapshot(&host);

    // Test hosts share this machine's network: the address is reached from here.
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let said = sysctr_ok(&host, &["install", "--name", "echo", "--listen", &address, &image]);
    assert!(said.starts_with("installed, listening: echo"), "{said}");
    let socket = host_file(&host, "/etc/systemd/system/echo.socket").expect("echo.socket placed");
    assert!(socket.contains(&format!("ListenStream={address}\n")), "{socket}");
    assert_eq!(unit_property(&host, "echo.socket", "ActiveState"), "active");
    assert_eq!(unit_property(&host, "echo.socket", "UnitFileState"), "enabled");
    assert_eq!(unit_property(&host, "echo.service", "ActiveState"), "inactive");
    assert_ne!(unit_property(&host, "echo.service", "UnitFileState"), "enabled");
    let status: serde_json::Value = serde_json::from_str(&sysctr_ok(&host, &["status", "--json", "echo"]))?;
    assert_eq!(status["current"]["listen"]["stream"], serde_json::json!([address]), "{status}");
    assert_eq!((status["socket"].as_str(), status["unit"].as_str()), (Some("echo.socket"), Some("echo.service")));

    // The connection waits in systemd's backlog while the container starts; every step bounded.
    let addr: SocketAddr = address.parse()?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap_or_else(|e| panic!("{e}\n{}", host.journal("echo.service")));
    assert_eq!(answer, "hello from fd 3, LISTEN_FDS=1\n", "{}", host.journal("echo.service"));
    wait_active(&host, "echo.service");
    let main_pid = unit_property(&host, "echo.service", "MainPID");
    assert_eq!(host.exec_ok(&["cat", &format!("/proc/{main_pid}/comm")])?.trim(), "runc");

    let out = sysctr_ok(&host, &["uninstall", "echo"]);
    assert!(out.contains("uninstalled echo"), "{out}");
    for unit in ["echo.socket", "echo.service"] {
        assert_eq!(unit_property(&host, unit, "LoadState"), "not-found", "{unit}");
    }
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err(), "{address} still listens");
    assert_same(&before, &snapshot(&host), "after uninstall");
    Ok(())
}
