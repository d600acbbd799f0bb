//! Docker's reference grammar (`distribution/reference`), matched by hand.
//!
//! `oci-spec` parses a reference with one large regular expression, compiled on first use; the
//! compilation alone costs every command about 40 ms, more than all the rest of a pull that finds
//! nothing new. This module accepts exactly the strings that expression accepts (ASCII only, as
//! Docker's own grammar: `oci-spec`'s `\w` also lets Unicode letters into a tag), and builds the
//! same [`Reference`], normalized in the same way, with the same errors.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*
//! domain     := host-part ( "." host-part )* [ ":" [0-9]+ ]
//! host-part  := [A-Za-z0-9] | [A-Za-z0-9] [A-Za-z0-9-]* [A-Za-z0-9]
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"* ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" [0-9A-Fa-f]{32,}
//! algorithm  := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )*
//! ```

use oci_spec::distribution::{ParseError, Reference};

/// The longest repository, counted after normalization (`library/` added for Docker Hub).
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const DOCKER_HUB_OFFICIAL: &str = "library";

/// Parses `input` as `s.parse::<Reference>()` does.
pub fn parse(input: &str) -> Result<Reference, ParseError> {
    if input.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    // Neither a name nor a tag holds '@', nor a digest ':' outside its separator.
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (input, None),
    };
    // A ':' after the last '/' starts the tag; any other ':' is the domain's port.
    let (name, tag) = match rest.rfind(':') {
        Some(at) if !rest[at..].contains('/') => (&rest[..at], Some(&rest[at + 1..])),
        _ => (rest, None),
    };
    let well_formed = is_name(name) && tag.is_none_or(is_tag) && digest.is_none_or(is_digest);
    if !well_formed {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(digest) = digest {
        let (algorithm, hex) = digest.split_once(':').ok_or(ParseError::DigestInvalidFormat)?;
        let expected = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(ParseError::DigestUnsupported),
        };
        if hex.len() != expected {
            return Err(ParseError::DigestInvalidLength);
        }
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into()),
        (Some(tag), None) => Reference::with_tag(registry, repository, tag.into()),
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (None, None) => Reference::with_tag(registry, repository, "latest".into()),
    })
}

/// The registry and the repository a valid name stands for: Docker Hub unless the first
/// component looks like a host (a '.', a port, or `localhost`), and `library/` for Hub's
/// one-component names.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest.to_string()),
        _ => (DOCKER_HUB, name.to_string()),
    };
    if domain == DOCKER_HUB_LEGACY {
        domain = DOCKER_HUB;
    }
    if domain == DOCKER_HUB && !repository.contains('/') {
        repository = format!("{DOCKER_HUB_OFFICIAL}/{repository}");
    }
    (domain.to_string(), repository)
}

fn is_name(name: &str) -> bool {
    let is_path = |path: &str| path.split('/').all(is_path_component);
    is_path(name) || name.split_once('/').is_some_and(|(domain, path)| is_domain(domain) && is_path(path))
}

fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let is_host_part = |part: &str| {
        let bytes = part.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            }
            _ => false,
        }
    };
    host.split('.').all(is_host_part) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// One component of a repository path: lower-case letters and digits, separated by one '.', one
/// or two '_', or any number of '-'.
fn is_path_component(component: &str) -> bool {
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return false };
    if !is_alnum(first) || !is_alnum(last) {
        return false;
    }
    bytes
        .split(|&b| is_alnum(b))
        .filter(|separator| !separator.is_empty())
        .all(|separator| matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-'))
}

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    bytes.len() <= TAG_LENGTH_MAX
        && bytes.first().is_some_and(|&b| word(b))
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else { return false };
    let is_algorithm_part = |part: &str| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic) && bytes.iter().all(u8::is_ascii_alphanumeric)
    };
    algorithm.split(['-', '_', '+', '.']).all(is_algorithm_part)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Differential: random strings built from the grammar's pieces, valid and not, parsed here
    /// and by `oci-spec`'s regular expression, must give the same reference or the same error.
    #[test]
    fn accepts_and_normalizes_exactly_as_the_regular_expression() {
        let hex64 = "0123456789abcdef".repeat(4);
        let hex128 = hex64.repeat(2);
        let sha256 = format!("sha256:{hex64}");
        let sha512 = format!("sha512:{hex128}");
        let hex40 = format!("md5:{}", &hex64[..40]);
        let long_component = "a".repeat(250);
        let long_tag = "t".repeat(128);
        let pieces: &[&str] = &[
            "a",
            "b",
            "z",
            "0",
            "9",
            "A",
            "Q",
            ".",
            "_",
            "__",
            "___",
            "-",
            "--",
            ":",
            "/",
            "/",
            "/",
            "@",
            "@",
            "localhost",
            "docker.io",
            "index.docker.io",
            "reg.example",
            "Reg-1.example",
            ":5000",
            ":",
            "x.y:80",
            &sha256,
            &sha512,
            &hex40,
            "sha256:",
            "sha256:abc",
            "SHA256:",
            "a+b.c:",
            "library",
            "busybox",
            "-a",
            "a-",
            ".a",
            "\n",
            " ",
            "%",
            &long_component,
            &long_tag,
            "é",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let input: String = (0..1 + next(8)).map(|_| pieces[next(pieces.len())]).collect();
            let theirs = input.parse::<Reference>();
            if !input.is_ascii() {
                // Docker's grammar is ASCII; `oci-spec`'s `\w` takes Unicode letters in a tag.
                assert!(parse(&input).is_err() || theirs.is_ok(), "{input:?}");
                continue;
            }
            assert_eq!(parse(&input), theirs, "{input:?}");
            if theirs.is_ok() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both sides of the grammar were exercised, not only one.
        assert!(accepted > 10_000 && refused > 10_000, "accepted {accepted}, refused {refused}");
    }

    #[test]
    fn named_cases() {
        let hex = "a".repeat(64);
        let cases = [
            ("busybox", Ok(("docker.io", "library/busybox", Some("latest"), None))),
            ("index.docker.io/x/y:1", Ok(("docker.io", "x/y", Some("1"), None))),
            ("localhost/a", Ok(("localhost", "a", Some("latest"), None))),
            ("127.0.0.1:5000/a/b-c__d:v1.2", Ok(("127.0.0.1:5000", "a/b-c__d", Some("v1.2"), None))),
            ("Host:5000/a", Ok(("Host:5000", "a", Some("latest"), None))),
            ("a:5000", Ok(("docker.io", "library/a", Some("5000"), None))),
        ];
        for (input, want) in cases {
            let got = parse(input).map(|r| {
                (
                    r.registry().to_string(),
                    r.repository().to_string(),
                    r.tag().map(str::to_string),
                    r.digest().map(str::to_string),
                )
            });
            let want = want.map(|(reg, repo, tag, digest): (&str, &str, Option<&str>, Option<&str>)| {
                (reg.to_string(), repo.to_string(), tag.map(str::to_string), digest.map(str::to_string))
            });
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(
            parse(&format!("a@sha256:{hex}")).map(|r| r.digest().map(str::to_string)),
            Ok(Some(format!("sha256:{hex}")))
        );
        assert_eq!(parse(&format!("a@sha256:{}", &hex[..40])), Err(ParseError::DigestInvalidLength));
        assert_eq!(parse(&format!("a@foo:{hex}")), Err(ParseError::DigestUnsupported));
        assert_eq!(parse(""), Err(ParseError::NameEmpty));
        assert_eq!(parse("a/B"), Err(ParseError::ReferenceInvalidFormat));
        assert_eq!(parse("a:é"), Err(ParseError::ReferenceInvalidFormat));
        assert_eq!(parse(&"a".repeat(250)), Err(ParseError::NameTooLong));
    }
}
