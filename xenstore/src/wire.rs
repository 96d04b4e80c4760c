//! The Xenstore wire format (xen/include/public/io/xs_wire.h, docs/misc/xenstore.txt): a 16-byte
//! header `{type, req_id, tx_id, len}` in native byte order followed by `len` bytes of payload.

use std::io::{Read, Write};

use crate::DomId;
use crate::{Access, Perm, Result, XenstoreError};

/// Largest payload either side may send; xenstored drops connections that exceed it.
pub const PAYLOAD_MAX: usize = 4096;
/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;

/// `enum xsd_sockmsg_type`, only the values chaos uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    DirectoryPart = 22,
}

impl MsgType {
    pub fn from_u32(v: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match v {
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            22 => DirectoryPart,
            _ => return None,
        })
    }

    /// The request name used in error messages.
    pub fn name(self) -> &'static str {
        use MsgType::*;
        match self {
            Directory => "directory",
            Read => "read",
            GetPerms => "get_perms",
            Watch => "watch",
            Unwatch => "unwatch",
            TransactionStart => "transaction_start",
            TransactionEnd => "transaction_end",
            Introduce => "introduce",
            Release => "release",
            GetDomainPath => "get_domain_path",
            Write => "write",
            Mkdir => "mkdir",
            Rm => "rm",
            SetPerms => "set_perms",
            WatchEvent => "watch_event",
            Error => "error",
            IsDomainIntroduced => "is_domain_introduced",
            DirectoryPart => "directory_part",
        }
    }
}

/// One message in either direction. `kind` is kept raw so unknown types can be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn new(kind: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Msg {
        Msg {
            kind: kind as u32,
            req_id,
            tx_id,
            payload,
        }
    }

    /// Header and payload as one buffer, so the message goes out in a single write (the
    /// /dev/xen/xenbus device wants whole messages).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.payload.len() > PAYLOAD_MAX {
            return Err(XenstoreError::Protocol(format!(
                "payload of {} bytes exceeds XENSTORE_PAYLOAD_MAX ({PAYLOAD_MAX})",
                self.payload.len()
            )));
        }
        let mut buf = Vec::with_capacity(HEADER_LEN + self.payload.len());
        for word in [
            self.kind,
            self.req_id,
            self.tx_id,
            self.payload.len() as u32,
        ] {
            buf.extend_from_slice(&word.to_ne_bytes());
        }
        buf.extend_from_slice(&self.payload);
        Ok(buf)
    }

    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        w.write_all(&self.encode()?)?;
        Ok(())
    }

    /// Reads one whole message; a length over [`PAYLOAD_MAX`] is a protocol error.
    pub fn read_from(r: &mut impl Read) -> Result<Msg> {
        let mut hdr = [0u8; HEADER_LEN];
        r.read_exact(&mut hdr)?;
        let word = |i: usize| u32::from_ne_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let len = word(12) as usize;
        if len > PAYLOAD_MAX {
            return Err(XenstoreError::Protocol(format!(
                "message of type {} announces {len} payload bytes, more than XENSTORE_PAYLOAD_MAX",
                word(0)
            )));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Msg {
            kind: word(0),
            req_id: word(4),
            tx_id: word(8),
            payload,
        })
    }
}

/// `a\0b\0c\0`: each string followed by a NUL.
pub fn join_nul(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        out.extend_from_slice(p);
        out.push(0);
    }
    out
}

/// Splits `a\0b\0c\0` (trailing NUL optional) into its strings; empty strings are dropped.
pub fn split_nul(payload: &[u8]) -> Vec<String> {
    payload
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The payload up to its first NUL, as text.
pub fn first_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// `Perm` -> `"b5"`.
pub fn perm_to_string(p: &Perm) -> String {
    let c = match p.access {
        Access::None => 'n',
        Access::Read => 'r',
        Access::Write => 'w',
        Access::Both => 'b',
    };
    format!("{c}{}", p.dom.0)
}

/// `"b5"` -> `Perm`; anything else is a protocol error naming the string.
pub fn perm_from_str(s: &str) -> Result<Perm> {
    let bad = || XenstoreError::Protocol(format!("bad permission string {s:?}"));
    let mut chars = s.chars();
    let access = match chars.next() {
        Some('n') => Access::None,
        Some('r') => Access::Read,
        Some('w') => Access::Write,
        Some('b') => Access::Both,
        _ => return Err(bad()),
    };
    let dom = chars.as_str().parse::<u16>().map_err(|_| bad())?;
    Ok(Perm {
        dom: DomId(dom),
        access,
    })
}

/// Whether xenstored would accept `path` as a node name: absolute, characters from
/// `[A-Za-z0-9-/_@]`, no doubled or trailing slash, at most 3072 bytes (XENSTORE_ABS_PATH_MAX).
/// Special watch paths (`@releaseDomain`) are not node names.
pub fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.len() <= 3072
        && path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_in_native_order() {
        let m = Msg::new(MsgType::Write, 7, 3, b"/a\0v".to_vec());
        let buf = m.encode().unwrap();
        assert_eq!(buf.len(), HEADER_LEN + 4);
        assert_eq!(&buf[0..4], &11u32.to_ne_bytes());
        assert_eq!(&buf[12..16], &4u32.to_ne_bytes());
        assert_eq!(Msg::read_from(&mut &buf[..]).unwrap(), m);
    }

    #[test]
    fn oversized_payloads_are_refused_both_ways() {
        let m = Msg::new(MsgType::Write, 1, 0, vec![b'x'; PAYLOAD_MAX + 1]);
        assert!(matches!(m.encode(), Err(XenstoreError::Protocol(_))));
        let mut hdr = Vec::new();
        for w in [2u32, 1, 0, (PAYLOAD_MAX + 1) as u32] {
            hdr.extend_from_slice(&w.to_ne_bytes());
        }
        assert!(matches!(
            Msg::read_from(&mut &hdr[..]),
            Err(XenstoreError::Protocol(_))
        ));
    }

    #[test]
    fn truncated_message_is_an_io_error() {
        let buf = Msg::new(MsgType::Read, 1, 0, b"/abc\0".to_vec())
            .encode()
            .unwrap();
        assert!(matches!(
            Msg::read_from(&mut &buf[..buf.len() - 1]),
            Err(XenstoreError::Io(_))
        ));
    }

    #[test]
    fn perms_round_trip() {
        for (s, access) in [
            ("n0", Access::None),
            ("r5", Access::Read),
            ("w3", Access::Write),
            ("b7", Access::Both),
        ] {
            let p = perm_from_str(s).unwrap();
            assert_eq!(p.access, access);
            assert_eq!(perm_to_string(&p), s);
        }
        for bad in ["", "x1", "b", "b-1", "r70000", "rr"] {
            assert!(perm_from_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nul_lists() {
        assert_eq!(join_nul(&[b"a", b"bc"]), b"a\0bc\0");
        assert_eq!(split_nul(b"a\0bc\0"), vec!["a", "bc"]);
        assert_eq!(split_nul(b"a\0bc"), vec!["a", "bc"]);
        assert!(split_nul(b"").is_empty());
        assert_eq!(first_str(b"EAGAIN\0"), "EAGAIN");
    }

    #[test]
    fn path_validity() {
        for ok in ["/", "/local/domain/5", "/a-b_c@d/0"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in ["", "a/b", "/a/", "/a//b", "/a b", "/a.b", "/a\0"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }
}
