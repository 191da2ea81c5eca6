//! The D-Bus surface fuzzed against a live daemon (`lxvirt-dbus-fuzz`):
//! as root, every method of the committed contract with generated
//! arguments from four connections at once — the daemon answers each call
//! (no hang), with success or a typed `org.lxvirt.lxvirt1.Error.*`, and is
//! still there; then as uid 65534 — every method that changes something is
//! refused and nothing changed. Needs root.
//!
//! `LXVIRT_DBUS_FUZZ_CALLS` calls per caller (2,000 by default: CI's
//! smoke; docs/reliability.md has the long run), from
//! `LXVIRT_DBUS_FUZZ_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use lxvirt_tests::{ContainerEnv, as_nobody, binary};
use lxvirtd::dbus::proxy::ImagesProxy;

/// Everything a caller could have changed: definition files, images,
/// domains' states.
async fn state(env: &ContainerEnv) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![env.dir.path().join("etc")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(
                    path.display().to_string(),
                    fs::read_to_string(&path).unwrap_or_default(),
                );
            }
        }
    }
    let images = ImagesProxy::new(&env.connection).await.unwrap();
    for image in images.list_images().await.unwrap() {
        found.insert(format!("image {}", image.id), image.names.join(","));
    }
    let manager = env.manager().await.unwrap();
    for summary in manager.list_domain_summaries().await.unwrap() {
        found.insert(
            format!("domain {}", summary.name),
            format!("{} {}", summary.state, summary.pid),
        );
    }
    found
}

fn fuzz(
    env: &ContainerEnv,
    tarball: &Path,
    calls: u64,
    seed: u64,
    unprivileged: bool,
) -> serde_json::Value {
    let program = binary("lxvirt-dbus-fuzz");
    let rootfs = env.rootfs().display().to_string();
    let tarball = tarball.display().to_string();
    let (calls, seed) = (calls.to_string(), seed.to_string());
    let mut args = vec![
        "--address",
        env.bus.address.as_str(),
        "--rootfs",
        rootfs.as_str(),
        "--tarball",
        tarball.as_str(),
        "--calls",
        calls.as_str(),
        "--seed",
        seed.as_str(),
    ];
    let out = if unprivileged {
        args.push("--unprivileged");
        as_nobody(&program, &args).unwrap()
    } else {
        std::process::Command::new(&program)
            .args(&args)
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "lxvirt-dbus-fuzz failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "D-Bus fuzz ({}): {report}",
        if unprivileged { "uid 65534" } else { "root" }
    );
    report
}

fn check(report: &serde_json::Value, calls: u64) {
    assert_eq!(report["calls"], calls, "{report}");
    assert_eq!(report["hangs"], 0, "{report}");
    assert_eq!(
        report["unexpected"].as_array().map(Vec::len),
        Some(0),
        "answers the contract does not allow: {report:#}"
    );
}

#[tokio::test]
async fn every_method_with_generated_arguments_gets_a_typed_answer_and_changes_nothing_for_others()
{
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let calls: u64 = std::env::var("LXVIRT_DBUS_FUZZ_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("LXVIRT_DBUS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::process::id().into());
    println!("LXVIRT_DBUS_FUZZ_SEED={seed}");
    let tarball = env.dir.path().join("small.tar");
    lxvirtd::storage::pack_dir(
        &env.rootfs(),
        lxvirtd::storage::Compression::None,
        &mut fs::File::create(&tarball).unwrap(),
    )
    .unwrap();
    // Something to act on: two domains, one running; an isolated network.
    let manager = env.manager().await.unwrap();
    for name in ["fz-0", "fz-1"] {
        manager
            .define_xml(&lxvirt_tests::sleeper_xml(name, &env.rootfs()))
            .await
            .unwrap();
    }
    env.domain(manager.lookup_by_name("fz-0").await.unwrap())
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    manager
        .network_define_xml("<network><name>fz-net0</name><bridge name='lxvfz0'/></network>")
        .await
        .unwrap();

    let report = fuzz(&env, &tarball, calls, seed, false);
    check(&report, calls);
    let daemon = env.daemon.pid().expect("the daemon runs");
    assert!(
        Path::new(&format!("/proc/{daemon}")).exists(),
        "the daemon died"
    );
    manager
        .list_domains()
        .await
        .expect("the daemon still answers");
    // Every container that runs is one the daemon knows as running.
    let active = manager
        .list_domain_summaries()
        .await
        .unwrap()
        .iter()
        .filter(|d| d.state == "running" || d.state == "paused")
        .count();
    let run_dir = env.run_dir();
    lxvirt_tests::leaks::settle("every container to be one the daemon knows", || {
        lxvirt_tests::leaks::busy_monitors(&run_dir) == active
    })
    .await;

    let before = state(&env).await;
    let report = fuzz(&env, &tarball, calls / 2, seed + 1, true);
    check(&report, calls / 2);
    assert_eq!(state(&env).await, before, "uid 65534 changed something");
    assert!(
        report["errors"]["org.lxvirt.lxvirt1.Error.AccessDenied"].as_u64() > Some(0),
        "{report}"
    );
}
