//! Signing keys the signature tests create: a GPG key in a GNUPGHOME of its own, which skopeo
//! signs with (simple signing, into a `file://` lookaside), and a sigstore key (ECDSA P-256,
//! RustCrypto) whose signatures the tests attach to images themselves, in cosign's format:
//! Debian's skopeo is built without sigstore.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;

use super::image::skopeo_copy_with;
use super::registry::Registry;

/// An ed25519 signing key made by `gpg`, without a passphrase.
pub struct GpgKey {
    home: tempfile::TempDir,
    pub fingerprint: String,
}

impl GpgKey {
    pub fn generate(name: &str) -> Result<GpgKey> {
        Self::generate_with(name, &[], "never")
    }

    /// A key made on 2020-01-01 that expired a day later.
    pub fn generate_expired(name: &str) -> Result<GpgKey> {
        Self::generate_with(name, &["--faked-system-time", "20200101T000000!"], "1d")
    }

    fn generate_with(name: &str, extra: &[&str], expires: &str) -> Result<GpgKey> {
        // gpg-agent's socket lives in the home: keep its path short.
        let home = tempfile::Builder::new().prefix("gpg.").tempdir_in("/var/tmp")?;
        let mut key = GpgKey { home, fingerprint: String::new() };
        let user = format!("{name} <{name}@sysctr.invalid>");
        let mut args = vec!["--batch", "--passphrase", ""];
        args.extend(extra);
        args.extend(["--quick-gen-key", &user, "ed25519", "sign", expires]);
        key.gpg(&args)?;
        let listing = key.gpg(&["--list-keys", "--with-colons"])?;
        key.fingerprint = String::from_utf8_lossy(&listing)
            .lines()
            .find_map(|line| line.strip_prefix("fpr:").map(|rest| rest.trim_matches(':').to_string()))
            .context("gpg listed no fingerprint")?;
        Ok(key)
    }

    fn gpg(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new("gpg").args(args).env("GNUPGHOME", self.home.path()).output().context("running gpg")?;
        if !out.status.success() {
            bail!("gpg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    }

    /// Signs `data` as `gpg --sign` does (a compressed signed message), as if at `time`
    /// (`YYYYMMDDThhmmss!`) if given.
    pub fn sign(&self, data: &[u8], time: Option<&str>) -> Result<Vec<u8>> {
        let input = self.home.path().join("to-sign");
        let output = self.home.path().join("signed");
        std::fs::write(&input, data)?;
        let mut args = vec!["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""];
        if let Some(time) = time {
            args.extend(["--faked-system-time", time]);
        }
        let (input, output) = (input.to_str().context("path")?, output.to_str().context("path")?);
        args.extend(["--local-user", &self.fingerprint, "--output", output, "--sign", input]);
        self.gpg(&args)?;
        Ok(std::fs::read(output)?)
    }

    /// Revokes the key with the revocation certificate gpg made with it.
    pub fn revoke(&self) -> Result<()> {
        let stored = self.home.path().join(format!("openpgp-revocs.d/{}.rev", self.fingerprint));
        // gpg stores it with the armor line escaped, so that it is not imported by accident.
        let certificate = std::fs::read_to_string(&stored)?.replace(":-----BEGIN", "-----BEGIN");
        let file = self.home.path().join("revocation.asc");
        std::fs::write(&file, certificate)?;
        self.gpg(&["--batch", "--import", file.to_str().context("path")?])?;
        Ok(())
    }

    /// The public key, binary as `gpg --export` writes it, or ASCII-armored.
    pub fn public_key(&self, armored: bool) -> Result<Vec<u8>> {
        let mut args = vec!["--export"];
        if armored {
            args.push("--armor");
        }
        args.push(&self.fingerprint);
        self.gpg(&args)
    }

    /// Pushes `oci:layout:tag` to `dest` with `skopeo copy --sign-by`, its signature written under
    /// the directory `lookaside`; `identity` is the reference signed, if not `dest`.
    pub fn push_signed(
        &self,
        layout: &Path,
        tag: &str,
        dest: &str,
        lookaside: &Path,
        identity: Option<&str>,
    ) -> Result<()> {
        let registries_d = self.home.path().join("registries.d");
        std::fs::create_dir_all(&registries_d)?;
        std::fs::write(
            registries_d.join("staging.yaml"),
            format!("default-docker:\n  lookaside-staging: file://{}\n", lookaside.display()),
        )?;
        let mut extra = vec!["--sign-by", &self.fingerprint, "--registries.d", registries_d.to_str().context("path")?];
        if let Some(identity) = identity {
            extra.extend(["--sign-identity", identity]);
        }
        skopeo_copy_with(&extra, &[("GNUPGHOME", self.home.path())], layout, tag, dest)
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").args(["--kill", "gpg-agent"]).env("GNUPGHOME", self.home.path()).status();
    }
}

/// An ECDSA P-256 key, as `cosign generate-key-pair` makes, derived from `seed`.
pub struct SigstoreKey {
    key: p256::ecdsa::SigningKey,
}

impl SigstoreKey {
    pub fn from_seed(seed: u8) -> SigstoreKey {
        let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("a valid scalar");
        SigstoreKey { key }
    }

    /// The public key in PEM (SubjectPublicKeyInfo), as `cosign.pub`.
    pub fn public_pem(&self) -> String {
        self.key.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).expect("encodable")
    }

    /// The DER signature of `payload` (SHA-256).
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(payload);
        signature.to_der().as_bytes().to_vec()
    }

    /// Attaches to manifest `digest` of `repo` a signature of the claim that `claimed_digest` is
    /// `identity`, as cosign does (tag `sha256-HEX.sig`). Returns the claim and the signature.
    pub fn attach(
        &self,
        registry: &Registry,
        repo: &str,
        digest: &str,
        claimed_digest: &str,
        identity: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let claim = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": identity},
                "image": {"docker-manifest-digest": claimed_digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))?;
        let signature = self.sign(&claim);
        let config = b"{}";
        let config_digest = registry.put_blob(repo, config)?;
        let claim_digest = registry.put_blob(repo, &claim)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
            "layers": [{
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "size": claim.len(),
                "digest": claim_digest,
                "annotations": {
                    "dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(&signature)
                }
            }]
        });
        let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        registry.put_manifest(
            repo,
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest)?,
        )?;
        Ok((claim, signature))
    }
}
