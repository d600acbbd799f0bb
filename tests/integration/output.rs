//! What a pull says: progress bars on a terminal (a pseudo-terminal made by `script`), none when
//! standard error is a pipe or with `-q`; the log with `-v` and `-vv`.

use std::process::{Command, Output};

use super::common::*;
use super::{scratch, stderr};

/// `sysctr ARGS` under a pseudo-terminal: what it wrote there, standard output and error mixed.
fn on_a_terminal(storage: &std::path::Path, args: &[&str]) -> Output {
    let command = std::iter::once(sysctr_bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>();
    Command::new("script")
        .args(["--quiet", "--return", "--command", &command.join(" "), "/dev/null"])
        .env("SYSCTR_STORAGE", storage)
        .env("RUST_BACKTRACE", "0")
        .env("TERM", "xterm")
        .output()
        .unwrap()
}

#[test]
fn pulls_show_progress_on_a_terminal_and_log_with_v() {
    let registry = Registry::start().unwrap();
    let work = scratch();
    let layout = work.path().join("layout");
    Image::new()
        .layer(busybox_layer())
        .layer(Layer::gzip().file("etc/hello", "hi\n", 0o644))
        .cmd(&["/bin/true"])
        .write_oci_layout(&layout, "v1")
        .unwrap();
    let image = registry.image_ref("demo/progress:v1");
    push(&layout, "v1", &image).unwrap();

    let out = on_a_terminal(&work.path().join("tty"), &["pull", &image]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(shown.contains("total") && shown.contains("done"), "no progress bars on a terminal: {shown}");
    assert!(shown.contains("pulled "), "{shown}");

    let out = on_a_terminal(&work.path().join("quiet"), &["-q", "pull", &image]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(shown.trim().is_empty(), "-q still said: {shown}");

    // A pipe: the result line, no bars; -v adds sysctr's steps, -vv the registry client's.
    let out = run_sysctr(&work.path().join("pipe"), &["pull", &image]);
    assert!(out.status.success() && !stderr(&out).contains("total"), "{}", describe_output(&out));
    let out = run_sysctr(&work.path().join("verbose"), &["-v", "pull", &image]);
    assert!(stderr(&out).contains("layer imported"), "{}", describe_output(&out));
    let manifest_request = format!("GET http://{}/v2/", image.split('/').next().unwrap_or_default());
    assert!(!stderr(&out).contains(&manifest_request), "{}", describe_output(&out));
    let out = run_sysctr(&work.path().join("more"), &["-vv", "pull", &image]);
    assert!(stderr(&out).contains(&manifest_request), "{}", describe_output(&out));
    assert!(stderr(&out).contains("GET layer sha256:"), "{}", describe_output(&out));
}
