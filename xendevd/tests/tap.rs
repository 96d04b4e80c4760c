//! The NoXS vif backend's TAP against real kernel networking, in a network namespace this test
//! creates: made with netback's vif MAC and the vif MTU, put on a Linux bridge by the same
//! handler as netback's vifs, frames both ways (an ARP request in, the bridge's answer out),
//! gone from the bridge and the system once dropped.
//!
//! Needs root, `ip` and /dev/net/tun; skipped, saying why, without them.

// An integration-test crate: every test lives at its top level.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::time::{Duration, Instant};

use xendevd::bridge;
use xendevd::handler::{Config, Handler, StoreSource};
use xendevd::noxs::tap::{Link, Tap};
use xendevd::uevent::{Action, Control, VifEvent};

use common::{cannot_run, ip, skip, Netns};

const BRIDGE: &str = "xdttapbr0";
const TAP: &str = "vif9.0";

fn arp_request(sender: [u8; 6], from: [u8; 4], to: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&sender);
    f.extend_from_slice(&from);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&to);
    f
}

#[test]
fn a_vif_tap_joins_the_bridge_carries_frames_and_leaves_with_its_descriptor() {
    if cannot_run("a_vif_tap_joins_the_bridge_carries_frames_and_leaves_with_its_descriptor") {
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        skip("tap", "no /dev/net/tun (module tun)");
        return;
    }
    let ns = Netns::create("tap");
    ns.batch(&format!(
        "link add {BRIDGE} type bridge\nlink set {BRIDGE} up\naddr add 10.77.0.1/24 dev {BRIDGE}\n"
    ));
    ns.enter();
    let mut tap = Tap::create(TAP, 1500).expect("create the TAP");
    let link = ip(&["-n", &ns.name, "link", "show", TAP]).unwrap();
    assert!(link.contains("mtu 1500"), "{link}");
    assert!(link.contains("link/ether fe:ff:ff:ff:ff:ff"), "{link}");
    assert!(Tap::create("bad/name", 1500).is_err(), "names are checked");

    let handler = Handler::new(
        Config {
            ovsdb_socket: "/nonexistent/db.sock".into(),
            ..Config::default()
        },
        StoreSource::connect_on_demand(),
    );
    let plug = |action| VifEvent {
        action,
        vif: TAP.into(),
        control: Control::Noxs {
            bridge: Some(BRIDGE.into()),
        },
    };
    handler
        .handle(&plug(Action::Online))
        .expect("on the bridge");
    assert!(common::is_up(TAP));
    let ports = ip(&["-n", &ns.name, "link", "show", "master", BRIDGE]).unwrap();
    assert!(ports.contains(TAP), "{ports}");

    // A frame in: who has 10.77.0.1? The bridge's answer comes out of the TAP.
    let guest_mac = [0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0c];
    tap.send(&arp_request(guest_mac, [10, 77, 0, 2], [10, 77, 0, 1]))
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    let reply = loop {
        match tap.recv(&mut buf).expect("recv") {
            // Skip IPv6 chatter; the ARP reply is to our MAC, ethertype 0x0806, op 2.
            Some(n) if n >= 42 && buf[..6] == guest_mac && buf[12..14] == [8, 6] => {
                break buf[..n].to_vec()
            }
            Some(_) => {}
            None => {
                assert!(Instant::now() < deadline, "no ARP reply within 5 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[28..32], &[10, 77, 0, 1], "for the bridge's address");

    handler
        .handle(&plug(Action::Offline))
        .expect("off the bridge");
    drop(tap);
    assert!(!bridge::exists(TAP), "the TAP goes with its descriptor");
}
