//! Disk specs as xl-disk-configuration(5) writes them (`'/srv/web.img,raw,xvda,rw'`,
//! `'format=raw, vdev=xvdb, access=ro, target=/srv/data.img'`, the deprecated
//! `'phy:/dev/vg/web,xvda,w'`), and the guest's disk numbers as libxl computes them
//! (`xvda` = 51712).
//!
//! The grammar is libxlu's disk scanner: comma-separated items, each a `key=value`, a flag, a
//! deprecated `prefix:` or a positional parameter (target, format, vdev, access, in that
//! order); `target=` takes the rest of the spec, commas included. Each part is given once.
//! What xl accepts but chaos cannot do (image formats that need QEMU, CD-ROM drives, other
//! backends) is refused as [`DiskSpecError::Unsupported`], naming the part.

use std::path::PathBuf;

use super::types::DiskConfig;

/// Why a disk spec was refused: the part of the spec at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpecError {
    /// Not a disk spec xl would accept.
    Invalid(String),
    /// A valid spec asking for something chaos cannot do yet.
    Unsupported(String),
}

impl std::fmt::Display for DiskSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskSpecError::Invalid(m) | DiskSpecError::Unsupported(m) => f.write_str(m),
        }
    }
}

/// A parsed disk and notes about what was ignored.
#[derive(Debug)]
pub struct ParsedDisk {
    pub disk: DiskConfig,
    pub warnings: Vec<String>,
}

/// Prefixes of the old xend syntax that say nothing (libxlu strips them).
const IGNORED_PREFIXES: &[&str] = &["tapdisk", "tap", "tap2", "aio", "ioemu", "file", "phy"];
/// Prefixes of the old syntax that name a block script (`nbd:` = `script=block-nbd`).
const SCRIPT_PREFIXES: &[&str] = &["iscsi", "nbd", "enbd", "drbd"];
/// Prefixes of the old syntax that name the format.
const FORMAT_PREFIXES: &[&str] = &["raw", "qcow", "qcow2", "vhd"];
/// The block script libxl records when a disk names none (chaos records it too).
pub const DEFAULT_SCRIPT: &str = "block";

/// What the spec said so far; `None` is "not given".
#[derive(Default)]
struct Parts {
    /// `Some("")` is an empty positional target: set, but may still be given by `target=`.
    target: Option<String>,
    /// The format item as written (for the error) and whether it is raw.
    format: Option<(String, Format)>,
    vdev: Option<String>,
    /// Whether the access came from the fourth positional parameter (xl takes one at most).
    access_positional: bool,
    /// The access item as written, and read-only.
    access: Option<(String, bool)>,
    /// The item that made the disk a CD-ROM.
    cdrom: Option<String>,
    script: Option<String>,
    backend: Option<String>,
    backendtype: Option<String>,
    discard: Option<bool>,
    direct_io_safe: bool,
    trusted: Option<bool>,
    /// A deprecated prefix was seen: the second positional parameter is then the vdev.
    had_prefix: bool,
    warnings: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    /// Needs QEMU's qdisk backend.
    Qemu,
    /// format=empty: an empty CD-ROM drive.
    Empty,
}

fn invalid(m: impl Into<String>) -> DiskSpecError {
    DiskSpecError::Invalid(m.into())
}

fn unsupported(m: impl Into<String>) -> DiskSpecError {
    DiskSpecError::Unsupported(m.into())
}

/// `[a-z][a-z0-9]*` (a deprecated prefix's name) or, with `hyphen`, `[a-z][-a-z0-9]*` (a key).
fn is_word(s: &str, hyphen: bool) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || (hyphen && c == '-'))
}

impl Parts {
    /// A string part given once (an empty earlier value may be replaced, as in libxlu).
    fn save(slot: &mut Option<String>, what: &str, value: &str) -> Result<(), DiskSpecError> {
        match slot {
            Some(old) if !old.is_empty() => Err(invalid(format!(
                "{what} given twice ({old:?} and {value:?})"
            ))),
            _ => {
                *slot = Some(value.to_string());
                Ok(())
            }
        }
    }

    fn set_format(&mut self, item: &str, value: &str) -> Result<(), DiskSpecError> {
        let format = match value {
            "" | "raw" => Format::Raw,
            "qcow" | "qcow2" | "vhd" | "qed" => Format::Qemu,
            "empty" => Format::Empty,
            _ => {
                return Err(invalid(format!(
                    "{item:?}: unknown format {value:?} (xl knows raw, qcow, qcow2, vhd, qed; \
                     the second positional parameter is the format: write '<target>,,<vdev>' \
                     or vdev=<vdev> to skip it)"
                )))
            }
        };
        match &self.format {
            Some((old, f)) if *f != format => {
                let first = if old.is_empty() {
                    "as the empty second positional parameter, which means raw".to_string()
                } else {
                    format!("{old:?}")
                };
                Err(invalid(format!(
                    "{item:?}: format given twice (first {first})"
                )))
            }
            _ => {
                self.format = Some((item.to_string(), format));
                Ok(())
            }
        }
    }

    fn set_access(&mut self, item: &str, value: &str) -> Result<(), DiskSpecError> {
        let readonly = match value {
            "r" | "ro" => true,
            "w" | "rw" | "" => false,
            _ => {
                return Err(invalid(format!(
                    "{item:?}: unknown access {value:?} (expected r, ro, w or rw)"
                )))
            }
        };
        match &self.access {
            Some((old, ro)) if *ro != readonly => Err(invalid(format!(
                "{item:?}: access given twice (first {old:?})"
            ))),
            _ => {
                self.access = Some((item.to_string(), readonly));
                Ok(())
            }
        }
    }

    /// A positional vdev that may carry the old `:cdrom` / `:disk` suffix.
    fn set_vdev_and_devtype(&mut self, item: &str) -> Result<(), DiskSpecError> {
        match item.rsplit_once(':') {
            None => Self::save(&mut self.vdev, "vdev", item),
            Some((vdev, devtype)) => {
                Self::save(&mut self.vdev, "vdev", vdev)?;
                match devtype {
                    "cdrom" => self.cdrom = Some(item.to_string()),
                    "disk" => self.cdrom = None,
                    _ => {
                        return Err(invalid(format!(
                            "{item:?}: unknown device type {devtype:?} after the vdev (expected cdrom or disk)"
                        )))
                    }
                }
                Ok(())
            }
        }
    }

    /// One positional parameter: target, format, vdev, access, in that order.
    fn positional(&mut self, item: &str) -> Result<(), DiskSpecError> {
        if self.target.is_none() {
            self.target = Some(item.to_string());
        } else if !self.had_prefix && self.format.is_none() {
            // The old empty-CD-ROM syntax: ',hdc:cdrom,r'.
            if self.target.as_deref() == Some("") && item.contains(':') {
                self.set_vdev_and_devtype(item)?;
                self.format = Some((item.to_string(), Format::Empty));
            } else {
                self.set_format(item, item)?;
            }
        } else if self.vdev.is_none() {
            self.set_vdev_and_devtype(item)?;
        } else if !self.access_positional {
            self.access_positional = true;
            self.set_access(item, item)?;
        } else {
            return Err(invalid(format!(
                "{item:?}: too many positional parameters (target, format, vdev, access)"
            )));
        }
        Ok(())
    }

    /// `key=value` items.
    fn keyword(&mut self, item: &str, key: &str, value: &str) -> Result<(), DiskSpecError> {
        match key {
            "format" => self.set_format(item, value)?,
            "access" => self.set_access(item, value)?,
            "vdev" => Self::save(&mut self.vdev, "vdev", value)?,
            "script" => Self::save(&mut self.script, "script", value)?,
            "backend" => Self::save(&mut self.backend, "backend", value)?,
            "backendtype" => match value {
                "phy" => self.backendtype = Some(item.to_string()),
                "tap" | "qdisk" | "standalone" => {
                    return Err(unsupported(format!(
                        "{item:?}: chaos serves disks with Linux blkback only (backendtype=phy); \
                         {value} needs another backend"
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "{item:?}: unknown backend type {value:?} (expected phy, tap, qdisk or standalone)"
                    )))
                }
            },
            "devtype" => match value {
                "cdrom" => self.cdrom = Some(item.to_string()),
                "disk" => self.cdrom = None,
                _ => {
                    return Err(invalid(format!(
                        "{item:?}: unknown device type {value:?} (expected cdrom or disk)"
                    )))
                }
            },
            "specification" => match value {
                "xen" => {}
                "virtio" => {
                    return Err(unsupported(format!(
                        "{item:?}: virtio disks are not supported by chaos (the Xen PV block protocol is)"
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "{item:?}: unknown specification {value:?} (expected xen or virtio)"
                    )))
                }
            },
            "grant_usage" => match value {
                "0" | "1" => self
                    .warnings
                    .push(format!("{item:?} ignored (it only matters for virtio disks)")),
                _ => {
                    return Err(invalid(format!(
                        "{item:?}: expected grant_usage=0 or grant_usage=1"
                    )))
                }
            },
            "colo-host" | "colo-port" | "colo-export" | "active-disk" | "hidden-disk" => {
                return Err(unsupported(format!(
                    "{item:?}: COLO fault tolerance is not supported by chaos"
                )))
            }
            _ => {
                return Err(invalid(format!(
                    "{item:?}: unknown parameter '{key}' (known: target, format, vdev, access, devtype, \
                     backend, backendtype, script, specification; flags: cdrom, discard, no-discard, \
                     direct-io-safe, trusted, untrusted)"
                )))
            }
        }
        Ok(())
    }

    /// Flags (whole items without `=`); false if `item` is none.
    fn flag(&mut self, item: &str) -> Result<bool, DiskSpecError> {
        match item {
            "cdrom" => self.cdrom = Some(item.to_string()),
            "discard" => self.discard = Some(true),
            "no-discard" => self.discard = Some(false),
            "direct-io-safe" => self.direct_io_safe = true,
            "trusted" => self.trusted = Some(true),
            "untrusted" => self.trusted = Some(false),
            "colo" => {
                return Err(unsupported(
                    "\"colo\": COLO fault tolerance is not supported by chaos",
                ))
            }
            "no-colo" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A deprecated `prefix:` at the start of `rest`: applies it and returns what follows, or
    /// `None` when `rest` does not start with one.
    fn prefix<'a>(&mut self, rest: &'a str) -> Result<Option<&'a str>, DiskSpecError> {
        let Some((name, after)) = rest.split_once(':') else {
            return Ok(None);
        };
        if !is_word(name, false) {
            return Ok(None);
        }
        if FORMAT_PREFIXES.contains(&name) {
            self.had_prefix = true;
            self.set_format(&format!("{name}:"), name)?;
        } else if SCRIPT_PREFIXES.contains(&name) {
            self.had_prefix = true;
            Self::save(&mut self.script, "script", &format!("block-{name}"))?;
        } else if IGNORED_PREFIXES.contains(&name) {
            self.had_prefix = true;
        } else if after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        {
            return Err(invalid(format!(
                "\"{name}:\": unknown deprecated disk prefix (known: raw:, qcow:, qcow2:, vhd:, \
                 iscsi:, nbd:, enbd:, drbd:, and the ignored tapdisk:, tap:, tap2:, aio:, ioemu:, file:, phy:)"
            )));
        } else {
            // `hdc:cdrom` and the like: a positional parameter with a colon.
            return Ok(None);
        }
        Ok(Some(after))
    }
}

/// Parses one disk spec (xl-disk-configuration(5)).
pub fn parse_disk_spec(spec: &str) -> Result<ParsedDisk, DiskSpecError> {
    let mut p = Parts::default();
    let mut rest = spec;
    loop {
        // Whitespace before a parameter is ignored.
        rest = rest.trim_start_matches([' ', '\t', '\n']);
        if rest.is_empty() {
            break;
        }
        // target= takes the rest of the spec, commas and all (one trailing comma dropped).
        if let Some(value) = rest.strip_prefix("target=") {
            let value = value.strip_suffix(',').unwrap_or(value);
            Parts::save(&mut p.target, "target", value)?;
            break;
        }
        if let Some(after) = p.prefix(rest)? {
            rest = after;
            continue;
        }
        let (item, next) = rest.split_once(',').unwrap_or((rest, ""));
        rest = next;
        if let Some((key, value)) = item.split_once('=') {
            if !is_word(key, true) && key != "grant_usage" {
                return Err(invalid(format!(
                    "{item:?}: bad disk syntax (a parameter is key=value with a lower-case key; \
                     a target that contains '=' or ',' must be given last, as target=...)"
                )));
            }
            p.keyword(item, key, value)?;
        } else if !p.flag(item)? {
            p.positional(item)?;
        }
    }
    finish(p)
}

/// The rules libxlu applies once the whole spec is read, and what chaos refuses.
fn finish(p: Parts) -> Result<ParsedDisk, DiskSpecError> {
    if let Some(item) = &p.cdrom {
        return Err(unsupported(format!(
            "{item:?}: CD-ROM drives are not supported by chaos (PV and PVH guests get disks; \
             give the image as an ordinary disk, read-only with access=ro)"
        )));
    }
    let format = p.format.as_ref().map_or(Format::Raw, |(_, f)| *f);
    match (format, &p.format) {
        (Format::Qemu, Some((item, _))) => {
            return Err(unsupported(format!(
                "{item:?}: chaos serves raw images only (this format needs QEMU's qdisk backend; \
                 `qemu-img convert -O raw` makes a raw copy)"
            )))
        }
        (Format::Empty, Some((item, _))) => {
            return Err(invalid(format!(
                "{item:?}: an empty drive is a CD-ROM drive, and only CD-ROM drives may be empty"
            )))
        }
        _ => {}
    }
    let vdev = p
        .vdev
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("no vdev given (the guest's name for the disk, e.g. xvda)"))?;
    let target =
        match p.target {
            None => {
                return Err(invalid(
                    "no target given (the file or block device to serve)",
                ))
            }
            Some(t) if t.is_empty() => return Err(invalid(
                "empty target (only a CD-ROM drive may be empty; give the file or block device)",
            )),
            Some(t) => t,
        };
    // "/dev will be prepended if the path doesn't start with a '/'" -- unless a script is to
    // interpret the target, which then is no path.
    let target = if target.starts_with('/') || p.script.is_some() {
        target
    } else {
        format!("/dev/{target}")
    };
    let mut warnings = p.warnings;
    if let Some(script) = &p.script {
        if script != DEFAULT_SCRIPT && !script.ends_with("/block") {
            warnings.push(format!(
                "script={script} is recorded but not run: chaos runs no hotplug scripts, and \
                 xendevd serves files and block devices only"
            ));
        }
    }
    let disk = DiskConfig {
        target: PathBuf::from(target),
        vdev,
        readonly: p.access.is_some_and(|(_, ro)| ro),
        script: p.script,
        discard: p.discard,
        direct_io_safe: p.direct_io_safe,
        trusted: p.trusted.unwrap_or(true),
        backend: p.backend.filter(|b| !b.is_empty()),
    };
    Ok(ParsedDisk { disk, warnings })
}

/// Major numbers of the Linux device names a vdev can be given as.
const XVD_MAJOR: u32 = 202;
const SD_MAJOR: u32 = 8;
const IDE0_MAJOR: u32 = 3;
const IDE1_MAJOR: u32 = 22;
/// Extended numbering (xen-vbd-interface(7)): disks past xvdp, partitions past 15.
const EXTENDED: u32 = 1 << 28;

/// `<letters><partition>` after `prefix`: the disk index (the letters read as bijective base
/// 26, a = 0, z = 25, aa = 26) and the partition (0 for the whole disk; no leading zeros).
fn disk_and_partition(
    vdev: &str,
    prefix: &str,
    max_disk: u32,
    max_part: u32,
) -> Option<(u32, u32)> {
    let rest = vdev.strip_prefix(prefix)?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let mut disk: u32 = 0;
    for (i, c) in rest.bytes().take(letters).enumerate() {
        let digit = u32::from(c - b'a');
        disk = if i == 0 {
            digit
        } else {
            (disk + 1).checked_mul(26)?.checked_add(digit)?
        };
        if disk > max_disk {
            return None;
        }
    }
    let part = &rest[letters..];
    if part.is_empty() {
        return Some((disk, 0));
    }
    if part.starts_with('0') || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part: u32 = part.parse().ok()?;
    (part <= max_part).then_some((disk, part))
}

/// `d<disk>p<partition>` in decimal.
fn d_p_form(vdev: &str) -> Option<(u32, u32)> {
    let (disk, part) = vdev.strip_prefix('d')?.split_once('p')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(disk) || !digits(part) {
        return None;
    }
    let (disk, part) = (disk.parse::<u32>().ok()?, part.parse::<u32>().ok()?);
    (disk < 1 << 20 && part < 256).then_some((disk, part))
}

/// A plain number as C's `strtoul(s, _, 0)` reads it (decimal, `0x` hex, `0` octal), up to
/// `INT_MAX`.
fn number(vdev: &str) -> Option<u32> {
    let n = if let Some(hex) = vdev.strip_prefix("0x").or_else(|| vdev.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()?
    } else if vdev.len() > 1 && vdev.starts_with('0') {
        u32::from_str_radix(&vdev[1..], 8).ok()?
    } else if !vdev.is_empty() && vdev.bytes().all(|b| b.is_ascii_digit()) {
        vdev.parse().ok()?
    } else {
        return None;
    };
    (n <= i32::MAX as u32).then_some(n)
}

/// The number of a virtual disk as libxl's `libxl__device_disk_dev_number` computes it
/// (xen-vbd-interface(7)): `xvda` = 202 << 8 = 51712, `xvdb1` = 51729, `xvdq` and partitions
/// above 15 use the extended form 1 << 28 | disk << 8 | partition; `hda`..`hdd` are IDE
/// (majors 3 and 22), `sda`..`sdp` SCSI (major 8); `d0p1` is `xvda1`; a plain number is taken
/// as it is.
pub fn vdev_devid(vdev: &str) -> Option<u32> {
    if let Some((disk, part)) =
        d_p_form(vdev).or_else(|| disk_and_partition(vdev, "xvd", (1 << 20) - 1, 255))
    {
        return Some(if disk <= 15 && part <= 15 {
            XVD_MAJOR << 8 | disk << 4 | part
        } else {
            EXTENDED | disk << 8 | part
        });
    }
    if let Some(n) = number(vdev) {
        return Some(n);
    }
    if let Some((disk, part)) = disk_and_partition(vdev, "hd", 3, 63) {
        let major = if disk < 2 { IDE0_MAJOR } else { IDE1_MAJOR };
        return Some(major << 8 | (disk & 1) << 6 | part);
    }
    if let Some((disk, part)) = disk_and_partition(vdev, "sd", 15, 15) {
        return Some(SD_MAJOR << 8 | disk << 4 | part);
    }
    None
}

#[cfg(test)]
mod tests;
