//! What a recipe shows while it runs: a progress bar on a terminal (step, and the recipe's
//! figures as a message), or a plain line every few steps when the output is a log file.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A run's progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    plain_every: u64,
    phase: String,
}

impl Progress {
    /// `total` steps of `phase`; without a terminal, a line every `plain_every` steps.
    pub fn new(phase: &str, total: u64, plain_every: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>5} [{bar:30.cyan/blue}] {pos:>4}/{len:4} {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(phase.to_string());
            bar
        });
        Progress {
            bar,
            total,
            plain_every: plain_every.max(1),
            phase: phase.to_string(),
        }
    }

    /// Step `step` (1-based) is done; `message` holds its figures.
    pub fn update(&self, step: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(message.to_string());
            }
            None => {
                if step.is_multiple_of(self.plain_every) || step == self.total || step == 1 {
                    eprintln!("{} {step:>4}/{}  {message}", self.phase, self.total);
                }
            }
        }
    }

    /// Prints a line above the bar (or plainly).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
