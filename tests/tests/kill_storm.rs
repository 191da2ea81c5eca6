//! lxvirtd killed with SIGKILL at random moments while several clients
//! define, start, destroy, undefine, commit and import at once; after each
//! restart, what the daemon answered is there, nothing else is half there,
//! and no container runs unmanaged. At the end, with everything stopped
//! and undefined, nothing is left behind. Needs root.
//!
//! `LXVIRT_KILL_ROUNDS` rounds (6 by default: CI's smoke; the reliability
//! figure is `LXVIRT_KILL_ROUNDS=500`), from `LXVIRT_STORM_SEED` (printed,
//! so a failing run can be replayed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lxvirt_tests::leaks::{busy_monitors, lxvirt_cgroups, mounts_below};
use lxvirt_tests::storm::{
    BASE_IMAGE, CLIENTS, ImageLedger, Slot, Storm, Tally, by_client, check_definitions_and_images,
    client, domain, fresh_slots,
};
use lxvirt_tests::{
    DaemonEnv, Rng, TestDaemon, busybox_root_and_tarball, root_or_skip, shared_tempdir,
};
use lxvirtd::dbus::proxy::ImagesProxy;
use zbus::Variant as Value;

/// Checks the daemon's state against what the clients were told, after a
/// restart: definitions and images as the ledger says, and every running
/// container managed. The ledger becomes what was found.
async fn check_round(
    env: &DaemonEnv,
    storm: &Storm,
    round: usize,
    slots: &mut [Slot],
    images: &mut ImageLedger,
) {
    check_definitions_and_images(storm, &env.connection, round, slots, images).await;
    let manager = env.manager().await.unwrap();

    // Containers: every one that runs is managed (a monitor busy with a
    // container for each running or paused domain, and no cgroup else).
    let mut active = BTreeMap::new();
    for summary in manager.list_domain_summaries().await.unwrap() {
        if summary.state == "running" || summary.state == "paused" {
            assert!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(summary.pid as i32), None)
                    .is_ok(),
                "round {round}: {} is {} with pid {}, which is gone",
                summary.name,
                summary.state,
                summary.pid
            );
            active.insert(summary.name.clone(), summary.pid);
        }
    }
    let run_dir = env.run_dir();
    let settled = Instant::now() + Duration::from_secs(10);
    loop {
        let busy = busy_monitors(&run_dir);
        let cgroups: BTreeSet<String> = lxvirt_cgroups(env.dir.path(), "lxvirt-")
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let expected: BTreeSet<String> = active.keys().map(|n| format!("lxvirt-{n}")).collect();
        if busy == active.len() && cgroups == expected {
            break;
        }
        assert!(
            Instant::now() < settled,
            "round {round}: {busy} busy monitors and cgroups {cgroups:?} for active domains {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn killed_daemons_lose_nothing_answered_and_leave_nothing_behind() {
    if !root_or_skip() {
        return;
    }
    let rounds: usize = std::env::var("LXVIRT_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("LXVIRT_STORM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill storm: {rounds} rounds, LXVIRT_STORM_SEED={seed}");
    let mut rng = Rng::new(seed);

    let dir = shared_tempdir().unwrap();
    let (rootfs, tarball) = busybox_root_and_tarball(dir.path());
    let mut env = DaemonEnv::start_in(dir, &[]).await.unwrap();
    let mounts = mounts_below(env.dir.path());
    {
        let images = ImagesProxy::new(&env.connection).await.unwrap();
        let file = fs::File::open(&tarball).unwrap();
        images
            .import_tarball(
                zbus::Fd::from(&file),
                HashMap::from([("name", Value::from(BASE_IMAGE))]),
            )
            .await
            .unwrap();
    }
    let storm = Arc::new(Storm {
        root: env.dir.path().to_owned(),
        rootfs,
        tarball,
        journal: None,
        patience: Duration::from_secs(20),
    });

    let mut slots = by_client(fresh_slots());
    let mut images = ImageLedger::default();
    images.known.insert(BASE_IMAGE.to_owned());
    let mut kills_at = Vec::new();
    let mut tally = Tally::default();

    for round in 0..rounds {
        let mut tasks = Vec::new();
        for (id, client_slots) in slots.drain(..).enumerate() {
            let connection = env.bus.connect().await.unwrap();
            let storm = Arc::clone(&storm);
            let seed = rng.next_u64();
            tasks.push(tokio::spawn(async move {
                client(&storm, connection, client_slots, seed, round, id).await
            }));
        }
        let delay = Duration::from_millis(rng.below(250) as u64);
        kills_at.push(delay);
        tokio::time::sleep(delay).await;
        // The clients hold the storm too: killed through its pid.
        let pid = env.daemon.pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let mut all = Vec::new();
        for task in tasks {
            let (client_slots, client_images, client_tally) = task.await.unwrap();
            tally.add(client_tally);
            all.extend(client_slots);
            images.known.extend(client_images.known);
            images.maybe.extend(client_images.maybe);
        }
        let _ = env.daemon.wait_exit(Duration::from_secs(5));
        env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
        check_round(&env, &storm, round, &mut all, &mut images).await;
        slots = by_client(all);
    }
    println!(
        "kill storm: {rounds} kills survived, at {:?} ms into a storm of {CLIENTS} clients",
        kills_at.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    for (method, (answered, refused)) in &tally.0 {
        println!("kill storm: {method}: {answered} done, {refused} refused (typed)");
    }
    assert!(
        tally.done() > rounds as u64,
        "the storm hardly did anything: {tally:?}"
    );

    // Everything stopped and undefined: nothing is left.
    let manager = env.manager().await.unwrap();
    for path in manager.list_domains().await.unwrap() {
        let domain = domain(&env.connection, path).await;
        let _ = domain.destroy().await;
        let _ = domain.undefine(0).await;
    }
    assert!(manager.list_domains().await.unwrap().is_empty());
    let run_dir = env.run_dir();
    let settled = Instant::now() + Duration::from_secs(10);
    while busy_monitors(&run_dir) > 0 || !lxvirt_cgroups(env.dir.path(), "lxvirt-").is_empty() {
        assert!(Instant::now() < settled, "containers left after the storm");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mounts_below(env.dir.path()), mounts, "mounts left");
    // Undefine removes a writable layer after it answers, off the
    // manager's task: give the last removals their time.
    let layers = storm.storage().join("containers");
    let layers_left = || -> Vec<_> {
        fs::read_dir(&layers)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let settled = Instant::now() + Duration::from_secs(10);
    while !layers_left().is_empty() && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = layers_left();
    assert!(left.is_empty(), "writable layers left: {left:?}");
    let statuses: Vec<_> = fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "status" || e == "sock"))
        .collect();
    assert!(statuses.is_empty(), "run files left: {statuses:?}");
    id_blocks_released(env.dir.path());
}

/// With every domain undefined, no id block stays reserved.
fn id_blocks_released(root: &Path) {
    let dir = root.join("lib/userns");
    let left: Vec<_> = fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "id blocks left in {}: {left:?}",
        dir.display()
    );
}
