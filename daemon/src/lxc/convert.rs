//! From a domain definition to a [`ContainerSpec`]: libvirt's LXC semantics
//! (namespaces, filesystems, init environment, capability policy, cgroup
//! limits) resolved against the host.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupSpec, DeviceRule};

use crate::domain::{
    Capability, CapsPolicy, DirectMode, DomainDef, FsDriverType, FsSource, Hostdev, IdRef,
    ImageFormat, Interface, InterfaceSource, IpConfig, LinkState, NativeMode, NsShare, NsShareType,
    Route, SeccompMode, SeccompMount, Userns, UsernsMode,
};
use crate::net::shaping;
use crate::net::{BridgeVlan, IpAddress, IpRoute, MacvlanMode};

use crate::domain::addr::natural_prefix;
use crate::driver::NetworkPort;
use crate::storage::RootMount;

use super::spec::{
    BandwidthSpec, ConsoleLogSpec, ContainerSpec, DeviceKind, DeviceNode, HostInterfaceSpec,
    IdMapping, IdSpec, InitSpec, InterfaceKind, InterfaceSpec, MountSource, MountSpec, Namespaces,
    NsChoice, RootFs, SPEC_VERSION, SeccompSpec,
};

/// Why a definition cannot become a container on this host.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("domain '{domain}': {what} is not supported by the LXC driver yet; remove {element}")]
    NotSupported {
        domain: String,
        element: &'static str,
        what: String,
    },
    #[error(
        "domain '{domain}': {element} names {path}, which is not a usable device node on this host"
    )]
    Device {
        domain: String,
        element: &'static str,
        path: PathBuf,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error(
        "domain '{domain}': <lxc:{which} type='name' value='{other}'> needs domain '{other}' running; start it first"
    )]
    ShareTargetNotRunning {
        domain: String,
        which: &'static str,
        other: String,
    },
    #[error("domain '{domain}': <lxc:{which}> value '{value}' is not a process id")]
    BadPid {
        domain: String,
        which: &'static str,
        value: String,
    },
    #[error(
        "domain '{domain}': the root filesystem from image '{image}' was not prepared before the start; this is a bug in lxvirtd"
    )]
    ImageRootMissing { domain: String, image: String },
    #[error("domain '{domain}' is not a container (type {domain_type}); it needs the KVM driver")]
    NotContainer {
        domain: String,
        domain_type: &'static str,
    },
    #[error(
        "domain '{domain}': <interface type='network'> (network '{network}'): the network is not active; start it with 'lxvirt net-start {network}'"
    )]
    VirtualNetwork { domain: String, network: String },
    #[error(
        "domain '{domain}': <interface> and <hostdev type='net'> need a network namespace of the container's own; remove <lxc:sharenet> or them"
    )]
    SharedNetwork { domain: String },
    #[error(
        "domain '{domain}': interface name '{name}' is used twice ({what}); give each <guest dev>, <target dev> and <hostdev> interface its own name"
    )]
    InterfaceName {
        domain: String,
        name: String,
        what: &'static str,
    },
    /// A setting of one interface that cannot be applied as written.
    #[error("domain '{domain}': {interface}: {element} {problem}; {fix}")]
    InterfaceSetting {
        domain: String,
        /// `<interface type='…'> #N (…)`.
        interface: String,
        element: String,
        problem: &'static str,
        fix: String,
    },
}

/// Daemon settings that shape every container.
#[derive(Debug, Clone)]
pub struct ConvertSettings {
    /// Directory for per-container runtime files.
    pub run_dir: PathBuf,
    /// pids.max of each container.
    pub pids_max: Option<u64>,
    /// The cgroup partition of domains without `<resource><partition>`.
    pub default_partition: PathBuf,
    /// Where monitors keep the consoles' output (`NAME.log`); `None`
    /// keeps none.
    pub console_log_dir: Option<PathBuf>,
}

/// The size at which a console log is rotated (one older file is kept).
pub const CONSOLE_LOG_MAX: u64 = 1 << 20;

impl ConvertSettings {
    /// The console log of domain `name`, if logs are kept.
    pub fn console_log(&self, name: &str) -> Option<PathBuf> {
        (self.console_log_dir.as_ref()).map(|dir| dir.join(format!("{name}.log")))
    }
}

/// Capabilities libvirt drops under the default policy.
const DEFAULT_DROPPED: [Capability; 5] = [
    Capability::SysModule,
    Capability::SysTime,
    Capability::Mknod,
    Capability::AuditControl,
    Capability::MacAdmin,
];

/// Kernel interfaces a container may read but not change.
const READONLY_PATHS: [&str; 5] = [
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// Kernel interfaces hidden from containers.
const MASKED_PATHS: [&str; 10] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/acpi",
    "/proc/latency_stats",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/kmsg",
];

/// The container's user namespace: libvirt's `<idmap>` as given (the
/// root's files must already belong to the mapped ids), or the block
/// lxvirt allocated for `<lxvirt:userns mode='auto'>` (the manager puts it
/// in the live definition), shown through an idmapped root.
fn user_namespace(def: &DomainDef) -> Option<IdMapping> {
    if let Some(m) = &def.idmap {
        return Some(IdMapping {
            idmapped_root: false,
            uid: m.uid.iter().map(|e| (e.start, e.target, e.count)).collect(),
            gid: m.gid.iter().map(|e| (e.start, e.target, e.count)).collect(),
        });
    }
    match def.userns {
        Some(Userns {
            mode: UsernsMode::Auto,
            allocated: Some((target, count)),
        }) => Some(IdMapping {
            uid: vec![(0, target, count)],
            gid: vec![(0, target, count)],
            idmapped_root: true,
        }),
        _ => None,
    }
}

/// The capability set init keeps, by libvirt's policy rules.
pub fn kept_capabilities(def: &DomainDef) -> Vec<u8> {
    let (policy, states) = match &def.features.capabilities {
        Some(caps) => (caps.policy, Some(&caps.states)),
        None => (CapsPolicy::Default, None),
    };
    Capability::ALL
        .iter()
        .copied()
        .filter(|cap| {
            let base = match policy {
                CapsPolicy::Default => !DEFAULT_DROPPED.contains(cap),
                CapsPolicy::Allow => true,
                CapsPolicy::Deny => false,
            };
            states.and_then(|s| s.get(cap).copied()).unwrap_or(base)
        })
        .filter_map(|cap| u8::try_from(cap.number()).ok())
        .collect()
}

/// The container's root from the prepared mount of its image.
fn image_rootfs(
    domain: &str,
    image: &str,
    image_root: Option<&RootMount>,
) -> Result<RootFs, ConvertError> {
    match image_root {
        Some(RootMount::Overlay(mount)) => Ok(RootFs::Overlay {
            lowerdir: mount.lowerdir.clone(),
            upperdir: mount.upperdir.clone(),
            workdir: mount.workdir.clone(),
        }),
        // A thin snapshot: the setup mounts it like any block device, with
        // the container's context= (the backend gave it a file system
        // that mounts without options).
        Some(RootMount::Block(block)) => Ok(RootFs::Block {
            dev: block.device.clone(),
            readonly: false,
        }),
        None => Err(ConvertError::ImageRootMissing {
            domain: domain.to_owned(),
            image: image.to_owned(),
        }),
    }
}

/// Builds the launch spec. `running_init` gives the host pid of a running
/// domain's init, for `<lxc:share* type='name'>`. `image_root` is the
/// prepared root of a domain whose root is an image (`<filesystem
/// type='volume'>`): its writable layer on the image's layers, made by
/// [`crate::storage::Store::prepare`] before the conversion.
/// Puts the host end of each `type='network'` interface of `def` in its
/// network's port group, and keeps the container end without IPv6
/// link-local address on a network without IPv6 unless the interface has
/// an IPv6 address of its own (as Docker does: on a network of a thousand
/// ports, every port's autoconfiguration multicasts reach all the others).
/// `spec` is `def` converted after [`crate::driver::plug_networks`] with
/// the same `networks`, so its interfaces are `def`'s, by position.
pub fn set_port_groups(
    spec: &mut ContainerSpec,
    def: &DomainDef,
    networks: &HashMap<String, NetworkPort>,
) {
    for interface in &mut spec.interfaces {
        let InterfaceKind::Bridge {
            port_group,
            network_bridge,
            ..
        } = &mut interface.kind
        else {
            continue;
        };
        if let Some(InterfaceSource::Network { network, .. }) = def
            .devices
            .interfaces
            .get(interface.index)
            .map(|i| &i.source)
            && let Some(port) = networks.get(network)
        {
            *port_group = port.group;
            *network_bridge = true;
            interface.quiet_ipv6 = !port.ipv6
                && !interface
                    .addresses
                    .iter()
                    .any(|address| address.address.is_ipv6());
        }
    }
}

pub fn container_spec(
    def: &DomainDef,
    settings: &ConvertSettings,
    running_init: &dyn Fn(&str) -> Option<i32>,
    image_root: Option<&RootMount>,
) -> Result<ContainerSpec, ConvertError> {
    let name = def.name.to_string();
    let Some(os) = def.exe_os() else {
        return Err(ConvertError::NotContainer {
            domain: name,
            domain_type: def.domain_type.as_str(),
        });
    };
    let not_supported = |element: &'static str, what: String| ConvertError::NotSupported {
        domain: name.clone(),
        element,
        what,
    };
    let shares = def.lxc_namespace.clone().unwrap_or_default();
    let share = |which: &'static str, share: &Option<NsShare>, default: NsChoice| {
        share_choice(&name, which, share.as_ref(), running_init).map(|c| c.unwrap_or(default))
    };
    let host_interfaces: Vec<HostInterfaceSpec> = def
        .devices
        .hostdevs
        .iter()
        .filter_map(|h| match h {
            Hostdev::Net {
                interface,
                ips,
                routes,
            } => Some(HostInterfaceSpec {
                name: interface.clone(),
                addresses: addresses(ips),
                routes: ip_routes(routes),
            }),
            _ => None,
        })
        .collect();
    let interfaces = interfaces(def, &host_interfaces)?;
    let networked = !interfaces.is_empty() || !host_interfaces.is_empty();
    if networked && shares.sharenet.is_some() {
        return Err(ConvertError::SharedNetwork { domain: name });
    }
    // Interfaces imply a network namespace of the container's own.
    let net_default = if def.features.privnet || networked {
        NsChoice::New
    } else {
        NsChoice::Host
    };
    let namespaces = Namespaces {
        net: share("sharenet", &shares.sharenet, net_default)?,
        ipc: share("shareipc", &shares.shareipc, NsChoice::New)?,
        uts: share("shareuts", &shares.shareuts, NsChoice::New)?,
        user: user_namespace(def),
    };

    let mut root = RootFs::Host;
    let mut mounts = Vec::new();
    for fs in &def.devices.filesystems {
        let is_root = fs.target == Path::new("/");
        let source = match &fs.source {
            FsSource::Mount { dir } => MountSource::HostDir(dir.clone()),
            FsSource::Bind { dir } => MountSource::ContainerDir(dir.clone()),
            FsSource::Ram { usage } => MountSource::Tmpfs { size: *usage },
            FsSource::Block { dev } => MountSource::Block(dev.clone()),
            FsSource::File { file, driver } => {
                let loop_raw = driver.as_ref().is_none_or(|d| {
                    d.driver_type == FsDriverType::Loop
                        && d.format.is_none_or(|f| f == ImageFormat::Raw)
                });
                if !loop_raw {
                    return Err(not_supported(
                        "<driver> or use type='loop' format='raw'",
                        format!("the file filesystem driver for {}", file.display()),
                    ));
                }
                MountSource::File(file.clone())
            }
            FsSource::Volume { volume, .. } => {
                // The parser admits a volume only as the root.
                root = image_rootfs(&name, volume, image_root)?;
                continue;
            }
        };
        if is_root {
            root = match source {
                MountSource::HostDir(path) => RootFs::Dir {
                    path,
                    readonly: fs.readonly,
                },
                MountSource::Block(dev) => RootFs::Block {
                    dev,
                    readonly: fs.readonly,
                },
                MountSource::File(path) => RootFs::File {
                    path,
                    readonly: fs.readonly,
                },
                MountSource::ContainerDir(_) | MountSource::Tmpfs { .. } => {
                    return Err(not_supported(
                        "the <filesystem> with target '/'",
                        format!("a '{}' root filesystem", fs.source.type_str()),
                    ));
                }
            };
        } else {
            mounts.push(MountSpec {
                source,
                target: fs.target.clone(),
                readonly: fs.readonly,
            });
        }
    }

    let devices = device_nodes(def)?;

    let init = InitSpec {
        path: os.init.clone(),
        args: std::iter::once(os.init.display().to_string())
            .chain(os.initargs.iter().cloned())
            .collect(),
        env: init_env(def, os.cmdline.as_deref(), &os.initenv),
        cwd: os.initdir.clone().unwrap_or_else(|| PathBuf::from("/")),
        user: os.inituser.as_ref().map(id_spec),
        group: os.initgroup.as_ref().map(id_spec),
    };
    let consoles = u32::try_from(def.devices.consoles.len())
        .unwrap_or(1)
        .max(1);
    let mut cgroup = cgroup_spec(def, settings, &devices)?;
    cgroup
        .devices
        .extend(filesystem_device_rules(&name, &root, &mounts)?);
    let seccomp = seccomp_spec(def, &namespaces);

    // An application container shares the host's files, setuid binaries
    // included: nothing in it may gain privileges through exec.
    let no_new_privs = root == RootFs::Host;
    Ok(ContainerSpec {
        version: SPEC_VERSION,
        name: name.clone(),
        uuid: def.uuid,
        hostname: def.hostname(),
        namespaces,
        root,
        mounts,
        devices,
        init,
        capabilities: kept_capabilities(def),
        no_new_privs,
        masked_paths: MASKED_PATHS.iter().map(PathBuf::from).collect(),
        readonly_paths: READONLY_PATHS.iter().map(PathBuf::from).collect(),
        consoles,
        cgroup,
        security: None,
        seccomp,
        run_dir: settings.run_dir.clone(),
        interfaces,
        host_interfaces,
        loop_devices: Vec::new(),
        console_log: settings.console_log(&name).map(|path| ConsoleLogSpec {
            path,
            max_bytes: CONSOLE_LOG_MAX,
        }),
    })
}

/// The container's interfaces: each with its host end's name (`<target
/// dev>`, else a generated `lxvXXXXXXXX`), its MAC (`<mac>`, else a
/// generated `52:54:00:…`), its name inside (`<guest dev>`, else the
/// first free `ethN`), addresses and routes, MTU, link state, bandwidth
/// and VLANs. `hostdevs` are the host interfaces moved in, whose names
/// the names inside must not repeat.
///
/// The generated host names and MACs are not written back to the
/// definition: the core keeps the live definition, and this conversion
/// does not reach it.
fn interfaces(
    def: &DomainDef,
    hostdevs: &[HostInterfaceSpec],
) -> Result<Vec<InterfaceSpec>, ConvertError> {
    let domain = def.name.to_string();
    let duplicate = |name: &str, what| ConvertError::InterfaceName {
        domain: domain.clone(),
        name: name.to_owned(),
        what,
    };
    let mut inside: Vec<String> = hostdevs.iter().map(|h| h.name.clone()).collect();
    for (i, name) in inside.iter().enumerate() {
        if inside[..i].contains(name) {
            return Err(duplicate(name, "two <hostdev type='net'>"));
        }
    }
    for interface in &def.devices.interfaces {
        if let Some(guest) = &interface.guest_dev {
            if inside.contains(guest) || guest == "lo" {
                return Err(duplicate(guest, "a <guest dev> inside the container"));
            }
            inside.push(guest.clone());
        }
    }
    let mut host_names: Vec<String> = Vec::new();
    let mut specs = Vec::new();
    for (index, interface) in def.devices.interfaces.iter().enumerate() {
        let refuse =
            |element: String, problem: &'static str, fix: String| ConvertError::InterfaceSetting {
                domain: domain.clone(),
                interface: interface_label(index, interface),
                element,
                problem,
                fix,
            };
        let mut host_name = || -> Result<String, ConvertError> {
            let name = interface
                .target_dev
                .clone()
                .unwrap_or_else(generated_host_name);
            if host_names.contains(&name) {
                return Err(duplicate(&name, "a <target dev> on the host"));
            }
            host_names.push(name.clone());
            Ok(name)
        };
        let link_down = interface.link_state == Some(LinkState::Down);
        let kind = match &interface.source {
            InterfaceSource::Network { network, .. } => {
                return Err(ConvertError::VirtualNetwork {
                    domain,
                    network: network.clone(),
                });
            }
            InterfaceSource::Bridge { bridge } => InterfaceKind::Bridge {
                bridge: bridge.clone(),
                host_name: host_name()?,
                vlans: bridge_vlans(interface, &refuse)?,
                port_group: None,
                network_bridge: false,
            },
            InterfaceSource::Ethernet { ips, routes } => {
                if link_down && !routes.is_empty() {
                    return Err(refuse(
                        "<route> under <source>".into(),
                        "cannot go through a host end that <link state='down'> leaves down",
                        "remove those routes or <link state='down'>".into(),
                    ));
                }
                InterfaceKind::Ethernet {
                    host_name: host_name()?,
                    addresses: addresses(ips),
                    routes: ip_routes(routes),
                }
            }
            // The parser keeps these for virtual machines only.
            InterfaceSource::Kept(t) => {
                return Err(refuse(
                    format!("type='{t}'"),
                    "is not an interface type of containers",
                    "use type='network', 'bridge', 'ethernet' or 'direct'".into(),
                ));
            }
            InterfaceSource::Direct { dev, mode } => {
                if interface.vlan.is_some() {
                    return Err(refuse(
                        "<vlan>".into(),
                        "cannot be applied to a 'direct' interface (libvirt tags those only through Open vSwitch or SR-IOV)",
                        "connect the interface with type='bridge' to a bridge that filters VLANs, or remove <vlan>".into(),
                    ));
                }
                if interface.bandwidth.is_some() {
                    return Err(refuse(
                        "<bandwidth>".into(),
                        "cannot be applied to a container's 'direct' interface: its device moves into the container and leaves nothing on the host to shape",
                        "use a 'bridge' or 'ethernet' interface, or remove <bandwidth>".into(),
                    ));
                }
                InterfaceKind::Direct {
                    dev: dev.clone(),
                    mode: match mode {
                        DirectMode::Vepa => MacvlanMode::Vepa,
                        DirectMode::Bridge => MacvlanMode::Bridge,
                        DirectMode::Private => MacvlanMode::Private,
                        DirectMode::Passthrough => MacvlanMode::Passthrough,
                    },
                }
            }
        };
        if link_down && !interface.routes.is_empty() {
            return Err(refuse(
                "<route>".into(),
                "cannot go through a link that <link state='down'> leaves down (the kernel refuses routes through a device that is down)",
                "remove the routes, or <link state='down'>".into(),
            ));
        }
        let mtu = interface.mtu.map(u32::from);
        let bandwidth = shaping::spec(def, index, interface)
            .map_err(|r| refuse(r.element.into(), r.problem, r.fix.into()))?;
        let guest_name = match &interface.guest_dev {
            Some(name) => name.clone(),
            None => {
                let name = (0..)
                    .map(|n| format!("eth{n}"))
                    .find(|n| !inside.contains(n))
                    .unwrap_or_default();
                inside.push(name.clone());
                name
            }
        };
        specs.push(InterfaceSpec {
            index,
            kind,
            mac: interface.mac.map(|m| m.0).unwrap_or_else(generated_mac),
            guest_name,
            addresses: addresses(&interface.ips),
            routes: ip_routes(&interface.routes),
            mtu,
            link_down,
            bandwidth,
            quiet_ipv6: false,
        });
    }
    Ok(specs)
}

/// How an interface is named in refusals: `<interface type='…'> #N` and
/// its source or host end.
fn interface_label(index: usize, interface: &Interface) -> String {
    let head = format!(
        "<interface type='{}'> #{}",
        interface.source.type_str(),
        index + 1
    );
    let source = match &interface.source {
        InterfaceSource::Network { network, .. } => Some(format!("network '{network}'")),
        InterfaceSource::Bridge { bridge } => Some(format!("bridge '{bridge}'")),
        InterfaceSource::Direct { dev, .. } => Some(format!("device '{dev}'")),
        InterfaceSource::Kept(_) => None,
        InterfaceSource::Ethernet { .. } => interface
            .target_dev
            .as_ref()
            .map(|t| format!("host end '{t}'")),
    };
    match source {
        Some(source) => format!("{head} ({source})"),
        None => head,
    }
}

/// `<ip>`s with libvirt's natural prefix where there is none.
fn addresses(ips: &[IpConfig]) -> Vec<IpAddress> {
    ips.iter()
        .map(|ip| IpAddress {
            address: ip.address,
            prefix: ip.prefix.unwrap_or_else(|| natural_prefix(ip.address)),
            peer: ip.peer,
        })
        .collect()
}

/// `<route>`s likewise.
fn ip_routes(routes: &[Route]) -> Vec<IpRoute> {
    routes
        .iter()
        .map(|route| IpRoute {
            destination: route.address,
            prefix: route
                .prefix
                .unwrap_or_else(|| natural_prefix(route.address)),
            gateway: Some(route.gateway),
        })
        .collect()
}

/// `<vlan>` as a bridge port's memberships: one tag without `trunk` is an
/// access port (its VLAN the PVID, leaving untagged); a trunk is a tagged
/// member of each, the tag with `nativeMode` also the PVID (and leaving
/// untagged with `nativeMode='untagged'`).
fn bridge_vlans(
    interface: &Interface,
    refuse: &impl Fn(String, &'static str, String) -> ConvertError,
) -> Result<Vec<BridgeVlan>, ConvertError> {
    let Some(vlan) = &interface.vlan else {
        return Ok(Vec::new());
    };
    let mut vlans = Vec::new();
    for tag in &vlan.tags {
        // 0 means "no VLAN" on the wire and 4095 is reserved.
        if tag.id == 0 || tag.id >= 4095 {
            return Err(refuse(
                format!("<tag id='{}'>", tag.id),
                "is not a VLAN a Linux bridge carries (1 to 4094)",
                "change the id".into(),
            ));
        }
        vlans.push(if vlan.trunk {
            BridgeVlan {
                vid: tag.id,
                pvid: tag.native_mode.is_some(),
                untagged: tag.native_mode == Some(NativeMode::Untagged),
            }
        } else {
            BridgeVlan {
                vid: tag.id,
                pvid: true,
                untagged: true,
            }
        });
    }
    Ok(vlans)
}

/// The token buckets of a running container's `interface` (number
/// `index` of its live definition `def`), for a change of its
/// `<bandwidth>` in place.
pub fn live_bandwidth(
    def: &DomainDef,
    index: usize,
    interface: &Interface,
) -> Result<Option<BandwidthSpec>, ConvertError> {
    shaping::spec(def, index, interface).map_err(|refusal| ConvertError::InterfaceSetting {
        domain: def.name.to_string(),
        interface: interface_label(index, interface),
        element: refusal.element.into(),
        problem: refusal.problem,
        fix: refusal.fix.into(),
    })
}

/// `lxv` and 8 random hex digits: unique among the host's interfaces with
/// overwhelming odds (a clash fails the start with "exists already").
fn generated_host_name() -> String {
    format!("lxv{:08x}", rand::random::<u32>())
}

/// A random address under the 52:54:00 prefix libvirt uses.
fn generated_mac() -> [u8; 6] {
    let [a, b, c] = rand::random::<[u8; 3]>();
    [0x52, 0x54, 0x00, a, b, c]
}

/// The filter `<lxvirt:seccomp>` asks for (the default without one).
fn seccomp_spec(def: &DomainDef, namespaces: &Namespaces) -> Option<SeccompSpec> {
    let (mount, deny) = match &def.seccomp {
        Some(s) if s.mode == SeccompMode::Off => return None,
        Some(s) => (s.mount, s.deny.clone()),
        None => (SeccompMount::Auto, Vec::new()),
    };
    let deny_mount = match mount {
        // Without a user namespace nothing else stops init from undoing
        // the read-only and masked paths with a mount call: see
        // docs/seccomp.md.
        SeccompMount::Auto => namespaces.user.is_none(),
        SeccompMount::Allow => false,
        SeccompMount::Deny => true,
    };
    Some(SeccompSpec { deny_mount, deny })
}

fn share_choice(
    domain: &str,
    which: &'static str,
    share: Option<&NsShare>,
    running_init: &dyn Fn(&str) -> Option<i32>,
) -> Result<Option<NsChoice>, ConvertError> {
    let Some(share) = share else {
        return Ok(None);
    };
    Ok(Some(match share.share_type {
        NsShareType::Netns => NsChoice::Path(PathBuf::from("/run/netns").join(&share.value)),
        NsShareType::Name => {
            let pid =
                running_init(&share.value).ok_or_else(|| ConvertError::ShareTargetNotRunning {
                    domain: domain.to_owned(),
                    which,
                    other: share.value.clone(),
                })?;
            NsChoice::Pid(pid)
        }
        NsShareType::Pid => {
            NsChoice::Pid(share.value.parse().map_err(|_| ConvertError::BadPid {
                domain: domain.to_owned(),
                which,
                value: share.value.clone(),
            })?)
        }
    }))
}

fn id_spec(id: &IdRef) -> IdSpec {
    match id {
        IdRef::Name(name) => IdSpec::Name(name.clone()),
        IdRef::Id(id) => IdSpec::Id(*id),
    }
}

/// The environment init starts with: libvirt's variables under lxvirt's
/// names, then `<initenv>` (which may override them).
fn init_env(def: &DomainDef, cmdline: Option<&str>, initenv: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("TERM".into(), "linux".into()),
        ("HOME".into(), "/".into()),
        ("container".into(), "lxvirt".into()),
        ("container_uuid".into(), def.uuid.to_string()),
        ("LXVIRT_NAME".into(), def.name.to_string()),
        ("LXVIRT_UUID".into(), def.uuid.to_string()),
    ];
    if let Some(cmdline) = cmdline {
        env.push(("LXVIRT_CMDLINE".into(), cmdline.to_owned()));
    }
    for (key, value) in initenv {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The device nodes a container of `def` gets in its /dev: its block
/// disks (at `/dev/TARGET`, read-only ones without write permission) and
/// its storage and misc host devices (at their host paths).
pub fn device_nodes(def: &DomainDef) -> Result<Vec<DeviceNode>, ConvertError> {
    let name = def.name();
    let not_supported = |element: &'static str, what: String| ConvertError::NotSupported {
        domain: name.to_owned(),
        element,
        what,
    };
    let mut devices = Vec::new();
    for disk in &def.devices.disks {
        devices.push(
            disk_node(name, disk)
                .ok_or_else(|| not_supported("the <disk>", "a file-backed <disk>".into()))??,
        );
    }
    for hostdev in &def.devices.hostdevs {
        match hostdev {
            // Moved in by the monitor (`host_interfaces`).
            Hostdev::Net { .. } => {}
            Hostdev::Usb { .. } => {
                return Err(not_supported(
                    "the <hostdev type='usb'>",
                    "USB passthrough".into(),
                ));
            }
            other => devices.extend(hostdev_node(name, other)?),
        }
    }
    Ok(devices)
}

/// The node of a block `<disk>` (`None` for another kind).
pub fn disk_node(
    domain: &str,
    disk: &crate::domain::Disk,
) -> Option<Result<DeviceNode, ConvertError>> {
    let crate::domain::DiskSource::Block(Some(dev)) = &disk.source else {
        return None;
    };
    let target = PathBuf::from("/dev").join(&disk.target_dev);
    Some(device_node(domain, "<disk>", dev, target).map(|mut node| {
        if disk.readonly {
            // Read-only for the devices controller too (no 'w').
            node.mode &= !0o222;
        }
        node
    }))
}

/// The node of a storage or misc `<hostdev>` (`None` for another kind).
pub fn hostdev_node(domain: &str, hostdev: &Hostdev) -> Result<Option<DeviceNode>, ConvertError> {
    match hostdev {
        Hostdev::Storage { block } => {
            device_node(domain, "<hostdev type='storage'>", block, block.clone()).map(Some)
        }
        Hostdev::Misc { char_dev } => {
            device_node(domain, "<hostdev type='misc'>", char_dev, char_dev.clone()).map(Some)
        }
        Hostdev::Net { .. } | Hostdev::Usb { .. } => Ok(None),
    }
}

/// The allow rule of a node the container gets.
pub fn node_rule(node: &DeviceNode) -> DeviceRule {
    DeviceRule {
        kind: match node.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        },
        major: Some(node.major),
        minor: Some(node.minor),
        access: if node.mode & 0o222 == 0 { "rm" } else { "rwm" }.into(),
    }
}

/// The whole device allow-list of a container of `def`, as its start
/// makes it, for a running container's list that changes on cgroup2;
/// `None` when the definition has file-backed filesystems, whose loop
/// devices only the monitor knows.
pub fn device_rules(def: &DomainDef) -> Result<Option<Vec<DeviceRule>>, ConvertError> {
    let filesystems = &def.devices.filesystems;
    if filesystems
        .iter()
        .any(|f| matches!(f.source, FsSource::File { .. }))
    {
        return Ok(None);
    }
    let mut rules = crate::cgroup::domain::base_device_rules();
    rules.extend(device_nodes(def)?.iter().map(node_rule));
    for fs in filesystems {
        if let FsSource::Block { dev } = &fs.source {
            let node = device_node(def.name(), "<filesystem type='block'>", dev, dev.clone())?;
            rules.push(block_rule(node.major, node.minor, fs.readonly));
        }
    }
    Ok(Some(rules))
}

pub fn device_node(
    domain: &str,
    element: &'static str,
    host_path: &Path,
    target: PathBuf,
) -> Result<DeviceNode, ConvertError> {
    let error = |source| ConvertError::Device {
        domain: domain.to_owned(),
        element,
        path: host_path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(host_path).map_err(|e| error(Some(e)))?;
    let kind = if meta.file_type().is_block_device() {
        DeviceKind::Block
    } else if meta.file_type().is_char_device() {
        DeviceKind::Char
    } else {
        return Err(error(None));
    };
    let rdev = meta.rdev();
    Ok(DeviceNode {
        path: target,
        kind,
        major: nix::sys::stat::major(rdev) as u32,
        minor: nix::sys::stat::minor(rdev) as u32,
        mode: meta.mode() & 0o7777,
    })
}

/// Allow rules for the block devices the setup mounts (a block or
/// thin-snapshot root, block filesystems): without a user namespace the
/// container's init mounts them itself, inside its cgroup, where the
/// allow-list applies to opening them. No `m`: nothing inside may make a
/// node for them. (Loop devices of file-backed filesystems get theirs in
/// the monitor, which attaches them.)
fn filesystem_device_rules(
    name: &str,
    root: &RootFs,
    mounts: &[MountSpec],
) -> Result<Vec<DeviceRule>, ConvertError> {
    let root = match root {
        RootFs::Block { dev, readonly } => Some((dev, *readonly)),
        _ => None,
    };
    let mounted = mounts.iter().filter_map(|m| match &m.source {
        MountSource::Block(dev) => Some((dev, m.readonly)),
        _ => None,
    });
    root.into_iter()
        .chain(mounted)
        .map(|(dev, readonly)| {
            let node = device_node(name, "<filesystem type='block'>", dev, dev.clone())?;
            if node.kind != DeviceKind::Block {
                return Err(ConvertError::Device {
                    domain: name.to_owned(),
                    element: "<filesystem type='block'>",
                    path: dev.clone(),
                    source: None,
                });
            }
            Ok(block_rule(node.major, node.minor, readonly))
        })
        .collect()
}

/// `b MAJ:MIN r` or `rw`.
pub(crate) fn block_rule(major: u32, minor: u32, readonly: bool) -> DeviceRule {
    DeviceRule {
        kind: 'b',
        major: Some(major),
        minor: Some(minor),
        access: if readonly { "r" } else { "rw" }.into(),
    }
}

/// The limits of a container's cgroup, without its device allow-list.
pub fn tuning_spec(
    def: &DomainDef,
    settings: &ConvertSettings,
) -> Result<CgroupSpec, ConvertError> {
    let mut spec = crate::cgroup::domain::tuning(
        def,
        &settings.default_partition,
        settings.pids_max,
        |path| {
            device_node(def.name(), "<blkiotune><device>", path, path.to_owned())
                .map(|node| (node.major, node.minor))
        },
    )?;
    // A container's <currentMemory> (its <memory> unless set, or changed
    // by setmem) is all it may use, as libvirt's LXC driver has it.
    spec.memory_limit.get_or_insert(def.current_memory);
    Ok(spec)
}

/// Devices every container may use: null, zero, full, random, urandom,
/// tty, console, ptmx, and the pty slaves.
fn cgroup_spec(
    def: &DomainDef,
    settings: &ConvertSettings,
    devices: &[DeviceNode],
) -> Result<CgroupSpec, ConvertError> {
    let mut spec = tuning_spec(def, settings)?;
    spec.devices = crate::cgroup::domain::base_device_rules();
    spec.devices.extend(devices.iter().map(node_rule));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::RateLimit;

    fn def(extra: &str) -> DomainDef {
        DomainDef::from_xml(&format!(
            "<domain type='lxc'><name>web_1</name><uuid>6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11</uuid>\
             <memory unit='MiB'>64</memory><os><type>exe</type><init>/bin/sh</init>\
             <initarg>-c</initarg><initarg>echo hi</initarg><initenv name='TERM'>xterm</initenv></os>\
             {extra}<devices><console type='pty'/></devices></domain>"
        ))
        .unwrap()
    }

    fn settings() -> ConvertSettings {
        ConvertSettings {
            run_dir: "/run/lxvirt".into(),
            pids_max: Some(16384),
            default_partition: "/machine".into(),
            console_log_dir: None,
        }
    }

    fn none(_: &str) -> Option<i32> {
        None
    }

    #[test]
    fn application_container_on_the_host_root() {
        let spec = container_spec(&def(""), &settings(), &none, None).unwrap();
        assert_eq!(spec.root, RootFs::Host);
        assert!(spec.no_new_privs, "application containers get no_new_privs");
        assert_eq!(spec.hostname, "web1");
        assert_eq!(spec.namespaces.net, NsChoice::Host);
        assert_eq!(spec.namespaces.ipc, NsChoice::New);
        assert!(spec.namespaces.user.is_none());
        assert_eq!(spec.init.args, vec!["/bin/sh", "-c", "echo hi"]);
        assert!(
            spec.init.env.contains(&"TERM=xterm".to_owned()),
            "initenv overrides"
        );
        assert!(spec.init.env.contains(&"container=lxvirt".to_owned()));
        assert!(spec.init.env.contains(&"LXVIRT_NAME=web_1".to_owned()));
        assert_eq!(spec.cgroup.path, PathBuf::from("machine/lxvirt-web_1"));
        assert_eq!(spec.cgroup.memory_limit, Some(64 << 20));
        assert_eq!(spec.consoles, 1);
        assert!(spec.masked_paths.contains(&PathBuf::from("/proc/kcore")));
    }

    #[test]
    fn default_capability_policy_drops_libvirts_five() {
        let kept = kept_capabilities(&def(""));
        for cap in DEFAULT_DROPPED {
            assert!(!kept.contains(&(cap.number() as u8)), "{cap:?} kept");
        }
        assert!(kept.contains(&(Capability::SysAdmin.number() as u8)));
        assert!(kept.contains(&(Capability::SysBoot.number() as u8)));
        assert_eq!(kept.len(), Capability::ALL.len() - 5);
    }

    #[test]
    fn capability_states_override_the_policy() {
        let d = def(
            "<features><capabilities policy='deny'><chown state='on'/></capabilities></features>",
        );
        assert_eq!(
            kept_capabilities(&d),
            vec![Capability::Chown.number() as u8]
        );
        let d = def(
            "<features><capabilities policy='allow'><sys_admin state='off'/></capabilities></features>",
        );
        let kept = kept_capabilities(&d);
        assert!(!kept.contains(&(Capability::SysAdmin.number() as u8)));
        assert!(kept.contains(&(Capability::SysModule.number() as u8)));
        let d = def(
            "<features><capabilities policy='default'><mknod state='on'/><sys_admin state='off'/></capabilities></features>",
        );
        let kept = kept_capabilities(&d);
        assert!(kept.contains(&(Capability::Mknod.number() as u8)));
        assert!(!kept.contains(&(Capability::SysAdmin.number() as u8)));
    }

    #[test]
    fn filesystems_idmap_privnet_and_shares() {
        let d = def(
            "<idmap><uid start='0' target='100000' count='65536'/><gid start='0' target='100000' count='65536'/></idmap>\
             <features><privnet/></features>",
        );
        let spec = container_spec(&d, &settings(), &none, None).unwrap();
        assert_eq!(spec.namespaces.net, NsChoice::New);
        let user = spec.namespaces.user.unwrap();
        assert_eq!(user.root_uid(), Some(100000));

        let xml = "<domain type='lxc' xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'><name>s</name>\
             <memory>65536</memory><os><type>exe</type><init>/sbin/init</init></os><devices>\
             <filesystem type='mount'><source dir='/srv/root'/><target dir='/'/></filesystem>\
             <filesystem type='ram'><source usage='1024'/><target dir='/tmp'/></filesystem>\
             <filesystem type='mount'><source dir='/srv/data'/><target dir='/data'/><readonly/></filesystem>\
             </devices><lxc:namespace><lxc:sharenet type='netns' value='red'/><lxc:shareuts type='name' value='other'/></lxc:namespace></domain>";
        let d = DomainDef::from_xml(xml).unwrap();
        assert!(matches!(
            container_spec(&d, &settings(), &none, None),
            Err(ConvertError::ShareTargetNotRunning { .. })
        ));
        let spec =
            container_spec(&d, &settings(), &|n| (n == "other").then_some(42), None).unwrap();
        assert_eq!(spec.namespaces.net, NsChoice::Path("/run/netns/red".into()));
        assert!(
            !spec.no_new_privs,
            "system containers keep libvirt's semantics"
        );
        assert_eq!(spec.namespaces.uts, NsChoice::Pid(42));
        assert_eq!(
            spec.root,
            RootFs::Dir {
                path: "/srv/root".into(),
                readonly: false
            }
        );
        assert_eq!(spec.mounts.len(), 2);
        assert_eq!(
            spec.mounts[0].source,
            MountSource::Tmpfs { size: 1024 * 1024 }
        );
        assert!(spec.mounts[1].readonly);
    }

    /// A block filesystem's device is allowed (read-only: `r`), without
    /// `m`; a path that is no block device is refused at conversion.
    #[test]
    fn block_filesystems_are_in_the_device_allow_list() {
        let none = |_: &str| None;
        let Ok(meta) = std::fs::metadata("/dev/loop0") else {
            return; // no loop device node here
        };
        let (major, minor) = (
            nix::sys::stat::major(meta.rdev()) as u32,
            nix::sys::stat::minor(meta.rdev()) as u32,
        );
        let d = with_devices(
            "<filesystem type='block'><source dev='/dev/loop0'/><target dir='/data'/><readonly/></filesystem>",
        );
        let spec = container_spec(&d, &settings(), &none, None).unwrap();
        assert!(
            spec.cgroup
                .devices
                .contains(&block_rule(major, minor, true)),
            "{:?}",
            spec.cgroup.devices
        );
        assert_eq!(block_rule(major, minor, false).access, "rw");
        let d = with_devices(
            "<filesystem type='block'><source dev='/dev/null'/><target dir='/data'/></filesystem>",
        );
        let err = container_spec(&d, &settings(), &none, None).unwrap_err();
        assert!(
            err.to_string().contains("<filesystem type='block'>"),
            "{err}"
        );
    }

    fn with_devices(devices: &str) -> DomainDef {
        let xml = def("").to_xml().replace(
            "<console type='pty'",
            &format!("{devices}<console type='pty'"),
        );
        DomainDef::from_xml(&xml).unwrap()
    }

    #[test]
    fn a_virtual_network_port_is_made_in_its_network_group_and_a_plain_bridge_port_is_not() {
        let d = with_devices(
            "<interface type='bridge'><source bridge='br0'/></interface>\
             <interface type='network'><source network='lab'/></interface>\
             <interface type='network'><source network='open'/></interface>\
             <interface type='network'><source network='lab'/><ip address='fd00::2' prefix='64'/></interface>\
             <interface type='network'><source network='six'/></interface>",
        );
        let networks: HashMap<String, NetworkPort> = [
            ("lab", Some(0x4000_0009), false),
            ("open", None, false),
            ("six", None, true),
        ]
        .into_iter()
        .map(|(name, group, ipv6)| {
            let port = NetworkPort {
                bridge: format!("{name}br"),
                group,
                ipv6,
            };
            (name.to_owned(), port)
        })
        .collect();
        let plugged = crate::driver::plug_networks(&d, &networks);
        let mut spec = container_spec(&plugged, &settings(), &none, None).unwrap();
        set_port_groups(&mut spec, &d, &networks);
        let groups: Vec<(Option<u32>, bool)> = spec
            .interfaces
            .iter()
            .map(|i| match &i.kind {
                InterfaceKind::Bridge {
                    port_group,
                    network_bridge,
                    ..
                } => (*port_group, *network_bridge),
                other => panic!("{other:?}"),
            })
            .collect();
        // A network's bridge is known to be one, an open network's too.
        assert_eq!(
            groups,
            [
                (None, false),
                (Some(0x4000_0009), true),
                (None, true),
                (Some(0x4000_0009), true),
                (None, true)
            ]
        );
        // Quiet inside: on a network without IPv6, unless the interface
        // has an IPv6 address of its own; a plain bridge's is the
        // administrator's business.
        let quiet: Vec<bool> = spec.interfaces.iter().map(|i| i.quiet_ipv6).collect();
        assert_eq!(quiet, [false, true, true, false, false]);
    }

    #[test]
    fn interfaces_become_links_with_names_macs_addresses_and_routes() {
        let d = with_devices(
            "<interface type='bridge'><source bridge='br0'/><mac address='52:54:00:aa:bb:cc'/>\
             <target dev='web0'/><ip address='10.251.1.2' prefix='24'/>\
             <ip address='fd00:251::2' prefix='64'/><route address='0.0.0.0' prefix='0' gateway='10.251.1.1'/></interface>\
             <interface type='ethernet'><guest dev='eth0'/><ip address='192.168.7.2'/>\
             <route address='10.0.0.0' gateway='192.168.7.1'/></interface>\
             <interface type='direct'><source dev='lxvtlo0' mode='bridge'/></interface>\
             <hostdev mode='capabilities' type='net'><source><interface>eth1</interface></source></hostdev>",
        );
        let spec = container_spec(&d, &settings(), &none, None).unwrap();
        assert_eq!(
            spec.namespaces.net,
            NsChoice::New,
            "interfaces imply a netns"
        );
        assert_eq!(spec.host_interfaces[0].name, "eth1");
        let [bridge, ethernet, direct] = &spec.interfaces[..] else {
            panic!("{:?}", spec.interfaces);
        };
        assert_eq!(
            bridge.kind,
            InterfaceKind::Bridge {
                bridge: "br0".into(),
                host_name: "web0".into(),
                vlans: Vec::new(),
                port_group: None,
                network_bridge: false,
            }
        );
        assert_eq!(bridge.mac, [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        // eth0 is taken by the second's <guest dev>, eth1 by the hostdev.
        assert_eq!(bridge.guest_name, "eth2");
        assert_eq!(bridge.addresses.len(), 2);
        assert_eq!(bridge.routes[0].prefix, 0);
        assert_eq!(
            bridge.routes[0].gateway,
            Some("10.251.1.1".parse().unwrap())
        );

        assert_eq!(ethernet.index, 1);
        assert_eq!(ethernet.guest_name, "eth0");
        let host = ethernet.kind.host_name().unwrap();
        assert!(host.starts_with("lxv") && host.len() == 11, "{host}");
        assert_eq!(&ethernet.mac[..3], &[0x52, 0x54, 0], "a generated MAC");
        assert_eq!(ethernet.addresses[0].prefix, 24, "class C without a prefix");
        assert_eq!(ethernet.routes[0].prefix, 8, "class A without a prefix");

        assert_eq!(
            direct.kind,
            InterfaceKind::Direct {
                dev: "lxvtlo0".into(),
                mode: MacvlanMode::Bridge
            }
        );
        assert_eq!(direct.guest_name, "eth3");
        assert_eq!(direct.kind.host_name(), None);
        // The spec crosses to the monitor as JSON.
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ContainerSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn mtu_link_state_and_addresses_of_both_sides_reach_the_spec() {
        let d = with_devices(
            "<interface type='bridge'><source bridge='br0'/><mtu size='9000'/><link state='down'/></interface>\
             <interface type='ethernet'><source><ip address='10.251.40.1' prefix='32' peer='10.251.40.2'/>\
             <route address='10.251.41.0' prefix='24' gateway='10.251.40.2'/></source>\
             <ip address='10.251.40.2' prefix='32' peer='10.251.40.1'/><link state='up'/></interface>\
             <interface type='direct'><source dev='lxvtlo0'/><mtu size='1400'/></interface>\
             <hostdev mode='capabilities' type='net'><source><interface>lxvtifb9</interface></source>\
             <ip address='10.251.42.2' prefix='24'/><route address='192.168.43.0' gateway='10.251.42.1'/></hostdev>",
        );
        let spec = container_spec(&d, &settings(), &none, None).unwrap();
        let [bridge, ethernet, direct] = &spec.interfaces[..] else {
            panic!("{:?}", spec.interfaces);
        };
        assert_eq!((bridge.mtu, bridge.link_down), (Some(9000), true));
        assert_eq!((ethernet.mtu, ethernet.link_down), (None, false));
        assert_eq!((direct.mtu, direct.link_down), (Some(1400), false));
        let InterfaceKind::Ethernet {
            addresses, routes, ..
        } = &ethernet.kind
        else {
            panic!("{:?}", ethernet.kind);
        };
        assert_eq!(
            addresses,
            &[IpAddress {
                address: "10.251.40.1".parse().unwrap(),
                prefix: 32,
                peer: Some("10.251.40.2".parse().unwrap()),
            }]
        );
        assert_eq!(
            routes,
            &[IpRoute {
                destination: "10.251.41.0".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.251.40.2".parse().unwrap()),
            }]
        );
        assert_eq!(
            ethernet.addresses[0].peer,
            Some("10.251.40.1".parse().unwrap())
        );
        assert_eq!(
            spec.host_interfaces,
            [HostInterfaceSpec {
                name: "lxvtifb9".into(),
                addresses: vec![IpAddress {
                    address: "10.251.42.2".parse().unwrap(),
                    prefix: 24,
                    peer: None,
                }],
                routes: vec![IpRoute {
                    destination: "192.168.43.0".parse().unwrap(),
                    prefix: 24,
                    gateway: Some("10.251.42.1".parse().unwrap()),
                }],
            }]
        );
    }

    #[test]
    fn bandwidth_becomes_token_buckets_in_libvirts_units() {
        let shaped = |bandwidth: &str, mtu: &str| {
            let d = with_devices(&format!(
                "<interface type='bridge'><source bridge='br0'/><bandwidth>{bandwidth}</bandwidth>{mtu}</interface>\
                 <interface type='ethernet'><bandwidth>{bandwidth}</bandwidth></interface>"
            ));
            let spec = container_spec(&d, &settings(), &none, None).unwrap();
            (
                spec.interfaces[0].bandwidth.clone().unwrap(),
                spec.interfaces[1].bandwidth.clone().unwrap(),
            )
        };
        let (first, second) = shaped(
            "<inbound average='2048' peak='4096' burst='128'/><outbound average='1024'/>",
            "",
        );
        // kB/s are 1000 bytes a second, burst KiB 1024 bytes; a peak gets
        // a bucket of one frame (MTU, Ethernet header, VLAN tag); 50 ms of
        // the average may queue on top of the bucket.
        assert_eq!(
            first.inbound,
            Some(RateLimit {
                rate: 2_048_000,
                burst: 128 * 1024,
                peak: Some(4_096_000),
                peak_burst: 1518,
                queue: 128 * 1024 + 102_400,
            })
        );
        let outbound = first.outbound.clone().unwrap();
        assert_eq!(
            outbound.limit,
            RateLimit {
                rate: 1_024_000,
                burst: 65_536,
                peak: None,
                peak_burst: 1518,
                queue: 65_536 + 51_200,
            },
            "without burst=: 64 KiB (more than 10 ms here)"
        );
        // The ifb's name is the interface's at every start, and another
        // interface's (or domain's) is another.
        assert!(
            outbound.ifb.starts_with("lxvq") && outbound.ifb.len() == 12,
            "{}",
            outbound.ifb
        );
        assert_eq!(
            shaped("<outbound average='1'/>", "")
                .0
                .outbound
                .unwrap()
                .ifb,
            outbound.ifb
        );
        assert_ne!(second.outbound.unwrap().ifb, outbound.ifb);
        assert!(
            outbound
                .alias
                .contains("domain 6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11 interface #1"),
            "{}",
            outbound.alias
        );
        let mut other = with_devices(
            "<interface type='bridge'><source bridge='br0'/><bandwidth><outbound average='1'/></bandwidth></interface>",
        );
        other.uuid = uuid::Uuid::new_v4();
        let spec = container_spec(&other, &settings(), &none, None).unwrap();
        assert_ne!(
            spec.interfaces[0]
                .bandwidth
                .clone()
                .unwrap()
                .outbound
                .unwrap()
                .ifb,
            outbound.ifb
        );

        // A bucket below a frame could never pass one: raised to it (the
        // MTU's); a peak equal to the average changes nothing; 10 ms at a
        // high rate is more than 64 KiB.
        let (jumbo, _) = shaped(
            "<inbound average='100' peak='100' burst='1'/><outbound average='100000'/>",
            "<mtu size='9000'/>",
        );
        let inbound = jumbo.inbound.unwrap();
        assert_eq!((inbound.burst, inbound.peak), (9018, None));
        assert_eq!(jumbo.outbound.unwrap().limit.burst, 1_000_000);
        // One direction only.
        let (inbound_only, _) = shaped("<inbound average='10'/>", "");
        assert!(inbound_only.inbound.is_some() && inbound_only.outbound.is_none());
    }

    #[test]
    fn vlan_tags_become_bridge_port_memberships() {
        let vlans = |vlan: &str| {
            let d = with_devices(&format!(
                "<interface type='bridge'><source bridge='br0'/>{vlan}</interface>"
            ));
            match container_spec(&d, &settings(), &none, None)
                .unwrap()
                .interfaces[0]
                .kind
                .clone()
            {
                InterfaceKind::Bridge { vlans, .. } => vlans,
                other => panic!("{other:?}"),
            }
        };
        let vlan = |vid, pvid, untagged| BridgeVlan {
            vid,
            pvid,
            untagged,
        };
        assert_eq!(vlans(""), []);
        // An access port.
        assert_eq!(vlans("<vlan><tag id='10'/></vlan>"), [vlan(10, true, true)]);
        // Trunks: tagged, the native VLAN also the PVID.
        assert_eq!(
            vlans("<vlan trunk='yes'><tag id='10'/></vlan>"),
            [vlan(10, false, false)]
        );
        assert_eq!(
            vlans("<vlan><tag id='10'/><tag id='20' nativeMode='untagged'/><tag id='30'/></vlan>"),
            [
                vlan(10, false, false),
                vlan(20, true, true),
                vlan(30, false, false)
            ]
        );
        assert_eq!(
            vlans("<vlan trunk='yes'><tag id='42' nativeMode='tagged'/><tag id='43'/></vlan>"),
            [vlan(42, true, false), vlan(43, false, false)]
        );
    }

    #[test]
    fn settings_that_cannot_apply_are_refused_naming_the_interface_and_the_fix() {
        use crate::domain::{Bandwidth, BandwidthRate};
        let refused = |d: &DomainDef| {
            let err = container_spec(d, &settings(), &none, None).unwrap_err();
            assert!(
                matches!(err, ConvertError::InterfaceSetting { .. }),
                "{err}"
            );
            err.to_string()
        };
        for (devices, message) in [
            (
                "<interface type='direct'><source dev='eth9'/><vlan><tag id='10'/></vlan></interface>",
                "domain 'web_1': <interface type='direct'> #1 (device 'eth9'): <vlan> cannot be applied to a 'direct' interface (libvirt tags those only through Open vSwitch or SR-IOV); connect the interface with type='bridge' to a bridge that filters VLANs, or remove <vlan>",
            ),
            (
                "<interface type='ethernet'/><interface type='bridge'><source bridge='br0'/><vlan><tag id='0'/></vlan></interface>",
                "domain 'web_1': <interface type='bridge'> #2 (bridge 'br0'): <tag id='0'> is not a VLAN a Linux bridge carries (1 to 4094); change the id",
            ),
            (
                "<interface type='bridge'><source bridge='br0'/><vlan trunk='yes'><tag id='4095'/></vlan></interface>",
                "<tag id='4095'> is not a VLAN",
            ),
            (
                "<interface type='bridge'><source bridge='br0'/><ip address='10.0.0.2' prefix='24'/>\
                 <route address='0.0.0.0' gateway='10.0.0.1'/><link state='down'/></interface>",
                "domain 'web_1': <interface type='bridge'> #1 (bridge 'br0'): <route> cannot go through a link that <link state='down'> leaves down (the kernel refuses routes through a device that is down); remove the routes, or <link state='down'>",
            ),
            (
                "<interface type='ethernet'><source><ip address='10.0.0.1' prefix='24'/>\
                 <route address='10.1.0.0' prefix='16' gateway='10.0.0.2'/></source><target dev='lxvtc9'/><link state='down'/></interface>",
                "domain 'web_1': <interface type='ethernet'> #1 (host end 'lxvtc9'): <route> under <source> cannot go through a host end that <link state='down'> leaves down; remove those routes or <link state='down'>",
            ),
        ] {
            let err = refused(&with_devices(devices));
            assert!(err.contains(message), "{devices}: {err}");
        }
        // What the parser refuses already is refused here too, should a
        // definition reach the driver otherwise: floor= on a bridge, and
        // a direct interface's bandwidth.
        let mut d = with_devices("<interface type='bridge'><source bridge='br0'/></interface>");
        std::sync::Arc::make_mut(&mut d.devices).interfaces[0].bandwidth = Some(Bandwidth {
            inbound: Some(BandwidthRate {
                average: Some(100),
                floor: Some(50),
                ..BandwidthRate::default()
            }),
            outbound: None,
        });
        assert_eq!(
            refused(&d),
            "domain 'web_1': <interface type='bridge'> #1 (bridge 'br0'): <inbound floor=…> needs the QoS of a virtual network, which lxvirt does not run yet; remove floor="
        );
        let mut d = with_devices("<interface type='direct'><source dev='eth9'/></interface>");
        std::sync::Arc::make_mut(&mut d.devices).interfaces[0].bandwidth = Some(Bandwidth {
            inbound: None,
            outbound: Some(BandwidthRate {
                average: Some(100),
                ..BandwidthRate::default()
            }),
        });
        assert!(
            refused(&d)
                .contains("<bandwidth> cannot be applied to a container's 'direct' interface"),
            "{}",
            refused(&d)
        );
    }

    #[test]
    fn networks_shared_namespaces_and_name_clashes_are_refused_clearly() {
        let d = with_devices("<interface type='network'><source network='default'/></interface>");
        let err = container_spec(&d, &settings(), &none, None).unwrap_err();
        assert!(matches!(err, ConvertError::VirtualNetwork { .. }), "{err}");
        assert!(err.to_string().contains("net-start default"), "{err}");

        let xml = with_devices("<interface type='ethernet'/>")
            .to_xml()
            .replace(
                "<domain type='lxc'>",
                "<domain type='lxc' xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'>",
            )
            .replace(
                "</domain>",
                "<lxc:namespace><lxc:sharenet type='netns' value='red'/></lxc:namespace></domain>",
            );
        let err = container_spec(
            &DomainDef::from_xml(&xml).unwrap(),
            &settings(),
            &none,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ConvertError::SharedNetwork { .. }), "{err}");

        // Two interfaces with one guest or target name are refused by the
        // parser already; a guest name that a moved host interface has is
        // refused here.
        let devices = "<interface type='ethernet'><guest dev='eth7'/></interface>\
             <hostdev mode='capabilities' type='net'><source><interface>eth7</interface></source></hostdev>";
        let err = container_spec(&with_devices(devices), &settings(), &none, None).unwrap_err();
        assert!(matches!(err, ConvertError::InterfaceName { .. }), "{err}");
    }

    #[test]
    fn seccomp_follows_the_element_and_the_user_namespace() {
        let idmap = "<idmap><uid start='0' target='100000' count='65536'/><gid start='0' target='100000' count='65536'/></idmap>";
        let ns = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
        let with = |extra: &str, seccomp: &str| {
            let xml = format!(
                "<domain type='lxc' {ns}><name>web</name><memory unit='MiB'>64</memory>\
                 <os><type>exe</type><init>/bin/sh</init></os>{extra}{seccomp}</domain>"
            );
            container_spec(
                &DomainDef::from_xml(&xml).unwrap(),
                &settings(),
                &none,
                None,
            )
            .unwrap()
            .seccomp
        };
        let spec = |deny_mount, deny: &[&str]| {
            Some(SeccompSpec {
                deny_mount,
                deny: deny.iter().map(|d| d.to_string()).collect(),
            })
        };
        assert_eq!(with("", ""), spec(true, &[]));
        assert_eq!(with(idmap, ""), spec(false, &[]));
        assert_eq!(with("", "<lxvirt:seccomp mode='off'/>"), None);
        assert_eq!(
            with(
                idmap,
                "<lxvirt:seccomp mount='deny'><lxvirt:deny syscall='uname'/></lxvirt:seccomp>"
            ),
            spec(true, &["uname"])
        );
        assert_eq!(
            with("", "<lxvirt:seccomp mode='default' mount='allow'/>"),
            spec(false, &[])
        );
    }

    #[test]
    fn allocated_blocks_map_root_through_an_idmapped_root() {
        let ns = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
        let user = |userns: &str| {
            let xml = format!(
                "<domain type='lxc' {ns}><name>web</name><memory unit='MiB'>64</memory>\
                 <os><type>exe</type><init>/bin/sh</init></os>{userns}</domain>"
            );
            container_spec(
                &DomainDef::from_xml(&xml).unwrap(),
                &settings(),
                &none,
                None,
            )
            .unwrap()
            .namespaces
            .user
        };
        assert_eq!(
            user("<lxvirt:userns mode='auto' target='1065536' count='65536'/>"),
            Some(IdMapping {
                uid: vec![(0, 1_065_536, 65536)],
                gid: vec![(0, 1_065_536, 65536)],
                idmapped_root: true,
            })
        );
        // Not allocated (the manager does that at start) or opted out.
        assert_eq!(user("<lxvirt:userns mode='auto'/>"), None);
        assert_eq!(user("<lxvirt:userns mode='host'/>"), None);
        assert_eq!(user(""), None);
    }

    #[test]
    fn image_root_becomes_an_overlay() {
        use crate::storage::{OverlayMount, RootMount};
        let d = def("").to_xml().replace(
            "</devices>",
            "<filesystem type='volume'><source pool='images' volume='busybox'/><target dir='/'/></filesystem></devices>",
        );
        let d = DomainDef::from_xml(&d).unwrap();
        let err = container_spec(&d, &settings(), &none, None).unwrap_err();
        assert!(
            matches!(err, ConvertError::ImageRootMissing { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("image 'busybox'"), "{err}");
        let mount = RootMount::Overlay(OverlayMount {
            lowerdir: vec!["/s/images/b/layer".into(), "/s/images/a/layer".into()],
            upperdir: "/s/containers/web/upper".into(),
            workdir: "/s/containers/web/work".into(),
            target: "/s/containers/web/merged".into(),
        });
        let spec = container_spec(&d, &settings(), &none, Some(&mount)).unwrap();
        assert_eq!(
            spec.root,
            RootFs::Overlay {
                lowerdir: vec!["/s/images/b/layer".into(), "/s/images/a/layer".into()],
                upperdir: "/s/containers/web/upper".into(),
                workdir: "/s/containers/web/work".into(),
            }
        );
        assert!(spec.mounts.is_empty());
        // Its own root: not an application container on the host's files.
        assert!(!spec.no_new_privs);
    }
}
