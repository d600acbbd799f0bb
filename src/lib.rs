//! sysctr installs OCI images as systemd services run by runc, with no container daemon.
//!
//! Flow of an install: `cli` → `deploy` → `registry` (manifest, config, layer streams) →
//! `store` (one OSTree commit per layer, union checkout into a read-only rootfs) →
//! `spec` + `template` (config.json, unit, tmpfiles) → files under the root → `systemd` (D-Bus).
//!
//! - [`digest`]: `sha256:` digests and a reader that verifies one to the last byte.
//! - [`reference`]: image references (`docker://…`, `oci:DIR[:TAG]`, `oci-archive:`, `docker-archive:`) and container names.
//! - [`registry`]: fetches manifests, configs and digest-checked layer streams, as the host's
//!   registries.conf, credentials and certificates say.
//! - [`signature`]: the host's signature policy, checked once a manifest is fetched.
//! - [`rooted`]: a directory handle beneath which paths are resolved by the kernel, never joined:
//!   the one way to a tree someone else chose (an image, a target root, a shared directory).
//! - [`store`]: the OSTree repository: layer import, image refs, union checkout.
//! - [`spec`]: runc `config.json`: generated from an image config, or validated when rendered.
//! - [`template`]: `$VAR` substitution (outside values escaped for units and tmpfiles.d files),
//!   variable precedence, the built-in default unit.
//! - [`systemd`]: the one seam in front of systemd: what the target is (booted or offline), the
//!   Manager over D-Bus, an offline root's `[Install]` links, unit ordering checks.
//! - [`deploy`]: the only orchestrator, in layers: verbs, a container's deployment, the host's
//!   files and facts, the transaction journal.
//! - [`supervise`]: the main process of a container's unit until it is ready (`started`,
//!   `healthy`): systemd's notify protocol, health checks.
//! - [`cli`]: command-line parsing and output; [`output`]: notes, warnings and printable text.
//! - `fuzzing` (cargo feature `fuzzing` only): entry points for the fuzz targets in `fuzz/`.

pub mod cli;
pub mod deploy;
pub mod digest;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod output;
pub mod reference;
pub mod registry;
pub mod rooted;
pub mod signature;
pub mod spec;
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod template;

/// Stack size of the runtime's threads, where layers are imported, flattened and checked out.
/// libostree writes and checks out trees recursively, about 600 bytes of stack per directory
/// level: the default 2 MiB ends near 3,500 levels, this goes well past 10,000.
pub const THREAD_STACK_SIZE: usize = 16 * 1024 * 1024;

/// Tests only: owners for fixtures (files, tar entries) that anyone can run the tests with. Only
/// root may give a file an owner other than itself, and a `bare` OSTree repository gives each
/// object the owner its tar entry names.
#[cfg(test)]
pub(crate) mod test_owner {
    /// The effective (uid, gid) of the user running the tests: root's in CI.
    pub fn ours() -> (u32, u32) {
        (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
    }

    /// An owner other than root's where the tests run as root, to see that an owner is carried
    /// as given and not defaulted; [`ours`] otherwise, the only owner a user may give.
    pub fn another() -> (u32, u32) {
        if rustix::process::geteuid().is_root() {
            (1000, 100)
        } else {
            ours()
        }
    }
}
