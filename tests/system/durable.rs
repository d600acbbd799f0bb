//! What a command that printed success wrote must survive a power cut: checked on a syscall
//! trace (strace) of a real install and update, file by file. A later change that drops a sync
//! fails here.

use super::*;

/// One traced syscall: its name and its arguments, fds shown with their paths (`strace -y`).
struct Call {
    name: String,
    args: String,
}

fn parse_trace(text: &str) -> Vec<Call> {
    text.lines()
        .filter_map(|line| {
            // "PID name(args) = result", or, when another thread's call came in between,
            // "PID name(args <unfinished ...>" then "PID <... name resumed>) = result".
            let line = line.split_once(' ').map_or(line, |(pid, rest)| {
                if pid.chars().all(|c| c.is_ascii_digit()) {
                    rest.trim_start()
                } else {
                    line
                }
            });
            if line.starts_with("<...") {
                return None;
            }
            let (name, rest) = line.split_once('(')?;
            let args = match rest.split_once(" <unfinished ...>") {
                Some((args, _)) => args,
                None => {
                    // strace aligns results: ")    = 0".
                    let (args, result) = rest.rsplit_once(')')?;
                    let result = result.trim_start().strip_prefix('=')?.trim_start();
                    if result.starts_with('-') {
                        return None;
                    }
                    args
                }
            };
            Some(Call { name: name.trim().to_string(), args: args.trim_end_matches(',').to_string() })
        })
        .collect()
}

/// The path of an fd argument as `strace -y` prints it: `5</etc/systemd/system>`.
fn fd_path(arg: &str) -> Option<&str> {
    let start = arg.find('<')?;
    let end = arg.rfind('>')?;
    (start < end).then(|| &arg[start + 1..end])
}

fn is_sync(call: &Call) -> bool {
    call.name == "fsync" || call.name == "fdatasync"
}

/// `path` was replaced durably: written to a temporary name that was synced (a regular file;
/// a symlink has no content of its own to sync), renamed onto `path`, and its directory synced
/// after the rename.
fn assert_durable_rename(calls: &[Call], path: &str, what: &str) {
    assert_renamed(calls, path, what, true)
}

fn assert_durable_symlink(calls: &[Call], path: &str, what: &str) {
    assert_renamed(calls, path, what, false)
}

fn assert_renamed(calls: &[Call], path: &str, what: &str, is_file: bool) {
    let (dir, name) = path.rsplit_once('/').unwrap();
    // renameat(dirfd, "temp", dirfd, "name") from the rooted writers, or rename("/temp", "/path").
    let temp_of = |call: &Call| -> Option<String> {
        let args: Vec<&str> = call.args.split(", ").collect();
        match call.name.as_str() {
            "rename" if args.len() == 2 && args[1].trim_matches('"') == path => {
                Some(args[0].trim_matches('"').to_string())
            }
            "renameat" | "renameat2"
                if args.len() >= 4 && fd_path(args[2]) == Some(dir) && args[3].trim_matches('"') == name =>
            {
                Some(format!("{dir}/{}", args[1].trim_matches('"')))
            }
            _ => None,
        }
    };
    let rename = calls.iter().rposition(|c| temp_of(c).is_some());
    let Some(rename) = rename else { panic!("{what}: no rename onto {path} in the trace") };
    let temp = temp_of(&calls[rename]).unwrap_or_default();
    let synced_before = calls[..rename].iter().any(|c| is_sync(c) && fd_path(&c.args) == Some(temp.as_str()));
    assert!(synced_before || !is_file, "{what}: {temp} was not synced before it was renamed onto {path}");
    let dir_synced_after = calls[rename + 1..].iter().any(|c| is_sync(c) && fd_path(&c.args) == Some(dir));
    let around: Vec<String> = calls[rename.saturating_sub(3)..(rename + 4).min(calls.len())]
        .iter()
        .map(|c| format!("{}({})", c.name, c.args))
        .collect();
    assert!(dir_synced_after, "{what}: {dir} was not synced after {path} was renamed into it:\n{}", around.join("\n"));
}

/// A file created in place (never replaced: host files) was synced, then its directory.
fn assert_durable_create(calls: &[Call], path: &str, what: &str) {
    let dir = path.rsplit_once('/').unwrap().0;
    let synced = calls.iter().rposition(|c| is_sync(c) && fd_path(&c.args) == Some(path));
    let Some(synced) = synced else { panic!("{what}: {path} was never synced") };
    assert!(
        calls[synced + 1..].iter().any(|c| is_sync(c) && fd_path(&c.args) == Some(dir)),
        "{what}: {dir} not synced after {path}"
    );
}

fn traced(host: &TestHost, args: &[&str]) -> Vec<Call> {
    let bin = sysctr_bin();
    let mut argv = vec![
        "strace",
        "-f",
        "-y",
        "-qq",
        "-e",
        "trace=fsync,fdatasync,rename,renameat,renameat2,unlinkat,rmdir",
        "-o",
        "/var/tmp/trace",
    ];
    argv.push(bin.to_str().unwrap());
    argv.extend(args);
    let out = host.exec(&argv).unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    parse_trace(&std::fs::read_to_string(host.root().join("var/tmp/trace")).unwrap())
}

#[test]
fn every_file_an_install_or_update_writes_is_synced_before_success() -> Result<()> {
    let setup = Setup::new();
    let image = setup.push(&hello_image(), "demo/hello");
    let host = TestHost::boot()?;
    sysctr_ok(&host, &["pull", &image]);

    for (args, slot) in [
        (vec!["install", "--set", "RECEIVER=Pluto", image.as_str()], 0),
        (vec!["update", "--set", "RECEIVER=Charon", "hello"], 1),
    ] {
        let calls = traced(&host, &args);
        let what = args[0];
        assert_durable_rename(&calls, "/etc/systemd/system/hello.service", what);
        assert_durable_rename(&calls, "/etc/systemd/system/hello.service.d/sysctr.conf", what);
        assert_durable_rename(&calls, "/etc/tmpfiles.d/hello.conf", what);
        assert_durable_rename(&calls, &format!("/var/lib/sysctr/deployments/hello.{slot}/info"), what);
        assert_durable_symlink(&calls, "/var/lib/sysctr/deployments/hello", what);
        assert_durable_create(&calls, "/usr/local/bin/hello-greeting", what);
        // The commit point: the transaction directory's removal reached the disk.
        let removed =
            calls.iter().rposition(|c| c.name == "unlinkat" && c.args.contains(".transaction\", AT_REMOVEDIR"));
        let removed = removed.unwrap_or_else(|| panic!("{what}: the transaction was not removed"));
        assert!(
            calls[removed + 1..].iter().any(|c| is_sync(c) && fd_path(&c.args) == Some("/var/lib/sysctr")),
            "{what}: the commit (removing .transaction) was not synced"
        );
        // The journal itself, before any change: written, synced, renamed, directory synced.
        assert_durable_rename(&calls, "/var/lib/sysctr/.transaction/journal.json", what);
    }
    Ok(())
}
