//! The toolstack's own overhead per guest, on the simulated hypervisor (no hypercall cost):
//! prepare + execute + destroy of a small PV guest, and execute alone from a ready shell.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use libchaos::config::parse_xl;
use libchaos::hypervisor::sim::{SimConfig, SimHypervisor};
use libchaos::image::testelf::TestElf;
use libchaos::toolstack::{Flavor, StateDir, Toolstack};
use libchaos::xenstore::MemStore;

struct Bench {
    ts: Toolstack,
    dir: std::path::PathBuf,
}

fn setup(memory_mib: u64) -> (Bench, libchaos::config::DomainConfig) {
    // The runtime directory lives on tmpfs in production (/run): bench it on tmpfs too.
    let tmpfs = std::path::Path::new("/dev/shm");
    let root = if tmpfs.is_dir() {
        tmpfs.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!("chaos-bench-{}-{memory_mib}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let kernel = dir.join("kernel.elf");
    // A unikernel-sized image: 64 KiB of text.
    std::fs::write(
        &kernel,
        TestElf::pv(0xffff_ffff_8000_0000, 0x20_0000, 0x1_0000, 0).build(),
    )
    .expect("kernel");
    let sim = Arc::new(SimHypervisor::new(SimConfig {
        host_mib: 64 * 1024,
        dom0_mib: 1024,
        nr_cpus: 8,
    }));
    let state = StateDir::open(dir.join("run")).expect("state");
    let ts = Toolstack::new(sim, Some(Arc::new(MemStore::new())), state);
    let text = format!(
        "name = \"bench\"\nkernel = \"{}\"\nmemory = {memory_mib}\n",
        kernel.display()
    );
    let cfg = parse_xl(&text, "bench.cfg", &[]).expect("config").config;
    (Bench { ts, dir }, cfg)
}

fn cycle(c: &mut Criterion) {
    for memory in [4u64, 64] {
        let (b, cfg) = setup(memory);
        c.bench_function(&format!("sim/create+destroy/{memory}MiB"), |bench| {
            bench.iter(|| {
                let created = b.ts.create(&cfg, false).expect("create");
                b.ts.destroy(created.domid).expect("destroy");
            })
        });
        let flavor = Flavor::of(&cfg);
        c.bench_function(&format!("sim/execute-from-shell/{memory}MiB"), |bench| {
            bench.iter_batched(
                || b.ts.prepare(&flavor).expect("prepare"),
                |shell| {
                    let created = b.ts.execute(shell, &cfg, false).expect("execute");
                    b.ts.destroy(created.domid).expect("destroy");
                },
                BatchSize::SmallInput,
            )
        });
        let _ = std::fs::remove_dir_all(&b.dir);
    }
}

criterion_group!(benches, cycle);
criterion_main!(benches);
