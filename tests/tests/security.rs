//! sVirt through the real daemon on a host WITHOUT SELinux (this machine
//! kind): a domain that needs SELinux fails with
//! `Error.SecurityUnavailable` and leaves nothing behind; a domain without
//! `<seclabel>` runs unconfined and says so in its live XML. The enforcing
//! side is the nested-VM harness (tests/vm). Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

use lxvirt_tests::{TestBus, TestDaemon, busybox_root, lxvirt, root_or_skip, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

fn error_name(error: &zbus::Error) -> (String, String) {
    match error {
        zbus::Error::MethodError(name, message, _) => {
            (name.to_string(), message.clone().unwrap_or_default())
        }
        other => (format!("other:{other}"), String::new()),
    }
}

fn xml(name: &str, root: &Path, seclabel: &str) -> String {
    format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>sleep 1000</initarg></os>\
         {seclabel}<devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
         <console type='pty'/></devices></domain>",
        root = root.display()
    )
}

/// Whether this host has SELinux enabled (then these tests do not apply).
async fn selinux_here(manager: &ManagerProxy<'_>) -> bool {
    let caps = manager.get_capabilities().await.unwrap();
    caps.contains("<secmodel model='selinux' available='yes'")
}

/// Files the daemon keeps per running domain in its run directory.
fn run_files(run_dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(run_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with(&format!("{name}.")))
        // The monitor's log stays until the domain is undefined.
        .filter(|f| !f.ends_with(".log"))
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn selinux_domains_fail_clearly_without_selinux_and_others_run_unconfined() {
    if !root_or_skip() {
        return;
    }
    let bus = TestBus::start().unwrap();
    let dir = shared_tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let _daemon = TestDaemon::start(&bus, dir.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    if selinux_here(&manager).await {
        println!("skipped: SELinux is enabled on this host; the VM harness covers it");
        return;
    }
    let domain = |path| async {
        DomainProxy::builder(&connection)
            .path(path)
            .build()
            .await
            .unwrap()
    };
    let run_dir = dir.path().join("run");

    // The capabilities say why.
    let caps = manager.get_capabilities().await.unwrap();
    assert!(
        caps.contains("<secmodel model='selinux' available='no' mode='disabled' reason="),
        "{caps}"
    );
    assert!(caps.contains("<secmodel model='none' available='yes' default='yes'/>"));

    // A dynamic SELinux label cannot start here.
    let confined = domain(
        manager
            .define_xml(&xml(
                "confined",
                &rootfs,
                "<seclabel type='dynamic' model='selinux'/>",
            ))
            .await
            .unwrap(),
    )
    .await;
    let err = confined.start().await.unwrap_err();
    let (name, message) = error_name(&err);
    assert_eq!(
        name, "org.lxvirt.lxvirt1.Error.SecurityUnavailable",
        "{err}"
    );
    assert!(message.contains("domain 'confined'"), "{message}");
    assert!(
        message.contains("use <seclabel type='none'/>"),
        "the fix is named: {message}"
    );
    assert_eq!(confined.state().await.unwrap(), "shutoff");
    assert_eq!(confined.security_label().await.unwrap(), "");
    assert!(run_files(&run_dir, "confined").is_empty());
    assert!(
        mounts_under(dir.path()).is_empty(),
        "{:?}",
        mounts_under(dir.path())
    );
    // The persistent definition is untouched.
    let inactive = confined.get_xml(2).await.unwrap();
    assert!(
        inactive.contains("<seclabel type='dynamic' model='selinux' relabel='yes'/>"),
        "{inactive}"
    );

    // So does a static label, and a transient domain is forgotten again.
    let err = manager
        .create_xml(&xml(
            "static",
            &rootfs,
            "<seclabel type='static'><label>system_u:system_r:svirt_lxc_net_t:s0:c1,c2</label></seclabel>",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&err).0,
        "org.lxvirt.lxvirt1.Error.SecurityUnavailable"
    );
    assert!(manager.lookup_by_name("static").await.is_err());
    assert!(run_files(&run_dir, "static").is_empty());

    // Without <seclabel>: unconfined, and the live XML says so.
    let plain = domain(
        manager
            .define_xml(&xml("plain", &rootfs, ""))
            .await
            .unwrap(),
    )
    .await;
    plain.start().await.unwrap();
    assert_eq!(plain.state().await.unwrap(), "running");
    let live = plain.get_xml(0).await.unwrap();
    assert!(live.contains("<seclabel type='none'/>"), "{live}");
    assert!(!plain.get_xml(2).await.unwrap().contains("seclabel"));
    assert_eq!(plain.security_label().await.unwrap(), "");
    let out = lxvirt(&bus.address, &["list"]).unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().next().unwrap().ends_with("Label"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.trim_start().starts_with("plain") && l.ends_with(" -")),
        "{list}"
    );
    let out = lxvirt(&bus.address, &["dominfo", "plain"]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Security label: -"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // enter --noseclabel still works (there is no label to skip).
    let out = lxvirt(
        &bus.address,
        &["enter", "--noseclabel", "plain", "--", "/bin/true"],
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // type='none' explicitly: the same.
    let none = domain(
        manager
            .define_xml(&xml("none", &rootfs, "<seclabel type='none'/>"))
            .await
            .unwrap(),
    )
    .await;
    none.start().await.unwrap();
    assert!(
        none.get_xml(0)
            .await
            .unwrap()
            .contains("<seclabel type='none'/>")
    );
    none.destroy().await.unwrap();
    plain.destroy().await.unwrap();
    let left = run_files(&run_dir, "plain");
    assert!(left.is_empty(), "{left:?}");
}
