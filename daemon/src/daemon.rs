//! The daemon as a library: everything `lxvirtd`'s main does, so that
//! tests can run a real daemon in-process.

use crate::core::host_shutdown::HostShutdownPolicy;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::mpsc;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::cgroup::{Cgroups, Layout};
use crate::core::store::{LoadProblem, Store, StoreError};
use crate::core::{ImageStore, Manager, ManagerConfig};
use crate::dbus::{self, Authorizer};
use crate::domain::UsernsMode;
use crate::domain::{DomainType, NetworkDef};
use crate::driver::Drivers;
use crate::error_chain::error_chain;
use crate::host::{HostCapabilities, HostPaths};
use crate::lxc::convert::ConvertSettings;
use crate::lxc::driver::LxcDriver;
use crate::lxc::instance::LxcConfig;
use crate::lxc::protocol::MonitorLog;
use crate::net::virtual_network::{self, HostNetworks};
use crate::qemu::instance::{QemuConfig, QemuDriver};
use crate::security::Security;
use crate::security::detect::Detected;
use crate::security::userns::{IdRange, IdRanges, UsernsError};
use crate::security::{HostSelinux, SecurityConfig};
use crate::service::notify::Notifier;
use crate::service::polkit::Polkit;
use crate::service::systemd::{self, SystemdHost};
use crate::storage::BackendKind;
use crate::storage::thin::ThinConfig;

/// Which bus to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Address(String),
}

/// Daemon settings; every path is configurable.
#[derive(Debug, Clone)]
pub struct Config {
    pub bus: Bus,
    /// Persistent definitions (`/etc/lxvirt`).
    pub config_dir: PathBuf,
    /// Live state, sockets, lock (`/run/lxvirt`).
    pub run_dir: PathBuf,
    /// Images and writable layers (`/var/lib/lxvirt`).
    pub state_dir: PathBuf,
    /// Group whose members may mutate besides root.
    pub admin_group: Option<String>,
    pub host: HostPaths,
    /// The per-container monitor program.
    pub monitor_exe: PathBuf,
    /// Where monitors log: their file, or the journal as the daemon does.
    pub monitor_log: MonitorLog,
    /// pids.max of each container.
    pub pids_max: Option<u64>,
    /// What `ShutdownAll` does by default (at host shutdown).
    pub host_shutdown: HostShutdownPolicy,
    /// The most lxvirtd may raise `kernel.pty.max` to for consoles.
    pub pty_max_limit: u64,
    /// Set `favordynmods` on the cgroup2 mount (see `cgroup::dynmods`).
    pub cgroup_favor_dynmods: bool,
    /// The cgroup partition of domains without `<resource><partition>`.
    pub default_partition: PathBuf,
    /// SELinux paths, default base labels, default confinement.
    pub security: SecurityConfig,
    /// The image store's backend.
    pub storage_backend: BackendKind,
    /// The device-mapper backend's pool, file system and volume size.
    pub dm: ThinConfig,
    /// The host ids handed out to containers' user namespaces.
    pub userns_range: IdRange,
    /// How domains without `<idmap>` or `<lxvirt:userns>` run.
    pub default_userns: UsernsMode,
    /// Define the `default` network at the first start (no networks yet).
    pub default_network: bool,
    /// The service manager to tell of readiness, stopping and liveness.
    pub notifier: Option<Arc<Notifier>>,
}

/// How far lxvirtd raises `kernel.pty.max` by default: room for ~64,000
/// consoles.
pub const DEFAULT_PTY_MAX_LIMIT: u64 = 65536;

impl Default for Config {
    fn default() -> Self {
        Config {
            bus: Bus::System,
            config_dir: "/etc/lxvirt".into(),
            run_dir: "/run/lxvirt".into(),
            state_dir: "/var/lib/lxvirt".into(),
            admin_group: Some("lxvirt".into()),
            host: HostPaths::default(),
            monitor_exe: LxcDriver::default_monitor_exe(),
            monitor_log: MonitorLog::File,
            pids_max: Some(16384),
            host_shutdown: HostShutdownPolicy::default(),
            pty_max_limit: DEFAULT_PTY_MAX_LIMIT,
            cgroup_favor_dynmods: true,
            default_partition: "/machine".into(),
            security: SecurityConfig::default(),
            storage_backend: BackendKind::Overlay,
            dm: ThinConfig::default(),
            userns_range: IdRange::DEFAULT,
            default_userns: UsernsMode::Auto,
            default_network: true,
            notifier: None,
        }
    }
}

/// Defines the `default` network of a fresh host, marked to autostart;
/// a host where that cannot be done just has none (and is told why).
fn define_default_network(store: &Store<NetworkDef>) {
    use crate::net::{HostLinks, Netlink};
    let routes = Netlink::open().and_then(|netlink| netlink.routes(false));
    let def = match routes {
        Ok(routes) => crate::net::default_network::definition(&routes),
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the host's routes: no default network");
            return;
        }
    };
    let Some(mut def) = def else {
        tracing::warn!(
            "the host routes every subnet of 192.168.122.0/24 to 192.168.254.0/24: no default network"
        );
        return;
    };
    def.bridge.name = Some("lxvirtbr0".into());
    let saved = store
        .save(&def)
        .and_then(|()| store.set_autostart(def.name(), true));
    match saved {
        Ok(()) => {
            tracing::info!(network = def.name(), subnet = %def.ips[0].subnet(), "defined the default network")
        }
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "cannot define the default network")
        }
    }
}

/// Why the daemon could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another lxvirtd is running with run directory {run_dir} (lock {path} is held); stop it or pass another --run-dir"
    )]
    AlreadyRunning { run_dir: PathBuf, path: PathBuf },
    #[error("cannot open the definition store")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error("cannot connect to {bus}; {hint}")]
    Connect {
        bus: String,
        hint: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error(
        "the bus closed lxvirtd's connection (the bus daemon stopped, or refused a message); \
         containers keep running and lxvirtd finds them again when it is started"
    )]
    BusLost,
    #[error("cannot export objects on the bus")]
    Export(#[source] zbus::Error),
    #[error("cannot own bus name {name}")]
    RequestName {
        name: &'static str,
        #[source]
        source: zbus::fdo::Error,
    },
    #[error("bus name {name} is owned by another process (another lxvirtd?); stop it first")]
    NameTaken { name: &'static str },
}

/// Holds the single-instance lock for the daemon's lifetime.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

impl InstanceLock {
    pub fn acquire(run_dir: &std::path::Path) -> Result<InstanceLock, DaemonError> {
        let path = run_dir.join("lxvirtd.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| DaemonError::Lock {
                path: path.clone(),
                source,
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                DaemonError::AlreadyRunning {
                    run_dir: run_dir.to_owned(),
                    path: path.clone(),
                }
            } else {
                DaemonError::Lock {
                    path: path.clone(),
                    source: errno.into(),
                }
            }
        })?;
        Ok(InstanceLock { _lock: lock })
    }
}

/// How often the daemon returns freed heap memory to the kernel.
const HEAP_RELEASE_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// The id blocks of persistent domains, in the state directory.
const USERNS_STATE: &str = "userns";
/// Below the state directory: the containers' console logs.
const CONSOLE_LOGS: &str = "console";

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let console_logs = config.state_dir.join(CONSOLE_LOGS);
    for dir in [
        &config.config_dir,
        &config.run_dir,
        &config.state_dir,
        &console_logs,
    ] {
        fs::create_dir_all(dir).map_err(|source| DaemonError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let _lock = InstanceLock::acquire(&config.run_dir)?;
    match crate::sys::process::raise_nofile_limit() {
        Ok((from, to)) if from < to => {
            tracing::info!(
                from,
                to,
                "raised the open files limit: a descriptor per running domain"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(error = %error, "cannot raise the open files limit"),
    }

    let store = Store::open(&config.config_dir)?;
    let loaded = store.load()?;
    for problem in &loaded.problems {
        if matches!(problem, LoadProblem::Leftover { .. }) {
            tracing::warn!(path = %problem.path().display(), problem = %error_chain(problem), "an interrupted write left a file");
        } else {
            tracing::warn!(path = %problem.path().display(), problem = %error_chain(problem), "skipped a domain definition");
        }
    }
    let first_start = !config.config_dir.join("networks").exists();
    let network_store = Store::<NetworkDef>::open(&config.config_dir)?;
    if first_start && config.default_network {
        define_default_network(&network_store);
    }
    let networks = network_store.load()?;
    for problem in &networks.problems {
        tracing::warn!(path = %problem.path().display(), problem = %error_chain(problem), "skipped a network definition");
    }
    // Under SELinux the thin backend's own mounts of volumes get the base
    // container file label, which the daemon's domain may write.
    let mut dm = config.dm.clone();
    if let Ok(Detected::Selinux(host)) =
        crate::security::detect::detect(&config.security.paths, &config.security.defaults)
    {
        dm.mount_context.get_or_insert(host.base.file);
    }
    let (images, opened) = ImageStore::open(&config.state_dir, config.storage_backend, &dm);
    match (&images, opened) {
        (ImageStore::Unavailable(why), _) => {
            tracing::warn!(backend = %why.backend, reason = %why.reason, "the image store is not available: image operations and image-rooted domains will fail; choose another --storage-backend");
        }
        (ImageStore::Ready(_), Some(report)) => {
            for path in &report.removed {
                tracing::warn!(path = %path.display(), "removed unfinished image store work of an earlier run");
            }
            for tag in &report.dangling_tags {
                tracing::warn!(name = %tag, "dropped an image name whose image is gone");
            }
            tracing::info!(backend = %config.storage_backend, "image store ready");
        }
        (ImageStore::Ready(_), None) => {}
    }
    let (id_ranges, ids_report) = IdRanges::open(
        config.userns_range,
        Some(&config.state_dir.join(USERNS_STATE)),
    )?;
    for (domain, start) in &ids_report.dropped {
        tracing::warn!(domain = %domain, start, range = %config.userns_range, "forgot a domain's host ids outside --userns-range; it gets new ones at its next start");
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let manager_config = ManagerConfig {
        run_dir: config.run_dir.clone(),
        images: images.clone(),
        default_userns: config.default_userns,
    };
    if config.cgroup_favor_dynmods {
        match crate::cgroup::dynmods::favor_dynamic_changes() {
            Ok(Some(mount)) => {
                tracing::info!(mount = %mount.display(), "set favordynmods on the cgroup2 mount: moving a container's init into its cgroups no longer waits for an RCU grace period")
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error, "cannot set favordynmods on the cgroup2 mount: each start waits for an RCU grace period")
            }
        }
    }
    // systemd, machined and polkit live there, whichever bus lxvirtd serves.
    let system_bus = zbus::Connection::system().await.ok();
    let cgroups = match Cgroups::detect() {
        Ok(cgroups) => Some(std::sync::Arc::new(cgroups)),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "no usable cgroup hierarchy: containers cannot start");
            None
        }
    };
    let systemd = systemd_host(system_bus.as_ref(), cgroups.as_deref())
        .await
        .map(Arc::new);
    let lxc = Arc::new(LxcDriver::new(LxcConfig {
        monitor_exe: config.monitor_exe.clone(),
        monitor_log: config.monitor_log,
        settings: ConvertSettings {
            run_dir: config.run_dir.clone(),
            pids_max: config.pids_max,
            default_partition: config.default_partition.clone(),
            console_log_dir: Some(console_logs),
        },
        cgroups: cgroups.clone(),
        ptys: std::sync::Arc::new(crate::lxc::ptys::PtyPool::new(config.pty_max_limit)),
        systemd: systemd.clone(),
    }));
    let qemu = std::sync::Arc::new(QemuDriver::new(QemuConfig {
        run_dir: config.run_dir.clone(),
        emulator: QemuConfig::DEFAULT_EMULATOR.into(),
        default_partition: config.default_partition.clone(),
        pids_max: config.pids_max,
        cgroups,
        kvm_unavailable: crate::qemu::host::kvm_unavailable(&config.host),
        systemd,
    }));
    let drivers = Drivers::default()
        .with(DomainType::Lxc, lxc.clone())
        .with(DomainType::Kvm, qemu.clone())
        .with(DomainType::Qemu, qemu);
    let security = Security::detect(&config.security);
    let network_dir = virtual_network::run_dir(&config.run_dir);
    let network_driver =
        HostNetworks::new(network_dir.clone()).map_err(|source| DaemonError::CreateDir {
            path: network_dir,
            source,
        })?;
    let manager = Manager::new(
        store,
        loaded,
        (network_store, networks),
        std::sync::Arc::new(network_driver),
        manager_config,
        drivers,
        security,
        id_ranges,
        events_tx,
    );
    let initial = dbus::Initial {
        domains: manager.summaries(),
        networks: manager.network_summaries(),
    };
    let removed = lxc.remove_stale_logs(initial.domains.iter().map(|d| d.name.as_str()));
    if removed > 0 {
        tracing::info!(removed, "removed the monitor logs of domains that are gone");
    }
    let security = manager.security_report().clone();
    match &security.selinux {
        HostSelinux::Ready => tracing::info!(
            mode = security.mode.map_or("", |m| m.as_str()),
            default_confinement = security.default_confinement,
            "SELinux is active: containers get sVirt labels"
        ),
        HostSelinux::Absent(reason) => {
            tracing::info!(reason = %reason, "SELinux is not available: containers run unconfined")
        }
        HostSelinux::Unusable(_) => {}
    }
    tracing::info!(
        domains = initial.domains.len(),
        networks = initial.networks.len(),
        "loaded definitions"
    );
    let tenants = manager.tenants();
    let (handle, manager_task) = manager.spawn();

    let connection = connect(&config.bus).await?;
    let mut capabilities = HostCapabilities::probe(&config.host, security);
    capabilities.storage_in_use = (images.backend(), images.get().err().map(|why| why.reason));
    let capabilities = capabilities.to_xml();
    let adapter = dbus::serve(
        &connection,
        handle.clone(),
        Authorizer::new(config.admin_group.clone())
            .with_polkit(polkit(system_bus.as_ref()).await)
            .with_tenants(tenants),
        initial,
        dbus::ManagerSettings {
            capabilities_xml: capabilities,
            host_shutdown: config.host_shutdown,
        },
        images,
        events_rx,
    )
    .await
    .map_err(DaemonError::Export)?;
    let private_path = config.run_dir.join(dbus::private::SOCKET_NAME);
    let private = match dbus::private::bind(&private_path) {
        Ok(listener) => Some(adapter.serve_private(listener)),
        Err(error) => {
            tracing::warn!(path = %private_path.display(), %error, "no private socket: clients call through the bus only");
            None
        }
    };
    let reply = connection
        .request_name_with_flags(dbus::BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
        .map_err(|e| DaemonError::RequestName {
            name: dbus::BUS_NAME,
            source: e.into(),
        })?;
    if reply == RequestNameReply::Exists {
        return Err(DaemonError::NameTaken {
            name: dbus::BUS_NAME,
        });
    }
    tracing::info!(name = dbus::BUS_NAME, "lxvirtd ready");
    let watchdog = config.notifier.as_ref().map(|notifier| {
        notify(
            notifier,
            Notifier::ready,
            &format!("serving {}", dbus::BUS_NAME),
        );
        tokio::spawn(watchdog_pings(Arc::clone(notifier)))
    });
    let _ = handle.autostart().await;
    let heap = tokio::spawn(release_free_heap_periodically());

    let lost = tokio::select! {
        () = shutdown => false,
        () = connection.closed() => true,
    };
    if let Some(notifier) = &config.notifier {
        notify(
            notifier,
            Notifier::stopping,
            "stopping; containers keep running",
        );
    }
    if !lost {
        tracing::info!("shutting down");
        // Releasing the name first tells clients at once that we are gone.
        let _ = connection.release_name(dbus::BUS_NAME).await;
    }
    // Containers keep running under their monitors; the next lxvirtd finds
    // them through their status files.
    drop(connection);
    adapter.adapter.abort();
    if let Some(private) = private {
        private.abort();
        // Nobody answers there any more: clients fall back to the bus at once.
        let _ = std::fs::remove_file(&private_path);
    }
    manager_task.abort();
    // What no later daemon would know of until it looks for leftovers.
    lxc.remove_retired_now().await;
    heap.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if lost {
        Err(DaemonError::BusLost)
    } else {
        Ok(())
    }
}

/// systemd and machined, on a systemd host with the unified hierarchy:
/// containers and VMs then get scopes of their own (`service::systemd`). Elsewhere,
/// or when systemd cannot be reached, lxvirt makes its cgroups itself.
async fn systemd_host(
    system_bus: Option<&zbus::Connection>,
    cgroups: Option<&Cgroups>,
) -> Option<SystemdHost> {
    let unified = cgroups.is_some_and(|c| c.hierarchies().layout() == Layout::V2);
    if !systemd::booted() || !unified {
        return None;
    }
    let Some(system_bus) = system_bus else {
        tracing::warn!(
            "systemd runs but the system bus cannot be reached: domains' cgroups are lxvirt's own, outside machine.slice"
        );
        return None;
    };
    match SystemdHost::connect(system_bus).await {
        Ok(host) => {
            tracing::info!(
                "systemd host: domains run in scopes under machine.slice, registered with machined"
            );
            Some(host)
        }
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "systemd runs but cannot be reached: domains' cgroups are lxvirt's own, outside machine.slice");
            None
        }
    }
}

/// polkit's authority, asked about callers outside the admin group; where
/// polkit is not running the group rule decides alone.
async fn polkit(system_bus: Option<&zbus::Connection>) -> Option<Polkit> {
    let polkit = Polkit::new(system_bus?).await;
    polkit
        .inspect_err(|error| tracing::warn!(error = %error_chain(error), "polkit cannot be asked: only root and the admin group may manage domains"))
        .ok()
}

/// Sends a notification; a manager that stopped listening is only logged.
fn notify(notifier: &Notifier, send: fn(&Notifier, &str) -> std::io::Result<()>, status: &str) {
    if let Err(error) = send(notifier, status) {
        tracing::warn!(%error, "cannot notify the service manager");
    }
}

/// `WATCHDOG=1` at half the manager's timeout, from the runtime that
/// serves the bus: a daemon whose runtime hangs stops pinging and is
/// restarted.
async fn watchdog_pings(notifier: Arc<Notifier>) {
    let Some(every) = notifier.watchdog_every() else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if let Err(error) = notifier.notify("WATCHDOG=1") {
            tracing::warn!(%error, "cannot ping the service manager's watchdog");
        }
    }
}

/// A reply listing 6,000 domains allocates tens of megabytes for a moment;
/// glibc keeps freed memory that lies between live allocations, in each
/// thread's arena, so the daemon's RSS would stay at its peak. Returning
/// it now and then costs about a millisecond.
async fn release_free_heap_periodically() {
    let mut every = tokio::time::interval(HEAP_RELEASE_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = tokio::task::spawn_blocking(crate::sys::process::release_free_heap).await;
    }
}

async fn connect(bus: &Bus) -> Result<zbus::Connection, DaemonError> {
    let (builder, description, hint) = match bus {
        Bus::System => (
            zbus::connection::Builder::system(),
            "the system bus".to_owned(),
            "start dbus-daemon (systemctl start dbus) or pass --bus-address ADDR",
        ),
        Bus::Address(address) => (
            zbus::connection::Builder::address(address.as_str()),
            format!("bus {address}"),
            "check that a dbus-daemon listens there",
        ),
    };
    builder
        .build()
        .await
        .map_err(|source| DaemonError::Connect {
            bus: description,
            hint,
            source,
        })
}
