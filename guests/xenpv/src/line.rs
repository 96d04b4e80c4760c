//! A fixed-size line buffer for console output, with decimal and hex numbers (`core::fmt`
//! would cost the guests kilobytes). Bytes beyond its capacity are dropped.

pub struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    pub const fn new() -> Self {
        Line {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            if self.len < N {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    /// `v` in decimal.
    pub fn dec(&mut self, v: u64) -> &mut Self {
        self.digits(v, 10, b"")
    }

    /// `v` in hex with a `0x` prefix.
    pub fn hex(&mut self, v: u64) -> &mut Self {
        self.digits(v, 16, b"0x")
    }

    /// A MAC address, `00:16:3e:01:02:03`.
    pub fn mac(&mut self, mac: &[u8; 6]) -> &mut Self {
        for (i, &b) in mac.iter().enumerate() {
            if i > 0 {
                self.push(b":");
            }
            let hex = b"0123456789abcdef";
            self.push(&[hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
        self
    }

    /// An IPv4 address, `10.0.0.2`.
    pub fn ipv4(&mut self, ip: &[u8; 4]) -> &mut Self {
        for (i, &b) in ip.iter().enumerate() {
            if i > 0 {
                self.push(b".");
            }
            self.dec(b.into());
        }
        self
    }

    fn digits(&mut self, mut v: u64, base: u64, prefix: &[u8]) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b"0123456789abcdef"[(v % base) as usize];
            v /= base;
            if v == 0 {
                break;
            }
        }
        self.push(prefix).push(&tmp[i..])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_in_decimal_and_hex() {
        let mut l = Line::<64>::new();
        l.dec(0).push(b" ").dec(1234).push(b" ").dec(u64::MAX);
        assert_eq!(l.as_bytes(), b"0 1234 18446744073709551615");
        l.clear();
        l.hex(0).push(b" ").hex(0x10f).push(b" ").hex(u64::MAX);
        assert_eq!(l.as_bytes(), b"0x0 0x10f 0xffffffffffffffff");
    }

    #[test]
    fn addresses_print_as_usual() {
        let mut l = Line::<64>::new();
        l.mac(&[0, 0x16, 0x3e, 0xab, 1, 0xff])
            .push(b" ")
            .ipv4(&[10, 0, 0, 254]);
        assert_eq!(l.as_bytes(), b"00:16:3e:ab:01:ff 10.0.0.254");
    }

    #[test]
    fn bytes_past_the_capacity_are_dropped() {
        let mut l = Line::<4>::new();
        l.push(b"abc").dec(12345);
        assert_eq!(l.as_bytes(), b"abc1");
    }
}
