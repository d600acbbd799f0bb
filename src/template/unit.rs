//! Values from outside in systemd units, escaped for where they land so that systemd reads each
//! back as exactly one value (systemd.syntax(7), systemd.service(5)).
//!
//! The unit written so far is followed line by line: whether a value lands in a key, a comment or
//! a directive's value, which directive, and inside which quotes. There:
//! - `Exec*=` and `Environment=` split words as `extract_first_word(EXTRACT_UNQUOTE |
//!   EXTRACT_CUNESCAPE)` does: quotes and backslashes are escaped C-style, and so is whitespace
//!   outside quotes (`\x20`). Command lines also expand `$VAR` (`$$` is a `$`), take a lone `;` as
//!   a command separator and prefixes such as `+` (full privileges) at the start of a command:
//!   `$` is doubled, `;` escaped, and a value that would start a command with a prefix refused.
//! - `Description=` is text up to the end of the line.
//! - Any other directive may split or unquote its value in its own way: a value with whitespace,
//!   quotes or backslashes is refused there.
//! - `%` starts a specifier everywhere but in the percentages of [`PERCENT_DIRECTIVES`]: it is
//!   doubled.
//!
//! No escape makes a control character safe in a unit: those are refused.

use std::borrow::Cow;

use anyhow::{bail, Result};

use super::render::{Origin, Syntax};

/// The directives whose values are command lines.
const COMMAND_DIRECTIVES: [&str; 7] =
    ["ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload", "ExecStop", "ExecStopPost"];

/// Directives that read a percentage and no specifiers: a `%` there stays as it is.
const PERCENT_DIRECTIVES: [&str; 12] = [
    "CPUQuota",
    "MemoryMin",
    "MemoryLow",
    "MemoryHigh",
    "MemoryMax",
    "MemorySwapMax",
    "MemoryZSwapMax",
    "StartupMemoryLow",
    "StartupMemoryHigh",
    "StartupMemoryMax",
    "TasksMax",
    "ManagedOOMMemoryPressureLimit",
];

/// What systemd reads at the start of a command as a prefix rather than as the executable.
const COMMAND_PREFIXES: [char; 6] = ['-', '@', '+', '!', ':', '|'];

/// The unit syntax: writes values escaped for the place the unit written so far puts them in.
pub(super) struct Unit<'f> {
    file_name: &'f str,
    line: Line,
}

impl<'f> Unit<'f> {
    pub(super) fn new(file_name: &'f str) -> Self {
        Self { file_name, line: Line::default() }
    }

    /// `value` as it must be written where the unit now stands.
    fn escape<'v>(&self, variable: &str, value: &'v str) -> Result<Cow<'v, str>> {
        let file_name = self.file_name;
        let line = &self.line;
        if line.escaped && !value.is_empty() {
            bail!(
                "value of '{variable}' follows a backslash in '{file_name}', which would make systemd read \
                 its first character as an escape"
            );
        }
        let key = line.key.as_str();
        let directive = match line.place {
            Place::Comment => return Ok(Cow::Borrowed(value)),
            Place::LineStart | Place::Key | Place::Section => {
                if let Some(c) = value.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
                    bail!(
                        "value of '{variable}' contains {c:?} and is placed in a directive or section name in \
                         '{file_name}', where only ASCII letters, digits, '-' and '_' may go"
                    );
                }
                return Ok(Cow::Borrowed(value));
            }
            Place::Value => Directive::of(key),
        };
        match directive {
            Directive::CommandLine | Directive::Environment => {
                let command_line = directive == Directive::CommandLine;
                if command_line && line.at_command_prefix() && value.starts_with(COMMAND_PREFIXES) {
                    bail!(
                        "value of '{variable}' starts the command of {key}= in '{file_name}' with {:?}, which \
                         systemd would read as a prefix of the command, not as part of its path",
                        value.chars().next().unwrap_or_default()
                    );
                }
                // systemd expands `$` in arguments, where `$$` is a `$`, but not in the path.
                if command_line && line.in_first_word() && value.contains('$') {
                    bail!(
                        "value of '{variable}' contains '$' and is placed in the path of the command of {key}= \
                         in '{file_name}', where it cannot be escaped"
                    );
                }
                Ok(Cow::Owned(escape_word(value, line.quote.is_some(), command_line)))
            }
            Directive::Text => Ok(double_percent(value)),
            Directive::Percentage | Directive::Other => {
                if let Some(c) = value.chars().find(|&c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\')) {
                    bail!(
                        "value of '{variable}' contains {c:?}, which {key}= in '{file_name}' might read as \
                         more than one value or unquote"
                    );
                }
                Ok(if directive == Directive::Percentage { Cow::Borrowed(value) } else { double_percent(value) })
            }
        }
    }
}

impl Syntax for Unit<'_> {
    fn text(&mut self, out: &mut String, literal: &str) -> Result<()> {
        out.push_str(literal);
        literal.chars().for_each(|c| self.line.read(c));
        Ok(())
    }

    fn value(&mut self, out: &mut String, variable: &str, value: &str, origin: Origin) -> Result<()> {
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            bail!(
                "value of '{variable}' contains the control character {c:?}, which cannot be written into \
                 '{}'",
                self.file_name
            );
        }
        let written = match origin {
            Origin::Sysctr => Cow::Borrowed(value),
            Origin::Outside => self.escape(variable, value)?,
        };
        out.push_str(&written);
        written.chars().for_each(|c| self.line.read(c));
        Ok(())
    }
}

/// How a directive reads its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    CommandLine,
    Environment,
    /// The rest of the line, as it is (specifiers aside).
    Text,
    Percentage,
    Other,
}

impl Directive {
    fn of(key: &str) -> Self {
        match key {
            _ if COMMAND_DIRECTIVES.contains(&key) => Self::CommandLine,
            "Environment" => Self::Environment,
            "Description" => Self::Text,
            _ if PERCENT_DIRECTIVES.contains(&key) => Self::Percentage,
            _ => Self::Other,
        }
    }
}

/// `value` as one word in an `Exec*=` (`command_line`) or `Environment=` line, inside quotes or
/// not.
fn escape_word(value: &str, quoted: bool, command_line: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str(r"\'"),
            '%' => out.push_str("%%"),
            '$' if command_line => out.push_str("$$"),
            ' ' if !quoted => out.push_str(r"\x20"),
            ';' if !quoted && command_line => out.push_str(r"\x3b"),
            c => out.push(c),
        }
    }
    out
}

fn double_percent(value: &str) -> Cow<'_, str> {
    if value.contains('%') {
        Cow::Owned(value.replace('%', "%%"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Where the next character of a unit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Place {
    /// Nothing but whitespace yet on this line.
    #[default]
    LineStart,
    Comment,
    Section,
    /// A directive's name, before its `=`.
    Key,
    Value,
}

/// The logical line (continued lines joined) a unit is at, as systemd would read it so far.
#[derive(Debug, Default)]
struct Line {
    place: Place,
    /// The directive's name, once its `=` is read.
    key: String,
    /// Whether the last character was a backslash that escapes the next one.
    escaped: bool,
    /// The quote open in the value, if any.
    quote: Option<char>,
    /// Whether the value's current word has started.
    in_word: bool,
    /// The words of the value started so far.
    words: usize,
    /// Whether the value's first word holds nothing but command prefixes so far.
    prefixes_only: bool,
}

impl Line {
    fn read(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            // A backslash ending a line continues it, joined with a space.
            return match c {
                '\n' => self.read_in_value(' ', false),
                c => self.read_in_value(c, true),
            };
        }
        match (self.place, c) {
            (_, '\n') => *self = Self::default(),
            (Place::Comment, _) => {}
            (_, '\\') => {
                self.escaped = true;
                self.read_in_value(c, true);
            }
            (Place::LineStart, '#' | ';') => self.place = Place::Comment,
            (Place::LineStart, '[') => self.place = Place::Section,
            (Place::LineStart, c) if c.is_whitespace() => {}
            (Place::LineStart | Place::Key, '=') => {
                self.key = self.key.trim().to_owned();
                self.place = Place::Value;
                self.prefixes_only = true;
            }
            (Place::LineStart | Place::Key, c) => {
                self.place = Place::Key;
                self.key.push(c);
            }
            (Place::Value, c) => self.read_in_value(c, false),
            (Place::Section, _) => {}
        }
    }

    /// Follows the words of a value; `escaped` characters neither quote nor separate.
    fn read_in_value(&mut self, c: char, escaped: bool) {
        if self.place != Place::Value {
            return;
        }
        if !escaped && self.quote.is_none() && matches!(c, ' ' | '\t' | '\r') {
            if self.in_word {
                self.in_word = false;
                self.prefixes_only = false;
            }
            return;
        }
        if !self.in_word {
            self.in_word = true;
            self.words += 1;
        }
        let delimiter = !escaped
            && match self.quote {
                Some(quote) => c == quote,
                None => c == '"' || c == '\'',
            };
        if delimiter {
            self.quote = if self.quote.is_some() { None } else { Some(c) };
        } else if self.words > 1 || escaped || !COMMAND_PREFIXES.contains(&c) {
            // Quotes are taken away before systemd reads the prefixes; anything else ends them.
            self.prefixes_only = false;
        }
    }

    /// Whether a value written now would start a command, where systemd reads prefixes.
    fn at_command_prefix(&self) -> bool {
        self.place == Place::Value && self.prefixes_only
    }

    /// Whether a value written now would be part of the first word of the value: the path of a
    /// command.
    fn in_first_word(&self) -> bool {
        self.place == Place::Value && (self.words == 0 || (self.words == 1 && self.in_word))
    }
}
