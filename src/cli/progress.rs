//! Progress bars for layer downloads, on a terminal: one per layer and one for the total, in
//! bytes, on standard error (so `--json` on standard output stays clean). Not drawn when standard
//! error is not a terminal, or with `-q`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::digest::Digest;
use crate::registry::{BlobProgress, Progress};

/// Progress bars if they can be seen, none otherwise.
pub fn for_terminal() -> Progress {
    if crate::output::quiet() || !std::io::stderr().is_terminal() {
        return Progress::default();
    }
    Progress(Some(Arc::new(TerminalProgress::default())))
}

#[derive(Default)]
struct TerminalProgress {
    bars: MultiProgress,
    layers: Mutex<HashMap<String, ProgressBar>>,
    total: Mutex<Option<ProgressBar>>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl BlobProgress for TerminalProgress {
    fn begin(&self, layers: &[(Digest, u64)]) {
        let Ok(mut bars) = self.layers.lock() else { return };
        for (digest, size) in layers {
            let bar = self.bars.add(ProgressBar::new(*size));
            bar.set_style(style("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}"));
            bar.set_prefix(digest.hex().get(..12).unwrap_or(digest.hex()).to_string());
            bars.insert(digest.to_string(), bar);
        }
        let total = self.bars.add(ProgressBar::new(layers.iter().map(|(_, size)| size).sum()));
        total.set_style(style("total        [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"));
        if let Ok(mut slot) = self.total.lock() {
            *slot = Some(total);
        }
    }

    fn advanced(&self, layer: &Digest, bytes: u64) {
        if let Some(bar) = self.layers.lock().ok().and_then(|bars| bars.get(layer.as_str()).cloned()) {
            bar.inc(bytes);
        }
        if let Some(total) = self.total.lock().ok().and_then(|total| total.clone()) {
            total.inc(bytes);
        }
    }

    fn finished(&self, layer: &Digest) {
        if let Some(bar) = self.layers.lock().ok().and_then(|bars| bars.get(layer.as_str()).cloned()) {
            bar.finish_with_message("done");
        }
    }

    fn end(&self) {
        if let Ok(bars) = self.layers.lock() {
            bars.values().filter(|bar| !bar.is_finished()).for_each(ProgressBar::abandon);
        }
        if let Some(total) = self.total.lock().ok().and_then(|total| total.clone()) {
            total.finish();
        }
    }
}
