//! Registry credentials, found where podman, skopeo and buildah find them
//! (containers-auth.json(5)), and written the same way by `sysctr login`.
//!
//! Files, in order, the first that has credentials for the registry winning:
//! 1. `--authfile PATH`, or `REGISTRY_AUTH_FILE`: that file only;
//! 2. otherwise `$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/UID/auth.json`),
//!    `$HOME/.config/containers/auth.json`, `$HOME/.docker/config.json`.
//!
//! In a file, `credHelpers.REGISTRY` names a `docker-credential-NAME` program for that registry;
//! else the most specific `auths` key matching the image (`reg/ns/repo`, `reg/ns`, `reg`) gives
//! `auth`, base64 of `user:password`; else `credsStore` names a helper for every registry.
//! Credentials never appear in an error or in output.
//!
//! registries.conf's `credential-helpers` may put helpers before or after (or instead of) the
//! files, named `containers-auth.json` in that list; each is asked in turn, and the first with
//! credentials wins.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::rooted::{Resolve, RootedDir};

/// The name of the auth files among registries.conf's `credential-helpers`.
pub const AUTH_FILES: &str = "containers-auth.json";
/// The largest auth file read.
const MAX_AUTH_FILE: u64 = 1024 * 1024;
/// The largest answer read from a credential helper.
const MAX_HELPER_OUTPUT: u64 = 64 * 1024;
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A user name and its password (or token). Shown as the user name only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

/// Where credentials are looked for and written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthFiles {
    /// `--authfile` or `REGISTRY_AUTH_FILE`: the one file used.
    pub explicit: Option<PathBuf>,
}

impl AuthFiles {
    /// The files read, in order.
    pub fn read_order(&self) -> Vec<PathBuf> {
        if let Some(file) = &self.explicit {
            return vec![file.clone()];
        }
        let mut files = vec![Self::runtime_file()];
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            files.push(home.join(".config/containers/auth.json"));
            files.push(home.join(".docker/config.json"));
        }
        files
    }

    /// The file `login` writes and `logout` edits.
    pub fn write_target(&self) -> PathBuf {
        self.explicit.clone().unwrap_or_else(Self::runtime_file)
    }

    fn runtime_file() -> PathBuf {
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("containers/auth.json"),
            None => PathBuf::from(format!("/run/containers/{}/auth.json", nix::unistd::getuid())),
        }
    }

    /// Credentials for `repository` on `registry` from each of `helpers` in turn
    /// ([`AUTH_FILES`] for the files). A helper that fails does not stop the others; if none has
    /// credentials, the failures are the error.
    pub fn lookup_with(&self, helpers: &[String], registry: &str, repository: &str) -> Result<Option<Credentials>> {
        let mut failures = Vec::new();
        for helper in helpers {
            let found =
                if helper == AUTH_FILES { self.lookup(registry, repository) } else { helper_get(helper, registry) };
            match found {
                Ok(Some(credentials)) => return Ok(Some(credentials)),
                Ok(None) => {}
                Err(err) => failures.push(format!("{helper}: {err:#}")),
            }
        }
        if !failures.is_empty() {
            bail!("no credential helper gave credentials: {}", failures.join("; "));
        }
        Ok(None)
    }

    /// Credentials for `repository` (without the registry) on `registry` (`host[:port]`).
    pub fn lookup(&self, registry: &str, repository: &str) -> Result<Option<Credentials>> {
        for file in self.read_order() {
            let Some(auth) = AuthFile::read(&file)? else { continue };
            if let Some(found) =
                auth.credentials(registry, repository).with_context(|| format!("reading {}", file.display()))?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// The parts of an auth file sysctr reads; everything else in it is kept as it is on write.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers", skip_serializing_if = "BTreeMap::is_empty")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore", skip_serializing_if = "Option::is_none")]
    creds_store: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

impl AuthFile {
    /// The file at `path`, or `None` if there is none.
    fn read(path: &Path) -> Result<Option<AuthFile>> {
        let Some(text) = super::read_host_config(path, MAX_AUTH_FILE)? else { return Ok(None) };
        Self::parse(&text, path).map(Some)
    }

    /// The file's content, read from `path`.
    fn parse(text: &[u8], path: &Path) -> Result<AuthFile> {
        // serde's message may quote the file, secrets included: only its kind and place are said.
        serde_json::from_slice(text).map_err(|e| {
            let kind = match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Data => "JSON of the wrong shape",
                serde_json::error::Category::Eof => "cut short",
            };
            anyhow!("{} is not a valid auth file: {kind} at line {}", path.display(), e.line())
        })
    }

    fn credentials(&self, registry: &str, repository: &str) -> Result<Option<Credentials>> {
        if let Some(helper) = self.cred_helpers.get(registry) {
            return helper_get(helper, registry);
        }
        let mut scope = format!("{registry}/{repository}");
        loop {
            if let Some(entry) = self.entry(&scope) {
                if let Some(auth) = &entry.auth {
                    return decode_auth(auth).map(Some).with_context(|| format!("the entry for {scope}"));
                }
            }
            match scope.rsplit_once('/') {
                Some((shorter, _)) => scope = shorter.to_string(),
                None => break,
            }
        }
        match &self.creds_store {
            Some(helper) => helper_get(helper, registry),
            None => Ok(None),
        }
    }

    /// The entry whose key, normalized, is `scope`.
    fn entry(&self, scope: &str) -> Option<&AuthEntry> {
        self.auths.get(scope).or_else(|| self.auths.iter().find(|(key, _)| normalize_key(key) == scope).map(|(_, e)| e))
    }
}

/// A key as Docker writes some of them (`https://index.docker.io/v1/`), as a registry scope.
fn normalize_key(key: &str) -> String {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let key = key.trim_end_matches('/');
    let key = key.strip_suffix("/v1").or_else(|| key.strip_suffix("/v2")).unwrap_or(key);
    if key == "index.docker.io" || key == "registry-1.docker.io" {
        "docker.io".to_string()
    } else {
        key.to_string()
    }
}

fn decode_auth(auth: &str) -> Result<Credentials> {
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| anyhow!("`auth` is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| anyhow!("`auth` is not UTF-8 once decoded"))?;
    let (username, password) =
        decoded.split_once(':').ok_or_else(|| anyhow!("`auth` is not base64 of USER:PASSWORD"))?;
    Ok(Credentials { username: username.to_string(), password: password.to_string() })
}

fn encode_auth(credentials: &Credentials) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", credentials.username, credentials.password))
}

/// Asks `docker-credential-HELPER get` for the registry's credentials; `None` when it has none.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    if helper.is_empty() || !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        bail!("'{helper}' is not a credential helper name");
    }
    run_helper(&format!("docker-credential-{helper}"), registry, HELPER_TIMEOUT)
}

/// Runs the credential helper `program get` for `registry`, `timeout` at most for its answer,
/// whatever it and the processes it leaves behind do with their output.
fn run_helper(program: &str, registry: &str, timeout: Duration) -> Result<Option<Credentials>> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {program} (the credential helper the auth file names)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that answers without reading the registry name has closed its input.
        match stdin.write_all(registry.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).with_context(|| format!("writing to {program}"));
            }
            _ => {}
        }
    }
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("{program}: no output"))?;
    // Read on a thread of its own: a process the helper started may keep its output open after
    // the helper has exited.
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_HELPER_OUTPUT + 1).read_to_end(&mut out);
        let _ = sender.send(out);
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {program}"))? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} gave no answer within {} s", timeout.as_secs_f32());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = answer
        .recv_timeout(timeout.saturating_sub(started.elapsed()))
        .map_err(|_| anyhow!("{program} exited, but its output stayed open past {} s", timeout.as_secs_f32()))?;
    if !status.success() {
        // Helpers answer "credentials not found in native keychain" this way.
        return Ok(None);
    }
    if out.len() as u64 > MAX_HELPER_OUTPUT {
        bail!("{program} answered more than {MAX_HELPER_OUTPUT} bytes");
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer =
        serde_json::from_slice(&out).map_err(|_| anyhow!("{program} answered something that is not its JSON"))?;
    Ok(Some(Credentials { username: answer.username, password: answer.secret }))
}

/// Saves `credentials` for `registry` in `file` (created 0600, other entries kept), as `podman
/// login` does.
pub fn save(file: &Path, registry: &str, credentials: &Credentials) -> Result<()> {
    let target = WriteTarget::open(file, true)?.context("no directory for the auth file")?;
    let mut auth = target.read()?.unwrap_or_default();
    let entry = auth.auths.entry(registry.to_string()).or_default();
    entry.auth = Some(encode_auth(credentials));
    target.write(&auth)
}

/// Removes the credentials for `registry` from `file`; whether there were any.
pub fn remove(file: &Path, registry: &str) -> Result<bool> {
    let Some(target) = WriteTarget::open(file, false)? else { return Ok(false) };
    let Some(mut auth) = target.read()? else { return Ok(false) };
    let before = auth.auths.len();
    auth.auths.retain(|key, _| key != registry && normalize_key(key) != registry);
    if auth.auths.len() == before {
        return Ok(false);
    }
    target.write(&auth)?;
    Ok(true)
}

/// The auth file `login` and `logout` write, reached through a handle on its directory: a
/// directory that others could change under sysctr's feet is refused, the file itself is read
/// without following a symlink, and it is replaced through
/// [`RootedDir::replace_file`](crate::rooted::RootedDir::replace_file) (an exclusive temporary
/// file of an unguessable name, 0600 from its first byte, synced, renamed over the file, the
/// directory synced).
struct WriteTarget {
    file: PathBuf,
    dir: RootedDir,
    name: PathBuf,
}

impl WriteTarget {
    /// The handle on `file`'s directory, made (0700, as podman does) when `create` is set and it
    /// is missing; `None` when it is missing and not to be made.
    fn open(file: &Path, create: bool) -> Result<Option<WriteTarget>> {
        use std::os::unix::fs::DirBuilderExt as _;
        let name = file.file_name().ok_or_else(|| anyhow!("{} does not name a file", file.display()))?;
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if create {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        } else if !dir.exists() {
            return Ok(None);
        }
        let dir = RootedDir::open(dir, Resolve::NoSymlinks)?;
        dir.refuse_if_others_can_write().with_context(|| format!("writing the auth file {}", file.display()))?;
        Ok(Some(WriteTarget { file: file.to_path_buf(), dir, name: PathBuf::from(name) }))
    }

    fn read(&self) -> Result<Option<AuthFile>> {
        let Some(text) = self.dir.read_regular_file(&self.name, MAX_AUTH_FILE)? else { return Ok(None) };
        AuthFile::parse(&text, &self.file).map(Some)
    }

    fn write(&self, auth: &AuthFile) -> Result<()> {
        let text = serde_json::to_vec_pretty(auth).context("writing the auth file")?;
        self.dir.replace_file(&self.name, &text, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials { username: user.into(), password: password.into() }
    }

    #[test]
    fn the_most_specific_entry_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        let entry = |u: &str, p: &str| encode_auth(&creds(u, p));
        std::fs::write(
            &file,
            serde_json::json!({"auths": {
                "reg.example:5000": {"auth": entry("whole", "w")},
                "reg.example:5000/team": {"auth": entry("team", "t")},
                "https://index.docker.io/v1/": {"auth": entry("hub", "h")},
            }, "other": 1})
            .to_string(),
        )
        .unwrap();
        let files = AuthFiles { explicit: Some(file.clone()) };
        assert_eq!(files.lookup("reg.example:5000", "team/app").unwrap(), Some(creds("team", "t")));
        assert_eq!(files.lookup("reg.example:5000", "teamx/app").unwrap(), Some(creds("whole", "w")));
        assert_eq!(files.lookup("docker.io", "library/etcd").unwrap(), Some(creds("hub", "h")));
        assert_eq!(files.lookup("other.example", "x").unwrap(), None);

        // Saving keeps what sysctr does not read, and is private.
        save(&file, "new.example", &creds("n", "p:with:colons")).unwrap();
        assert_eq!(files.lookup("new.example", "x").unwrap(), Some(creds("n", "p:with:colons")));
        let text: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(text["other"], 1);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(remove(&file, "new.example").unwrap());
        assert!(!remove(&file, "new.example").unwrap());
        assert_eq!(files.lookup("new.example", "x").unwrap(), None);
    }

    /// A directory where planted entries can be found, and a victim file outside it.
    fn private_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let auth_dir = dir.path().join("containers");
        std::fs::create_dir(&auth_dir).unwrap();
        std::fs::set_permissions(&auth_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        (dir, auth_dir, victim)
    }

    #[test]
    fn symlinks_planted_beside_or_at_the_auth_file_are_never_followed() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let (_dir, auth_dir, victim) = private_dir();
        let file = auth_dir.join("auth.json");
        // The temporary names used before: fixed, or the process id.
        let planted =
            [auth_dir.join(".auth.json.new"), auth_dir.join(format!(".auth.json.sysctr-{}", std::process::id()))];
        for link in &planted {
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
        save(&file, "reg.lan", &creds("u", "p")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        for link in &planted {
            assert_eq!(std::fs::read_link(link).unwrap(), victim, "{} was removed", link.display());
        }
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        let names = std::fs::read_dir(&auth_dir).unwrap().count();
        assert_eq!(names, planted.len() + 1, "a temporary file was left behind");

        // A symlink at the file itself: neither read through nor written through.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&victim, r#"{"auths": {"victim.lan": {"auth": "dTpw"}}}"#).unwrap();
        std::os::unix::fs::symlink(&victim, &file).unwrap();
        for result in [save(&file, "reg.lan", &creds("u", "p")), remove(&file, "victim.lan").map(|_| ())] {
            let err = format!("{:#}", result.unwrap_err());
            assert!(err.contains("auth.json is a symlink"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), r#"{"auths": {"victim.lan": {"auth": "dTpw"}}}"#);
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_link(&file).unwrap(), victim);
    }

    #[test]
    fn an_auth_file_is_not_written_where_others_may_replace_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_dir, auth_dir, _) = private_dir();
        let file = auth_dir.join("auth.json");
        let set_mode = |mode| std::fs::set_permissions(&auth_dir, std::fs::Permissions::from_mode(mode)).unwrap();
        save(&file, "reg.lan", &creds("u", "p")).unwrap();
        set_mode(0o777);
        let err = format!("{:#}", save(&file, "reg.lan", &creds("u", "changed")).unwrap_err());
        assert!(err.contains(&auth_dir.display().to_string()) && err.contains("everyone may write to it"), "{err}");
        let err = format!("{:#}", remove(&file, "reg.lan").unwrap_err());
        assert!(err.contains("no sticky bit"), "{err}");
        // Sticky, as /tmp: others may not replace or remove what is not theirs.
        set_mode(0o1777);
        save(&file, "reg.lan", &creds("u", "sticky")).unwrap();
        set_mode(0o700);
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&auth_dir, Some(12345), None).unwrap();
            let err = format!("{:#}", save(&file, "reg.lan", &creds("u", "changed")).unwrap_err());
            assert!(err.contains(&auth_dir.display().to_string()) && err.contains("owned by uid 12345"), "{err}");
            std::os::unix::fs::chown(&auth_dir, Some(0), None).unwrap();
        }
        let files = AuthFiles { explicit: Some(file) };
        assert_eq!(files.lookup("reg.lan", "x").unwrap(), Some(creds("u", "sticky")));
    }

    #[test]
    fn a_broken_file_is_named_without_its_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, r#"{"auths": {"reg": {"auth": "c2VjcmV0LXBhc3N3b3Jk"}}}"#).unwrap();
        let err = AuthFiles { explicit: Some(file.clone()) }.lookup("reg", "x").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("auth.json") && text.contains("not base64 of USER:PASSWORD"), "{text}");
        assert!(!text.contains("secret-password") && !text.contains("c2VjcmV0"), "{text}");
        std::fs::write(&file, r#"{"auths": {"reg": {"auth": "secret"#).unwrap();
        let text = format!("{:#}", AuthFiles { explicit: Some(file) }.lookup("reg", "x").unwrap_err());
        assert!(text.contains("is not a valid auth file") && !text.contains("secret"), "{text}");
        assert_eq!(format!("{:?}", creds("u", "hunter2")), r#"Credentials { username: "u", password: "<hidden>" }"#);
    }

    /// A helper whose child keeps the output open does not hold sysctr past the timeout.
    #[test]
    fn a_helper_is_waited_for_a_bounded_time() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, script: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path.to_string_lossy().into_owned()
        };
        let answer = r#"printf '{"Username":"u","Secret":"s"}'"#;
        let good = write("good", &format!("#!/bin/sh\nread registry\n{answer}\n"));
        let lingering = write("lingering", &format!("#!/bin/sh\nsleep 30 &\n{answer}\n"));
        let silent = write("silent", "#!/bin/sh\nexec sleep 30\n");
        let limit = Duration::from_secs(1);
        assert_eq!(run_helper(&good, "reg", limit).unwrap(), Some(creds("u", "s")));
        for (program, expected) in [(&lingering, "output stayed open"), (&silent, "gave no answer")] {
            let started = Instant::now();
            let err = run_helper(program, "reg", limit).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
        }
    }

    #[test]
    fn the_default_files_follow_podman() {
        let files = AuthFiles::default().read_order();
        let first = files[0].to_string_lossy();
        assert!(first.contains("/containers/") && first.ends_with("/auth.json"), "{files:?}");
        assert_eq!(AuthFiles { explicit: Some("/x".into()) }.read_order(), [PathBuf::from("/x")]);
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("reg.example:5000"), "reg.example:5000");
    }
}
