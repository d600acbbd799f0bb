//! A real registry (CNCF distribution, `/usr/bin/docker-registry`) on a loopback port, one per
//! [`Registry::start`], with its storage in a temp dir under /var/tmp; and a tiny HTTP/1.0 client
//! for health checks and for pushing hand-made blobs and manifests.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{file_tail, sha256_digest};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `htpasswd` file the registry checks credentials against (HTTP Basic), if any.
    htpasswd: Option<PathBuf>,
    /// Serves HTTPS, with a certificate for 127.0.0.1 signed by [`Registry::ca_dir`]'s CA.
    tls: bool,
    /// The token service whose tokens the registry takes (bearer-token authentication), if any.
    token_service: Option<TokenService>,
}

/// `tests/token_service.py` on a loopback port: it issues the tokens a
/// [`Registry::start_with_token_service`] registry checks.
struct TokenService {
    child: Child,
    /// Holds the certificate and the log until the service is dropped.
    _dir: tempfile::TempDir,
    port: u16,
    /// Its signing certificate, the registry's `rootcertbundle`.
    cert: PathBuf,
    log: PathBuf,
}

impl TokenService {
    fn start(user: &str, password: &str) -> Result<TokenService> {
        let dir = tempfile::Builder::new().prefix("sysctr-tokens.").tempdir_in("/var/tmp")?;
        let (cert, log) = (dir.path().join("signer.crt"), dir.path().join("requests.log"));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/token_service.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([&cert, &log])
            .args(["--user", user, "--password", password])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting tests/token_service.py")?;
        let mut stdout = child.stdout.take().context("the token service has no stdout")?;
        let mut first_line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
            first_line.push(byte[0]);
        }
        let first_line = String::from_utf8_lossy(&first_line).into_owned();
        let port = match first_line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                bail!("tests/token_service.py did not start (it said '{first_line}')");
            }
        };
        Ok(TokenService { child, _dir: dir, port, cert, log })
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response: status code, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Registry {
    /// Starts a registry on a free ephemeral port of 127.0.0.1 and waits (≤ 10 s) until `GET /v2/`
    /// answers 200. Retries with another port if the chosen one was taken meanwhile.
    pub fn start() -> Result<Registry> {
        Self::start_with(None, false, None)
    }

    /// Like [`start`](Self::start), serving HTTPS with a certificate from a CA of its own, made
    /// here with openssl (its certificate is in [`Registry::ca_dir`]).
    pub fn start_tls() -> Result<Registry> {
        Self::start_with(None, true, None)
    }

    /// The directory holding `ca.crt`, the CA of a [`Registry::start_tls`] registry.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn make_certificates(&self) -> Result<()> {
        let (dir, ca) = (self.dir.path(), self.ca_dir());
        std::fs::create_dir_all(&ca)?;
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sysctr test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca/ca.crt",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca/ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.crt",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl").args(args).current_dir(dir).output().context("running openssl")?;
            if !out.status.success() {
                bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    /// Like [`start`](Self::start), for a registry that takes only `user` with `password`
    /// (distribution's htpasswd authentication, HTTP Basic; the hash made by `htpasswd -B`).
    pub fn start_with_password(user: &str, password: &str) -> Result<Registry> {
        Self::start_with(Some(htpasswd_entry(user, password)?), false, None)
    }

    /// Both: HTTPS with its own CA, and only `user` with `password`.
    pub fn start_tls_with_password(user: &str, password: &str) -> Result<Registry> {
        Self::start_with(Some(htpasswd_entry(user, password)?), true, None)
    }

    /// A registry that takes bearer tokens only, from a token service of its own (as Docker Hub,
    /// Quay and GHCR do): `user` with `password` may pull and push anything; anonymous clients
    /// get tokens to pull repositories under `public/` only.
    pub fn start_with_token_service(user: &str, password: &str) -> Result<Registry> {
        Self::start_with(None, false, Some(TokenService::start(user, password)?))
    }

    /// What the token service granted, one JSON object per token request: `account` (null when
    /// anonymous) and `access`, or `refused`.
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        let Some(service) = &self.token_service else { return Vec::new() };
        std::fs::read_to_string(&service.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn start_with(htpasswd: Option<Vec<u8>>, tls: bool, token_service: Option<TokenService>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("sysctr-registry.")
            .tempdir_in("/var/tmp")
            .context("creating the registry temp dir")?;
        std::fs::create_dir_all(dir.path().join("storage"))?;
        let htpasswd = match htpasswd {
            Some(entry) => {
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, entry)?;
                Some(path)
            }
            None => None,
        };
        let mut reg = Registry { child: None, port: 0, dir, htpasswd, tls, token_service };
        if tls {
            reg.make_certificates()?;
        }
        let mut last_err = None;
        for _ in 0..3 {
            reg.port = free_port()?;
            match reg.spawn_and_wait() {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    reg.stop();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The registry's log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{}\n  secret: sysctr-test-secret\n{}{}",
            self.storage_dir().display(),
            self.port,
            if self.tls {
                let dir = self.dir.path().display();
                format!("  tls:\n    certificate: {dir}/server.crt\n    key: {dir}/server.key\n")
            } else {
                String::new()
            },
            match (&self.htpasswd, &self.token_service) {
                (Some(path), _) => {
                    format!("auth:\n  htpasswd:\n    realm: sysctr-test\n    path: {}\n", path.display())
                }
                (None, Some(service)) => format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: sysctr-test-registry\n    \
                     issuer: sysctr-test-tokens\n    rootcertbundle: {}\n",
                    service.port,
                    service.cert.display()
                ),
                (None, None) => String::new(),
            }
        );
        std::fs::write(self.config_path(), config)?;
        let log = File::options().create(true).append(true).open(self.log_path())?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {REGISTRY_BIN}"))?;
        self.child = Some(child);

        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("docker-registry exited at start ({status}); log tail:\n{}", file_tail(&self.log_path(), 4000));
            }
            // HTTPS: up once it accepts connections (the health client speaks plain HTTP).
            if self.tls && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(resp) = self.get("/v2/") {
                // 401: up, and asking for the credentials it was told to.
                if resp.status == 200
                    || (resp.status == 401 && (self.htpasswd.is_some() || self.token_service.is_some()))
                {
                    return Ok(());
                }
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "docker-registry on port {} did not answer GET /v2/ within {:?}; log tail:\n{}",
                    self.port,
                    START_TIMEOUT,
                    file_tail(&self.log_path(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// "127.0.0.1:PORT"
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`-style reference without the transport:
    /// `127.0.0.1:PORT/<repo_tag>`.
    pub fn image_ref(&self, repo_tag: &str) -> String {
        format!("{}/{}", self.addr(), repo_tag)
    }

    /// The storage root (`rootdirectory` of the filesystem driver).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps a blob (`sha256:HEX` or just `HEX`), e.g. to corrupt it.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Kills the registry and waits for it. Idempotent. The storage stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Tail of the registry log, for error messages.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log_path(), 4000)
    }

    /// One HTTP/1.0 request to the registry.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<HttpResponse> {
        http_request(&self.addr(), method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        self.request("GET", path, &[], &[])
    }

    /// Uploads a blob to `repo` (POST + monolithic PUT) and returns its digest.
    pub fn put_blob(&self, repo: &str, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        self.put_blob_as(repo, &digest, data)?;
        Ok(digest)
    }

    /// Uploads `data` claiming `digest` (the registry verifies it: a mismatch is an error).
    pub fn put_blob_as(&self, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
        let resp = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
        if resp.status != 202 {
            bail!("starting a blob upload to {repo}: HTTP {} {}", resp.status, resp.text());
        }
        let location = resp.header("location").context("upload answer without Location")?;
        let path = location_path(location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let put_path = format!("{path}{sep}digest={digest}");
        let resp = self.request("PUT", &put_path, &[("Content-Type", "application/octet-stream")], data)?;
        if resp.status != 201 {
            bail!("uploading blob {digest} to {repo}: HTTP {} {}", resp.status, resp.text());
        }
        Ok(())
    }

    /// PUTs a manifest (or index) under `reference` (tag or digest) and returns its digest.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) -> Result<String> {
        let resp =
            self.request("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", media_type)], data)?;
        if resp.status != 201 {
            bail!("putting manifest {repo}:{reference}: HTTP {} {}", resp.status, resp.text());
        }
        Ok(sha256_digest(data))
    }

    /// Deletes a manifest by digest (storage.delete is enabled).
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let resp = self.request("DELETE", &format!("/v2/{repo}/manifests/{digest}"), &[], &[])?;
        if resp.status != 202 {
            bail!("deleting manifest {repo}@{digest}: HTTP {} {}", resp.status, resp.text());
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address of a registry that was started and stopped again: nothing answers there.
pub fn dead_registry() -> String {
    let mut registry = Registry::start().expect("starting a registry");
    registry.stop();
    registry.addr()
}

/// Picks a free port by binding 127.0.0.1:0 and closing it again.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `http://host:port/p?q` or `/p?q` → `/p?q`.
fn location_path(location: &str) -> String {
    if let Some(rest) = location.strip_prefix("http://").or_else(|| location.strip_prefix("https://")) {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        location.to_string()
    }
}

/// A hand-written HTTP/1.0 request (the server closes the connection after the answer).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let sock: SocketAddr = addr.parse().with_context(|| format!("bad address {addr}"))?;
    let mut stream =
        TcpStream::connect_timeout(&sock, Duration::from_secs(2)).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| format!("reading the answer to {method} {path}"))?;
    parse_response(&raw).with_context(|| format!("answer to {method} {path}"))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..end]).context("non-UTF-8 headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse { status, headers, body: raw[end + 4..].to_vec() })
}

/// Whether something accepts TCP connections at `addr` right now.
pub fn port_open(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .map(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
        .unwrap_or(false)
}

/// The htpasswd line of `user` with `password` (bcrypt, as distribution wants).
fn htpasswd_entry(user: &str, password: &str) -> Result<Vec<u8>> {
    let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().context("running htpasswd")?;
    if !out.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}
