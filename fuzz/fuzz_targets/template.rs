//! Template substitution (`$NAME`, `${NAME}`, `$$`), as applied to every file of an image's
//! `/exports`: `placeholders`, `substitute`, `render_file` for line-oriented files (units,
//! tmpfiles.d) and raw ones, and the JSON-string check of `--set` values.
//!
//! Input: `TEMPLATE` then `\x1fNAME=VALUE` fields, the values.
//!
//! Invariants, besides no panic:
//! - `placeholders` and `substitute` agree: on the invalid placeholder, if any, and a missing
//!   value is reported only for a placeholder that has none;
//! - `render_file` of a raw file is `substitute`;
//! - a line-oriented file rendered has the template's line breaks, NULs and line continuations
//!   (a backslash ending a line), no more;
//! - a tmpfiles.d file rendered has, line by line, the fields of the template rendered with a
//!   neutral value (`x`) for every placeholder: a value adds no field, removes none, and turns no
//!   entry into a comment (a line left blank is no entry either way);
//! - in a template that is valid JSON once rendered, every placeholder inside a JSON string has
//!   its values checked by `check_json_string_values`, and a non-empty value placed inside a
//!   string that passes the check never changes the JSON structure: the token stream, strings
//!   taken as one token each, is that of the template rendered with neutral values. (Values
//!   outside strings are JSON fragments on purpose; an empty value after a backslash leaves the
//!   template's own escape to the text after it.)

#![no_main]

mod common;

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sysctr::template::{check_json_string_values, placeholders, render_file, substitute, FileKind, TemplateError};

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let mut fields = text.split(common::FIELD);
    let template = fields.next().unwrap_or_default();
    let values = common::pairs(fields);

    let names = placeholders(template);
    let substituted = substitute(template, &values);
    match (&names, &substituted) {
        (Ok(names), Ok(_)) => assert!(names.iter().all(|n| values.contains_key(n))),
        (Ok(names), Err(TemplateError::Unreplaced { variable })) => {
            assert!(names.contains(variable) && !values.contains_key(variable), "{variable}")
        }
        // Substitution stops at the first missing value, which may come before the invalid
        // placeholder, as Python's does.
        (Err(_), Err(TemplateError::Unreplaced { variable })) => assert!(!values.contains_key(variable)),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (names, substituted) => panic!("placeholders {names:?} but substitute {substituted:?}"),
    }
    let Ok(names) = names else { return };

    let raw = render_file("f", template, FileKind::Raw, &values);
    assert_eq!(raw.as_ref().ok(), substituted.as_ref().ok());

    let empty: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), String::new())).collect();
    let bare = substitute(template, &empty).expect("every placeholder has a value");
    if let Ok(line_oriented) = render_file("f.service", template, FileKind::LineOriented, &values) {
        for c in ['\n', '\r', '\0'] {
            assert_eq!(
                line_oriented.matches(c).count(),
                bare.matches(c).count(),
                "a value added {c:?} to a line-oriented file: {line_oriented:?}"
            );
        }
        // A value must not end a line with a backslash, which would join the next line to it.
        let continuations = |s: &str| s.matches("\\\n").count() + s.matches("\\\r").count();
        assert!(
            continuations(&line_oriented) <= continuations(&bare),
            "a value joined two lines of a line-oriented file: {line_oriented:?}"
        );
    }

    tmpfiles_lines_keep_their_fields(template, &names, &values);
    json_strings_keep_structure(template, &names, &values);
});

/// See the module doc: values stay within the fields of their tmpfiles.d line.
fn tmpfiles_lines_keep_their_fields(
    template: &str,
    names: &std::collections::BTreeSet<String>,
    values: &BTreeMap<String, String>,
) {
    let Ok(rendered) = render_file("f.conf", template, FileKind::Tmpfiles, values) else { return };
    let neutral: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), "x".to_string())).collect();
    let base = substitute(template, &neutral).expect("every placeholder has a value");
    let shape = |line: &str| (line.trim_start().starts_with('#'), line.split_whitespace().count());
    assert_eq!(rendered.split('\n').count(), base.split('\n').count(), "a value added a line: {rendered:?}");
    for (line, base_line) in rendered.split('\n').zip(base.split('\n')) {
        if !line.trim().is_empty() && !shape(base_line).0 {
            assert_eq!(shape(line), shape(base_line), "a value changed the fields of {base_line:?}: {line:?}");
        }
    }
}

/// See the module doc: values placed inside JSON strings stay there, and every placeholder
/// inside a JSON string is one whose values are checked.
fn json_strings_keep_structure(
    template: &str,
    names: &std::collections::BTreeSet<String>,
    values: &BTreeMap<String, String>,
) {
    // `true` is valid JSON where a value goes, and after a backslash in a string (`\t`).
    let neutral: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), "true".to_string())).collect();
    let base = substitute(template, &neutral).expect("every placeholder has a value");
    // The markers below must not be in the template already.
    if serde_json::from_str::<serde_json::Value>(&base).is_err() || template.contains(['\u{e000}', '\u{e001}']) {
        return;
    }
    // The placeholders the check treats as inside a string: those for which it refuses a quote.
    let checked: Vec<&String> = names
        .iter()
        .filter(|name| {
            let quote = BTreeMap::from([((*name).clone(), "\"".to_string())]);
            check_json_string_values("config.json.template", template, &quote).is_err()
        })
        .collect();
    // The placeholders that are inside a string, found independently: each replaced by a marker
    // of its own, and the result scanned as JSON.
    let markers: BTreeMap<String, String> =
        names.iter().enumerate().map(|(i, n)| (n.clone(), format!("\u{e000}{i}\u{e001}"))).collect();
    let marked = substitute(template, &markers).expect("every placeholder has a value");
    let mut in_strings = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if marker_in_string(&marked, &format!("\u{e000}{i}\u{e001}")) {
            assert!(checked.contains(&name), "${name} is inside a JSON string but its values are not checked");
            in_strings.push(name);
        }
    }

    if check_json_string_values("config.json.template", template, values).is_err() {
        return;
    }
    // Values placed inside strings, as the markers found them (the check may count more, after
    // a backslash, where a value could take an escape away: that only makes it stricter). An
    // empty value there leaves an escape to the text after it: the template's own doing.
    if in_strings.iter().any(|name| values.get(*name).is_some_and(String::is_empty)) {
        return;
    }
    let mut rendered = neutral.clone();
    for name in in_strings {
        if let Some(value) = values.get(name) {
            rendered.insert(name.clone(), value.clone());
        }
    }
    let full = substitute(template, &rendered).expect("every placeholder has a value");
    // A value may make the file invalid (runc refuses it then): that is no injection.
    if serde_json::from_str::<serde_json::Value>(&full).is_err() {
        return;
    }
    assert_eq!(tokens(&full), tokens(&base), "a value left its JSON string: {full}");
}

/// Whether `marker` starts inside a JSON string literal of `text`.
fn marker_in_string(text: &str, marker: &str) -> bool {
    let (mut inside, mut escaped) = (false, false);
    for (at, c) in text.char_indices() {
        if text[at..].starts_with(marker) && inside {
            return true;
        }
        match (inside, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, _, '"') => inside = !inside,
            _ => {}
        }
    }
    false
}

/// JSON tokens, every string literal as one `"` token.
fn tokens(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
                out.push("\"".to_string());
            }
            '{' | '}' | '[' | ']' | ':' | ',' => out.push(c.to_string()),
            c if c.is_whitespace() => {}
            c => {
                let mut literal = c.to_string();
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "{}[]:,\"".contains(next) {
                        break;
                    }
                    literal.push(next);
                    chars.next();
                }
                out.push(literal);
            }
        }
    }
    out
}
