//! Host files from the image's `exports/hostfs`: planned (and rendered) before the host is touched,
//! copied without ever overwriting a file that was already there, each recorded with its sha256,
//! and removed later only if nobody changed them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::exports::ExportsManifest;
use crate::deploy::host::layout::{InstalledFile, Layout};
use crate::deploy::journal::Journal;
use crate::rooted::EntryKind;
use crate::template::{render_file, FileKind};

/// The largest file an image may install on the host.
const MAX_HOST_FILE: u64 = 64 * 1024 * 1024;
/// A host file larger than this is not read back to compare with its record: it is kept.
const MAX_CHECKED_FILE: u64 = 256 * 1024 * 1024;

/// A host file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Absolute path on the host.
    pub path: String,
    pub content: PlannedContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedContent {
    File {
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: String,
    },
    /// A directory, created when missing (empty ones included) and removed once empty again.
    Dir {
        mode: u32,
    },
}

impl PlannedContent {
    fn checksum(&self) -> String {
        match self {
            PlannedContent::File { bytes, .. } => hex::encode(Sha256::digest(bytes)),
            PlannedContent::Symlink { target } => hex::encode(Sha256::digest(target.as_bytes())),
            PlannedContent::Dir { .. } => String::new(),
        }
    }
}

/// Lists what `hostfs` would install, with renames applied and templates rendered.
pub fn plan(hostfs: &Path, manifest: &ExportsManifest, values: &BTreeMap<String, String>) -> Result<Vec<PlannedFile>> {
    let mut renames = Vec::new();
    for (from, to) in &manifest.rename_files {
        let to = render_file(&format!("manifest.json renameFiles[{from}]"), to, FileKind::LineOriented, values)?;
        // A trailing slash on either side names the same directory.
        renames.push((from.trim_end_matches('/').to_string(), to.trim_end_matches('/').to_string()));
    }
    let mut planned = Vec::new();
    walk(hostfs, hostfs, &mut |source_path, relative| {
        let host_path = rename(&relative, &renames);
        check_host_path(&host_path)?;
        let meta = std::fs::symlink_metadata(source_path)?;
        let content = if meta.is_dir() {
            PlannedContent::Dir { mode: meta.permissions().mode() & 0o7777 }
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(source_path)?;
            PlannedContent::Symlink { target: target.to_string_lossy().into_owned() }
        } else {
            if meta.len() > MAX_HOST_FILE {
                bail!(
                    "hostfs file {relative} is {} bytes, more than the {MAX_HOST_FILE} a host file may have",
                    meta.len()
                );
            }
            let bytes = std::fs::read(source_path).with_context(|| format!("reading {}", source_path.display()))?;
            let is_template = manifest.installed_files_template.iter().any(|t| t == &relative || t == &host_path);
            let bytes = if is_template {
                let text = String::from_utf8(bytes).with_context(|| format!("template {relative} is not UTF-8"))?;
                render_file(&relative, &text, FileKind::Raw, values)?.into_bytes()
            } else {
                bytes
            };
            PlannedContent::File { bytes, mode: meta.permissions().mode() & 0o7777 }
        };
        planned.push(PlannedFile { path: host_path, content });
        Ok(())
    })?;
    planned.sort_by(|a, b| a.path.cmp(&b.path));
    // Two directories may well land on the same path (a renamed one onto an existing one).
    planned.dedup_by(|b, a| {
        a.path == b.path && matches!((&a.content, &b.content), (PlannedContent::Dir { .. }, PlannedContent::Dir { .. }))
    });
    for pair in planned.windows(2) {
        if pair[0].path == pair[1].path {
            bail!("two hostfs files would both be installed as {}", pair[0].path);
        }
    }
    refuse_paths_through_symlinks(&planned)?;
    Ok(planned)
}

fn walk(root: &Path, dir: &Path, visit: &mut dyn FnMut(&Path, String) -> Result<()>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        let relative = format!("/{}", path.strip_prefix(root).context("walking hostfs")?.to_string_lossy());
        if kind.is_dir() {
            visit(&path, relative)?;
            walk(root, &path, visit)?;
        } else if kind.is_file() || kind.is_symlink() {
            visit(&path, relative)?;
        } else {
            bail!("hostfs entry {} is neither a file, a directory nor a symlink", path.display());
        }
    }
    Ok(())
}

fn rename(path: &str, renames: &[(String, String)]) -> String {
    for (from, to) in renames {
        if path == from {
            return to.clone();
        }
        if let Some(rest) = path.strip_prefix(from.as_str()).filter(|r| r.starts_with('/')) {
            return format!("{}{rest}", to.trim_end_matches('/'));
        }
    }
    path.to_string()
}

/// A host file placed below one of the image's own symlinks would be written wherever that
/// symlink points: refuse it, by name.
fn refuse_paths_through_symlinks(planned: &[PlannedFile]) -> Result<()> {
    let symlinks: Vec<&str> = planned
        .iter()
        .filter(|p| matches!(p.content, PlannedContent::Symlink { .. }))
        .map(|p| p.path.as_str())
        .collect();
    for file in planned {
        if let Some(link) =
            symlinks.iter().find(|link| file.path.strip_prefix(**link).is_some_and(|rest| rest.starts_with('/')))
        {
            bail!("hostfs entry {} would be installed through the image's symlink {link}", file.path);
        }
    }
    Ok(())
}

/// A rendered host path must stay an absolute, normal path: a value must not walk it elsewhere.
/// A NUL, which no path can hold, and line breaks are refused too; `renameFiles` can write them
/// as JSON escapes.
fn check_host_path(path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.split('/').any(|c| c == ".." || c == ".")
        && !path.contains("//")
        && !path.ends_with('/')
        && !path.contains(['\0', '\n', '\r']);
    if !ok {
        bail!("host file path {path:?} is not a normal absolute path");
    }
    Ok(())
}

/// What installing host files did.
#[derive(Debug, Default)]
pub struct Installed {
    pub files: Vec<InstalledFile>,
    /// Created directories, deepest first.
    pub created_dirs: Vec<String>,
    /// Files that already existed on the host and were left alone.
    pub kept_existing: Vec<String>,
}

/// Refuses host files that would take a path sysctr writes itself (`own`: the container's unit,
/// drop-in directory and tmpfiles.d file), or a symlink on the way to one, through which sysctr
/// would later write or remove.
pub fn refuse_over_own_files(planned: &[PlannedFile], own: &[String]) -> Result<()> {
    for file in planned {
        let is_link = matches!(file.content, PlannedContent::Symlink { .. });
        for own in own {
            let under_own = file.path == *own || file.path.starts_with(&format!("{own}/"));
            let on_the_way = is_link && own.starts_with(&format!("{}/", file.path));
            if under_own || on_the_way {
                bail!("the image's host file {} would take {own}, which sysctr writes itself", file.path);
            }
        }
    }
    Ok(())
}

/// Copies planned files onto the host, every path resolved beneath the host's root handle. Every
/// path created is pushed on `journal` first, so a failure anywhere can undo all of it.
pub fn install(layout: &Layout, planned: &[PlannedFile], journal: &mut Journal) -> Result<Installed> {
    let host = layout.host_dir()?;
    let mut done = Installed::default();
    for file in planned {
        let relative = Path::new(file.path.trim_start_matches('/'));
        let is_dir = matches!(file.content, PlannedContent::Dir { .. });
        if host.kind(relative)?.is_some() {
            if !is_dir {
                done.kept_existing.push(file.path.clone());
            }
            continue;
        }
        let parent = relative.parent().unwrap_or(Path::new(""));
        for dir in host.missing_dirs(parent)? {
            journal.created_dir(&dir)?;
            host.create_dir(&dir, 0o755)?;
            done.created_dirs.insert(0, format!("/{}", dir.display()));
        }
        match &file.content {
            PlannedContent::Dir { mode } => {
                journal.created_dir(relative)?;
                host.create_dir(relative, *mode)?;
                done.created_dirs.insert(0, file.path.clone());
                continue;
            }
            PlannedContent::Symlink { target: link } => {
                journal.save(relative)?;
                host.symlink(relative, Path::new(link))
            }
            PlannedContent::File { bytes, mode } => {
                journal.save(relative)?;
                host.create_file(relative, bytes, *mode)
            }
        }
        .with_context(|| format!("installing host file {}", file.path))?;
        done.files.push(InstalledFile { path: file.path.clone(), sha256: file.content.checksum() });
    }
    Ok(done)
}

/// Removes recorded host files that still have the recorded checksum, then the directories the
/// install created if they are empty. Returns a message for every file kept.
pub fn remove(
    layout: &Layout,
    files: &[InstalledFile],
    created_dirs: &[String],
    mut journal: Option<&mut Journal>,
) -> Result<Vec<String>> {
    let host = layout.host_dir()?;
    let mut kept = Vec::new();
    for file in files {
        let relative = Path::new(file.path.trim_start_matches('/'));
        let current = match host.kind(relative)? {
            None => continue,
            Some(EntryKind::Symlink) => {
                hex::encode(Sha256::digest(host.read_link(relative)?.as_os_str().as_encoded_bytes()))
            }
            Some(EntryKind::File) => match host.read_file(relative, MAX_CHECKED_FILE) {
                Ok(bytes) => hex::encode(Sha256::digest(bytes)),
                Err(_) => String::new(),
            },
            Some(_) => String::new(),
        };
        if current == file.sha256 {
            if let Some(journal) = journal.as_deref_mut() {
                journal.save(relative)?;
            }
            host.remove_file(relative)?;
        } else {
            kept.push(format!("kept {}: it was modified after it was installed", file.path));
        }
    }
    for dir in created_dirs {
        // Not empty means someone else put files there since: leave it.
        let relative = Path::new(dir.trim_start_matches('/'));
        if host.is_empty_dir(relative)? {
            if let Some(journal) = journal.as_deref_mut() {
                journal.removed_dir(relative)?;
            }
            host.remove_dir(relative)?;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_apply_to_whole_components() {
        let renames = vec![
            ("/usr/local/bin/etcdctl".to_string(), "/usr/local/bin/etcd1ctl".to_string()),
            ("/etc/etcd".to_string(), "/etc/etcd1".to_string()),
        ];
        assert_eq!(rename("/usr/local/bin/etcdctl", &renames), "/usr/local/bin/etcd1ctl");
        assert_eq!(rename("/etc/etcd/etcd.conf", &renames), "/etc/etcd1/etcd.conf");
        assert_eq!(rename("/etc/etcdfoo", &renames), "/etc/etcdfoo");
    }

    #[test]
    fn host_paths_must_stay_normal() {
        for bad in ["relative", "/", "/etc/../root", "/a//b", "/a/./b", "/etc/"] {
            assert!(check_host_path(bad).is_err(), "{bad}");
        }
        check_host_path("/usr/local/bin/x").unwrap();
    }

    #[test]
    fn renamed_paths_with_a_nul_or_a_line_break_are_refused() {
        let image = tempfile::tempdir().unwrap();
        let hostfs = image.path().join("hostfs");
        std::fs::create_dir_all(hostfs.join("usr/local/bin")).unwrap();
        std::fs::write(hostfs.join("usr/local/bin/democtl"), b"#!/bin/sh\n").unwrap();
        // The JSON escapes give the renamed path a NUL, a line feed, a carriage return.
        for target in [r"/usr/local/bin\u0000x", r"/usr/local/bin/a\nb", r"/usr/local/bin/a\rb"] {
            let manifest =
                ExportsManifest::parse(&format!(r#"{{"renameFiles": {{"/usr/local/bin/democtl": "{target}"}}}}"#))
                    .unwrap();
            let err = plan(&hostfs, &manifest, &BTreeMap::new()).expect_err(target);
            assert!(err.to_string().contains("is not a normal absolute path"), "{target}: {err:#}");
        }
    }

    #[test]
    fn rename_targets_with_a_trailing_slash_name_the_same_path() {
        let image = tempfile::tempdir().unwrap();
        let hostfs = image.path().join("hostfs");
        std::fs::create_dir_all(hostfs.join("etc/demo")).unwrap();
        std::fs::write(hostfs.join("etc/demo/demo.conf"), b"x\n").unwrap();
        let manifest = ExportsManifest::parse(r#"{"renameFiles": {"/etc/demo": "/etc/demo2/"}}"#).unwrap();
        let planned = plan(&hostfs, &manifest, &BTreeMap::new()).unwrap();
        let paths: Vec<_> = planned.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["/etc", "/etc/demo2", "/etc/demo2/demo.conf"]);
        // A file renamed onto a directory of the tree is a clash, whatever the slash.
        let manifest = ExportsManifest::parse(r#"{"renameFiles": {"/etc/demo/demo.conf": "/etc/"}}"#).unwrap();
        let err = plan(&hostfs, &manifest, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("would both be installed as /etc"), "{err:#}");
    }

    #[test]
    fn plan_install_and_remove_round_trip() {
        let image = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let hostfs = image.path().join("hostfs");
        std::fs::create_dir_all(hostfs.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(hostfs.join("etc/demo")).unwrap();
        std::fs::write(hostfs.join("usr/local/bin/democtl"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(hostfs.join("usr/local/bin/democtl"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(hostfs.join("etc/demo/demo.conf"), b"port=$PORT\n").unwrap();
        std::fs::create_dir_all(hostfs.join("var/lib/demo/empty")).unwrap();
        std::fs::set_permissions(hostfs.join("var/lib/demo/empty"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::create_dir_all(host.path().join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(host.path().join("etc")).unwrap();

        let manifest: ExportsManifest = serde_json::from_str(
            r#"{"renameFiles": {"/usr/local/bin/democtl": "/usr/local/bin/${NAME}ctl"},
                "installedFilesTemplate": ["/etc/demo/demo.conf"]}"#,
        )
        .unwrap();
        let values = BTreeMap::from([("NAME".to_string(), "d1".to_string()), ("PORT".to_string(), "81".to_string())]);
        let planned = plan(&hostfs, &manifest, &values).unwrap();
        let paths: Vec<_> = planned.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc",
                "/etc/demo",
                "/etc/demo/demo.conf",
                "/usr",
                "/usr/local",
                "/usr/local/bin",
                "/usr/local/bin/d1ctl",
                "/var",
                "/var/lib",
                "/var/lib/demo",
                "/var/lib/demo/empty"
            ]
        );

        let layout = Layout::new(host.path(), &host.path().join("var/lib/sysctr"));
        let mut journal = Journal::begin(&host.path().join(".t1"), host.path(), "test", "svc").unwrap();
        let installed = install(&layout, &planned, &mut journal).unwrap();
        assert_eq!(std::fs::read_to_string(host.path().join("etc/demo/demo.conf")).unwrap(), "port=81\n");
        let mode = std::fs::metadata(host.path().join("usr/local/bin/d1ctl")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(installed.created_dirs, ["/var/lib/demo/empty", "/var/lib/demo", "/var/lib", "/var", "/etc/demo"]);
        let empty = std::fs::metadata(host.path().join("var/lib/demo/empty")).unwrap();
        assert!(empty.is_dir());
        assert_eq!(empty.permissions().mode() & 0o7777, 0o750);

        // A second install of the same files keeps what is there.
        let again = install(
            &layout,
            &planned,
            &mut Journal::begin(&host.path().join(".t2"), host.path(), "test", "svc").unwrap(),
        )
        .unwrap();
        assert_eq!(again.kept_existing.len(), 2);
        assert!(again.created_dirs.is_empty());
        assert!(again.files.is_empty());

        std::fs::write(host.path().join("etc/demo/demo.conf"), b"edited\n").unwrap();
        let kept = remove(&layout, &installed.files, &installed.created_dirs, None).unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].contains("/etc/demo/demo.conf"));
        assert!(host.path().join("etc/demo/demo.conf").exists());
        assert!(!host.path().join("usr/local/bin/d1ctl").exists());
        assert!(host.path().join("usr/local/bin").exists(), "a directory the install did not create was removed");
        assert!(!host.path().join("var").exists(), "the empty directories the install created are left");
    }
}
