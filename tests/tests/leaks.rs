//! Nothing leaks: however containers end, over hundreds of cycles and a
//! daemon restart in between, no mount, cgroup, monitor process, file,
//! daemon descriptor or network interface stays behind. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::Path;

use lxvirt_tests::leaks::{
    busy_monitors, daemon_pid, fd_count, lxvirt_cgroups, monitors_for, mount_count, settle,
};
use lxvirt_tests::{TestBus, TestDaemon, busybox_root, root_or_skip, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

const CYCLES: usize = 300;

#[tokio::test]
async fn hundreds_of_cycles_leave_nothing_behind() {
    if !root_or_skip() {
        return;
    }
    let bus = TestBus::start().unwrap();
    let dir = shared_tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let run_dir = dir.path().join("run");
    let mut daemon = TestDaemon::start(&bus, dir.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    // Each with an ethernet interface whose host end (`lxvt` and the
    // domain's suffix) must be gone whenever the domain is.
    let host_end = |name: &str| format!("lxvt{}", name.trim_start_matches("leak-"));
    let xml = |name: &str, script: &str| {
        format!(
            "<domain type='lxc'><name>{name}</name><memory unit='MiB'>32</memory>\
             <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>{script}</initarg></os>\
             <features><privnet/></features><devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             <filesystem type='ram'><source usage='1024'/><target dir='/tmp'/></filesystem>\
             <interface type='ethernet'><target dev='{dev}'/><ip address='10.251.250.2' prefix='24'/></interface>\
             <console type='pty'/></devices></domain>",
            root = rootfs.display(),
            dev = host_end(name),
        )
    };
    let domain = |path| async {
        DomainProxy::builder(&connection)
            .path(path)
            .build()
            .await
            .unwrap()
    };
    let killed = domain(
        manager
            .define_xml(&xml("leak-kill", "sleep 1000"))
            .await
            .unwrap(),
    )
    .await;
    let exits = domain(
        manager
            .define_xml(&xml("leak-exit", "exit 0"))
            .await
            .unwrap(),
    )
    .await;
    let polite = domain(
        manager
            .define_xml(&xml(
                "leak-term",
                "trap 'exit 0' TERM; while true; do sleep 0.05; done",
            ))
            .await
            .unwrap(),
    )
    .await;

    let mounts_before = mount_count();
    let fds_before = fd_count(daemon_pid(&run_dir));

    for cycle in 0..CYCLES {
        match cycle % 6 {
            // Destroy, the common case.
            0..=2 => {
                killed.start().await.unwrap();
                killed.destroy().await.unwrap();
            }
            // Init exits by itself.
            3 => {
                exits.start().await.unwrap();
                settle("init to exit", || {
                    !run_dir.join("leak-exit.status").exists()
                })
                .await;
            }
            // Graceful shutdown.
            4 => {
                polite.start().await.unwrap();
                polite.shutdown(5, "").await.unwrap();
            }
            // A crash: init killed from the host.
            _ => {
                killed.start().await.unwrap();
                let pid = killed.pid().await.unwrap();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
                settle("the crash to be handled", || {
                    !run_dir.join("leak-kill.status").exists()
                })
                .await;
            }
        }
        for name in ["leak-kill", "leak-exit", "leak-term"] {
            let link = Path::new("/sys/class/net").join(host_end(name));
            assert!(!link.exists(), "cycle {cycle}: {} left", link.display());
        }
        if cycle == CYCLES / 2 {
            // A daemon restart with a container running in between.
            killed.start().await.unwrap();
            daemon.kill().unwrap();
            daemon = TestDaemon::start(&bus, dir.path()).await.unwrap();
            let killed = domain(manager.lookup_by_name("leak-kill").await.unwrap()).await;
            killed.destroy().await.unwrap();
        }
    }
    settle("the last container to be cleaned up", || {
        busy_monitors(&run_dir) == 0
    })
    .await;
    assert!(
        monitors_for(&run_dir).len() <= 1,
        "only the spare monitor may wait"
    );

    assert_eq!(mount_count(), mounts_before, "mounts leaked on the host");
    assert!(
        lxvirt_cgroups(dir.path(), "lxvirt-leak").is_empty(),
        "cgroups leaked: {:?}",
        lxvirt_cgroups(dir.path(), "lxvirt-leak")
    );
    let files: Vec<String> = fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !lxvirt_tests::daemon_run_file(n))
        // The directory of network files, empty with no network active.
        .filter(|n| {
            n != "network"
                || fs::read_dir(run_dir.join(n)).is_ok_and(|mut e| e.next().is_some())
        })
        .collect();
    assert!(files.is_empty(), "run files left: {files:?}");
    // The restarted daemon ran half the cycles: its descriptors stay flat.
    let fds_after = fd_count(daemon_pid(&run_dir));
    assert!(
        fds_after <= fds_before + 4,
        "daemon descriptors grew from {fds_before} to {fds_after}"
    );
    drop(daemon);
}
