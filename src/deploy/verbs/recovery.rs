//! Taking the storage lock, and dealing first with a command that was interrupted: its
//! transaction is undone, or, for an uninstall, finished (see `journal`).
//!
//! Recovery never locks the user out. A transaction that cannot be recovered (systemd cannot be
//! reached, an undo step fails, the journal cannot be read) is set aside in `STORAGE/.pending/`
//! under the name of its container, with an error that says what it was and that
//! `sysctr recover` (or `sysctr recover --abandon`) deals with it. Commands for other containers
//! go on; commands for that container are refused until then. Read-only commands never recover:
//! they only report what is pending.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;

use crate::deploy::deployment::teardown::remove_container;
use crate::deploy::host::layout::Layout;
use crate::deploy::journal::{Interrupted, Journal};
use crate::systemd::ServiceManager;

const PENDING_DIR: &str = ".pending";

/// A transaction set aside because it could not be recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransaction {
    /// The container it concerns, when its journal could be read.
    pub container: Option<String>,
    /// The command, as `sysctr COMMAND` would be written, when its journal could be read.
    pub command: Option<String>,
    pub dir: PathBuf,
}

impl PendingTransaction {
    pub fn describe(&self) -> String {
        match &self.command {
            Some(command) => format!("`sysctr {command}` ({})", self.dir.display()),
            None => format!("a transaction whose journal cannot be read ({})", self.dir.display()),
        }
    }
}

/// Takes the lock every mutating command holds, then recovers an interrupted command. `container`
/// is the one the command is about: it is refused while that container has a transaction set
/// aside. Returns notes for the user.
pub(in crate::deploy) async fn lock_and_recover(
    layout: &Layout,
    systemd: &impl ServiceManager,
    container: Option<&str>,
) -> Result<(Flock<File>, Vec<String>)> {
    let lock = layout.lock()?;
    let mut notes = Vec::new();
    if layout.transaction_dir().exists() {
        match recover_one(layout, &layout.transaction_dir(), systemd).await {
            Ok(note) => notes.push(note),
            Err(err) => {
                let parked = park(layout)?;
                return Err(err.context(format!(
                    "{} could not be recovered and was set aside; other containers can be managed meanwhile. \
                     Fix the cause and run `sysctr recover`, or `sysctr recover --abandon` to drop it as it is",
                    parked.describe()
                )));
            }
        }
    }
    for pending in pending(layout)? {
        if container.is_some() && pending.container.as_deref() == container {
            bail!(
                "{} is pending for '{}'; run `sysctr recover` first (or `sysctr recover --abandon`)",
                pending.describe(),
                pending.container.as_deref().unwrap_or_default()
            );
        }
        notes.push(format!("{} is pending; see `sysctr recover`", pending.describe()));
    }
    Ok((lock, notes))
}

/// The transactions set aside, and an interrupted one not yet recovered, for read-only commands
/// to report. Nothing is changed.
pub fn pending(layout: &Layout) -> Result<Vec<PendingTransaction>> {
    let mut found = Vec::new();
    if layout.transaction_dir().exists() {
        found.push(describe(&layout.transaction_dir()));
    }
    let dir = layout.state.join(PENDING_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut parked: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    parked.sort();
    found.extend(parked.iter().map(|p| describe(p)));
    Ok(found)
}

/// `sysctr recover`: recovers the interrupted transaction and every one set aside; with
/// `abandon`, drops them without undoing anything. Returns what was done.
pub async fn recover(layout: &Layout, systemd: &impl ServiceManager, abandon: bool) -> Result<Vec<String>> {
    let _lock = layout.lock()?;
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for transaction in pending(layout)? {
        if abandon {
            std::fs::remove_dir_all(&transaction.dir)
                .with_context(|| format!("removing {}", transaction.dir.display()))?;
            done.push(format!("abandoned {}", transaction.describe()));
            continue;
        }
        match recover_one(layout, &transaction.dir, systemd).await {
            Ok(note) => done.push(note),
            Err(err) => failures.push(format!("{}: {err:#}", transaction.describe())),
        }
    }
    let _ = std::fs::remove_dir(layout.state.join(PENDING_DIR));
    if !failures.is_empty() {
        bail!("{}; `sysctr recover --abandon` drops them as they are", failures.join("; "));
    }
    Ok(done)
}

/// Undoes (or, for an uninstall, finishes) the transaction in `dir`; removes it when done.
async fn recover_one(layout: &Layout, dir: &Path, systemd: &impl ServiceManager) -> Result<String> {
    let interrupted = Journal::interrupted(dir, &layout.root)
        .with_context(|| format!("the journal of an interrupted command in {} cannot be read", dir.display()))?;
    match interrupted {
        None => Ok(format!("nothing to recover in {}", dir.display())),
        Some(Interrupted::Undo(journal)) => {
            let command = journal.command().to_string();
            let problems = journal.undo(systemd).await;
            if !problems.is_empty() {
                bail!("undoing the interrupted `sysctr {command}` failed: {}", problems.join("; "));
            }
            Ok(format!("undid the interrupted `sysctr {command}`"))
        }
        Some(Interrupted::Uninstall { name, journal }) => {
            let mut notes = remove_container(layout, &name, systemd).await?;
            journal.commit()?;
            notes.push(format!("finished the interrupted `sysctr uninstall {name}`"));
            Ok(notes.join("; "))
        }
    }
}

/// Moves the interrupted transaction to `.pending/`, named after its container.
fn park(layout: &Layout) -> Result<PendingTransaction> {
    let from = layout.transaction_dir();
    let described = describe(&from);
    let base = layout.state.join(PENDING_DIR);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let name = described.container.clone().unwrap_or_else(|| "unknown".to_string());
    let mut to = base.join(&name);
    let mut n = 1;
    while to.exists() {
        to = base.join(format!("{name}.{n}"));
        n += 1;
    }
    std::fs::rename(&from, &to).with_context(|| format!("setting {} aside", from.display()))?;
    Ok(PendingTransaction { dir: to, ..described })
}

fn describe(dir: &Path) -> PendingTransaction {
    let (command, container) = match Journal::command_in(dir) {
        Some((command, container)) => (Some(command), container),
        None => (None, None),
    };
    PendingTransaction { container, command, dir: dir.to_path_buf() }
}
