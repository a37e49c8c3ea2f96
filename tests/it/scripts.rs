//! The build scripts the README's commands run (`scripts/build.sh`), with a stand-in `cargo` on
//! `PATH` so that no real build runs: what a first build prints and how it exits.

use std::path::Path;
use std::process::Command;

/// A `cargo` that takes `secs` seconds and exits with `code`.
fn fake_cargo(dir: &Path, secs: u32, code: i32) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, format!("#!/bin/sh\nsleep {secs}\nexit {code}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// scripts/build.sh in a first build (an empty target folder), with a progress line every second.
fn first_build(dir: &Path) -> std::process::Output {
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("QUANTBENCH_BUILD_PROGRESS_S", "1")
        .output()
        .unwrap()
}

#[test]
fn a_first_build_that_succeeds_exits_0_and_says_it_is_still_building() {
    // Before the fix, the progress loop died at its first look (find failed before llama.cpp's
    // build folder existed, under set -e), and stopping the dead loop made the script exit 1
    // after a build that had succeeded: CI failed with no error message.
    let d = tempfile::tempdir().unwrap();
    fake_cargo(d.path(), 4, 0);
    let out = first_build(d.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("first build"), "{err}");
    assert!(err.contains("still building ("), "{err}");
}

#[test]
fn a_first_build_that_fails_exits_with_cargos_status() {
    let d = tempfile::tempdir().unwrap();
    fake_cargo(d.path(), 2, 101);
    let out = first_build(d.path());
    assert_eq!(
        out.status.code(),
        Some(101),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_first_build_stopped_by_a_signal_leaves_no_progress_loop_behind() {
    // the loop is a child of the script: a script ended by SIGTERM (or by an error) left it
    // printing "still building" every 30 s for as long as the machine ran
    let d = tempfile::tempdir().unwrap();
    fake_cargo(d.path(), 3, 0);
    let log = d.path().join("stderr");
    let path = format!(
        "{}:{}",
        d.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build.sh"))
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", d.path().join("target"))
        .env("QUANTBENCH_BUILD_PROGRESS_S", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    crate::common::signal(child.id(), libc::SIGTERM);
    crate::common::wait_bounded(&mut child, 60);
    let len = || std::fs::metadata(&log).unwrap().len();
    let after = len();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(
        len(),
        after,
        "still printing after the script ended: {}",
        std::fs::read_to_string(&log).unwrap()
    );
}
