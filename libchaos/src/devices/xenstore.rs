//! The Xenstore control plane: the minimal entries a PV guest, xenconsoled and `xl list` need,
//! written in ONE transaction, then the domain introduced to xenstored.

use crate::hypervisor::DomId;
use crate::xenstore::{Access, Perm, TxId, TxOutcome, Xenstore, XenstoreError, XsOp};

/// Transactions lost to concurrent writers are retried this many times before giving up.
const MAX_TX_ATTEMPTS: u32 = 16;

/// What the Xenstore entries of a new guest say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntries<'a> {
    pub domid: DomId,
    pub name: &'a str,
    pub uuid: &'a str,
    pub target_kib: u64,
    pub max_kib: u64,
    pub vcpus: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
}

/// `/local/domain/<domid>`
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{}", domid.0)
}

fn vm_path(uuid: &str) -> String {
    format!("/vm/{uuid}")
}

/// Runs `body` inside a transaction, retrying when another writer got in first.
fn in_transaction(
    xs: &dyn Xenstore,
    mut body: impl FnMut(TxId) -> Result<(), XenstoreError>,
) -> Result<(), XenstoreError> {
    for _ in 0..MAX_TX_ATTEMPTS {
        let tx = xs.transaction_start()?;
        if let Err(e) = body(tx) {
            // The write failed; abandon the transaction and report the first error.
            let _ = xs.transaction_end(tx, false);
            return Err(e);
        }
        if xs.transaction_end(tx, true)? == TxOutcome::Committed {
            return Ok(());
        }
    }
    Err(XenstoreError::Protocol(format!(
        "transaction conflicted {MAX_TX_ATTEMPTS} times in a row"
    )))
}

/// Writes the guest's entries in one transaction; [`introduce`] comes next.
pub fn publish(xs: &dyn Xenstore, g: &GuestEntries<'_>) -> Result<(), XenstoreError> {
    let dom = domain_path(g.domid);
    let vm = vm_path(g.uuid);
    // dom0 owns everything; the guest may read its own directory...
    let guest_reads = [
        Perm {
            dom: DomId::DOM0,
            access: Access::None,
        },
        Perm {
            dom: g.domid,
            access: Access::Read,
        },
    ];
    // ...and owns the directories it writes to (control/shutdown acknowledgements, data/...).
    let guest_owns = [Perm {
        dom: g.domid,
        access: Access::None,
    }];
    let values: Vec<(String, String)> = vec![
        (format!("{dom}/name"), g.name.to_string()),
        (format!("{dom}/domid"), g.domid.0.to_string()),
        (format!("{dom}/vm"), vm.clone()),
        (format!("{dom}/memory/static-max"), g.max_kib.to_string()),
        (format!("{dom}/memory/target"), g.target_kib.to_string()),
        (format!("{dom}/console/ring-ref"), g.console_mfn.to_string()),
        (format!("{dom}/console/port"), g.console_evtchn.to_string()),
        (format!("{dom}/console/type"), "xenconsoled".to_string()),
        (format!("{dom}/console/output"), "pty".to_string()),
        (format!("{dom}/store/ring-ref"), g.store_mfn.to_string()),
        (format!("{dom}/store/port"), g.store_evtchn.to_string()),
        (format!("{vm}/uuid"), g.uuid.to_string()),
        (format!("{vm}/name"), g.name.to_string()),
    ];
    let cpus: Vec<String> = (0..g.vcpus)
        .map(|cpu| format!("{dom}/cpu/{cpu}/availability"))
        .collect();
    let guest_dirs: Vec<String> = [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "data",
        "device",
        "drivers",
        "feature",
        "attr",
        "error",
    ]
    .iter()
    .map(|d| format!("{dom}/{d}"))
    .collect();
    let mut ops = vec![
        XsOp::Mkdir(&dom),
        XsOp::SetPerms(&dom, &guest_reads),
        XsOp::Mkdir(&vm),
        XsOp::SetPerms(&vm, &guest_reads),
    ];
    ops.extend(values.iter().map(|(p, v)| XsOp::Write(p, v.as_bytes())));
    ops.extend(cpus.iter().map(|p| XsOp::Write(p, b"online")));
    for path in &guest_dirs {
        ops.push(XsOp::Write(path, b""));
        ops.push(XsOp::SetPerms(path, &guest_owns));
    }
    // All of it in one transaction, sent in one go.
    in_transaction(xs, |tx| xs.apply(tx, &ops))
}

/// Introduces the domain to xenstored, which maps its ring and tells xenconsoled (through the
/// @introduceDomain watch) that there is a new console to serve.
pub fn introduce(xs: &dyn Xenstore, g: &GuestEntries<'_>) -> Result<(), XenstoreError> {
    xs.introduce_domain(g.domid, g.store_mfn, g.store_evtchn)
}

/// Asks the guest to shut down (`control/shutdown`), as `xl shutdown` does.
pub fn request_shutdown(xs: &dyn Xenstore, domid: DomId, what: &str) -> Result<(), XenstoreError> {
    xs.write(
        TxId::NONE,
        &format!("{}/control/shutdown", domain_path(domid)),
        what.as_bytes(),
    )
}

/// The guest's name as Xenstore knows it (also for domains xl created).
pub fn name_of(xs: &dyn Xenstore, domid: DomId) -> Result<Option<String>, XenstoreError> {
    Ok(xs
        .read(TxId::NONE, &format!("{}/name", domain_path(domid)))?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Removes what `publish` wrote and tells xenstored to forget the domain. Missing entries are
/// fine: this also cleans up after a half-finished creation.
pub fn remove(xs: &dyn Xenstore, domid: DomId, uuid: Option<&str>) -> Result<(), XenstoreError> {
    let dom = domain_path(domid);
    in_transaction(xs, |tx| {
        if let Some(uuid) = uuid {
            xs.rm(tx, &vm_path(uuid))?;
        }
        xs.rm(tx, &dom)
    })?;
    match xs.release_domain(domid) {
        // xenstored never heard of it (the creation failed before the introduction).
        Err(XenstoreError::Failed { errno, .. }) if errno == "ENOENT" || errno == "EINVAL" => {
            Ok(())
        }
        other => other,
    }
}
