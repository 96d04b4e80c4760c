//! A minimal stderr logger for the `log` crate (no extra dependency for a few lines).

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr {
    program: std::sync::OnceLock<&'static str>,
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
            eprintln!("{program}: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr {
    program: std::sync::OnceLock::new(),
};

/// Logs as `program: level: message`: warnings and errors by default; -v adds info, -vv
/// debug, -vvv trace.
pub fn init(program: &'static str, verbose: u8) {
    let _ = LOGGER.program.set(program);
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
