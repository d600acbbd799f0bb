//! The undo log of a mutating command: every change to the host is recorded *before* it is
//! made, so that a failure at any step can put the host back as it was.

use std::path::{Path, PathBuf};

use crate::systemd::Systemd;

#[derive(Debug)]
enum Step {
    File(PathBuf),
    Dir(PathBuf),
    Tree(PathBuf),
    Enabled(String),
    Started(String),
    UnitsChanged,
}

#[derive(Debug, Default)]
pub struct Journal {
    steps: Vec<Step>,
}

impl Journal {
    pub fn created_file(&mut self, path: &Path) {
        self.steps.push(Step::File(path.to_path_buf()));
    }

    pub fn created_dir(&mut self, path: &Path) {
        self.steps.push(Step::Dir(path.to_path_buf()));
    }

    pub fn created_tree(&mut self, path: &Path) {
        self.steps.push(Step::Tree(path.to_path_buf()));
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

    /// Undoes every recorded step, newest first. Carries on past failures and returns them,
    /// so one stuck step does not leave the rest behind.
    pub async fn undo(self, systemd: Option<&Systemd>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut reload = false;
        for step in self.steps.into_iter().rev() {
            let outcome = match &step {
                Step::File(path) => remove(std::fs::remove_file(path)),
                Step::Dir(path) => remove(std::fs::remove_dir(path)),
                Step::Tree(path) => remove(std::fs::remove_dir_all(path)),
                Step::UnitsChanged => {
                    reload = true;
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
            };
            if let Err(e) = outcome {
                problems.push(format!("undoing {step:?}: {e}"));
            }
        }
        if let (true, Some(s)) = (reload, systemd) {
            if let Err(e) = s.reload().await {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }
}

fn remove(result: std::io::Result<()>) -> Result<(), String> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}
