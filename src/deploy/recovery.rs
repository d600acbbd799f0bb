//! Taking the storage lock, and dealing first with a command that was interrupted: its
//! transaction is undone, or, for an uninstall, finished (see `journal`).

use std::fs::File;

use anyhow::{bail, Result};
use nix::fcntl::Flock;

use super::journal::{Interrupted, Journal};
use super::layout::Layout;
use super::uninstall::remove_container;
use crate::systemd::Systemd;

/// Takes the lock every mutating command holds, then recovers. Returns notes for the user.
pub(super) async fn lock_and_recover(layout: &Layout) -> Result<(Flock<File>, Vec<String>)> {
    let lock = layout.lock()?;
    let notes = recover_locked(layout).await?;
    Ok((lock, notes))
}

/// For commands that only read: recovers if a transaction was interrupted, so they never show
/// a half-done state.
pub async fn recover(layout: &Layout) -> Result<Vec<String>> {
    if !layout.transaction_dir().exists() {
        return Ok(Vec::new());
    }
    let (_lock, notes) = lock_and_recover(layout).await?;
    Ok(notes)
}

async fn recover_locked(layout: &Layout) -> Result<Vec<String>> {
    match Journal::interrupted(&layout.transaction_dir())? {
        None => Ok(Vec::new()),
        Some(Interrupted::Undo(journal)) => {
            let command = journal.command().to_string();
            // Without systemd (an offline root) only files are restored: no unit runs there.
            let systemd = if layout.is_offline() { None } else { Systemd::connect().await.ok() };
            let problems = journal.undo(systemd.as_ref()).await;
            if !problems.is_empty() {
                bail!("undoing the interrupted `sysctr {command}` failed: {}", problems.join("; "));
            }
            Ok(vec![format!("undid the interrupted `sysctr {command}`")])
        }
        Some(Interrupted::Uninstall { name, journal }) => {
            let mut notes = remove_container(layout, &name).await?;
            journal.commit()?;
            notes.push(format!("finished the interrupted `sysctr uninstall {name}`"));
            Ok(notes)
        }
    }
}
