//! Randomness the toolstack needs: domain handles and vif MACs. Uniqueness matters, not
//! secrecy, so the clock stands in if the kernel's generator cannot be read.

use std::fs::File;
use std::io::Read;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hypervisor::Uuid;
use xen_types::Mac;

/// `/dev/urandom`, opened once: a creation asks it for a UUID (and a MAC per vif), and an
/// open and a close more each time are system calls a creation need not make.
fn urandom() -> std::io::Result<&'static File> {
    static URANDOM: OnceLock<std::io::Result<File>> = OnceLock::new();
    match URANDOM.get_or_init(|| File::open("/dev/urandom")) {
        Ok(f) => Ok(f),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}

/// 16 random bytes from the kernel's generator (the clock if that fails).
fn random_bytes(what: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Err(e) = urandom().and_then(|mut f| f.read_exact(&mut b)) {
        log::warn!("/dev/urandom: {e}; deriving the {what} from the clock");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = nanos.to_le_bytes();
    }
    b
}

/// A random (version 4) UUID for a domain handle.
pub fn random_uuid() -> Uuid {
    Uuid::from_random_bytes(random_bytes("domain UUID"))
}

/// A random MAC with Xen's OUI, as libxl makes them: 00:16:3e, then 23 random bits.
pub fn random_mac() -> Mac {
    let r = random_bytes("vif MAC");
    Mac::xen_random([r[0], r[1], r[2]])
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
