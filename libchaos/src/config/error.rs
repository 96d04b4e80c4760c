//! Errors and warnings of the config module. Every message says where (file and line, or the
//! command-line override) and which key.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a setting (or a problem) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    /// A config file (`source` is the name used in messages), with line and column when known.
    File {
        source: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// A `KEY=VALUE` override given on the command line, as typed.
    CommandLine { text: String },
    /// A config that arrived over chaosd's socket.
    Request,
    /// A config built by a program, from no file.
    Unknown,
}

impl Location {
    pub(crate) fn file(source: &str) -> Self {
        Location::File {
            source: source.to_string(),
            line: None,
            column: None,
        }
    }

    pub(crate) fn line(source: &str, line: u32) -> Self {
        Location::File {
            source: source.to_string(),
            line: Some(line),
            column: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File {
                source, line: None, ..
            } => write!(f, "{source}"),
            Location::File {
                source,
                line: Some(l),
                column: None,
            } => write!(f, "{source}:{l}"),
            Location::File {
                source,
                line: Some(l),
                column: Some(c),
            } => write!(f, "{source}:{l}:{c}"),
            Location::CommandLine { text } => write!(f, "command line: {text}"),
            Location::Request => f.write_str("request"),
            Location::Unknown => f.write_str("config"),
        }
    }
}

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// The text is not valid xl.cfg syntax.
    #[error("{at}: syntax error: {message}")]
    Syntax { at: Location, message: String },
    /// A key has a value chaos cannot accept.
    #[error("{at}: {key}: {message}")]
    Invalid {
        at: Location,
        key: String,
        message: String,
    },
    /// A key (or value) that would change the guest in a way chaos cannot honour yet.
    #[error("{at}: {key}: {message}")]
    Unsupported {
        at: Location,
        key: String,
        message: String,
    },
    /// A required key is absent.
    #[error("{at}: {key}: missing ({message})")]
    Missing {
        at: Location,
        key: String,
        message: String,
    },
    /// A JSON config is malformed (syntax, types, unknown or duplicate keys).
    #[error("{at}: {message}")]
    Json { at: Location, message: String },
}

impl ConfigError {
    /// Where the problem is.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::Unsupported { at, .. }
            | ConfigError::Missing { at, .. }
            | ConfigError::Json { at, .. } => Some(at),
        }
    }

    /// The key concerned, if the error is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. }
            | ConfigError::Unsupported { key, .. }
            | ConfigError::Missing { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Something in the config chaos accepted but ignores or reinterprets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub at: Location,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}: {}", self.at, self.key, self.message)
    }
}
