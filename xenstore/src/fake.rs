//! A fake xenstored for tests: serves the wire protocol from a [`MemStore`] on a unix socket,
//! so the real client (and programs built on it) can be tested without Xen.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{join_nul, perm_from_str, perm_to_string, split_nul, Msg, MsgType};
use crate::{DomId, MemStore, Perm, Result, TxId, TxOutcome, Xenstore, XenstoreError};

/// A fake xenstored: serves one connection from a MemStore, speaking the wire format.
/// Pending watch events are sent before each reply, as xenstored may interleave them.
pub fn serve(store: Arc<MemStore>, mut stream: UnixStream) {
    while let Ok(req) = Msg::read_from(&mut stream) {
        let reply = handle(&store, &req);
        while let Ok(Some(ev)) = store.read_watch(Some(Duration::ZERO)) {
            let p = join_nul(&[ev.path.as_bytes(), ev.token.as_bytes()]);
            let m = Msg::new(MsgType::WatchEvent, 0, 0, p);
            if m.write_to(&mut stream).is_err() {
                return;
            }
        }
        let msg = match reply {
            Ok(payload) => Msg {
                kind: req.kind,
                req_id: req.req_id,
                tx_id: req.tx_id,
                payload,
            },
            Err(errno) => Msg::new(
                MsgType::Error,
                req.req_id,
                req.tx_id,
                join_nul(&[errno.as_bytes()]),
            ),
        };
        if msg.write_to(&mut stream).is_err() {
            return;
        }
    }
}

fn handle(store: &MemStore, req: &Msg) -> std::result::Result<Vec<u8>, String> {
    let tx = TxId(req.tx_id);
    let args = split_nul(&req.payload);
    let arg = |i: usize| args.get(i).cloned().ok_or_else(|| "EINVAL".to_string());
    let errno = |e: XenstoreError| match e {
        XenstoreError::Failed { errno, .. } => errno,
        _ => "EIO".to_string(),
    };
    let ok = || b"OK\0".to_vec();
    match MsgType::from_u32(req.kind).ok_or("EINVAL")? {
        MsgType::Read => store
            .read(tx, &arg(0)?)
            .map_err(errno)?
            .ok_or_else(|| "ENOENT".to_string()),
        MsgType::Write => {
            let nul = req.payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
            let path = String::from_utf8_lossy(&req.payload[..nul]).into_owned();
            store
                .write(tx, &path, &req.payload[nul + 1..])
                .map_err(errno)
                .map(|_| ok())
        }
        MsgType::Mkdir => store.mkdir(tx, &arg(0)?).map_err(errno).map(|_| ok()),
        MsgType::Rm => {
            let path = arg(0)?;
            if store.read(tx, &path).map_err(errno)?.is_none() {
                return Err("ENOENT".into());
            }
            store.rm(tx, &path).map_err(errno).map(|_| ok())
        }
        MsgType::Directory => {
            let names = store.directory(tx, &arg(0)?).map_err(errno)?;
            let out: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            let out = join_nul(&out);
            // Like xenstored: lists that do not fit must be read with DIRECTORY_PART.
            if out.len() > 64 {
                return Err("E2BIG".into());
            }
            Ok(out)
        }
        MsgType::DirectoryPart => {
            let names = store.directory(tx, &arg(0)?).map_err(errno)?;
            let off: usize = arg(1)?.parse().map_err(|_| "EINVAL")?;
            let all: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            let all = join_nul(&all);
            let mut out = b"42\0".to_vec();
            // Two names at most per part, ending with the extra NUL xenstored sends.
            let mut taken = 0;
            let mut pos = off.min(all.len());
            while taken < 2 && pos < all.len() {
                let end = pos + all[pos..].iter().position(|&b| b == 0).unwrap_or(0) + 1;
                out.extend_from_slice(&all[pos..end]);
                pos = end;
                taken += 1;
            }
            out.push(0);
            Ok(out)
        }
        MsgType::GetPerms => {
            let perms = store.get_perms(tx, &arg(0)?).map_err(errno)?;
            let strs: Vec<String> = perms.iter().map(perm_to_string).collect();
            let parts: Vec<&[u8]> = strs.iter().map(|s| s.as_bytes()).collect();
            Ok(join_nul(&parts))
        }
        MsgType::SetPerms => {
            let perms: Vec<Perm> = args[1..]
                .iter()
                .map(|s| perm_from_str(s))
                .collect::<Result<_>>()
                .map_err(|_| "EINVAL")?;
            store
                .set_perms(tx, &arg(0)?, &perms)
                .map_err(errno)
                .map(|_| ok())
        }
        MsgType::TransactionStart => {
            let t = store.transaction_start().map_err(errno)?;
            Ok(join_nul(&[t.0.to_string().as_bytes()]))
        }
        MsgType::TransactionEnd => {
            match store.transaction_end(tx, arg(0)? == "T").map_err(errno)? {
                TxOutcome::Conflict => Err("EAGAIN".into()),
                _ => Ok(ok()),
            }
        }
        MsgType::Introduce => {
            let dom: u16 = arg(0)?.parse().map_err(|_| "EINVAL")?;
            let mfn: u64 = arg(1)?.parse().map_err(|_| "EINVAL")?;
            let port: u32 = arg(2)?.parse().map_err(|_| "EINVAL")?;
            store
                .introduce_domain(DomId(dom), mfn, port)
                .map_err(errno)
                .map(|_| ok())
        }
        MsgType::Release => {
            let dom: u16 = arg(0)?.parse().map_err(|_| "EINVAL")?;
            store
                .release_domain(DomId(dom))
                .map_err(errno)
                .map(|_| ok())
        }
        MsgType::IsDomainIntroduced => {
            let dom: u16 = arg(0)?.parse().map_err(|_| "EINVAL")?;
            Ok(if store.is_domain_introduced(DomId(dom)).map_err(errno)? {
                b"T\0"
            } else {
                b"F\0"
            }
            .to_vec())
        }
        MsgType::Watch => store.watch(&arg(0)?, &arg(1)?).map_err(errno).map(|_| ok()),
        MsgType::Unwatch => store
            .unwatch(&arg(0)?, &arg(1)?)
            .map_err(errno)
            .map(|_| ok()),
        _ => Err("ENOSYS".into()),
    }
}

/// A client connected to a fake xenstored (a thread serving `store`) over a socket pair.
pub fn client_for(store: &Arc<MemStore>) -> crate::XsClient {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let store = store.clone();
    std::thread::spawn(move || serve(store, b));
    crate::XsClient::from_stream(a, "fake").expect("client")
}
