//! Progress of a long operation: one [`Tracker`] of counters that the operation updates and
//! that two views read: the admin API (JSON) and the terminal — an indicatif bar with rate and
//! ETA on a terminal, or a plain line every few seconds when stderr is not one (CI, pipes).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Default)]
pub struct Tracker {
    /// Records to read (the resolved ranges).
    pub total: AtomicU64,
    /// Records read so far.
    pub read: AtomicU64,
    /// Records that matched the selection.
    pub matched: AtomicU64,
    /// Records written (redrive) or processed (rebuild) and acknowledged.
    pub written: AtomicU64,
}

#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub total: u64,
    pub read: u64,
    pub matched: u64,
    pub written: u64,
}

impl Tracker {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            total: self.total.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            matched: self.matched.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
        }
    }
}

/// Renders a tracker on stderr until dropped.
pub struct Display {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    pub fn start(label: &'static str, tracker: Arc<Tracker>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            if std::io::stderr().is_terminal() {
                bar(label, &tracker, &stop);
            } else {
                lines(label, &tracker, &stop);
            }
        });
        Self {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bar(label: &str, tracker: &Tracker, done: &AtomicBool) {
    let bar = ProgressBar::new(tracker.total.load(Ordering::Relaxed));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} records ({per_sec}, ETA {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    while !done.load(Ordering::Relaxed) {
        let now = tracker.snapshot();
        bar.set_length(now.total);
        bar.set_position(now.read);
        bar.set_message(format!("{} matched, {} written", now.matched, now.written));
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = tracker.snapshot();
    bar.set_position(now.read);
    bar.finish_and_clear();
}

fn lines(label: &str, tracker: &Tracker, done: &AtomicBool) {
    let started = Instant::now();
    let mut last = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!("{}", line(label, &tracker.snapshot(), started.elapsed()));
        }
    }
}

/// One plain progress line: counts, percentage, rate and ETA.
pub fn line(label: &str, now: &Snapshot, elapsed: Duration) -> String {
    let rate = now.read as f64 / elapsed.as_secs_f64().max(0.001);
    let percent = if now.total == 0 {
        100.0
    } else {
        100.0 * now.read as f64 / now.total as f64
    };
    let eta = if rate > 0.0 {
        format!("{:.0}s", now.total.saturating_sub(now.read) as f64 / rate)
    } else {
        "?".into()
    };
    format!(
        "{label}: {}/{} records ({percent:.0}%), {} matched, {} written, {rate:.0} records/s, ETA {eta}",
        now.read, now.total, now.matched, now.written
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_has_counts_rate_and_eta() {
        let now = Snapshot {
            total: 1_000,
            read: 250,
            matched: 100,
            written: 90,
        };
        assert_eq!(
            line("redrive", &now, Duration::from_secs(5)),
            "redrive: 250/1000 records (25%), 100 matched, 90 written, 50 records/s, ETA 15s"
        );
    }
}
