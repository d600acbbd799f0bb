//! Names sysctr does not own: vendor units, an administrator's tmpfiles.d file and drop-ins, and
//! containers whose names would share a deployment directory.

use super::*;

const VENDOR_UNIT: &str = "[Unit]\nDescription=a unit from the system's packages\n\
    [Service]\nExecStart=/bin/sleep 1000\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn vendor_units_admin_files_and_colliding_names_are_left_alone() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;

    // A unit of the system's packages is not shadowed unless asked, and is given back enabled.
    std::fs::write(host.root().join("usr/lib/systemd/system/vend.service"), VENDOR_UNIT)?;
    host.exec_ok(&["systemctl", "daemon-reload"])?;
    host.exec_ok(&["systemctl", "enable", "vend.service"])?;
    let err = sysctr_err(&host, &["install", "--name", "vend", &image]);
    assert!(err.contains("--replace-vendor-unit") && err.contains("/usr/lib/systemd/system/vend.service"), "{err}");
    sysctr_ok(&host, &["install", "--name", "vend", "--replace-vendor-unit", &image]);
    assert!(unit_property(&host, "vend.service", "FragmentPath").starts_with("/etc/systemd/system/"));
    sysctr_ok(&host, &["uninstall", "vend"]);
    // (Debian's /lib is /usr/lib.)
    let fragment = unit_property(&host, "vend.service", "FragmentPath");
    assert!(fragment.ends_with("lib/systemd/system/vend.service"), "{fragment}");
    assert_eq!(unit_property(&host, "vend.service", "UnitFileState"), "enabled");
    assert!(host.root().join("usr/lib/systemd/system/vend.service").exists());

    // An administrator's tmpfiles.d file of the same name: an image that needs the name is
    // refused; one that does not leaves it alone; uninstall keeps it.
    let admin_tmpfiles = host.root().join("etc/tmpfiles.d/hello.conf");
    std::fs::write(&admin_tmpfiles, "d /run/admin-hello 0755 - - -\n")?;
    let with_tmpfiles = setup.push(
        &busybox_service_image(&[("tmpfiles.template", "d /run/$NAME 0755 - - -\n")]).cmd(&["/bin/sleep", "1000"]),
        "demo/with-tmpfiles",
    );
    let before = snapshot(&host);
    let err = sysctr_err(&host, &["install", "--name", "hello", &with_tmpfiles]);
    assert!(err.contains("/etc/tmpfiles.d/hello.conf exists and was not written by sysctr"), "{err}");
    assert_same(&before, &snapshot(&host), "after the refused install");
    let without = setup.push(&busybox_service_image(&[]).cmd(&["/bin/sleep", "1000"]), "demo/without-tmpfiles");
    let out = host.run_sysctr(&["install", "--name", "hello", &without])?;
    assert!(out.status.success(), "{}", describe_output(&out));

    // An administrator's drop-in survives update and uninstall.
    let dropin_dir = host.root().join("etc/systemd/system/hello.service.d");
    std::fs::write(dropin_dir.join("50-admin.conf"), "[Service]\nEnvironment=ADMIN=1\n")?;
    sysctr_ok(&host, &["update", "--set", "X=1", "hello"]);
    assert!(dropin_dir.join("50-admin.conf").exists(), "update removed the admin's drop-in");
    let out = host.run_sysctr(&["uninstall", "hello"])?;
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(dropin_dir.join("50-admin.conf").exists(), "uninstall removed the admin's drop-in");
    assert!(!dropin_dir.join("sysctr.conf").exists());
    assert_eq!(std::fs::read_to_string(&admin_tmpfiles)?, "d /run/admin-hello 0755 - - -\n");
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("hello.service.d") && notes.contains("hello.conf"), "{notes}");
    std::fs::remove_dir_all(&dropin_dir)?;
    std::fs::remove_file(&admin_tmpfiles)?;

    // `a` and `a.1` would share deployments/a.1: refused in either order.
    sysctr_ok(&host, &["install", "--name", "a", &without]);
    let err = sysctr_err(&host, &["install", "--name", "a.1", &without]);
    assert!(err.contains("slot 1 of the installed container 'a'"), "{err}");
    sysctr_ok(&host, &["update", "--set", "X=1", "a"]);
    assert_eq!(active_slot(&host, "a"), "a.1");
    sysctr_ok(&host, &["uninstall", "a"]);
    sysctr_ok(&host, &["install", "--name", "b.0", &without]);
    let err = sysctr_err(&host, &["install", "--name", "b", &without]);
    assert!(err.contains("installed container 'b.0'"), "{err}");
    sysctr_ok(&host, &["uninstall", "b.0"]);
    Ok(())
}
