//! The terminal rendering of the libraries' progress: `indicatif` bars on stderr, one style per unit.
//!
//! [`Bars`] implements [`wrn_progress::Progress`]; [`progress`] gives bars when stderr is a terminal and
//! nothing but the lines otherwise, so logs and pipes get summaries without control characters.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use wrn_progress::{Progress, Task, Unit};

/// Bars on stderr (hidden when `draw` is false); lines always printed to stderr.
pub struct Bars {
    multi: MultiProgress,
    draw: bool,
}

impl Bars {
    pub fn new(draw: bool) -> Bars {
        let target = if draw { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Bars { multi: MultiProgress::with_draw_target(target), draw }
    }
}

/// The progress the commands report through: bars where stderr is a terminal.
pub fn progress() -> Bars {
    Bars::new(std::io::stderr().is_terminal())
}

fn style(unit: Unit, known_total: bool) -> ProgressStyle {
    let template = match (unit, known_total) {
        (Unit::Bytes, true) => "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}".to_string(),
        (Unit::Bytes, false) => "{prefix} {bytes} {bytes_per_sec} {msg}".to_string(),
        (Unit::Items(what), true) => {
            format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {what} {{per_sec}} ETA {{eta}} {{msg}}")
        }
        (Unit::Items(what), false) => format!("{{prefix}} {{pos}} {what} {{per_sec}} {{msg}}"),
    };
    ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> ")
}

impl Progress for Bars {
    fn task(&self, label: &str, unit: Unit, total: Option<u64>, done: u64) -> Box<dyn Task> {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        let bar = self.multi.add(bar.with_style(style(unit, total.is_some())).with_position(done));
        bar.set_prefix(label.to_string());
        bar.reset_eta();
        Box::new(Drawn(bar))
    }

    fn line(&self, text: &str) {
        if self.draw {
            // Above the bars, which are redrawn below it.
            let _ = self.multi.println(text);
        } else {
            note!("{text}");
        }
    }
}

struct Drawn(ProgressBar);

impl Task for Drawn {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn message(&self, text: &str) {
        self.0.set_message(text.to_string());
    }

    fn finish(self: Box<Self>) {
        self.0.finish_and_clear();
    }

    fn abandon(self: Box<Self>, why: &str) {
        self.0.abandon_with_message(why.to_string());
    }
}

impl Drop for Drawn {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.finish_and_clear();
        }
    }
}
