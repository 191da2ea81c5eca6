//! `lxvirt logs` on real containers: output written while no client was
//! attached is there, while the container runs and after it stopped;
//! `--tail`; `-f` follows new output and ends when the container stops;
//! the file's cap holds (it rotates into one older file); undefine
//! removes the log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lxvirt_tests::{ContainerEnv, binary, lxvirt_said};

fn ok(env: &ContainerEnv, args: &[&str]) -> String {
    let (ok, out) = lxvirt_said(&env.bus.address, args);
    assert!(ok, "lxvirt {args:?}: {out}");
    out
}

/// Waits until `lxvirt logs NAME` prints `marker`.
fn wait_for_output(env: &ContainerEnv, name: &str, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ok(env, &["logs", name]);
        if out.contains(marker) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "no {marker:?} in the log of {name}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn logs_keep_console_output_follow_it_and_hold_their_cap() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    // Output while nobody is attached.
    env.start(
        "talker",
        "echo first-line; echo second-line; echo third-line; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
        "",
    )
    .await;
    let out = wait_for_output(&env, "talker", "third-line");
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(
        lines,
        ["first-line", "second-line", "third-line"],
        "{out:?}"
    );
    let tail = ok(&env, &["logs", "--tail", "1", "talker"]);
    assert_eq!(tail.trim_end(), "third-line", "{tail:?}");

    // -f: what is there, then new output, until the container stops.
    let mut follower = Command::new(binary("lxvirt"))
        .arg(format!("--connect={}", env.bus.address))
        .args(["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(&env, &["shutdown", "talker", "--mode", "signal"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f did not end with the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut followed = String::new();
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(status.success(), "{followed}");
    assert!(followed.contains("first-line"), "{followed:?}");
    assert!(
        followed.contains("got-term"),
        "new output followed: {followed:?}"
    );

    // Kept after the stop, and across a start: appended.
    let out = ok(&env, &["logs", "talker"]);
    assert!(out.contains("got-term"), "{out:?}");
    ok(&env, &["start", "talker"]);
    let out = wait_for_output(&env, "talker", "got-term\r\nfirst-line");
    assert_eq!(out.matches("first-line").count(), 2, "{out:?}");
    ok(&env, &["destroy", "talker"]);

    // The cap: 3 MB written; at most the file and the one before it kept.
    env.start(
        "flood",
        "yes lxvirt-flood-line | head -c 3000000; echo; echo flood-done; sleep 100000",
        "",
    )
    .await;
    let logs = env.dir.path().join("lib/console");
    let out = wait_for_output(&env, "flood", "flood-done");
    let current = std::fs::metadata(logs.join("flood.log")).unwrap().len();
    let previous = std::fs::metadata(logs.join("flood.log.1")).unwrap().len();
    let cap = 1 << 20;
    let chunk = 4096;
    assert!(
        current <= cap + chunk && previous <= cap + chunk,
        "{current} {previous}"
    );
    assert_eq!(out.len() as u64, current + previous);
    let end = &out[out.len().saturating_sub(60)..];
    assert!(out.trim_end().ends_with("flood-done"), "{end:?}");
    ok(&env, &["destroy", "flood"]);

    // Undefined: the log goes with the definition.
    ok(&env, &["undefine", "flood"]);
    assert!(!logs.join("flood.log").exists());
    assert!(!logs.join("flood.log.1").exists());
    let (found, out) = lxvirt_said(&env.bus.address, &["logs", "flood"]);
    assert!(!found && out.contains("no domain 'flood'"), "{out}");
}
