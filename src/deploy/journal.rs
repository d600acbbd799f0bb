//! The undo log of a mutating command: every change to the host is recorded *before* it is
//! made, so that a failure at any step can put the host back as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::systemd::Systemd;

/// What was at a path before a command changed it.
#[derive(Debug)]
enum Previous {
    Absent,
    File { bytes: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
}

#[derive(Debug)]
enum Step {
    /// A file or symlink about to be written, replaced or removed.
    Path { path: PathBuf, previous: Previous },
    CreatedDir(PathBuf),
    RemovedDir(PathBuf),
    CreatedTree(PathBuf),
    Enabled(String),
    Started(String),
    Stopped(String),
    UnitsChanged,
}

#[derive(Debug, Default)]
pub struct Journal {
    steps: Vec<Step>,
}

impl Journal {
    /// Records what is at `path` now (nothing, a file or a symlink), to restore it on undo.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let previous = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Previous::Absent,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            Ok(meta) if meta.file_type().is_symlink() => {
                Previous::Symlink { target: std::fs::read_link(path).with_context(|| format!("reading {}", path.display()))? }
            }
            Ok(meta) if meta.is_file() => Previous::File {
                bytes: std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                mode: meta.permissions().mode() & 0o7777,
            },
            Ok(_) => anyhow::bail!("{} is neither a file nor a symlink", path.display()),
        };
        self.steps.push(Step::Path { path: path.to_path_buf(), previous });
        Ok(())
    }

    pub fn created_dir(&mut self, path: &Path) {
        self.steps.push(Step::CreatedDir(path.to_path_buf()));
    }

    pub fn removed_dir(&mut self, path: &Path) {
        self.steps.push(Step::RemovedDir(path.to_path_buf()));
    }

    pub fn created_tree(&mut self, path: &Path) {
        self.steps.push(Step::CreatedTree(path.to_path_buf()));
    }

    /// A unit file was written or removed: systemd must reload after an undo.
    pub fn units_changed(&mut self) {
        self.steps.push(Step::UnitsChanged);
    }

    pub fn enabled(&mut self, unit: &str) {
        self.steps.push(Step::Enabled(unit.to_string()));
    }

    pub fn started(&mut self, unit: &str) {
        self.steps.push(Step::Started(unit.to_string()));
    }

    pub fn stopped(&mut self, unit: &str) {
        self.steps.push(Step::Stopped(unit.to_string()));
    }

    /// Undoes every recorded step, newest first. Carries on past failures and returns them,
    /// so one stuck step does not leave the rest behind. systemd reloads before a unit that was
    /// stopped is started again, so it starts from the restored unit file.
    pub async fn undo(self, systemd: Option<&Systemd>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut reload_pending = false;
        for step in self.steps.into_iter().rev() {
            let outcome = match &step {
                Step::Path { path, previous } => restore(path, previous).map_err(|e| format!("{e:#}")),
                Step::CreatedDir(path) => ignore_missing(std::fs::remove_dir(path)),
                Step::RemovedDir(path) => ignore_existing(std::fs::create_dir(path)),
                Step::CreatedTree(path) => ignore_missing(std::fs::remove_dir_all(path)),
                Step::UnitsChanged => {
                    reload_pending = true;
                    Ok(())
                }
                Step::Enabled(unit) => match systemd {
                    Some(s) => s.disable(&[unit.as_str()]).await.map_err(|e| format!("{e:#}")),
                    None => Ok(()),
                },
                Step::Started(unit) => match systemd {
                    Some(s) => s.stop(unit).await.map_err(|e| format!("{e:#}")),
                    None => Ok(()),
                },
                Step::Stopped(unit) => match systemd {
                    Some(s) => {
                        let reloaded = if std::mem::take(&mut reload_pending) { s.reload().await } else { Ok(()) };
                        match reloaded {
                            Ok(()) => s.start(unit).await.map_err(|e| format!("{e:#}")),
                            Err(e) => Err(format!("{e:#}")),
                        }
                    }
                    None => Ok(()),
                },
            };
            if let Err(e) = outcome {
                problems.push(format!("undoing {}: {e}", describe(&step)));
            }
        }
        if let (true, Some(s)) = (reload_pending, systemd) {
            if let Err(e) = s.reload().await {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }
}

fn restore(path: &Path, previous: &Previous) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path)?,
        Ok(_) => std::fs::remove_file(path)?,
        Err(_) => {}
    }
    match previous {
        Previous::Absent => {}
        Previous::File { bytes, mode } => {
            std::fs::write(path, bytes)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
        }
        Previous::Symlink { target } => std::os::unix::fs::symlink(target, path)?,
    }
    Ok(())
}

fn describe(step: &Step) -> String {
    match step {
        Step::Path { path, .. } | Step::CreatedDir(path) | Step::RemovedDir(path) | Step::CreatedTree(path) => {
            path.display().to_string()
        }
        Step::Enabled(unit) => format!("enabling {unit}"),
        Step::Started(unit) => format!("starting {unit}"),
        Step::Stopped(unit) => format!("stopping {unit}"),
        Step::UnitsChanged => "unit changes".to_string(),
    }
}

fn ignore_missing(result: std::io::Result<()>) -> Result<(), String> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

fn ignore_existing(result: std::io::Result<()>) -> Result<(), String> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.to_string()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn undo_restores_files_symlinks_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unit");
        let link = dir.path().join("link");
        let new = dir.path().join("new");
        let sub = dir.path().join("sub");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("slot.0", &link).unwrap();

        let mut journal = Journal::default();
        journal.save(&file).unwrap();
        std::fs::write(&file, "new").unwrap();
        journal.save(&link).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("slot.1", &link).unwrap();
        journal.created_dir(&sub);
        std::fs::create_dir(&sub).unwrap();
        journal.save(&new).unwrap();
        std::fs::write(&new, "x").unwrap();

        assert!(journal.undo(None).await.is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("slot.0"));
        assert!(!sub.exists() && !new.exists());
    }
}
