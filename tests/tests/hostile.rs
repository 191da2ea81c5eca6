//! Hostile tenants: root in a default container fork-bombs, eats memory,
//! floods its console, plants links, FIFOs and nodes in its writable layer
//! before a commit and an undefine, and looks for the bus and lxvirt's run
//! directory. Its limits hold, the monitor and the daemon are untouched,
//! the host is never reached through what it planted. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use lxvirt_tests::ContainerEnv;
use lxvirt_tests::leaks::{parent_of, rss_kib};
use lxvirtd::dbus::proxy::{DomainProxy, ImagesProxy};
use zbus::Variant as Value;

/// busybox applets the attempts need besides the harness's own.
const MORE_APPLETS: &[&str] = &["ln", "mkfifo", "mknod", "tail", "dd", "seq"];

async fn env() -> Option<ContainerEnv> {
    let env = ContainerEnv::new().await?;
    for applet in MORE_APPLETS {
        let _ = std::os::unix::fs::symlink("busybox", env.rootfs().join("bin").join(applet));
    }
    Some(env)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The daemon answers, and another container still runs commands.
async fn host_unaffected(env: &ContainerEnv, neighbour: &DomainProxy<'_>) {
    env.manager().await.unwrap().list_domains().await.unwrap();
    let (code, out) = env.enter(neighbour, &["/bin/echo", "fine"]).await;
    assert_eq!((code, out.trim()), (0, "fine"));
}

/// The memory cgroup's OOM kills so far (v1 `memory.oom_control`, v2
/// `memory.events`).
fn oom_kills(env: &ContainerEnv, name: &str) -> u64 {
    let v1 = env
        .daemon
        .cgroup_dir("memory", name)
        .join("memory.oom_control");
    let v2 = env.daemon.cgroup_dir("", name).join("memory.events");
    let text = fs::read_to_string(&v1)
        .or_else(|_| fs::read_to_string(&v2))
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn fork_bombs_and_memory_hogs_stay_inside_their_limits() {
    let Some(env) = env().await else { return };
    let neighbour = env.start("neighbour", "sleep 1000", "").await;

    // A fork bomb against pids.max.
    let bomb = env
        .start("bomb", "sleep 1000", "<lxvirt:pids max='64'/>")
        .await;
    let (_, _) = env
        .enter(&bomb, &["/bin/sh", "-c", "f() { f | f & }; f; exit 0"])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = env.daemon.cgroup_dir("pids", "bomb");
    let current: u64 = read(&pids.join("pids.current")).trim().parse().unwrap();
    assert!(current <= 64, "pids.current {current} above pids.max 64");
    let refused = read(&pids.join("pids.events"));
    println!(
        "fork bomb: pids.current {current} of 64, pids.events {}",
        refused.trim()
    );
    assert!(!refused.contains("max 0"), "no fork was refused: {refused}");
    host_unaffected(&env, &neighbour).await;
    bomb.destroy().await.unwrap();
    assert!(!pids.exists(), "the bomb's cgroup outlived it");

    // A memory hog against its memory limit: the OOM killer acts inside.
    let hog = env.start("hog", "sleep 1000", "").await;
    let init = hog.pid().await.unwrap();
    let monitor = parent_of(init);
    let (code, _) = env.enter(&hog, &["/bin/tail", "/dev/zero"]).await;
    assert_ne!(code, 0, "tail /dev/zero ended by itself");
    assert!(
        oom_kills(&env, "hog") >= 1,
        "no OOM kill in the hog's cgroup"
    );
    assert_eq!(
        hog.state().await.unwrap(),
        "running",
        "its init was killed too"
    );
    assert_eq!(hog.pid().await.unwrap(), init);
    assert!(
        Path::new(&format!("/proc/{monitor}")).exists(),
        "the monitor died"
    );
    host_unaffected(&env, &neighbour).await;
    hog.destroy().await.unwrap();
    neighbour.destroy().await.unwrap();
}

#[tokio::test]
async fn a_console_flood_leaves_the_monitor_small_and_the_log_capped() {
    let Some(env) = env().await else { return };
    let flood = env
        .start("flood", "while :; do echo flooding the console; done", "")
        .await;
    let monitor = parent_of(flood.pid().await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(monitor).unwrap();
    // The monitor moves the flood through fixed buffers into a log it
    // rotates at 1 MiB: nothing grows with what init writes.
    assert!(
        rss < 8 * 1024,
        "the monitor holds {rss} KiB after the flood"
    );
    let logs = env.dir.path().join("lib/console");
    let mut total = 0;
    for entry in fs::read_dir(&logs).unwrap().flatten() {
        let size = entry.metadata().unwrap().len();
        assert!(size <= 1 << 20, "{}: {size} bytes", entry.path().display());
        total += size;
    }
    assert!(total > 0, "nothing of the flood was kept");
    println!("console flood: monitor VmRSS {rss} KiB after 3 s, {total} bytes of logs kept");
    env.manager().await.unwrap().list_domains().await.unwrap();
    flood.destroy().await.unwrap();
}

#[tokio::test]
async fn what_a_tenant_plants_in_its_layer_never_reaches_the_host() {
    let Some(env) = env().await else { return };
    // A host file the tenant aims at, by path.
    let canary = env.dir.path().join("canary");
    fs::write(&canary, "host data\n").unwrap();
    let images = ImagesProxy::new(&env.connection).await.unwrap();
    let tarball = env.dir.path().join("base.tar");
    lxvirtd::storage::pack_dir(
        &env.rootfs(),
        lxvirtd::storage::Compression::None,
        &mut fs::File::create(&tarball).unwrap(),
    )
    .unwrap();
    let file = fs::File::open(&tarball).unwrap();
    images
        .import_tarball(
            zbus::Fd::from(&file),
            HashMap::from([("name", Value::from("hostile-base"))]),
        )
        .await
        .unwrap();
    let xml = String::from(
        "<domain type='lxc'><name>planter</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
         <devices><filesystem type='volume'><source pool='images' volume='hostile-base'/>\
         <target dir='/'/></filesystem><console type='pty'/></devices></domain>",
    );
    let planter = env.define_and_start(&xml).await;
    let script = format!(
        "ln -s {canary} /to-canary; ln -s / /to-root; ln -s /proc/1/root /to-init-root; \
         mkfifo /fifo; ln /bin/busybox /hard-link; \
         mknod /null-copy c 1 3 2>/dev/null; \
         mkdir -p /deep && ln -s ../../../../../../../../.. /deep/up; exit 0",
        canary = canary.display()
    );
    let (code, out) = env.enter(&planter, &["/bin/sh", "-c", &script]).await;
    assert_eq!(code, 0, "{out}");
    planter.destroy().await.unwrap();

    // A commit copies links as links and does not open the FIFO.
    let id = planter.commit("planted", 0).await.unwrap();
    let layer = env
        .dir
        .path()
        .join("lib/storage/images")
        .join(&id)
        .join("layer");
    for (name, target) in [
        ("to-canary", canary.display().to_string()),
        ("to-root", "/".to_owned()),
        ("deep/up", "../../../../../../../../..".to_owned()),
    ] {
        let link = layer.join(name);
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name} was not kept as a link"
        );
        assert_eq!(fs::read_link(&link).unwrap().display().to_string(), target);
    }
    assert!(
        fs::symlink_metadata(layer.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        !layer.join("null-copy").exists(),
        "a device node made it into an image"
    );
    assert_eq!(read(&canary), "host data\n");

    // An export reads the same links and FIFO without following them.
    let exported = env.dir.path().join("planted.tar");
    let out = fs::File::create(&exported).unwrap();
    images
        .export("planted", zbus::Fd::from(&out), HashMap::new())
        .await
        .unwrap();
    assert!(fs::metadata(&exported).unwrap().len() > 0);

    // Undefining removes the writable layer (off the daemon's task, so
    // shortly after the call returns): through none of the links.
    planter.undefine(0).await.unwrap();
    let layer_dir = env.dir.path().join("lib/storage/containers/planter");
    lxvirt_tests::net::eventually("the writable layer's removal", || !layer_dir.exists()).await;
    assert_eq!(read(&canary), "host data\n");
    assert!(env.rootfs().join("bin/busybox").exists());
}

#[tokio::test]
async fn a_default_container_finds_neither_the_bus_nor_the_run_directory() {
    let Some(env) = env().await else { return };
    let tenant = env.start("tenant", "sleep 1000", "").await;
    let run_dir = env.run_dir();
    let bus_dir = env
        .bus
        .address
        .trim_start_matches("unix:path=")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    for path in [
        "/run/dbus/system_bus_socket".to_owned(),
        "/var/run/dbus/system_bus_socket".to_owned(),
        run_dir.display().to_string(),
        bus_dir,
    ] {
        let (code, out) = env.enter(&tenant, &["/bin/ls", "-d", &path]).await;
        assert_ne!(code, 0, "{path} is visible inside: {out}");
    }
    tenant.destroy().await.unwrap();
}
