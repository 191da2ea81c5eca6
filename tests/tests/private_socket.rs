//! The daemon's private socket (`<run-dir>/private`): the manager's API
//! peer to peer, for root. Real daemon, real socket; the calls come from
//! zbus and from Debian's own `dbus-send --peer`. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use lxvirt_tests::{ContainerEnv, as_nobody, lxvirt};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

/// A peer-to-peer connection to the private socket at `path`.
async fn peer(path: &Path) -> zbus::Connection {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await
        .unwrap()
}

/// `dbus-send --peer` reading the manager's `Version` on `path`.
fn dbus_send_version(path: &Path) -> Vec<String> {
    vec![
        format!("--peer=unix:path={}", path.display()),
        "--print-reply".into(),
        "/org/lxvirt/lxvirt1".into(),
        "org.freedesktop.DBus.Properties.Get".into(),
        "string:org.lxvirt.lxvirt1.Manager".into(),
        "string:Version".into(),
    ]
}

#[tokio::test]
async fn root_starts_and_destroys_by_name_on_the_private_socket_and_nobody_else_connects() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let socket = env.run_dir().join("private");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.uid(), 0, "the private socket is root's");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "and root's alone");

    let manager = env.manager().await.unwrap();
    manager
        .define_xml(&env.busybox_xml("p2p", "sleep 1000", ""))
        .await
        .unwrap();
    let connection = peer(&socket).await;
    let private = ManagerProxy::new(&connection).await.unwrap();
    assert_eq!(
        private.version().await.unwrap(),
        manager.version().await.unwrap()
    );

    private.start_domain("p2p").await.unwrap();
    // Read without a cache: the bus's signals are not ordered with the
    // private socket's replies, a fresh Get is.
    let domain = DomainProxy::builder(&env.connection)
        .path(manager.lookup_by_name("p2p").await.unwrap())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert_eq!(domain.state().await.unwrap(), "running");
    // A second start is refused with the same typed error as on the bus.
    let again = private.start_domain("p2p").await.unwrap_err();
    assert!(
        again.to_string().contains("running"),
        "start of a running domain: {again}"
    );
    let unknown = private.start_domain("no-such-domain").await.unwrap_err();
    assert!(
        matches!(&unknown, zbus::Error::MethodError(name, ..) if name.as_str() == "org.lxvirt.lxvirt1.Error.NoSuchDomain"),
        "{unknown}"
    );
    private.destroy_domain("p2p").await.unwrap();
    assert_eq!(domain.state().await.unwrap(), "shutoff");

    // A client of another implementation reads it too; a user who is not
    // root cannot even connect.
    let args = dbus_send_version(&socket);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = std::process::Command::new("dbus-send")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        root.status.success() && String::from_utf8_lossy(&root.stdout).contains("string \""),
        "dbus-send --peer as root: {}",
        String::from_utf8_lossy(&root.stderr)
    );
    let nobody = as_nobody(Path::new("/usr/bin/dbus-send"), &args).unwrap();
    assert!(
        !nobody.status.success(),
        "nobody reached the private socket"
    );
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
}

#[tokio::test]
async fn the_private_socket_is_replaced_after_a_kill_and_removed_at_a_stop() {
    let Some(mut env) = ContainerEnv::new().await else {
        return;
    };
    let socket = env.run_dir().join("private");
    let before = std::fs::metadata(&socket).unwrap().ino();
    env.crash_and_restart().await.unwrap();
    let after = std::fs::metadata(&socket).unwrap();
    assert_ne!(after.ino(), before, "a new socket in place of the dead one");
    assert_eq!(after.permissions().mode() & 0o777, 0o600);
    let connection = peer(&socket).await;
    let private = ManagerProxy::new(&connection).await.unwrap();
    assert!(!private.version().await.unwrap().is_empty());
    // A daemon that stops removes it: clients go to the bus at once.
    drop(connection);
    assert!(env.daemon.stop().unwrap().success());
    assert!(!socket.exists(), "the private socket outlived its daemon");
}

#[tokio::test]
async fn the_cli_lists_and_changes_state_by_name_on_the_private_socket_without_the_bus() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let manager = env.manager().await.unwrap();
    manager
        .define_xml(&env.busybox_xml("cli-p2p", "sleep 1000", ""))
        .await
        .unwrap();
    let socket = format!("--socket={}", env.run_dir().join("private").display());
    // No bus at this address: only the private socket can answer.
    let nowhere = "unix:path=/nonexistent/lxvirt-test-bus";
    for (verb, state) in [
        ("start", "running"),
        ("suspend", "paused"),
        ("resume", "running"),
        ("destroy", "shutoff"),
    ] {
        let out = lxvirt(nowhere, &[&socket, verb, "cli-p2p"]).unwrap();
        assert!(
            out.status.success(),
            "lxvirt {verb} on the private socket: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = lxvirt(&env.bus.address, &["domstate", "cli-p2p"]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&read.stdout).trim(),
            state,
            "after {verb}"
        );
    }
    let list = lxvirt(nowhere, &[&socket, "list", "--all"]).unwrap();
    assert!(
        list.status.success() && String::from_utf8_lossy(&list.stdout).contains("cli-p2p"),
        "lxvirt list on the private socket: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    // Typed refusals come through as on the bus.
    let unknown = lxvirt(nowhere, &[&socket, "start", "no-such-domain"]).unwrap();
    assert_eq!(unknown.status.code(), Some(5), "no such domain is exit 5");
    // A socket named but not there is exit 3, naming it.
    let missing = lxvirt(
        &env.bus.address,
        &["--socket=/nonexistent/private", "start", "cli-p2p"],
    )
    .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/private"));
}
