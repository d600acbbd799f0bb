//! The registry requests that do not go through `oci-client`: manifests (and indexes), the small
//! blobs an image is judged by (its config, signature claims), and the layers of a registry that
//! gives no token.
//!
//! `oci-client` gets the pull token, and streams layers with it (see [`super::remote`]). Its manifest
//! calls (`pull_manifest_raw` and the ones built on it) read the whole answer into memory before
//! returning it, so a registry could make a pull hold any amount of memory before the 4 MiB limit
//! is even checked; and its HTTP client follows redirects with reqwest's default policy, which
//! cannot be changed from outside. So these requests are sent by a client of ours, with the bearer
//! token `oci-client` obtained (or the credentials, to a registry that takes them directly): the
//! answer is refused while reading, one chunk past the limit; a silence longer than the timeout is
//! given up; and a redirect from HTTPS to plain HTTP is refused. A pull from a registry that asks
//! for no token makes no `oci-client` client at all, and every client of ours shares one TLS setup
//! (see [`tls_connector`]): each one made would read and decode the system's CA bundle again.
//!
//! The wording of transport errors ([`Describer`]) is shared with the `oci-client` requests.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use oci_client::errors::OciDistributionError;
use reqwest::header::ACCEPT;
use reqwest::{Response, Url};

use super::auth::Credentials;
use super::bounded::{refuse_announced_excess, until_silent};
use crate::digest::Digest;

/// Redirects followed for one request, as reqwest's default policy.
const MAX_REDIRECTS: usize = 10;
/// Largest error body read.
const MAX_ERROR_ANSWER: u64 = 64 * 1024;

/// Sent with every registry request, ours and `oci-client`'s.
pub(super) const USER_AGENT: &str = concat!("sysctr/", env!("CARGO_PKG_VERSION"));

/// Manifests of one repository of one registry.
pub(super) struct MetadataHttp {
    client: reqwest::Client,
    repository: String,
    base: Url,
    timeout: Duration,
    describer: Describer,
}

/// A redirect that the policy refused; found again in the error chain to word the message.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for RedirectRefused {}

impl MetadataHttp {
    pub fn new(
        registry: &str,
        repository: &str,
        plain_http: bool,
        timeout: Duration,
        roots: &[Vec<u8>],
    ) -> Result<MetadataHttp> {
        let scheme = if plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/"))
            .with_context(|| format!("'{registry}' is not a registry address"))?;
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            if is_downgrade(&attempt) {
                let to = attempt.url().to_string();
                attempt.error(RedirectRefused(format!("redirected from HTTPS to plain HTTP ({to}); refused")))
            } else if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(RedirectRefused(format!("redirected {MAX_REDIRECTS} times in a row; refused")))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_connector(roots)?)
            .redirect(policy)
            .connect_timeout(timeout)
            .user_agent(USER_AGENT)
            .build()
            .context("configuring the HTTP client for manifests")?;
        Ok(MetadataHttp {
            client,
            repository: repository.to_string(),
            base,
            timeout,
            describer: Describer::new(registry, plain_http, timeout),
        })
    }

    /// A manifest (by tag or digest), at most `max` bytes: more is refused while reading.
    pub async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
        max: u64,
        what: &str,
        authorization: Authorization<'_>,
    ) -> Result<Vec<u8>> {
        self.fetch_manifest(reference, accept, max, what, authorization, false)
            .await?
            .with_context(|| format!("{what}: not found"))
    }

    /// [`MetadataHttp::manifest`], or `None` when the registry has no such manifest (404).
    pub async fn optional_manifest(
        &self,
        reference: &str,
        accept: &[&str],
        max: u64,
        what: &str,
        authorization: Authorization<'_>,
    ) -> Result<Option<Vec<u8>>> {
        self.fetch_manifest(reference, accept, max, what, authorization, true).await
    }

    async fn fetch_manifest(
        &self,
        reference: &str,
        accept: &[&str],
        max: u64,
        what: &str,
        authorization: Authorization<'_>,
        missing_is_none: bool,
    ) -> Result<Option<Vec<u8>>> {
        let url = self
            .base
            .join(&format!("v2/{}/manifests/{reference}", self.repository))
            .with_context(|| format!("building the URL of manifest {reference}"))?;
        let Some(response) = self.get(&url, &accept.join(", "), authorization, missing_is_none).await? else {
            return Ok(None);
        };
        self.read_bounded(response, max, what, &format!("{what} is larger than {max} bytes")).await.map(Some)
    }

    /// Blob `digest` of the repository, which its descriptor says is `size` bytes: more is
    /// refused while reading. The caller checks the digest (which a shorter blob fails too).
    pub async fn small_blob(
        &self,
        digest: &Digest,
        size: u64,
        what: &str,
        authorization: Authorization<'_>,
    ) -> Result<Vec<u8>> {
        let response = self.blob(digest, what, authorization).await?;
        self.read_bounded(response, size, what, &format!("{what} is larger than the {size} bytes its descriptor gives"))
            .await
    }

    /// Blob `digest` of the repository as it comes, each chunk awaited at most the timeout; an
    /// announced length larger than `size` is refused at once, the rest is for the caller to
    /// bound (see [`super::SizedReader`]).
    pub async fn blob_stream(
        &self,
        digest: &Digest,
        size: u64,
        what: &str,
        authorization: Authorization<'_>,
    ) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
        let response = self.blob(digest, what, authorization).await?;
        refuse_announced_excess(what, size, response.content_length())?;
        let describer = self.describer.clone();
        Ok(until_silent(
            response.bytes_stream(),
            self.timeout,
            self.describer.silence(what),
            move |err: reqwest::Error| describer.describe_io(&err),
        ))
    }

    async fn blob(&self, digest: &Digest, what: &str, authorization: Authorization<'_>) -> Result<Response> {
        let url = self
            .base
            .join(&format!("v2/{}/blobs/{digest}", self.repository))
            .with_context(|| format!("building the URL of blob {digest}"))?;
        self.get(&url, "*/*", authorization, false).await?.with_context(|| format!("{what}: not found"))
    }

    /// Reads a whole body, refusing it once it passes `max` bytes (or announces more).
    async fn read_bounded(&self, response: Response, max: u64, what: &str, too_large: &str) -> Result<Vec<u8>> {
        if response.content_length().is_some_and(|l| l > max) {
            bail!("{too_large}");
        }
        let describer = self.describer.clone();
        let mut body = Box::pin(until_silent(
            response.bytes_stream(),
            self.timeout,
            self.describer.silence(what),
            move |err: reqwest::Error| describer.describe_io(&err),
        ));
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (bytes.len() + chunk.len()) as u64 > max {
                bail!("{too_large}");
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// GET, answered within the timeout; a status other than success is an error that carries
    /// the registry's own words, except 404 with `missing_is_none`, which is `None`.
    async fn get(
        &self,
        url: &Url,
        accept: &str,
        authorization: Authorization<'_>,
        missing_is_none: bool,
    ) -> Result<Option<Response>> {
        let mut request = self.client.get(url.clone()).header(ACCEPT, accept);
        match authorization {
            Authorization::Anonymous => {}
            Authorization::Bearer { token, .. } => request = request.bearer_auth(token),
            Authorization::Basic(credentials) => {
                request = request.basic_auth(&credentials.username, Some(&credentials.password));
            }
        }
        let response = self.send(url, request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        if missing_is_none && status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = self.read_bounded(response, MAX_ERROR_ANSWER, "an error answer", "").await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let registry = &self.describer.registry;
            let hint = match authorization {
                Authorization::Anonymous | Authorization::Bearer { anonymous: true, .. } => {
                    format!("registry {registry} requires credentials: `sysctr login {registry}`, or --authfile")
                }
                _ => format!("registry {registry} refused the credentials of the auth file"),
            };
            bail!("GET {url}: HTTP {status}{}; {hint}", registry_errors(&body))
        }
        let message = format!("GET {url}: HTTP {status}{}", registry_errors(&body));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Transient(message).into());
        }
        bail!("{message}")
    }

    /// Sends the GET `request` for `url`, answered within the timeout.
    async fn send(&self, url: &Url, request: reqwest::RequestBuilder) -> Result<Response> {
        tracing::debug!("GET {url}");
        match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(self.describer.describe(&err)),
            Err(_) => Err(Transient(format!(
                "registry {} did not answer GET {url} within {} (--registry-timeout)",
                self.describer.registry,
                seconds(self.timeout)
            ))
            .into()),
        }
    }

    /// `GET /v2/`, the registry's own check of a client, with `credentials` if any.
    async fn probe(&self, credentials: Option<&Credentials>) -> Result<Response> {
        let url = self.base.join("v2/").context("building the URL of /v2/")?;
        let mut request = self.client.get(url.clone());
        if let Some(credentials) = credentials {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        self.send(&url, request).await
    }

    /// The token service a registry's `/v2/` challenge points to (`realm` of a `Bearer` challenge).
    pub async fn token_realm(&self) -> Result<Option<String>> {
        let response = self.probe(None).await?;
        let challenge = response.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|h| h.to_str().ok());
        Ok(challenge.and_then(bearer_realm))
    }

    /// Whether the registry's `/v2/` asks anonymous clients to authenticate.
    pub async fn challenges(&self) -> Result<bool> {
        let response = self.probe(None).await?;
        Ok(response.status() == reqwest::StatusCode::UNAUTHORIZED
            || response.headers().contains_key(reqwest::header::WWW_AUTHENTICATE))
    }

    /// Checks `credentials` against a registry that takes them directly (HTTP Basic): `Ok(true)`
    /// if it accepts them, `Ok(false)` if it wants a bearer token instead.
    pub async fn check_basic(&self, credentials: &Credentials) -> Result<bool> {
        let response = self.probe(Some(credentials)).await?;
        let bearer = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.trim_start().to_ascii_lowercase().starts_with("bearer"));
        match response.status() {
            status if status.is_success() => Ok(true),
            reqwest::StatusCode::UNAUTHORIZED if bearer => Ok(false),
            reqwest::StatusCode::UNAUTHORIZED => {
                bail!("registry {} refused the user name or password", self.describer.registry)
            }
            status => bail!("GET {}: HTTP {status}", response.url()),
        }
    }
}

/// The TLS side of a client that trusts the system's CA bundle and `roots`. Each one made reads
/// and decodes the whole bundle, twice (OpenSSL's default paths, then the file `native-tls`
/// finds): tens of milliseconds, more than a manifest request on a near registry takes. So the
/// one without extra roots is made once, when a client first needs it, and shared.
pub(crate) fn tls_connector(roots: &[Vec<u8>]) -> Result<native_tls::TlsConnector> {
    static SYSTEM_ROOTS: std::sync::OnceLock<native_tls::TlsConnector> = std::sync::OnceLock::new();
    if roots.is_empty() {
        if let Some(shared) = SYSTEM_ROOTS.get() {
            return Ok(shared.clone());
        }
    }
    let mut builder = native_tls::TlsConnector::builder();
    for pem in roots {
        builder.add_root_certificate(
            native_tls::Certificate::from_pem(pem).context("reading a CA certificate of the registry")?,
        );
    }
    let made = builder.build().context("setting up TLS with the system's CA certificates")?;
    Ok(if roots.is_empty() { SYSTEM_ROOTS.get_or_init(|| made).clone() } else { made })
}

/// Whether a redirect leaves HTTPS for plain HTTP (after any HTTPS hop of the chain).
pub(crate) fn is_downgrade(attempt: &reqwest::redirect::Attempt) -> bool {
    attempt.url().scheme() != "https" && attempt.previous().iter().any(|u| u.scheme() == "https")
}

/// The `realm` of a `Bearer` challenge.
fn bearer_realm(challenge: &str) -> Option<String> {
    let challenge = challenge.trim();
    let params = challenge.get(..6).filter(|s| s.eq_ignore_ascii_case("bearer")).map(|_| &challenge[6..])?;
    let start = params.find("realm=\"")? + "realm=\"".len();
    let length = params[start..].find('"')?;
    Some(params[start..start + length].to_string())
}

/// How a request to the registry is authorized.
#[derive(Debug, Clone, Copy)]
pub(super) enum Authorization<'a> {
    Anonymous,
    /// The bearer token `oci-client` got for the repository: for the credentials of the auth
    /// files (`anonymous: false`), or for nobody, as public repositories are read.
    Bearer {
        token: &'a str,
        anonymous: bool,
    },
    /// Credentials sent as they are, to a registry that asked for HTTP Basic.
    Basic(&'a Credentials),
}

/// Words a transport error, ours or `oci-client`'s, for the user, with its likely cause.
#[derive(Clone)]
pub(super) struct Describer {
    registry: String,
    plain_http: bool,
    timeout: Duration,
}

impl Describer {
    pub fn new(registry: &str, plain_http: bool, timeout: Duration) -> Describer {
        Describer { registry: registry.to_string(), plain_http, timeout }
    }

    /// What a stream that went silent fails with.
    pub fn silence(&self, what: &str) -> String {
        format!(
            "registry {} sent nothing for {} while sending {what}; gave up (--registry-timeout)",
            self.registry,
            seconds(self.timeout)
        )
    }

    /// Whether the error is the HTTP client's own timeout (`read_timeout` or `connect_timeout`).
    pub fn is_timeout(err: &(dyn StdError + 'static)) -> bool {
        request_error(err).is_some_and(reqwest::Error::is_timeout)
    }

    /// [`describe`](Self::describe), as the I/O error of a stream, keeping a [`Transient`] one so.
    pub fn describe_io(&self, err: &(dyn StdError + 'static)) -> io::Error {
        let described = self.describe(err);
        match described.downcast::<Transient>() {
            Ok(transient) => io::Error::other(transient),
            Err(other) => io::Error::other(other),
        }
    }

    pub fn describe(&self, err: &(dyn StdError + 'static)) -> anyhow::Error {
        let registry = &self.registry;
        let mut chain = Vec::new();
        let mut request = None;
        let mut tls = None;
        let mut overloaded = false;
        let mut source = Some(err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
                return anyhow!("registry {registry} {refused}");
            }
            if let Some(oci_client::errors::OciDistributionError::ServerError { code, .. }) = e.downcast_ref() {
                overloaded |= *code == 429 || *code >= 500;
            }
            request = request.or_else(|| request_error(e));
            tls = tls.or_else(|| tls_failure(e));
            chain.push(e.to_string());
            source = e.source();
        }
        let chain = chain.join(": ");
        let (connect, timeout) = request.map_or((false, false), |r| (r.is_connect(), r.is_timeout()));
        if connect && timeout {
            return Transient(format!(
                "cannot reach registry {registry}: no connection within {} (--registry-timeout)",
                seconds(self.timeout)
            ))
            .into();
        }
        if timeout {
            return Transient(format!(
                "registry {registry} sent nothing for {} (--registry-timeout): {chain}",
                seconds(self.timeout)
            ))
            .into();
        }
        if tls == Some(TlsFailure::UntrustedCertificate) {
            return anyhow!(
                "registry {registry} has a certificate this host does not trust ({chain}); put its CA in {}/{registry}/ca.crt, or pass --cert-dir",
                super::certs::CERTS_DIRS[0]
            );
        }
        if tls == Some(TlsFailure::NotHttps) {
            return anyhow!(
                "registry {registry} does not speak HTTPS ({chain}); pass --tls-verify=false to use plain HTTP"
            );
        }
        if connect || chain_has_io_error(err, io::ErrorKind::ConnectionRefused) {
            let hint = if self.plain_http {
                String::new()
            } else {
                format!(
                    "; if it serves plain HTTP, pass --tls-verify=false or mark it insecure in {}",
                    super::DEFAULT_REGISTRIES_CONF
                )
            };
            return Transient(format!("cannot reach registry {registry}: {chain}{hint}")).into();
        }
        if overloaded {
            return Transient(format!("registry {registry}: {chain}")).into();
        }
        anyhow!("{chain}")
    }
}

/// A registry failure that may pass: the registry could not be reached or did not answer in
/// time, or said it is overloaded (HTTP 429, 5xx). A pull that failed so may be tried again.
#[derive(Debug)]
pub struct Transient(String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Transient {}

impl Transient {
    /// An I/O error of `kind` that [`is_transient`] takes for one that may pass.
    pub(super) fn io(kind: io::ErrorKind, message: String) -> io::Error {
        io::Error::new(kind, Transient(message))
    }

    /// Whether `err` is one made by [`Transient::io`] (or wraps a [`Transient`] itself).
    pub(super) fn carried_by(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<Transient>())
    }
}

/// Whether `err` failed for a reason that may pass: a [`Transient`] anywhere in its causes, also
/// inside the I/O errors of a stream, or a stream that went silent (`TimedOut`).
pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<Transient>()
            || e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut || Transient::carried_by(io))
    })
}

/// Why a TLS handshake failed, from OpenSSL's own reason codes in the error's causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFailure {
    /// The registry's certificate is not trusted here (or it refused ours as of an unknown CA).
    UntrustedCertificate,
    /// What came back was no TLS at all: a plain HTTP server.
    NotHttps,
}

/// OpenSSL's library code for its SSL errors, and the reasons told apart (from `sslerr.h`).
const ERR_LIB_SSL: i32 = 20;
const SSL_R_CERTIFICATE_VERIFY_FAILED: i32 = 134;
const SSL_R_TLSV1_ALERT_UNKNOWN_CA: i32 = 1048;
const SSL_R_WRONG_VERSION_NUMBER: i32 = 267;

fn tls_failure(err: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let stack = err.downcast_ref::<openssl::error::ErrorStack>()?;
    stack.errors().iter().filter(|e| e.library_code() == ERR_LIB_SSL).find_map(|e| match e.reason_code() {
        SSL_R_CERTIFICATE_VERIFY_FAILED | SSL_R_TLSV1_ALERT_UNKNOWN_CA => Some(TlsFailure::UntrustedCertificate),
        SSL_R_WRONG_VERSION_NUMBER => Some(TlsFailure::NotHttps),
        _ => None,
    })
}

fn chain_has_io_error(err: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == kind) {
            return true;
        }
        source = e.source();
    }
    false
}

/// The reqwest error this error is, or wraps without a source link: `oci-client` passes them on
/// transparently, and its blob streams in an `io::Error`.
fn request_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a reqwest::Error> {
    if let Some(request) = err.downcast_ref::<reqwest::Error>() {
        return Some(request);
    }
    if let Some(io) = err.downcast_ref::<io::Error>() {
        return io.get_ref().and_then(|inner| request_error(inner));
    }
    match err.downcast_ref::<OciDistributionError>() {
        Some(OciDistributionError::RequestError(request)) => Some(request),
        Some(OciDistributionError::IoError(io)) => request_error(io),
        _ => None,
    }
}

/// "3 s", "1.5 s".
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// `: CODE: message; …` from a distribution-spec error body, or a bounded excerpt of the body.
fn registry_errors(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body) {
        let words: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| [e.code.as_deref(), e.message.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": "))
            .filter(|w| !w.is_empty())
            .collect();
        if !words.is_empty() {
            return format!(" ({})", words.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).filter(|c| !c.is_control()).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_realms_are_read_from_challenges() {
        let realm = |c: &str| bearer_realm(c);
        assert_eq!(
            realm(r#"Bearer realm="https://auth.example/token",service="reg""#).as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(realm(r#"bearer service="reg", realm="http://plain/token""#).as_deref(), Some("http://plain/token"));
        assert_eq!(realm(r#"Basic realm="Registry""#), None);
        assert_eq!(realm("Bearer"), None);
    }

    #[test]
    fn registry_error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"},{"code":"DENIED"}]}"#;
        assert_eq!(registry_errors(body), " (MANIFEST_UNKNOWN: manifest unknown; DENIED)");
        assert_eq!(registry_errors(b"  \n"), "");
        // At most 200 characters of a body that is not a registry error, control characters dropped.
        assert_eq!(registry_errors("x\n".repeat(500).as_bytes()), format!(" ({})", "x".repeat(100)));
    }

    /// What may pass is told apart, however it is wrapped: as the error itself, inside a
    /// stream's I/O error, or a stream gone silent.
    #[test]
    fn transient_failures_are_found_in_their_wrappings() {
        let describer = Describer { registry: "reg.lan".into(), timeout: Duration::from_secs(5), plain_http: false };
        let overloaded = oci_client::errors::OciDistributionError::ServerError {
            code: 503,
            url: "https://reg.lan/v2/a/blobs/sha256:0".into(),
            message: "busy".into(),
        };
        assert!(is_transient(&describer.describe(&overloaded)));
        let in_stream = anyhow::Error::new(describer.describe_io(&overloaded)).context("importing a layer");
        assert!(is_transient(&in_stream));
        let silent = anyhow::Error::new(io::Error::new(io::ErrorKind::TimedOut, describer.silence("a layer")));
        assert!(is_transient(&silent.context("pulling")));
        let missing = oci_client::errors::OciDistributionError::ServerError {
            code: 404,
            url: "https://reg.lan/v2/a/blobs/sha256:0".into(),
            message: "blob unknown".into(),
        };
        assert!(!is_transient(&describer.describe(&missing)));
        assert!(!is_transient(&anyhow::Error::new(describer.describe_io(&missing))));
    }

    #[test]
    fn durations_read_as_seconds() {
        assert_eq!(seconds(Duration::from_secs(3)), "3 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }

    /// A reqwest timeout is found however `oci-client` wraps it: as its own error, or inside the
    /// `io::Error` of a blob stream.
    #[tokio::test]
    async fn timeouts_wrapped_by_oci_client_are_found() {
        // Connections are accepted by the kernel and never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = reqwest::Client::builder().read_timeout(Duration::from_millis(100)).build().unwrap();
        let timeout = || async { client.get(format!("http://{addr}/v2/")).send().await.unwrap_err() };
        let describer = Describer::new(&addr.to_string(), true, Duration::from_secs(3));
        let wrapped = OciDistributionError::RequestError(timeout().await);
        assert!(Describer::is_timeout(&wrapped));
        let words = describer.describe(&wrapped).to_string();
        assert!(words.starts_with(&format!("registry {addr} sent nothing for 3 s (--registry-timeout)")), "{words}");
        let in_stream = io::Error::other(timeout().await);
        assert!(Describer::is_timeout(&in_stream));

        let other = OciDistributionError::IoError(io::Error::other("boom"));
        assert!(!Describer::is_timeout(&other));
        assert_eq!(describer.describe(&other).to_string(), "boom");
        drop(listener);
    }
}
