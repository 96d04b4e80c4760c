//! `chaos console`: hands the terminal to Xen's console client, as `xl console` does.
//! xenconsoled serves the guest's ring on a pty; xenconsole finds it through Xenstore.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use libchaos::hypervisor::DomId;

/// Where Debian and upstream Xen install the client.
const XENCONSOLE: &[&str] = &[
    "/usr/lib/xen-4.17/bin/xenconsole",
    "/usr/lib/xen/bin/xenconsole",
    "/usr/libexec/xen/bin/xenconsole",
];

/// Replaces this process with xenconsole attached to the guest's PV console; returns only
/// with the reason that failed.
pub fn attach(dom: DomId) -> String {
    let Some(client) = XENCONSOLE.iter().find(|p| Path::new(p).exists()) else {
        return format!(
            "no xenconsole client found (looked in {}); it comes with Xen's tools",
            XENCONSOLE.join(", ")
        );
    };
    let err = Command::new(client)
        .arg(dom.0.to_string())
        .args(["--num", "0", "--type", "pv"])
        .exec();
    format!("{client}: {err}")
}
