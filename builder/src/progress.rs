//! Progress per build step: a spinner on a terminal, plain lines otherwise, and the time each
//! step took for the summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    fancy: bool,
    quiet: bool,
    pub steps: Vec<(String, Duration)>,
}

impl Progress {
    /// Spinners when stderr is a terminal; `quiet` prints nothing (library use, tests).
    pub fn new(quiet: bool) -> Progress {
        Progress {
            fancy: !quiet && std::io::stderr().is_terminal(),
            quiet,
            steps: Vec::new(),
        }
    }

    /// Runs `f` as the step `name`, showing it while it runs and recording its duration.
    pub fn step<T, E>(&mut self, name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = Instant::now();
        let bar = self.fancy.then(|| {
            let bar = indicatif::ProgressBar::new_spinner().with_message(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if !self.fancy && !self.quiet {
            eprintln!("==> {name}");
        }
        let result = f();
        let took = start.elapsed();
        if let Some(bar) = bar {
            let mark = if result.is_ok() { "done" } else { "FAILED" };
            bar.finish_with_message(format!("{name}: {mark} in {:.1}s", took.as_secs_f64()));
        } else if !self.quiet {
            eprintln!("    {name}: {:.1}s", took.as_secs_f64());
        }
        self.steps.push((name.to_string(), took));
        result
    }
}
