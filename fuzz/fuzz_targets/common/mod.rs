//! Helpers shared by the fuzz targets.

#![allow(dead_code)]

/// Separates the fields of a text input (U+001F, the ASCII unit separator): rare in real files,
/// and one byte, so libFuzzer's mutations can add and remove fields.
pub const FIELD: char = '\u{1f}';

/// The input as text, or `None` when it is not UTF-8 (every parser here reads text).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `NAME=VALUE` fields into a map; fields without `=` are skipped.
pub fn pairs<'a>(fields: impl Iterator<Item = &'a str>) -> std::collections::BTreeMap<String, String> {
    fields
        .filter_map(|field| field.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}
