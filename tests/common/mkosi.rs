//! An OS tree built by mkosi 14 from a recipe directory (`examples/os-image`), with its caches
//! kept across test runs on the same machine, so that reruns are fast:
//! - the package cache (mkosi `--cache`), in `CACHE/mkosi-packages`;
//! - the incremental cache (the tree right after the package installation, `node.cache-pre-inst`),
//!   in `CACHE/os-image/`, with a hash of the recipe's `mkosi.conf` beside it: a changed recipe
//!   starts from a fresh one, and one older than a week is rebuilt (security updates).
//!
//! CACHE is `$SYSCTR_TEST_CACHE` or `/var/cache/sysctr-tests`. A build holds an exclusive lock on
//! its cache for as long as the [`OsImage`] lives (two test runs on one machine take turns), and
//! Drop removes the built tree, keeping only the caches.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use super::file_tail;

/// A cold build takes about a minute and a half on 2 cores; a mirror that is slow today should
/// not hang the test run.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// An incremental cache older than this is built again, with today's packages.
const CACHE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// mkosi 14 puts its output in a subdirectory named after the distribution and release.
const OUTPUT_SUBDIR: &str = "debian~bookworm";

/// Where tests keep what is worth keeping between runs on this machine.
pub fn test_cache_dir() -> PathBuf {
    std::env::var_os("SYSCTR_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/sysctr-tests"))
}

pub struct OsImage {
    tree: PathBuf,
    /// Whether the tree was built without the incremental cache (debootstrap and apt ran).
    pub cold: bool,
    /// How long mkosi took.
    pub elapsed: Duration,
    /// mkosi's output (stdout and stderr).
    pub log: PathBuf,
    _lock: Flock<File>,
}

impl OsImage {
    /// Runs `mkosi --force --incremental build` on `recipe` (whose `mkosi.conf` names the output
    /// `output`), with `env` added to mkosi's environment; fails with the tail of mkosi's output.
    pub fn build(recipe: &Path, output: &str, env: &[(&str, &OsStr)]) -> Result<OsImage> {
        let conf = std::fs::read(recipe.join("mkosi.conf")).context("reading the recipe's mkosi.conf")?;
        let key = &hex::encode(Sha256::digest(&conf))[..16];
        let cache = test_cache_dir();
        let packages = cache.join("mkosi-packages");
        let out = cache.join("os-image");
        std::fs::create_dir_all(&packages)?;
        std::fs::create_dir_all(out.join(OUTPUT_SUBDIR))?;
        let lock_file = File::create(out.join("lock"))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| e).context("locking the cache")?;
        let dir = out.join(OUTPUT_SUBDIR);
        let mut image = OsImage {
            tree: dir.join(output),
            cold: false,
            elapsed: Duration::ZERO,
            log: out.join("mkosi.log"),
            _lock: lock,
        };

        // mkosi 14 reuses OUTPUT.cache-pre-inst only when OUTPUT.cache-pre-dev exists as well,
        // which it makes only for recipes with a build script.
        let pre_inst = dir.join(format!("{output}.cache-pre-inst"));
        let key_file = out.join("mkosi.conf.sha256");
        let old = std::fs::metadata(&pre_inst)
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > CACHE_MAX_AGE)
            .unwrap_or(false);
        let other_recipe = std::fs::read_to_string(&key_file).map(|k| k != key).unwrap_or(true);
        if pre_inst.exists() && (old || other_recipe) {
            std::fs::remove_dir_all(&pre_inst).context("removing an outdated incremental cache")?;
        }
        std::fs::write(&key_file, key)?;
        std::fs::create_dir_all(dir.join(format!("{output}.cache-pre-dev")))?;
        let cold = !pre_inst.is_dir();

        let log = File::create(&image.log)?;
        let started = Instant::now();
        let mut child = Command::new("mkosi")
            .arg("--directory")
            .arg(recipe)
            .arg("--output-dir")
            .arg(&out)
            .arg("--cache")
            .arg(&packages)
            .args(["--force", "--incremental", "build"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("running mkosi (bash tests/setup.sh installs it)")?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > BUILD_TIMEOUT {
                // mkosi and what it runs (debootstrap, apt, nspawn, the finalize script).
                let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGTERM);
                let _ = child.wait();
                bail!("mkosi did not finish in {BUILD_TIMEOUT:?}:\n{}", file_tail(&image.log, 8000));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !status.success() {
            bail!("mkosi failed ({status}):\n{}", file_tail(&image.log, 8000));
        }
        image.cold = cold;
        image.elapsed = started.elapsed();
        Ok(image)
    }

    /// The built OS tree.
    pub fn tree(&self) -> &Path {
        &self.tree
    }
}

impl Drop for OsImage {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.tree) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("removing the built tree {}: {e}", self.tree.display());
            }
        }
    }
}
