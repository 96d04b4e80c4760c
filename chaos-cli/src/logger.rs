//! A minimal stderr logger for the `log` crate (no extra dependency for a few lines).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Stderr {
    program: std::sync::OnceLock<&'static str>,
    /// Set at -vv: debug lines carry the time since [`init`], so a reader sees where a short
    /// command's milliseconds went.
    started: std::sync::OnceLock<std::time::Instant>,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            let program = self.program.get().copied().unwrap_or("chaos");
            // One write per line: stderr is unbuffered, and eprintln! wrote every piece of a
            // line with a system call of its own (14 for a debug line, about 0.35 ms in the
            // lab's dom0), which made -vv timings overstate what they measured.
            let line = match self.started.get() {
                Some(t) if record.level() >= Level::Debug => format!(
                    "{program}: {level}: [{:.3} ms] {}\n",
                    t.elapsed().as_secs_f64() * 1000.0,
                    record.args()
                ),
                _ => format!("{program}: {level}: {}\n", record.args()),
            };
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr {
    program: std::sync::OnceLock::new(),
    started: std::sync::OnceLock::new(),
};

/// Logs as `program: level: message`: warnings and errors by default; -v adds info, -vv
/// debug (with the milliseconds since this call), -vvv trace.
pub fn init(program: &'static str, verbose: u8) {
    let _ = LOGGER.program.set(program);
    if verbose >= 2 {
        let _ = LOGGER.started.set(std::time::Instant::now());
    }
    let level = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
