//! What sysctr says besides its results: notes and warnings on standard error, and its log.
//!
//! - `-q` silences notes, warnings and progress bars; errors, tables and `--json` stay.
//! - The log is `tracing`: nothing below warnings by default, sysctr's steps with `-v`, the
//!   registry client's requests too with `-vv`, everything with `-vvv`; `RUST_LOG` overrides.
//! - Under systemd (`JOURNAL_STREAM` set, as for `sysctr-auto-update.service`), the log goes to
//!   the journal with its fields, at `-v` level: `journalctl SYSCTR_CONTAINER=NAME` shows what
//!   was done to one container. Notes then go there too, instead of standard error.

use std::borrow::Cow;
use std::fmt::Display;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

static QUIET: AtomicBool = AtomicBool::new(false);
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Whether `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `println!` unless `-q`: the line a command prints to say what it did (never a table or
/// `--json`, which were asked for).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            println!($($arg)*);
        }
    };
}

/// A note for the user (`note: ...` on standard error, or the journal).
pub fn note(message: impl Display) {
    tracing::info!("{message}");
    if !quiet() && !JOURNAL.load(Ordering::Relaxed) {
        eprintln!("note: {message}");
    }
}

/// A warning for the user (`warning: ...` on standard error, or the journal).
pub fn warning(message: impl Display) {
    tracing::warn!("{message}");
    if !quiet() && !JOURNAL.load(Ordering::Relaxed) {
        eprintln!("warning: {message}");
    }
}

/// `text` from outside (an image's labels) made safe to print on a terminal: control characters,
/// which could move the cursor, clear the screen or start a line that looks like sysctr's own, and
/// the marks that reverse the direction of text are written as escapes (`\n`, `\x1b`,
/// `\u{202e}`); a backslash is doubled so that the escapes read back unambiguously.
pub fn printable(text: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| c == '\\' || c.is_control() || is_direction_mark(c);
    if !text.contains(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The Unicode marks that change the order in which the text around them is displayed.
fn is_direction_mark(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Sets up `-q`, `-v` and the log, once, before the command runs.
pub fn init(verbosity: u8, quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let default = match (quiet, verbosity.max(u8::from(under_systemd))) {
        (true, _) => "off",
        (false, 0) => "off",
        (false, 1) => "sysctr=info",
        (false, 2) => "sysctr=debug,oci_client=debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journald = if under_systemd {
        tracing_journald::layer()
            .ok()
            .map(|layer| layer.with_field_prefix(Some("SYSCTR".to_string())).with_syslog_identifier("sysctr".into()))
    } else {
        None
    };
    JOURNAL.store(journald.is_some(), Ordering::Relaxed);
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .without_time()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    // A second init (tests calling the CLI twice) keeps the first.
    let _ = tracing_subscriber::registry().with(filter).with(journald).with(stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_a_terminal_would_act_on() {
        let cases = [
            ("plain text, é, 𝄞", "plain text, é, 𝄞"),
            ("\u{1b}[2J\u{1b}[H", "\\x1b[2J\\x1b[H"),
            ("a\nb\rc\td", "a\\nb\\rc\\td"),
            ("\0\u{7}\u{7f}", "\\x00\\x07\\x7f"),
            ("\u{9b}31m\u{85}", "\\u{9b}31m\\u{85}"),
            ("safe\u{202e}txt.exe", "safe\\u{202e}txt.exe"),
            ("C:\\x1b", "C:\\\\x1b"),
        ];
        for (text, expected) in cases {
            assert_eq!(printable(text), expected, "{text:?}");
        }
        assert!(matches!(printable("no escapes"), Cow::Borrowed(_)));
    }
}
