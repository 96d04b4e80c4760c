//! Test support shared by the toolstack's and the daemon's tests: a simulated host with a
//! Xenstore, a runtime directory and a small PV kernel, in a scratch directory.

use std::path::PathBuf;
use std::sync::Arc;

use std::sync::Mutex;

use crate::hypervisor::sim::{SimConfig, SimHypervisor};
use crate::hypervisor::DomId;
use crate::image::testelf::TestElf;
use crate::plane::noxs::NoxsBackend;
use crate::toolstack::{StateDir, Toolstack};
use crate::xenstore::{MemStore, TxId, Xenstore};

/// A NoXS backend that remembers what it was told, and can refuse attachments.
#[derive(Debug, Default)]
pub(crate) struct RecordingBackend {
    /// The guests attached now.
    pub(crate) attached: Mutex<Vec<DomId>>,
    /// Refuse the next attachments with this message.
    pub(crate) refuse: Mutex<Option<String>>,
}

/// Shares one RecordingBackend between the toolstack and the test.
#[derive(Debug, Clone)]
pub(crate) struct SharedBackend(pub(crate) Arc<RecordingBackend>);

impl NoxsBackend for SharedBackend {
    fn socket(&self) -> &std::path::Path {
        std::path::Path::new("/nonexistent/recording-backend.sock")
    }

    fn attach(&self, domid: DomId) -> Result<(), String> {
        if let Some(m) = self.0.refuse.lock().expect("lock").clone() {
            return Err(m);
        }
        self.0.attached.lock().expect("lock").push(domid);
        Ok(())
    }

    fn detach(&self, domid: DomId) -> Result<(), String> {
        self.0
            .attached
            .lock()
            .expect("lock")
            .retain(|d| *d != domid);
        Ok(())
    }
}

/// A scratch directory removed when the test ends. Tests run on threads of one process, so the
/// thread id keeps equal tags of different tests apart.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "chaos-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A simulated host and a toolstack on it.
pub(crate) struct SimHost {
    pub(crate) sim: Arc<SimHypervisor>,
    pub(crate) xs: Arc<MemStore>,
    pub(crate) ts: Toolstack,
    /// A small PV kernel (`TestElf::pv`), in the scratch directory.
    pub(crate) kernel: PathBuf,
    /// The same kernel with chaos's NoXS note.
    pub(crate) noxs_kernel: PathBuf,
    /// What the toolstack told its NoXS backend.
    pub(crate) backend: Arc<RecordingBackend>,
    pub(crate) scratch: Scratch,
}

pub(crate) fn sim_host(tag: &str, host: SimConfig) -> SimHost {
    let scratch = Scratch::new(tag);
    let kernel = scratch.0.join("kernel.elf");
    let mut elf = TestElf::pv(0xffff_ffff_8000_0000, 0x20_0000, 0x3000, 0x1000);
    std::fs::write(&kernel, elf.build()).expect("write kernel");
    let noxs_kernel = scratch.0.join("noxs-kernel.elf");
    elf.noxs = Some(noxs::ABI_VERSION);
    std::fs::write(&noxs_kernel, elf.build()).expect("write kernel");
    let sim = Arc::new(SimHypervisor::new(host));
    let xs = Arc::new(MemStore::new());
    // What xenstored and dom0's start-up create before any guest exists.
    for dir in ["/local/domain/0", "/vm"] {
        xs.mkdir(TxId::NONE, dir).expect("mkdir");
    }
    let state = StateDir::open(scratch.0.join("run")).expect("state dir");
    let backend = Arc::new(RecordingBackend::default());
    let ts = Toolstack::new(sim.clone(), Some(xs.clone()), state)
        .with_noxs_backend(Box::new(SharedBackend(backend.clone())));
    SimHost {
        sim,
        xs,
        ts,
        kernel,
        noxs_kernel,
        backend,
        scratch,
    }
}

/// Debian's current kernel (bzImage + xz), fetched by scripts/fetch-vmlinuz.sh on first use (so
/// a plain `cargo test` works on a fresh Debian machine, as the xl examples test does; the
/// script reuses the lab's package cache). Tests run in parallel: one fetch.
pub(crate) fn debian_vmlinuz() -> PathBuf {
    static FETCH: std::sync::Once = std::sync::Once::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("CHAOS_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/test-data"));
    let path = dir.join("vmlinuz");
    FETCH.call_once(|| {
        if !path.is_file() {
            let status = std::process::Command::new("sh")
                .arg(root.join("scripts/fetch-vmlinuz.sh"))
                .env("CHAOS_TEST_DATA", &dir)
                .status();
            eprintln!("scripts/fetch-vmlinuz.sh: {status:?}");
        }
    });
    assert!(
        path.is_file(),
        "{} missing and scripts/fetch-vmlinuz.sh could not fetch it (needs apt; or set CHAOS_TEST_DATA)",
        path.display()
    );
    path
}
