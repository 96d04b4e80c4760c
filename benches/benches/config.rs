//! Parsing a config: the first step of every creation.

use criterion::{criterion_group, criterion_main, Criterion};
use libchaos::config::parse_xl;

const SMALL: &str = include_str!("../../examples/hello.cfg");

/// A config shaped like a real one: comments, lists, vifs, overrides.
const TYPICAL: &str = r#"
# a web front end
name = "web-42"
type = "pv"
kernel = "/var/lib/guests/vmlinux"
ramdisk = "/var/lib/guests/initrd.gz"
root = "/dev/xvda1 ro"
extra = "console=hvc0 quiet loglevel=3"
memory = 128
maxmem = 256
vcpus = 2
maxvcpus = 4
on_poweroff = "destroy"; on_reboot = "restart"; on_crash = "preserve"
vif = [ 'mac=00:16:3e:01:02:03,bridge=xenbr0,ip=10.0.0.42',
        'bridge=xenbr1' ]
"#;

fn parse(c: &mut Criterion) {
    c.bench_function("parse_xl/hello.cfg", |b| {
        b.iter(|| parse_xl(std::hint::black_box(SMALL), "hello.cfg", &[]))
    });
    c.bench_function("parse_xl/typical", |b| {
        b.iter(|| parse_xl(std::hint::black_box(TYPICAL), "web.cfg", &[]))
    });
    let overrides = vec!["memory=64".to_string(), "name=\"web-43\"".to_string()];
    c.bench_function("parse_xl/typical+overrides", |b| {
        b.iter(|| parse_xl(std::hint::black_box(TYPICAL), "web.cfg", &overrides))
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
