//! `sysctr-supervise`: the command of a container's unit when it is ready once started or once
//! healthy (see `sysctr::supervise`). A binary of its own, apart from `sysctr`, because it is
//! on the path of every start: it loads none of the libraries sysctr needs to pull and store
//! images, and starts in about a millisecond where `sysctr` takes twenty.
//!
//! `sysctr-supervise PLAN -- RUNTIME ARGS…`   start the watcher, then become the runtime
//! `sysctr-supervise --watch PLAN PID`        the watcher (started by the first form, PID its own)

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [watch, plan, runc] if watch == "--watch" => match runc.parse() {
            Ok(runc) => sysctr::supervise::watch(&PathBuf::from(plan), runc),
            Err(_) => Err(anyhow::anyhow!("--watch PLAN PID: {runc:?} is not a pid")),
        },
        [plan, separator, command @ ..] if separator == "--" && !command.is_empty() => {
            sysctr::supervise::run(&PathBuf::from(plan), command)
        }
        _ => Err(anyhow::anyhow!(
            "usage: sysctr-supervise PLAN -- RUNTIME ARGS... | sysctr-supervise --watch PLAN PID \
             (run by the units sysctr installs)"
        )),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("sysctr-supervise: {err:#}");
            ExitCode::FAILURE
        }
    }
}
