//! Values in tmpfiles.d files: each stays within one field of its line.
//!
//! systemd-tmpfiles splits a line at whitespace, unquotes and unescapes its fields and expands
//! `%` specifiers in some of them, so a value holding whitespace, a quote, a backslash, a `%` or a
//! control character is refused rather than escaped. So is an empty value that would make up a
//! whole field, which would shift the fields after it. Comment lines take any value on one line.

use anyhow::{bail, Result};

use super::render::{Origin, Syntax};

/// The tmpfiles.d syntax: checks each value for the field it lands in.
pub(super) struct Tmpfiles<'f> {
    file_name: &'f str,
    place: Place,
    /// An empty value written at the start of a field, until what follows shows whether the field
    /// has anything else in it.
    empty_field: Option<EmptyField>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    LineStart,
    Comment,
    /// At the start of a field (after whitespace).
    FieldStart,
    InField,
}

#[derive(Debug)]
struct EmptyField {
    variable: String,
    /// An empty value alone on its line leaves an empty line, which is fine.
    at_line_start: bool,
}

impl<'f> Tmpfiles<'f> {
    pub(super) fn new(file_name: &'f str) -> Self {
        Self { file_name, place: Place::LineStart, empty_field: None }
    }

    /// Settles an empty value at the start of a field, now that `next` follows it (`None`: the
    /// end of the file).
    fn settle_empty_field(&mut self, next: Option<char>) -> Result<()> {
        let Some(empty) = self.empty_field.take() else { return Ok(()) };
        let ends_line = next.is_none_or(|c| c == '\n');
        let ends_field = ends_line || next.is_some_and(char::is_whitespace);
        if empty.at_line_start && next == Some('#') {
            bail!("value of '{}' is empty and would make a line of '{}' a comment", empty.variable, self.file_name);
        }
        if ends_field && !(empty.at_line_start && ends_line) {
            bail!(
                "value of '{}' is empty and makes up a whole field in '{}', which would shift the fields \
                 after it",
                empty.variable,
                self.file_name
            );
        }
        Ok(())
    }

    fn read(&mut self, c: char) {
        self.place = match (self.place, c) {
            (_, '\n') => Place::LineStart,
            (Place::Comment, _) => Place::Comment,
            (Place::LineStart, c) if c.is_whitespace() => Place::LineStart,
            (Place::LineStart, '#') => Place::Comment,
            (_, c) if c.is_whitespace() => Place::FieldStart,
            _ => Place::InField,
        };
    }
}

impl Syntax for Tmpfiles<'_> {
    fn text(&mut self, out: &mut String, literal: &str) -> Result<()> {
        if let Some(first) = literal.chars().next() {
            self.settle_empty_field(Some(first))?;
        }
        out.push_str(literal);
        literal.chars().for_each(|c| self.read(c));
        Ok(())
    }

    fn value(&mut self, out: &mut String, variable: &str, value: &str, _: Origin) -> Result<()> {
        let file_name = self.file_name;
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            bail!("value of '{variable}' contains the control character {c:?}, which cannot be written into '{file_name}'");
        }
        if self.place == Place::Comment {
            out.push_str(value);
            return Ok(());
        }
        if let Some(c) = value.chars().find(|&c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\')) {
            bail!("value of '{variable}' contains {c:?}, which would split or unquote a field of '{file_name}'");
        }
        if self.place == Place::LineStart && value.starts_with('#') {
            bail!("value of '{variable}' starts with '#', which would make a line of '{file_name}' a comment");
        }
        if value.contains('%') {
            bail!(
                "value of '{variable}' contains '%', which systemd-tmpfiles would read as a specifier in '{file_name}'"
            );
        }
        match value.chars().next() {
            None if self.empty_field.is_none() && matches!(self.place, Place::LineStart | Place::FieldStart) => {
                self.empty_field =
                    Some(EmptyField { variable: variable.to_owned(), at_line_start: self.place == Place::LineStart });
            }
            None => {}
            Some(first) => self.settle_empty_field(Some(first))?,
        }
        out.push_str(value);
        value.chars().for_each(|c| self.read(c));
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.settle_empty_field(None)
    }
}
