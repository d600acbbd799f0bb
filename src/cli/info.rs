use std::io::Write;

use anyhow::{Context as _, Result};

use super::print_json;
use crate::deploy::{self, ImageInfo, Layout};
use crate::output::printable;

#[derive(Debug, clap::Args, PartialEq, Eq)]
pub struct InfoOpts {
    /// An image in the store.
    pub image: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(layout: &Layout, opts: &InfoOpts) -> Result<()> {
    let info = deploy::info(layout, &super::image_arg(&opts.image)?)?;
    if opts.json {
        return print_json("ImageInfo", &info);
    }
    write_text(&mut std::io::stdout().lock(), &info).context("printing the image information")
}

/// The text form of `info`. Everything but the headings comes from the image, escaped with
/// [`printable`].
fn write_text(out: &mut impl Write, info: &ImageInfo) -> std::io::Result<()> {
    writeln!(out, "Image: {}", printable(&info.reference))?;
    writeln!(out, "Image ID: {}", printable(&info.image_id))?;
    writeln!(out, "Labels:")?;
    for (key, value) in &info.labels {
        writeln!(out, "  {}={}", printable(key), printable(value))?;
    }
    writeln!(out, "Variables with a default (override with --set):")?;
    for (key, value) in &info.defaults {
        writeln!(out, "  {}={}", printable(key), printable(value))?;
    }
    for key in &info.host_provided {
        writeln!(out, "  {} (provided by the host)", printable(key))?;
    }
    writeln!(out, "Variables that must be set with --set:")?;
    for key in &info.required {
        writeln!(out, "  {}", printable(key))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn image_info(labels: &[(&str, &str)], defaults: &[(&str, &str)]) -> ImageInfo {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        ImageInfo {
            reference: "docker.io/library/etcd:latest".to_owned(),
            image_id: "sha256:abcd".to_owned(),
            labels: map(labels),
            defaults: map(defaults),
            host_provided: vec!["RUN_DIRECTORY".to_owned()],
            required: vec!["RECEIVER".to_owned()],
        }
    }

    fn text(info: &ImageInfo) -> String {
        let mut out = Vec::new();
        write_text(&mut out, info).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_escapes_control_characters_from_the_image() {
        let info = image_info(
            &[
                ("atomic.type", "system"),
                ("clear", "\u{1b}[2J\u{1b}[H"),
                ("forged\nImage ID", " sha256:0000\r"),
                ("bell", "\u{7}\u{7f}\u{9b}31m\t"),
                ("path", r"C:\x1b"),
                ("rtl", "safe\u{202e}txt.exe"),
            ],
            &[("PORT", "2379\nVariables that must be set with --set:")],
        );
        let expected = "\
Image: docker.io/library/etcd:latest
Image ID: sha256:abcd
Labels:
  atomic.type=system
  bell=\\x07\\x7f\\u{9b}31m\\t
  clear=\\x1b[2J\\x1b[H
  forged\\nImage ID= sha256:0000\\r
  path=C:\\\\x1b
  rtl=safe\\u{202e}txt.exe
Variables with a default (override with --set):
  PORT=2379\\nVariables that must be set with --set:
  RUN_DIRECTORY (provided by the host)
Variables that must be set with --set:
  RECEIVER
";
        assert_eq!(text(&info), expected);
    }

    #[test]
    fn json_escapes_control_characters() {
        let info = image_info(&[("clear", "\u{1b}[2J\n")], &[]);
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.contains(r#""clear":"\u001b[2J\n""#), "{json}");
        assert!(!json.contains(['\u{1b}', '\n']));
    }
}
