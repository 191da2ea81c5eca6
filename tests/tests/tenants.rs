//! Hostile tenants reaching for the daemon: a container whose root is host
//! root (`<lxvirt:userns mode='host'/>`) and that can reach the bus socket
//! or the daemon's private socket (here bind-mounted in) calls lxvirtd with
//! Debian's own `dbus-send`.
//! The daemon refuses it whatever its uid — also from a pid namespace
//! nested inside — unless the definition's `<lxvirt:api access=…>` lets
//! it read or manage. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::{Path, PathBuf};

use lxvirt_tests::{ContainerEnv, enter_capture};
use lxvirtd::dbus::proxy::DomainProxy;

/// The directory of the test bus's socket, from its address.
fn bus_dir(address: &str) -> PathBuf {
    let path = address
        .split(',')
        .find_map(|part| part.strip_prefix("unix:path="))
        .unwrap_or_else(|| panic!("not a unix:path address: {address}"));
    Path::new(path).parent().unwrap().to_owned()
}

/// A sleeper with host ids, the host's /usr (for dbus-send and glibc), the
/// bus socket's directory at /bus and the daemon's run directory (with its
/// private socket) at /lxrun.
fn xml(env: &ContainerEnv, name: &str, api: &str) -> String {
    format!(
        "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name>\
         <memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>sleep 1000</initarg></os>\
         <lxvirt:userns mode='host'/>{api}<devices>\
         <filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
         <filesystem type='mount'><source dir='/usr'/><target dir='/usr'/><readonly/></filesystem>\
         <filesystem type='mount'><source dir='{bus}'/><target dir='/bus'/></filesystem>\
         <filesystem type='mount'><source dir='{run}'/><target dir='/lxrun'/></filesystem>\
         <console type='pty'/></devices></domain>",
        root = env.rootfs().display(),
        bus = bus_dir(&env.bus.address).display(),
        run = env.run_dir().display(),
    )
}

async fn env() -> Option<ContainerEnv> {
    let env = ContainerEnv::new().await?;
    let root = env.rootfs();
    for dir in ["usr", "bus", "lxrun"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    Some(env)
}

/// How a call from inside reaches lxvirtd.
#[derive(Debug, Clone, Copy)]
enum Via {
    Bus,
    PrivateSocket,
}

/// Runs `dbus-send` inside `domain` (`nested`: in a pid namespace of its
/// own below the container's); returns (exit code, stdout and stderr).
async fn call_from_inside(
    domain: &DomainProxy<'_>,
    nested: bool,
    method: &str,
    args: &[&str],
) -> (i32, String) {
    call_from_inside_via(domain, Via::Bus, nested, method, args).await
}

async fn call_from_inside_via(
    domain: &DomainProxy<'_>,
    via: Via,
    nested: bool,
    method: &str,
    args: &[&str],
) -> (i32, String) {
    let mut argv: Vec<String> = Vec::new();
    if nested {
        argv.extend(["/usr/bin/unshare", "--pid", "--fork", "--"].map(String::from));
    }
    argv.extend(
        [
            "/usr/bin/dbus-send",
            match via {
                Via::Bus => "--bus=unix:path=/bus/bus",
                Via::PrivateSocket => "--peer=unix:path=/lxrun/private",
            },
            "--print-reply",
            "--dest=org.lxvirt.lxvirt1",
            "/org/lxvirt/lxvirt1",
        ]
        .map(String::from),
    );
    argv.push(format!("org.lxvirt.lxvirt1.Manager.{method}"));
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let script = format!("{} 2>&1", shell_words(&argv));
    enter_capture(domain, &["/bin/sh", "-c", &script])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn stray_definition(name: &str) -> String {
    format!(
        "string:<domain type='lxc'><name>{name}</name><memory unit='MiB'>16</memory>\
         <os><type>exe</type><init>/bin/true</init></os><devices>\
         <filesystem type='mount'><source dir='/'/><target dir='/'/></filesystem></devices></domain>"
    )
}

#[tokio::test]
async fn a_container_with_host_root_is_refused_unless_its_definition_allows() {
    let Some(env) = env().await else { return };
    let manager = env.manager().await.unwrap();

    // Without <lxvirt:api>: nothing, not even a read, also when nested.
    let closed = env.define_and_start(&xml(&env, "closed", "")).await;
    for nested in [false, true] {
        let (code, out) = call_from_inside(&closed, nested, "ListDomains", &[]).await;
        assert_ne!(code, 0, "a read from inside was answered: {out}");
        assert!(
            out.contains("AccessDenied") && out.contains("inside container 'closed'"),
            "{out}"
        );
        assert!(
            out.contains("<lxvirt:api access='read'/>"),
            "says what allows it: {out}"
        );
        let (code, out) = call_from_inside(
            &closed,
            nested,
            "DefineXML",
            &[&stray_definition("from-closed")],
        )
        .await;
        assert_ne!(code, 0, "a define from inside was answered: {out}");
        assert!(out.contains("inside container 'closed'"), "{out}");
    }
    assert!(
        manager.lookup_by_name("from-closed").await.is_err(),
        "the refused define changed nothing"
    );

    // access='read': reads answered, a define refused.
    let reader = env
        .define_and_start(&xml(&env, "reader", "<lxvirt:api access='read'/>"))
        .await;
    let (code, out) = call_from_inside(&reader, false, "ListDomains", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/org/lxvirt/lxvirt1/domain/"), "{out}");
    let (code, out) = call_from_inside(
        &reader,
        true,
        "DefineXML",
        &[&stray_definition("from-reader")],
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("inside container 'reader'") && out.contains("reads only"),
        "{out}"
    );
    assert!(manager.lookup_by_name("from-reader").await.is_err());

    // access='manage': what its uid (host root) may do.
    let admin = env
        .define_and_start(&xml(&env, "admin", "<lxvirt:api access='manage'/>"))
        .await;
    let (code, out) = call_from_inside(
        &admin,
        false,
        "DefineXML",
        &[&stray_definition("from-admin")],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    manager
        .lookup_by_name("from-admin")
        .await
        .expect("defined from inside the managing container");

    // Once the closed container is gone, its pid namespace is no longer
    // marked: the host itself is unaffected throughout.
    closed.destroy().await.unwrap();
    assert!(manager.list_domains().await.unwrap().len() >= 4);
    for domain in [&reader, &admin] {
        domain.destroy().await.unwrap();
    }
}

/// The private socket (root's, here bind-mounted into containers whose root
/// is host root) checks its callers as the bus does: by the pid the socket
/// reports.
#[tokio::test]
async fn a_container_reaching_the_private_socket_is_refused_the_same_way() {
    let Some(env) = env().await else { return };
    let manager = env.manager().await.unwrap();
    let closed = env.define_and_start(&xml(&env, "closed", "")).await;
    for nested in [false, true] {
        let (code, out) =
            call_from_inside_via(&closed, Via::PrivateSocket, nested, "ListDomains", &[]).await;
        assert_ne!(code, 0, "a read from inside was answered: {out}");
        assert!(
            out.contains("AccessDenied") && out.contains("inside container 'closed'"),
            "{out}"
        );
        let (code, out) = call_from_inside_via(
            &closed,
            Via::PrivateSocket,
            nested,
            "StartDomain",
            &["string:closed"],
        )
        .await;
        assert_ne!(code, 0, "a state change from inside was answered: {out}");
        assert!(out.contains("inside container 'closed'"), "{out}");
    }
    let reader = env
        .define_and_start(&xml(&env, "reader", "<lxvirt:api access='read'/>"))
        .await;
    let (code, out) =
        call_from_inside_via(&reader, Via::PrivateSocket, false, "ListDomains", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/org/lxvirt/lxvirt1/domain/"), "{out}");
    let (code, out) = call_from_inside_via(
        &reader,
        Via::PrivateSocket,
        false,
        "DestroyDomain",
        &["string:closed"],
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("reads only"), "{out}");
    assert_eq!(
        manager.list_domains().await.unwrap().len(),
        2,
        "nothing changed"
    );
    for domain in [&closed, &reader] {
        assert_eq!(domain.state().await.unwrap(), "running");
        domain.destroy().await.unwrap();
    }
}
