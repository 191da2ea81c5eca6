//! The launch spec: everything the per-container monitor needs to build a
//! container, resolved by the daemon from the domain definition and the
//! host (device numbers, capability sets, cgroup paths).
//!
//! The daemon writes it as JSON for the monitor; the monitor never parses
//! domain XML, so it stays small and its input is already checked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cgroup::CgroupSpec;
pub use crate::net::shaping::{BandwidthSpec, OutboundSpec};
use crate::net::{BridgeVlan, IpAddress, IpRoute, MacvlanMode};

/// Format version of [`ContainerSpec`]; a monitor refuses other versions.
/// 2: network interfaces (a monitor of version 1 would ignore them).
/// 3: their MTU, link state, bandwidth, VLANs and host-side addresses, and
/// the addresses of host interfaces moved in (a monitor of version 2
/// would ignore them, or read no moved interface at all).
pub const SPEC_VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub version: u32,
    pub name: String,
    pub uuid: Uuid,
    /// The domain name filtered to `[A-Za-z0-9-]`.
    pub hostname: String,
    pub namespaces: Namespaces,
    pub root: RootFs,
    /// Mounts inside the container, in order, after the root.
    pub mounts: Vec<MountSpec>,
    /// Device nodes to create in the private /dev (disks, hostdevs).
    pub devices: Vec<DeviceNode>,
    pub init: InitSpec,
    /// Capabilities kept in the bounding set (kernel numbers); all others
    /// are dropped before init runs.
    pub capabilities: Vec<u8>,
    /// Set `no_new_privs` before exec.
    pub no_new_privs: bool,
    /// Paths inside the container hidden from it (an empty read-only file
    /// or directory is mounted over them).
    pub masked_paths: Vec<PathBuf>,
    /// Paths inside the container remounted read-only.
    pub readonly_paths: Vec<PathBuf>,
    /// Number of consoles; console 0 is init's stdio and /dev/console,
    /// console N>0 is /dev/ttyN.
    pub consoles: u32,
    pub cgroup: CgroupSpec,
    /// SELinux labels, when a security driver confines the container.
    pub security: Option<SecuritySpec>,
    /// The seccomp filter of init and of entered processes; `None`: none.
    #[serde(default)]
    pub seccomp: Option<SeccompSpec>,
    /// Directory for the monitor's per-container files (socket, exit
    /// record, staging mount point).
    pub run_dir: PathBuf,
    /// Network interfaces the monitor makes before init runs, in the
    /// order of the domain's `<interface>` elements; they need a new
    /// network namespace.
    #[serde(default)]
    pub interfaces: Vec<InterfaceSpec>,
    /// Host interfaces moved into the container (`<hostdev type='net'>`)
    /// and back to the host when it ends.
    #[serde(default)]
    pub host_interfaces: Vec<HostInterfaceSpec>,
    /// The loop devices the monitor attached for the file-backed
    /// filesystems (root and mounts) before it made the cgroup, so that
    /// the device allow-list names them; the setup mounts these instead of
    /// attaching its own. Empty in the daemon's spec.
    #[serde(default)]
    pub loop_devices: Vec<AttachedLoop>,
    /// Where the monitor keeps console 0's output, whether or not a client
    /// is attached; `None` keeps none.
    #[serde(default)]
    pub console_log: Option<ConsoleLogSpec>,
}

/// The console's log file: appended to; at `max_bytes` it becomes
/// `PATH.1` (replacing the one before) and a new file begins, so a domain's
/// console output takes at most twice `max_bytes` on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleLogSpec {
    pub path: PathBuf,
    pub max_bytes: u64,
}

impl ConsoleLogSpec {
    /// The file the log was rotated into.
    pub fn previous(path: &std::path::Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }
}

/// A raw image file and the loop device attached for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedLoop {
    pub file: PathBuf,
    /// `/dev/loopN`.
    pub device: PathBuf,
}

/// A host interface moved into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInterfaceSpec {
    /// Its name on the host, which it keeps inside.
    pub name: String,
    /// Set inside after the move (which leaves it down and without
    /// addresses); with any, it is brought up first.
    #[serde(default)]
    pub addresses: Vec<IpAddress>,
    #[serde(default)]
    pub routes: Vec<IpRoute>,
}

/// One `<interface>` of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// Its position among the domain's `<interface>` elements, from 0
    /// (for messages).
    pub index: usize,
    pub kind: InterfaceKind,
    /// The container end's MAC address.
    pub mac: [u8; 6],
    /// Its name inside the container.
    pub guest_name: String,
    pub addresses: Vec<IpAddress>,
    pub routes: Vec<IpRoute>,
    /// The MTU of the container end (and of the host end of a veth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `<link state='down'>`: the container end (and the host end of a
    /// veth) is left down.
    #[serde(default)]
    pub link_down: bool,
    /// Traffic shaping on the host end of a veth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthSpec>,
    /// No IPv6 link-local address inside: a port on a virtual network
    /// without IPv6, whose autoconfiguration multicasts would reach every
    /// other port of the network for nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet_ipv6: bool,
}

/// How an interface connects to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum InterfaceKind {
    /// A veth pair whose host end `host_name` is attached to `bridge`
    /// (`type='bridge'`, and `type='network'` plugged into its network's
    /// bridge), a member of `vlans` if any (the bridge must filter VLANs)
    /// and of no other.
    Bridge {
        bridge: String,
        host_name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        vlans: Vec<BridgeVlan>,
        /// The device group the host end is made in: a virtual network's
        /// port filter matches its ports by it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_group: Option<u32>,
        /// The bridge is a virtual network's, made by lxvirtd: known to
        /// be a bridge, so only its index is looked up.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        network_bridge: bool,
    },
    /// A veth pair whose host end `host_name` is brought up, with the
    /// host-side addresses and routes (`type='ethernet'`).
    Ethernet {
        host_name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        addresses: Vec<IpAddress>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routes: Vec<IpRoute>,
    },
    /// A macvlan on the host device `dev` (`type='direct'`), made in the
    /// container's namespace.
    Direct { dev: String, mode: MacvlanMode },
}

impl InterfaceKind {
    /// The `type` of its `<interface>`.
    pub fn type_str(&self) -> &'static str {
        match self {
            InterfaceKind::Bridge { .. } => "bridge",
            InterfaceKind::Ethernet { .. } => "ethernet",
            InterfaceKind::Direct { .. } => "direct",
        }
    }

    /// The veth's host end, if it has one.
    pub fn host_name(&self) -> Option<&str> {
        match self {
            InterfaceKind::Bridge { host_name, .. } | InterfaceKind::Ethernet { host_name, .. } => {
                Some(host_name)
            }
            InterfaceKind::Direct { .. } => None,
        }
    }
}

/// Which namespaces the container gets. Mount, UTS, IPC, PID and cgroup
/// namespaces are always new unless shared here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub net: NsChoice,
    pub ipc: NsChoice,
    pub uts: NsChoice,
    /// A user namespace with these mappings, or none (host ids).
    pub user: Option<IdMapping>,
}

/// A namespace: a new one, the host's, or another process's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsChoice {
    New,
    Host,
    /// A bind-mounted namespace file, such as `/run/netns/red`.
    Path(PathBuf),
    /// The namespace of a running process (another domain's init).
    Pid(i32),
}

/// uid and gid maps as written to `/proc/PID/{uid,gid}_map`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// (inside, outside, count)
    pub uid: Vec<(u32, u32, u32)>,
    pub gid: Vec<(u32, u32, u32)>,
    /// Show the root file system through an idmapped mount, so that files
    /// owned by host root appear as the container's root without being
    /// chowned (ranges lxvirt allocated). False for libvirt's `<idmap>`:
    /// the root's files must already belong to the mapped ids.
    #[serde(default)]
    pub idmapped_root: bool,
}

impl IdMapping {
    /// The host gid of `gid` inside, if it is mapped.
    pub fn host_gid(&self, gid: u32) -> Option<u32> {
        self.gid
            .iter()
            .find(|&&(inside, _, count)| inside <= gid && gid - inside < count)
            .map(|&(inside, outside, _)| outside + (gid - inside))
    }

    /// The host uid that root inside maps to.
    pub fn root_uid(&self) -> Option<u32> {
        self.uid
            .iter()
            .find(|(inside, _, _)| *inside == 0)
            .map(|e| e.1)
    }

    /// The host gid that root inside maps to.
    pub fn root_gid(&self) -> Option<u32> {
        self.gid
            .iter()
            .find(|(inside, _, _)| *inside == 0)
            .map(|e| e.1)
    }
}

/// Where the container's `/` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootFs {
    /// The host's root, shared (libvirt's default without a `/` filesystem).
    Host,
    /// A host directory.
    Dir { path: PathBuf, readonly: bool },
    /// A host block device with a filesystem.
    Block { dev: PathBuf, readonly: bool },
    /// A raw image file, attached through a loop device.
    File { path: PathBuf, readonly: bool },
    /// An image of the image store: its layers (top first) read-only under
    /// the domain's writable layer, stacked with overlayfs.
    Overlay {
        lowerdir: Vec<PathBuf>,
        upperdir: PathBuf,
        workdir: PathBuf,
    },
}

/// A mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// Bind a host directory.
    HostDir(PathBuf),
    /// Bind a directory of the container's own tree.
    ContainerDir(PathBuf),
    /// A tmpfs of this many bytes.
    Tmpfs { size: u64 },
    /// A host block device with a filesystem.
    Block(PathBuf),
    /// A raw image file through a loop device.
    File(PathBuf),
}

/// A device node in the container's /dev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Absolute path inside the container (under /dev).
    pub path: PathBuf,
    pub kind: DeviceKind,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Char,
    Block,
}

/// How init is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// argv, `path` first.
    pub args: Vec<String>,
    /// The complete environment, `KEY=value`.
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub user: Option<IdSpec>,
    pub group: Option<IdSpec>,
}

/// A user or group: a name to look up in the container's files, or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdSpec {
    Name(String),
    Id(u32),
}

/// SELinux labels applied by the monitor and the container setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    /// Set with `setexeccon` right before init is executed.
    pub process_label: String,
    /// `context=` of every tmpfs, devpts and image mount.
    pub image_label: String,
    /// Relabel the container's own root directory to `image_label`.
    pub relabel_root: bool,
}

/// The seccomp filter: the default classes plus what the domain adds. The
/// monitor compiles it (microseconds; see `crate::seccomp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompSpec {
    /// Block the mount family too.
    pub deny_mount: bool,
    /// Syscalls the domain blocks besides the default, by name.
    #[serde(default)]
    pub deny: Vec<String>,
}
