//! Bounds on what one layer can make sysctr do, so that a hostile image is refused with one clear
//! error naming the layer and the bound, instead of taking the host's memory, disk or stack.
//!
//! tar-rs reads a member's GNU long name, long link name and PAX records whole into memory before
//! it hands the member out, whatever size their headers declare. [`TarGuard`] sits under it and
//! gives it a budget of [`LayerLimits::header`] bytes for everything it reads between two members
//! (the import drains each member's data itself first), so that no declared size can make it
//! allocate more. The same guard stops the stream one byte past [`LayerLimits::bytes`].

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

use anyhow::{bail, Context, Result};

use crate::digest::Digest;

/// One of the bounds, with the flag that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Entries,
    Bytes,
    Header,
    PathLength,
    Depth,
}

impl Limit {
    /// The command-line flag that sets it (each also reads an environment variable, see the CLI).
    pub fn flag(self) -> &'static str {
        match self {
            Limit::Entries => "--max-layer-entries",
            Limit::Bytes => "--max-layer-size",
            Limit::Header => "--max-tar-header",
            Limit::PathLength => "--max-path-length",
            Limit::Depth => "--max-path-depth",
        }
    }

    fn is_size(self) -> bool {
        matches!(self, Limit::Bytes | Limit::Header)
    }
}

/// The bounds applied to every layer of a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLimits {
    /// Tar members of a layer, plus the directories their paths imply.
    pub entries: u64,
    /// The layer's uncompressed tar stream, and the sum of its file sizes (sparse files counted
    /// at their full size).
    pub bytes: u64,
    /// Everything tar-rs reads for one member before its data: GNU long name and link name, PAX
    /// records, GNU sparse map.
    pub header: u64,
    /// Bytes of a member's path or link target.
    pub path_length: u64,
    /// Components of a member's path.
    pub depth: u64,
}

impl LayerLimits {
    pub const DEFAULT: LayerLimits =
        LayerLimits { entries: 1_000_000, bytes: 64 << 30, header: 1 << 20, path_length: 4096, depth: 256 };

    pub fn get(&self, limit: Limit) -> u64 {
        match limit {
            Limit::Entries => self.entries,
            Limit::Bytes => self.bytes,
            Limit::Header => self.header,
            Limit::PathLength => self.path_length,
            Limit::Depth => self.depth,
        }
    }

    /// The error for `layer` going over `limit`; `what` says how, e.g. "has a path deeper than
    /// 256 components ('a/b/…')".
    pub fn exceeded(&self, layer: &Digest, limit: Limit, what: String) -> anyhow::Error {
        anyhow::Error::new(LimitExceeded { layer: layer.clone(), limit, value: self.get(limit), what })
    }
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits::DEFAULT
    }
}

/// A layer went over one of the bounds.
#[derive(Debug)]
pub struct LimitExceeded {
    pub layer: Digest,
    pub limit: Limit,
    pub value: u64,
    pub what: String,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.limit.is_size() { format_size(self.value) } else { self.value.to_string() };
        write!(
            f,
            "layer {} {}; refused by {}={} (raise it to accept this layer)",
            self.layer,
            self.what,
            self.limit.flag(),
            value
        )
    }
}

impl std::error::Error for LimitExceeded {}

/// `123`, `64K`, `1M`, `64G`, `2T`: a count or a size, with an optional power-of-1024 suffix.
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((at, suffix)) if suffix.is_ascii_alphabetic() => {
            let shift = match suffix.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => bail!("unknown suffix '{suffix}' (use K, M, G or T)"),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!("'{text}' is not a number with an optional K, M, G or T suffix");
    }
    let number: u64 = digits.parse().with_context(|| format!("'{text}' is out of range"))?;
    let value = number.checked_mul(1u64 << shift).with_context(|| format!("'{text}' is out of range"))?;
    if value == 0 {
        bail!("must be at least 1");
    }
    Ok(value)
}

/// The shortest spelling [`parse_size`] reads back as `value`.
pub fn format_size(value: u64) -> String {
    for (shift, suffix) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if value != 0 && value.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", value >> shift);
        }
    }
    value.to_string()
}

/// `64 GiB`, `1 MiB`, `1000 bytes`.
pub fn human_bytes(value: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if value != 0 && value.is_multiple_of(1u64 << shift) {
            return format!("{} {unit}", value >> shift);
        }
    }
    format!("{value} bytes")
}

/// What the import loop and the [`TarGuard`] under tar-rs share.
#[derive(Debug, Default)]
pub(super) struct GuardState {
    /// Bytes tar-rs may still read before the next member: `None` while a member's data is read.
    header_budget: Cell<Option<u64>>,
    /// Bytes read from the uncompressed stream so far.
    total: Cell<u64>,
    /// The bound a read went over, if any.
    hit: Cell<Option<Limit>>,
}

impl GuardState {
    /// From now until [`GuardState::end_headers`], tar-rs reads headers only.
    pub(super) fn begin_headers(&self, budget: u64) {
        self.header_budget.set(Some(budget));
    }

    pub(super) fn end_headers(&self) {
        self.header_budget.set(None);
    }

    pub(super) fn hit(&self) -> Option<Limit> {
        self.hit.get()
    }

    fn refuse(&self, limit: Limit) -> io::Error {
        self.hit.set(Some(limit));
        io::Error::other(format!("over the bound {}", limit.flag()))
    }
}

/// Passes the uncompressed tar stream through, failing a read that goes over the byte bound of
/// the layer or over the header budget (see the module documentation).
pub(super) struct TarGuard<R> {
    inner: R,
    state: Rc<GuardState>,
    max_total: u64,
}

impl<R: Read> TarGuard<R> {
    pub(super) fn new(inner: R, state: Rc<GuardState>, max_total: u64) -> Self {
        TarGuard { inner, state, max_total }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let state = &self.state;
        let mut len = buf.len();
        let budget = state.header_budget.get();
        if let Some(left) = budget {
            if left == 0 {
                return Err(state.refuse(Limit::Header));
            }
            len = len.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        // One byte past the bound, to tell a stream that ends right at it from a longer one.
        let allowance = self.max_total.saturating_sub(state.total.get()).saturating_add(1);
        len = len.min(usize::try_from(allowance).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        let total = state.total.get() + n as u64;
        state.total.set(total);
        if total > self.max_total {
            return Err(state.refuse(Limit::Bytes));
        }
        if let Some(left) = budget {
            state.header_budget.set(Some(left - n as u64));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for (text, value) in
            [("1", 1), ("4096", 4096), ("64K", 64 << 10), ("1m", 1 << 20), ("64G", 64 << 30), ("2T", 2 << 40)]
        {
            assert_eq!(parse_size(text).unwrap(), value, "{text}");
            assert_eq!(parse_size(&format_size(value)).unwrap(), value);
        }
        assert_eq!(format_size(1_000_000), "1000000");
        assert_eq!(human_bytes(64 << 30), "64 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
        for bad in ["", "0", "-1", "1.5G", "12X", "G", "99999999999T", "1 000"] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_guard_bounds_headers_and_the_whole_stream() {
        let data = vec![7u8; 10_000];
        let state = Rc::new(GuardState::default());
        let mut guard = TarGuard::new(&data[..], state.clone(), 10_000);
        let mut buf = vec![0u8; 4096];
        state.begin_headers(1000);
        assert_eq!(guard.read(&mut buf).unwrap(), 1000);
        assert!(guard.read(&mut buf).is_err());
        assert_eq!(state.hit(), Some(Limit::Header));

        let state = Rc::new(GuardState::default());
        let mut guard = TarGuard::new(&data[..], state.clone(), 10_000);
        assert_eq!(io::copy(&mut guard, &mut io::sink()).unwrap(), 10_000, "a stream right at the bound");
        assert_eq!(state.hit(), None);

        let state = Rc::new(GuardState::default());
        let mut guard = TarGuard::new(&data[..], state.clone(), 9_999);
        assert!(io::copy(&mut guard, &mut io::sink()).is_err());
        assert_eq!(state.hit(), Some(Limit::Bytes));
    }

    #[test]
    fn the_error_names_the_layer_the_bound_and_the_flag() {
        let layer = Digest::of_bytes(b"layer");
        let err = LayerLimits::default().exceeded(&layer, Limit::Depth, "has a path deeper than 256 components".into());
        assert_eq!(
            err.to_string(),
            format!(
                "layer {layer} has a path deeper than 256 components; refused by --max-path-depth=256 (raise it to accept this layer)"
            )
        );
        let err = LayerLimits::default().exceeded(&layer, Limit::Bytes, "unpacks to more than 64 GiB".into());
        assert!(err.to_string().ends_with("--max-layer-size=64G (raise it to accept this layer)"), "{err}");
    }
}
