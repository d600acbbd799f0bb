//! `$VAR` substitution with the exact semantics of Python's `string.Template.substitute`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a template could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A placeholder names a variable that has no value.
    Unreplaced { variable: String },
    /// A `$` not followed by `$`, an identifier or a braced identifier. `line` and `column` are
    /// 1-based and point at the `$`, counted as Python counts them (code points; every line
    /// boundary of `str.splitlines`).
    InvalidPlaceholder { line: usize, column: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreplaced { variable } => {
                write!(f, "template still contains an unreplaced value for: '{variable}'")
            }
            Self::InvalidPlaceholder { line, column } => {
                write!(f, "invalid placeholder at line {line}, column {column}")
            }
        }
    }
}

impl std::error::Error for TemplateError {}

/// Substitutes `$NAME`, `${NAME}` and `$$` like Python's `string.Template.substitute`.
///
/// Values are inserted as they are, with no escaping.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in Pieces::new(text) {
        match piece? {
            Piece::Text(literal) => out.push_str(literal),
            Piece::Variable(name) => out.push_str(lookup(values, name)?),
        }
    }
    Ok(out)
}

/// The names of the variables a template uses.
pub fn placeholders(text: &str) -> Result<BTreeSet<String>, TemplateError> {
    let mut names = BTreeSet::new();
    for piece in Pieces::new(text) {
        if let Piece::Variable(name) = piece? {
            names.insert(name.to_owned());
        }
    }
    Ok(names)
}

/// The value of `name`, or the error for a missing variable.
pub(super) fn lookup<'v>(values: &'v BTreeMap<String, String>, name: &str) -> Result<&'v str, TemplateError> {
    values.get(name).map(String::as_str).ok_or_else(|| TemplateError::Unreplaced { variable: name.to_owned() })
}

/// Whether `name` matches `[_a-zA-Z][_a-zA-Z0-9]*`.
pub(super) fn is_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && is_identifier_start(bytes[0]) && identifier_end(bytes, 0) == bytes.len()
}

/// One part of a template, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece<'t> {
    /// Text copied to the output as is (`$$` yields a `Text("$")`).
    Text(&'t str),
    /// A `$NAME` or `${NAME}` placeholder.
    Variable(&'t str),
}

/// Splits a template into [`Piece`]s; stops after the first invalid placeholder.
#[derive(Debug)]
pub(super) struct Pieces<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Pieces<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Self { text, pos: 0 }
    }
}

impl<'t> Iterator for Pieces<'t> {
    type Item = Result<Piece<'t>, TemplateError>;

    fn next(&mut self) -> Option<Self::Item> {
        let text = self.text;
        let bytes = text.as_bytes();
        let start = self.pos;
        if start >= bytes.len() {
            return None;
        }
        // Every byte examined below is ASCII, so each slice boundary is a char boundary.
        let dollar = match text[start..].find('$') {
            Some(0) => start,
            Some(offset) => {
                self.pos = start + offset;
                return Some(Ok(Piece::Text(&text[start..self.pos])));
            }
            None => {
                self.pos = bytes.len();
                return Some(Ok(Piece::Text(&text[start..])));
            }
        };
        let after = dollar + 1;
        let piece = match bytes.get(after) {
            Some(b'$') => {
                self.pos = after + 1;
                Piece::Text(&text[dollar..after])
            }
            Some(&b) if is_identifier_start(b) => {
                let end = identifier_end(bytes, after);
                self.pos = end;
                Piece::Variable(&text[after..end])
            }
            Some(b'{') if bytes.get(after + 1).is_some_and(|&b| is_identifier_start(b)) => {
                let end = identifier_end(bytes, after + 1);
                if bytes.get(end) != Some(&b'}') {
                    return Some(Err(self.invalid_at(dollar)));
                }
                self.pos = end + 1;
                Piece::Variable(&text[after + 1..end])
            }
            _ => return Some(Err(self.invalid_at(dollar))),
        };
        Some(Ok(piece))
    }
}

impl Pieces<'_> {
    /// The error for an invalid placeholder whose `$` is at byte `dollar`; ends the iteration.
    fn invalid_at(&mut self, dollar: usize) -> TemplateError {
        self.pos = self.text.len();
        let (line, column) = python_position(&self.text[..dollar]);
        TemplateError::InvalidPlaceholder { line, column }
    }
}

/// Line and column of the character that follows `before`, as Python's `string.Template`
/// reports them: lines split like `str.splitlines`, columns counted in code points, both 1-based.
fn python_position(before: &str) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    let mut previous = None;
    for c in before.chars() {
        if is_python_line_boundary(c) {
            // "\r\n" is one boundary.
            if !(c == '\n' && previous == Some('\r')) {
                line += 1;
            }
            column = 1;
        } else {
            column += 1;
        }
        previous = Some(c);
    }
    (line, column)
}

/// The line boundaries of Python's `str.splitlines`.
fn is_python_line_boundary(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_identifier_start(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphabetic()
}

/// The end of the identifier starting at `start` (the longest run of identifier bytes).
fn identifier_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| !(b == b'_' || b.is_ascii_alphanumeric()))
        .map_or(bytes.len(), |len| start + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::test_values as values;

    #[test]
    fn substitutes_like_python() {
        let vals = values(&[("X", "x"), ("Xsuffix", "long"), ("_a1", "under"), ("EMPTY", ""), ("DOLLAR", "$Y ${Z} $")]);
        let cases = [
            ("$X", "x"),
            ("${X}", "x"),
            ("$$", "$"),
            ("$$X", "$X"),
            ("$$$X", "$x"),
            ("$$$$", "$$"),
            ("$Xsuffix", "long"),
            ("${X}suffix", "xsuffix"),
            ("$X-suffix", "x-suffix"),
            ("$X.$X", "x.x"),
            ("a$_a1!", "aunder!"),
            ("${_a1}", "under"),
            ("[$EMPTY]", "[]"),
            ("no placeholders at all", "no placeholders at all"),
            ("", ""),
            ("é$X€", "éx€"),
            // Values are inserted raw and never substituted again.
            ("$DOLLAR", "$Y ${Z} $"),
            ("line1\n$X\r\n${X}", "line1\nx\r\nx"),
        ];
        for (template, expected) in cases {
            assert_eq!(substitute(template, &vals).as_deref(), Ok(expected), "{template:?}");
        }
    }

    #[test]
    fn inserts_json_fragments_raw() {
        let template = r#"{"mounts": [{"a": 0}$ADDTL_MOUNTS]}"#;
        let cases = [("", r#"{"mounts": [{"a": 0}]}"#), (r#",{"a":1}"#, r#"{"mounts": [{"a": 0},{"a":1}]}"#)];
        for (mounts, expected) in cases {
            let vals = values(&[("ADDTL_MOUNTS", mounts)]);
            assert_eq!(substitute(template, &vals).as_deref(), Ok(expected));
        }
    }

    #[test]
    fn missing_variable_is_named() {
        let vals = values(&[("X", "x")]);
        let cases = [("$Y", "Y"), ("${Y}", "Y"), ("$Xsuffix", "Xsuffix"), ("$X $Y $Z", "Y"), ("$$ ${x}", "x")];
        for (template, missing) in cases {
            assert_eq!(
                substitute(template, &vals),
                Err(TemplateError::Unreplaced { variable: missing.to_owned() }),
                "{template:?}"
            );
        }
        let message = substitute("$Y", &vals).unwrap_err().to_string();
        assert!(message.contains("unreplaced value for: 'Y'"), "{message}");
    }

    #[test]
    fn invalid_placeholders_report_python_positions() {
        let vals = values(&[("X", "x")]);
        let cases = [
            ("$", 1, 1),
            ("$ ", 1, 1),
            ("$1", 1, 1),
            ("${", 1, 1),
            ("${X", 1, 1),
            ("${1}", 1, 1),
            ("${X Y}", 1, 1),
            ("${}", 1, 1),
            ("${ X}", 1, 1),
            ("$-", 1, 1),
            ("$é", 1, 1),
            ("ab$", 1, 3),
            ("$X $", 1, 4),
            ("$$$", 1, 3),
            ("line one\n  $1", 2, 3),
            ("a\nb\n\ncd $\n", 4, 4),
            ("a\r\nb$", 2, 2),
            ("a\rb$", 2, 2),
            ("a\n\rb$", 3, 2),
            ("a\x0cb$", 2, 2),
            ("a\u{2028}b$", 2, 2),
            ("éé$", 1, 3),
            ("\n$", 2, 1),
            // The first problem wins, as in Python.
            ("$ $Y", 1, 1),
        ];
        for (template, line, column) in cases {
            assert_eq!(
                substitute(template, &vals),
                Err(TemplateError::InvalidPlaceholder { line, column }),
                "{template:?}"
            );
            assert_eq!(placeholders(template), Err(TemplateError::InvalidPlaceholder { line, column }), "{template:?}");
        }
        // A missing variable before the invalid placeholder is reported first.
        assert_eq!(substitute("$Y $", &vals), Err(TemplateError::Unreplaced { variable: "Y".to_owned() }));
        assert_eq!(substitute("a\n$-", &vals).unwrap_err().to_string(), "invalid placeholder at line 2, column 1");
    }

    #[test]
    fn placeholders_lists_each_name_once() {
        let found = placeholders("$A ${B} $$C $A ${B}x $B_1\n$_").unwrap();
        let expected: BTreeSet<String> = ["A", "B", "B_1", "_"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(found, expected);
        assert!(placeholders("$$ plain $$").unwrap().is_empty());
    }

    #[test]
    fn identifiers() {
        for good in ["A", "_", "a_1", "ETCD_DATA_DIR", "x9"] {
            assert!(is_identifier(good), "{good:?}");
        }
        for bad in ["", "1A", "A-B", "A B", "é", "A=", "${A}"] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
    }
}
