//! Progress bars on stderr (indicatif), hidden when stderr is not a terminal or output is quiet.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress reporting shared by the steps of one run.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    prefix: String,
}

impl Progress {
    /// Progress drawn on stderr when `visible`, else nowhere.
    pub fn new(visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            prefix: String::new(),
        }
    }

    /// The same display, labelling bars with a step's name.
    pub fn for_step(&self, step: &str) -> Progress {
        Progress {
            multi: self.multi.clone(),
            prefix: step.to_string(),
        }
    }

    /// A bar of `len` units of `unit` (e.g. "steps", "rows"), with rate and ETA.
    pub fn bar(&self, len: u64, unit: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}} {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> ");
        let bar = self
            .multi
            .add(ProgressBar::new(len))
            .with_style(style)
            .with_prefix(self.prefix.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A spinner with a message and the elapsed time.
    pub fn spinner(&self, message: &str) -> ProgressBar {
        let style = ProgressStyle::with_template("{prefix:>12} {spinner} {msg} {elapsed}")
            .expect("valid template");
        let bar = self
            .multi
            .add(ProgressBar::new_spinner())
            .with_style(style)
            .with_prefix(self.prefix.clone())
            .with_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Prints a line above the bars (to stderr), or nothing when hidden.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Whether bars are drawn.
    pub fn is_visible(&self) -> bool {
        !self.multi.is_hidden()
    }
}
