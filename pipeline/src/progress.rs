//! Progress of long work: a bar on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    total_bytes: u64,
    started: Instant,
    last_log: Instant,
    records: u64,
}

impl Progress {
    pub fn new(what: &'static str, total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_bytes);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {percent}% {bytes}/{total_bytes} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            what,
            total_bytes,
            started: Instant::now(),
            last_log: Instant::now(),
            records: 0,
        }
    }

    pub fn update(&mut self, bytes: u64, records: u64) {
        self.records = records;
        let rate = records as f64 / self.started.elapsed().as_secs_f64().max(1e-6);
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{} {records} records ({rate:.0}/s)", self.what));
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let pct = if self.total_bytes > 0 {
                bytes as f64 * 100.0 / self.total_bytes as f64
            } else {
                100.0
            };
            tracing::info!(
                records,
                records_per_sec = rate.round(),
                percent = format!("{pct:.1}"),
                "{} progress",
                self.what
            );
        }
    }

    pub fn finish(self) -> (u64, f64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        (self.records, self.started.elapsed().as_secs_f64())
    }
}
