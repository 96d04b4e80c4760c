//! What ping answers: ARP requests for its IPv4 address and ICMP echo requests to it
//! (RFC 826, RFC 791, RFC 792); every other frame is ignored. Frames are Ethernet II.

/// Our interface: MAC and IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iface {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ARP_LEN: usize = 28;
const IP_HLEN: usize = 20;
const IPPROTO_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The Internet checksum (ones' complement of the ones' complement sum of 16-bit words).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes the answer to `frame` into `out` and returns its length; 0 when there is nothing to
/// answer (or `out` is too small).
/// Whether an Ethernet frame carries IPv4 (an echo reply among [`answer`]'s).
pub fn is_ipv4(frame: &[u8]) -> bool {
    frame.len() >= ETH_HLEN && be16(frame, 12) == ETHERTYPE_IPV4
}

pub fn answer(me: &Iface, frame: &[u8], out: &mut [u8]) -> usize {
    if frame.len() < ETH_HLEN || out.len() < ETH_HLEN {
        return 0;
    }
    let (payload, reply) = (&frame[ETH_HLEN..], &mut out[ETH_HLEN..]);
    let n = match be16(frame, 12) {
        ETHERTYPE_ARP => arp_reply(me, payload, reply),
        ETHERTYPE_IPV4 => echo_reply(me, payload, reply),
        _ => 0,
    };
    if n == 0 {
        return 0;
    }
    // Back to the sender, from us.
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&me.mac);
    out[12..14].copy_from_slice(&frame[12..14]);
    ETH_HLEN + n
}

/// An ARP request (Ethernet, IPv4) for our address: the reply.
fn arp_reply(me: &Iface, arp: &[u8], out: &mut [u8]) -> usize {
    if arp.len() < ARP_LEN || out.len() < ARP_LEN {
        return 0;
    }
    // htype 1, ptype IPv4, hlen 6, plen 4, oper 1 (request), target protocol address = us.
    if arp[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != me.ip {
        return 0;
    }
    out[0..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    out[6..8].copy_from_slice(&[0, 2]);
    out[8..14].copy_from_slice(&me.mac);
    out[14..18].copy_from_slice(&me.ip);
    out[18..28].copy_from_slice(&arp[8..18]);
    ARP_LEN
}

/// An unfragmented ICMP echo request to our address, checksums right: the echo reply.
fn echo_reply(me: &Iface, ip: &[u8], out: &mut [u8]) -> usize {
    if ip.len() < IP_HLEN || ip[0] >> 4 != 4 {
        return 0;
    }
    let hlen = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(be16(ip, 2));
    let fragmented = be16(ip, 6) & 0x3fff != 0;
    if hlen < IP_HLEN
        || total < hlen + 8
        || total > ip.len()
        || fragmented
        || ip[9] != IPPROTO_ICMP
        || ip[16..20] != me.ip
        || checksum(&ip[..hlen]) != 0
    {
        return 0;
    }
    let icmp = &ip[hlen..total];
    if icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0 || checksum(icmp) != 0 {
        return 0;
    }
    let len = IP_HLEN + icmp.len();
    if out.len() < len {
        return 0;
    }
    // IPv4 header without options: version 4, IHL 5, same TOS and id, DF, TTL 64.
    let h = &mut out[..IP_HLEN];
    h[0] = 0x45;
    h[1] = ip[1];
    h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    h[4..6].copy_from_slice(&ip[4..6]);
    h[6..8].copy_from_slice(&[0x40, 0]);
    h[8] = 64;
    h[9] = IPPROTO_ICMP;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&me.ip);
    h[16..20].copy_from_slice(&ip[12..16]);
    let sum = checksum(h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    // ICMP: the request with type 0 (identifier, sequence and data echoed).
    let r = &mut out[IP_HLEN..len];
    r.copy_from_slice(icmp);
    r[0] = ICMP_ECHO_REPLY;
    r[2..4].copy_from_slice(&[0, 0]);
    let sum = checksum(r);
    r[2..4].copy_from_slice(&sum.to_be_bytes());
    len
}

/// Parses a dotted IPv4 address (`10.0.0.2`); a `/prefix` after it is ignored.
pub fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    let s = s.split(|&b| b == b'/').next()?;
    let mut ip = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for octet in ip.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = p.iter().fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
        *octet = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(ip)
}

/// The value of `key=` among the space-separated words of a command line.
pub fn cmdline_value<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    cmdline
        .split(|&b| b == b' ' || b == b'\t')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix(b"="))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Iface = Iface {
        mac: [0x00, 0x16, 0x3e, 0x01, 0x02, 0x03],
        ip: [10, 0, 0, 2],
    };
    const PEER_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
    const PEER_IP: [u8; 4] = [10, 0, 0, 1];

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&PEER_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    /// What `ping -c 1 10.0.0.2` sends from dom0 (56 data bytes).
    fn echo_request(dst: [u8; 4]) -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend((0..56).map(|i| i as u8));
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let total = (20 + icmp.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0xab, 0xcd, 0x40, 0, 64, 1, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&PEER_IP);
        ip.extend_from_slice(&dst);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut f = ME.mac.to_vec();
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn arp_requests_for_our_address_get_our_mac() {
        let mut out = [0u8; 64];
        let n = answer(&ME, &arp_request(ME.ip), &mut out);
        assert_eq!(n, 42);
        let r = &out[..n];
        assert_eq!(&r[0..6], &PEER_MAC, "to the asker");
        assert_eq!(&r[6..12], &ME.mac);
        assert_eq!(&r[12..22], &[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        assert_eq!(&r[22..28], &ME.mac);
        assert_eq!(&r[28..32], &ME.ip);
        assert_eq!(&r[32..38], &PEER_MAC);
        assert_eq!(&r[38..42], &PEER_IP);
    }

    #[test]
    fn arp_for_others_and_arp_replies_are_ignored() {
        let mut out = [0u8; 64];
        assert_eq!(answer(&ME, &arp_request([10, 0, 0, 3]), &mut out), 0);
        let mut reply = arp_request(ME.ip);
        reply[21] = 2;
        assert_eq!(answer(&ME, &reply, &mut out), 0);
    }

    #[test]
    fn echo_replies_are_ipv4_and_arp_replies_are_not() {
        let mut out = [0u8; 1514];
        assert!(answer(&ME, &echo_request(ME.ip), &mut out) > 0);
        assert!(is_ipv4(&out));
        assert!(answer(&ME, &arp_request(ME.ip), &mut out) > 0);
        assert!(!is_ipv4(&out));
        assert!(!is_ipv4(&out[..13]));
    }

    #[test]
    fn echo_requests_get_a_valid_echo_reply() {
        let req = echo_request(ME.ip);
        let mut out = [0u8; 1514];
        let n = answer(&ME, &req, &mut out);
        assert_eq!(n, req.len());
        let r = &out[..n];
        assert_eq!(&r[0..6], &PEER_MAC);
        assert_eq!(&r[6..12], &ME.mac);
        let ip = &r[14..34];
        assert_eq!(checksum(ip), 0, "IP header checksum");
        assert_eq!(&ip[12..16], &ME.ip);
        assert_eq!(&ip[16..20], &PEER_IP);
        let icmp = &r[34..];
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(icmp[0], 0, "echo reply");
        assert_eq!(
            &icmp[4..],
            &req[38..],
            "identifier, sequence and data echoed"
        );
    }

    #[test]
    fn broken_or_foreign_ip_packets_are_ignored() {
        let mut out = [0u8; 1514];
        assert_eq!(
            answer(&ME, &echo_request([10, 0, 0, 9]), &mut out),
            0,
            "not for us"
        );
        let mut bad = echo_request(ME.ip);
        bad[24] ^= 1; // IP header checksum
        assert_eq!(answer(&ME, &bad, &mut out), 0);
        let mut bad = echo_request(ME.ip);
        bad[40] ^= 1; // ICMP payload vs checksum
        assert_eq!(answer(&ME, &bad, &mut out), 0);
        let mut frag = echo_request(ME.ip);
        frag[20] |= 0x20; // more fragments
        let sum = checksum(&{
            let mut h = frag[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        frag[24..26].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(answer(&ME, &frag, &mut out), 0, "fragments");
        let req = echo_request(ME.ip);
        assert_eq!(answer(&ME, &req[..60], &mut out), 0, "truncated");
        assert_eq!(
            answer(&ME, &req[..10], &mut out),
            0,
            "shorter than a header"
        );
        assert_eq!(
            answer(&ME, &req, &mut out[..50]),
            0,
            "no room for the reply"
        );
    }

    #[test]
    fn addresses_and_command_line_values_parse() {
        assert_eq!(parse_ipv4(b"10.0.0.2"), Some([10, 0, 0, 2]));
        assert_eq!(parse_ipv4(b"192.168.1.254/24"), Some([192, 168, 1, 254]));
        for bad in [
            &b"10.0.0"[..],
            b"10.0.0.256",
            b"1.2.3.4.5",
            b"a.b.c.d",
            b"",
            b"1..2.3",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let cmdline = b"console=hvc0 ip=10.0.0.2 quiet";
        assert_eq!(cmdline_value(cmdline, b"ip"), Some(&b"10.0.0.2"[..]));
        assert_eq!(cmdline_value(cmdline, b"peer"), None);
        assert_eq!(cmdline_value(b"noip=1", b"ip"), None);
    }
}
