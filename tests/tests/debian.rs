//! A Debian userland inside default containers: a bookworm root made by
//! `debootstrap --variant=minbase` (with systemd-sysv), cached under
//! /var/tmp so that re-runs are fast, each test on an overlay of its own
//! over it; `apt-get update` and an install from Debian's mirror, and
//! systemd as init. Needs root, debootstrap and the mirror. Without the
//! mirror it skips saying so (under CI too); without debootstrap it
//! skips, or fails under CI when the mirror is reachable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lxvirt_tests::ContainerEnv;
use nix::mount::{MntFlags, MsFlags};

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

/// Host ids of the container's ids 0–65535 in the systemd test.
const SHIFT: u32 = 400_000;
const IDMAP: &str = "<idmap><uid start='0' target='400000' count='65536'/>\
                     <gid start='0' target='400000' count='65536'/></idmap>";

/// The cached root with every owner moved up by `SHIFT`, for a container
/// with `IDMAP` (lxvirt does not shift a root for `<idmap>`), cached too.
fn shifted_root(plain: &Path) -> PathBuf {
    let shifted = PathBuf::from(format!("{CACHE}-idmap-{SHIFT}"));
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if shifted.join(COMPLETE).exists() {
        return shifted;
    }
    let partial = PathBuf::from(format!(
        "{}.partial-{}",
        shifted.display(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&partial);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(plain)
        .arg(&partial)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a {} failed", plain.display());
    shift_owners(&partial);
    if fs::rename(&partial, &shifted).is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    shifted
}

fn shift_owners(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::symlink_metadata(path).unwrap();
    std::os::unix::fs::lchown(path, Some(meta.uid() + SHIFT), Some(meta.gid() + SHIFT)).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    // chown clears the setuid and setgid bits: put them back.
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777)).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            shift_owners(&entry.unwrap().path());
        }
    }
}

/// A writable overlay over the cached root, unmounted when dropped.
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    /// The overlay's own directories belong to `owner` (the root of the
    /// merged tree is the upper directory's).
    fn new(lower: &Path, dir: &Path, owner: u32) -> Overlay {
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(owner), Some(owner)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap();
        Overlay { merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, MntFlags::MNT_DETACH);
    }
}

fn debian_xml(name: &str, root: &Path, init: &[&str], extra: &str) -> String {
    let args: String = init[1..]
        .iter()
        .map(|a| format!("<initarg>{a}</initarg>"))
        .collect();
    format!(
        "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name>\
         <memory unit='MiB'>512</memory><os><type>exe</type><init>{}</init>{args}</os>{extra}\
         <devices><filesystem type='mount'><source dir='{}'/><target dir='/'/></filesystem>\
         <console type='pty'/></devices></domain>",
        init[0],
        root.display()
    )
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
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let Some(lower) = debian_root() else { return };
    let overlay = Overlay::new(&lower, &env.dir.path().join("apt"), 0);
    let domain = env
        .define_and_start(&debian_xml(
            "apt",
            &overlay.merged,
            &["/bin/sleep", "infinity"],
            "",
        ))
        .await;
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

/// systemd as init boots to multi-user.target in a container with a user
/// namespace and its own network namespace: it mounts its API file
/// systems (allowed in a user namespace), a fresh sysfs without the
/// host's cgroup mounts lets it mount its own, services start. Two units
/// fail (debugfs and tracefs may not be mounted there), so the system is
/// `degraded`.
#[tokio::test]
async fn systemd_boots_to_multi_user_with_a_user_namespace() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let Some(plain) = debian_root() else { return };
    let lower = shifted_root(&plain);
    let overlay = Overlay::new(&lower, &env.dir.path().join("systemd"), SHIFT);
    let domain = env
        .define_and_start(&debian_xml(
            "systemd",
            &overlay.merged,
            &["/lib/systemd/systemd"],
            &format!("{IDMAP}<features><privnet/></features>"),
        ))
        .await;
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
    domain.destroy().await.unwrap();
}

/// Without a user namespace (today's default) the filter blocks the mount
/// family, and systemd exits at once ("Failed to mount API filesystems").
/// This changes when user namespaces become the default: then this test
/// fails and goes, and the test above runs on defaults.
#[tokio::test]
async fn systemd_cannot_boot_without_a_user_namespace() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let Some(lower) = debian_root() else { return };
    let overlay = Overlay::new(&lower, &env.dir.path().join("blocked"), 0);
    let domain = env
        .define_and_start(&debian_xml(
            "blocked",
            &overlay.merged,
            &["/lib/systemd/systemd"],
            "<features><privnet/></features>",
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while domain.state().await.unwrap() != "shutoff" {
        assert!(Instant::now() < deadline, "systemd is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
