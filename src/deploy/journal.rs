//! The transaction log of a mutating command, kept on disk in `STORAGE/.transaction/`.
//!
//! Every change to the host is recorded (and the record synced) *before* it is made; files about
//! to be replaced or removed are copied into the transaction directory first. Removing the
//! directory is the commit point. If a command dies before it (kill -9, power loss), the next
//! command finds the directory and undoes the recorded steps, newest first, so the host is back
//! in its state from before the interrupted command. Undoing a step that was recorded but never
//! carried out is harmless: every undo restores a recorded previous state.
//!
//! An uninstall is the exception: it is recorded as one roll-forward step, and an interrupted
//! uninstall is finished rather than undone.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::rooted::{EntryKind, Resolve, RootedDir};
use crate::systemd::{ChangeLog, ServiceManager};

const JOURNAL_FILE: &str = "journal.json";
/// Test builds only (cargo feature `crash-hooks`): abort the process right after recording this
/// many steps, to simulate a crash. Release builds never read it.
#[cfg(feature = "crash-hooks")]
const CRASH_AFTER_STEPS_ENV: &str = "SYSCTR_TEST_CRASH_AFTER_STEPS";

/// What was at a path before a command changed it.
#[derive(Debug, Serialize, Deserialize)]
enum Previous {
    Absent,
    /// The content was copied to `backup`, inside the transaction directory.
    File {
        backup: PathBuf,
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Step {
    /// A file or symlink about to be written, replaced or removed.
    Path {
        path: PathBuf,
        previous: Previous,
    },
    CreatedDir(PathBuf),
    RemovedDir(PathBuf),
    CreatedTree(PathBuf),
    Enabled(String),
    /// A unit was disabled through the bus (undone by enabling it again).
    Disabled(String),
    Started(String),
    Stopped(String),
    UnitsChanged,
    /// An uninstall of this container is under way: finish it.
    Uninstalling(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// The command, as `sysctr COMMAND` would be written.
    command: String,
    /// The container the command is about. Absent from the journals of older versions, which
    /// recorded it only as the command's last word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container: Option<String>,
    steps: Vec<Step>,
}

impl Record {
    /// The container this record's command is about.
    fn container(&self) -> Option<String> {
        self.container.clone().or_else(|| container_from_older_command(&self.command))
    }
}

/// The container of a journal written before it recorded one: the last word of its command
/// (`update NAME`, `uninstall NAME`, ...).
fn container_from_older_command(command: &str) -> Option<String> {
    command.split_whitespace().last().map(str::to_string)
}

/// An open transaction. Either [`commit`](Journal::commit) it or [`undo`](Journal::undo) it.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// The host root every recorded path lies under. Paths are read and restored beneath it,
    /// never through the namespace of the machine running sysctr; a recorded path outside it (a
    /// damaged journal) is refused.
    root: PathBuf,
    record: Record,
    #[cfg_attr(not(feature = "crash-hooks"), allow(dead_code))]
    crash_after: Option<usize>,
}

/// What recovery found and did.
#[derive(Debug)]
pub enum Interrupted {
    /// Undo this command's steps.
    Undo(Journal),
    /// Finish uninstalling this container.
    Uninstall { name: String, journal: Journal },
}

impl Journal {
    /// Opens a transaction in `dir`, which must not exist (a leftover is recovered first), for the
    /// command `verb container` (`update web`).
    pub fn begin(dir: &Path, root: &Path, verb: &str, container: &str) -> Result<Journal> {
        std::fs::create_dir(dir).with_context(|| format!("starting a transaction in {}", dir.display()))?;
        #[cfg(feature = "crash-hooks")]
        let crash_after = std::env::var(CRASH_AFTER_STEPS_ENV).ok().and_then(|v| v.parse().ok());
        #[cfg(not(feature = "crash-hooks"))]
        let crash_after = None;
        let journal = Journal {
            dir: dir.to_path_buf(),
            root: root.to_path_buf(),
            record: Record {
                command: format!("{verb} {container}"),
                container: Some(container.to_string()),
                steps: Vec::new(),
            },
            crash_after,
        };
        journal.persist()?;
        Ok(journal)
    }

    /// Finds an interrupted transaction in `dir`, if any.
    pub fn interrupted(dir: &Path, root: &Path) -> Result<Option<Interrupted>> {
        let file = dir.join(JOURNAL_FILE);
        if !dir.exists() {
            return Ok(None);
        }
        // A transaction that died before its first record has nothing to undo.
        let record: Record = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let uninstalling = record.steps.iter().find_map(|s| match s {
            Step::Uninstalling(name) => Some(name.clone()),
            _ => None,
        });
        let journal = Journal { dir: dir.to_path_buf(), root: root.to_path_buf(), record, crash_after: None };
        Ok(Some(match uninstalling {
            Some(name) => Interrupted::Uninstall { name, journal },
            None => Interrupted::Undo(journal),
        }))
    }

    /// The command of the transaction in `dir` and the container it is about, if its journal can
    /// be read.
    pub fn command_in(dir: &Path) -> Option<(String, Option<String>)> {
        let bytes = std::fs::read(dir.join(JOURNAL_FILE)).ok()?;
        let record = serde_json::from_slice::<Record>(&bytes).ok().filter(|r| !r.command.is_empty())?;
        let container = record.container();
        Some((record.command, container))
    }

    pub fn command(&self) -> &str {
        &self.record.command
    }

    /// Records what is at `path` now (nothing, a file or a symlink), to restore it on undo.
    /// `path` is relative to the root, or absolute beneath it.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let root = self.root_dir()?;
        let relative = beneath(&self.root, path)?;
        let previous = match root.kind(relative)? {
            None => Previous::Absent,
            Some(EntryKind::Symlink) => Previous::Symlink { target: root.read_link(relative)? },
            Some(EntryKind::File) => {
                let backup = self.dir.join(format!("backup.{}", self.record.steps.len()));
                let content = root.read_file(relative, MAX_SAVED_FILE)?;
                let mode = root.mode(relative)?;
                std::fs::write(&backup, content).with_context(|| format!("saving a copy of {}", path.display()))?;
                sync_file(&backup)?;
                Previous::File { backup, mode }
            }
            Some(_) => bail!("{} is neither a file nor a symlink", path.display()),
        };
        self.record(Step::Path { path: path.to_path_buf(), previous })
    }

    pub fn created_dir(&mut self, path: &Path) -> Result<()> {
        self.record(Step::CreatedDir(path.to_path_buf()))
    }

    pub fn removed_dir(&mut self, path: &Path) -> Result<()> {
        self.record(Step::RemovedDir(path.to_path_buf()))
    }

    pub fn created_tree(&mut self, path: &Path) -> Result<()> {
        self.record(Step::CreatedTree(path.to_path_buf()))
    }

    /// A unit file is about to change: systemd must reload after an undo.
    pub fn units_changed(&mut self) -> Result<()> {
        self.record(Step::UnitsChanged)
    }

    pub fn enabled(&mut self, unit: &str) -> Result<()> {
        self.record(Step::Enabled(unit.to_string()))
    }

    pub fn started(&mut self, unit: &str) -> Result<()> {
        self.record(Step::Started(unit.to_string()))
    }

    pub fn stopped(&mut self, unit: &str) -> Result<()> {
        self.record(Step::Stopped(unit.to_string()))
    }

    pub fn uninstalling(&mut self, name: &str) -> Result<()> {
        self.record(Step::Uninstalling(name.to_string()))
    }

    fn record(&mut self, step: Step) -> Result<()> {
        self.record.steps.push(step);
        self.persist()?;
        #[cfg(feature = "crash-hooks")]
        if self.crash_after == Some(self.record.steps.len()) {
            eprintln!("{CRASH_AFTER_STEPS_ENV}: aborting after step {}", self.record.steps.len());
            std::process::abort();
        }
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        let file = self.dir.join(JOURNAL_FILE);
        let temp = self.dir.join(format!("{JOURNAL_FILE}.new"));
        let bytes = serde_json::to_vec(&self.record).context("serializing the transaction log")?;
        std::fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
        sync_file(&temp)?;
        std::fs::rename(&temp, &file).with_context(|| format!("writing {}", file.display()))?;
        sync_file(&self.dir)
    }

    /// The commit point: the command's changes stay.
    pub fn commit(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("closing the transaction {}", self.dir.display()))?;
        // The removal is the commit point: it must reach the disk before success is reported.
        match self.dir.parent() {
            Some(parent) => sync_file(parent),
            None => Ok(()),
        }
    }

    /// Undoes every recorded step, newest first, then closes the transaction. Carries on past
    /// failures and returns them, so one stuck step does not leave the rest behind. systemd
    /// reloads before a unit that was stopped is started again, so it starts from the restored
    /// unit file.
    pub async fn undo(self, systemd: &impl ServiceManager) -> Vec<String> {
        let mut problems = Vec::new();
        let mut reload_pending = false;
        for step in self.record.steps.iter().rev() {
            let outcome = match step {
                Step::Path { path, previous } => self.restore(path, previous).map_err(|e| format!("{e:#}")),
                Step::CreatedDir(path) => self.beneath_root(path, |root, rel| match root.kind(rel)? {
                    Some(_) => root.remove_dir(rel),
                    None => Ok(()),
                }),
                Step::RemovedDir(path) => self.beneath_root(path, |root, rel| match root.kind(rel)? {
                    Some(_) => Ok(()),
                    None => root.create_dir(rel, 0o755),
                }),
                Step::CreatedTree(path) => self.beneath_root(path, |root, rel| root.remove_tree(rel)),
                Step::UnitsChanged => {
                    reload_pending = true;
                    Ok(())
                }
                Step::Uninstalling(_) => Ok(()),
                Step::Enabled(unit) => systemd.disable(unit, None).await.map_err(|e| format!("{e:#}")),
                Step::Disabled(unit) => systemd.enable(unit, &mut Unrecorded).await.map_err(|e| format!("{e:#}")),
                Step::Started(unit) => systemd.stop(unit).await.map_err(|e| format!("{e:#}")),
                Step::Stopped(unit) => {
                    let reloaded = if std::mem::take(&mut reload_pending) { systemd.reload().await } else { Ok(()) };
                    match reloaded {
                        Ok(()) => systemd.start(unit).await.map_err(|e| format!("{e:#}")),
                        Err(e) => Err(format!("{e:#}")),
                    }
                }
            };
            if let Err(e) = outcome {
                problems.push(format!("undoing {}: {e}", describe(step)));
            }
        }
        if reload_pending {
            if let Err(e) = systemd.reload().await {
                problems.push(format!("{e:#}"));
            }
        }
        if problems.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                problems.push(format!("closing the transaction {}: {e}", self.dir.display()));
            }
        }
        problems
    }
}

impl ChangeLog for Journal {
    fn saving(&mut self, path: &Path) -> Result<()> {
        self.save(path)
    }

    fn creating_dir(&mut self, path: &Path) -> Result<()> {
        self.created_dir(path)
    }

    fn enabling(&mut self, unit: &str) -> Result<()> {
        self.enabled(unit)
    }

    fn disabling(&mut self, unit: &str) -> Result<()> {
        self.record(Step::Disabled(unit.to_string()))
    }
}

/// For changes that are not undone: made while undoing, or by an uninstall, which goes forward.
pub(in crate::deploy) struct Unrecorded;

impl ChangeLog for Unrecorded {
    fn saving(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }

    fn creating_dir(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }

    fn enabling(&mut self, _: &str) -> Result<()> {
        Ok(())
    }

    fn disabling(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
}

/// The largest file a transaction saves a copy of (host files are bounded to 64 MiB).
const MAX_SAVED_FILE: u64 = 64 * 1024 * 1024;

impl Journal {
    fn root_dir(&self) -> Result<RootedDir> {
        RootedDir::open(&self.root, Resolve::InRoot)
    }

    /// Runs `undo` on `path` beneath the root; problems as text.
    fn beneath_root(&self, path: &Path, undo: impl FnOnce(&RootedDir, &Path) -> Result<()>) -> Result<(), String> {
        let run = || -> Result<()> { undo(&self.root_dir()?, beneath(&self.root, path)?) };
        run().map_err(|e| format!("{e:#}"))
    }

    fn restore(&self, path: &Path, previous: &Previous) -> Result<()> {
        let root = self.root_dir()?;
        let relative = beneath(&self.root, path)?;
        // An undo run again after a partial one: the tree this path was in is gone already.
        if relative
            .parent()
            .is_some_and(|parent| !parent.as_os_str().is_empty() && root.kind(parent).ok().flatten().is_none())
        {
            return Ok(());
        }
        match root.kind(relative)? {
            Some(EntryKind::Dir) => root.remove_tree(relative)?,
            Some(_) => root.remove_file(relative)?,
            None => {}
        }
        // What a write of it cut short by a crash left beside it.
        root.remove_temporaries_of(relative)?;
        match previous {
            Previous::Absent => Ok(()),
            Previous::File { backup, mode } => {
                let content = std::fs::read(backup).with_context(|| format!("reading {}", backup.display()))?;
                root.replace_file(relative, &content, *mode)
            }
            Previous::Symlink { target } => root.replace_symlink(relative, target),
        }
    }
}

/// `path` relative to `root`: a host path is recorded relative to the root already, a path of
/// the storage is absolute and must lie under the root.
fn beneath<'p>(root: &Path, path: &'p Path) -> Result<&'p Path> {
    if path.is_relative() {
        return Ok(path);
    }
    path.strip_prefix(root).map_err(|_| {
        anyhow::anyhow!("{} is outside {}: the transaction log is damaged", path.display(), root.display())
    })
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", path.display()))
}

fn describe(step: &Step) -> String {
    match step {
        Step::Path { path, .. } | Step::CreatedDir(path) | Step::RemovedDir(path) | Step::CreatedTree(path) => {
            path.display().to_string()
        }
        Step::Enabled(unit) => format!("enabling {unit}"),
        Step::Disabled(unit) => format!("disabling {unit}"),
        Step::Started(unit) => format!("starting {unit}"),
        Step::Stopped(unit) => format!("stopping {unit}"),
        Step::UnitsChanged => "unit changes".to_string(),
        Step::Uninstalling(name) => format!("uninstalling {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn undo_restores_files_symlinks_and_directories_even_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unit");
        let link = dir.path().join("link");
        let new = dir.path().join("new");
        let sub = dir.path().join("sub");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("slot.0", &link).unwrap();

        let transaction = dir.path().join(".transaction");
        let mut journal = Journal::begin(&transaction, dir.path(), "test", "svc").unwrap();
        journal.save(&file).unwrap();
        std::fs::write(&file, "new").unwrap();
        journal.save(&link).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("slot.1", &link).unwrap();
        journal.created_dir(&sub).unwrap();
        std::fs::create_dir(&sub).unwrap();
        journal.save(&new).unwrap();
        std::fs::write(&new, "x").unwrap();
        // A write of the unit cut short between its temporary and the rename.
        let temporary = dir.path().join(".unit.0123456789abcdef0123456789abcdef.tmp");
        std::fs::write(&temporary, "half").unwrap();
        drop(journal); // as if the process had died here

        let Some(Interrupted::Undo(found)) = Journal::interrupted(&transaction, dir.path()).unwrap() else {
            panic!("the interrupted transaction was not found");
        };
        assert_eq!(found.command(), "test svc");
        assert!(found.undo(&crate::systemd::fake::Fake::new()).await.is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("slot.0"));
        assert!(!sub.exists() && !new.exists() && !temporary.exists());
        assert!(!transaction.exists());
        assert!(Journal::interrupted(&transaction, dir.path()).unwrap().is_none());
    }

    /// Undo writes beneath the root, as the root sees its own symlinks, and refuses a recorded
    /// path outside it.
    #[tokio::test]
    async fn undo_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(outside.join("run")).unwrap();
        // The target's own absolute symlink: /var/run -> /run, meaning the target's /run.
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::fs::write(root.join("run/state"), "target's").unwrap();

        let transaction = root.join(".transaction");
        let mut journal = Journal::begin(&transaction, &root, "test", "svc").unwrap();
        journal.save(&root.join("var/run/state")).unwrap();
        journal.save(&outside.join("victim")).expect_err("a path outside the root");
        std::fs::write(root.join("run/state"), "changed").unwrap();
        assert!(journal.undo(&crate::systemd::fake::Fake::new()).await.is_empty());
        assert_eq!(std::fs::read_to_string(root.join("run/state")).unwrap(), "target's");

        // A damaged journal naming a path outside the root: refused, nothing written there.
        std::fs::create_dir(&transaction).unwrap();
        let record = Record {
            command: "damaged".into(),
            container: None,
            steps: vec![Step::Path {
                path: outside.join("victim"),
                previous: Previous::Symlink { target: "/".into() },
            }],
        };
        std::fs::write(transaction.join(JOURNAL_FILE), serde_json::to_vec(&record).unwrap()).unwrap();
        let Some(Interrupted::Undo(found)) = Journal::interrupted(&transaction, &root).unwrap() else { panic!() };
        let problems = found.undo(&crate::systemd::fake::Fake::new()).await;
        assert!(problems.len() == 1 && problems[0].contains("the transaction log is damaged"), "{problems:?}");
        assert!(std::fs::symlink_metadata(outside.join("victim")).is_err());
    }

    #[test]
    fn a_second_transaction_cannot_start_over_an_interrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        let transaction = dir.path().join(".transaction");
        let journal = Journal::begin(&transaction, dir.path(), "first", "svc").unwrap();
        assert!(Journal::begin(&transaction, dir.path(), "second", "svc").is_err());
        journal.commit().unwrap();
        Journal::begin(&transaction, dir.path(), "third", "svc").unwrap();
    }

    #[test]
    fn the_journal_records_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let transaction = dir.path().join(".transaction");
        let journal = Journal::begin(&transaction, dir.path(), "update", "web").unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(transaction.join(JOURNAL_FILE)).unwrap()).unwrap();
        assert_eq!((&written["command"], &written["container"]), (&"update web".into(), &"web".into()));
        assert_eq!(Journal::command_in(&transaction), Some(("update web".to_string(), Some("web".to_string()))));
        journal.commit().unwrap();
    }

    #[test]
    fn an_older_journal_without_a_container_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let transaction = dir.path().join(".transaction");
        std::fs::create_dir(&transaction).unwrap();
        std::fs::write(transaction.join(JOURNAL_FILE), r#"{"command":"uninstall web","steps":[]}"#).unwrap();
        assert_eq!(Journal::command_in(&transaction), Some(("uninstall web".to_string(), Some("web".to_string()))));
        assert!(matches!(Journal::interrupted(&transaction, dir.path()).unwrap(), Some(Interrupted::Undo(_))));
    }
}
