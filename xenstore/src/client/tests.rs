use super::*;
use crate::fake::{client_for, serve};
use crate::{Access, MemStore};
use std::io::Write;
use std::sync::Arc;

const NO: TxId = TxId::NONE;

#[test]
fn read_write_mkdir_rm_directory_over_the_wire() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    xs.write(NO, "/local/domain/3/name", b"guest\0with-nul")
        .unwrap();
    assert_eq!(
        xs.read(NO, "/local/domain/3/name").unwrap(),
        Some(b"guest\0with-nul".to_vec())
    );
    assert_eq!(xs.read(NO, "/nope").unwrap(), None);
    xs.mkdir(NO, "/local/domain/3/device").unwrap();
    assert_eq!(
        xs.directory(NO, "/local/domain/3").unwrap(),
        vec!["device", "name"]
    );
    assert!(xs.directory(NO, "/missing").unwrap().is_empty());
    xs.rm(NO, "/local/domain/3").unwrap();
    xs.rm(NO, "/local/domain/3").unwrap();
    xs.rm(NO, "/no/such/parent").unwrap();
    assert_eq!(store.paths(), vec!["/local", "/local/domain"]);
}

#[test]
fn errors_carry_the_errno_name_op_and_path() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    let perms = [Perm {
        dom: DomId(0),
        access: Access::None,
    }];
    match xs.set_perms(NO, "/missing", &perms) {
        Err(XenstoreError::Failed { op, path, errno }) => {
            assert_eq!(
                (op, path.as_str(), errno.as_str()),
                ("set_perms", "/missing", "ENOENT")
            );
        }
        other => panic!("{other:?}"),
    }
    match xs.write(NO, "bad path", b"") {
        Err(XenstoreError::Failed { errno, .. }) => assert_eq!(errno, "EINVAL"),
        other => panic!("{other:?}"),
    }
    // The connection is still usable after error replies.
    xs.write(NO, "/ok", b"1").unwrap();
}

#[test]
fn perms_over_the_wire() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    xs.write(NO, "/p", b"").unwrap();
    let perms = [
        Perm {
            dom: DomId(0),
            access: Access::None,
        },
        Perm {
            dom: DomId(5),
            access: Access::Read,
        },
    ];
    xs.set_perms(NO, "/p", &perms).unwrap();
    assert_eq!(store.get_perms(NO, "/p").unwrap(), perms);
    assert_eq!(xs.get_perms(NO, "/p").unwrap(), perms);
}

#[test]
fn transactions_commit_abort_and_conflict() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    let other = client_for(&store);
    let tx = xs.transaction_start().unwrap();
    assert_ne!(tx, TxId::NONE);
    xs.write(tx, "/t/a", b"1").unwrap();
    assert_eq!(xs.read(tx, "/t/a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(other.read(NO, "/t/a").unwrap(), None);
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
    assert_eq!(other.read(NO, "/t/a").unwrap(), Some(b"1".to_vec()));

    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/t/b", b"2").unwrap();
    assert_eq!(xs.transaction_end(tx, false).unwrap(), TxOutcome::Aborted);
    assert_eq!(store.read(NO, "/t/b").unwrap(), None);

    let tx = xs.transaction_start().unwrap();
    xs.read(tx, "/t/a").unwrap();
    xs.write(tx, "/t/c", b"3").unwrap();
    other.write(NO, "/t/a", b"changed").unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Conflict);
    assert_eq!(store.read(NO, "/t/c").unwrap(), None);
    assert_eq!(store.open_transactions(), 0);
}

#[test]
fn introduce_release_and_query() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    xs.introduce_domain(DomId(7), 0xfeff, 3).unwrap();
    assert!(xs.is_domain_introduced(DomId(7)).unwrap());
    assert_eq!(store.introduced_domains(), vec![DomId(7)]);
    xs.release_domain(DomId(7)).unwrap();
    assert!(!xs.is_domain_introduced(DomId(7)).unwrap());
    assert!(matches!(
        xs.release_domain(DomId(7)),
        Err(XenstoreError::Failed { .. })
    ));
}

#[test]
fn large_directories_fall_back_to_directory_part() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    let mut want: Vec<String> = (0..25).map(|i| format!("child-{i}")).collect();
    for n in &want {
        store.write(NO, &format!("/big/{n}/x"), b"").unwrap();
    }
    want.sort();
    assert_eq!(xs.directory(NO, "/big").unwrap(), want);
}

#[test]
fn watch_events_interleaved_with_replies_are_queued() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    xs.watch("/be", "tok").unwrap();
    // The registration event and the write's event arrive before the write's reply.
    xs.write(NO, "/be/vif/1/0/hotplug-status", b"connected")
        .unwrap();
    assert_eq!(
        xs.read(NO, "/be/vif/1/0/hotplug-status").unwrap(),
        Some(b"connected".to_vec())
    );
    let ev = |p: &str| {
        Some(WatchEvent {
            path: p.into(),
            token: "tok".into(),
        })
    };
    assert_eq!(xs.read_watch(Some(Duration::ZERO)).unwrap(), ev("/be"));
    assert_eq!(
        xs.read_watch(Some(Duration::ZERO)).unwrap(),
        ev("/be/vif/1/0/hotplug-status")
    );
    assert_eq!(
        xs.read_watch(Some(Duration::from_millis(30))).unwrap(),
        None
    );
    xs.unwatch("/be", "tok").unwrap();
}

#[test]
fn read_watch_reads_an_unsolicited_event_off_the_socket() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let xs = XsClient::from_stream(a, "scripted").unwrap();
    let ev = Msg::new(
        MsgType::WatchEvent,
        0,
        0,
        join_nul(&[b"@releaseDomain", b"r"]),
    );
    ev.write_to(&mut b).unwrap();
    let got = xs.read_watch(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        got,
        Some(WatchEvent {
            path: "@releaseDomain".into(),
            token: "r".into()
        })
    );
}

#[test]
fn mismatched_reply_breaks_the_connection_cleanly() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let xs = XsClient::from_stream(a, "scripted").unwrap();
    let server = std::thread::spawn(move || {
        let req = Msg::read_from(&mut b).unwrap();
        Msg::new(MsgType::Read, req.req_id + 100, 0, b"x".to_vec())
            .write_to(&mut b)
            .unwrap();
        b
    });
    assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Protocol(_))));
    let _b = server.join().unwrap();
    // Later requests fail fast instead of reading a stream at an unknown position.
    assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Protocol(_))));
}

#[test]
fn oversized_reply_length_is_a_protocol_error() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let xs = XsClient::from_stream(a, "scripted").unwrap();
    let server = std::thread::spawn(move || {
        let req = Msg::read_from(&mut b).unwrap();
        let mut hdr = Vec::new();
        for w in [MsgType::Read as u32, req.req_id, 0, 1 << 20] {
            hdr.extend_from_slice(&w.to_ne_bytes());
        }
        b.write_all(&hdr).unwrap();
        b
    });
    assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Protocol(_))));
    drop(server.join().unwrap());
}

#[test]
fn oversized_request_is_refused_before_sending() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    assert!(matches!(
        xs.write(NO, "/big", &[b'x'; 5000]),
        Err(XenstoreError::Protocol(_))
    ));
    // Nothing went out, so the connection is fine.
    xs.write(NO, "/small", b"x").unwrap();
}

#[test]
fn closed_connection_is_an_io_error() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let xs = XsClient::from_stream(a, "closed").unwrap();
    assert!(matches!(xs.read(NO, "/a"), Err(XenstoreError::Io(_))));
}

#[test]
fn pipelined_ops_apply_in_order_and_report_the_first_failure() {
    let store = Arc::new(MemStore::new());
    let xs = client_for(&store);
    let perms = [Perm {
        dom: DomId(5),
        access: Access::Read,
    }];
    let tx = xs.transaction_start().unwrap();
    xs.apply(
        tx,
        &[
            XsOp::Mkdir("/local/domain/5"),
            XsOp::SetPerms("/local/domain/5", &perms),
            XsOp::Write("/local/domain/5/name", b"five"),
        ],
    )
    .unwrap();
    assert_eq!(xs.transaction_end(tx, true).unwrap(), TxOutcome::Committed);
    assert_eq!(
        xs.read(NO, "/local/domain/5/name").unwrap(),
        Some(b"five".to_vec())
    );
    assert_eq!(xs.get_perms(NO, "/local/domain/5").unwrap(), perms);

    // A bad path in the middle: its error is reported, the ops around it still ran, and
    // the connection stays in step for the next request.
    let err = xs
        .apply(
            NO,
            &[
                XsOp::Write("/a", b"1"),
                XsOp::Write("relative/path", b"2"),
                XsOp::Write("/b", b"3"),
            ],
        )
        .unwrap_err();
    assert!(err.to_string().contains("relative/path"), "{err}");
    assert_eq!(xs.read(NO, "/b").unwrap(), Some(b"3".to_vec()));
}

#[test]
fn concurrent_requests_from_many_threads() {
    let store = Arc::new(MemStore::new());
    let xs = Arc::new(client_for(&store));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let xs = xs.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let p = format!("/c/{t}/{i}");
                    xs.write(NO, &p, p.as_bytes()).unwrap();
                    assert_eq!(xs.read(NO, &p).unwrap(), Some(p.into_bytes()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.paths().len(), 1 + 8 + 8 * 50);
}

#[test]
fn connect_errors_name_the_path() {
    match XsClient::connect_unix("/nonexistent/xenstored/socket") {
        Err(XenstoreError::Connect { path, .. }) => {
            assert_eq!(path, "/nonexistent/xenstored/socket")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn connects_to_a_listening_socket() {
    let dir = std::env::temp_dir().join(format!("chaos-xs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("socket");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let store = Arc::new(MemStore::new());
    let s2 = store.clone();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        serve(s2, conn);
    });
    let xs = XsClient::connect_unix(path.to_str().unwrap()).unwrap();
    xs.write(NO, "/via/socket", b"1").unwrap();
    drop(xs);
    server.join().unwrap();
    assert_eq!(store.read(NO, "/via/socket").unwrap(), Some(b"1".to_vec()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_xenbus_device_nobody_answers_is_unreachable_not_a_hang() {
    let (ours, _silent) = UnixStream::pair().unwrap();
    let client = XsClient::from_stream(ours, "silent").unwrap();
    let err = client
        .answering("silent", Duration::from_millis(100))
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains("is xenstored running"), "{err}");
}

#[test]
fn a_xenbus_device_that_answers_is_used() {
    let store = Arc::new(MemStore::new());
    let client = client_for(&store);
    let client = client
        .answering("fake", Duration::from_secs(5))
        .expect("answered");
    client.write(TxId::NONE, "/a", b"1").unwrap();
    assert_eq!(
        client.read(TxId::NONE, "/a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}
