//! A registry: the pull token, obtained through `oci-client` (anonymous, or with the credentials
//! of the auth files), and layer blobs, each stream held to its descriptor's size and given up
//! after a silence. Manifests, configs, signature claims, and the layers of a registry that gives
//! no token, are fetched by [`super::http`] (its module documentation says why); the layers of
//! one that does come from the `oci-client` client that holds the token and renews it.

use std::net::IpAddr;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::io::AsyncRead;
use tokio::sync::OnceCell;
use tokio_util::io::StreamReader;

use super::auth::Credentials;
use super::bounded::{refuse_announced_excess, until_silent};
use super::http::{Authorization, Describer, MetadataHttp, USER_AGENT};
use super::{
    is_index, select_from_index, BlobStream, RegistryOptions, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_METADATA_SIZE,
    OCI_INDEX, OCI_MANIFEST,
};
use crate::digest::Digest;

/// The media type of a cosign signature layer.
const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation of a cosign signature layer that holds the signature.
const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Most sigstore signatures read for one image.
const MAX_ATTACHMENTS: usize = 64;

pub struct RegistrySource {
    /// Made on first use (authentication, a layer): each client loads the system's CA bundle,
    /// and a pull that has every layer and needs no token never uses one.
    client: std::sync::OnceLock<Client>,
    /// CA certificates trusted for this registry beyond the system's (see [`super::certs`]).
    roots: Vec<Vec<u8>>,
    /// From the auth files, for this registry and repository; `None` pulls anonymously.
    credentials: Option<Credentials>,
    metadata: MetadataHttp,
    reference: Reference,
    plain_http: bool,
    timeout: std::time::Duration,
    describer: Describer,
    /// Set once `oci-client` has authenticated for pulls.
    session: OnceCell<Session>,
}

struct Session {
    /// The bearer token `oci-client` got, or `None` when the registry asks for none or takes the
    /// credentials directly. With a token, layers are pulled by the client that authenticated,
    /// which sends it and gets a new one when it expires; without, by [`MetadataHttp`], whose
    /// client is already made, so that no `oci-client` client (two more loads of the CA bundle
    /// each) is made for a registry that asks nobody to authenticate.
    token: Option<String>,
}

impl RegistrySource {
    /// `credential_helpers`: registries.conf's, where credentials are looked for.
    pub fn new(
        reference: &Reference,
        options: &RegistryOptions,
        plain_http: bool,
        credential_helpers: &[String],
    ) -> Result<RegistrySource> {
        let registry = reference.resolve_registry().to_string();
        let roots = super::certs::registry_roots(&registry, options.cert_dir.as_deref())?;
        let metadata = MetadataHttp::new(&registry, reference.repository(), plain_http, options.timeout, &roots)?;
        let credentials = options
            .auth
            .lookup_with(credential_helpers, reference.registry(), reference.repository())
            .with_context(|| format!("looking up credentials for {}", reference.registry()))?;
        Ok(RegistrySource {
            client: std::sync::OnceLock::new(),
            roots,
            credentials,
            metadata,
            reference: reference.clone(),
            plain_http,
            timeout: options.timeout,
            describer: Describer::new(&registry, plain_http, options.timeout),
            session: OnceCell::new(),
        })
    }

    /// The `oci-client` client, made on first use.
    fn client(&self) -> Result<&Client> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let made = client(self.reference.resolve_registry(), self.plain_http, self.timeout, &self.roots)?;
        Ok(self.client.get_or_init(|| made))
    }

    /// Authenticates once for pulls from the repository: with the credentials of the auth files
    /// if they have some, anonymously otherwise.
    async fn session(&self) -> Result<&Session> {
        self.session
            .get_or_try_init(|| async {
                let auth = match &self.credentials {
                    Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                    // A registry that challenges nobody gives no token: `oci-client` is not
                    // asked for one, and its client stays one that never authenticated.
                    None if !self.metadata.challenges().await? => {
                        return Ok(Session { token: None });
                    }
                    None => RegistryAuth::Anonymous,
                };
                // `oci-client` sends the credentials to whatever token service the registry names.
                if self.credentials.is_some() && !self.plain_http {
                    if let Some(realm) = self.metadata.token_realm().await? {
                        if !realm.starts_with("https://") {
                            anyhow::bail!(
                                "registry {} sends its clients to a token service that is not HTTPS ({realm}); \
                                 the credentials were not sent",
                                self.reference.resolve_registry()
                            );
                        }
                    }
                }
                let token = self.client()?.auth(&self.reference, &auth, RegistryOperation::Pull).await.map_err(
                    |err| match (&err, &self.credentials) {
                        (oci_client::errors::OciDistributionError::AuthenticationFailure(answer), Some(_)) => {
                            anyhow::anyhow!(
                                "the token service of registry {} refused the credentials of the auth file: {}",
                                self.reference.resolve_registry(),
                                answer.chars().take(512).collect::<String>()
                            )
                        }
                        _ => self.describer.describe(&err),
                    },
                )?;
                Ok(Session { token })
            })
            .await
    }

    /// How the manifest request is authorized.
    fn authorization<'s>(&'s self, session: &'s Session) -> Authorization<'s> {
        match (&session.token, &self.credentials) {
            (Some(token), credentials) => Authorization::Bearer { token, anonymous: credentials.is_none() },
            (None, Some(credentials)) => Authorization::Basic(credentials),
            (None, None) => Authorization::Anonymous,
        }
    }

    /// Returns the digest of the manifest the reference names, and the digest and raw bytes of
    /// the platform manifest.
    pub async fn resolve_manifest(&self) -> Result<(Digest, Digest, Vec<u8>)> {
        let (named, raw) = self.fetch_manifest(&self.reference).await?;
        if !is_index(&raw)? {
            return Ok((named.clone(), named, raw));
        }
        let chosen = select_from_index(&raw)?;
        let by_digest = self.reference.clone_with_digest(chosen.to_string());
        let (digest, raw) = self.fetch_manifest(&by_digest).await?;
        if digest != chosen {
            anyhow::bail!("the registry returned manifest {digest} when asked for {chosen}");
        }
        if is_index(&raw)? {
            anyhow::bail!("the image index points to another index ({chosen}); nested indexes are not supported");
        }
        Ok((named, digest, raw))
    }

    /// The sigstore signatures attached to manifest `digest`: the layers of the manifest tagged
    /// `sha256-HEX.sig` (cosign's convention) that hold a simple-signing claim. No such tag, no
    /// signatures. At most [`MAX_ATTACHMENTS`] are read, each up to 4 MiB.
    pub async fn sigstore_attachments(&self, digest: &Digest) -> Result<Vec<super::SigstoreAttachment>> {
        let tag = format!("sha256-{}.sig", digest.hex());
        let what = format!("the signatures of {digest} ({tag})");
        let raw = async {
            let authorization = self.authorization(self.session().await?);
            self.metadata
                .optional_manifest(&tag, &[OCI_MANIFEST, DOCKER_MANIFEST], MAX_METADATA_SIZE, &what, authorization)
                .await
        }
        .await
        .with_context(|| format!("fetching {what}"))?;
        let Some(raw) = raw else { return Ok(Vec::new()) };
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&raw).with_context(|| format!("parsing {what}"))?;
        let signatures: Vec<_> =
            manifest.layers().iter().filter(|layer| layer.media_type().to_string() == COSIGN_SIMPLE_SIGNING).collect();
        if signatures.len() > MAX_ATTACHMENTS {
            anyhow::bail!("{what} lists {} signatures, more than {MAX_ATTACHMENTS}", signatures.len());
        }
        let mut attachments = Vec::new();
        for layer in signatures {
            let blob = Digest::parse(layer.digest().as_ref()).with_context(|| format!("reading {what}"))?;
            let payload = self.fetch_blob_bytes(&blob, layer.size(), "a signature claim").await?;
            blob.verify_bytes(&payload, "a signature claim")?;
            let signature = layer.annotations().as_ref().and_then(|a| a.get(COSIGN_SIGNATURE_ANNOTATION)).cloned();
            attachments.push(super::SigstoreAttachment { payload, signature });
        }
        Ok(attachments)
    }

    async fn fetch_manifest(&self, reference: &Reference) -> Result<(Digest, Vec<u8>)> {
        let accepted = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST];
        let what = format!("the manifest of {}", reference.whole());
        let tag_or_digest = match reference.digest() {
            Some(digest) => digest,
            None => reference.tag().unwrap_or("latest"),
        };
        let raw = async {
            let authorization = self.authorization(self.session().await?);
            self.metadata.manifest(tag_or_digest, &accepted, MAX_METADATA_SIZE, &what, authorization).await
        }
        .await
        .with_context(|| format!("fetching {what}"))?;
        // The registry's digest header is not trusted: hash the bytes, and compare with the
        // digest the user asked for, if any.
        let digest = Digest::of_bytes(&raw);
        if let Some(wanted) = reference.digest() {
            let wanted = Digest::parse(wanted)?;
            wanted.verify_bytes(&raw, &what)?;
        }
        Ok((digest, raw))
    }

    /// A small blob (`kind`: the image config, a signature claim), read up to the size its
    /// descriptor gives and no further.
    pub async fn fetch_blob_bytes(&self, digest: &Digest, size: u64, kind: &str) -> Result<Vec<u8>> {
        if size > MAX_METADATA_SIZE {
            anyhow::bail!("{kind} {digest} has an unreasonable size ({size} bytes)");
        }
        let what = format!("{kind} {digest}");
        async {
            let authorization = self.authorization(self.session().await?);
            self.metadata.small_blob(digest, size, &what, authorization).await
        }
        .await
        .with_context(|| format!("fetching {what}"))
    }

    /// A layer's bytes as they come; the caller bounds them to `size` (see [`super::SizedReader`]).
    pub async fn blob_stream(&self, digest: &Digest, size: u64) -> Result<BlobStream> {
        let what = format!("layer {digest}");
        let blob = async {
            let session = self.session().await?;
            let blob: BlobStream = match session.token {
                None => {
                    let stream = self.metadata.blob_stream(digest, size, &what, self.authorization(session)).await?;
                    Box::pin(StreamReader::new(Box::pin(stream)))
                }
                Some(_) => Box::pin(self.open_blob(digest, size, &what).await?),
            };
            anyhow::Ok(blob)
        };
        blob.await.with_context(|| format!("fetching {what}"))
    }

    /// A blob from the `oci-client` client that holds the token, failing after a silence longer
    /// than the timeout; its size is for the caller to bound. An announced length larger than
    /// `size` is refused at once.
    async fn open_blob(
        &self,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static> {
        tracing::debug!(registry = self.reference.resolve_registry(), "GET {what}");
        let blob = self
            .client()?
            .pull_blob_stream(&self.reference, digest.as_str())
            .await
            .map_err(|err| self.describer.describe(&err))?;
        refuse_announced_excess(what, size, blob.content_length)?;
        // The client's own read timeout may fire first: it is worded as ours.
        let silence = self.describer.silence(what);
        let describer = self.describer.clone();
        let silent = silence.clone();
        let stream = until_silent(blob, self.timeout, silence, move |err: std::io::Error| {
            if Describer::is_timeout(&err) {
                std::io::Error::new(std::io::ErrorKind::TimedOut, silent.clone())
            } else if err.get_ref().is_some_and(|inner| inner.is::<reqwest::Error>()) {
                describer.describe_io(&err)
            } else {
                err
            }
        });
        Ok(StreamReader::new(Box::pin(stream)))
    }
}

/// Whether `registry` is reached over plain HTTP: `--tls-verify=false`, a loopback address, or
/// `insecure = true` in registries.conf.
fn uses_plain_http(registry: &str, options: &RegistryOptions) -> Result<bool> {
    Ok(match options.tls_verify {
        Some(verify) => !verify,
        None => is_loopback(registry) || super::RegistriesConf::load(&options.registries_conf)?.is_insecure(registry),
    })
}

/// Checks `credentials` against `registry` (`host[:port]`) and, if it accepts them, saves them in
/// the auth file `options` names for writing (as `podman login`); returns that file.
pub async fn login(registry: &str, credentials: &Credentials, options: &RegistryOptions) -> Result<std::path::PathBuf> {
    let plain_http = uses_plain_http(registry, options)?;
    let roots = super::certs::registry_roots(registry, options.cert_dir.as_deref())?;
    let http = MetadataHttp::new(registry, "", plain_http, options.timeout, &roots)?;
    if !http.check_basic(credentials).await? {
        // A token service: it refuses a pull token to wrong credentials.
        let reference = crate::reference::parse_docker(&format!("{registry}/sysctr/login-check"))
            .map_err(|_| anyhow::anyhow!("'{registry}' is not a registry (HOST[:PORT])"))?;
        let auth = RegistryAuth::Basic(credentials.username.clone(), credentials.password.clone());
        client(registry, plain_http, options.timeout, &roots)?
            .auth(&reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(|_| anyhow::anyhow!("registry {registry} refused the user name or password"))?;
    }
    let file = options.auth.write_target();
    super::auth::save(&file, registry, credentials)?;
    Ok(file)
}

/// An `oci-client` client for the registry. Its reqwest client gives up on connecting after
/// `timeout`, and on an answer that stays silent as long (before its headers, or between two
/// chunks of its body).
fn client(registry: &str, plain_http: bool, timeout: std::time::Duration, roots: &[Vec<u8>]) -> Result<Client> {
    let protocol =
        if plain_http { ClientProtocol::HttpsExcept(vec![registry.to_string()]) } else { ClientProtocol::Https };
    let config = ClientConfig {
        protocol,
        extra_root_certificates: roots
            .iter()
            .map(|pem| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        read_timeout: Some(timeout),
        connect_timeout: Some(timeout),
        user_agent: USER_AGENT,
        ..Default::default()
    };
    // `Client::new` would silently fall back to defaults on a bad config.
    Client::try_from(config).context("configuring the registry client")
}

pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(host, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            host
        } else {
            registry
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for yes in ["127.0.0.1:5000", "127.3.4.5", "localhost:80", "[::1]:5000"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["10.0.0.1:5000", "registry.example:443", "localhost.example", "docker.io"] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
