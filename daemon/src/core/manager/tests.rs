//! The manager through the driver seam, without root: a test driver
//! whose instances are channels, driven by the tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{Manager, ManagerConfig, ManagerHandle};
use crate::core::images::ImageStore;
use crate::core::lifecycle::{Reason, State};
use crate::core::store::Store;
use crate::core::types::{CoreError, Event, EventKind, Lifecycle, Lookup, UndefineFlags, XmlFlags};
use crate::domain::{DomainType, UsernsMode};
use crate::domain::{MacAddr, NetworkDef};
use crate::driver::{
    self, BoxFuture, DomainStats, Driver, Drivers, Ended, ErrorKind, Exit, Request, Response,
    Runtime, ShutdownMode, StartRequest, Started,
};
use crate::net::dnsmasq::Lease;
use crate::net::ports::{PortError, PortRequest};
use crate::net::virtual_network::{NetworkDriver, NetworkError, NetworkRuntime, Plugged};
use crate::security::userns::{IdRange, IdRanges, UsernsError};
use crate::security::{HostSelinux, NoneDriver, Security};
use crate::storage::BackendKind;

/// One instance of the test driver: its exit is a watch channel, so a
/// restarted manager can wait on it again.
#[derive(Debug)]
struct Instance {
    init_pid: i32,
    gone: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct World {
    next_pid: i32,
    running: HashMap<String, Instance>,
    /// How each instance ended, for `collect_exit`.
    exits: HashMap<String, Exit>,
    /// Starts refused before anything happens.
    refuse: HashSet<String>,
    /// Launches that fail.
    fail: HashSet<String>,
    /// Launches that wait until the sender is used or dropped.
    hold: HashMap<String, oneshot::Receiver<()>>,
    /// Shutdown requests the instance ignores (a stuck init).
    ignore_shutdown: HashSet<String>,
    /// What the driver was asked, in order: "start web", "destroy web", …
    log: Vec<String>,
    /// The definitions instances were started from, by name.
    started_defs: HashMap<String, crate::domain::DomainDef>,
    /// The init pids each start was given, by name.
    started_inits: HashMap<String, HashMap<String, i32>>,
    /// The network ports each start was given, by name.
    started_ports: HashMap<String, HashMap<String, driver::NetworkPort>>,
    /// The driver resets instances in place (as the QEMU driver does).
    resets_in_place: bool,
}

#[derive(Debug, Clone, Default)]
struct TestDriver(Arc<Mutex<World>>);

impl TestDriver {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.world().log.clone()
    }

    /// The instance `name` ends by itself, as `exit` says.
    fn end(&self, name: &str, exit: Exit) {
        let mut world = self.world();
        world.exits.insert(name.to_owned(), exit);
        if let Some(instance) = world.running.get(name) {
            instance.gone.send_replace(true);
        }
    }

    fn hold(&self, name: &str) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.world().hold.insert(name.to_owned(), rx);
        tx
    }

    /// How many starts the driver was asked for.
    fn starts(&self) -> usize {
        self.log().iter().filter(|l| l.starts_with("start")).count()
    }

    fn init_pid(&self, name: &str) -> Option<i32> {
        self.world().running.get(name).map(|i| i.init_pid)
    }
}

fn exit_future(mut gone: watch::Receiver<bool>) -> BoxFuture<()> {
    Box::pin(async move {
        let _ = gone.wait_for(|g| *g).await;
    })
}

impl Driver for TestDriver {
    fn name(&self) -> &'static str {
        "test"
    }

    /// Every mode but the agent's.
    fn check_shutdown_mode(
        &self,
        def: &crate::domain::DomainDef,
        _runtime: Option<&Runtime>,
        mode: driver::ShutdownMode,
    ) -> Result<(), driver::Error> {
        if mode == driver::ShutdownMode::Agent {
            return Err(driver::Error::mode_not_supported(
                def.name(),
                mode,
                "test domains",
                "use another",
            ));
        }
        Ok(())
    }

    fn resets_in_place(&self) -> bool {
        self.world().resets_in_place
    }

    fn start(
        &self,
        request: StartRequest,
    ) -> Result<BoxFuture<Result<Started, driver::Error>>, driver::Error> {
        let name = request.def.name().to_owned();
        let mut world = self.world();
        if world.refuse.contains(&name) {
            return Err(driver::Error::new(
                ErrorKind::NotSupported,
                format!("domain '{name}': refused by the test driver"),
            ));
        }
        world.log.push(format!("start {name}"));
        world.started_defs.insert(name.clone(), request.def);
        world
            .started_inits
            .insert(name.clone(), request.running_inits);
        world.started_ports.insert(name.clone(), request.networks);
        let hold = world.hold.remove(&name);
        let fail = world.fail.contains(&name);
        let this = self.clone();
        Ok(Box::pin(async move {
            if let Some(hold) = hold {
                let _ = hold.await;
            }
            if fail {
                return Err(driver::Error::failed(format!(
                    "domain '{name}': the test driver failed it"
                )));
            }
            let mut world = this.world();
            world.next_pid += 10;
            let init_pid = 1000 + world.next_pid;
            let (gone, rx) = watch::channel(false);
            world
                .running
                .insert(name.clone(), Instance { init_pid, gone });
            world.exits.remove(&name);
            Ok(Started {
                runtime: Runtime {
                    init_pid,
                    monitor_pid: init_pid - 1,
                    monitor_start_time: 7,
                    started_at: 0,
                    cgroup_path: format!("test/{name}").into(),
                    memory_limit: None,
                },
                exited: exit_future(rx),
                on_recorded: None,
            })
        }))
    }

    fn reconnect(&self, name: &str, runtime: &Runtime) -> Option<BoxFuture<()>> {
        let world = self.world();
        let instance = world.running.get(name)?;
        if instance.init_pid != runtime.init_pid || *instance.gone.borrow() {
            return None;
        }
        Some(exit_future(instance.gone.subscribe()))
    }

    fn request(
        &self,
        name: &str,
        _runtime: &Runtime,
        request: Request,
    ) -> BoxFuture<Result<Response, driver::Error>> {
        let mut world = self.world();
        let verb = match &request {
            Request::Shutdown { .. } => "shutdown",
            Request::Destroy => "destroy",
            Request::Reset => "reset",
            Request::Freeze => "freeze",
            Request::Thaw => "thaw",
            Request::Console { .. } => "console",
            Request::Enter { .. } => "enter",
            Request::Stats => "stats",
            Request::Interfaces => "interfaces",
            Request::AttachInterface { .. } => "attach",
            Request::DetachInterface { .. } => "detach",
            Request::AttachDevice { .. } => "attach-device",
            Request::DetachDevice { .. } => "detach-device",
            Request::UpdateDevice { .. } => "update-device",
            Request::Signal { .. } => "signal",
            Request::Tune { .. } => "tune",
        };
        world.log.push(format!("{verb} {name}"));
        let result = if !world.running.contains_key(name) {
            Err(driver::Error::failed(format!(
                "domain '{name}': not running"
            )))
        } else {
            match request {
                Request::Shutdown { .. } if world.ignore_shutdown.contains(name) => {
                    Ok(Response::Done)
                }
                Request::Shutdown { .. } | Request::Destroy => {
                    let exit = if verb == "shutdown" {
                        Exit::Shutdown
                    } else {
                        Exit::Destroyed
                    };
                    world.exits.insert(name.to_owned(), exit);
                    if let Some(instance) = world.running.get(name) {
                        instance.gone.send_replace(true);
                    }
                    Ok(Response::Done)
                }
                Request::Freeze | Request::Thaw | Request::Reset => Ok(Response::Done),
                Request::Console { .. } => std::fs::File::open("/dev/null")
                    .map(|f| Response::Console(f.into()))
                    .map_err(|e| driver::Error::failed(e.to_string())),
                Request::Enter { .. } => std::fs::File::open("/dev/null")
                    .map(|f| Response::Entered {
                        pid: 4242,
                        exit: f.into(),
                        terminal: None,
                    })
                    .map_err(|e| driver::Error::failed(e.to_string())),
                Request::AttachInterface { .. } => Ok(Response::Attached {
                    guest_name: "eth1".into(),
                }),
                Request::DetachInterface { .. } => Ok(Response::Done),
                Request::AttachDevice { device, .. }
                    if matches!(*device, crate::domain::DeviceDef::Hostdev(_)) =>
                {
                    Err(driver::Error::failed(format!(
                        "domain '{name}': the fake driver refuses host devices"
                    )))
                }
                Request::AttachDevice { .. }
                | Request::DetachDevice { .. }
                | Request::UpdateDevice { .. } => Ok(Response::Done),
                Request::Signal { pid: 1, .. } => Ok(Response::Done),
                Request::Tune { new, .. } => match new.cputune.as_ref().and_then(|c| c.shares) {
                    Some(2) => Err(driver::Error::failed(format!(
                        "domain '{name}': the kernel refused cpu.shares 2"
                    ))),
                    _ => Ok(Response::Done),
                },
                Request::Signal { pid, .. } => Err(driver::Error::new(
                    driver::ErrorKind::InvalidArgument,
                    format!("domain '{name}': no process {pid} runs inside it"),
                )),
                Request::Interfaces => Ok(Response::Interfaces(vec![driver::GuestInterface {
                    name: "eth0".into(),
                    mac: Some("52:54:00:00:00:01".into()),
                    addresses: vec![("10.251.9.7".parse().unwrap(), 24)],
                    counters: driver::InterfaceCounters {
                        rx_packets: 3,
                        ..Default::default()
                    },
                }])),
                Request::Stats => Ok(Response::Stats(DomainStats {
                    memory_bytes: Some(4096),
                    ..DomainStats::default()
                })),
            }
        };
        Box::pin(async move { result })
    }

    fn collect_exit(
        &self,
        name: &str,
        _runtime: &Runtime,
        _live: &crate::domain::DomainDef,
    ) -> Ended {
        let mut world = self.world();
        world.running.remove(name);
        let exit = world.exits.remove(name).unwrap_or(Exit::Vanished);
        world.log.push(format!("exit {name} {exit:?}"));
        Ended {
            exit,
            problems: Vec::new(),
        }
    }

    fn release(&self, name: &str) {
        self.world().log.push(format!("release {name}"));
    }

    fn forget(&self, name: &str) {
        self.world().log.push(format!("forget {name}"));
    }
}

/// A network driver that brings nothing up: it logs what it is asked,
/// and fails the starts of networks named `broken`.
#[derive(Debug, Clone, Default)]
struct TestNetworks(Arc<Mutex<Vec<String>>>);

impl TestNetworks {
    fn log(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl NetworkDriver for TestNetworks {
    fn start(&self, def: NetworkDef) -> BoxFuture<Result<NetworkRuntime, NetworkError>> {
        self.0.lock().unwrap().push(format!("start {}", def.name()));
        Box::pin(async move {
            if def.name() == "broken" {
                return Err(NetworkError::BridgeExists {
                    network: def.name().to_owned(),
                    bridge: "taken0".into(),
                });
            }
            Ok(NetworkRuntime::default())
        })
    }

    fn reconnect(
        &self,
        def: NetworkDef,
        runtime: NetworkRuntime,
    ) -> BoxFuture<Result<NetworkRuntime, NetworkError>> {
        self.0
            .lock()
            .unwrap()
            .push(format!("reconnect {}", def.name()));
        Box::pin(async move { Ok(runtime) })
    }

    fn stop(&self, def: NetworkDef) -> BoxFuture<Vec<NetworkError>> {
        self.0.lock().unwrap().push(format!("stop {}", def.name()));
        Box::pin(async { Vec::new() })
    }

    fn leases(&self, _def: &NetworkDef) -> Vec<Lease> {
        Vec::new()
    }

    fn add_port(&self, port: PortRequest) -> Result<Plugged, NetworkError> {
        self.0.lock().unwrap().push(format!(
            "port {} {} {} {}",
            port.network, port.mac, port.domain, port.port
        ));
        // A full range, for the MAC that asks for it.
        if port.mac.0[5] == 0xee {
            return Err(NetworkError::Port(PortError::Exhausted {
                network: port.network,
                ranges: "10.251.9.2-10.251.9.3".into(),
            }));
        }
        Ok(Plugged {
            group: Some(0x4000_0001),
        })
    }

    fn remove_port(&self, network: &str, mac: MacAddr, domain: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("unport {network} {mac} {domain}"));
    }
}

/// A manager on temporary directories with the test driver.
struct Harness {
    dir: tempfile::TempDir,
    driver: TestDriver,
    networks: TestNetworks,
    handle: ManagerHandle,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::on(dir, TestDriver::default())
    }

    fn on(dir: tempfile::TempDir, driver: TestDriver) -> Harness {
        Harness::with_networks(dir, driver, TestNetworks::default())
    }

    fn with_networks(
        dir: tempfile::TempDir,
        driver: TestDriver,
        networks: TestNetworks,
    ) -> Harness {
        let network_driver = networks.clone();
        let store = Store::open(&dir.path().join("config")).unwrap();
        let loaded = store.load().unwrap();
        let network_store = Store::open(&dir.path().join("config")).unwrap();
        let networks_log = networks;
        let networks = network_store.load().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let config = ManagerConfig {
            run_dir,
            images: ImageStore::unavailable(BackendKind::Overlay, "not in unit tests"),
            default_userns: UsernsMode::Auto,
        };
        let drivers = Drivers::default().with(DomainType::Lxc, Arc::new(driver.clone()));
        let security = Security::with_driver(
            Box::new(NoneDriver),
            HostSelinux::Absent("unit tests".into()),
            false,
        );
        let (ids, _) = IdRanges::open(IdRange::DEFAULT, Some(&dir.path().join("userns"))).unwrap();
        let (events_tx, events) = mpsc::unbounded_channel();
        let manager = Manager::new(
            store,
            loaded,
            (network_store, networks),
            Arc::new(network_driver),
            config,
            drivers,
            security,
            ids,
            events_tx,
        );
        let (handle, task) = manager.spawn();
        Harness {
            dir,
            driver,
            networks: networks_log,
            handle,
            events,
            task,
        }
    }

    /// The daemon is killed and started again on the same state; the
    /// driver's instances live on.
    fn restart(self) -> Harness {
        self.task.abort();
        Harness::with_networks(self.dir, self.driver, self.networks)
    }

    async fn define(&self, name: &str, extra: &str) -> Uuid {
        let xml = domain_xml(name, extra);
        self.handle.define_xml(xml).await.unwrap().0.uuid
    }

    async fn summary(&self, uuid: Uuid) -> crate::core::types::DomainSummary {
        self.handle.lookup(Lookup::Uuid(uuid)).await.unwrap()
    }

    async fn state(&self, uuid: Uuid) -> (State, Reason) {
        let s = self.summary(uuid).await;
        (s.state, s.reason)
    }

    /// Waits until `uuid` is in `state` (a report arrives asynchronously).
    async fn wait_state(&self, uuid: Uuid, state: State) -> Reason {
        for _ in 0..500 {
            match self.handle.lookup(Lookup::Uuid(uuid)).await {
                Ok(s) if s.state == state => return s.reason,
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        panic!(
            "domain {uuid} never became {state}: {:?}",
            self.state(uuid).await
        );
    }

    /// Lifecycle events published so far (drained).
    fn lifecycles(&mut self) -> Vec<Lifecycle> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            match event.kind {
                EventKind::Changed {
                    lifecycle: Some(l), ..
                } => out.push(l),
                EventKind::Removed { lifecycle, .. } => out.push(lifecycle),
                EventKind::Changed {
                    lifecycle: None, ..
                }
                | EventKind::NetworkChanged { .. }
                | EventKind::NetworkRemoved { .. } => {}
            }
        }
        out
    }
}

fn domain_xml(name: &str, extra: &str) -> String {
    format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sh</init></os>{extra}\
         <devices><console type='pty'/></devices></domain>"
    )
}

fn is_busy(error: &CoreError, with: &str) -> bool {
    matches!(error, CoreError::Busy { operation, .. } if *operation == with)
}

#[tokio::test]
async fn start_and_destroy_publish_one_event_each() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    h.handle.start(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Booted));
    let summary = h.summary(uuid).await;
    assert_eq!(summary.init_pid, h.driver.init_pid("web"));
    // Allocated ids are in the live definition and the summary.
    assert!(summary.host_ids.is_some());
    let live = h.handle.get_xml(uuid, XmlFlags(0)).await.unwrap();
    assert!(live.contains("mode='auto'"), "{live}");
    h.handle.destroy(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await, (State::Shutoff, Reason::Destroyed));
    assert_eq!(
        h.lifecycles(),
        [
            Lifecycle::Defined { updated: false },
            Lifecycle::Started,
            Lifecycle::Stopped(Reason::Destroyed),
        ]
    );
    assert_eq!(
        h.driver.log(),
        ["start web", "destroy web", "exit web Destroyed"]
    );
}

/// A persistent domain's first start records its block of host ids (off
/// the manager's task) before the driver's launch runs; a record that
/// cannot be written fails the start, and nothing of the block stays held.
#[tokio::test]
async fn a_first_start_records_its_ids_before_the_launch_or_fails() {
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let state = h.dir.path().join("userns");
    // The state directory replaced by a file: the record cannot be made.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, "").unwrap();
    let error = h.handle.start(uuid).await.unwrap_err();
    assert!(
        matches!(&error, CoreError::Userns(UsernsError::State(_))),
        "{error:?}"
    );
    // Asked (the synchronous part) and released; the launch never ran.
    assert_eq!(h.driver.log(), ["start web", "release web"]);
    assert_eq!(h.driver.init_pid("web"), None);
    assert_eq!(h.state(uuid).await.0, State::Shutoff);
    // Back: the start records the same block (none stayed held) first.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    h.handle.start(uuid).await.unwrap();
    let record = std::fs::read_to_string(state.join(format!("{uuid}.json"))).unwrap();
    let start = IdRange::DEFAULT.start;
    assert!(record.contains(&format!("\"start\": {start}")), "{record}");
    let summary = h.summary(uuid).await;
    assert_eq!(summary.host_ids.map(|(first, _)| first), Some(start));
}

#[tokio::test]
async fn a_second_start_while_one_is_in_flight_is_busy() {
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let release = h.driver.hold("web");
    let first = {
        let handle = h.handle.clone();
        tokio::spawn(async move { handle.start(uuid).await })
    };
    // The first start is in flight once the driver has been asked.
    while h.driver.log().is_empty() {
        tokio::task::yield_now().await;
    }
    let second = h.handle.start(uuid).await.unwrap_err();
    assert!(is_busy(&second, "start"), "{second}");
    let destroy = h.handle.destroy(uuid).await.unwrap_err();
    assert!(is_busy(&destroy, "start"), "{destroy}");
    // A definition may change meanwhile; the instance keeps its own.
    h.handle
        .define_xml(domain_xml("web", "<vcpu>2</vcpu>"))
        .await
        .unwrap();
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Booted));
    let live = h.handle.get_xml(uuid, XmlFlags(0)).await.unwrap();
    let inactive = h
        .handle
        .get_xml(uuid, XmlFlags(XmlFlags::INACTIVE))
        .await
        .unwrap();
    assert!(!live.contains(">2</vcpu>"), "{live}");
    assert!(inactive.contains(">2</vcpu>"), "{inactive}");
}

#[tokio::test]
async fn a_refused_start_leaves_no_trace() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    h.driver.world().refuse.insert("web".into());
    let error = h.handle.start(uuid).await.unwrap_err();
    match &error {
        CoreError::Driver(e) => assert_eq!(e.kind, ErrorKind::NotSupported),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.state(uuid).await, (State::Shutoff, Reason::Unknown));
    assert_eq!(h.lifecycles(), [Lifecycle::Defined { updated: false }]);
    // Nothing holds it back: the next start goes through.
    h.driver.world().refuse.clear();
    h.handle.start(uuid).await.unwrap();
}

#[tokio::test]
async fn a_failed_launch_shuts_off_and_forgets_a_transient_domain() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    h.driver.world().fail.insert("web".into());
    h.driver.world().fail.insert("tmp".into());
    let error = h.handle.start(uuid).await.unwrap_err();
    assert!(
        error.to_string().contains("the test driver failed it"),
        "{error}"
    );
    assert_eq!(h.state(uuid).await, (State::Shutoff, Reason::Failed));
    assert!(h.driver.log().contains(&"release web".to_owned()));
    let error = h
        .handle
        .create_xml(domain_xml("tmp", ""))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("failed it"), "{error}");
    assert!(matches!(
        h.handle.lookup(Lookup::Name("tmp".into())).await,
        Err(CoreError::NoSuchDomain(_))
    ));
    let lifecycles = h.lifecycles();
    assert_eq!(
        lifecycles.last(),
        Some(&Lifecycle::Stopped(Reason::Failed)),
        "{lifecycles:?}"
    );
}

#[tokio::test]
async fn a_transient_domain_goes_away_when_it_stops() {
    let mut h = Harness::new();
    let (uuid, _) = h.handle.create_xml(domain_xml("tmp", "")).await.unwrap();
    let summary = h.summary(uuid).await;
    assert!(!summary.persistent);
    assert_eq!(summary.state, State::Running);
    h.handle
        .shutdown(uuid, Duration::from_secs(1), ShutdownMode::Default)
        .await
        .unwrap();
    assert!(matches!(
        h.handle.lookup(Lookup::Uuid(uuid)).await,
        Err(CoreError::NoSuchDomain(_))
    ));
    assert_eq!(
        h.lifecycles(),
        [
            Lifecycle::Defined { updated: false },
            Lifecycle::Started,
            Lifecycle::Stopped(Reason::Shutdown),
        ]
    );
}

#[tokio::test]
async fn reboot_restarts_from_the_live_definition() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    h.handle.start(uuid).await.unwrap();
    let first_pid = h.driver.init_pid("web");
    h.handle
        .define_xml(domain_xml("web", "<vcpu>3</vcpu>"))
        .await
        .unwrap();
    h.handle
        .reboot(uuid, Duration::from_secs(1), ShutdownMode::Default)
        .await
        .unwrap();
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Rebooted));
    assert_ne!(h.driver.init_pid("web"), first_pid);
    // The restart ran the instance's definition, not the updated one.
    assert_eq!(h.driver.world().started_defs["web"].vcpu.count, 1);
    let lifecycles = h.lifecycles();
    assert_eq!(
        lifecycles[lifecycles.len() - 2..],
        [Lifecycle::Stopped(Reason::Shutdown), Lifecycle::Rebooted]
    );
    // A plain stop and start takes the new definition.
    h.handle.destroy(uuid).await.unwrap();
    h.handle.start(uuid).await.unwrap();
    assert_eq!(h.driver.world().started_defs["web"].vcpu.count, 3);
}

#[tokio::test]
async fn a_reset_in_place_keeps_the_instance_and_a_reset_otherwise_restarts_it() {
    let mut h = Harness::new();
    let uuid = h.define("web", "<on_reboot>destroy</on_reboot>").await;
    h.handle.start(uuid).await.unwrap();
    let first_pid = h.driver.init_pid("web");

    // A driver that resets in place: the same instance, a reset event.
    h.driver.world().resets_in_place = true;
    h.handle.reset(uuid).await.unwrap();
    assert_eq!(h.driver.init_pid("web"), first_pid);
    assert!(h.driver.log().contains(&"reset web".to_owned()));
    assert_eq!(h.state(uuid).await.0, State::Running);
    assert_eq!(h.lifecycles().last(), Some(&Lifecycle::Reset));
    // Paused, the machine is reset and stays paused.
    h.handle.suspend(uuid).await.unwrap();
    h.handle.reset(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await.0, State::Paused);
    h.handle.resume(uuid).await.unwrap();

    // Otherwise the instance is destroyed and started again, whatever
    // on_reboot says (a reset is not the guest's reboot).
    h.driver.world().resets_in_place = false;
    h.handle.reset(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Rebooted));
    assert_ne!(h.driver.init_pid("web"), first_pid);
    let log = h.driver.log();
    assert_eq!(
        log[log.len() - 3..],
        ["destroy web", "exit web Destroyed", "start web"]
    );

    // Shut off: refused, saying what to do.
    h.handle.destroy(uuid).await.unwrap();
    let error = h.handle.reset(uuid).await.unwrap_err();
    assert!(error.to_string().contains("start it first"), "{error}");
}

#[tokio::test]
async fn a_shutdown_mode_the_driver_refuses_changes_nothing() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    h.handle.start(uuid).await.unwrap();
    let before = h.driver.log().len();
    let error = h
        .handle
        .shutdown(uuid, Duration::from_secs(1), ShutdownMode::Agent)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("shutdown mode 'agent' is not supported for test domains"),
        "{error}"
    );
    let error = h
        .handle
        .reboot(uuid, Duration::from_secs(1), ShutdownMode::Agent)
        .await
        .unwrap_err();
    assert!(matches!(error, CoreError::Driver(_)), "{error}");
    assert_eq!(h.driver.log().len(), before);
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Booted));
    // Nothing is left in flight: another mode goes through.
    h.handle
        .shutdown(uuid, Duration::from_secs(1), ShutdownMode::Signal)
        .await
        .unwrap();
    assert_eq!(h.state(uuid).await, (State::Shutoff, Reason::Shutdown));
    let _ = h.lifecycles();
}

#[tokio::test]
async fn destroy_wins_over_a_reboot_in_flight() {
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    h.handle.start(uuid).await.unwrap();
    h.driver.world().ignore_shutdown.insert("web".into());
    let reboot = {
        let handle = h.handle.clone();
        tokio::spawn(async move {
            handle
                .reboot(uuid, Duration::from_secs(60), ShutdownMode::Default)
                .await
        })
    };
    while !h.driver.log().contains(&"shutdown web".to_owned()) {
        tokio::task::yield_now().await;
    }
    // Suspending a domain that is rebooting is refused.
    let error = h.handle.suspend(uuid).await.unwrap_err();
    assert!(is_busy(&error, "reboot"), "{error}");
    h.handle.destroy(uuid).await.unwrap();
    reboot.await.unwrap().unwrap();
    assert_eq!(h.state(uuid).await, (State::Shutoff, Reason::Destroyed));
    assert_eq!(h.driver.starts(), 1);
}

#[tokio::test]
async fn on_actions_follow_how_the_instance_ended() {
    let h = Harness::new();
    let actions = "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>\
                   <on_crash>preserve</on_crash>";
    let uuid = h.define("web", actions).await;
    h.handle.start(uuid).await.unwrap();

    // reboot(2) inside: on_reboot='restart'.
    let pid = h.driver.init_pid("web");
    h.driver.end("web", Exit::Rebooted);
    for _ in 0..500 {
        if h.driver.init_pid("web").is_some_and(|p| Some(p) != pid)
            && h.state(uuid).await.0 == State::Running
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Rebooted));

    // A crash: on_crash='preserve' keeps the remains.
    h.driver.end("web", Exit::Crashed);
    assert_eq!(h.wait_state(uuid, State::Crashed).await, Reason::Crashed);
    let error = h.handle.start(uuid).await.unwrap_err();
    assert!(matches!(error, CoreError::InvalidState(_)), "{error}");
    // Destroying the remains needs no driver request.
    let before = h.driver.log().len();
    h.handle.destroy(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await, (State::Shutoff, Reason::Destroyed));
    assert_eq!(h.driver.log()[before..], ["release web"]);

    // Powered off: on_poweroff='destroy'.
    h.handle.start(uuid).await.unwrap();
    h.driver.end("web", Exit::PoweredOff);
    assert_eq!(h.wait_state(uuid, State::Shutoff).await, Reason::Shutdown);
}

#[tokio::test]
async fn a_vanished_instance_counts_as_a_crash() {
    let h = Harness::new();
    let uuid = h.define("web", "<on_crash>destroy</on_crash>").await;
    h.handle.start(uuid).await.unwrap();
    // Gone without an exit record.
    h.driver.world().running["web"].gone.send_replace(true);
    assert_eq!(h.wait_state(uuid, State::Shutoff).await, Reason::Crashed);
}

#[tokio::test]
async fn suspend_resume_and_requests_go_through_the_table() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    let error = h.handle.suspend(uuid).await.unwrap_err();
    assert!(matches!(error, CoreError::InvalidState(_)), "{error}");
    h.handle.start(uuid).await.unwrap();
    h.handle.suspend(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await, (State::Paused, Reason::User));
    let error = h
        .handle
        .enter(
            uuid,
            vec!["true".into()],
            Vec::new(),
            None,
            false,
            Some(stdio()),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, CoreError::InvalidState(_)), "{error}");
    h.handle.open_console(uuid, 0).await.unwrap();
    h.handle.resume(uuid).await.unwrap();
    assert_eq!(h.state(uuid).await, (State::Running, Reason::Unpaused));
    let entered = h
        .handle
        .enter(
            uuid,
            vec!["true".into()],
            Vec::new(),
            None,
            false,
            Some(stdio()),
        )
        .await
        .unwrap();
    assert_eq!(entered.pid, 4242);
    let stats = h.handle.stats(uuid).await.unwrap();
    assert_eq!(stats.memory_bytes, Some(4096));
    assert_eq!(stats.memory_limit, Some(64 << 20));
    let lifecycles = h.lifecycles();
    assert_eq!(
        lifecycles[lifecycles.len() - 2..],
        [Lifecycle::Suspended, Lifecycle::Resumed]
    );
}

fn stdio() -> [std::os::fd::OwnedFd; 3] {
    std::array::from_fn(|_| std::fs::File::open("/dev/null").unwrap().into())
}

#[tokio::test]
async fn concurrent_requests_to_one_domain_all_get_answers() {
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let handle = h.handle.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 => handle.start(uuid).await.map(|_| ()),
                1 => handle.destroy(uuid).await.map(|_| ()),
                2 => handle.suspend(uuid).await.map(|_| ()),
                _ => handle.resume(uuid).await.map(|_| ()),
            }
        }));
    }
    for task in tasks {
        // Every request is answered: done, or refused with a typed error.
        match task.await.unwrap() {
            Ok(()) | Err(CoreError::InvalidState(_) | CoreError::Busy { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    // And the domain is in a state the table allows, with nothing in flight.
    let (state, _) = h.state(uuid).await;
    assert!(matches!(
        state,
        State::Shutoff | State::Running | State::Paused
    ));
    h.handle.destroy(uuid).await.ok();
}

#[tokio::test]
async fn a_restarted_daemon_finds_its_instances_again() {
    let h = Harness::new();
    let running = h.define("running", "").await;
    let paused = h.define("paused", "").await;
    let ended = h
        .define("ended", "<on_poweroff>destroy</on_poweroff>")
        .await;
    let (transient, _) = h.handle.create_xml(domain_xml("tmp", "")).await.unwrap();
    for uuid in [running, paused, ended] {
        h.handle.start(uuid).await.unwrap();
    }
    h.handle.suspend(paused).await.unwrap();
    let label_pid = h.summary(running).await.init_pid;

    // Killed; one instance ends while no daemon watches.
    let driver = h.driver.clone();
    h.task.abort();
    driver.end("ended", Exit::PoweredOff);
    let h = Harness::on(h.dir, driver);

    assert_eq!(
        h.state(running).await,
        (State::Running, Reason::Reconnected)
    );
    assert_eq!(h.summary(running).await.init_pid, label_pid);
    assert_eq!(h.state(paused).await, (State::Paused, Reason::User));
    assert_eq!(h.wait_state(ended, State::Shutoff).await, Reason::Shutdown);
    let tmp = h.summary(transient).await;
    assert!(!tmp.persistent);
    assert_eq!(tmp.state, State::Running);
    // The reconnected instances are managed: they stop through the driver.
    h.handle.destroy(running).await.unwrap();
    h.handle.destroy(transient).await.unwrap();
    assert!(matches!(
        h.handle.lookup(Lookup::Uuid(transient)).await,
        Err(CoreError::NoSuchDomain(_))
    ));
    // And the id block of a persistent domain is the same after restart.
    let h = h.restart();
    h.handle.resume(paused).await.unwrap();
}

#[tokio::test]
async fn undefine_of_a_running_domain_makes_it_transient() {
    let mut h = Harness::new();
    let uuid = h.define("web", "").await;
    h.handle.start(uuid).await.unwrap();
    h.handle.undefine(uuid, UndefineFlags(0)).await.unwrap();
    assert!(!h.summary(uuid).await.persistent);
    h.handle.destroy(uuid).await.unwrap();
    assert!(matches!(
        h.handle.lookup(Lookup::Uuid(uuid)).await,
        Err(CoreError::NoSuchDomain(_))
    ));
    assert_eq!(
        h.lifecycles()[2..],
        [Lifecycle::Undefined, Lifecycle::Stopped(Reason::Destroyed)]
    );
}

#[tokio::test]
async fn a_domain_type_without_a_driver_is_refused() {
    let h = Harness::new();
    let xml = "<domain type='kvm'><name>vm</name><memory unit='MiB'>64</memory>\
               <os><type>hvm</type></os></domain>";
    let (summary, _) = h.handle.define_xml(xml.into()).await.unwrap();
    let error = h.handle.start(summary.uuid).await.unwrap_err();
    assert!(
        matches!(error, CoreError::DriverUnavailable { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("kvm driver"), "{error}");
}

#[tokio::test]
async fn an_unreadable_exit_takes_no_action() {
    let h = Harness::new();
    let uuid = h
        .define(
            "web",
            "<on_poweroff>restart</on_poweroff><on_crash>restart</on_crash>",
        )
        .await;
    h.handle.start(uuid).await.unwrap();
    // A record from a newer monitor: how it ended is unknown, so no
    // restart action applies and nothing claims it crashed.
    h.driver.end("web", Exit::Unknown);
    assert_eq!(h.wait_state(uuid, State::Shutoff).await, Reason::Unknown);
    assert_eq!(h.driver.starts(), 1);
}

#[tokio::test]
async fn interfaces_without_a_mac_get_one_that_stays() {
    let h = Harness::new();
    let nics = "<devices><interface type='bridge'><source bridge='br0'/></interface>\
                <interface type='ethernet'/><interface type='bridge'><source bridge='br1'/>\
                <mac address='52:54:00:00:00:01'/></interface>";
    let xml = |name: &str| domain_xml(name, "").replace("<devices>", nics);
    let (first, _) = h.handle.define_xml(xml("web")).await.unwrap();
    let macs = |text: &str| -> Vec<String> {
        text.match_indices("<mac address='")
            .map(|(i, m)| text[i + m.len()..i + m.len() + 17].to_owned())
            .collect()
    };
    let defined = h
        .handle
        .get_xml(first.uuid, XmlFlags(XmlFlags::INACTIVE))
        .await
        .unwrap();
    let generated = macs(&defined);
    assert_eq!(generated.len(), 3, "{defined}");
    assert!(
        generated[..2].iter().all(|m| m.starts_with("52:54:00:")),
        "{generated:?}"
    );
    assert_ne!(generated[0], generated[1]);
    assert_eq!(generated[2], "52:54:00:00:00:01");
    // The same document again changes nothing: the generated ones stay.
    h.handle.define_xml(xml("web")).await.unwrap();
    let again = h
        .handle
        .get_xml(first.uuid, XmlFlags(XmlFlags::INACTIVE))
        .await
        .unwrap();
    assert_eq!(macs(&again), generated);
    // Another domain gets other addresses.
    let (other, _) = h.handle.define_xml(xml("db")).await.unwrap();
    let theirs = macs(
        &h.handle
            .get_xml(other.uuid, XmlFlags(XmlFlags::INACTIVE))
            .await
            .unwrap(),
    );
    assert!(!generated[..2].contains(&theirs[0]) && !generated[..2].contains(&theirs[1]));
}

#[tokio::test]
async fn a_start_is_given_the_inits_of_the_domains_it_shares_with() {
    let h = Harness::new();
    let a = h.define("a", "").await;
    h.define("bystander", "").await;
    h.handle.start(a).await.unwrap();
    let shares = "<lxc:namespace xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'>\
                  <lxc:sharenet type='name' value='a'/><lxc:shareuts type='name' value='a'/>\
                  </lxc:namespace>";
    let xml = domain_xml("b", "").replace("<devices>", &format!("{shares}<devices>"));
    let (b, _) = h.handle.define_xml(xml).await.unwrap();
    h.handle.start(b.uuid).await.unwrap();
    let inits = h.driver.world().started_inits["b"].clone();
    assert_eq!(
        inits,
        HashMap::from([("a".to_owned(), h.driver.init_pid("a").unwrap())])
    );
    // Nothing else running is handed over.
    assert!(h.driver.world().started_inits["a"].is_empty());
}

fn network_xml(name: &str, extra: &str) -> String {
    format!("<network><name>{name}</name>{extra}</network>")
}

/// Every network as `name:bridge`, in the order listed.
async fn network_names(h: &Harness) -> Vec<String> {
    let list = h.handle.list_networks().await.unwrap();
    list.into_iter()
        .map(|n| format!("{}:{}", n.name, n.bridge))
        .collect()
}

/// Network events published so far (drained): (name or uuid, lifecycle).
fn network_events(h: &mut Harness) -> Vec<(String, Option<Lifecycle>)> {
    let mut out = Vec::new();
    while let Ok(event) = h.events.try_recv() {
        match event.kind {
            EventKind::NetworkChanged { summary, lifecycle } => out.push((summary.name, lifecycle)),
            EventKind::NetworkRemoved { uuid, lifecycle } => {
                out.push((uuid.to_string(), Some(lifecycle)))
            }
            EventKind::Changed { .. } | EventKind::Removed { .. } => {}
        }
    }
    out
}

#[tokio::test]
async fn networks_are_defined_looked_up_and_undefined() {
    let mut h = Harness::new();
    let ip = "<ip address='192.168.150.1' prefix='24'/>";
    let (lan, _) = h
        .handle
        .network_define_xml(network_xml("lan", ip))
        .await
        .unwrap();
    assert_eq!(lan.name, "lan");
    assert!(!lan.active && lan.persistent && !lan.autostart);
    // No <bridge name=>: one is picked, and kept by a define of the same
    // document (without <uuid>, the same network).
    assert_eq!(lan.bridge, "lxvirtbr0");
    let (again, _) = h
        .handle
        .network_define_xml(network_xml("lan", ip))
        .await
        .unwrap();
    assert_eq!(again, lan);
    let (other, _) = h
        .handle
        .network_define_xml(network_xml("dmz", "<bridge name='br-dmz'/>"))
        .await
        .unwrap();
    assert_eq!(other.bridge, "br-dmz");
    assert_eq!(network_names(&h).await, ["dmz:br-dmz", "lan:lxvirtbr0"]);
    let by_name = h
        .handle
        .network_lookup(Lookup::Name("lan".into()))
        .await
        .unwrap();
    assert_eq!(by_name, lan);
    let by_uuid = h
        .handle
        .network_lookup(Lookup::Uuid(lan.uuid))
        .await
        .unwrap();
    assert_eq!(by_uuid, lan);
    // The XML carries the picked bridge and reads back the same.
    let xml = h
        .handle
        .network_get_xml(lan.uuid, XmlFlags(0))
        .await
        .unwrap();
    assert!(xml.contains("name='lxvirtbr0'"), "{xml}");
    assert!(xml.contains(&lan.uuid.to_string()), "{xml}");
    let error = h
        .handle
        .network_get_xml(lan.uuid, XmlFlags(0x100))
        .await
        .unwrap_err();
    assert!(matches!(error, CoreError::InvalidFlags(0x100)), "{error}");
    // Networks and domains are apart: no domain is called lan.
    let error = h
        .handle
        .lookup(Lookup::Name("lan".into()))
        .await
        .unwrap_err();
    assert!(matches!(error, CoreError::NoSuchDomain(_)), "{error}");
    let path = h.dir.path().join("config/networks/lan.xml");
    assert!(path.exists());

    h.handle.network_undefine(lan.uuid).await.unwrap();
    assert!(!path.exists());
    let error = h
        .handle
        .network_lookup(Lookup::Name("lan".into()))
        .await
        .unwrap_err();
    assert!(matches!(error, CoreError::NoSuchNetwork(_)), "{error}");
    assert!(error.to_string().contains("net-list"), "{error}");
    let error = h.handle.network_undefine(lan.uuid).await.unwrap_err();
    assert!(matches!(error, CoreError::NoSuchNetwork(_)), "{error}");
    assert_eq!(
        network_events(&mut h),
        [
            (
                "lan".to_owned(),
                Some(Lifecycle::Defined { updated: false })
            ),
            ("lan".to_owned(), Some(Lifecycle::Defined { updated: true })),
            (
                "dmz".to_owned(),
                Some(Lifecycle::Defined { updated: false })
            ),
            (lan.uuid.to_string(), Some(Lifecycle::Undefined)),
        ]
    );
}

#[tokio::test]
async fn network_autostart_is_saved_and_survives_a_restart() {
    let mut h = Harness::new();
    let (lan, _) = h
        .handle
        .network_define_xml(network_xml("lan", ""))
        .await
        .unwrap();
    network_events(&mut h);
    h.handle
        .network_set_autostart(lan.uuid, true)
        .await
        .unwrap();
    // Setting it again changes nothing and publishes nothing.
    h.handle
        .network_set_autostart(lan.uuid, true)
        .await
        .unwrap();
    assert!(h.dir.path().join("config/networks/autostart/lan").exists());
    assert_eq!(network_events(&mut h), [("lan".to_owned(), None)]);
    // A redefine keeps the mark.
    h.handle
        .network_define_xml(network_xml("lan", "<bridge stp='off'/>"))
        .await
        .unwrap();
    let h = h.restart();
    let after = h
        .handle
        .network_lookup(Lookup::Name("lan".into()))
        .await
        .unwrap();
    assert!(after.autostart);
    assert_eq!((after.uuid, after.bridge.as_str()), (lan.uuid, "lxvirtbr0"));
    h.handle
        .network_set_autostart(lan.uuid, false)
        .await
        .unwrap();
    assert!(!h.dir.path().join("config/networks/autostart/lan").exists());
    let error = h
        .handle
        .network_set_autostart(Uuid::new_v4(), true)
        .await
        .unwrap_err();
    assert!(matches!(error, CoreError::NoSuchNetwork(_)), "{error}");
}

#[tokio::test]
async fn network_clashes_are_refused_naming_both_networks() {
    let h = Harness::new();
    let u1 = "11111111-2222-3333-4444-555555555555";
    let u2 = "11111111-2222-3333-4444-666666666666";
    let lan = network_xml(
        "lan",
        &format!(
            "<uuid>{u1}</uuid><bridge name='br0'/><ip address='10.1.0.1' prefix='16'/>\
             <ip family='ipv6' address='fd00:1::1' prefix='64'/>"
        ),
    );
    h.handle.network_define_xml(lan).await.unwrap();
    let refuse = |xml: String| {
        let handle = h.handle.clone();
        async move { handle.network_define_xml(xml).await.unwrap_err() }
    };
    // The name with another uuid.
    let error = refuse(network_xml("lan", &format!("<uuid>{u2}</uuid>"))).await;
    assert!(
        matches!(&error, CoreError::NameTaken { kind: "network", name, .. } if name == "lan"),
        "{error}"
    );
    assert!(error.to_string().starts_with("network 'lan'"), "{error}");
    // The uuid under another name.
    let error = refuse(network_xml("dmz", &format!("<uuid>{u1}</uuid>"))).await;
    assert!(
        matches!(&error, CoreError::UuidTaken { kind: "network", other, .. } if other == "lan"),
        "{error}"
    );
    // The bridge.
    let error = refuse(network_xml("dmz", "<bridge name='br0'/>")).await;
    assert!(
        matches!(&error, CoreError::BridgeTaken { network, bridge, other }
            if network == "dmz" && bridge == "br0" && other == "lan"),
        "{error}"
    );
    // A subnet inside lan's, of either family.
    let error = refuse(network_xml("dmz", "<ip address='10.1.5.1' prefix='24'/>")).await;
    assert!(
        matches!(&error, CoreError::SubnetOverlap { network, subnet, other, other_subnet }
            if network == "dmz" && subnet == "10.1.5.0/24" && other == "lan" && other_subnet == "10.1.0.0/16"),
        "{error}"
    );
    let error = refuse(network_xml(
        "dmz",
        "<ip family='ipv6' address='fd00::1' prefix='16'/>",
    ))
    .await;
    assert!(
        matches!(&error, CoreError::SubnetOverlap { other, .. } if other == "lan"),
        "{error}"
    );
    // The network itself may keep its bridge and subnets; a subnet beside
    // lan's is fine.
    h.handle
        .network_define_xml(network_xml(
            "lan",
            "<bridge name='br0'/><ip address='10.1.0.1' prefix='16'/>",
        ))
        .await
        .unwrap();
    h.handle
        .network_define_xml(network_xml("dmz", "<ip address='10.2.0.1' prefix='16'/>"))
        .await
        .unwrap();
    // Nothing refused was saved.
    assert_eq!(network_names(&h).await, ["dmz:lxvirtbr0", "lan:br0"]);
    let lan = Lookup::Name("lan".into());
    assert_eq!(
        h.handle.network_lookup(lan).await.unwrap().uuid.to_string(),
        u1
    );
    // Invalid XML is a network error, not a domain one.
    let error = refuse("<network><name>x</name><bridge delay='99'/></network>".into()).await;
    assert!(matches!(error, CoreError::InvalidNetworkXml(_)), "{error}");
    assert!(error.to_string().contains("network"), "{error}");
}

#[tokio::test]
async fn a_network_whose_file_is_bad_stays_blocked() {
    let h = Harness::new();
    let dir = h.dir.path().join("config/networks");
    std::fs::write(dir.join("lan.xml"), "<network><name>lan</na").unwrap();
    std::fs::write(
        dir.join("old.xml"),
        network_xml("old", "<ip address='10.9.0.1' prefix='16'/>"),
    )
    .unwrap();
    let h = h.restart();
    let error = h
        .handle
        .network_define_xml(network_xml("lan", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CoreError::Blocked { kind: "network", name, .. } if name == "lan"),
        "{error}"
    );
    // A file written by hand without a bridge name gets one.
    let old = h
        .handle
        .network_lookup(Lookup::Name("old".into()))
        .await
        .unwrap();
    assert_eq!(old.bridge, "lxvirtbr0");
    assert_eq!(h.handle.list_networks().await.unwrap().len(), 1);
}

const NAT: &str = "<network><name>lan</name><forward mode='nat'/><ip address='10.251.9.1' prefix='24'/></network>";

fn on_lan(mac: &str) -> String {
    format!(
        "<devices><interface type='network'><source network='lan'/><mac address='{mac}'/></interface></devices>"
    )
}

/// A domain with a port on `lan` (its own `<devices>`, so not through
/// `domain_xml`).
async fn define_on_lan(h: &Harness, name: &str) -> Uuid {
    define_on_lan_with(h, name, "52:54:00:00:00:01").await
}

async fn define_on_lan_with(h: &Harness, name: &str, mac: &str) -> Uuid {
    let xml = format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sh</init></os>{}</domain>",
        on_lan(mac).replace("</devices>", "<console type='pty'/></devices>")
    );
    h.handle.define_xml(xml).await.unwrap().0.uuid
}

#[tokio::test]
async fn a_port_joins_with_its_host_end_and_leaves_when_the_start_fails_or_the_domain_stops() {
    let h = Harness::new();
    let (net, _) = h.handle.network_define_xml(NAT.into()).await.unwrap();
    h.handle.network_start(net.uuid).await.unwrap();
    let uuid = define_on_lan(&h, "web").await;
    let last = |h: &Harness| h.networks.log().last().cloned().unwrap_or_default();

    // Refused by the driver, or failed by it later: the port leaves.
    h.driver.world().refuse.insert("web".into());
    h.handle.start(uuid).await.unwrap_err();
    assert_eq!(last(&h), "unport lan 52:54:00:00:00:01 web");
    h.driver.world().refuse.clear();
    h.driver.world().fail.insert("web".into());
    h.handle.start(uuid).await.unwrap_err();
    assert_eq!(last(&h), "unport lan 52:54:00:00:00:01 web");
    h.driver.world().fail.clear();

    // Started: the port is named after the live host end, and the
    // driver makes that end in the network's port group.
    h.handle.start(uuid).await.unwrap();
    let plugged = last(&h);
    assert!(
        plugged.starts_with("port lan 52:54:00:00:00:01 web lxv"),
        "{plugged}"
    );
    let live = h.handle.get_xml(uuid, XmlFlags(0)).await.unwrap();
    let end = plugged.rsplit(' ').next().unwrap();
    assert!(live.contains(&format!("<target dev='{end}'/>")), "{live}");
    let port = h.driver.world().started_ports["web"]["lan"].clone();
    assert_eq!(port.group, Some(0x4000_0001));
    h.handle.destroy(uuid).await.unwrap();
    assert_eq!(last(&h), "unport lan 52:54:00:00:00:01 web");
}

#[tokio::test]
async fn a_network_that_cannot_take_a_port_refuses_the_start_and_names_itself() {
    let h = Harness::new();
    let (net, _) = h.handle.network_define_xml(NAT.into()).await.unwrap();
    h.handle.network_start(net.uuid).await.unwrap();
    let uuid = define_on_lan_with(&h, "web", "52:54:00:00:00:ee").await;
    let refused = h.handle.start(uuid).await.unwrap_err();
    assert!(
        matches!(&refused, CoreError::PortRefused { network, index: 1, .. } if network == "lan"),
        "{refused}"
    );
    let chain = crate::error_chain::error_chain(&refused);
    assert!(
        chain.contains("its interface #1 cannot join network 'lan'")
            && chain.contains("network lan: no free address left"),
        "{chain}"
    );
    assert!(h.driver.log().is_empty(), "nothing reached the driver");
}

#[tokio::test]
async fn a_domain_on_a_network_starts_only_while_the_network_is_active() {
    let h = Harness::new();
    let (net, _) = h.handle.network_define_xml(NAT.into()).await.unwrap();
    let uuid = define_on_lan(&h, "web").await;
    let refused = h.handle.start(uuid).await.unwrap_err();
    assert!(
        matches!(&refused, CoreError::NetworkUnavailable { network, index: 1, .. } if network == "lan"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("lxvirt net-start lan"),
        "{refused}"
    );
    assert!(h.driver.log().is_empty(), "nothing reached the driver");

    h.handle.network_start(net.uuid).await.unwrap();
    let active = h
        .handle
        .network_lookup(Lookup::Uuid(net.uuid))
        .await
        .unwrap();
    assert!(active.active);
    h.handle.start(uuid).await.unwrap();
    assert_eq!(h.driver.log(), ["start web"]);
    assert!(
        h.networks
            .log()
            .iter()
            .any(|l| l.starts_with("port lan 52:54:00:00:00:01 web lxv")),
        "{:?}",
        h.networks.log()
    );

    // In use: destroy refused naming the domain, unless forced.
    let in_use = h.handle.network_destroy(net.uuid, false).await.unwrap_err();
    assert!(
        matches!(&in_use, CoreError::NetworkInUse { domains, .. } if domains == &["web".to_owned()]),
        "{in_use}"
    );
    h.handle.destroy(uuid).await.unwrap();
    h.handle.network_destroy(net.uuid, false).await.unwrap();
    let inactive = h
        .handle
        .network_lookup(Lookup::Uuid(net.uuid))
        .await
        .unwrap();
    assert!(!inactive.active && inactive.persistent);
    assert_eq!(h.networks.log().last().unwrap(), "stop lan");
}

#[tokio::test]
async fn a_transient_network_goes_away_when_destroyed_and_a_failed_one_at_once() {
    let h = Harness::new();
    let (uuid, _) = h.handle.network_create_xml(NAT.into()).await.unwrap();
    let summary = h.handle.network_lookup(Lookup::Uuid(uuid)).await.unwrap();
    assert!(summary.active && !summary.persistent);
    let again = h.handle.network_start(uuid).await.unwrap_err();
    assert!(again.to_string().contains("already active"), "{again}");
    h.handle.network_destroy(uuid, false).await.unwrap();
    assert!(h.handle.network_lookup(Lookup::Uuid(uuid)).await.is_err());

    let broken = NAT.replace("<name>lan</name>", "<name>broken</name>");
    let error = h.handle.network_create_xml(broken).await.unwrap_err();
    assert!(matches!(error, CoreError::Network(_)), "{error}");
    assert!(
        h.handle
            .network_lookup(Lookup::Name("broken".into()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_restarted_daemon_takes_its_active_networks_over() {
    let h = Harness::new();
    let (net, _) = h.handle.network_define_xml(NAT.into()).await.unwrap();
    h.handle.network_start(net.uuid).await.unwrap();
    let h = h.restart();
    let mut active = false;
    for _ in 0..500 {
        if h.networks.log().contains(&"reconnect lan".to_owned()) {
            active = h
                .handle
                .network_lookup(Lookup::Uuid(net.uuid))
                .await
                .unwrap()
                .active;
            if active {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(active, "{:?}", h.networks.log());
    assert_eq!(
        h.networks
            .log()
            .iter()
            .filter(|l| l.starts_with("start"))
            .count(),
        1,
        "taken over, not started again: {:?}",
        h.networks.log()
    );
}

#[tokio::test]
async fn interface_counters_are_found_by_inside_name_host_name_or_mac() {
    let h = Harness::new();
    let xml = domain_xml("web", "").replace(
        "<console type='pty'/>",
        "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='lxvtweb0'/></interface><console type='pty'/>",
    );
    let uuid = h.handle.define_xml(xml).await.unwrap().0.uuid;
    let early = h
        .handle
        .interface_stats(uuid, "eth0".into())
        .await
        .unwrap_err();
    assert!(matches!(early, CoreError::NotRunning { .. }), "{early}");
    h.handle.start(uuid).await.unwrap();
    for device in ["eth0", "lxvtweb0", "52:54:00:00:00:01"] {
        let counters = h.handle.interface_stats(uuid, device.into()).await.unwrap();
        assert_eq!(counters.rx_packets, 3, "{device}");
    }
    let unknown = h
        .handle
        .interface_stats(uuid, "eth9".into())
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("no interface 'eth9'"),
        "{unknown}"
    );
    let agent = h
        .handle
        .interface_addresses(uuid, crate::core::types::AddressSource::Agent)
        .await
        .unwrap();
    assert_eq!(
        agent[0].addresses,
        vec![("10.251.9.7".parse().unwrap(), 24)]
    );
}

#[tokio::test]
async fn interfaces_attach_and_detach_live_config_or_both() {
    use crate::core::manager::DeviceChange;
    use crate::core::types::AffectFlags;
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let nic = "<interface type='ethernet'><mac address='52:54:00:00:00:09'/></interface>";
    // Not running: CURRENT is the definition; LIVE is refused.
    let refused = h
        .handle
        .change_device(
            uuid,
            DeviceChange::Attach,
            nic.into(),
            AffectFlags(AffectFlags::LIVE),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("start it first"), "{refused}");
    h.handle
        .change_device(uuid, DeviceChange::Attach, nic.into(), AffectFlags(0))
        .await
        .unwrap();
    let config = h
        .handle
        .get_xml(uuid, XmlFlags(XmlFlags::INACTIVE))
        .await
        .unwrap();
    assert!(config.contains("52:54:00:00:00:09"), "{config}");
    let twice = h
        .handle
        .change_device(uuid, DeviceChange::Attach, nic.into(), AffectFlags(0))
        .await
        .unwrap_err();
    assert!(
        twice.to_string().contains("MAC 52:54:00:00:00:09 already"),
        "{twice}"
    );

    // Running: CURRENT is live only; the live XML has it with the name the
    // driver gave and a host-side name; the definition is unchanged.
    h.handle.start(uuid).await.unwrap();
    let second = "<interface type='ethernet'><mac address='52:54:00:00:00:0a'/></interface>";
    h.handle
        .change_device(uuid, DeviceChange::Attach, second.into(), AffectFlags(0))
        .await
        .unwrap();
    let live = h.handle.get_xml(uuid, XmlFlags(0)).await.unwrap();
    assert!(
        live.contains("52:54:00:00:00:0a") && live.contains("<guest dev='eth1'/>"),
        "{live}"
    );
    assert!(live.matches("<target dev='lxv").count() >= 1, "{live}");
    let config = h
        .handle
        .get_xml(uuid, XmlFlags(XmlFlags::INACTIVE))
        .await
        .unwrap();
    assert!(!config.contains("52:54:00:00:00:0a"), "{config}");
    // Both: detached from the instance and the definition.
    h.handle
        .change_device(
            uuid,
            DeviceChange::Detach,
            nic.into(),
            AffectFlags(AffectFlags::LIVE | AffectFlags::CONFIG),
        )
        .await
        .unwrap();
    let live = h.handle.get_xml(uuid, XmlFlags(0)).await.unwrap();
    let config = h
        .handle
        .get_xml(uuid, XmlFlags(XmlFlags::INACTIVE))
        .await
        .unwrap();
    assert!(!live.contains("52:54:00:00:00:09") && !config.contains("52:54:00:00:00:09"));
    let log = h.driver.log();
    assert!(
        log.contains(&"attach web".to_owned()) && log.contains(&"detach web".to_owned()),
        "{log:?}"
    );
    let missing = h
        .handle
        .change_device(uuid, DeviceChange::Detach, nic.into(), AffectFlags(0))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("no such interface"),
        "{missing}"
    );
}

#[tokio::test]
async fn disks_filesystems_and_hostdevs_attach_detach_and_update() {
    use crate::core::manager::DeviceChange;
    use crate::core::types::AffectFlags;
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let change = |change, xml: &str, flags| {
        h.handle
            .change_device(uuid, change, xml.to_owned(), AffectFlags(flags))
    };
    let fs = "<filesystem type='mount'><source dir='/srv/a'/><target dir='/mnt/a'/></filesystem>";
    let fs_ro = "<filesystem type='mount'><source dir='/srv/a'/><target dir='/mnt/a'/><readonly/></filesystem>";
    let disk =
        "<disk type='block' device='disk'><source dev='/dev/loop7'/><target dev='sdz'/></disk>";
    let live_xml = || h.handle.get_xml(uuid, XmlFlags(0));
    let config_xml = || h.handle.get_xml(uuid, XmlFlags(XmlFlags::INACTIVE));

    // Not running: the definition gets them.
    change(DeviceChange::Attach, fs, 0).await.unwrap();
    assert!(
        config_xml()
            .await
            .unwrap()
            .contains("<target dir='/mnt/a'/>")
    );
    let twice = change(DeviceChange::Attach, fs, 0).await.unwrap_err();
    assert!(
        twice
            .to_string()
            .contains("<filesystem> with target '/mnt/a' already"),
        "{twice}"
    );
    change(DeviceChange::Update, fs_ro, 0).await.unwrap();
    let config = config_xml().await.unwrap();
    assert!(config.contains("<readonly/>"), "{config}");
    change(DeviceChange::Detach, fs, 0).await.unwrap();
    assert!(!config_xml().await.unwrap().contains("/mnt/a"));
    let missing = change(DeviceChange::Update, fs, 0).await.unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("no <filesystem> with target '/mnt/a'"),
        "{missing}"
    );

    // Running: the driver is asked; the live XML follows, the definition
    // only with the config flag.
    h.handle.start(uuid).await.unwrap();
    change(DeviceChange::Attach, disk, 0).await.unwrap();
    change(
        DeviceChange::Attach,
        fs,
        AffectFlags::LIVE | AffectFlags::CONFIG,
    )
    .await
    .unwrap();
    let live = live_xml().await.unwrap();
    assert!(
        live.contains("<target dev='sdz'/>") && live.contains("/mnt/a"),
        "{live}"
    );
    let config = config_xml().await.unwrap();
    assert!(
        !config.contains("sdz") && config.contains("/mnt/a"),
        "{config}"
    );
    change(DeviceChange::Update, fs_ro, 0).await.unwrap();
    assert!(live_xml().await.unwrap().contains("<readonly/>"));
    assert!(!config_xml().await.unwrap().contains("<readonly/>"));
    change(DeviceChange::Detach, disk, 0).await.unwrap();
    assert!(!live_xml().await.unwrap().contains("sdz"));
    // The driver's refusal leaves both definitions as they were.
    let hostdev = "<hostdev mode='capabilities' type='misc'><source><char>/dev/null</char></source></hostdev>";
    let refused = change(
        DeviceChange::Attach,
        hostdev,
        AffectFlags::LIVE | AffectFlags::CONFIG,
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("refuses host devices"),
        "{refused}"
    );
    assert!(!live_xml().await.unwrap().contains("hostdev"));
    assert!(!config_xml().await.unwrap().contains("hostdev"));
    // A running domain's interface changes only its link state and
    // bandwidth in place
    // (what the start generated may be left out); anything else is
    // refused, naming it.
    let nic = "<interface type='ethernet'><mac address='52:54:00:00:00:0b'/></interface>";
    change(DeviceChange::Attach, nic, 0).await.unwrap();
    let down = "<interface type='ethernet'><mac address='52:54:00:00:00:0b'/><link state='down'/></interface>";
    change(DeviceChange::Update, down, 0).await.unwrap();
    assert!(live_xml().await.unwrap().contains("<link state='down'/>"));
    // <bandwidth> changes live too.
    let shaped = "<interface type='ethernet'><mac address='52:54:00:00:00:0b'/><link state='down'/>\
                  <bandwidth><inbound average='100'/></bandwidth></interface>";
    change(DeviceChange::Update, shaped, 0).await.unwrap();
    let live = live_xml().await.unwrap();
    assert!(live.contains("<inbound average='100'/>"), "{live}");
    assert!(!config_xml().await.unwrap().contains("<bandwidth>"));
    let mtu = "<interface type='ethernet'><mac address='52:54:00:00:00:0b'/><mtu size='1400'/></interface>";
    let update = change(DeviceChange::Update, mtu, 0).await.unwrap_err();
    let update = update.to_string();
    assert!(
        update.contains("only <link state> and <bandwidth>") && update.contains("<mtu> changed"),
        "{update}"
    );
    assert!(!live_xml().await.unwrap().contains("<mtu"));
    let log = h.driver.log();
    for verb in ["attach-device", "detach-device", "update-device"] {
        assert!(log.contains(&format!("{verb} web")), "{verb}: {log:?}");
    }
}

#[tokio::test]
async fn signals_go_to_running_or_paused_instances_through_the_table() {
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let error = h.handle.send_signal(uuid, 1, 15).await.unwrap_err();
    assert!(matches!(error, CoreError::InvalidState(_)), "{error}");
    assert!(error.to_string().contains("start it first"), "{error}");
    h.handle.start(uuid).await.unwrap();
    h.handle.send_signal(uuid, 1, 15).await.unwrap();
    // The driver's refusal comes back as it said it, with its kind.
    let error = h.handle.send_signal(uuid, 2, 15).await.unwrap_err();
    match &error {
        CoreError::Driver(e) => assert_eq!(e.kind, crate::driver::ErrorKind::InvalidArgument),
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("no process 2"), "{error}");
    h.handle.suspend(uuid).await.unwrap();
    h.handle.send_signal(uuid, 1, 0).await.unwrap();
    assert!(
        h.driver
            .world()
            .log
            .iter()
            .filter(|l| *l == "signal web")
            .count()
            == 3
    );
}

#[tokio::test]
async fn tuning_changes_the_instance_the_definition_or_both_and_a_refusal_nothing() {
    use crate::core::manager::{SchedulerParams, Tuning};
    use crate::core::types::AffectFlags;
    let h = Harness::new();
    let uuid = h.define("web", "").await;
    let shares = |n| {
        Tuning::Scheduler(SchedulerParams {
            shares: Some(n),
            ..SchedulerParams::default()
        })
    };
    let xml = |flags| h.handle.get_xml(uuid, XmlFlags(flags));
    // Shut off: the definition (current), never the instance.
    let refused = h
        .handle
        .tune(uuid, shares(300), AffectFlags(AffectFlags::LIVE))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("start it first"), "{refused}");
    h.handle
        .tune(uuid, shares(300), AffectFlags(0))
        .await
        .unwrap();
    assert!(xml(0).await.unwrap().contains("<shares>300</shares>"));
    h.handle.start(uuid).await.unwrap();
    // Running: the instance only, by default.
    h.handle
        .tune(uuid, shares(400), AffectFlags(0))
        .await
        .unwrap();
    assert!(xml(0).await.unwrap().contains("<shares>400</shares>"));
    let config = xml(XmlFlags::INACTIVE).await.unwrap();
    assert!(config.contains("<shares>300</shares>"), "{config}");
    // Both.
    let both = AffectFlags(AffectFlags::LIVE | AffectFlags::CONFIG);
    h.handle.tune(uuid, shares(500), both).await.unwrap();
    assert!(xml(0).await.unwrap().contains("<shares>500</shares>"));
    assert!(
        xml(XmlFlags::INACTIVE)
            .await
            .unwrap()
            .contains("<shares>500</shares>")
    );
    // The driver refuses (the fake refuses 2 shares): neither changes.
    let error = h.handle.tune(uuid, shares(2), both).await.unwrap_err();
    assert!(
        error.to_string().contains("refused cpu.shares 2"),
        "{error}"
    );
    assert!(xml(0).await.unwrap().contains("<shares>500</shares>"));
    assert!(
        xml(XmlFlags::INACTIVE)
            .await
            .unwrap()
            .contains("<shares>500</shares>")
    );
    // Out of range for the definition: refused before the driver is asked.
    let before = h.driver.world().log.len();
    let error = h.handle.tune(uuid, shares(1), both).await.unwrap_err();
    assert!(error.to_string().contains("<shares>"), "{error}");
    assert_eq!(h.driver.world().log.len(), before);
    // Another change may follow: the first is no longer in flight.
    h.handle
        .tune(uuid, shares(600), AffectFlags(0))
        .await
        .unwrap();
}

mod apply {
    use super::*;
    use crate::core::apply::{self, Action, ApplyOptions, Source, StepResult};

    fn source(origin: &str, xml: String, autostart: bool) -> Source {
        Source {
            origin: origin.to_owned(),
            xml,
            autostart,
        }
    }

    fn lan() -> String {
        network_xml("lan", "<ip address='10.77.0.1' prefix='24'/>")
    }

    /// Each step as "action kind name".
    fn steps(outcomes: &[apply::Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| format!("{} {} {}", o.step.action.as_str(), o.step.kind, o.step.name))
            .collect()
    }

    async fn run(h: &Harness, sources: &[Source], options: ApplyOptions) -> Vec<apply::Outcome> {
        let (outcomes, _) = apply::apply(&h.handle, sources.to_vec(), options)
            .await
            .unwrap();
        for o in &outcomes {
            assert_eq!(o.result, StepResult::Done, "{o:?}");
        }
        outcomes
    }

    #[tokio::test]
    async fn apply_defines_in_order_and_a_second_run_changes_nothing() {
        let h = Harness::new();
        let sources = [
            source("web.xml", domain_xml("web", ""), true),
            source("db.xml", domain_xml("db", ""), false),
            source("net/lan.xml", lan(), true),
        ];
        let options = ApplyOptions::default();
        let plan = h.handle.plan(sources.to_vec(), options).await.unwrap();
        let planned: Vec<String> = plan
            .iter()
            .map(|s| format!("{} {} {}", s.action.as_str(), s.kind, s.name))
            .collect();
        assert_eq!(
            planned,
            [
                "define network lan",
                "autostart network lan",
                "define domain db",
                "define domain web",
                "autostart domain web",
            ]
        );
        // A new definition's diff adds the canonical document.
        assert!(plan[2].diff.starts_with("--- /dev/null\n+++ domain db\n"));
        assert!(
            plan[2].diff.contains("+  <name>db</name>"),
            "{}",
            plan[2].diff
        );
        assert!(
            h.handle.list().await.unwrap().is_empty(),
            "a plan changes nothing"
        );

        assert_eq!(steps(&run(&h, &sources, options).await), planned);
        let web = h.handle.lookup(Lookup::Name("web".into())).await.unwrap();
        assert!(web.autostart && web.persistent);
        assert!(run(&h, &sources, options).await.is_empty(), "idempotent");

        // Formatting is no change; a changed value is an update with a diff.
        let reformatted = domain_xml("web", "").replace("><", ">\n  <");
        let mut changed = sources.to_vec();
        changed[0] = source("web.xml", reformatted, true);
        assert!(
            h.handle
                .plan(changed.clone(), options)
                .await
                .unwrap()
                .is_empty()
        );
        changed[1] = source("db.xml", domain_xml("db", "").replace("64", "128"), false);
        let plan = h.handle.plan(changed.clone(), options).await.unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].action, Action::Update);
        assert!(
            plan[0]
                .diff
                .contains("-  <memory unit='KiB'>65536</memory>\n-  <currentMemory"),
            "{}",
            plan[0].diff
        );
        // The uuid define gave it is kept: still the same domain.
        let db = h.handle.lookup(Lookup::Name("db".into())).await.unwrap();
        run(&h, &changed, options).await;
        let after = h.handle.lookup(Lookup::Name("db".into())).await.unwrap();
        assert_eq!(after.uuid, db.uuid);
        let xml = h.handle.get_xml(db.uuid, XmlFlags(0)).await.unwrap();
        assert!(xml.contains("131072"), "{xml}");
    }

    #[tokio::test]
    async fn one_wrong_document_refuses_the_whole_run() {
        let h = Harness::new();
        h.define("kept", "").await;
        let sources = [
            source("a.xml", domain_xml("a", ""), false),
            source("broken.xml", "<domain type='lxc'><name>b".into(), false),
            source(
                "noinit.xml",
                domain_xml("c", "").replace("<init>/bin/sh</init>", ""),
                false,
            ),
            source("other.xml", "<pool/>".into(), false),
            source("again.xml", domain_xml("a", ""), false),
        ];
        let options = ApplyOptions {
            prune: true,
            ..ApplyOptions::default()
        };
        let error = apply::apply(&h.handle, sources.to_vec(), options)
            .await
            .unwrap_err();
        let CoreError::ApplyRefused(refusals) = &error else {
            panic!("{error:?}");
        };
        let origins: Vec<&str> = refusals.iter().map(|r| r.origin.as_str()).collect();
        assert_eq!(
            origins,
            ["broken.xml", "noinit.xml", "other.xml", "again.xml"]
        );
        assert!(
            refusals[3].problem.contains("also defined by a.xml"),
            "{error}"
        );
        assert!(refusals[2].problem.contains("<pool>"), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with("nothing was applied: 4 documents are refused"),
            "{message}"
        );
        let names: Vec<String> = h
            .handle
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["kept"], "nothing defined, nothing pruned");
    }

    #[tokio::test]
    async fn prune_and_converge_state_follow_the_documents() {
        let h = Harness::new();
        let stale = h.define("stale", "").await;
        h.handle.start(stale).await.unwrap();
        let idle = h.define("idle", "").await;
        let mut sources = vec![
            source("web.xml", domain_xml("web", ""), true),
            source("idle.xml", domain_xml("idle", ""), false),
            source("lan.xml", lan(), true),
        ];
        // Without --prune nothing goes; without --converge-state nothing runs.
        let plain = run(&h, &sources, ApplyOptions::default()).await;
        assert_eq!(
            steps(&plain),
            [
                "define network lan",
                "autostart network lan",
                "define domain web",
                "autostart domain web",
            ]
        );
        let web = h.handle.lookup(Lookup::Name("web".into())).await.unwrap();
        assert_eq!(h.state(web.uuid).await.0, State::Shutoff);

        let converge = ApplyOptions {
            prune: true,
            converge_state: true,
            shutdown_timeout: Duration::from_secs(5),
            ..ApplyOptions::default()
        };
        let done = run(&h, &sources, converge).await;
        assert_eq!(
            steps(&done),
            [
                "stop domain stale",
                "undefine domain stale",
                "start network lan",
                "start domain web",
            ]
        );
        assert_eq!(h.state(web.uuid).await.0, State::Running);
        assert!(
            h.handle.lookup(Lookup::Uuid(stale)).await.is_err(),
            "stopped and undefined"
        );
        assert_eq!(h.state(idle).await.0, State::Shutoff);
        assert!(run(&h, &sources, converge).await.is_empty(), "converged");

        // web no longer autostarts: it is stopped.
        sources[0].autostart = false;
        let done = run(&h, &sources, converge).await;
        assert_eq!(steps(&done), ["stop domain web", "no-autostart domain web"]);
        assert_eq!(h.state(web.uuid).await.0, State::Shutoff);
    }

    #[tokio::test]
    async fn a_failed_step_ends_the_run_after_its_phase() {
        let h = Harness::new();
        h.driver.world().refuse.insert("a".into());
        let sources = [
            source("a.xml", domain_xml("a", ""), true),
            source("b.xml", domain_xml("b", ""), true),
            // The test network driver fails the start of "broken".
            source("broken.xml", network_xml("broken", ""), true),
        ];
        let options = ApplyOptions {
            converge_state: true,
            ..ApplyOptions::default()
        };
        let (outcomes, _) = apply::apply(&h.handle, sources.to_vec(), options)
            .await
            .unwrap();
        let results: Vec<String> = outcomes
            .iter()
            .map(|o| {
                format!(
                    "{}: {}",
                    steps(std::slice::from_ref(o))[0],
                    o.result.as_str()
                )
            })
            .collect();
        assert_eq!(
            results,
            [
                "define network broken: done",
                "autostart network broken: done",
                "define domain a: done",
                "define domain b: done",
                "autostart domain a: done",
                "autostart domain b: done",
                "start network broken: failed",
                "start domain a: skipped",
                "start domain b: skipped",
            ]
        );
        let StepResult::Failed(error) = &outcomes[6].result else {
            unreachable!()
        };
        assert!(error.contains("taken0"), "{error}");
        assert_eq!(h.driver.starts(), 0);

        // Both domain starts run side by side: one refused, one started.
        let fixed = &sources[..2];
        let (outcomes, _) = apply::apply(&h.handle, fixed.to_vec(), options)
            .await
            .unwrap();
        let results: Vec<&str> = outcomes.iter().map(|o| o.result.as_str()).collect();
        assert_eq!(steps(&outcomes), ["start domain a", "start domain b"]);
        assert_eq!(results, ["failed", "done"]);
    }
}
