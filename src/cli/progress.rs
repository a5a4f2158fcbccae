//! Drawing progress: an indicatif bar on a terminal, JSON status lines with --json,
//! nothing otherwise (CLI.md). Runs on its own thread, polling the library's counters.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::Ctx;
use cairn::progress::Progress;

pub struct Display {
    pub progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

enum Mode {
    Bar,
    Json,
}

impl Display {
    /// Starts a display for an operation; `verb` names it ("backup", "restore").
    pub fn start(ctx: &Ctx, verb: &'static str) -> Display {
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mode = if ctx.g.quiet {
            None
        } else if ctx.json() {
            Some(Mode::Json)
        } else if std::io::stderr().is_terminal() {
            Some(Mode::Bar)
        } else {
            None
        };
        let thread = mode.map(|mode| {
            let (p, s) = (progress.clone(), stop.clone());
            std::thread::spawn(move || run(mode, verb, &p, &s))
        });
        Display {
            progress,
            stop,
            thread,
        }
    }

    /// Whether anything is shown (so a caller can skip extra work like scanning totals).
    pub fn visible(&self) -> bool {
        self.thread.is_some()
    }

    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn run(mode: Mode, verb: &str, p: &Progress, stop: &AtomicBool) {
    let start = Instant::now();
    match mode {
        Mode::Bar => {
            let bar =
                ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(verb.to_string());
            while !stop.load(Ordering::Relaxed) {
                let s = p.snapshot();
                bar.set_length(s.bytes_total.max(s.bytes_done));
                bar.set_position(s.bytes_done);
                let files = if s.files_total > 0 {
                    format!("{}/{} files", s.files_done, s.files_total)
                } else {
                    format!("{} files", s.files_done)
                };
                bar.set_message(files);
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        }
        Mode::Json => {
            let mut next = Instant::now() + Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() < next {
                    continue;
                }
                next += Duration::from_secs(1);
                let s = p.snapshot();
                let percent = if s.bytes_total > 0 {
                    (s.bytes_done as f64 / s.bytes_total as f64).min(1.0)
                } else {
                    0.0
                };
                println!(
                    "{}",
                    json!({
                        "message_type": "status",
                        "action": verb,
                        "seconds_elapsed": start.elapsed().as_secs(),
                        "percent_done": percent,
                        "total_files": s.files_total,
                        "files_done": s.files_done,
                        "total_bytes": s.bytes_total,
                        "bytes_done": s.bytes_done,
                    })
                );
            }
        }
    }
}
