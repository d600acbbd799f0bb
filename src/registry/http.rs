//! The registry's HTTP API (distribution spec, pull side), with every answer bounded: manifests and
//! configs are read up to a size given in advance, blobs come as streams that give up after a
//! silence, redirects from HTTPS to plain HTTP are refused, and connecting is timed out too.
//!
//! Our own `reqwest` client rather than `oci-client`'s: that one reads whole answers into memory
//! before the caller sees them (manifests, tokens, error bodies), follows any redirect, and does
//! not let its redirect policy be set.

use std::io;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};

/// Redirects followed for one request, as reqwest's default policy.
const MAX_REDIRECTS: usize = 10;
/// Largest error body or token answer read.
const MAX_SMALL_ANSWER: u64 = 64 * 1024;

/// One repository of one registry.
pub(super) struct RegistryHttp {
    client: reqwest::Client,
    /// `HOST[:PORT]`, for URLs and messages.
    registry: String,
    repository: String,
    base: Url,
    plain_http: bool,
    timeout: Duration,
    /// Anonymous bearer token, once the registry asked for one.
    token: std::sync::Mutex<Option<String>>,
}

/// A redirect that the policy refused; found again in the error chain to word the message.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

impl RegistryHttp {
    pub fn new(
        registry: &str,
        repository: &str,
        plain_http: bool,
        timeout: Duration,
    ) -> Result<RegistryHttp> {
        let scheme = if plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/"))
            .with_context(|| format!("'{registry}' is not a registry address"))?;
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() != "https"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade {
                let to = attempt.url().to_string();
                attempt.error(RedirectRefused(format!(
                    "redirected from HTTPS to plain HTTP ({to}); refused"
                )))
            } else if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(RedirectRefused(format!(
                    "redirected {MAX_REDIRECTS} times in a row; refused"
                )))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(timeout)
            .user_agent(concat!("sysctr/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("configuring the HTTP client")?;
        Ok(RegistryHttp {
            client,
            registry: registry.to_string(),
            repository: repository.to_string(),
            base,
            plain_http,
            timeout,
            token: std::sync::Mutex::new(None),
        })
    }

    fn url(&self, kind: &str, reference: &str) -> Result<Url> {
        self.base
            .join(&format!("v2/{}/{kind}/{reference}", self.repository))
            .with_context(|| format!("building the URL of {kind}/{reference}"))
    }

    /// A manifest (by tag or digest), at most `max` bytes: more is refused while reading.
    pub async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let url = self.url("manifests", reference)?;
        let response = self.get(&url, &accept.join(", ")).await?;
        self.read_bounded(
            response,
            max,
            what,
            &format!("{what} is larger than {max} bytes"),
        )
        .await
    }

    /// A blob read whole, which must be exactly `size` bytes: more is refused while reading.
    pub async fn blob_bytes(&self, digest: &str, size: u64, what: &str) -> Result<Vec<u8>> {
        let url = self.url("blobs", digest)?;
        let response = self.get(&url, "*/*").await?;
        let too_large = format!("{what} is larger than the {size} bytes its descriptor gives");
        let bytes = self.read_bounded(response, size, what, &too_large).await?;
        if (bytes.len() as u64) < size {
            bail!(
                "{what} ended after {} bytes; its descriptor gives {size}",
                bytes.len()
            );
        }
        Ok(bytes)
    }

    /// A blob as a stream. The stream fails after a silence longer than the timeout; its size is
    /// for the caller to bound. An announced length larger than `size` is refused at once.
    pub async fn blob_stream(
        &self,
        digest: &str,
        size: u64,
        what: &str,
    ) -> Result<impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static> {
        let url = self.url("blobs", digest)?;
        let response = self.get(&url, "*/*").await?;
        if let Some(length) = response.content_length().filter(|&l| l > size) {
            bail!("{what} is larger than the {size} bytes its descriptor gives (the registry announces {length})");
        }
        Ok(self.body(response, what))
    }

    /// The body as a stream of chunks, each awaited at most the timeout.
    fn body(
        &self,
        response: Response,
        what: &str,
    ) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
        let timeout = self.timeout;
        let silence = self.silence(what);
        let failed = self.describer();
        futures_util::stream::unfold(Some(Box::pin(response.bytes_stream())), move |state| {
            let silence = silence.clone();
            let failed = failed.clone();
            async move {
                let mut stream = state?;
                match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                    Ok(Some(Err(err))) => Some((Err(io::Error::other(failed.describe(err))), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(io::Error::new(io::ErrorKind::TimedOut, silence)), None)),
                }
            }
        })
    }

    fn silence(&self, what: &str) -> String {
        format!(
            "registry {} sent nothing for {} while sending {what}; gave up (--registry-timeout)",
            self.registry,
            seconds(self.timeout)
        )
    }

    /// Reads a whole body, refusing it once it passes `max` bytes (or announces more).
    async fn read_bounded(
        &self,
        response: Response,
        max: u64,
        what: &str,
        too_large: &str,
    ) -> Result<Vec<u8>> {
        if response.content_length().is_some_and(|l| l > max) {
            bail!("{too_large}");
        }
        let mut body = Box::pin(self.body(response, what));
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

    /// GET with the anonymous token, fetched when the registry asks for one; a status other than
    /// success is an error that carries the registry's own words.
    async fn get(&self, url: &Url, accept: &str) -> Result<Response> {
        let mut response = self.send(url, accept).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(challenge) = bearer_challenge(response.headers()) {
                let token = self.fetch_token(&challenge).await?;
                *self
                    .token
                    .lock()
                    .map_err(|_| anyhow!("token lock poisoned"))? = Some(token);
                response = self.send(url, accept).await?;
            }
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self
            .read_bounded(response, MAX_SMALL_ANSWER, "an error answer", "")
            .await
            .unwrap_or_default();
        bail!("GET {url}: HTTP {status}{}", registry_errors(&body))
    }

    async fn send(&self, url: &Url, accept: &str) -> Result<Response> {
        let token = self
            .token
            .lock()
            .map_err(|_| anyhow!("token lock poisoned"))?
            .clone();
        let mut request = self.client.get(url.clone()).header(ACCEPT, accept);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(self.describer().describe(err)),
            Err(_) => bail!(
                "registry {} did not answer GET {url} within {} (--registry-timeout)",
                self.registry,
                seconds(self.timeout)
            ),
        }
    }

    /// The anonymous pull token from the registry's token service.
    async fn fetch_token(&self, challenge: &Challenge) -> Result<String> {
        let mut url = Url::parse(&challenge.realm).with_context(|| {
            format!(
                "registry {} names a bad token service '{}'",
                self.registry, challenge.realm
            )
        })?;
        if !self.plain_http && url.scheme() != "https" {
            bail!(
                "registry {} points to a plain-HTTP token service ({url}); refused",
                self.registry
            );
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &format!("repository:{}:pull", self.repository));
        }
        let response = self.send(&url, "application/json").await?;
        let status = response.status();
        let body = self
            .read_bounded(
                response,
                MAX_SMALL_ANSWER,
                "a token",
                &format!("the token from {url} is larger than {MAX_SMALL_ANSWER} bytes"),
            )
            .await?;
        if !status.is_success() {
            bail!(
                "getting a pull token from {url}: HTTP {status}{}",
                registry_errors(&body)
            );
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body)
            .with_context(|| format!("parsing the token from {url}"))?;
        token
            .token
            .or(token.access_token)
            .with_context(|| format!("no token in the answer of {url}"))
    }

    fn describer(&self) -> Describer {
        Describer {
            registry: self.registry.clone(),
            plain_http: self.plain_http,
            timeout: self.timeout,
        }
    }
}

/// Words a transport error for the user, with its likely cause.
#[derive(Clone)]
struct Describer {
    registry: String,
    plain_http: bool,
    timeout: Duration,
}

impl Describer {
    fn describe(&self, err: reqwest::Error) -> anyhow::Error {
        let registry = &self.registry;
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
                return anyhow!("registry {registry} {refused}");
            }
            chain.push(e.to_string());
            source = e.source();
        }
        let chain = chain.join(": ");
        if err.is_connect() && err.is_timeout() {
            return anyhow!(
                "cannot reach registry {registry}: no connection within {} (--registry-timeout)",
                seconds(self.timeout)
            );
        }
        if err.is_timeout() {
            return anyhow!(
                "registry {registry} sent nothing for {} (--registry-timeout): {chain}",
                seconds(self.timeout)
            );
        }
        if chain.contains("wrong version number") {
            return anyhow!("registry {registry} does not speak HTTPS ({chain}); pass --tls-verify=false to use plain HTTP");
        }
        if err.is_connect() || chain.contains("dns error") || chain.contains("Connection refused") {
            let hint = if self.plain_http {
                String::new()
            } else {
                format!(
                    "; if it serves plain HTTP, pass --tls-verify=false or mark it insecure in {}",
                    super::remote::DEFAULT_REGISTRIES_CONF
                )
            };
            return anyhow!("cannot reach registry {registry}: {chain}{hint}");
        }
        anyhow!("{chain}")
    }
}

/// "3 s", "1.5 s".
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// `WWW-Authenticate: Bearer realm="…",service="…"`.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer_challenge)
}

fn parse_bearer_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service) = (None, None);
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        match key.as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        realm: realm?,
        service,
    })
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
            .map(|e| {
                [e.code.as_deref(), e.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ")
            })
            .filter(|w| !w.is_empty())
            .collect();
        if !words.is_empty() {
            return format!(" ({})", words.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .trim()
        .chars()
        .take(200)
        .filter(|c| !c.is_control())
        .collect();
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
    fn bearer_challenges() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull""#
            ),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_bearer_challenge("bearer service=reg, realm=https://r.example/t"),
            Some(Challenge {
                realm: "https://r.example/t".into(),
                service: Some("reg".into())
            })
        );
        for refused in [
            "Basic realm=\"x\"",
            "Bearer service=\"no-realm\"",
            "Bearer",
            "Bearer realm=\"unterminated",
        ] {
            assert_eq!(parse_bearer_challenge(refused), None, "{refused}");
        }
    }

    #[test]
    fn registry_error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"},{"code":"DENIED"}]}"#;
        assert_eq!(
            registry_errors(body),
            " (MANIFEST_UNKNOWN: manifest unknown; DENIED)"
        );
        assert_eq!(registry_errors(b"  \n"), "");
        // At most 200 characters of a body that is not a registry error, control characters dropped.
        assert_eq!(
            registry_errors("x\n".repeat(500).as_bytes()),
            format!(" ({})", "x".repeat(100))
        );
    }

    #[test]
    fn durations_read_as_seconds() {
        assert_eq!(seconds(Duration::from_secs(3)), "3 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
