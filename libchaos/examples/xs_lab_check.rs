//! Checks `XsClient` against a real xenstored (run in the lab's dom0): reads and writes,
//! permissions, transactions (commit, abort, conflict), DIRECTORY_PART for long child lists,
//! watches, introduction status, and the same basics over /dev/xen/xenbus.
//! Exit status 0 when every check passes; the first failure is printed and exits 1.

use std::process::ExitCode;
use std::time::Duration;

use libchaos::hypervisor::DomId;
use libchaos::xenstore::{Access, Perm, TxId, TxOutcome, WatchEvent, Xenstore, XsClient};

type Check = Result<(), String>;
const NO: TxId = TxId::NONE;

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

fn basics(xs: &dyn Xenstore, base: &str) -> Check {
    let value = b"bytes \x01\x02 and a NUL \0 inside";
    xs.write(NO, &format!("{base}/a/b/c"), value).map_err(e)?;
    let got = xs.read(NO, &format!("{base}/a/b/c")).map_err(e)?;
    ensure(got.as_deref() == Some(&value[..]), || {
        format!("read back {got:?}")
    })?;
    ensure(
        xs.read(NO, &format!("{base}/missing"))
            .map_err(e)?
            .is_none(),
        || "missing node read as present".into(),
    )?;
    xs.mkdir(NO, &format!("{base}/a/d")).map_err(e)?;
    let dir = xs.directory(NO, &format!("{base}/a")).map_err(e)?;
    ensure(dir == ["b", "d"], || format!("directory {base}/a: {dir:?}"))?;
    println!("ok: write/read/mkdir/directory");

    let perms = [
        Perm {
            dom: DomId(0),
            access: Access::None,
        },
        Perm {
            dom: DomId(0),
            access: Access::Read,
        },
    ];
    xs.set_perms(NO, &format!("{base}/a/d"), &perms)
        .map_err(e)?;
    let got = xs.get_perms(NO, &format!("{base}/a/d")).map_err(e)?;
    ensure(got == perms, || format!("perms read back as {got:?}"))?;
    println!("ok: set_perms/get_perms");

    let tx = xs.transaction_start().map_err(e)?;
    xs.write(tx, &format!("{base}/tx/x"), b"1").map_err(e)?;
    ensure(
        xs.read(tx, &format!("{base}/tx/x")).map_err(e)?.is_some(),
        || "tx does not see its own write".into(),
    )?;
    ensure(
        xs.read(NO, &format!("{base}/tx/x")).map_err(e)?.is_none(),
        || "tx write visible before commit".into(),
    )?;
    let out = xs.transaction_end(tx, true).map_err(e)?;
    ensure(out == TxOutcome::Committed, || format!("commit: {out:?}"))?;
    ensure(
        xs.read(NO, &format!("{base}/tx/x")).map_err(e)?.is_some(),
        || "committed write missing".into(),
    )?;

    let tx = xs.transaction_start().map_err(e)?;
    xs.write(tx, &format!("{base}/tx/aborted"), b"1")
        .map_err(e)?;
    let out = xs.transaction_end(tx, false).map_err(e)?;
    ensure(out == TxOutcome::Aborted, || format!("abort: {out:?}"))?;
    ensure(
        xs.read(NO, &format!("{base}/tx/aborted"))
            .map_err(e)?
            .is_none(),
        || "aborted write visible".into(),
    )?;

    let tx = xs.transaction_start().map_err(e)?;
    xs.read(tx, &format!("{base}/tx/x")).map_err(e)?;
    xs.write(NO, &format!("{base}/tx/x"), b"changed outside")
        .map_err(e)?;
    xs.write(tx, &format!("{base}/tx/y"), b"1").map_err(e)?;
    let out = xs.transaction_end(tx, true).map_err(e)?;
    ensure(out == TxOutcome::Conflict, || {
        format!("conflicting commit: {out:?}")
    })?;
    ensure(
        xs.read(NO, &format!("{base}/tx/y")).map_err(e)?.is_none(),
        || "conflicting tx applied".into(),
    )?;
    println!("ok: transactions commit/abort/conflict");

    xs.rm(NO, &format!("{base}/a")).map_err(e)?;
    ensure(
        xs.read(NO, &format!("{base}/a/b/c")).map_err(e)?.is_none(),
        || "rm not recursive".into(),
    )?;
    xs.rm(NO, &format!("{base}/a")).map_err(e)?;
    println!("ok: rm");
    Ok(())
}

fn large_directory(xs: &dyn Xenstore, base: &str) -> Check {
    // About 9 KiB of names: more than one reply, so XS_DIRECTORY fails with E2BIG.
    let tx = xs.transaction_start().map_err(e)?;
    let mut want: Vec<String> = (0..300)
        .map(|i| format!("a-rather-long-child-name-{i:04}"))
        .collect();
    for n in &want {
        xs.write(tx, &format!("{base}/big/{n}"), b"").map_err(e)?;
    }
    let out = xs.transaction_end(tx, true).map_err(e)?;
    ensure(out == TxOutcome::Committed, || format!("commit: {out:?}"))?;
    let mut got = xs.directory(NO, &format!("{base}/big")).map_err(e)?;
    got.sort();
    want.sort();
    ensure(got == want, || {
        format!("directory of 300: got {} names", got.len())
    })?;
    xs.rm(NO, &format!("{base}/big")).map_err(e)?;
    println!("ok: directory with 300 children (DIRECTORY_PART)");
    Ok(())
}

fn watches(xs: &dyn Xenstore, base: &str) -> Check {
    let path = format!("{base}/w");
    xs.watch(&path, "lab").map_err(e)?;
    let first = xs.read_watch(Some(Duration::from_secs(5))).map_err(e)?;
    ensure(
        first
            == Some(WatchEvent {
                path: path.clone(),
                token: "lab".into(),
            }),
        || format!("first event {first:?}"),
    )?;
    xs.write(NO, &format!("{path}/x"), b"1").map_err(e)?;
    let ev = xs.read_watch(Some(Duration::from_secs(5))).map_err(e)?;
    ensure(
        ev == Some(WatchEvent {
            path: format!("{path}/x"),
            token: "lab".into(),
        }),
        || format!("change event {ev:?}"),
    )?;
    xs.unwatch(&path, "lab").map_err(e)?;
    println!("ok: watch/read_watch/unwatch");
    Ok(())
}

fn run() -> Check {
    let base = format!("/tool/chaos-lab-check/{}", std::process::id());
    let xs = XsClient::open().map_err(e)?;
    println!("connected to {}", xs.endpoint());
    let result = basics(&xs, &base)
        .and_then(|_| large_directory(&xs, &base))
        .and_then(|_| watches(&xs, &base))
        .and_then(|_| {
            // What xenstored answers for dom0 varies between versions; the request must work.
            let dom0 = xs.is_domain_introduced(DomId(0)).map_err(e)?;
            println!("ok: is_domain_introduced(0) = {dom0}");
            Ok(())
        });
    let cleanup = xs.rm(NO, &base).map_err(e);
    result?;
    cleanup?;
    ensure(xs.read(NO, &base).map_err(e)?.is_none(), || {
        format!("{base} left behind")
    })?;

    if std::path::Path::new("/dev/xen/xenbus").exists() {
        let dev = XsClient::open_device("/dev/xen/xenbus").map_err(e)?;
        println!("connected to {}", dev.endpoint());
        let r = basics(&dev, &base);
        dev.rm(NO, &base).map_err(e)?;
        r?;
    }
    xs.rm(NO, "/tool/chaos-lab-check").map_err(e)?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("all xenstore checks passed");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            println!("FAIL: {msg}");
            ExitCode::FAILURE
        }
    }
}
