//! Domain handles (`xen_domain_handle_t`): 16 bytes that xl shows as a UUID.

use core::fmt;
use core::str::FromStr;

/// A domain handle, printed and parsed as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Uuid(pub [u8; 16]);

/// Why a string is not a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UuidError;

impl fmt::Display for UuidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)")
    }
}

impl Uuid {
    /// The all-zero handle (what a domain gets when none is given).
    pub const NIL: Uuid = Uuid([0; 16]);

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A version 4 (random) UUID from 16 random bytes: sets the version and variant bits.
    pub fn from_random_bytes(mut b: [u8; 16]) -> Uuid {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }
}

impl FromStr for Uuid {
    type Err = UuidError;

    /// Parses the 8-4-4-4-12 form, hex digits of either case.
    fn from_str(s: &str) -> Result<Uuid, UuidError> {
        const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut groups = s.split('-');
        for len in GROUPS {
            let g = groups.next().ok_or(UuidError)?;
            if g.len() != len || !g.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(UuidError);
            }
            for pair in g.as_bytes().chunks_exact(2) {
                let hex = core::str::from_utf8(pair).map_err(|_| UuidError)?;
                out[n] = u8::from_str_radix(hex, 16).map_err(|_| UuidError)?;
                n += 1;
            }
        }
        if groups.next().is_some() {
            return Err(UuidError);
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::Uuid;
    use serde::de::{self, Deserializer, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    impl Serialize for Uuid {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for Uuid {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Uuid;
                fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                    f.write_str("a UUID string xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Uuid, E> {
                    s.parse()
                        .map_err(|_| E::custom(format_args!("invalid UUID {s:?}")))
                }
            }
            d.deserialize_str(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_8_4_4_4_12_form() {
        let u: Uuid = "00112233-4455-6677-8899-aAbBcCdDeEfF".parse().unwrap();
        assert_eq!(u.0[0], 0x00);
        assert_eq!(u.0[15], 0xff);
        assert_eq!(u.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
        for bad in [
            "00112233445566778899aabbccddeeff",
            "0011223-34455-6677-8899-aabbccddeeff",
            "g0112233-4455-6677-8899-aabbccddeeff",
            "00112233-4455-6677-8899-aabbccddeeff-",
            "00112233-4455-6677-8899-aabbccddeef\u{e9}",
            "",
        ] {
            assert_eq!(bad.parse::<Uuid>(), Err(UuidError), "{bad}");
        }
    }

    #[test]
    fn random_uuids_are_version_4() {
        let u = Uuid::from_random_bytes([0xff; 16]);
        assert_eq!(u.0[6] >> 4, 4);
        assert_eq!(u.0[8] >> 6, 0b10);
    }
}
