//! Guest configuration: xl.cfg files (and LightVM's JSON) -> one validated [`DomainConfig`].
//!
//! Parsing never touches Xen. Both parsers produce a [`GuestSpec`] (plain data, also chaosd's
//! wire format) and turn it into a [`DomainConfig`] through [`validate`], the one owner of the
//! rules; chaosd and the runtime records go through the same door. An xl.cfg file goes through
//! two layers first:
//! 1. [`syntax`]: a lexer and parser for xl's grammar (`KEY = VALUE` separated by newlines or `;`,
//!    quoted strings, numbers, nested lists, `#` comments, `+=`) into raw [`syntax::Setting`]s;
//! 2. validation ([`xl`]): the effective settings (later keys override earlier ones, then the
//!    command-line `KEY=VALUE` overrides, as `xl create cfg KEY=VALUE...`) are checked and turned
//!    into a [`DomainConfig`]. Keys xl knows that would change the guest in ways chaos cannot
//!    honour yet (PCI, bootloaders, ...) are refused; keys without effect on the guest are
//!    ignored with a
//!    [`Warning`]; unknown keys are warned about, as xl ignores them.
//!
//! A `.json` file is read as LightVM's config format instead ([`json`]), into the same type.
//! Every error names the file, the line (and column for JSON) and the key.

pub mod disk;
pub mod error;
pub mod json;
pub mod syntax;
mod types;
pub mod validate;
pub mod vif;
pub mod xl;
mod xl_keys;

pub use error::{ConfigError, Location, Warning};
pub use types::{
    Action, DiskConfig, DomainConfig, GuestSpec, Loaded, PlaneKind, TscMode, VifConfig,
    DEFAULT_BRIDGE, DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB, MAX_VCPUS,
};
pub use xl_keys::{treatment, Treatment, HANDLED_KEYS, OTHER_KEYS};

use std::path::Path;

/// Largest config file read: real ones are a few KiB; LightVM caps them at 64 KiB.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Reads `path` and parses it: LightVM JSON if the name ends in `.json`, xl.cfg otherwise.
/// `overrides` are xl's `KEY=VALUE` command-line settings (xl.cfg only; refused for JSON).
pub fn load(path: &Path, overrides: &[String]) -> Result<Loaded, ConfigError> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| ConfigError::Io {
        path: shown.clone(),
        message: e.to_string(),
    };
    // A FIFO or a device named as a config is refused, not waited on (chaosd reads these
    // files for its clients).
    let bytes = crate::files::read_regular(path, MAX_FILE_SIZE, "the largest config file read")
        .map_err(|e| match e {
            crate::files::ReadError::Io(e) => io(e),
            e => ConfigError::Io {
                path: shown.clone(),
                message: e.to_string(),
            },
        })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..good].iter().filter(|&&b| b == b'\n').count() + 1;
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        ConfigError::Syntax {
            at: Location::line(&shown, line),
            message: format!("not valid UTF-8 (at byte offset {good})"),
        }
    })?;
    // Many editors start a UTF-8 file with a byte order mark; it is no part of the config.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        if let Some(o) = overrides.first() {
            return Err(ConfigError::Invalid {
                at: Location::CommandLine { text: o.clone() },
                key: o.split('=').next().unwrap_or("").trim().to_string(),
                message: "KEY=VALUE overrides apply to xl.cfg files, not JSON configs".into(),
            });
        }
        parse_json(&text, &shown)
    } else {
        parse_xl(&text, &shown, overrides)
    }
}

/// Parses and validates xl.cfg text. `source` names the file in messages.
pub fn parse_xl(text: &str, source: &str, overrides: &[String]) -> Result<Loaded, ConfigError> {
    xl::parse(text, source, overrides)
}

/// Parses and validates a LightVM JSON config. `source` names the file in messages.
pub fn parse_json(text: &str, source: &str) -> Result<Loaded, ConfigError> {
    json::parse(text, source)
}
