//! The command-line scanner of `chaos` and `chaosd`, in place of clap.
//!
//! Every `chaos` command is a process start, and in a PV dom0 a process pays for each page it
//! touches: clap's code was most of the instructions of a whole creation through chaosd
//! (docs/COSTS.md). This scanner knows options (long and short, flags or with a value), `-vv`
//! clusters, `--name=value`, `-nVALUE`, `--` and positionals. It checks only the shape of the
//! line; each command turns the [`Matches`] into its own settings and checks the values.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

/// One option a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    pub long: &'static str,
    pub short: Option<char>,
    /// The value's name in the help (`DIR`), or `None` for a flag.
    pub value: Option<&'static str>,
    pub help: &'static str,
}

impl Opt {
    pub const fn flag(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
        Opt {
            long,
            short,
            value: None,
            help,
        }
    }

    pub const fn value(
        long: &'static str,
        short: Option<char>,
        value: &'static str,
        help: &'static str,
    ) -> Opt {
        Opt {
            long,
            short,
            value: Some(value),
            help,
        }
    }
}

/// What is wrong with a command line. The command's name goes in front where the caller knows
/// it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    #[error("option '--{0}' needs a value")]
    MissingValue(&'static str),
    #[error("option '--{0}' takes no value")]
    UnexpectedValue(&'static str),
    #[error("--{option}: {value:?} is not valid UTF-8")]
    NotUtf8 {
        option: &'static str,
        value: OsString,
    },
    #[error("--{option}: '{value}' {why}")]
    BadValue {
        option: &'static str,
        value: String,
        why: String,
    },
    #[error("unexpected argument '{0}'")]
    UnexpectedArgument(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("--{0} cannot be used with --{1}")]
    Conflict(&'static str, &'static str),
    #[error("--{0} is only for use with --{1}")]
    Requires(&'static str, &'static str),
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
}

/// The options and positionals one scan found, in command-line order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches {
    found: Vec<(&'static str, Option<OsString>)>,
    pub positionals: Vec<OsString>,
}

impl Matches {
    /// How often option `long` was given (`-vv` is twice).
    pub fn count(&self, long: &str) -> usize {
        self.found.iter().filter(|(name, _)| *name == long).count()
    }

    pub fn flag(&self, long: &str) -> bool {
        self.count(long) > 0
    }

    /// The values of a repeatable option, in order.
    pub fn all<'a>(&'a self, long: &'a str) -> impl Iterator<Item = &'a OsStr> + 'a {
        self.found
            .iter()
            .filter(move |(name, _)| *name == long)
            .filter_map(|(_, value)| value.as_deref())
    }

    /// The value of option `long`; given twice, the last one counts (as with xl and clap).
    pub fn last(&self, long: &str) -> Option<&OsStr> {
        self.found
            .iter()
            .rev()
            .find(|(name, value)| *name == long && value.is_some())
            .and_then(|(_, value)| value.as_deref())
    }

    pub fn path(&self, long: &str) -> Option<PathBuf> {
        self.last(long).map(PathBuf::from)
    }

    pub fn string(&self, long: &'static str) -> Result<Option<String>, ArgsError> {
        self.last(long).map(|v| utf8(long, v)).transpose()
    }

    /// A value read with `FromStr`, whose error says what is wrong with the value (it is
    /// shown after it: "'kvm' is not a hypervisor ...").
    pub fn parsed<T>(&self, long: &'static str) -> Result<Option<T>, ArgsError>
    where
        T: FromStr<Err = String>,
    {
        let Some(text) = self.string(long)? else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|why| ArgsError::BadValue {
            option: long,
            value: text,
            why,
        })
    }

    /// A number within `range`, or `None` when the option is not given.
    pub fn number<T>(
        &self,
        long: &'static str,
        range: RangeInclusive<T>,
    ) -> Result<Option<T>, ArgsError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
    {
        let Some(text) = self.string(long)? else {
            return Ok(None);
        };
        let bad = |why: String| ArgsError::BadValue {
            option: long,
            value: text.clone(),
            why,
        };
        let n: T = text
            .parse()
            .map_err(|_| bad("is not a whole number".into()))?;
        if !range.contains(&n) {
            return Err(bad(format!(
                "is out of range ({}..={})",
                range.start(),
                range.end()
            )));
        }
        Ok(Some(n))
    }

    /// Fails when both options are given.
    pub fn conflict(&self, a: &'static str, b: &'static str) -> Result<(), ArgsError> {
        if self.flag(a) && self.flag(b) {
            return Err(ArgsError::Conflict(a, b));
        }
        Ok(())
    }

    /// Fails when `a` is given without `b`.
    pub fn requires(&self, a: &'static str, b: &'static str) -> Result<(), ArgsError> {
        if self.flag(a) && !self.flag(b) {
            return Err(ArgsError::Requires(a, b));
        }
        Ok(())
    }

    /// Positionals as UTF-8 (domain names, KEY=VALUE overrides).
    pub fn positional_strings(&self) -> Result<Vec<String>, ArgsError> {
        self.positionals
            .iter()
            .map(|p| {
                p.to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ArgsError::UnexpectedArgument(p.to_string_lossy().into_owned()))
            })
            .collect()
    }
}

fn utf8(option: &'static str, value: &OsStr) -> Result<String, ArgsError> {
    value
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| ArgsError::NotUtf8 {
            option,
            value: value.to_owned(),
        })
}

/// Scans arguments against option tables, collecting into one [`Matches`].
#[derive(Debug)]
pub struct Scanner {
    args: std::vec::IntoIter<OsString>,
    /// After `--`: everything is a positional.
    only_positionals: bool,
    pub matches: Matches,
}

impl Scanner {
    /// `args` without the program's name.
    pub fn new(args: impl IntoIterator<Item = OsString>) -> Scanner {
        Scanner {
            args: args.into_iter().collect::<Vec<_>>().into_iter(),
            only_positionals: false,
            matches: Matches::default(),
        }
    }

    /// Scans options of `tables` up to and including the first positional, which it returns
    /// (a command's name) instead of keeping it; `None` at the end of the line.
    pub fn until_positional(&mut self, tables: &[&[Opt]]) -> Result<Option<OsString>, ArgsError> {
        while let Some(arg) = self.args.next() {
            if let Some(positional) = self.one(arg, tables)? {
                return Ok(Some(positional));
            }
        }
        Ok(None)
    }

    /// Scans the rest of the line: options of `tables`, and positionals.
    pub fn rest(&mut self, tables: &[&[Opt]]) -> Result<(), ArgsError> {
        while let Some(arg) = self.args.next() {
            if let Some(positional) = self.one(arg, tables)? {
                self.matches.positionals.push(positional);
            }
        }
        Ok(())
    }

    /// Takes in one argument (and the value after it, where it needs one); returns it when it
    /// is a positional.
    fn one(&mut self, arg: OsString, tables: &[&[Opt]]) -> Result<Option<OsString>, ArgsError> {
        if self.only_positionals {
            return Ok(Some(arg));
        }
        // Options are ASCII; a non-UTF-8 argument can only be a positional (a path).
        let Some(text) = arg.to_str() else {
            return Ok(Some(arg));
        };
        if text == "--" {
            self.only_positionals = true;
            return Ok(None);
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(OsString::from(value))),
                None => (long, None),
            };
            let opt = find(tables, |o| o.long == name)
                .ok_or_else(|| ArgsError::UnknownOption(format!("--{name}")))?;
            let value = match (opt.value, inline) {
                (None, Some(_)) => return Err(ArgsError::UnexpectedValue(opt.long)),
                (None, None) => None,
                (Some(_), Some(v)) => Some(v),
                (Some(_), None) => Some(self.args.next().ok_or(ArgsError::MissingValue(opt.long))?),
            };
            self.matches.found.push((opt.long, value));
            return Ok(None);
        }
        let Some(cluster) = text.strip_prefix('-').filter(|c| !c.is_empty()) else {
            // A word, or "-" alone (standard input, by convention).
            return Ok(Some(arg));
        };
        for (i, c) in cluster.char_indices() {
            let opt = find(tables, |o| o.short == Some(c))
                .ok_or_else(|| ArgsError::UnknownOption(format!("-{c}")))?;
            if opt.value.is_none() {
                self.matches.found.push((opt.long, None));
                continue;
            }
            // `-n3` or `-n 3`: the value ends the cluster.
            let attached = &cluster[i + c.len_utf8()..];
            let value = if attached.is_empty() {
                self.args.next().ok_or(ArgsError::MissingValue(opt.long))?
            } else {
                OsString::from(attached)
            };
            self.matches.found.push((opt.long, Some(value)));
            break;
        }
        Ok(None)
    }
}

fn find(tables: &[&[Opt]], pred: impl Fn(&Opt) -> bool) -> Option<Opt> {
    tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|o| pred(o))
        .copied()
}

/// A help page: usage line, what it does, then the options of `tables`.
pub fn help(usage: &str, about: &str, tables: &[&[Opt]], extra: &str) -> String {
    let mut out = format!("{about}\n\nUsage: {usage}\n");
    if !extra.is_empty() {
        let _ = write!(out, "\n{extra}");
    }
    out.push_str("\nOptions:\n");
    let spelled = |o: &Opt| {
        // Long names line up whether or not there is a short one.
        let short = o.short.map_or("    ".to_owned(), |c| format!("-{c}, "));
        let value = o.value.map(|v| format!(" {v}")).unwrap_or_default();
        format!("{short}--{}{value}", o.long)
    };
    let width = tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|o| spelled(o).len())
        .max()
        .unwrap_or(0);
    for opt in tables.iter().flat_map(|t| t.iter()) {
        let _ = writeln!(out, "  {:width$}  {}", spelled(opt), opt.help);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBAL: &[Opt] = &[
        Opt::flag("verbose", Some('v'), "more"),
        Opt::value("run-dir", None, "DIR", "state"),
    ];
    const CREATE: &[Opt] = &[
        Opt::flag("paused", Some('p'), "paused"),
        Opt::value("count", Some('n'), "N", "how many"),
    ];

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn scan(args: &[&str]) -> Result<(Option<OsString>, Matches), ArgsError> {
        let mut s = Scanner::new(os(args));
        let command = s.until_positional(&[GLOBAL])?;
        s.rest(&[GLOBAL, CREATE])?;
        Ok((command, s.matches))
    }

    #[test]
    fn options_go_before_and_after_the_command_in_every_spelling() {
        let (command, m) = scan(&[
            "-v",
            "--run-dir",
            "/r",
            "create",
            "-pvn3",
            "f.cfg",
            "--count=4",
            "-v",
            "k=v",
        ])
        .unwrap();
        assert_eq!(command, Some("create".into()));
        assert_eq!(m.count("verbose"), 3);
        assert!(m.flag("paused"));
        assert_eq!(m.number("count", 1u32..=10).unwrap(), Some(4));
        assert_eq!(m.path("run-dir"), Some(PathBuf::from("/r")));
        assert_eq!(m.positionals, os(&["f.cfg", "k=v"]));
        let (_, m) = scan(&["create", "-n", "7", "--run-dir=/x"]).unwrap();
        assert_eq!(m.number("count", 1u32..=10).unwrap(), Some(7));
        assert_eq!(m.path("run-dir"), Some(PathBuf::from("/x")));
    }

    #[test]
    fn after_a_double_dash_everything_is_a_positional() {
        let (_, m) = scan(&["create", "--", "-p", "--count=3", "-"]).unwrap();
        assert!(!m.flag("paused"));
        assert_eq!(m.positionals, os(&["-p", "--count=3", "-"]));
    }

    #[test]
    fn a_value_may_start_with_a_dash() {
        let (_, m) = scan(&["create", "--run-dir", "-odd"]).unwrap();
        assert_eq!(m.path("run-dir"), Some(PathBuf::from("-odd")));
    }

    #[test]
    fn malformed_lines_name_the_option() {
        assert_eq!(
            scan(&["create", "--bogus"]),
            Err(ArgsError::UnknownOption("--bogus".into()))
        );
        assert_eq!(
            scan(&["create", "-px"]),
            Err(ArgsError::UnknownOption("-x".into()))
        );
        // A command's options are not known before its name.
        assert_eq!(
            scan(&["-p", "create"]),
            Err(ArgsError::UnknownOption("-p".into()))
        );
        assert_eq!(
            scan(&["create", "-n"]),
            Err(ArgsError::MissingValue("count"))
        );
        assert_eq!(
            scan(&["create", "--paused=yes"]),
            Err(ArgsError::UnexpectedValue("paused"))
        );
        let (_, m) = scan(&["create", "-n", "0"]).unwrap();
        let e = m.number("count", 1u32..=10).unwrap_err();
        assert_eq!(e.to_string(), "--count: '0' is out of range (1..=10)");
        let (_, m) = scan(&["create", "-n", "x1"]).unwrap();
        let e = m.number("count", 1u32..=10).unwrap_err();
        assert_eq!(e.to_string(), "--count: 'x1' is not a whole number");
    }

    #[test]
    fn conflicts_and_requirements() {
        let (_, m) = scan(&["create", "-p", "-v"]).unwrap();
        assert_eq!(
            m.conflict("paused", "verbose"),
            Err(ArgsError::Conflict("paused", "verbose"))
        );
        assert!(m.requires("paused", "verbose").is_ok());
        assert_eq!(
            m.requires("paused", "count"),
            Err(ArgsError::Requires("paused", "count"))
        );
    }

    #[test]
    fn the_help_lists_every_option_aligned() {
        let text = help("chaos create FILE", "Create.", &[CREATE, GLOBAL], "");
        assert!(text.starts_with("Create.\n\nUsage: chaos create FILE\n"));
        assert!(text.contains("  -p, --paused       paused\n"), "{text}");
        assert!(text.contains("  -n, --count N      how many\n"), "{text}");
        assert!(text.contains("      --run-dir DIR  state\n"), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn a_path_need_not_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'f', 0xff]);
        let mut s = Scanner::new(vec![OsString::from("create"), odd.clone()]);
        s.until_positional(&[GLOBAL]).unwrap();
        s.rest(&[GLOBAL, CREATE]).unwrap();
        assert_eq!(s.matches.positionals, vec![odd]);
    }
}
