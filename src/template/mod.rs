//! Templates: `$VAR` substitution with Python `string.Template` semantics, the precedence of
//! template variables, and the built-in default unit.
//!
//! Pure apart from [`host_cap_last_cap`]: callers read the files and write the results.
//!
//! - [`substitute`] and [`placeholders`]: the template syntax (`$NAME`, `${NAME}`, `$$`).
//! - [`render_unit`] and [`render_file`]: substitution with errors naming the file. A value from
//!   outside (`--set`, the image's defaults) stays one value: escaped for systemd in a unit, kept
//!   within one field in a tmpfiles.d file ([`FileKind::Tmpfiles`]), or refused, naming it.
//! - [`resolve`]: host defaults < `manifest.json` defaults < `--set` < `UUID` < forced values.
//! - [`check_json_string_values`]: `--set` values must not leave the JSON strings they go into.
//! - [`default_unit`]: the unit for images that ship no `service.template`.

mod capabilities;
mod json;
mod render;
mod substitute;
mod tmpfiles;
mod unit;
mod variables;

pub use capabilities::{all_process_capabilities, capability_number, host_bounding_set, host_cap_last_cap};
pub use json::check_json_string_values;
pub use render::{default_unit, render_file, render_unit, FileKind};
pub use substitute::{placeholders, substitute, TemplateError};
pub use variables::{parse_set, resolve, Forced, HostDefaults, Inputs, FORCED_VARIABLES, HOST_VARIABLES};

#[cfg(test)]
mod hostile_values_tests;

/// A value map from pairs, for tests.
#[cfg(test)]
pub(crate) fn test_values(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
