//! The Ansible collection (`packaging/ansible/sysctr`) driving three booted hosts: built by
//! `ansible-galaxy collection build`, installed with `--no-deps`, its modules documented for
//! `ansible-doc`, and run by `ansible-playbook` from ansible-core in a venv (tests/setup.sh) over
//! hosts reached through nsenter (`tests/ansible/connection_plugins`). Each result is judged by
//! what the module returned and by what systemd says on the hosts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::auto_update::install_shipped_units;
use super::common::*;
use super::{greeting, host_file, unit_property, wait_active, Setup};

/// ansible-core's commands, from the venv tests/setup.sh makes (or `SYSCTR_TEST_ANSIBLE_BIN`).
fn ansible_bin() -> PathBuf {
    match std::env::var_os("SYSCTR_TEST_ANSIBLE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ansible-venv/bin"),
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// An Ansible controller on this machine, with the collection built and installed in `dir`.
struct Controller {
    dir: PathBuf,
}

impl Controller {
    fn new(dir: &Path) -> Result<Controller> {
        let controller = Controller { dir: dir.to_path_buf() };
        let built = Command::new("bash")
            .arg(repo().join("packaging/ansible/build.sh"))
            .arg(dir.join("dist"))
            .env("ANSIBLE_BIN", ansible_bin())
            .env("PYTHONWARNINGS", "ignore::UserWarning")
            .output()?;
        if !built.status.success() {
            bail!("building the collection: {}", describe_output(&built));
        }
        let tarball = String::from_utf8_lossy(&built.stdout).trim().to_string();
        let installed = controller
            .command("ansible-galaxy")
            .args(["collection", "install", "--no-deps", "-p"])
            .arg(dir.join("collections"))
            .arg(&tarball)
            .output()?;
        if !installed.status.success() {
            bail!("installing {tarball}: {}", describe_output(&installed));
        }
        Ok(controller)
    }

    /// One of ansible-core's commands, with this controller's configuration and collections.
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(ansible_bin().join(tool));
        command
            .env("ANSIBLE_CONFIG", repo().join("tests/ansible/ansible.cfg"))
            .env("ANSIBLE_COLLECTIONS_PATH", self.dir.join("collections"))
            .env("ANSIBLE_HOME", self.dir.join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.join("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("PYTHONWARNINGS", "ignore::UserWarning")
            .current_dir(&self.dir);
        command
    }

    /// An inventory of `hosts` in the group `nodes`, each with its own variables.
    fn inventory(&self, hosts: &[(&TestHost, Value)]) -> Result<PathBuf> {
        let mut nodes = serde_json::Map::new();
        for (host, vars) in hosts {
            let mut vars = vars.as_object().cloned().unwrap_or_default();
            vars.insert("ansible_connection".into(), json!("nsenter_host"));
            vars.insert("ansible_nsenter_pid".into(), json!(host.leader()));
            nodes.insert(host.name().to_string(), Value::Object(vars));
        }
        let path = self.dir.join("inventory.json");
        std::fs::write(&path, serde_json::to_vec(&json!({ "nodes": { "hosts": nodes } }))?)?;
        Ok(path)
    }

    /// An inventory of one host, `composer`: this machine, through the `local` connection.
    fn local_inventory(&self) -> Result<PathBuf> {
        let path = self.dir.join("local.json");
        let composer = json!({ "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3" });
        std::fs::write(&path, serde_json::to_vec(&json!({ "all": { "hosts": { "composer": composer } } }))?)?;
        Ok(path)
    }

    /// Runs `playbook` with `vars` and `flags`; returns its output and, per host, the result
    /// the playbook kept (for `tests/ansible/container.yml`).
    fn playbook(
        &self,
        inventory: &Path,
        playbook: &Path,
        vars: Value,
        flags: &[&str],
    ) -> Result<(Output, BTreeMap<String, Value>)> {
        let results = self.dir.join("results");
        if results.exists() {
            std::fs::remove_dir_all(&results)?;
        }
        std::fs::create_dir_all(&results)?;
        let mut vars = vars;
        vars["results"] = json!(results);
        let out = self
            .command("ansible-playbook")
            .arg("-i")
            .arg(inventory)
            .arg("-e")
            .arg(vars.to_string())
            .args(flags)
            .arg(playbook)
            .output()?;
        let mut kept = BTreeMap::new();
        for entry in std::fs::read_dir(&results)? {
            let path = entry?.path();
            let host = path.file_stem().context("result file")?.to_string_lossy().into_owned();
            kept.insert(host, serde_json::from_slice(&std::fs::read(&path)?)?);
        }
        Ok((out, kept))
    }
}

/// The PLAY RECAP's counters of each host (`ok`, `changed`, `failed`, …).
fn recap(out: &Output) -> BTreeMap<String, BTreeMap<String, u32>> {
    let text = String::from_utf8_lossy(&out.stdout);
    let Some((_, recap)) = text.split_once("PLAY RECAP") else { return BTreeMap::new() };
    recap
        .lines()
        .filter_map(|line| {
            let (host, counters) = line.split_once(" : ")?;
            let counters = counters
                .split_whitespace()
                .filter_map(|c| c.split_once('=').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
                .collect();
            Some((host.trim().to_string(), counters))
        })
        .collect()
}

/// Asserts that the playbook succeeded and that each host's recap counts `changed` changes.
fn assert_recap(out: &Output, hosts: &[TestHost], changed: u32) {
    assert!(
        out.status.success(),
        "ansible-playbook failed: {}\n{}",
        describe_output(out),
        journals(hosts, &["hello.service"])
    );
    let recap = recap(out);
    for host in hosts {
        let counters = recap.get(host.name()).unwrap_or_else(|| panic!("{} not in the recap: {recap:?}", host.name()));
        assert_eq!(
            (counters.get("changed"), counters.get("failed"), counters.get("unreachable")),
            (Some(&changed), Some(&0), Some(&0)),
            "{}: {}",
            host.name(),
            describe_output(out)
        );
    }
}

/// The journals of `units` on every host, for a failure's message.
fn journals(hosts: &[TestHost], units: &[&str]) -> String {
    let mut text = String::new();
    for host in hosts {
        for unit in units {
            text.push_str(&format!("--- {} {unit}:\n{}\n", host.name(), host.journal(unit)));
        }
    }
    text
}

/// One three-host test at a time: six booted hosts running etcd and containerd, beside the
/// other tests' hosts, are more than a 2-core machine keeps within the tests' waits.
static THREE_HOSTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn three_hosts() -> Result<(std::sync::MutexGuard<'static, ()>, [TestHost; 3])> {
    let guard = THREE_HOSTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok((guard, [TestHost::boot()?, TestHost::boot()?, TestHost::boot()?]))
}

/// How many times systemd started `unit` on `host`, from its journal.
fn starts(host: &TestHost, unit: &str) -> usize {
    let out = host.exec_ok(&["journalctl", "--no-pager", "-o", "cat", "-u", unit]).unwrap();
    out.lines().filter(|line| line.starts_with(&format!("Started {unit}"))).count()
}

fn status(host: &TestHost, name: &str) -> Value {
    let out = host.run_sysctr(&["status", "--json", name]).unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_collection_drives_three_hosts_idempotently_with_check_and_diff() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let controller = Controller::new(&setup.work)?;
    for module in ["container", "apply", "image", "login"] {
        let doc = controller.command("ansible-doc").arg(format!("sysctr.sysctr.{module}")).output()?;
        let text = String::from_utf8_lossy(&doc.stdout);
        assert!(
            doc.status.success() && text.contains("EXAMPLES") && text.contains("RETURN VALUES"),
            "ansible-doc {module}: {}",
            describe_output(&doc)
        );
    }

    let (_three_hosts, hosts) = three_hosts()?;
    for host in &hosts {
        install_shipped_units(host, &["sysctr-apply.service", "sysctr-apply.path"])?;
    }
    let inventory = controller.inventory(&hosts.iter().map(|h| (h, json!({}))).collect::<Vec<_>>())?;
    let playbook = repo().join("tests/ansible/container.yml");
    let run = |vars: Value, flags: &[&str]| controller.playbook(&inventory, &playbook, vars, flags).unwrap();
    let with = |receiver: &str| json!({ "image": image, "container_values": { "RECEIVER": receiver } });

    // Installed with values on all three.
    let (out, results) = run(with("A"), &[]);
    assert_recap(&out, &hosts, 1);
    for host in &hosts {
        let result = &results[host.name()];
        assert_eq!(result["container"]["current"]["values"]["RECEIVER"], "A", "{result}");
        wait_active(host, "hello.service");
        greeting(host, "A");
    }
    let invocation = |host: &TestHost| unit_property(host, "hello.service", "InvocationID");
    let before: Vec<(String, usize)> = hosts.iter().map(|h| (invocation(h), starts(h, "hello.service"))).collect();

    // The same again: nothing changes, nothing restarts.
    let (out, results) = run(with("A"), &[]);
    assert_recap(&out, &hosts, 0);
    for (host, before) in hosts.iter().zip(&before) {
        assert_eq!(results[host.name()]["actions"], json!([]), "{}", results[host.name()]);
        assert_eq!(&(invocation(host), starts(host, "hello.service")), before, "{} restarted", host.name());
    }

    // Check and diff of a change of values: predicted, shown, not made.
    let (out, results) = run(with("B"), &["--check", "--diff"]);
    assert_recap(&out, &hosts, 1);
    for (host, before) in hosts.iter().zip(&before) {
        let result = &results[host.name()];
        let diff = &result["diff"];
        let (was, will) = (diff["before"].as_str().unwrap(), diff["after"].as_str().unwrap());
        assert!(was.contains("  RECEIVER: A\n") && will.contains("  RECEIVER: B\n"), "{result}");
        assert!(was.contains("unit:\n") && will.contains("ExecStart="), "the unit is not in the diff: {result}");
        assert!(result["actions"][0].as_str().unwrap().starts_with("update hello: values of RECEIVER change"));
        assert_eq!(status(host, "hello")["current"]["values"]["RECEIVER"], "A");
        assert_eq!(&(invocation(host), starts(host, "hello.service")), before, "--check restarted {}", host.name());
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("+  RECEIVER: B"), "{}", describe_output(&out));

    // The change itself, as predicted: one restart per host, then nothing again.
    let checked = results;
    let (out, results) = run(with("B"), &[]);
    assert_recap(&out, &hosts, 1);
    for (host, before) in hosts.iter().zip(&before) {
        assert_eq!(results[host.name()]["actions"], checked[host.name()]["actions"], "--check predicted otherwise");
        greeting(host, "B");
        assert_eq!(starts(host, "hello.service"), before.1 + 1, "{}", host.journal("hello.service"));
    }
    let (out, _) = run(with("B"), &[]);
    assert_recap(&out, &hosts, 0);

    // A newer image behind the tag: `latest` sees it in check mode without pulling, then takes it once.
    setup.push(&hello_image().layer(Layer::gzip().file("usr/share/newer", "1", 0o644)), "demo/hello");
    let latest = |may_fail: bool| {
        json!({ "image": image, "state": "latest", "may_fail": may_fail,
        "container_values": { "RECEIVER": "B" } })
    };
    let installed: Vec<Value> =
        hosts.iter().map(|h| status(h, "hello")["current"]["manifest_digest"].clone()).collect();
    let (out, results) = run(latest(false), &["--check", "--diff"]);
    assert_recap(&out, &hosts, 1);
    let mut predicted = Vec::new();
    for (host, installed) in hosts.iter().zip(&installed) {
        let after = results[host.name()]["diff"]["after"].as_str().unwrap().to_string();
        let digest = after.lines().find_map(|l| l.strip_prefix("manifest_digest: ")).unwrap().to_string();
        assert_ne!(json!(digest), *installed, "{after}");
        assert_eq!(status(host, "hello")["current"]["manifest_digest"], *installed, "--check updated");
        let images = host.run_sysctr(&["images", "--json", &image])?;
        assert!(String::from_utf8_lossy(&images.stdout).contains(installed.as_str().unwrap()), "--check pulled");
        predicted.push(digest);
    }
    let checked = results;
    let (out, results) = run(latest(false), &[]);
    assert_recap(&out, &hosts, 1);
    for (host, predicted) in hosts.iter().zip(&predicted) {
        assert_eq!(results[host.name()]["actions"], checked[host.name()]["actions"], "--check predicted otherwise");
        assert_eq!(status(host, "hello")["current"]["manifest_digest"], json!(predicted));
        wait_active(host, "hello.service");
    }
    let (out, _) = run(latest(false), &[]);
    assert_recap(&out, &hosts, 0);

    // A newer image that does not start: the task fails with sysctr's reason; the host is rolled back.
    let breaking = "[Service]\nExecStartPre=/bin/false\nExecStart=$EXEC_START\n[Install]\nWantedBy=multi-user.target\n";
    setup.push(&hello_image().layer(Layer::gzip().file("exports/service.template", breaking, 0o644)), "demo/hello");
    let (out, results) = run(latest(true), &[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    for (host, predicted) in hosts.iter().zip(&predicted) {
        let result = &results[host.name()];
        assert_eq!(result["failed"], true, "{result}");
        let msg = result["msg"].as_str().unwrap();
        assert!(msg.contains("rolled back") && !msg.contains('\n'), "{msg}");
        assert_eq!(status(host, "hello")["current"]["manifest_digest"], json!(predicted));
        wait_active(host, "hello.service");
    }

    // Stopped, then left stopped by `present`, then started again: each once.
    let in_state = |state: &str| json!({ "image": image, "state": state, "container_values": { "RECEIVER": "B" } });
    for (state, changed, active) in
        [("stopped", 1, "inactive"), ("stopped", 0, "inactive"), ("present", 0, "inactive"), ("started", 1, "active")]
    {
        let (out, _) = run(in_state(state), &[]);
        assert_recap(&out, &hosts, changed);
        for host in &hosts {
            assert_eq!(unit_property(host, "hello.service", "ActiveState"), active, "{state} on {}", host.name());
        }
    }

    // Absent: nothing of it is left; a second run has nothing to do.
    let absent = json!({ "image": image, "state": "absent" });
    let (out, results) = run(absent.clone(), &["--diff"]);
    assert_recap(&out, &hosts, 1);
    for host in &hosts {
        assert!(results[host.name()]["diff"]["before"].as_str().unwrap().contains("RECEIVER: B"));
        assert!(!host.root().join("etc/systemd/system/hello.service").exists());
        let left = std::fs::read_dir(host.root().join("var/lib/sysctr/deployments"))?.count();
        assert_eq!(left, 0, "deployments left on {}", host.name());
        assert_eq!(unit_property(host, "hello.service", "LoadState"), "not-found");
    }
    let (out, _) = run(absent, &[]);
    assert_recap(&out, &hosts, 0);
    Ok(())
}

#[test]
fn the_node_role_brings_up_the_chain_on_three_hosts() -> Result<()> {
    let setup = Setup::new();
    prepare_node(&setup.registry, &setup.work)?;
    let controller = Controller::new(&setup.work)?;
    let (_three_hosts, hosts) = three_hosts()?;
    let mut inventory = Vec::new();
    for (n, host) in hosts.iter().enumerate() {
        install_shipped_units(host, &["sysctr-apply.service", "sysctr-apply.path"])?;
        // This machine enables Debian's own etcd and containerd, which the test host masks.
        host.exec_ok(&["systemctl", "unmask", "etcd.service", "containerd.service"])?;
        // The hosts share this machine's network namespace: etcd ports of their own, away from
        // the 2379 of the other tests.
        let port = 12379 + 10_000 * n;
        inventory.push((host, json!({ "etcd_client_port": port, "etcd_peer_port": port + 1 })));
    }
    let inventory = controller.inventory(&inventory)?;
    let playbook = repo().join("examples/ansible/k8s-node.yml");
    let vars = json!({ "registry": setup.registry.addr() });

    // Check mode: every container predicted, nothing installed or pulled.
    let (out, _) = controller.playbook(&inventory, &playbook, vars.clone(), &["--check", "--diff"])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for name in ["flannel", "containerd"] {
        let after = format!("+image: {}/k8s/{name}:latest", setup.registry.addr());
        assert_eq!(said.matches(&after).count(), hosts.len(), "{name}'s install is not in the diff: {said}");
    }
    for host in &hosts {
        assert!(!host.root().join("var/lib/sysctr/deployments/etcd").exists(), "--check installed etcd");
        assert!(!host.root().join("etc/sysctr/node.toml").exists(), "--check wrote the list");
    }

    let (out, _) = controller.playbook(&inventory, &playbook, vars.clone(), &[])?;
    assert!(
        out.status.success(),
        "{}\n{}",
        describe_output(&out),
        journals(&hosts, &["etcd.service", "flannel.service"])
    );
    for host in &hosts {
        for unit in ["etcd.service", "flannel.service", "containerd.service"] {
            assert_eq!(unit_property(host, unit, "ActiveState"), "active", "{unit} on {}", host.name());
        }
        assert!(cri_serving(host), "CRI is not served on {}", host.name());
        assert!(host.root().join("etc/sysctr/node.toml").is_file());
        assert_eq!(unit_property(host, "sysctr-apply.path", "UnitFileState"), "enabled");
    }
    let invocations: Vec<String> =
        hosts.iter().map(|h| unit_property(h, "containerd.service", "InvocationID")).collect();

    // Again: nothing to change, nothing restarted.
    let (out, _) = controller.playbook(&inventory, &playbook, vars, &[])?;
    assert_recap(&out, &hosts, 0);
    for (host, invocation) in hosts.iter().zip(&invocations) {
        assert_eq!(&unit_property(host, "containerd.service", "InvocationID"), invocation);
    }
    Ok(())
}

#[test]
fn the_container_module_composes_an_offline_root_that_boots_with_it() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let controller = Controller::new(&setup.work)?;
    let mut host = TestHost::unbooted()?;
    let root = host.root();
    // sysctr where the package puts it: the units composed into a root call it at its boot.
    std::fs::copy(sysctr_bin(), root.join("usr/bin/sysctr"))?;
    std::fs::create_dir_all(root.join("usr/libexec/sysctr"))?;
    std::fs::copy(sysctr_bin().with_file_name("sysctr-supervise"), root.join("usr/libexec/sysctr/sysctr-supervise"))?;
    let inventory = controller.local_inventory()?;
    let playbook = repo().join("tests/ansible/compose.yml");
    let vars = json!({ "image": image, "root": root, "receiver": "Offline", "sysctr": sysctr_bin() });
    let deployment = root.join("var/lib/sysctr/deployments/hello");
    let unit = root.join("etc/systemd/system/hello.service");

    let (out, results) = controller.playbook(&inventory, &playbook, vars.clone(), &["--check"])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let predicted = &results["composer"];
    assert_eq!(predicted["changed"], true, "{predicted}");
    assert!(predicted["actions"][0].as_str().unwrap().starts_with("install hello"), "{predicted}");
    assert!(!unit.exists() && std::fs::symlink_metadata(&deployment).is_err(), "--check wrote into the root");

    let (out, results) = controller.playbook(&inventory, &playbook, vars.clone(), &[])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    let done = &results["composer"];
    assert_eq!((done["changed"].as_bool(), done["actions"].clone()), (Some(true), predicted["actions"].clone()));
    assert_eq!(done["container"]["current"]["values"]["RECEIVER"], "Offline", "{done}");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/hello.service");
    assert!(unit.is_file() && std::fs::symlink_metadata(wants).is_ok(), "not installed and enabled in the root");
    let (out, results) = controller.playbook(&inventory, &playbook, vars, &[])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(results["composer"]["changed"], false, "{}", results["composer"]);

    // The root's first boot runs it.
    host.start()?;
    wait_active(&host, "hello.service");
    greeting(&host, "Offline");
    Ok(())
}

#[test]
fn the_login_and_image_modules_save_credentials_and_follow_digests() -> Result<()> {
    let registry = Registry::start_with_password("deploy", "s3cret")?;
    let work = tempfile::Builder::new().prefix("sysctr-st.").tempdir_in("/var/tmp")?;
    let push = |image: &Image| -> Result<String> {
        let layout = work.path().join("layout");
        let _ = std::fs::remove_dir_all(&layout);
        image.write_oci_layout(&layout, "latest")?;
        let reference = registry.image_ref("demo/hello:latest");
        push_with_credentials(&layout, "latest", &reference, "deploy:s3cret")?;
        Ok(reference)
    };
    let image = push(&hello_image())?;
    let controller = Controller::new(work.path())?;
    let host = TestHost::boot()?;
    install_shipped_units(&host, &["sysctr-auto-update.service"])?;
    let inventory = controller.inventory(&[(&host, json!({}))])?;
    let playbook = repo().join("tests/ansible/registry.yml");
    let authfile = "/etc/containers/auth.json";
    let run = |vars: Value, flags: &[&str]| -> Value {
        let mut vars = vars;
        vars["registry"] = json!(registry.addr());
        vars["authfile"] = json!(authfile);
        vars["image"] = json!(image);
        let (out, results) = controller.playbook(&inventory, &playbook, vars, flags).unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
        results[host.name()].clone()
    };
    let saved = || host_file(&host, authfile);
    let login =
        |password: &str| json!({ "module": "login", "state": "present", "username": "deploy", "password": password });

    // Credentials: predicted, saved once, then left alone; wrong ones are refused and change nothing.
    let result = run(login("s3cret"), &["--check"]);
    assert_eq!((result["changed"].as_bool(), saved()), (Some(true), None), "{result}");
    let result = run(login("s3cret"), &[]);
    assert_eq!(result["changed"], true, "{result}");
    let file = saved().expect("the auth file");
    assert!(file.contains(&registry.addr()) && !file.contains("s3cret"), "{file}");
    assert_eq!(run(login("s3cret"), &[])["changed"], false);
    let result = run(login("wrong"), &[]);
    let msg = result["msg"].as_str().unwrap_or_default();
    assert!(result["failed"] == true && !msg.is_empty() && !msg.contains('\n'), "{result}");
    assert_eq!(saved().as_deref(), Some(file.as_str()), "refused credentials were saved");

    // The image: check mode pulls nothing; present pulls once; latest follows the tag.
    let image_step = |state: &str| json!({ "module": "image", "state": state });
    let stored = || -> Vec<Value> {
        let out = host.run_sysctr(&["images", "--json"]).unwrap();
        json_items(&out.stdout, "ImageList")
    };
    let result = run(image_step("present"), &["--check"]);
    assert_eq!(result["changed"], true, "{result}");
    assert!(stored().is_empty(), "--check pulled");
    let result = run(image_step("present"), &[]);
    assert_eq!(result["changed"], true, "{result}");
    let first = result["image"]["manifest_digest"].clone();
    assert_eq!(stored()[0]["manifest_digest"], first);
    assert_eq!(run(image_step("present"), &[])["changed"], false);
    assert_eq!(run(image_step("latest"), &[])["changed"], false);

    push(&hello_image().layer(Layer::gzip().file("usr/share/newer", "1", 0o644)))?;
    assert_eq!(run(image_step("present"), &[])["changed"], false, "present follows the tag");
    let result = run(image_step("latest"), &["--check", "--diff"]);
    assert_eq!(result["changed"], true, "{result}");
    let predicted =
        result["diff"]["after"].as_str().unwrap().trim().trim_start_matches("manifest_digest: ").to_string();
    assert_ne!(json!(predicted), first);
    assert_eq!(stored()[0]["manifest_digest"], first, "--check pulled");
    let result = run(image_step("latest"), &[]);
    assert_eq!(
        (result["changed"].as_bool(), result["image"]["manifest_digest"].clone()),
        (Some(true), json!(predicted))
    );
    assert_eq!(run(image_step("latest"), &[])["changed"], false);

    // Removed, then nothing to remove; the credentials likewise.
    assert_eq!(run(image_step("absent"), &[])["changed"], true);
    assert!(stored().is_empty());
    assert_eq!(run(image_step("absent"), &[])["changed"], false);
    let logout = json!({ "module": "login", "state": "absent" });
    assert_eq!(run(logout.clone(), &[])["changed"], true);
    assert!(!saved().unwrap_or_default().contains(&registry.addr()));
    assert_eq!(run(logout, &[])["changed"], false);
    Ok(())
}
