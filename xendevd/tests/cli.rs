//! xendevd's command line: bad flags are refused at start-up, naming the flag, before the
//! daemon listens to anything.

// An integration-test crate: every test lives at its top level.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;

/// Runs xendevd with `args`; returns its exit code and stderr.
fn xendevd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xendevd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_default_bridges_are_refused_naming_the_flag() {
    let long = "b".repeat(300);
    for (bad, why) in [
        ("", "interface names are 1 to 15 bytes"),
        ("a/b", "not a valid interface name"),
        (long.as_str(), "interface names are 1 to 15 bytes"),
        ("sixteen_chars_xx", "interface names are 1 to 15 bytes"),
        ("br 0", "not a valid interface name"),
    ] {
        let (code, err) = xendevd(&["--default-bridge", bad]);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert!(err.contains("--default-bridge"), "{bad:?}: {err}");
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn worker_counts_out_of_bounds_are_refused_naming_the_flag() {
    for bad in ["0", "257", "100000", "18446744073709551616", "-1", "four"] {
        let (code, err) = xendevd(&["--workers", bad]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("--workers"), "{bad}: {err}");
        assert!(err.contains("from 1 to 256"), "{bad}: {err}");
    }
}

#[test]
fn good_values_pass_the_checks() {
    // --help exits before running; a refused value would make it exit 2 instead.
    let (code, err) = xendevd(&[
        "--workers",
        "256",
        "--default-bridge",
        "exactly15chars_",
        "--help",
    ]);
    assert_eq!(code, Some(0), "{err}");
}
