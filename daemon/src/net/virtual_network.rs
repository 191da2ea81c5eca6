//! A virtual network on the host: its bridge with its addresses, its
//! nftables table and its dnsmasq, brought up and down as one.
//!
//! [`HostNetworks`] is the [`NetworkDriver`] the daemon runs: each
//! operation runs on a blocking thread (netlink, `nft` and dnsmasq are
//! synchronous and short), and a started dnsmasq is watched by a task
//! that starts it again when it dies, until the network is destroyed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::NetworkDef;
use crate::domain::addr::Subnet;
use crate::driver::BoxFuture;
use crate::net::dnsmasq::{self, DnsmasqError, Files, Lease, Running};
use crate::net::firewall::{self, FirewallError};
use crate::net::port_filter::port_group;
use crate::net::{BridgeLink, HostLinks, IpAddress, LinkChange, LinkError, Links, Netlink};
use crate::sys::process::{pidfd_kill, wait_exit};

/// Why a network could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "network {network}: subnet {subnet} overlaps the host's route to {route} (dev {dev}); pick another <ip> for the network"
    )]
    HostRouteOverlap {
        network: String,
        subnet: String,
        route: String,
        dev: String,
    },
    #[error(
        "network {network}: the host already has an interface named {bridge}; name another <bridge name> or remove it"
    )]
    BridgeExists { network: String, bridge: String },
    #[error("network {network}: {step} failed: {source}")]
    Link {
        network: String,
        step: String,
        #[source]
        source: LinkError,
    },
    #[error("network {network}: cannot enable IP forwarding ({path}): {source}")]
    Forwarding {
        network: String,
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Dnsmasq(#[from] DnsmasqError),
    #[error("network {network}: {what}: {source}")]
    Io {
        network: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a started network runs besides its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkRuntime {
    /// The dnsmasq serving it: (pid, start time).
    pub dnsmasq: Option<(i32, u64)>,
}

/// What the core asks of the host for its virtual networks.
pub trait NetworkDriver: Send + Sync + std::fmt::Debug {
    /// Brings the network up: all of it, or nothing.
    fn start(&self, def: NetworkDef) -> BoxFuture<Result<NetworkRuntime, NetworkError>>;
    /// Takes over a network that ran before this daemon started: what is
    /// missing is made again, what runs is kept.
    fn reconnect(
        &self,
        def: NetworkDef,
        runtime: NetworkRuntime,
    ) -> BoxFuture<Result<NetworkRuntime, NetworkError>>;
    /// Takes the network down; what could not be removed is reported.
    fn stop(&self, def: NetworkDef) -> BoxFuture<Vec<NetworkError>>;
    /// The DHCP leases it has given.
    fn leases(&self, def: &NetworkDef) -> Vec<Lease>;
    /// A container's port joins the network: its MAC gets its name.
    fn add_port(&self, network: &str, mac: &str, name: &str);
    fn remove_port(&self, network: &str, mac: &str);
}

/// Host networks: bridges, nftables tables, dnsmasq.
#[derive(Debug, Clone)]
pub struct HostNetworks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `RUN/network`: dnsmasq's files.
    dir: PathBuf,
    /// The user dnsmasq drops to.
    user: String,
    /// The watchers of running dnsmasqs, by network.
    watchers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

/// How long a dnsmasq that died waits before it is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

impl HostNetworks {
    /// Networks whose files live in `dir` (made, searchable by dnsmasq's
    /// user, which reads its hosts files after dropping privileges).
    pub fn new(dir: PathBuf) -> std::io::Result<HostNetworks> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let user = if nix::unistd::User::from_name("dnsmasq")
            .ok()
            .flatten()
            .is_some()
        {
            "dnsmasq"
        } else {
            "nobody"
        };
        Ok(HostNetworks {
            inner: Arc::new(Inner {
                dir,
                user: user.to_owned(),
                watchers: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn files(&self, network: &str) -> Files {
        Files::new(&self.inner.dir, network)
    }

    /// Watches `running`; when it dies, starts it again.
    fn watch(&self, def: NetworkDef, running: Running) {
        let this = self.clone();
        let name = def.name().to_owned();
        let task = tokio::spawn(async move {
            let mut pidfd = running.pidfd;
            loop {
                wait_exit(pidfd).await;
                tracing::warn!(network = %def.name(), "dnsmasq exited; starting it again");
                tokio::time::sleep(RESTART_DELAY).await;
                let files = this.files(def.name());
                let bridge = bridge_of(&def).to_owned();
                let user = this.inner.user.clone();
                let def2 = def.clone();
                let started = tokio::task::spawn_blocking(move || {
                    dnsmasq::start(&def2, &bridge, &files, &user)
                })
                .await;
                match started {
                    Ok(Ok(running)) => pidfd = running.pidfd,
                    Ok(Err(error)) => {
                        tracing::error!(network = %def.name(), error = %crate::error_chain::error_chain(&error), "cannot start dnsmasq again; DHCP and DNS are down until the network is restarted");
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
        if let Ok(mut watchers) = self.inner.watchers.lock()
            && let Some(old) = watchers.insert(name, task)
        {
            old.abort();
        }
    }

    fn unwatch(&self, network: &str) {
        if let Ok(mut watchers) = self.inner.watchers.lock()
            && let Some(task) = watchers.remove(network)
        {
            task.abort();
        }
    }
}

fn bridge_of(def: &NetworkDef) -> &str {
    def.bridge.name.as_deref().unwrap_or_default()
}

impl NetworkDriver for HostNetworks {
    fn start(&self, def: NetworkDef) -> BoxFuture<Result<NetworkRuntime, NetworkError>> {
        let this = self.clone();
        Box::pin(async move {
            let files = this.files(def.name());
            let user = this.inner.user.clone();
            let def2 = def.clone();
            let started = tokio::task::spawn_blocking(move || bring_up(&def2, &files, &user))
                .await
                .map_err(|e| NetworkError::Io {
                    network: def.name().to_owned(),
                    what: "the start thread",
                    source: std::io::Error::other(e),
                })??;
            let runtime = NetworkRuntime {
                dnsmasq: started.as_ref().map(|r| (r.pid, r.start_time)),
            };
            if let Some(running) = started {
                this.watch(def, running);
            }
            Ok(runtime)
        })
    }

    fn reconnect(
        &self,
        def: NetworkDef,
        runtime: NetworkRuntime,
    ) -> BoxFuture<Result<NetworkRuntime, NetworkError>> {
        let this = self.clone();
        Box::pin(async move {
            let files = this.files(def.name());
            let user = this.inner.user.clone();
            let def2 = def.clone();
            let found =
                tokio::task::spawn_blocking(move || reconnect(&def2, runtime, &files, &user))
                    .await
                    .map_err(|e| NetworkError::Io {
                        network: def.name().to_owned(),
                        what: "the reconnect thread",
                        source: std::io::Error::other(e),
                    })??;
            let runtime = NetworkRuntime {
                dnsmasq: found.as_ref().map(|r| (r.pid, r.start_time)),
            };
            if let Some(running) = found {
                this.watch(def, running);
            }
            Ok(runtime)
        })
    }

    fn stop(&self, def: NetworkDef) -> BoxFuture<Vec<NetworkError>> {
        let this = self.clone();
        Box::pin(async move {
            this.unwatch(def.name());
            let files = this.files(def.name());
            let running = dnsmasq::find(&files);
            if let Some(running) = running {
                let _ = pidfd_kill(
                    std::os::fd::AsFd::as_fd(&running.pidfd),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), wait_exit(running.pidfd)).await;
            }
            tokio::task::spawn_blocking(move || bring_down(&def, &files))
                .await
                .unwrap_or_default()
        })
    }

    fn leases(&self, def: &NetworkDef) -> Vec<Lease> {
        let mut leases = dnsmasq::leases(&self.files(def.name()));
        for lease in &mut leases {
            let host = Subnet {
                address: lease.ip,
                prefix: if lease.ip.is_ipv4() { 32 } else { 128 },
            };
            if let Some(ip) = def.ips.iter().find(|ip| ip.subnet().overlaps(&host)) {
                lease.prefix = ip.prefix;
            }
        }
        leases
    }

    fn add_port(&self, network: &str, mac: &str, name: &str) {
        if let Err(error) = dnsmasq::add_port(&self.files(network), mac, None, name) {
            tracing::warn!(network, mac, error = %error, "cannot give a port its name in DNS");
        }
    }

    fn remove_port(&self, network: &str, mac: &str) {
        if dnsmasq::remove_port(&self.files(network), mac) {
            dnsmasq::reload(&self.files(network));
        }
    }
}

/// Refuses a subnet the host already routes elsewhere (a route of the
/// main table other than through `bridge` itself).
fn check_host_routes(
    def: &NetworkDef,
    netlink: &Netlink,
    bridge_index: Option<u32>,
) -> Result<(), NetworkError> {
    for ip in &def.ips {
        let subnet = ip.subnet();
        let link_error = |source| NetworkError::Link {
            network: def.name().to_owned(),
            step: "reading the host's routes".into(),
            source,
        };
        let routes = netlink
            .routes(subnet.address.is_ipv6())
            .map_err(link_error)?;
        for route in routes {
            if route.prefix == 0 || (bridge_index.is_some() && route.oif == bridge_index) {
                continue;
            }
            if route.destination.is_ipv6() && route.destination.to_string().starts_with("fe80") {
                continue;
            }
            let theirs = Subnet {
                address: route.destination,
                prefix: route.prefix,
            };
            if theirs.overlaps(&subnet) {
                let dev = route.oif.map_or_else(|| "?".to_owned(), link_name);
                return Err(NetworkError::HostRouteOverlap {
                    network: def.name().to_owned(),
                    subnet: subnet.to_string(),
                    route: theirs.to_string(),
                    dev,
                });
            }
        }
    }
    Ok(())
}

/// Brings a network up from nothing; on failure removes what it made.
fn bring_up(def: &NetworkDef, files: &Files, user: &str) -> Result<Option<Running>, NetworkError> {
    let network = def.name().to_owned();
    let bridge = bridge_of(def);
    let netlink = Netlink::open().map_err(|source| NetworkError::Link {
        network: network.clone(),
        step: "opening rtnetlink".into(),
        source,
    })?;
    if netlink
        .find(bridge)
        .map_err(|source| NetworkError::Link {
            network: network.clone(),
            step: format!("looking up {bridge}"),
            source,
        })?
        .is_some()
    {
        return Err(NetworkError::BridgeExists {
            network,
            bridge: bridge.to_owned(),
        });
    }
    check_host_routes(def, &netlink, None)?;
    let result = make(def, files, user, &netlink);
    if result.is_err() {
        for error in bring_down(def, files) {
            tracing::debug!(network = %network, error = %error, "undoing a failed start");
        }
    }
    result
}

fn make(
    def: &NetworkDef,
    files: &Files,
    user: &str,
    netlink: &Netlink,
) -> Result<Option<Running>, NetworkError> {
    let network = def.name();
    let bridge = bridge_of(def);
    let link_error = |step: String| {
        move |source| NetworkError::Link {
            network: network.to_owned(),
            step,
            source,
        }
    };
    let index = netlink
        .create_bridge(&BridgeLink {
            name: bridge,
            mac: def.mac.map(|m| m.0),
            stp: kernel_stp(def),
            forward_delay: def.bridge.delay,
            mtu: def.mtu.map(u32::from),
        })
        .map_err(link_error(format!("creating bridge {bridge}")))?;
    configure_bridge(def, netlink, index)?;
    enable_forwarding(def)?;
    firewall::apply(
        &firewall::table_name(network),
        &firewall::ruleset(def, bridge, port_group(index), &[]),
    )?;
    if !dnsmasq::needed(def) {
        return Ok(None);
    }
    dnsmasq::start(def, bridge, files, user)
        .map(Some)
        .map_err(Into::into)
}

/// Whether the bridge runs the kernel's STP. With STP on, the kernel
/// clamps the forward delay to at least 2 s and holds each new port for
/// twice that before it forwards: a container would start without a
/// network for 4 s. A virtual network's bridge has no uplink, so no loop
/// can form through it; STP runs only when `<bridge delay>` asks for the
/// delay it implies anyway.
fn kernel_stp(def: &NetworkDef) -> bool {
    def.bridge.stp && def.bridge.delay >= MIN_STP_FORWARD_DELAY
}

/// The kernel's smallest forward delay with STP on, seconds.
const MIN_STP_FORWARD_DELAY: u32 = 2;

/// The bridge's addresses, and up.
fn configure_bridge(def: &NetworkDef, netlink: &Netlink, index: u32) -> Result<(), NetworkError> {
    let network = def.name();
    let bridge = bridge_of(def);
    for ip in &def.ips {
        let address = IpAddress {
            address: ip.address,
            prefix: ip.prefix,
            peer: None,
        };
        match netlink.add_address(index, &address) {
            Ok(()) => {}
            Err(e) if e.errno == crate::sys::Errno::EEXIST => {}
            Err(source) => {
                return Err(NetworkError::Link {
                    network: network.to_owned(),
                    step: format!("adding {}/{} to {bridge}", ip.address, ip.prefix),
                    source,
                });
            }
        }
    }
    netlink
        .change(
            index,
            &LinkChange {
                up: Some(true),
                ..LinkChange::default()
            },
        )
        .map_err(|source| NetworkError::Link {
            network: network.to_owned(),
            step: format!("bringing {bridge} up"),
            source,
        })
}

/// A forwarding network needs the host to forward its families.
fn enable_forwarding(def: &NetworkDef) -> Result<(), NetworkError> {
    if def.forward.is_none() {
        return Ok(());
    }
    let mut paths = Vec::new();
    if def.ips.iter().any(|ip| ip.address.is_ipv4()) {
        paths.push("/proc/sys/net/ipv4/ip_forward");
    }
    if def.ips.iter().any(|ip| ip.address.is_ipv6()) {
        paths.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for path in paths {
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(path, "1").map_err(|source| NetworkError::Forwarding {
            network: def.name().to_owned(),
            path,
            source,
        })?;
    }
    Ok(())
}

/// Takes over a running network: the bridge (made again if gone), its
/// addresses, the table (replaced: same rules), dnsmasq (kept if it still
/// runs, else started).
fn reconnect(
    def: &NetworkDef,
    runtime: NetworkRuntime,
    files: &Files,
    user: &str,
) -> Result<Option<Running>, NetworkError> {
    let network = def.name();
    let bridge = bridge_of(def);
    let netlink = Netlink::open().map_err(|source| NetworkError::Link {
        network: network.to_owned(),
        step: "opening rtnetlink".into(),
        source,
    })?;
    let found = netlink.find(bridge).map_err(|source| NetworkError::Link {
        network: network.to_owned(),
        step: format!("looking up {bridge}"),
        source,
    })?;
    match found {
        Some(link) if link.kind.as_deref() == Some("bridge") => {
            configure_bridge(def, &netlink, link.index)?;
            enable_forwarding(def)?;
            firewall::apply(
                &firewall::table_name(network),
                &firewall::ruleset(def, bridge, port_group(link.index), &[]),
            )?;
            if !dnsmasq::needed(def) {
                return Ok(None);
            }
            let running = runtime
                .dnsmasq
                .and_then(|(pid, start)| dnsmasq::find_by_pid(pid, start))
                .or_else(|| dnsmasq::find(files));
            match running {
                Some(running) => Ok(Some(running)),
                None => dnsmasq::start(def, bridge, files, user)
                    .map(Some)
                    .map_err(Into::into),
            }
        }
        _ => {
            // Gone (or replaced by something else): start it afresh.
            if let Some(running) = dnsmasq::find(files) {
                let _ = pidfd_kill(
                    std::os::fd::AsFd::as_fd(&running.pidfd),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            bring_up(def, files, user)
        }
    }
}

/// Removes the table, the bridge and dnsmasq's files (dnsmasq itself is
/// stopped by the caller first).
fn bring_down(def: &NetworkDef, files: &Files) -> Vec<NetworkError> {
    let mut errors = Vec::new();
    let network = def.name();
    if let Err(error) = firewall::apply(&firewall::table_name(network), &firewall::removal(network))
    {
        errors.push(error.into());
    }
    let bridge = bridge_of(def);
    match Netlink::open() {
        Ok(netlink) => match netlink.find(bridge) {
            Ok(Some(link)) if link.kind.as_deref() == Some("bridge") => {
                if let Err(source) = netlink.delete(link.index) {
                    errors.push(NetworkError::Link {
                        network: network.to_owned(),
                        step: format!("deleting {bridge}"),
                        source,
                    });
                }
            }
            Ok(_) => {}
            Err(source) => errors.push(NetworkError::Link {
                network: network.to_owned(),
                step: format!("looking up {bridge}"),
                source,
            }),
        },
        Err(source) => errors.push(NetworkError::Link {
            network: network.to_owned(),
            step: "opening rtnetlink".into(),
            source,
        }),
    }
    dnsmasq::remove_files(files);
    errors
}

/// The directory of the networks' runtime files under the run directory.
pub fn run_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("network")
}

/// The name of the host link `index`, for messages.
fn link_name(index: u32) -> String {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("ifindex"))
                .is_ok_and(|i| i.trim() == index.to_string())
        })
        .map_or_else(
            || index.to_string(),
            |e| e.file_name().to_string_lossy().into_owned(),
        )
}
