//! The `lxvirtd` process: start-up, restart, single instance, bad state on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::process::Command;

use lxvirt_tests::{TestBus, TestDaemon, binary, lxvirt, shared_tempdir};

const APP: &str = "<domain type='lxc'><name>app</name><memory unit='MiB'>64</memory>\
    <os><type>exe</type><init>/bin/sh</init></os><devices><console type='pty'/></devices></domain>";

#[tokio::test]
async fn definitions_survive_restart_and_kill() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let file = root.path().join("app.xml");
    fs::write(&file, APP).unwrap();
    let mut daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    assert!(
        lxvirt(&bus.address, &["define", file.to_str().unwrap()])
            .unwrap()
            .status
            .success()
    );
    assert!(
        lxvirt(&bus.address, &["autostart", "app"])
            .unwrap()
            .status
            .success()
    );
    let before = lxvirt(&bus.address, &["list", "--all"]).unwrap().stdout;

    assert!(
        daemon.stop().unwrap().success(),
        "SIGTERM is a clean shutdown"
    );
    let mut daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    assert_eq!(
        lxvirt(&bus.address, &["list", "--all"]).unwrap().stdout,
        before
    );

    daemon.kill().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    assert_eq!(
        lxvirt(&bus.address, &["list", "--all"]).unwrap().stdout,
        before
    );
}

#[tokio::test]
async fn bad_files_are_reported_kept_and_protected() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let domains = root.path().join("etc/domains");
    fs::create_dir_all(&domains).unwrap();
    let torn = "<domain type='lxc'><name>torn</name><memory>65536</mem";
    fs::write(domains.join("torn.xml"), torn).unwrap();
    fs::write(domains.join("app.xml"), APP).unwrap();

    let child = Command::new(binary("lxvirtd"))
        .args(TestDaemon::args(&bus.address, root.path()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for readiness through the CLI, then stop and read the log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lxvirt(&bus.address, &["list", "--all"])
        .unwrap()
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let listing =
        String::from_utf8(lxvirt(&bus.address, &["list", "--all"]).unwrap().stdout).unwrap();
    assert!(
        listing.contains("app") && !listing.contains("torn"),
        "{listing}"
    );

    // Defining "torn" again would overwrite the user's file: refused.
    let fresh = root.path().join("torn-new.xml");
    fs::write(&fresh, APP.replace("<name>app</name>", "<name>torn</name>")).unwrap();
    let out = lxvirt(&bus.address, &["define", fresh.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("torn.xml"),
        "{:?}",
        out
    );
    assert_eq!(fs::read_to_string(domains.join("torn.xml")).unwrap(), torn);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("torn.xml") && log.contains("skipped"), "{log}");
}

#[tokio::test]
async fn a_second_instance_is_refused() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let out = Command::new(binary("lxvirtd"))
        .args(TestDaemon::args(&bus.address, root.path()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another lxvirtd is running"),
        "{:?}",
        out
    );
}

#[test]
fn no_bus_is_a_clear_failure() {
    let root = shared_tempdir().unwrap();
    let out = Command::new(binary("lxvirtd"))
        .args(TestDaemon::args("unix:path=/nonexistent/bus", root.path()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to bus unix:path=/nonexistent/bus"),
        "{stderr}"
    );
}

#[test]
fn monitors_keep_no_inherited_descriptors() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    // A pipe whose write end is inherited by the monitor, as a client's
    // descriptor held by the daemon at the wrong moment would be.
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(
        &write_end,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let dir = shared_tempdir().unwrap();
    let mut monitor = Command::new(binary("lxvirt-monitor"))
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let inherited = write_end.as_raw_fd();
    drop(write_end);
    // Once the monitor has closed its copy, the pipe reports end of file.
    let reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        std::fs::File::from(read_end)
            .read_to_end(&mut buffer)
            .map(|_| ())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !reader.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "lxvirt-monitor kept inherited fd {inherited}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    reader.join().unwrap().unwrap();
    // Without a spec (stdin closes) it exits by itself.
    drop(monitor.stdin.take());
    monitor.wait().unwrap();
}
