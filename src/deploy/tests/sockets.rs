//! Socket-activated containers against the in-memory systemd: the socket unit rendered, placed,
//! enabled and started instead of the service, switched with the slot, and taken off the host.

use std::path::Path;

use super::*;

fn listen(addresses: &[&str]) -> Listen {
    Listen { stream: addresses.iter().map(ToString::to_string).collect(), datagram: Vec::new() }
}

fn listening(name: &str, addresses: &[&str]) -> InstallRequest {
    InstallRequest { listen: listen(addresses), ..install_request(name, false) }
}

fn socket_file(host: &Host) -> Option<String> {
    std::fs::read_to_string(host.root.join("etc/systemd/system/svc.socket")).ok()
}

#[tokio::test]
async fn the_socket_is_enabled_and_started_not_the_service_and_uninstall_takes_it_back() {
    let host = host();
    let before = host_files(&host.root);
    let systemd = Fake::new();
    install(&host.layout, &listening("svc", &["127.0.0.1:8080", "/run/svc.sock"]), &systemd).await.unwrap();

    let socket = socket_file(&host).expect("svc.socket placed");
    assert!(socket.contains("[Socket]\nListenStream=127.0.0.1:8080\nListenStream=/run/svc.sock\n"), "{socket}");
    assert!(socket.contains("[Install]\nWantedBy=sockets.target\n"), "{socket}");
    let slot = host.layout.slot("svc", 0);
    assert_eq!(std::fs::read_to_string(slot.join("unit.socket")).unwrap(), socket);
    assert!(systemd.is_enabled_now("svc.socket") && systemd.is_active("svc.socket"));
    assert!(!systemd.is_enabled_now("svc.service") && !systemd.is_active("svc.service"));
    let record = host.layout.read_info("svc").unwrap();
    assert_eq!(record.listen, listen(&["127.0.0.1:8080", "/run/svc.sock"]));
    let status = status(&host.layout, "svc", &systemd).await.unwrap();
    let json = serde_json::to_value(&status.current).unwrap();
    assert_eq!(json["listen"], serde_json::json!({"stream": ["127.0.0.1:8080", "/run/svc.sock"]}));

    uninstall(&host.layout, "svc", &systemd).await.unwrap();
    let calls = systemd.calls();
    let stop_socket = calls.iter().position(|c| c == "stop svc.socket").expect("the socket stopped");
    assert!(calls[stop_socket..].iter().any(|c| c == "disable svc.socket"), "{calls:?}");
    assert!(!systemd.is_enabled_now("svc.socket") && !systemd.is_active("svc.socket"));
    assert_eq!(host_files(&host.root), before);
}

#[tokio::test]
async fn a_container_without_addresses_or_template_gets_no_socket() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", false), &systemd).await.unwrap();
    assert_eq!(socket_file(&host), None);
    assert!(!host.layout.slot("svc", 0).join("unit.socket").exists());
    assert!(systemd.is_enabled_now("svc.service") && !systemd.calls().iter().any(|c| c.contains("svc.socket")));
}

#[tokio::test]
async fn bad_addresses_and_a_failed_socket_start_leave_the_host_as_it_was() {
    let host = host();
    let before = host_files(&host.root);
    let systemd = Fake::new();
    for bad in ["8080\n[Service]\nExecStartPre=/bin/evil", "", "a b", "/run/\u{1b}x"] {
        let err = install(&host.layout, &listening("svc", &[bad]), &systemd).await.unwrap_err();
        assert!(format!("{err:#}").contains("listen address"), "{err:#}");
        assert_eq!(host_files(&host.root), before);
        assert!(std::fs::symlink_metadata(host.layout.link("svc")).is_err());
        assert!(!host.layout.slot("svc", 0).exists());
    }
    assert!(Listen::new(vec!["80\nx".into()], Vec::new()).is_err());

    systemd.fail_next_start_of("svc.socket");
    let err = install(&host.layout, &listening("svc", &["8080"]), &systemd).await.unwrap_err();
    assert!(format!("{err:#}").contains("could not start svc.socket"), "{err:#}");
    assert_eq!(host_files(&host.root), before);
    assert!(!systemd.is_enabled_now("svc.socket"), "the enable was not undone");
    assert!(std::fs::symlink_metadata(host.layout.link("svc")).is_err());
}

#[tokio::test]
async fn update_keeps_the_addresses_and_rollback_switches_the_socket_with_the_slot() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &listening("svc", &["8080"]), &systemd).await.unwrap();
    // An image that ships its own socket unit: rendered with the values, the addresses added.
    let template = "[Socket]\nListenStream=/run/$NAME.sock\n\n[Install]\nWantedBy=sockets.target\n";
    publish_with(&host.layout, IMAGE, "v2", &[("exports/socket.template", template)]);
    let request = UpdateRequest { values: BTreeMap::new(), listen: None, ..update_request("svc", "", true) };
    update(&host.layout, &request, &systemd).await.unwrap();
    assert_eq!(std::fs::read_link(host.layout.link("svc")).unwrap(), Path::new("svc.1"));
    assert_eq!(host.layout.read_info("svc").unwrap().listen, listen(&["8080"]));
    let socket = socket_file(&host).unwrap();
    assert!(socket.starts_with("[Socket]\nListenStream=/run/svc.sock\n"), "{socket}");
    assert!(socket.ends_with("[Socket]\nListenStream=8080\n"), "{socket}");
    let calls = systemd.calls();
    let stopped = calls.iter().position(|c| c == "stop svc.socket").expect("the old socket stopped");
    assert!(calls[stopped..].iter().any(|c| c == "start svc.socket"), "{calls:?}");
    assert!(systemd.is_enabled_now("svc.socket") && systemd.is_active("svc.socket"));
    assert!(!systemd.is_enabled_now("svc.service"));

    rollback(&host.layout, "svc", &systemd).await.unwrap();
    assert!(socket_file(&host).unwrap().contains("Description=Sockets of svc\n"));
    assert!(systemd.is_enabled_now("svc.socket") && systemd.is_active("svc.socket"));
}

#[tokio::test]
async fn a_socket_added_by_update_goes_with_a_rollback_and_the_service_then_runs() {
    let host = host();
    let systemd = Fake::new();
    install(&host.layout, &install_request("svc", false), &systemd).await.unwrap();
    assert!(systemd.is_enabled_now("svc.service") && !systemd.is_active("svc.service"));
    let request =
        UpdateRequest { values: BTreeMap::new(), listen: Some(listen(&["8080"])), ..update_request("svc", "", true) };
    update(&host.layout, &request, &systemd).await.unwrap();
    assert!(socket_file(&host).unwrap().contains("ListenStream=8080\n"));
    assert!(systemd.is_enabled_now("svc.socket") && systemd.is_active("svc.socket"));
    assert!(!systemd.is_enabled_now("svc.service"));

    rollback(&host.layout, "svc", &systemd).await.unwrap();
    assert_eq!(socket_file(&host), None);
    assert!(!systemd.is_enabled_now("svc.socket") && !systemd.is_active("svc.socket"));
    assert!(systemd.is_enabled_now("svc.service") && systemd.is_active("svc.service"));
}
