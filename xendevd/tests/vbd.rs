//! xendevd's vbd backends against the host's real loop devices: Xenstore is a MemStore laid out
//! as the toolstack writes a vbd backend, the events are injected (no blkback here), and the
//! loop devices are checked through the kernel (LOOP_GET_STATUS64, sysfs).
//!
//! Needs root and /dev/loop-control (the loop module); skipped, saying why, without them. Every
//! loop device a test makes is freed when its handler drops, also when the test fails.

// An integration-test crate: every test lives at its top level.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use xendevd::handler::StoreSource;
use xendevd::loopdev::{self, LoopDevice};
use xendevd::uevent::{VbdAction, VbdEvent};
use xendevd::vbd::{VbdDone, VbdError, VbdHandler, VbdWorker};
use xenstore::{MemStore, TxId, Xenstore};

use common::skip;

fn cannot_run(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "not root (it makes loop devices; CI runs it as root)"
    } else if !Path::new(loopdev::LOOP_CONTROL).exists() {
        "no /dev/loop-control (modprobe loop)"
    } else {
        return false;
    };
    skip(test, why);
    true
}

/// A sparse image file in a scratch directory, removed on drop.
struct Image {
    dir: PathBuf,
    path: PathBuf,
}

impl Image {
    fn new(tag: &str) -> Image {
        let dir = std::env::temp_dir().join(format!("xendevd-vbd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(4 << 20).unwrap();
        Image { dir, path }
    }

    fn key(&self) -> (u64, u64) {
        let m = std::fs::metadata(&self.path).unwrap();
        (m.dev(), m.ino())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn handler(xs: &Arc<MemStore>) -> VbdHandler {
    VbdHandler::new(StoreSource::Fixed(xs.clone()), "/local/domain/0", false)
}

/// The keys the toolstack writes that xendevd reads (see plane::xenstore in libchaos).
fn backend(xs: &MemStore, domid: u32, target: &Path, mode: &str) -> String {
    let dir = format!("/local/domain/0/backend/vbd/{domid}/51712");
    for (k, v) in [
        ("params", target.to_str().unwrap()),
        ("mode", mode),
        ("frontend-id", &domid.to_string()),
        ("type", "phy"),
        ("state", "1"),
    ] {
        xs.write(TxId::NONE, &format!("{dir}/{k}"), v.as_bytes())
            .unwrap();
    }
    dir
}

fn event(action: VbdAction, domid: u32) -> VbdEvent {
    // Relative, as the kernel sends it.
    VbdEvent {
        action,
        backend_path: format!("backend/vbd/{domid}/51712"),
    }
}

fn read(xs: &MemStore, path: &str) -> Option<String> {
    xs.read(TxId::NONE, path)
        .unwrap()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Whether loop device `n` is bound to the image. (Tests run in parallel and loop numbers are
/// reused, so "freed" means "not bound to this test's file".)
fn bound_to(n: u32, img: &Image) -> bool {
    matches!(loopdev::backing(n), Ok(Some((dev, ino, _))) if (dev, ino) == img.key())
}

/// Whether loop device `n` lets go of `img` within a few seconds: with autoclear the kernel
/// detaches it when its last opener closes, and the host's udev may still hold it open a moment
/// (it probes every new block device).
fn released(n: u32, img: &Image) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while bound_to(n, img) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

fn loop_number(done: &VbdDone) -> u32 {
    match done {
        VbdDone::Attached {
            major: 7,
            minor,
            loop_device: true,
            ..
        } => *minor,
        other => panic!("expected a loop device, got {other:?}"),
    }
}

#[test]
fn a_file_gets_a_loop_device_and_its_removal_frees_it() {
    if cannot_run("a_file_gets_a_loop_device_and_its_removal_frees_it") {
        return;
    }
    let img = Image::new("rw");
    let xs = Arc::new(MemStore::new());
    let mut h = handler(&xs);
    let dir = backend(&xs, 3, &img.path, "w");
    let done = h.handle(&event(VbdAction::Add, 3)).unwrap();
    let n = loop_number(&done);
    assert_eq!(
        read(&xs, &format!("{dir}/physical-device")),
        Some(format!("7:{n:x}"))
    );
    assert_eq!(
        read(&xs, &format!("{dir}/node")),
        Some(format!("/dev/loop{n}"))
    );
    assert_eq!(
        read(&xs, &format!("{dir}/physical-device-path")),
        Some(format!("/dev/loop{n}"))
    );
    assert_eq!(
        read(&xs, &format!("{dir}/hotplug-status")).as_deref(),
        Some("connected")
    );
    let (dev, ino) = img.key();
    assert_eq!(loopdev::backing(n).unwrap(), Some((dev, ino, false)));
    // A second add (online after add) changes nothing.
    assert_eq!(
        h.handle(&event(VbdAction::Add, 3)).unwrap(),
        VbdDone::AlreadyDone
    );
    assert_eq!(h.loop_devices(), vec![n]);

    // The toolstack removes the directory, the kernel says remove.
    xs.rm(TxId::NONE, &dir).unwrap();
    assert_eq!(
        h.handle(&event(VbdAction::Remove, 3)).unwrap(),
        VbdDone::Detached {
            device: PathBuf::from(format!("/dev/loop{n}"))
        }
    );
    assert!(released(n, &img), "loop{n} still bound");
    assert!(h.loop_devices().is_empty());
    assert_eq!(
        h.handle(&event(VbdAction::Remove, 3)).unwrap(),
        VbdDone::NothingToFree
    );
}

#[test]
fn one_file_read_only_in_many_guests_and_no_writer_beside_them() {
    if cannot_run("one_file_read_only_in_many_guests_and_no_writer_beside_them") {
        return;
    }
    let img = Image::new("shared");
    let xs = Arc::new(MemStore::new());
    let mut h = handler(&xs);
    let mut loops = Vec::new();
    for domid in 1..=4 {
        backend(&xs, domid, &img.path, "r");
        let done = h.handle(&event(VbdAction::Add, domid)).unwrap();
        assert!(
            matches!(done, VbdDone::Attached { readonly: true, .. }),
            "{done:?}"
        );
        let n = loop_number(&done);
        let (dev, ino) = img.key();
        assert_eq!(loopdev::backing(n).unwrap(), Some((dev, ino, true)));
        let ro = std::fs::read_to_string(format!("/sys/block/loop{n}/ro")).unwrap();
        assert_eq!(ro.trim(), "1", "loop{n} is not read-only");
        loops.push(n);
    }
    loops.sort_unstable();
    loops.dedup();
    assert_eq!(loops.len(), 4, "one loop device per guest: {loops:?}");

    // A fifth guest wants it read-write: refused, and said so in Xenstore.
    let dir = backend(&xs, 5, &img.path, "w");
    let err = h.handle(&event(VbdAction::Add, 5)).unwrap_err();
    assert!(matches!(err, VbdError::Shared { .. }), "{err}");
    assert_eq!(
        read(&xs, &format!("{dir}/hotplug-status")).as_deref(),
        Some("error")
    );
    let msg = read(&xs, &format!("{dir}/hotplug-error")).unwrap();
    assert!(
        msg.contains("in use read-only by domain") && msg.contains("read-write"),
        "{msg}"
    );
    assert_eq!(read(&xs, &format!("{dir}/physical-device")), None);
    assert_eq!(h.loop_devices().len(), 4);

    for domid in 1..=4 {
        let done = h.handle(&event(VbdAction::Remove, domid)).unwrap();
        assert!(matches!(done, VbdDone::Detached { .. }), "{done:?}");
    }
    for n in loops {
        assert!(released(n, &img), "loop{n} still bound");
    }
    // With the readers gone the writer may have it.
    xs.rm(TxId::NONE, &dir).unwrap();
    backend(&xs, 5, &img.path, "w");
    let done = h.handle(&event(VbdAction::Add, 5)).unwrap();
    assert!(
        matches!(
            done,
            VbdDone::Attached {
                readonly: false,
                ..
            }
        ),
        "{done:?}"
    );
    // ... and then no reader beside it.
    backend(&xs, 6, &img.path, "r");
    assert!(matches!(
        h.handle(&event(VbdAction::Add, 6)),
        Err(VbdError::Shared { .. })
    ));
}

#[test]
fn a_block_device_is_used_as_it_is() {
    if cannot_run("a_block_device_is_used_as_it_is") {
        return;
    }
    let img = Image::new("phy");
    // A loop device stands in for a disk partition or an LVM volume.
    let disk = LoopDevice::attach(&img.path, false).unwrap();
    let xs = Arc::new(MemStore::new());
    let mut h = handler(&xs);
    let dir = backend(&xs, 7, &disk.path(), "w");
    let done = h.handle(&event(VbdAction::Add, 7)).unwrap();
    assert_eq!(
        done,
        VbdDone::Attached {
            device: disk.path(),
            major: 7,
            minor: disk.number(),
            loop_device: false,
            readonly: false,
        }
    );
    assert_eq!(
        read(&xs, &format!("{dir}/physical-device")),
        Some(format!("7:{:x}", disk.number()))
    );
    assert_eq!(
        read(&xs, &format!("{dir}/node")),
        None,
        "no loop device of ours"
    );
    assert!(h.loop_devices().is_empty());
    assert_eq!(
        h.handle(&event(VbdAction::Remove, 7)).unwrap(),
        VbdDone::NothingToFree
    );
    // The device itself is untouched.
    assert!(loopdev::backing(disk.number()).unwrap().is_some());
}

#[test]
fn failures_are_reported_and_leave_no_loop_device() {
    if cannot_run("failures_are_reported_and_leave_no_loop_device") {
        return;
    }
    let img = Image::new("fail");
    let xs = Arc::new(MemStore::new());
    let mut h = handler(&xs);
    // A target that does not exist.
    let missing = img.dir.join("missing.img");
    let dir = backend(&xs, 8, &missing, "w");
    let err = h.handle(&event(VbdAction::Add, 8)).unwrap_err();
    assert!(err.to_string().contains("missing.img"), "{err}");
    assert_eq!(
        read(&xs, &format!("{dir}/hotplug-status")).as_deref(),
        Some("error")
    );
    // A directory.
    let dir = backend(&xs, 9, &img.dir, "w");
    let err = h.handle(&event(VbdAction::Add, 9)).unwrap_err();
    assert!(matches!(err, VbdError::NotADisk(_)), "{err}");
    assert!(read(&xs, &format!("{dir}/hotplug-error"))
        .unwrap()
        .contains("neither"));
    // The guest went before its disk was served: nothing is set up, nothing written back.
    let gone = h.handle(&event(VbdAction::Add, 10)).unwrap();
    assert_eq!(gone, VbdDone::Gone);
    assert!(xs.paths_under("/local/domain/0/backend/vbd/10").is_empty());
    // A hotplug script got there first.
    let dir = backend(&xs, 11, &img.path, "w");
    xs.write(TxId::NONE, &format!("{dir}/physical-device"), b"fe:0")
        .unwrap();
    assert_eq!(
        h.handle(&event(VbdAction::Add, 11)).unwrap(),
        VbdDone::AlreadyDone
    );
    assert!(h.loop_devices().is_empty());
}

#[test]
fn a_loop_device_bound_before_xendevd_started_counts_for_sharing() {
    if cannot_run("a_loop_device_bound_before_xendevd_started_counts_for_sharing") {
        return;
    }
    let img = Image::new("foreign");
    // As after a restart of xendevd: blkback (here: this test) holds a writable loop device.
    let held = LoopDevice::attach(&img.path, false).unwrap();
    let xs = Arc::new(MemStore::new());
    let mut h = VbdHandler::new(StoreSource::Fixed(xs.clone()), "/local/domain/0", true);
    backend(&xs, 12, &img.path, "r");
    let err = h.handle(&event(VbdAction::Add, 12)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("bound read-write to /dev/loop{}", held.number())),
        "{err}"
    );
    // Once it is gone, the file is free again. The detach is deferred while anyone else
    // (udev's probe of the new device) still has it open, so wait for the kernel to finish it.
    let number = held.number();
    drop(held);
    assert!(released(number, &img), "loop{number} still bound");
    let done = h.handle(&event(VbdAction::Add, 12)).unwrap();
    assert!(matches!(done, VbdDone::Attached { .. }), "{done:?}");
}

#[test]
fn the_worker_handles_events_in_order() {
    if cannot_run("the_worker_handles_events_in_order") {
        return;
    }
    let img = Image::new("worker");
    let xs = Arc::new(MemStore::new());
    let (tx, rx) = crossbeam_channel::unbounded();
    let w = VbdWorker::start(handler(&xs), Some(tx)).unwrap();
    for domid in 20..25 {
        backend(&xs, domid, &img.path, "r");
        w.submit_at(event(VbdAction::Add, domid), Instant::now());
        w.submit_at(event(VbdAction::Remove, domid), Instant::now());
    }
    w.shutdown();
    let outcomes: Vec<_> = rx.iter().collect();
    assert_eq!(outcomes.len(), 10);
    for pair in outcomes.chunks(2) {
        assert_eq!(pair[0].event.backend_path, pair[1].event.backend_path);
        let Ok(VbdDone::Attached { minor, .. }) = &pair[0].result else {
            panic!("{:?}", pair[0].result)
        };
        assert_eq!(
            pair[1].result,
            Ok(VbdDone::Detached {
                device: PathBuf::from(format!("/dev/loop{minor}"))
            })
        );
        assert!(released(*minor, &img), "loop{minor} still bound");
    }
}
