//! Names of dom0's network interfaces (bridges, vifs, TAPs): what Linux's `dev_valid_name`
//! accepts, minus what breaks shells and logs. One check for the config parser, xendevd and
//! the backends.

use core::fmt;

/// Linux's IFNAMSIZ: a name is at most `IFNAMSIZ - 1` bytes.
pub const IFNAMSIZ: usize = 16;

/// Why a string is not an interface name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfnameError {
    /// Empty or longer than 15 bytes.
    Length,
    /// `.`, `..`, or a '/', ':', whitespace or control character.
    Character,
}

impl fmt::Display for IfnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IfnameError::Length => "interface names are 1 to 15 bytes",
            IfnameError::Character => "not a valid interface name",
        })
    }
}

/// Checks a Linux network interface name: 1..=15 bytes, not "." or "..", no '/', ':',
/// whitespace or control characters.
pub fn check_ifname(name: &str) -> Result<(), IfnameError> {
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(IfnameError::Length);
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(IfnameError::Character);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert_eq!(check_ifname("vif12.0"), Ok(()));
        assert_eq!(check_ifname("exactly15chars_"), Ok(()));
        assert_eq!(check_ifname("sixteen_chars_xx"), Err(IfnameError::Length));
        assert_eq!(check_ifname(""), Err(IfnameError::Length));
        for bad in ["..", ".", "a/b", "a:b", "a b", "a\tb", "a\u{7f}"] {
            assert_eq!(check_ifname(bad), Err(IfnameError::Character), "{bad:?}");
        }
    }
}
