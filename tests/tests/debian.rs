//! A Debian userland inside default containers: a bookworm root made by
//! `debootstrap --variant=minbase` (with systemd-sysv), cached under
//! /var/tmp so that re-runs are fast, imported into each test daemon's
//! image store (the container runs on its own writable layer, in a user
//! namespace with lxvirt's ids, the image's files shown through idmapped
//! mounts); `apt-get update` and an install from Debian's mirror, and
//! systemd as init. Needs root, debootstrap and the mirror. Without the
//! mirror it skips saying so (under CI too); without debootstrap it
//! skips, or fails under CI when the mirror is reachable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::HashMap;
use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lxvirt_tests::ContainerEnv;
use lxvirtd::dbus::proxy::ImagesProxy;
use lxvirtd::storage::{Compression, pack_dir};

const MIRROR_HOST: &str = "deb.debian.org";
const MIRROR: &str = "http://deb.debian.org/debian";
/// The cached root; complete once `COMPLETE` exists in it.
const CACHE: &str = "/var/tmp/lxvirt-debian-bookworm";
const COMPLETE: &str = ".lxvirt-debootstrap-complete";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One debootstrap at a time in this process (the tests run in parallel).
static BUILD: Mutex<()> = Mutex::new(());

fn mirror_reachable() -> bool {
    let Ok(addresses) = (MIRROR_HOST, 80).to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
}

/// The cached root, built if missing; `None` after saying why it cannot be.
fn debian_root() -> Option<PathBuf> {
    let cache = PathBuf::from(CACHE);
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if cache.join(COMPLETE).exists() {
        return Some(cache);
    }
    if !mirror_reachable() {
        println!("skipped: Debian's mirror ({MIRROR_HOST}) is not reachable");
        return None;
    }
    let has_debootstrap = Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_debootstrap {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs debootstrap (the mirror is reachable): install the debootstrap package"
        );
        println!("skipped: needs debootstrap");
        return None;
    }
    // Built beside the cache and renamed into place, so that an interrupted
    // run never leaves a half root that looks complete.
    let partial = PathBuf::from(format!("{CACHE}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    let output = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd-sysv", "bookworm"])
        .arg(&partial)
        .arg(MIRROR)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "debootstrap failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    fs::write(partial.join(COMPLETE), "").unwrap();
    if fs::rename(&partial, &cache).is_err() {
        // Another process finished first.
        let _ = fs::remove_dir_all(&partial);
    }
    Some(cache)
}

/// Imports the cached root as image `debian` into `env`'s image store.
async fn import_debian(env: &ContainerEnv, root: &Path) {
    let tarball = env.dir.path().join("debian.tar");
    pack_dir(
        root,
        Compression::None,
        &mut fs::File::create(&tarball).unwrap(),
    )
    .unwrap();
    let file = fs::File::open(&tarball).unwrap();
    ImagesProxy::new(&env.connection)
        .await
        .unwrap()
        .import_tarball(
            zbus::Fd::from(&file),
            HashMap::from([("name", zbus::Variant::from("debian"))]),
        )
        .await
        .unwrap();
    fs::remove_file(&tarball).unwrap();
}

/// A domain on image `debian` running `init`.
fn debian_xml(name: &str, init: &[&str], extra: &str) -> String {
    let args: String = init[1..]
        .iter()
        .map(|a| format!("<initarg>{a}</initarg>"))
        .collect();
    format!(
        "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name>\
         <memory unit='MiB'>512</memory><os><type>exe</type><init>{}</init>{args}</os>{extra}\
         <devices><filesystem type='volume'><source pool='images' volume='debian'/>\
         <target dir='/'/></filesystem><console type='pty'/></devices></domain>",
        init[0],
    )
}

/// A daemon with the Debian root as image `debian`, and domain `name` on
/// it started; `None` (said why) when the test cannot run here.
async fn debian_domain(
    name: &str,
    init: &[&str],
    extra: &str,
) -> Option<(ContainerEnv, lxvirtd::dbus::proxy::DomainProxy<'static>)> {
    let env = ContainerEnv::new().await?;
    let root = debian_root()?;
    import_debian(&env, &root).await;
    let domain = env.define_and_start(&debian_xml(name, init, extra)).await;
    Some((env, domain))
}

/// Runs `script` with sh inside, with a full PATH.
async fn sh(
    env: &ContainerEnv,
    domain: &lxvirtd::dbus::proxy::DomainProxy<'_>,
    script: &str,
) -> (i32, String) {
    let script = format!("export {PATH} DEBIAN_FRONTEND=noninteractive; {script}");
    env.enter(domain, &["/bin/sh", "-c", &script]).await
}

#[tokio::test]
async fn apt_installs_a_package_in_a_default_container() {
    let Some((env, domain)) = debian_domain("apt", &["/bin/sleep", "infinity"], "").await else {
        return;
    };
    let (code, out) = sh(
        &env,
        &domain,
        "apt-get update -q && apt-get install -y -q --no-install-recommends hello && hello",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Hello, world!"), "{out}");
    let _ = domain.destroy().await;
}

/// Waits until systemd inside reports the system up (`running`, or
/// `degraded`: a unit failed, the rest is up); returns the last answer.
async fn wait_for_boot(
    env: &ContainerEnv,
    domain: &lxvirtd::dbus::proxy::DomainProxy<'_>,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = sh(env, domain, "systemctl is-system-running 2>&1").await;
        let state = out.trim().to_owned();
        if state == "running" || state == "degraded" || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// systemd as init boots to multi-user.target in a default container
/// (a user namespace with lxvirt's ids) with its own network namespace:
/// it mounts its API file systems (allowed in a user namespace, the masks
/// stay locked), a fresh sysfs without the host's cgroup mounts lets it
/// mount its own, services start. Two units fail (debugfs and tracefs may
/// not be mounted there), so the system is `degraded`.
#[tokio::test]
async fn systemd_boots_to_multi_user_in_a_default_container() {
    let Some((env, domain)) = debian_domain(
        "systemd",
        &["/lib/systemd/systemd"],
        "<features><privnet/></features>",
    )
    .await
    else {
        return;
    };
    let state = wait_for_boot(&env, &domain).await;
    let (_, report) = sh(
        &env,
        &domain,
        "systemctl is-active multi-user.target systemd-journald.service console-getty.service; \
         systemctl --failed --no-legend --plain | cut -d' ' -f1",
    )
    .await;
    assert!(
        state == "running" || state == "degraded",
        "{state}\n{report}"
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[..3], ["active", "active", "active"], "{report}");
    for failed in &lines[3..] {
        assert!(
            ["sys-kernel-debug.mount", "sys-kernel-tracing.mount"].contains(failed),
            "unexpected failed unit {failed}:\n{report}"
        );
    }
    // The default shutdown asks systemd as it wants (SIGRTMIN+3: halt);
    // SIGTERM it would ignore, and be killed at the end of the grace
    // period. It halts long before.
    let asked = Instant::now();
    domain.shutdown(120, "").await.unwrap();
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "systemd did not halt: the shutdown took {took:?} of its 120 s grace"
    );
    let (state, reason) = (
        domain.state().await.unwrap(),
        domain.state_reason().await.unwrap(),
    );
    assert_eq!((state.as_str(), reason.as_str()), ("shutoff", "shutdown"));
    println!("systemd halted in {took:?}");
}

/// Without a user namespace (`<lxvirt:userns mode='host'/>`, libvirt's
/// semantics) the filter blocks the mount family, and systemd exits at
/// once ("Failed to mount API filesystems").
#[tokio::test]
async fn systemd_cannot_boot_as_host_root() {
    let Some((_env, domain)) = debian_domain(
        "blocked",
        &["/lib/systemd/systemd"],
        "<features><privnet/></features><lxvirt:userns mode='host'/>",
    )
    .await
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while domain.state().await.unwrap() != "shutoff" {
        assert!(Instant::now() < deadline, "systemd is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
