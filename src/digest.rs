//! Content digests (`sha256:<hex>`) and a reader that checks one as the bytes stream past.

use std::io::{self, Read};

use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lower-case hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            bail!("unsupported digest '{text}': only sha256 is supported");
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            bail!("malformed digest '{text}'");
        }
        Ok(Digest(text.to_string()))
    }

    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The hex part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Fails unless `bytes` hash to this digest; `what` names the content in the error.
    pub fn verify_bytes(&self, bytes: &[u8], what: &str) -> Result<()> {
        let actual = Digest::of_bytes(bytes);
        if &actual != self {
            bail!("digest mismatch for {what}: expected {self}, got {actual}");
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Passes bytes through and, on reaching end of stream, fails with `InvalidData` unless they
/// hashed to the expected digest. A consumer that stops early must call [`DigestReader::finish`],
/// which drains the rest, so that a corrupt tail is never accepted.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    expected: Digest,
    what: String,
    verified: bool,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R, expected: Digest, what: impl Into<String>) -> Self {
        DigestReader { inner, hasher: Sha256::new(), expected, what: what.into(), verified: false }
    }

    /// Reads to the end and checks the digest.
    pub fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        if !self.verified {
            return Err(io::Error::other("digest was not verified"));
        }
        Ok(self.inner)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
        } else if !buf.is_empty() && !self.verified {
            let actual = hex::encode(self.hasher.clone().finalize());
            if actual != self.expected.hex() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("digest mismatch for {}: expected {}, got sha256:{actual}", self.what, self.expected),
                ));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().hex(), "a".repeat(64));
        for bad in
            ["", "sha256:", "sha512:abcd", &format!("sha256:{}", "A".repeat(64)), &format!("sha256:{}", "a".repeat(63))]
        {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reader_accepts_matching_and_rejects_corrupt_content() {
        let data = b"layer bytes".to_vec();
        let digest = Digest::of_bytes(&data);
        DigestReader::new(&data[..], digest.clone(), "blob").finish().unwrap();

        let mut corrupt = data.clone();
        corrupt[3] ^= 1;
        let err = DigestReader::new(&corrupt[..], digest, "blob").finish().err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("digest mismatch for blob"), "{err}");
    }

    #[test]
    fn early_stop_still_checks_the_tail() {
        let data = vec![7u8; 10_000];
        let digest = Digest::of_bytes(&data);
        let mut corrupt = data.clone();
        corrupt[9_999] = 0;
        let mut reader = DigestReader::new(&corrupt[..], digest, "blob");
        let mut head = [0u8; 100];
        reader.read_exact(&mut head).unwrap();
        assert!(reader.finish().is_err());
    }
}
