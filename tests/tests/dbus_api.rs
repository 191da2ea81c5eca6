//! The D-Bus API of the real `lxvirtd` on a real `dbus-daemon` configured
//! with lxvirt's policy file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::HashMap;
use std::fs;

use futures_util::StreamExt;
use lxvirt_tests::{TestBus, TestDaemon, example_files, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy, NetworkProxy};
use lxvirtd::dbus::{
    DOMAIN_INTERFACE, IMAGES_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH, NETWORK_INTERFACE,
};

const APP: &str = "<domain type='lxc'><name>app</name><memory unit='MiB'>64</memory>\
    <os><type>exe</type><init>/bin/sh</init></os><devices><console type='pty'/></devices></domain>";

fn error_name(error: &zbus::Error) -> String {
    match error {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(e) => format!("fdo:{e}"),
        other => format!("other:{other}"),
    }
}

/// Setting `Autostart` of a domain or network proxy emits one change.
macro_rules! autostart_is_announced {
    ($proxy:expr) => {
        let mut autostart = $proxy.receive_autostart_changed().await;
        let _ = autostart.next().await; // the current value
        $proxy.set_autostart(true).await.unwrap();
        let changed = autostart.next().await.unwrap();
        assert!(changed.get().await.unwrap());
    };
}

/// The next `Lifecycle` signal on a stream of a domain or network proxy.
macro_rules! next_lifecycle {
    ($stream:expr, $event:expr, $detail:expr) => {
        let signal = $stream.next().await.unwrap();
        let args = signal.args().unwrap();
        assert_eq!((*args.event(), *args.detail()), ($event, $detail));
    };
}

/// The ObjectManager and its signals, watched from before a test's first
/// change.
struct Announcements<'a> {
    proxy: zbus::fdo::ObjectManagerProxy<'a>,
    added: zbus::fdo::InterfacesAddedStream,
    removed: zbus::fdo::InterfacesRemovedStream,
}

impl Announcements<'_> {
    async fn new(connection: &zbus::Connection) -> Self {
        let proxy = zbus::fdo::ObjectManagerProxy::builder(connection)
            .destination(lxvirtd::dbus::BUS_NAME)
            .path(MANAGER_PATH)
            .build()
            .await
            .unwrap();
        let added = proxy.receive_interfaces_added().await.unwrap();
        let removed = proxy.receive_interfaces_removed().await.unwrap();
        Announcements {
            proxy,
            added,
            removed,
        }
    }

    /// The next object announced is `path`, with `interface`.
    async fn added(&mut self, path: &zbus::OwnedObjectPath, interface: &str) {
        let signal = self.added.next().await.unwrap();
        let args = signal.args().unwrap();
        assert_eq!(args.object_path().as_str(), path.as_str());
        assert!(args.interfaces_and_properties().contains_key(interface));
    }

    /// The next object removed is `path`.
    async fn removed(&mut self, path: &zbus::OwnedObjectPath) {
        let signal = self.removed.next().await.unwrap();
        assert_eq!(signal.args().unwrap().object_path().as_str(), path.as_str());
    }
}

const LAN: &str = "<network><name>lan</name><ip address='192.168.150.1' prefix='24'/></network>";

async fn network<'a>(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> NetworkProxy<'a> {
    NetworkProxy::builder(connection)
        .path(path)
        .build()
        .await
        .unwrap()
}

async fn domain<'a>(connection: &zbus::Connection, path: zbus::OwnedObjectPath) -> DomainProxy<'a> {
    DomainProxy::builder(connection)
        .path(path)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn define_list_lookup_getxml_undefine() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();

    let path = manager.define_xml(APP).await.unwrap();
    assert!(path.as_str().starts_with("/org/lxvirt/lxvirt1/domain/_"));
    let app = domain(&connection, path.clone()).await;
    assert_eq!(app.name().await.unwrap(), "app");
    assert_eq!(app.type_().await.unwrap(), "lxc");
    assert_eq!(app.state().await.unwrap(), "shutoff");
    assert_eq!(app.state_reason().await.unwrap(), "unknown");
    assert!(app.persistent().await.unwrap());
    assert!(!app.autostart().await.unwrap());
    let uuid = app.uuid().await.unwrap();
    assert_eq!(manager.lookup_by_name("app").await.unwrap(), path);
    assert_eq!(manager.lookup_by_uuid(&uuid).await.unwrap(), path);
    assert_eq!(manager.list_domains().await.unwrap(), vec![path.clone()]);
    // The same properties, one struct per domain.
    let records = manager.list_domain_summaries().await.unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.path, path);
    assert_eq!(record.uuid, uuid);
    assert_eq!(record.name, "app");
    assert_eq!(record.domain_type, "lxc");
    assert_eq!(
        (record.state.as_str(), record.state_reason.as_str()),
        ("shutoff", "unknown")
    );
    assert!(record.persistent && !record.autostart);
    assert_eq!(
        (record.pid, record.start_time, record.host_ids),
        (0, 0, (0, 0))
    );
    assert_eq!(record.user_namespace, app.user_namespace().await.unwrap());

    // The stored file is the canonical XML, and defining it again is a no-op update.
    let xml = app.get_xml(0).await.unwrap();
    let stored = fs::read_to_string(root.path().join("etc/domains/app.xml")).unwrap();
    assert_eq!(xml, stored);
    assert_eq!(manager.define_xml(&xml).await.unwrap(), path);
    assert_eq!(app.get_xml(0).await.unwrap(), xml);
    // Without <uuid>, the same name updates the same domain (idempotent apply).
    assert_eq!(manager.define_xml(APP).await.unwrap(), path);

    app.set_autostart(true).await.unwrap();
    assert!(app.autostart().await.unwrap());
    assert!(root.path().join("etc/autostart/app").exists());

    app.undefine(0).await.unwrap();
    assert!(manager.list_domains().await.unwrap().is_empty());
    assert!(!root.path().join("etc/domains/app.xml").exists());
    assert!(!root.path().join("etc/autostart/app").exists());
    let err = manager.lookup_by_name("app").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchDomain");
}

#[tokio::test]
async fn errors_are_typed() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();

    let err = manager
        .define_xml("<domain type='lxc'><name>x</nam")
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidXml");
    let err = manager.lookup_by_name("nope").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchDomain");
    assert!(err.to_string().contains("'nope'"), "{err}");
    let err = manager.lookup_by_uuid("not-a-uuid").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidArgument");

    let first = manager
        .define_xml(&APP.replace(
            "<name>app</name>",
            "<name>app</name><uuid>11111111-2222-3333-4444-555555555555</uuid>",
        ))
        .await
        .unwrap();
    // Same name, another uuid.
    let err = manager
        .define_xml(&APP.replace(
            "<name>app</name>",
            "<name>app</name><uuid>11111111-2222-3333-4444-666666666666</uuid>",
        ))
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.AlreadyExists");
    // Same uuid, another name.
    let err = manager
        .define_xml(&APP.replace(
            "<name>app</name>",
            "<name>other</name><uuid>11111111-2222-3333-4444-555555555555</uuid>",
        ))
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.AlreadyExists");
    assert!(err.to_string().contains("'app'"), "{err}");

    let app = domain(&connection, first).await;
    let err = app.get_xml(0x80).await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidArgument");

    // A kvm domain where KVM cannot run a stock guest (this machine kind)
    // is stored and listed, and its start refused with the reason.
    let kvm = fs::read_to_string(
        lxvirt_tests::repo_root().join("xml-schemas/examples/kvm-direct-kernel.xml"),
    )
    .unwrap();
    let kvm_path = manager.define_xml(&kvm).await.unwrap();
    let kvm = domain(&connection, kvm_path).await;
    assert_eq!(kvm.type_().await.unwrap(), "kvm");
    if lxvirtd::qemu::host::kvm_unavailable(&lxvirtd::host::HostPaths::default()).is_some() {
        let err = kvm.start().await.unwrap_err();
        assert_eq!(
            error_name(&err),
            "org.lxvirt.lxvirt1.Error.DriverUnavailable"
        );
        assert!(err.to_string().contains("KVM is not usable"), "{err}");
    }
    assert_eq!(manager.list_domains().await.unwrap().len(), 2);
}

#[tokio::test]
async fn examples_round_trip_through_the_daemon() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let files = example_files();
    assert!(files.len() >= 5, "examples missing: {files:?}");
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let path = manager
            .define_xml(&text)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let proxy = domain(&connection, path.clone()).await;
        let dumped = proxy.get_xml(0).await.unwrap();
        // define → dumpxml → define is a fixed point.
        assert_eq!(manager.define_xml(&dumped).await.unwrap(), path);
        assert_eq!(
            proxy.get_xml(0).await.unwrap(),
            dumped,
            "{}",
            file.display()
        );
    }
}

#[tokio::test]
async fn signals_announce_domains_and_changes() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let mut announced = Announcements::new(&connection).await;

    let path = manager.define_xml(APP).await.unwrap();
    announced.added(&path, DOMAIN_INTERFACE).await;

    let app = domain(&connection, path.clone()).await;
    let mut lifecycle = app.receive_lifecycle().await.unwrap();
    autostart_is_announced!(app);

    manager.define_xml(APP).await.unwrap();
    next_lifecycle!(lifecycle, "defined", "updated");

    // GetManagedObjects returns every domain with its properties in one call.
    let objects = announced.proxy.get_managed_objects().await.unwrap();
    let props: &HashMap<String, zbus::OwnedVariant> = &objects[&path][DOMAIN_INTERFACE];
    assert_eq!(String::try_from(props["Name"].clone()).unwrap(), "app");
    assert!(
        objects
            .keys()
            .all(|p| p.as_str() != MANAGER_PATH || objects[p].contains_key(MANAGER_INTERFACE))
    );

    app.undefine(0).await.unwrap();
    announced.removed(&path).await;
}

/// The daemon writes `GetManagedObjects` from its own table of properties
/// (not through each object's getters): both must give the same values, for
/// a running domain, a defined one and a network.
#[tokio::test]
async fn managed_objects_match_each_objects_properties() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let rootfs = root.path().join("rootfs");
    lxvirt_tests::busybox_root(&rootfs);
    let running = manager
        .define_xml(&lxvirt_tests::sleeper_xml("om-running", &rootfs))
        .await
        .unwrap();
    domain(&connection, running.clone())
        .await
        .start()
        .await
        .unwrap();
    let defined = manager.define_xml(APP).await.unwrap();
    let network = manager.network_define_xml(LAN).await.unwrap();

    let om = zbus::fdo::ObjectManagerProxy::builder(&connection)
        .destination(lxvirtd::dbus::BUS_NAME)
        .path(MANAGER_PATH)
        .build()
        .await
        .unwrap();
    let objects = om.get_managed_objects().await.unwrap();
    assert_eq!(objects.len(), 3, "{objects:?}");
    for (path, interface) in [
        (&running, DOMAIN_INTERFACE),
        (&defined, DOMAIN_INTERFACE),
        (&network, NETWORK_INTERFACE),
    ] {
        let listed = &objects[path];
        assert_eq!(listed.len(), 1, "{path}: {listed:?}");
        let properties = zbus::fdo::PropertiesProxy::builder(&connection)
            .destination(lxvirtd::dbus::BUS_NAME)
            .path(path.clone())
            .build()
            .await
            .unwrap();
        let name = zbus::names::InterfaceName::try_from(interface).unwrap();
        let got = properties.get_all(name).await.unwrap();
        assert_eq!(listed[interface], got, "{path}");
    }
    let state = &objects[&running][DOMAIN_INTERFACE]["State"];
    assert_eq!(String::try_from(state.clone()).unwrap(), "running");

    domain(&connection, running).await.destroy().await.unwrap();
}

#[tokio::test]
async fn introspection_matches_the_committed_contract() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let path = manager.define_xml(APP).await.unwrap();
    let network = manager.network_define_xml(LAN).await.unwrap();

    let committed = lxvirt_tests::interfaces_of(lxvirtd::dbus::INTROSPECTION_XML);
    let mut live = lxvirt_tests::interfaces_of(
        &lxvirt_tests::introspect(&connection, MANAGER_PATH)
            .await
            .unwrap(),
    );
    for object in [&path, &network, &collection_path().try_into().unwrap()] {
        live.extend(lxvirt_tests::interfaces_of(
            &lxvirt_tests::introspect(&connection, object.as_str())
                .await
                .unwrap(),
        ));
    }
    for name in [
        MANAGER_INTERFACE,
        IMAGES_INTERFACE,
        DOMAIN_INTERFACE,
        NETWORK_INTERFACE,
        "org.lxvirt.lxvirt1.Collection",
    ] {
        assert_eq!(
            live.get(name),
            committed.get(name),
            "interface {name} differs from daemon/data/org.lxvirt.lxvirt1.xml; update the contract deliberately"
        );
    }
    assert!(live.contains_key("org.freedesktop.DBus.ObjectManager"));
}

fn collection_path() -> String {
    format!("{MANAGER_PATH}/domain")
}

/// The interfaces and the child nodes an `Introspect` reply names.
fn interfaces_and_children(xml: &str) -> (usize, Vec<String>) {
    let interfaces = xml.matches("<interface name=").count();
    let children = xml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<node name=\""))
        .filter_map(|l| l.strip_suffix("\"/>"))
        .map(str::to_owned)
        .collect();
    (interfaces, children)
}

/// Introspection of the nodes above the objects names their children
/// without describing them (zbus's own answer describes the whole subtree:
/// with thousands of domains, more than the bus accepts in one message), and
/// stays so after the last domain is gone and a new one comes.
#[tokio::test]
async fn introspection_is_one_level_deep() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let introspect = |path: String| {
        let connection = connection.clone();
        async move {
            let xml = lxvirt_tests::introspect(&connection, &path).await.unwrap();
            interfaces_and_children(&xml)
        }
    };

    let mut names = Vec::new();
    for name in ["one", "two", "three"] {
        let xml = APP.replace("<name>app</name>", &format!("<name>{name}</name>"));
        let path = manager.define_xml(&xml).await.unwrap();
        names.push(path.as_str().rsplit('/').next().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(introspect("/".into()).await, (3, vec!["org".to_owned()]));
    assert_eq!(
        introspect(MANAGER_PATH.into()).await,
        (6, vec!["domain".to_owned(), "network".to_owned()])
    );
    assert_eq!(introspect(collection_path()).await, (4, names.clone()));

    for name in ["one", "two", "three"] {
        let path = manager.lookup_by_name(name).await.unwrap();
        domain(&connection, path).await.undefine(0).await.unwrap();
    }
    assert_eq!(introspect(collection_path()).await, (4, vec![]));
    let path = manager.define_xml(APP).await.unwrap();
    let (interfaces, children) = introspect(collection_path()).await;
    assert_eq!(interfaces, 4);
    assert_eq!(children, [path.as_str().rsplit('/').next().unwrap()]);
}

/// A daemon the bus has dropped cannot be reached and must not pretend to
/// run: it exits with an error (a service manager restarts it; containers
/// keep running).
#[tokio::test]
async fn the_daemon_exits_when_the_bus_goes_away() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let mut daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    drop(bus);
    let status = daemon
        .wait_exit(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(!status.success(), "{status}");
}

#[tokio::test]
async fn networks_define_list_lookup_getxml_undefine() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();

    let path = manager.network_define_xml(LAN).await.unwrap();
    assert!(path.as_str().starts_with("/org/lxvirt/lxvirt1/network/_"));
    let lan = network(&connection, path.clone()).await;
    assert_eq!(lan.name().await.unwrap(), "lan");
    assert!(!lan.active().await.unwrap());
    assert!(lan.persistent().await.unwrap());
    assert!(!lan.autostart().await.unwrap());
    assert_eq!(lan.bridge().await.unwrap(), "lxvirtbr0");
    let uuid = lan.uuid().await.unwrap();
    assert_eq!(manager.network_lookup_by_name("lan").await.unwrap(), path);
    assert_eq!(manager.network_lookup_by_uuid(&uuid).await.unwrap(), path);
    assert_eq!(manager.list_networks().await.unwrap(), vec![path.clone()]);
    // Networks are not domains.
    assert!(manager.list_domains().await.unwrap().is_empty());

    let xml = lan.get_xml(0).await.unwrap();
    let stored = fs::read_to_string(root.path().join("etc/networks/lan.xml")).unwrap();
    assert_eq!(xml, stored);
    assert!(xml.contains("name='lxvirtbr0'"), "{xml}");
    // Defining the dump again, or the document without <uuid>, updates it.
    assert_eq!(manager.network_define_xml(&xml).await.unwrap(), path);
    assert_eq!(manager.network_define_xml(LAN).await.unwrap(), path);
    assert_eq!(lan.get_xml(0).await.unwrap(), xml);

    lan.set_autostart(true).await.unwrap();
    assert!(lan.autostart().await.unwrap());
    assert!(root.path().join("etc/networks/autostart/lan").exists());

    lan.undefine().await.unwrap();
    assert!(manager.list_networks().await.unwrap().is_empty());
    assert!(!root.path().join("etc/networks/lan.xml").exists());
    assert!(!root.path().join("etc/networks/autostart/lan").exists());
    let err = manager.network_lookup_by_name("lan").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchNetwork");
}

#[tokio::test]
async fn network_errors_are_typed() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();

    let err = manager
        .network_define_xml("<network><name>x</nam")
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidXml");
    let err = manager.network_lookup_by_name("nope").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchNetwork");
    assert!(err.to_string().contains("'nope'"), "{err}");
    let err = manager
        .network_lookup_by_uuid("not-a-uuid")
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidArgument");
    // A domain's uuid is not a network's.
    let app = manager.define_xml(APP).await.unwrap();
    let app_uuid = domain(&connection, app).await.uuid().await.unwrap();
    let err = manager.network_lookup_by_uuid(&app_uuid).await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchNetwork");

    let lan = manager.network_define_xml(LAN).await.unwrap();
    // Overlapping subnets and a taken bridge name both networks.
    let err = manager
        .network_define_xml(
            "<network><name>dmz</name><ip address='192.168.150.129' prefix='25'/></network>",
        )
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.AlreadyExists");
    let message = err.to_string();
    assert!(
        message.contains("'dmz'") && message.contains("'lan'"),
        "{message}"
    );
    let err = manager
        .network_define_xml("<network><name>dmz</name><bridge name='lxvirtbr0'/></network>")
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.AlreadyExists");
    assert!(err.to_string().contains("lxvirtbr0"), "{err}");

    let lan = network(&connection, lan).await;
    let err = lan.get_xml(0x80).await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidArgument");
    assert_eq!(manager.list_networks().await.unwrap().len(), 1);
}

#[tokio::test]
async fn signals_announce_networks_and_changes() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let mut announced = Announcements::new(&connection).await;

    let path = manager.network_define_xml(LAN).await.unwrap();
    announced.added(&path, NETWORK_INTERFACE).await;

    let lan = network(&connection, path.clone()).await;
    let mut lifecycle = lan.receive_lifecycle().await.unwrap();
    autostart_is_announced!(lan);

    manager.network_define_xml(LAN).await.unwrap();
    next_lifecycle!(lifecycle, "defined", "updated");

    let objects = announced.proxy.get_managed_objects().await.unwrap();
    let props: &HashMap<String, zbus::OwnedVariant> = &objects[&path][NETWORK_INTERFACE];
    assert_eq!(
        String::try_from(props["Bridge"].clone()).unwrap(),
        "lxvirtbr0"
    );
    assert!(bool::try_from(props["Autostart"].clone()).unwrap());

    lan.undefine().await.unwrap();
    next_lifecycle!(lifecycle, "undefined", "removed");
    announced.removed(&path).await;
}

#[tokio::test]
async fn networks_are_exported_again_after_a_restart() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let mut daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let connection = bus.connect().await.unwrap();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let path = manager.network_define_xml(LAN).await.unwrap();
    assert!(daemon.stop().unwrap().success());
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    assert_eq!(manager.list_networks().await.unwrap(), vec![path.clone()]);
    let lan = network(&connection, path).await;
    assert_eq!(lan.bridge().await.unwrap(), "lxvirtbr0");
}
