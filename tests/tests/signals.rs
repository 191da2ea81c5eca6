//! Signals into containers and the shutdown modes, through the CLI and a
//! real daemon: `send-process-signal` reaches the process the container
//! numbers, and nothing outside it; `shutdown` asks init as it wants to be
//! asked (systemd: SIGRTMIN+3, sysvinit: a runlevel request on
//! `/run/initctl`, anything else: SIGTERM) or as `--mode` says.
//!
//! The inits are busybox shell scripts standing in for the real ones: a
//! script named `systemd` has that `comm`, as systemd has; a sysvinit
//! stand-in reads its request from the FIFO. (A Debian container with
//! systemd as init is shut down in tests/tests/debian.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use lxvirt_tests::{ContainerEnv, lxvirt_said};

fn run(env: &ContainerEnv, args: &[&str]) -> (bool, String) {
    lxvirt_said(&env.bus.address, args)
}

fn state(env: &ContainerEnv, name: &str) -> String {
    let (ok, out) = run(env, &["-o", "json", "dominfo", name]);
    assert!(ok, "{out}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    info["state"].as_str().unwrap().to_owned()
}

fn wait_shutoff(env: &ContainerEnv, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(env, name) != "shutoff" {
        assert!(Instant::now() < deadline, "{name} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `path` to hold a line; returns it.
fn wait_line(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "nothing in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An executable script at `path` below the container's root.
fn script(env: &ContainerEnv, path: &str, body: &str) {
    let file = env.rootfs().join(path);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
}

fn define(env: &ContainerEnv, name: &str, init: &str) {
    let xml = format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>{init}</init></os>\
         <devices><filesystem type='mount'><source dir='{}'/><target dir='/'/></filesystem>\
         <console type='pty'/></devices></domain>",
        env.rootfs().display()
    );
    let file = env.dir.path().join(format!("{name}.xml"));
    fs::write(&file, xml).unwrap();
    let (ok, out) = run(env, &["define", file.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn send_process_signal_reaches_the_process_the_container_numbers() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    script(
        &env,
        "sbin/sig-init",
        "trap 'exit 7' USR1\n\
         sleep 1000 & echo $! > /tmp/sig-child\n\
         wait $!; echo $? > /tmp/sig-child-status\n\
         while :; do sleep 1 & wait $!; done",
    );
    define(&env, "sig", "/sbin/sig-init");
    let (ok, out) = run(&env, &["send-process-signal", "sig", "1", "0"]);
    assert!(!ok && out.contains("start it first"), "{out}");
    let (ok, out) = run(&env, &["start", "sig"]);
    assert!(ok, "{out}");

    // The child, by the pid the container gave it.
    let child = wait_line(&env.rootfs().join("tmp/sig-child"));
    assert!(child.parse::<u32>().unwrap() < 100, "{child}");
    let (ok, out) = run(&env, &["send-process-signal", "sig", &child, "SIGKILL"]);
    assert!(ok, "{out}");
    assert_eq!(wait_line(&env.rootfs().join("tmp/sig-child-status")), "137");

    // Nothing outside: this test's own pid is not the container's.
    let outside = std::process::id().to_string();
    let (ok, out) = run(&env, &["send-process-signal", "sig", &outside, "0"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("no process {outside} runs inside it")),
        "{out}"
    );
    let (ok, out) = run(&env, &["send-process-signal", "sig", "1", "SIGBOGUS"]);
    assert!(!ok && out.contains("unknown signal 'SIGBOGUS'"), "{out}");
    assert_eq!(state(&env, "sig"), "running");

    // init, by name in lower case.
    let (ok, out) = run(&env, &["send-process-signal", "sig", "1", "usr1"]);
    assert!(ok, "{out}");
    wait_shutoff(&env, "sig");
}

#[tokio::test]
async fn shutdown_asks_init_as_it_wants_or_as_the_mode_says() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    for applet in ["mkfifo", "head"] {
        let _ = std::os::unix::fs::symlink("busybox", env.rootfs().join("bin").join(applet));
    }
    // systemd: its name; it halts on SIGRTMIN+3 and ignores SIGTERM.
    let rtmin3 = nix::libc::SIGRTMIN() + 3;
    script(
        &env,
        "usr/lib/systemd/systemd",
        &format!(
            "trap '' TERM\ntrap 'echo rtmin3 > /tmp/sysd-asked; exit 0' {rtmin3}\n\
             while :; do sleep 1 & wait $!; done"
        ),
    );
    // sysvinit: its FIFO; SIGTERM ignored too.
    script(
        &env,
        "sbin/sysv-init",
        "trap '' TERM\nmkdir -p /run && mkfifo /run/initctl\n\
         head -c 384 /run/initctl > /tmp/sysv-request\nrm /run/initctl\nexit 0",
    );
    // Anything else: SIGTERM.
    script(
        &env,
        "sbin/plain-init",
        "trap 'echo term > /tmp/plain-asked; exit 0' TERM\n\
         while :; do sleep 1 & wait $!; done",
    );
    define(&env, "sysd", "/usr/lib/systemd/systemd");
    define(&env, "sysv", "/sbin/sysv-init");
    define(&env, "plain", "/sbin/plain-init");
    for name in ["sysd", "sysv", "plain"] {
        let (ok, out) = run(&env, &["start", name]);
        assert!(ok, "{out}");
    }
    // Asked the wrong way, each would be killed after its grace, and
    // leave no word of having been asked.
    let (ok, out) = run(&env, &["shutdown", "sysd", "--grace", "30"]);
    assert!(ok, "{out}");
    assert_eq!(wait_line(&env.rootfs().join("tmp/sysd-asked")), "rtmin3");

    // sysvinit's FIFO is made once init runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.rootfs().join("run/initctl").exists() {
        assert!(Instant::now() < deadline, "no /run/initctl");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, out) = run(&env, &["shutdown", "sysv", "--grace", "30"]);
    assert!(ok, "{out}");
    let request = fs::read(env.rootfs().join("tmp/sysv-request")).unwrap();
    assert_eq!(request.len(), 384);
    assert_eq!(request[..4], 0x0309_1969i32.to_ne_bytes());
    assert_eq!(request[8..12], i32::from(b'0').to_ne_bytes());

    // No FIFO: initctl is refused and the container runs on; the default
    // is SIGTERM.
    let (ok, out) = run(&env, &["shutdown", "plain", "--mode", "initctl"]);
    assert!(!ok, "{out}");
    assert!(out.contains("no sysvinit control FIFO"), "{out}");
    assert_eq!(state(&env, "plain"), "running");
    let (ok, out) = run(&env, &["shutdown", "plain", "--grace", "30"]);
    assert!(ok, "{out}");
    assert_eq!(wait_line(&env.rootfs().join("tmp/plain-asked")), "term");
    for name in ["sysd", "sysv", "plain"] {
        assert_eq!(state(&env, name), "shutoff", "{name}");
    }
}
