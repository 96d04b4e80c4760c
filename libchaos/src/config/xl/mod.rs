//! Layer two of the xl.cfg reader: raw settings -> a validated [`DomainConfig`].
//!
//! Semantics follow xl (tools/xl/xl_parse.c): defaults, `cmdline` composition from
//! `root`/`extra`, `memory`/`maxmem` and `vcpus`/`maxvcpus` rules, action names. Every key xl
//! knows falls in one of three groups: handled here, refused (it would change the guest and
//! chaos cannot do it yet), or ignored with a warning (no effect on what the guest sees, or
//! only meaningful for HVM guests or a device model, which chaos never runs).
//!
//! The `vif` and `disk` lists are read in `devices`.

mod devices;

use super::error::{ConfigError, Location, Warning};
use super::syntax::{self, parse_c_number, Setting, Value};
use super::validate::{check_name, check_path};
use super::xl_keys::{suggest, treatment, Treatment, HANDLED_KEYS};
use super::{
    Action, DomainConfig, GuestSpec, Loaded, PlaneKind, TscMode, DEFAULT_MEMORY_MIB,
    MAX_MEMORY_MIB, MAX_VCPUS,
};
use crate::hypervisor::{GuestKind, Uuid};
use std::collections::HashMap;
use std::path::PathBuf;

/// An effective setting and where it was last assigned.
struct Entry {
    setting: Setting,
    at: Location,
}

struct Ctx<'a> {
    source: &'a str,
    /// Effective settings in order of (last) assignment; `None` where a key was reassigned.
    entries: Vec<Option<Entry>>,
    /// Key -> index in `entries`, so big files stay linear.
    index: HashMap<String, usize>,
    /// Keys the file assigns more than once with `=`: (first line, last line, assignments).
    reassigned: HashMap<String, (u32, u32, u32)>,
    warnings: Vec<Warning>,
}

fn syntax_err(at: Location, e: syntax::SyntaxError) -> ConfigError {
    ConfigError::Syntax {
        at,
        message: e.message,
    }
}

pub(crate) fn parse(text: &str, source: &str, overrides: &[String]) -> Result<Loaded, ConfigError> {
    let mut ctx = Ctx {
        source,
        entries: Vec::new(),
        index: HashMap::new(),
        reassigned: HashMap::new(),
        warnings: Vec::new(),
    };
    let settings =
        syntax::parse_settings(text).map_err(|e| syntax_err(Location::line(source, e.line), e))?;
    for s in settings {
        let at = Location::line(source, s.line);
        ctx.apply(s, at)?;
    }
    // xl appends the command-line settings to the file's text; they are parsed alike.
    for o in overrides {
        let at = Location::CommandLine { text: o.clone() };
        let settings = syntax::parse_settings(o).map_err(|e| syntax_err(at.clone(), e))?;
        if settings.is_empty() {
            return Err(ConfigError::Syntax {
                at,
                message: "expected KEY=VALUE".into(),
            });
        }
        for s in settings {
            ctx.apply(s, at.clone())?;
        }
    }
    ctx.warn_reassigned();
    let config = ctx.validate()?;
    Ok(Loaded {
        config,
        warnings: ctx.warnings,
    })
}

impl Ctx<'_> {
    fn apply(&mut self, s: Setting, at: Location) -> Result<(), ConfigError> {
        let prev = self.index.get(&s.key).and_then(|&i| self.entries[i].take());
        // The file assigning a key twice is most likely a mistake (xl keeps the last one
        // silently); an override replacing the file's value, or `+=`, is meant.
        if let (Some(p), syntax::Op::Assign, Location::File { line: Some(l), .. }) =
            (&prev, s.op, &at)
        {
            if let Location::File {
                line: Some(first), ..
            } = p.at
            {
                let e = self
                    .reassigned
                    .entry(s.key.clone())
                    .or_insert((first, *l, 1));
                e.1 = *l;
                e.2 += 1;
            }
        }
        let value =
            match (s.op, prev) {
                (syntax::Op::Append, Some(p)) => syntax::append(&p.setting.value, s.value)
                    .map_err(|message| ConfigError::Invalid {
                        at: at.clone(),
                        key: s.key.clone(),
                        message,
                    })?,
                (_, _) => s.value,
            };
        self.index.insert(s.key.clone(), self.entries.len());
        self.entries.push(Some(Entry {
            setting: Setting { value, ..s },
            at,
        }));
        Ok(())
    }

    /// One warning per key the file assigns more than once, at its last assignment.
    fn warn_reassigned(&mut self) {
        let mut keys: Vec<(String, (u32, u32, u32))> = self.reassigned.drain().collect();
        keys.sort_by_key(|(_, (_, last, _))| *last);
        for (key, (first, last, n)) in keys {
            let times = if n > 2 {
                format!(" ({n} assignments)")
            } else {
                String::new()
            };
            let at = Location::line(self.source, last);
            self.warn(
                &at,
                &key,
                format!(
                    "assigned again (first at line {first}){times}; the value of line {last} is used, as xl uses the last one"
                ),
            );
        }
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.index.get(key).and_then(|&i| self.entries[i].as_ref())
    }

    fn invalid(&self, e: &Entry, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at: e.at.clone(),
            key: e.setting.key.clone(),
            message: message.into(),
        }
    }

    fn warn(&mut self, at: &Location, key: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: at.clone(),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// A string value; a number counts as its decimal text (xl keeps atoms as text).
    fn string(&self, key: &str) -> Result<Option<(String, &Entry)>, ConfigError> {
        let Some(e) = self.get(key) else {
            return Ok(None);
        };
        match &e.setting.value {
            Value::Str(s) => Ok(Some((s.clone(), e))),
            Value::Num(n) => Ok(Some((n.to_string(), e))),
            Value::List(_) => Err(self.invalid(e, "expected a single value, got a list")),
        }
    }

    /// A number; a quoted string holding a number counts too (xl reads both with strtol).
    fn number(&self, key: &str) -> Result<Option<(u64, &Entry)>, ConfigError> {
        let Some(e) = self.get(key) else {
            return Ok(None);
        };
        match &e.setting.value {
            Value::Num(n) => Ok(Some((*n, e))),
            Value::Str(s) => match parse_c_number(s) {
                Some(n) => Ok(Some((n, e))),
                None => Err(self.invalid(e, format!("expected a number, got {s:?}"))),
            },
            Value::List(_) => Err(self.invalid(e, "expected a number, got a list")),
        }
    }

    fn bounded(
        &self,
        key: &str,
        min: u64,
        max: u64,
        unit: &str,
    ) -> Result<Option<(u64, &Entry)>, ConfigError> {
        match self.number(key)? {
            Some((n, e)) if n < min || n > max => Err(self.invalid(
                e,
                format!("{n}{unit} is out of range ({min}{unit} to {max}{unit})"),
            )),
            r => Ok(r),
        }
    }

    fn action(&self, key: &str, default: Action) -> Result<Action, ConfigError> {
        match self.string(key)? {
            None => Ok(default),
            Some((s, e)) => Action::from_name(&s).ok_or_else(|| {
                let names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
                self.invalid(
                    e,
                    format!(
                        "unknown action {s:?} (expected one of: {})",
                        names.join(", ")
                    ),
                )
            }),
        }
    }

    fn kind(&mut self) -> Result<GuestKind, ConfigError> {
        let hvm = |e: &Entry| ConfigError::Unsupported {
            at: e.at.clone(),
            key: e.setting.key.clone(),
            message: "hvm guests are not supported by chaos (only pv and pvh)".into(),
        };
        let from_type = match self.string("type")? {
            None => None,
            Some((s, e)) => match s.as_str() {
                "pv" => Some(GuestKind::Pv),
                "pvh" => Some(GuestKind::Pvh),
                "hvm" => return Err(hvm(e)),
                _ => {
                    return Err(self.invalid(
                        e,
                        format!("unknown guest type {s:?} (expected \"pv\" or \"pvh\")"),
                    ))
                }
            },
        };
        let Some((b, e)) = self.string("builder")? else {
            return Ok(from_type.unwrap_or(GuestKind::Pv));
        };
        match b.as_str() {
            "generic" => {}
            "hvm" => return Err(hvm(e)),
            _ => {
                return Err(self.invalid(
                    e,
                    format!("unknown builder {b:?} (deprecated; use type = \"pv\" or \"pvh\")"),
                ))
            }
        }
        if from_type.is_some_and(|t| t != GuestKind::Pv) {
            return Err(self.invalid(
                e,
                "contradicts type (builder = \"generic\" means type = \"pv\")",
            ));
        }
        let at = e.at.clone();
        self.warn(
            &at,
            "builder",
            "deprecated since Xen 4.10; use type = \"pv\"",
        );
        Ok(GuestKind::Pv)
    }

    /// Refuses or warns about every key chaos does not carry, in order of appearance.
    fn check_other_keys(&mut self) -> Result<(), ConfigError> {
        let mut notes = Vec::new();
        for e in self.entries.iter().flatten() {
            let key = e.setting.key.as_str();
            if HANDLED_KEYS.contains(&key) {
                continue;
            }
            let refuse = |message: &str| ConfigError::Unsupported {
                at: e.at.clone(),
                key: key.to_string(),
                message: message.to_string(),
            };
            match treatment(key) {
                Some(Treatment::Refuse(m)) => return Err(refuse(m)),
                Some(Treatment::RefuseIfSet(m)) => {
                    if !is_off(&e.setting.value) {
                        return Err(refuse(m));
                    }
                }
                Some(Treatment::Warn(m)) => {
                    notes.push((e.at.clone(), key.to_string(), m.to_string()))
                }
                None => {
                    let hint = suggest(key)
                        .map(|k| format!(" (did you mean '{k}'?)"))
                        .unwrap_or_default();
                    notes.push((
                        e.at.clone(),
                        key.to_string(),
                        format!("unknown key '{key}' ignored{hint}"),
                    ));
                }
            }
        }
        for (at, key, m) in notes {
            self.warn(&at, &key, m);
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<DomainConfig, ConfigError> {
        let source = self.source;
        let kind = self.kind()?;
        self.check_other_keys()?;

        let name = match self.string("name")? {
            Some((n, e)) => {
                check_name(&n).map_err(|m| self.invalid(e, m))?;
                n
            }
            None => {
                return Err(ConfigError::Missing {
                    at: Location::file(source),
                    key: "name".into(),
                    message: "xl requires a name".into(),
                })
            }
        };

        let kernel = match self.string("kernel")? {
            Some((k, e)) => {
                check_path(&k).map_err(|m| self.invalid(e, m))?;
                PathBuf::from(k)
            }
            None => {
                return Err(ConfigError::Missing {
                    at: Location::file(source),
                    key: "kernel".into(),
                    message: "chaos boots kernels directly: give kernel = \"/path/to/kernel\""
                        .into(),
                })
            }
        };
        let ramdisk = match self.string("ramdisk")? {
            Some((r, _)) if r.is_empty() => None,
            Some((r, e)) => {
                check_path(&r).map_err(|m| self.invalid(e, m))?;
                Some(PathBuf::from(r))
            }
            None => None,
        };
        let cmdline = self.cmdline()?;

        let memory = self
            .bounded("memory", 1, MAX_MEMORY_MIB, " MiB")?
            .map(|(n, _)| n);
        let maxmem = self.bounded("maxmem", 1, MAX_MEMORY_MIB, " MiB")?;
        // libxl: memory defaults to maxmem, both to 32 MiB; maxmem defaults to memory.
        let memory_mib = memory.or(maxmem.map(|m| m.0)).unwrap_or(DEFAULT_MEMORY_MIB);
        let maxmem_mib = match maxmem {
            Some((m, e)) if m < memory_mib => {
                return Err(
                    self.invalid(e, format!("{m} MiB is less than memory ({memory_mib} MiB)"))
                )
            }
            Some((m, _)) => m,
            None => memory_mib,
        };

        let max = u64::from(MAX_VCPUS);
        let vcpus = self
            .bounded("vcpus", 1, max, "")?
            .map_or(1, |(n, _)| n as u32);
        let max_vcpus = match self.bounded("maxvcpus", 1, max, "")? {
            Some((m, e)) if (m as u32) < vcpus => {
                return Err(self.invalid(e, format!("{m} is less than vcpus ({vcpus})")))
            }
            Some((m, _)) => m as u32,
            None => vcpus,
        };

        let on_poweroff = self.action("on_poweroff", Action::Destroy)?;
        let on_reboot = self.action("on_reboot", Action::Restart)?;
        let on_crash = self.action("on_crash", Action::Destroy)?;

        let vifs = self.vifs()?;
        let disks = self.disks()?;

        let control_plane = match self.string("chaos_control_plane")? {
            None => PlaneKind::Xenstore,
            Some((s, e)) => PlaneKind::from_name(&s).ok_or_else(|| {
                self.invalid(
                    e,
                    format!("unknown control plane {s:?} (expected \"xenstore\" or \"noxs\")"),
                )
            })?,
        };

        let tsc_mode = self.tsc_mode()?;

        let uuid = match self.string("uuid")? {
            None => None,
            Some((s, e)) => Some(s.parse::<Uuid>().map_err(|_| {
                self.invalid(
                    e,
                    format!("invalid UUID {s:?} (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
                )
            })?),
        };

        let spec = GuestSpec {
            name,
            kind,
            kernel,
            ramdisk,
            cmdline,
            memory_mib,
            maxmem_mib,
            vcpus,
            max_vcpus,
            on_poweroff,
            on_reboot,
            on_crash,
            vifs,
            control_plane,
            tsc_mode,
            uuid,
            paused: false,
            disks,
        };
        // The rules are validate's: a broken one is reported at the line of its key (the
        // checks above already gave the common mistakes their line).
        spec.validate_located(|key| {
            let keys: &[&str] = match key {
                "cmdline" => &["cmdline", "extra", "root"],
                "maxmem" => &["maxmem", "memory"],
                "maxvcpus" => &["maxvcpus", "vcpus"],
                k => &[k][..],
            };
            // A rule that involves several keys is reported where the last of them was set:
            // that is the assignment (often a command-line override) that broke it. The
            // command line is cmdline alone if that is set, else root and extra.
            let keys = if key == "cmdline" && self.get("cmdline").is_some() {
                &keys[..1]
            } else {
                keys
            };
            keys.iter()
                .filter_map(|k| self.index.get(*k).filter(|&&i| self.entries[i].is_some()))
                .max()
                .and_then(|&i| self.entries[i].as_ref())
                .map_or_else(|| Location::file(source), |e| e.at.clone())
        })
    }

    fn cmdline(&mut self) -> Result<String, ConfigError> {
        let cmdline = self.string("cmdline")?.map(|(s, e)| (s, e.at.clone()));
        let root = self.string("root")?.map(|(s, _)| s);
        let extra = self.string("extra")?.map(|(s, _)| s);
        Ok(match (cmdline, root, extra) {
            (Some((c, at)), r, x) => {
                if r.is_some() || x.is_some() {
                    self.warn(
                        &at,
                        "cmdline",
                        "root and extra ignored in favour of cmdline (as xl)",
                    );
                }
                c
            }
            (None, Some(r), Some(x)) => format!("root={r} {x}"),
            (None, Some(r), None) => format!("root={r}"),
            (None, None, Some(x)) => x,
            (None, None, None) => String::new(),
        })
    }

    fn tsc_mode(&mut self) -> Result<TscMode, ConfigError> {
        let Some(e) = self.get("tsc_mode") else {
            return Ok(TscMode::Default);
        };
        let numeric = match &e.setting.value {
            Value::Num(n) => Some(*n),
            Value::Str(s) => parse_c_number(s),
            Value::List(_) => None,
        };
        if let Some(n) = numeric {
            let mode = usize::try_from(n)
                .ok()
                .and_then(|i| TscMode::ALL.get(i).copied());
            let Some(mode) = mode else {
                return Err(self.invalid(
                    e,
                    format!("invalid value {n} (expected 0 to 3, or better a name)"),
                ));
            };
            let at = e.at.clone();
            self.warn(
                &at,
                "tsc_mode",
                format!("integer values are deprecated (as in xl); use tsc_mode = \"{mode}\""),
            );
            return Ok(mode);
        }
        let (s, e) = self
            .string("tsc_mode")?
            .ok_or_else(|| self.invalid(e, "missing value"))?;
        TscMode::from_name(&s).ok_or_else(|| {
            let names: Vec<_> = TscMode::ALL.iter().map(|m| m.as_str()).collect();
            self.invalid(
                e,
                format!("unknown mode {s:?} (expected one of: {})", names.join(", ")),
            )
        })
    }
}

/// True for values that turn a feature off or list nothing: 0, "0", "", [].
fn is_off(v: &Value) -> bool {
    match v {
        Value::Num(n) => *n == 0,
        Value::Str(s) => s.is_empty() || parse_c_number(s) == Some(0),
        Value::List(items) => items.is_empty(),
    }
}
