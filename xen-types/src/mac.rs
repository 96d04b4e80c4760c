//! MAC addresses of virtual interfaces.

use core::fmt;
use core::str::FromStr;

/// An Ethernet address, printed `00:16:3e:01:02:03` as xl does. Parsing checks the syntax;
/// [`Mac::check`] whether it can be an interface's own address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Mac(pub [u8; 6]);

/// Why a string is not an interface MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacError {
    /// Not six `:`-separated pairs of hex digits.
    Syntax,
    /// The low bit of the first byte is set: frames from it would be undeliverable.
    Multicast,
    /// All zeros.
    Zero,
}

impl fmt::Display for MacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacError::Syntax => "expected xx:xx:xx:xx:xx:xx in hex",
            MacError::Multicast => "a multicast address (the low bit of the first byte must be 0)",
            MacError::Zero => "00:00:00:00:00:00 is not a valid interface address",
        })
    }
}

impl Mac {
    /// Xen's OUI, which libxl's random MACs start with.
    pub const XEN_OUI: [u8; 3] = [0x00, 0x16, 0x3e];

    /// A MAC with Xen's OUI and 23 random bits, as libxl makes them.
    pub fn xen_random(r: [u8; 3]) -> Mac {
        Mac([0x00, 0x16, 0x3e, r[0] & 0x7f, r[1], r[2]])
    }

    /// Whether an interface can have this address: unicast and not all zeros.
    pub fn check(&self) -> Result<(), MacError> {
        if self.0[0] & 1 != 0 {
            return Err(MacError::Multicast);
        }
        if self.0 == [0; 6] {
            return Err(MacError::Zero);
        }
        Ok(())
    }
}

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Mac, MacError> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in mac.iter_mut() {
            let p = parts.next().ok_or(MacError::Syntax)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacError::Syntax);
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| MacError::Syntax)?;
        }
        if parts.next().is_some() {
            return Err(MacError::Syntax);
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::Mac;
    use serde::de::{self, Deserializer, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    impl Serialize for Mac {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    impl<'de> Deserialize<'de> for Mac {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Mac;
                fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                    f.write_str("a MAC address string xx:xx:xx:xx:xx:xx")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Mac, E> {
                    s.parse()
                        .map_err(|e| E::custom(format_args!("invalid MAC address {s:?}: {e}")))
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
    fn parses_the_colon_form_and_checks_interface_addresses() {
        let m: Mac = "00:16:3e:0A:ff:01".parse().unwrap();
        assert_eq!(m.0, [0, 0x16, 0x3e, 0x0a, 0xff, 1]);
        assert_eq!(m.to_string(), "00:16:3e:0a:ff:01");
        for bad in [
            "",
            "00:16:3e:0a:ff",
            "00:16:3e:0a:ff:01:02",
            "0:16:3e:0a:ff:01",
            "00-16-3e-0a-ff-01",
            "zz:16:3e:0a:ff:01",
            "+0:16:3e:0a:ff:01",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(MacError::Syntax), "{bad}");
        }
        let multicast: Mac = "01:00:5e:00:00:01".parse().unwrap();
        assert_eq!(multicast.check(), Err(MacError::Multicast));
        let zero: Mac = "00:00:00:00:00:00".parse().unwrap();
        assert_eq!(zero.check(), Err(MacError::Zero));
        assert_eq!(m.check(), Ok(()));
    }

    #[test]
    fn random_xen_macs_keep_the_oui_and_are_unicast() {
        let m = Mac::xen_random([0xff, 0xff, 0xff]);
        assert_eq!(m.0[..3], Mac::XEN_OUI);
        assert_eq!(m.check(), Ok(()));
        assert_eq!(m.0[3], 0x7f);
    }
}
