use super::files::csv_samples;
use super::*;

fn sample(tool: &'static str, op: &'static str, running: u32, ms: f64) -> Sample {
    Sample {
        tool,
        stage: "scale",
        op,
        seq: running + 1,
        running,
        wall_ms: ms,
        chaos_ms: Some(ms / 2.0),
        path: None,
        domid: Some(running as u16 + 1),
        phases: vec![("build".into(), (ms * 100.0) as u64)],
        t_s: running as f64,
    }
}

#[test]
fn summary_compares_the_first_guests_with_the_last() {
    // 100 creations: 10 ms while few run, 30 ms for the last ones
    let samples: Vec<Sample> = (0..100)
        .map(|r| sample("lib", "create", r, if r < 50 { 10.0 } else { 30.0 }))
        .collect();
    let s = &summarize(&samples, &[], &[Kind::Lib], 20)[0];
    assert_eq!(s.created, 100);
    assert_eq!(s.create_first_ms, Some(10.0));
    assert_eq!(s.create_last_ms, Some(30.0));
    assert_eq!(s.ratio, Some(3.0));
    assert_eq!(s.chaos_first_ms, Some(5.0));
    assert_eq!(s.phases, vec![("build".to_string(), 1000.0, 3000.0)]);
    assert_eq!(s.from_pool, None);
}

#[test]
fn memory_per_guest_from_the_host_samples() {
    let h = |running: u32, free: u64| HostSample {
        tool: "lib".into(),
        running,
        xen_free_kib: free,
        ..HostSample::default()
    };
    // 2 MiB and a bit per guest, then destroyed (the last sample, back at 0, is not counted)
    let host = vec![
        h(0, 100_000),
        h(10, 100_000 - 21_000),
        h(20, 100_000 - 42_000),
        h(0, 100_000),
    ];
    let s = &summarize(&[], &host, &[Kind::Lib], 20)[0];
    assert_eq!(s.xen_kib_per_guest, Some(2100.0));
}

#[test]
fn csv_has_one_row_per_sample_and_the_phases() {
    let csv = csv_samples(&[
        sample("xl", "create", 0, 1.5),
        sample("xl", "destroy", 1, 2.0),
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("xl,scale,create,1,0,1.500,0.750,,1,"));
    assert!(lines[1].ends_with(",build=150"));
}
