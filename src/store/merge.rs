//! Flattening an image's layers into one tree, applying the OCI layer rules on OSTree trees
//! (checksums only: no file content is read or copied).
//!
//! For each layer, lowest first, and in each of its directories:
//! 1. an opaque whiteout (`.wh..wh..opq`) empties the directory of everything from lower layers;
//! 2. `.wh.NAME` removes NAME from lower layers;
//! 3. every other entry replaces whatever lower layers had under that name, whatever its type;
//!    a directory is merged into a lower directory. It takes the upper layer's metadata (mode,
//!    owner, xattrs) if that layer has an entry for it; a directory the layer only implies keeps
//!    what the layers below gave it, as with `umoci unpack`, and one new to the image gets root
//!    0755 (see `import`). Layers imported before implied directories were recorded take the
//!    upper metadata in every case.
//!
//! Whiteouts apply only to lower layers, so a layer's own `NAME` and `.wh.NAME` leave NAME.
//! Directories are visited with an explicit stack, so a deep tree cannot overflow the thread's.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};

use super::FifoRecord;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// FIFOs of the flattened image, by path.
pub type Fifos = BTreeMap<String, FifoRecord>;

/// One layer to merge.
pub struct Upper<'a> {
    pub tree: &'a ostree::MutableTree,
    pub fifos: &'a [FifoRecord],
    /// Directories the layer has no entry for (relative paths, "" for the root).
    pub implied_dirs: &'a HashSet<String>,
}

/// Merges one layer into the tree built so far (`merged`), updating `fifos` with what the layer
/// hides and adds.
pub fn merge_layer(merged: &ostree::MutableTree, upper: &Upper, fifos: &mut Fifos) -> Result<()> {
    // (directory of the merged tree, the layer's directory, path prefix, whether the merged one
    // existed before this layer)
    let mut pending = vec![(merged.clone(), upper.tree.clone(), String::new(), true)];
    while let Some((merged, upper_dir, prefix, existed)) = pending.pop() {
        let path = prefix.trim_end_matches('/');
        if !(existed && upper.implied_dirs.contains(path)) {
            merged.set_metadata_checksum(&upper_dir.metadata_checksum());
        }
        pending.extend(merge_dir(&merged, &upper_dir, &prefix, fifos)?);
    }
    for fifo in upper.fifos {
        let path = &fifo.path;
        let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if let Some(parent) = walk(merged, parent_path)? {
            parent.remove(name, true).with_context(|| format!("replacing /{path} with a FIFO"))?;
        }
        fifos.retain(|p, _| !is_at_or_under(p, path));
        fifos.insert(path.clone(), fifo.clone());
    }
    Ok(())
}

type Pending = (ostree::MutableTree, ostree::MutableTree, String, bool);

/// Applies the whiteouts and files of one directory of the layer; returns its subdirectories,
/// still to merge.
fn merge_dir(
    merged: &ostree::MutableTree,
    upper: &ostree::MutableTree,
    prefix: &str,
    fifos: &mut Fifos,
) -> Result<Vec<Pending>> {
    let files = upper.copy_files();
    let subdirs = upper.copy_subdirs();

    if files.contains_key(OPAQUE_WHITEOUT) {
        for name in merged.copy_files().keys().chain(merged.copy_subdirs().keys()) {
            merged.remove(name, false).with_context(|| format!("applying the opaque whiteout of /{prefix}"))?;
        }
        fifos.retain(|p, _| !is_under(p, prefix));
    }
    for name in files.keys() {
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX).filter(|n| !n.is_empty() && name != OPAQUE_WHITEOUT) {
            merged.remove(hidden, true).with_context(|| format!("applying whiteout {prefix}{name}"))?;
            fifos.retain(|p, _| !is_at_or_under(p, &join(prefix, hidden)));
        }
    }
    for (name, checksum) in &files {
        if name.starts_with(WHITEOUT_PREFIX) {
            continue;
        }
        merged.remove(name, true)?;
        merged.replace_file(name, checksum).with_context(|| format!("adding /{}", join(prefix, name)))?;
        // A file or symlink replacing a directory hides the FIFOs below it too: recreating one
        // later would go through whatever the new entry is.
        fifos.retain(|p, _| !is_at_or_under(p, &join(prefix, name)));
    }
    let mut pending = Vec::with_capacity(subdirs.len());
    for (name, subdir) in subdirs {
        let path = join(prefix, &name);
        let (file, lower_dir) = merged.lookup(&name).unwrap_or((None, None));
        if file.is_some() {
            merged.remove(&name, false)?;
        }
        fifos.remove(&path);
        let target = merged.ensure_dir(&name).with_context(|| format!("merging directory /{path}"))?;
        pending.push((target, subdir, format!("{path}/"), lower_dir.is_some()));
    }
    Ok(pending)
}

/// Removes every whiteout file from `tree`, a layer with nothing below it to hide.
pub fn remove_whiteouts(tree: &ostree::MutableTree) -> Result<()> {
    let mut pending = vec![(tree.clone(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for name in dir.copy_files().keys().filter(|name| name.starts_with(WHITEOUT_PREFIX)) {
            dir.remove(name, false).with_context(|| format!("removing whiteout /{prefix}{name}"))?;
        }
        for (name, subdir) in dir.copy_subdirs() {
            pending.push((subdir, format!("{prefix}{name}/")));
        }
    }
    Ok(())
}

/// The directory at `path` in `tree`, if it exists.
fn walk(tree: &ostree::MutableTree, path: &str) -> Result<Option<ostree::MutableTree>> {
    let mut dir = tree.clone();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        match dir.lookup(component).unwrap_or((None, None)) {
            (_, Some(sub)) => dir = sub,
            _ => return Ok(None),
        }
    }
    Ok(Some(dir))
}

fn join(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// `prefix` is empty (the root) or ends with `/`.
fn is_under(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
}

fn is_at_or_under(path: &str, target: &str) -> bool {
    path == target || path.strip_prefix(target).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_relations() {
        assert!(is_at_or_under("a/b", "a/b"));
        assert!(is_at_or_under("a/b/c", "a/b"));
        assert!(!is_at_or_under("a/bc", "a/b"));
        assert!(is_under("x/y", "x/"));
        assert!(is_under("x/y", ""));
        assert!(!is_under("xy", "x/"));
    }
}
