//! Devices attached to, updated in and detached from running containers
//! through the CLI and a real daemon: a host directory and a directory of
//! the container's mounted into its mount namespace (and out again), a
//! block disk (a loop device) and a misc host device (`/dev/net/tun`)
//! whose nodes appear in its /dev and whose access the devices cgroup
//! grants and takes back; `<readonly/>` changed in place; the live XML
//! and, with --config, the definition follow. Both in a user namespace
//! (the default) and without one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use lxvirt_tests::{ContainerEnv, lxvirt_said};

fn run(env: &ContainerEnv, args: &[&str]) -> (bool, String) {
    lxvirt_said(&env.bus.address, args)
}

fn ok(env: &ContainerEnv, args: &[&str]) -> String {
    let (ok, out) = run(env, args);
    assert!(ok, "lxvirt {args:?}: {out}");
    out
}

/// Writes `xml` to a file of the test's and runs `lxvirt VERB DOMAIN FILE
/// FLAGS…`.
fn device(
    env: &ContainerEnv,
    verb: &str,
    domain: &str,
    xml: &str,
    flags: &[&str],
) -> (bool, String) {
    let file = env.dir.path().join("device.xml");
    fs::write(&file, xml).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let mut args = vec![verb, domain, file.as_str()];
    args.extend_from_slice(flags);
    run(env, &args)
}

/// A loop device over a file of 1 MiB that starts with `marker`; detached
/// on drop.
struct LoopDevice(String);

impl LoopDevice {
    fn new(dir: &Path, marker: &str) -> LoopDevice {
        let image = dir.join("disk.img");
        let mut data = marker.as_bytes().to_vec();
        data.resize(1 << 20, 0);
        fs::write(&image, data).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        LoopDevice(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    /// `b MAJ:MIN`, as devices.list names it.
    fn rule(&self) -> String {
        let out = Command::new("stat")
            .args(["-c", "%t %T", &self.0])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut numbers = text
            .split_whitespace()
            .map(|n| u32::from_str_radix(n, 16).unwrap());
        format!("b {}:{}", numbers.next().unwrap(), numbers.next().unwrap())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// The container's v1 device allow-list, if this host has that hierarchy.
fn devices_list(env: &ContainerEnv, name: &str) -> Option<String> {
    fs::read_to_string(env.daemon.cgroup_dir("devices", name).join("devices.list")).ok()
}

async fn hotplug_in(env: &ContainerEnv, name: &str, extra: &str) {
    let domain = env.start(name, "sleep 100000", extra).await;
    let host_dir = env.dir.path().join(format!("{name}-shared"));
    fs::create_dir_all(&host_dir).unwrap();
    fs::write(host_dir.join("hello"), "from the host\n").unwrap();
    // Anyone may write, so that only the mount's read-only flag stops
    // root inside (a user namespace maps the host's owner away).
    fs::set_permissions(&host_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let mount = format!(
        "<filesystem type='mount'><source dir='{}'/><target dir='/mnt/hot/shared'/></filesystem>",
        host_dir.display()
    );
    let mount_ro = mount.replace("</filesystem>", "<readonly/></filesystem>");

    // A host directory, mounted live and in the definition.
    let (done, out) = device(env, "attach-device", name, &mount, &["--live", "--config"]);
    assert!(done, "{out}");
    assert!(out.contains("Device attached successfully"), "{out}");
    let (code, seen) = env.enter(&domain, &["cat", "/mnt/hot/shared/hello"]).await;
    assert_eq!((code, seen.as_str()), (0, "from the host\n"));
    let (code, _) = env
        .enter(&domain, &["touch", "/mnt/hot/shared/made-inside"])
        .await;
    assert_eq!(code, 0, "the mount is writable");
    assert!(host_dir.join("made-inside").exists());
    for xml in [
        ok(env, &["dumpxml", name]),
        ok(env, &["dumpxml", "--inactive", name]),
    ] {
        assert!(xml.contains("<target dir='/mnt/hot/shared'/>"), "{xml}");
    }
    // Read-only in place, then writable again.
    let (done, out) = device(env, "update-device", name, &mount_ro, &[]);
    assert!(done, "{out}");
    let (code, _) = env
        .enter(&domain, &["touch", "/mnt/hot/shared/refused"])
        .await;
    assert_ne!(code, 0, "a read-only mount took a write");
    assert!(ok(env, &["dumpxml", name]).contains("<readonly/>"));
    assert!(!ok(env, &["dumpxml", "--inactive", name]).contains("<readonly/>"));
    let (done, out) = device(env, "update-device", name, &mount, &[]);
    assert!(done, "{out}");
    let (code, _) = env
        .enter(&domain, &["touch", "/mnt/hot/shared/again"])
        .await;
    assert_eq!(code, 0, "writable again");
    // Anything but <readonly/> needs a detach and an attach.
    let moved = mount.replace(&host_dir.display().to_string(), "/srv");
    let (done, out) = device(env, "update-device", name, &moved, &["--live"]);
    assert!(
        !done && out.contains("changed but for <readonly/>"),
        "{out}"
    );

    // A directory of the container's own, bound elsewhere in it.
    let bind = "<filesystem type='bind'><source dir='/etc'/><target dir='/mnt/etc'/><readonly/></filesystem>";
    let (done, out) = device(env, "attach-device", name, bind, &[]);
    assert!(done, "{out}");
    let (code, mounts) = env.enter(&domain, &["cat", "/proc/self/mounts"]).await;
    assert_eq!(code, 0);
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /mnt/etc ") && l.contains(" ro,")),
        "{mounts}"
    );
    let (code, _) = env.enter(&domain, &["test", "-f", "/mnt/etc/passwd"]).await;
    assert_eq!(code, 0);

    // A block disk: its node in /dev, its access granted.
    let disk = LoopDevice::new(env.dir.path(), &format!("marker of {name}"));
    let disk_xml = format!(
        "<disk type='block' device='disk'><source dev='{}'/><target dev='sdz'/></disk>",
        disk.0
    );
    let (done, out) = device(env, "attach-device", name, &disk_xml, &[]);
    assert!(done, "{out}");
    let (code, head) = env.enter(&domain, &["head", "-c", "14", "/dev/sdz"]).await;
    assert_eq!(
        (code, head.as_str()),
        (0, format!("marker of {name}").get(..14).unwrap())
    );
    if let Some(list) = devices_list(env, name) {
        assert!(list.contains(&format!("{} rwm", disk.rule())), "{list}");
    }
    // Read-only: a write is refused by the devices controller.
    let disk_ro = disk_xml.replace("</disk>", "<readonly/></disk>");
    let (done, out) = device(env, "update-device", name, &disk_ro, &[]);
    assert!(done, "{out}");
    let (code, _) = env.enter(&domain, &["sh", "-c", "echo x > /dev/sdz"]).await;
    assert_ne!(code, 0, "a read-only disk took a write");
    let (code, _) = env.enter(&domain, &["head", "-c", "1", "/dev/sdz"]).await;
    assert_eq!(code, 0, "still readable");

    // A misc host device.
    let tun = "<hostdev mode='capabilities' type='misc'><source><char>/dev/net/tun</char></source></hostdev>";
    let (code, out) = env.enter(&domain, &["cat", "/dev/net/tun"]).await;
    assert_ne!(code, 0, "no tun before the attach: {out}");
    let (done, out) = device(env, "attach-device", name, tun, &[]);
    assert!(done, "{out}");
    let (code, listing) = env.enter(&domain, &["ls", "-l", "/dev/net/tun"]).await;
    assert_eq!(code, 0, "{listing}");
    assert!(listing.starts_with('c'), "{listing}");
    let live = ok(env, &["dumpxml", name]);
    assert!(
        live.contains("<char>/dev/net/tun</char>") && live.contains("<target dev='sdz'/>"),
        "{live}"
    );
    assert!(!ok(env, &["dumpxml", "--inactive", name]).contains("sdz"));

    // Out again: nodes gone, access taken back, mounts gone.
    for xml in [disk_xml.as_str(), tun, bind, mount.as_str()] {
        let (done, out) = device(env, "detach-device", name, xml, &[]);
        assert!(done, "{xml}: {out}");
    }
    if let Some(list) = devices_list(env, name) {
        assert!(!list.contains(&disk.rule()), "{list}");
        assert!(!list.contains("c 10:200"), "{list}");
    }
    let (code, _) = env.enter(&domain, &["test", "-e", "/dev/sdz"]).await;
    assert_ne!(code, 0, "the disk's node stayed");
    let (code, _) = env.enter(&domain, &["test", "-e", "/dev/net/tun"]).await;
    assert_ne!(code, 0, "the tun node stayed");
    let (_, mounts) = env.enter(&domain, &["cat", "/proc/self/mounts"]).await;
    assert!(
        !mounts.contains("/mnt/hot/shared") && !mounts.contains("/mnt/etc"),
        "{mounts}"
    );
    let live = ok(env, &["dumpxml", name]);
    assert!(
        !live.contains("/mnt/hot") && !live.contains("hostdev") && !live.contains("sdz"),
        "{live}"
    );
    // The definition kept what --config gave it.
    assert!(ok(env, &["dumpxml", "--inactive", name]).contains("/mnt/hot/shared"));
    // Detaching what is not there names it.
    let (done, out) = device(env, "detach-device", name, &disk_xml, &[]);
    assert!(
        !done && out.contains("no <disk> with target 'sdz'"),
        "{out}"
    );
    domain.destroy().await.unwrap();
}

#[tokio::test]
async fn devices_come_and_go_in_a_running_container_with_a_user_namespace() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    hotplug_in(&env, "hotns", "").await;
}

#[tokio::test]
async fn devices_come_and_go_in_a_running_container_without_one() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    hotplug_in(&env, "hothost", "<lxvirt:userns mode='host'/>").await;
}

#[tokio::test]
async fn what_cannot_change_live_is_refused_and_nothing_changes() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let _domain = env.start("hotno", "sleep 100000", "").await;
    let before = ok(&env, &["dumpxml", "hotno"]);
    for (xml, expected) in [
        (
            "<filesystem type='ram'><source usage='1024'/><target dir='/mnt/ram'/></filesystem>",
            "<filesystem type='ram'> cannot be attached while the container runs",
        ),
        (
            "<hostdev mode='capabilities' type='net'><source><interface>lo</interface></source></hostdev>",
            "moved in at start",
        ),
        (
            "<disk type='block' device='disk'><source dev='/nonexistent'/><target dev='sdy'/></disk>",
            "/nonexistent",
        ),
        (
            "<filesystem type='mount'><source dir='/nonexistent'/><target dir='/mnt/x'/></filesystem>",
            "/nonexistent",
        ),
    ] {
        let (done, out) = device(&env, "attach-device", "hotno", xml, &["--live", "--config"]);
        assert!(!done && out.contains(expected), "{xml}: {out}");
    }
    assert_eq!(ok(&env, &["dumpxml", "hotno"]), before);
    assert!(!ok(&env, &["dumpxml", "--inactive", "hotno"]).contains("/mnt/"));
}
