//! Progress bars for long command-line work (`keel bench`, `keel genesis` deriving accounts,
//! `keel status --watch` following a sync): drawn on stderr, and only when stderr is a terminal,
//! so logs, pipes and CI output stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `command: what`.
pub fn bar(len: u64, command: &str, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{command}: {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
