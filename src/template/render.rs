//! Rendering named files: error messages that name the file, and the structure checks of
//! line-oriented files.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context as _, Result};
use tera::{Context, Tera};

use super::substitute::{Piece, Pieces, TemplateError};
use super::tmpfiles::Tmpfiles;
use super::unit::Unit;
use super::variables::Forced;

/// The built-in unit for images that ship no `service.template`.
const DEFAULT_UNIT_TEMPLATE: &str = include_str!("../../templates/default.service.tera");
/// How error messages name the built-in unit.
const DEFAULT_UNIT_FILE: &str = "default.service";

/// How a rendered file is read, which decides what a value may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A tmpfiles.d file: every value stays within one field of its line (see [`super::tmpfiles`]).
    Tmpfiles,
    /// Any other line-oriented text (a renamed host path): a value may not contain a line break
    /// or a NUL, nor end with a backslash right before a line break (which would join the next
    /// line to it), so that a value can never add or remove lines. Units go through
    /// [`render_unit`].
    LineOriented,
    /// Any other file (`config.json`, host files): values go in as they are.
    Raw,
}

/// Where a value came from, which decides whether it must be escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Computed by sysctr itself ([`Forced`]): `EXEC_START` is a whole command line on purpose.
    Sysctr,
    /// Given with `--set` or by the image (`manifest.json` defaults): one value, kept as is.
    Outside,
}

/// The syntax of a kind of file: writes template text and values to the output, escaping or
/// refusing each value for the place it lands in.
pub(super) trait Syntax {
    fn text(&mut self, out: &mut String, literal: &str) -> Result<()>;
    /// An error names `variable` and the file.
    fn value(&mut self, out: &mut String, variable: &str, value: &str, origin: Origin) -> Result<()>;
    /// Called once the whole template is written.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Values written as they are.
struct Verbatim;

impl Syntax for Verbatim {
    fn text(&mut self, out: &mut String, literal: &str) -> Result<()> {
        out.push_str(literal);
        Ok(())
    }

    fn value(&mut self, out: &mut String, _: &str, value: &str, _: Origin) -> Result<()> {
        out.push_str(value);
        Ok(())
    }
}

/// Substitutes `values` into `text`, the content of `file_name`, checking values as `kind` needs.
/// Every value counts as given from outside: sysctr's own command lines only go into units, see
/// [`render_unit`].
pub fn render_file(file_name: &str, text: &str, kind: FileKind, values: &BTreeMap<String, String>) -> Result<String> {
    let lookup = |name: &str| values.get(name).map(|value| (value.as_str(), Origin::Outside));
    match kind {
        FileKind::Tmpfiles => render(file_name, text, true, &mut Tmpfiles::new(file_name), lookup),
        FileKind::LineOriented => render(file_name, text, true, &mut Verbatim, lookup),
        FileKind::Raw => render(file_name, text, false, &mut Verbatim, lookup),
    }
}

/// Renders a systemd unit template. The values of `forced` are sysctr's own and go in as they
/// are (`ExecStart=$EXEC_START` is a whole command line); every other value comes from outside
/// and is escaped so that systemd reads it back as exactly one value (see [`super::unit`]), or
/// refused with an error naming it.
pub fn render_unit(file_name: &str, text: &str, forced: &Forced, values: &BTreeMap<String, String>) -> Result<String> {
    let forced = forced.variables();
    let lookup = |name: &str| {
        let builtin = forced.iter().find(|(variable, _)| *variable == name);
        match builtin {
            Some((_, value)) => Some((value.as_str(), Origin::Sysctr)),
            None => values.get(name).map(|value| (value.as_str(), Origin::Outside)),
        }
    };
    render(file_name, text, true, &mut Unit::new(file_name), lookup)
}

/// Substitutes the values `lookup` gives into `text`, written with `syntax`. A line-oriented file
/// also refuses values that would add or join lines.
fn render<'v>(
    file_name: &str,
    text: &str,
    line_oriented: bool,
    syntax: &mut dyn Syntax,
    lookup: impl Fn(&str) -> Option<(&'v str, Origin)>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    // The variable whose value ends `out` with a backslash, if any.
    let mut trailing_backslash: Option<&str> = None;
    for piece in Pieces::new(text) {
        match piece.map_err(|err| file_error(file_name, err))? {
            Piece::Text(literal) => {
                if let Some(variable) = trailing_backslash.take() {
                    if line_oriented && literal.starts_with(['\n', '\r']) {
                        return Err(continuation_error(variable, file_name));
                    }
                }
                syntax.text(&mut out, literal)?;
            }
            Piece::Variable(name) => {
                let (value, origin) = lookup(name)
                    .ok_or_else(|| file_error(file_name, TemplateError::Unreplaced { variable: name.to_owned() }))?;
                if line_oriented {
                    check_line_value(name, value, file_name)?;
                }
                let before = out.len();
                syntax.value(&mut out, name, value, origin)?;
                if out.len() > before {
                    trailing_backslash = out.ends_with('\\').then_some(name);
                }
            }
        }
    }
    syntax.finish()?;
    Ok(out)
}

/// The unit used when an image ships no `service.template`: runs `EXEC_START` from `DESTDIR`,
/// restarts on failure, wanted by `multi-user.target`; empty commands are left out.
pub fn default_unit(forced: &Forced) -> Result<String> {
    if forced.exec_start.is_empty() {
        bail!("the built-in default unit needs a command to start, but EXEC_START is empty");
    }
    // (variable, template key, value): every value ends its line in the unit.
    let fields = [
        ("NAME", "name", &forced.name),
        ("EXEC_STARTPRE", "exec_startpre", &forced.exec_startpre),
        ("EXEC_START", "exec_start", &forced.exec_start),
        ("EXEC_STOP", "exec_stop", &forced.exec_stop),
        ("EXEC_STOPPOST", "exec_stoppost", &forced.exec_stoppost),
        ("DESTDIR", "destdir", &forced.destdir),
    ];
    let mut context = Context::new();
    for (variable, key, value) in fields {
        check_line_value(variable, value, DEFAULT_UNIT_FILE)?;
        if value.ends_with('\\') {
            return Err(continuation_error(variable, DEFAULT_UNIT_FILE));
        }
        context.insert(key, value.as_str());
    }
    Tera::one_off(DEFAULT_UNIT_TEMPLATE, &context, false).context("rendering the built-in default unit")
}

/// Refuses a value that would add lines to a line-oriented file.
fn check_line_value(variable: &str, value: &str, file_name: &str) -> Result<()> {
    if value.contains(['\n', '\r']) {
        bail!("value of '{variable}' contains a line break, which would add lines to '{file_name}'");
    }
    if value.contains('\0') {
        bail!("value of '{variable}' contains a NUL character, which would end a line in '{file_name}'");
    }
    Ok(())
}

fn continuation_error(variable: &str, file_name: &str) -> anyhow::Error {
    anyhow!(
        "value of '{variable}' ends with a backslash at the end of a line, \
         which would join the next line of '{file_name}' to it"
    )
}

/// A substitution error, worded with the file name (the missing-value text is the old tool's).
fn file_error(file_name: &str, err: TemplateError) -> anyhow::Error {
    match err {
        TemplateError::Unreplaced { variable } => {
            anyhow!("The template file '{file_name}' still contains an unreplaced value for: '{variable}'")
        }
        TemplateError::InvalidPlaceholder { line, column } => {
            anyhow!("invalid placeholder in template file '{file_name}' at line {line}, column {column}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::test_values as values;

    fn render(text: &str, kind: FileKind, pairs: &[(&str, &str)]) -> Result<String> {
        render_file("service.template", text, kind, &values(pairs))
    }

    fn forced() -> Forced {
        Forced {
            name: "hello".to_owned(),
            destdir: "/var/lib/containers/atomic/hello.0".to_owned(),
            exec_start: "/usr/bin/runc --systemd-cgroup run 'hello'".to_owned(),
            exec_stop: "/usr/bin/runc --systemd-cgroup kill 'hello'".to_owned(),
            exec_startpre: String::new(),
            exec_stoppost: String::new(),
            host_uid: 0,
            host_gid: 0,
            image_name: "hello-world".to_owned(),
            image_id: "sha256:1234".to_owned(),
        }
    }

    #[test]
    fn renders_in_both_kinds() {
        let text = "[Service]\nExecStart=$EXEC_START\nEnvironment=HOME=$$HOME ${X}y\n";
        let pairs = [("EXEC_START", "/usr/bin/runc run 'a'"), ("X", "x")];
        let expected = "[Service]\nExecStart=/usr/bin/runc run 'a'\nEnvironment=HOME=$HOME xy\n";
        for kind in [FileKind::LineOriented, FileKind::Raw] {
            assert_eq!(render(text, kind, &pairs).unwrap(), expected, "{kind:?}");
        }
    }

    #[test]
    fn missing_value_reads_like_the_old_tool() {
        for kind in [FileKind::LineOriented, FileKind::Raw] {
            let err = render("a\n$OK ${MISSING}\n", kind, &[("OK", "1")]).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "The template file 'service.template' still contains an unreplaced value for: 'MISSING'"
            );
        }
    }

    #[test]
    fn invalid_placeholder_names_file_and_position() {
        let cases = [("$", 1, 1), ("ok\nx=${X\n", 2, 3), ("ok\n\n  $1", 3, 3), ("a\n${X Y}", 2, 1)];
        for (text, line, column) in cases {
            let err = render(text, FileKind::Raw, &[("X", "x")]).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                format!(
                    "invalid placeholder in template file 'service.template' \
                     at line {line}, column {column}"
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn line_breaks_are_refused_only_in_line_oriented_files() {
        let text = "[Service]\nEnvironment=FOO=$FOO\nUser=nobody\n";
        for injected in ["x\nUser=root", "x\rUser=root", "x\r\n", "\n"] {
            let err = render(text, FileKind::LineOriented, &[("FOO", injected)]).unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                "value of 'FOO' contains a line break, which would add lines to 'service.template'"
            );
            let raw = render(text, FileKind::Raw, &[("FOO", injected)]).unwrap();
            assert!(raw.contains(injected), "{raw:?}");
        }
        let err = render(text, FileKind::LineOriented, &[("FOO", "a\0b")]).unwrap_err();
        assert!(format!("{err:#}").contains("value of 'FOO' contains a NUL character"));
        assert!(render(text, FileKind::Raw, &[("FOO", "a\0b")]).is_ok());
        // Only substituted values are checked.
        let ok = render("A=$A\n", FileKind::LineOriented, &[("A", "a"), ("UNUSED", "\n")]);
        assert_eq!(ok.unwrap(), "A=a\n");
    }

    #[test]
    fn trailing_backslash_before_line_break_is_refused_in_line_oriented_files() {
        let refused = [
            ("Environment=A=$A\nUser=nobody\n", "A"),
            ("Environment=A=${A}\r\nUser=nobody\n", "A"),
            ("X=$A$EMPTY\nUser=nobody\n", "A"),
        ];
        for (text, variable) in refused {
            let pairs = [("A", "a\\"), ("EMPTY", "")];
            let err = render(text, FileKind::LineOriented, &pairs).unwrap_err();
            assert!(
                format!("{err:#}")
                    .starts_with(&format!("value of '{variable}' ends with a backslash at the end of a line")),
                "{text:?}: {err:#}"
            );
            assert!(render(text, FileKind::Raw, &pairs).is_ok());
        }
        let allowed = [
            "A=$A",          // end of file: nothing to join
            "A=$A x\nB=1\n", // not at the end of the line
            "A=$A$B\nC=1\n", // a later value ends the line
            "A=$A\\\nB=1\n", // the template's own continuation
        ];
        for text in allowed {
            let pairs = [("A", "a\\"), ("B", "b")];
            assert!(render(text, FileKind::LineOriented, &pairs).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn default_unit_renders_without_html_escaping() {
        let unit =
            default_unit(&Forced { exec_start: "/usr/bin/runc run 'hello' && echo \"<ok>\"".to_owned(), ..forced() })
                .unwrap();
        let expected = "\
[Unit]
Description=hello

[Service]
ExecStart=/usr/bin/runc run 'hello' && echo \"<ok>\"
ExecStop=/usr/bin/runc --systemd-cgroup kill 'hello'
Restart=on-failure
WorkingDirectory=/var/lib/containers/atomic/hello.0

[Install]
WantedBy=multi-user.target
";
        assert_eq!(unit, expected);
    }

    #[test]
    fn default_unit_includes_only_nonempty_commands() {
        let unit = default_unit(&Forced {
            exec_startpre: "/bin/true pre".to_owned(),
            exec_stop: String::new(),
            exec_stoppost: "/usr/bin/runc delete 'hello'".to_owned(),
            ..forced()
        })
        .unwrap();
        let service: Vec<&str> =
            unit.lines().skip_while(|line| *line != "[Service]").take_while(|line| !line.is_empty()).collect();
        assert_eq!(
            service,
            [
                "[Service]",
                "ExecStartPre=/bin/true pre",
                "ExecStart=/usr/bin/runc --systemd-cgroup run 'hello'",
                "ExecStopPost=/usr/bin/runc delete 'hello'",
                "Restart=on-failure",
                "WorkingDirectory=/var/lib/containers/atomic/hello.0",
            ]
        );
        assert!(!default_unit(&forced()).unwrap().contains("ExecStartPre"));
    }

    #[test]
    fn default_unit_refuses_values_that_change_its_structure() {
        let cases = [
            (
                Forced { name: "a\nExecStartPre=/bin/evil".to_owned(), ..forced() },
                "value of 'NAME' contains a line break",
            ),
            (Forced { destdir: "/x\r".to_owned(), ..forced() }, "value of 'DESTDIR' contains a line break"),
            (
                Forced { exec_stoppost: "/bin/x \\".to_owned(), ..forced() },
                "value of 'EXEC_STOPPOST' ends with a backslash",
            ),
            (Forced { exec_start: String::new(), ..forced() }, "EXEC_START is empty"),
        ];
        for (input, expected) in cases {
            let err = default_unit(&input).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }
}
