//! Certificate authorities for a registry, where containers/image finds them: the `*.crt` files of
//! `/etc/containers/certs.d/HOST[:PORT]/` and `/etc/docker/certs.d/HOST[:PORT]/`, or of the one
//! directory `--cert-dir` names. They are trusted on top of the system's.
//!
//! Client certificates (`*.cert` with `*.key`) are refused by name: the registry client cannot
//! present one for blobs, and a pull that fails half-way on a handshake would say less.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The directories holding one directory of certificates per registry.
pub const CERTS_DIRS: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];
/// The largest certificate file read.
const MAX_CERT_FILE: u64 = 1024 * 1024;
/// The most files read from one directory.
const MAX_CERT_FILES: usize = 64;

/// The CA certificates to trust for `registry` (`HOST[:PORT]`), one PEM block each.
pub fn registry_roots(registry: &str, cert_dir: Option<&Path>) -> Result<Vec<Vec<u8>>> {
    let dirs: Vec<PathBuf> = match cert_dir {
        Some(dir) => vec![dir.to_path_buf()],
        None => CERTS_DIRS.iter().map(|root| Path::new(root).join(registry)).collect(),
    };
    let mut roots = Vec::new();
    for dir in dirs {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        files.sort();
        if files.len() > MAX_CERT_FILES {
            bail!("{} holds more than {MAX_CERT_FILES} files", dir.display());
        }
        for file in files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("crt") => {
                    let bytes = super::read_host_config(&file, MAX_CERT_FILE)?
                        .with_context(|| format!("{} went away while it was read", file.display()))?;
                    roots.extend(pem_certificates(&bytes, &file)?);
                }
                Some("cert" | "key") => bail!(
                    "{}: client certificates for registries are not supported; remove the pair or use another directory",
                    file.display()
                ),
                _ => {}
            }
        }
    }
    Ok(roots)
}

/// Each `CERTIFICATE` block of a PEM file, whole; a file with none is an error.
fn pem_certificates(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(bytes).with_context(|| format!("{} is not a PEM file", path.display()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(length) = rest[start..].find(END) else {
            bail!("{}: a certificate is cut short", path.display());
        };
        let end = start + length + END.len();
        blocks.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    if blocks.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_read_per_registry_and_client_pairs_refused() {
        let dir = tempfile::tempdir().unwrap();
        let block = |n: u8| format!("-----BEGIN CERTIFICATE-----\nAA{n}\n-----END CERTIFICATE-----\n");
        std::fs::write(dir.path().join("ca.crt"), format!("{}junk{}", block(1), block(2))).unwrap();
        std::fs::write(dir.path().join("README"), "ignored").unwrap();
        let roots = registry_roots("reg:5000", Some(dir.path())).unwrap();
        assert_eq!(roots, [block(1).into_bytes(), block(2).into_bytes()]);
        assert!(registry_roots("reg:5000", Some(&dir.path().join("none"))).unwrap().is_empty());

        std::fs::write(dir.path().join("bad.crt"), "not a certificate").unwrap();
        let err = registry_roots("reg:5000", Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("bad.crt holds no PEM certificate"), "{err}");
        std::fs::remove_file(dir.path().join("bad.crt")).unwrap();
        std::fs::write(dir.path().join("client.cert"), block(3)).unwrap();
        let err = registry_roots("reg:5000", Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("client.cert: client certificates for registries are not supported"), "{err}");
    }
}
