//! The typed domain definition.
//!
//! Sizes are bytes (whole KiB), paths are absolute and normalised, keywords
//! are enums. Optional XML elements are `Option`s; defaults that libvirt
//! fills in when it formats a definition (current memory, vCPU count and
//! placement, lifecycle actions, clock offset, console ports) are filled in
//! at parse time so that a definition always formats the same way.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use super::cpuset::CpuSet;
pub use super::kept::KeptElement;
use super::values::{Capability, DomainName, IdRef, MacAddr, keyword_enum};

/// The namespace of libvirt's LXC extension elements (`<lxc:namespace>`).
pub const LXC_NAMESPACE_URI: &str = "http://libvirt.org/schemas/domain/lxc/1.0";

/// The namespace of lxvirt's own extension elements (`<lxvirt:seccomp>`).
pub const LXVIRT_NAMESPACE_URI: &str = "https://lxvirt.org/schemas/domain/1";

/// At most this many `<lxvirt:deny>` in one `<lxvirt:seccomp>`.
pub const MAX_SECCOMP_DENY: usize = 512;

/// The cgroup partition used when `<resource>` names none.
pub const DEFAULT_PARTITION: &str = "/machine";

keyword_enum! {
    /// The driver a domain is for.
    pub enum DomainType {
        Lxc = "lxc",
        Kvm = "kvm",
        Qemu = "qemu",
    }
}

impl DomainType {
    /// Whether the domain is a container (as opposed to a virtual machine).
    pub fn is_container(self) -> bool {
        self == DomainType::Lxc
    }
}

/// The highest task limit a cgroup takes: the kernel's most pids
/// (`PID_MAX_LIMIT` on 64-bit); `pids.max` refuses more.
pub const MAX_PIDS: u64 = 4_194_304;

/// A complete domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDef {
    pub domain_type: DomainType,
    pub name: DomainName,
    /// Generated (version 4) when the document has none.
    pub uuid: Uuid,
    pub title: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Metadata>,
    /// Maximum memory, bytes.
    pub memory: u64,
    /// Virtual machines: `<memory dumpCore=>`, whether the guest's memory
    /// goes into a core dump of its qemu.
    pub dump_core: Option<bool>,
    /// Memory at start, bytes; equals `memory` when not given.
    pub current_memory: u64,
    pub memtune: Option<MemTune>,
    pub vcpu: Vcpu,
    pub cputune: Option<CpuTune>,
    pub numatune: Option<NumaTune>,
    pub blkiotune: Option<BlkioTune>,
    /// `<resource><partition>`; `None` means [`DEFAULT_PARTITION`], see
    /// [`DomainDef::partition`].
    pub partition: Option<PathBuf>,
    pub os: Os,
    pub idmap: Option<IdMap>,
    pub features: Features,
    pub clock: Clock,
    pub on_poweroff: LifecycleAction,
    pub on_reboot: LifecycleAction,
    pub on_crash: LifecycleAction,
    /// Shared by a definition and its copies until one of them changes a
    /// device ([`Arc::make_mut`]): a running domain's live definition is
    /// a copy of its definition, and with thousands running the devices
    /// (~1 KiB each) were most of the difference.
    pub devices: Arc<Devices>,
    pub seclabel: Option<SecLabel>,
    /// `<lxc:namespace>`: namespaces shared with other processes.
    pub lxc_namespace: Option<LxcNamespace>,
    /// `<lxvirt:seccomp>`; `None`: the default filter.
    pub seccomp: Option<Seccomp>,
    /// `<lxvirt:userns>`; `None`: the daemon's default (an allocated range
    /// unless the daemon is configured otherwise), or `<idmap>` when given.
    pub userns: Option<Userns>,
    /// `<lxvirt:pids max='N'/>` (containers): at most this many tasks,
    /// 1 to [`MAX_PIDS`]; `None`: the daemon's `pids-max` setting.
    pub pids_max: Option<u64>,
    /// `<lxvirt:api access='…'/>` (containers): whether processes inside
    /// may call lxvirtd; `None`: they may not.
    pub api_access: Option<ApiAccess>,
    /// `<cpu>` (virtual machines).
    pub cpu: Option<Cpu>,
    /// `<pm>` (virtual machines).
    pub pm: Option<Pm>,
    /// Kept children of `<domain>` (virtual machines: `<memoryBacking>`,
    /// `<sysinfo>`, …), in document order.
    pub kept: Vec<KeptElement>,
}

impl DomainDef {
    /// What in this virtual machine's definition lxvirt keeps but does not
    /// model, so that a driver cannot act on it: every kept element except
    /// placement and naming hints (`<address>`, `<alias>`), as a start tag
    /// that names it with the element it sits in, such as
    /// `<devices><sound model='ich9'>`. A driver refuses to start a domain
    /// while this list has something it cannot run, naming the element;
    /// the definition keeps it either way. Empty for containers, which
    /// keep nothing.
    pub fn unsupported_for_vm(&self) -> Vec<String> {
        let mut out = Vec::new();
        let add = |out: &mut Vec<String>, parent: &str, kept: &[KeptElement]| {
            for k in kept {
                let hint = super::kept::CONTEXTS
                    .iter()
                    .flat_map(|(_, specs)| specs.iter())
                    .any(|s| s.hint && s.name == k.name);
                if !hint {
                    out.push(format!("{parent}{k}"));
                }
            }
        };
        add(&mut out, "", &self.kept);
        if let Os::Hvm(os) = &self.os {
            add(&mut out, "<os>", &os.kept);
        }
        add(&mut out, "<features>", &self.features.kept);
        if let Some(cpu) = &self.cpu {
            add(&mut out, "<cpu>", &cpu.kept);
        }
        add(&mut out, "<devices>", &self.devices.kept);
        for d in &self.devices.disks {
            let disk = format!("<disk dev='{}'>", d.target_dev);
            // A kept type is named before what it holds; a kept file or
            // block source is named by its <source> among the kept.
            if let DiskSource::Kept(t) = d.source
                && !matches!(t, KeptDiskType::File | KeptDiskType::Block)
            {
                out.push(format!("<devices><disk type='{t}'>"));
            }
            for (name, value) in &d.target_kept {
                out.push(format!("{disk}<target {name}='{value}'>"));
            }
            add(&mut out, &disk, &d.kept);
        }
        for (n, i) in self.devices.interfaces.iter().enumerate() {
            // A kept type is named before what it holds.
            if let InterfaceSource::Kept(t) = i.source {
                out.push(format!("<devices><interface type='{t}'>"));
            }
            add(&mut out, &format!("<interface index='{n}'>"), &i.kept);
        }
        out
    }

    /// The name as a string.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The container's host name, derived from the domain name.
    pub fn hostname(&self) -> String {
        self.name.hostname()
    }

    /// The cgroup partition the domain lives in.
    pub fn partition(&self) -> &Path {
        self.partition
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_PARTITION))
    }

    /// The `<filesystem>` mounted on `/`, if any; without one an LXC domain
    /// shares the host's root.
    pub fn root_filesystem(&self) -> Option<&Filesystem> {
        self.devices
            .filesystems
            .iter()
            .find(|fs| fs.target == Path::new("/"))
    }

    /// The image (name or id) the root filesystem comes from, when the root
    /// is a `volume` of the image store.
    pub fn root_image(&self) -> Option<&str> {
        match &self.root_filesystem()?.source {
            FsSource::Volume { volume, .. } => Some(volume),
            _ => None,
        }
    }

    /// The `exe` OS section of a container, `None` for virtual machines.
    pub fn exe_os(&self) -> Option<&ExeOs> {
        match &self.os {
            Os::Exe(os) => Some(os),
            Os::Hvm(_) => None,
        }
    }

    /// Sets the live labels (for the XML of a running domain): the
    /// generated process label of a dynamic seclabel and the image label of
    /// a dynamic or static one. Labels that do not apply are ignored: a
    /// static seclabel's process label is its configured `<label>`, and a
    /// seclabel of type `none` has no labels. Does nothing without a
    /// `<seclabel>`.
    pub fn set_live_labels(&mut self, label: Option<String>, imagelabel: Option<String>) {
        if let Some(sec) = &mut self.seclabel {
            sec.live = match sec.label_type {
                SecLabelType::Dynamic => LiveLabels { label, imagelabel },
                SecLabelType::Static => LiveLabels {
                    label: None,
                    imagelabel,
                },
                SecLabelType::None => LiveLabels::default(),
            };
        }
    }

    /// Gives each interface `wanted` picks to `change`, with its index.
    /// The devices, shared with other copies of this definition, are
    /// copied only when one is picked.
    pub fn change_interfaces(
        &mut self,
        wanted: impl Fn(&Interface) -> bool,
        mut change: impl FnMut(usize, &mut Interface),
    ) {
        if !self.devices.interfaces.iter().any(&wanted) {
            return;
        }
        let interfaces = &mut Arc::make_mut(&mut self.devices).interfaces;
        for (index, interface) in interfaces.iter_mut().enumerate() {
            if wanted(interface) {
                change(index, interface);
            }
        }
    }

    /// Drops the live labels, e.g. when the domain stops.
    pub fn clear_live_labels(&mut self) {
        if let Some(sec) = &mut self.seclabel {
            sec.live = LiveLabels::default();
        }
        if let Some(userns) = &mut self.userns {
            userns.allocated = None;
        }
    }

    /// The persistent definition: this one without live-only data.
    pub fn persistent(&self) -> DomainDef {
        let mut def = self.clone();
        def.clear_live_labels();
        def
    }
}

/// `<metadata>`: the inner XML text, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata(pub String);

impl Metadata {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `<memtune>`; every value in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemTune {
    pub hard_limit: Option<u64>,
    pub soft_limit: Option<u64>,
    pub swap_hard_limit: Option<u64>,
    /// Accepted and kept; not acted on (as in libvirt's LXC driver).
    pub min_guarantee: Option<u64>,
}

keyword_enum! {
    pub enum VcpuPlacement {
        Static = "static",
        Auto = "auto",
    }
}

/// `<vcpu>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    /// Number of vCPUs, at least 1; reported only for containers.
    pub count: u32,
    pub placement: VcpuPlacement,
    /// Host CPUs the domain may run on.
    pub cpuset: Option<CpuSet>,
    /// vCPUs online at start (virtual machines), at most `count`; `None`:
    /// all of them.
    pub current: Option<u32>,
}

impl Default for Vcpu {
    fn default() -> Self {
        Vcpu {
            count: 1,
            placement: VcpuPlacement::Static,
            cpuset: None,
            current: None,
        }
    }
}

/// `<cputune>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTune {
    /// Relative weight, 2..=262144.
    pub shares: Option<u64>,
    /// Microseconds, 1000..=1000000.
    pub period: Option<u64>,
    /// Microseconds per period; -1 for unlimited, otherwise at least 1000.
    pub quota: Option<i64>,
}

/// Largest accepted `<quota>` (the kernel's limit).
pub const MAX_QUOTA: i64 = 17_592_186_044_415;

keyword_enum! {
    pub enum NumaMode {
        Strict = "strict",
        Preferred = "preferred",
        Interleave = "interleave",
        Restrictive = "restrictive",
    }
}

/// `<numatune>`: host NUMA nodes for the domain's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaTune {
    /// `<memory mode= nodeset=/>`: all of it; `None` when only
    /// `<memnode>`s are given.
    pub memory: Option<NumaMemory>,
    /// Virtual machines: `<memnode>`, one guest NUMA cell's, cell ids
    /// distinct.
    pub memnodes: Vec<MemNode>,
}

/// `<numatune><memory>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaMemory {
    pub mode: NumaMode,
    pub nodeset: CpuSet,
}

/// `<numatune><memnode cellid= mode= nodeset=/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemNode {
    pub cellid: u32,
    pub mode: NumaMode,
    pub nodeset: CpuSet,
}

/// `<blkiotune>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioTune {
    /// 100..=1000.
    pub weight: Option<u32>,
    pub devices: Vec<BlkioDevice>,
}

/// `<blkiotune><device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkioDevice {
    pub path: PathBuf,
    /// 100..=1000.
    pub weight: Option<u32>,
    pub read_bytes_sec: Option<u64>,
    pub write_bytes_sec: Option<u64>,
    pub read_iops_sec: Option<u64>,
    pub write_iops_sec: Option<u64>,
}

/// `<os>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Os {
    /// A container running an init program (`<type>exe</type>`).
    Exe(ExeOs),
    /// A virtual machine (`<type>hvm</type>`).
    Hvm(HvmOs),
}

/// `<os>` of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeOs {
    pub arch: Option<String>,
    /// Absolute path of the program run as PID 1.
    pub init: PathBuf,
    pub initargs: Vec<String>,
    /// Extra environment variables, in document order.
    pub initenv: Vec<(String, String)>,
    pub initdir: Option<PathBuf>,
    pub inituser: Option<IdRef>,
    pub initgroup: Option<IdRef>,
    /// Passed to init as `LIBVIRT_LXC_CMDLINE`.
    pub cmdline: Option<String>,
}

keyword_enum! {
    pub enum BootDev {
        Hd = "hd",
        Cdrom = "cdrom",
        Network = "network",
        Fd = "fd",
    }
}

keyword_enum! {
    /// `<os firmware=>`: which firmware the hypervisor picks for the guest.
    pub enum Firmware {
        Bios = "bios",
        Efi = "efi",
    }
}

/// `<os>` of a virtual machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HvmOs {
    pub firmware: Option<Firmware>,
    pub arch: Option<String>,
    pub machine: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub boot: Vec<BootDev>,
    pub loader: Option<Loader>,
    pub nvram: Option<Nvram>,
    pub bootmenu: Option<BootMenu>,
    /// `<smbios mode=>`.
    pub smbios: Option<SmbiosMode>,
    /// Kept children: `<bios>`, `<firmware>`, `<acpi>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    /// `<loader type=>`.
    pub enum LoaderType {
        Rom = "rom",
        Pflash = "pflash",
    }
}

/// `<os><loader>`: the firmware image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loader {
    /// `None`: the hypervisor's choice (with `<os firmware=>`).
    pub path: Option<PathBuf>,
    pub readonly: Option<bool>,
    pub loader_type: Option<LoaderType>,
    /// Secure boot (needs `<smm state='on'/>`).
    pub secure: Option<bool>,
    /// `yes`: firmware that keeps no variables, so no `<nvram>`.
    pub stateless: Option<bool>,
}

/// `<os><nvram>`: the guest's UEFI variable store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nvram {
    /// `None`: the hypervisor's choice.
    pub path: Option<PathBuf>,
    /// The file a new store is copied from.
    pub template: Option<PathBuf>,
}

/// `<os><bootmenu>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootMenu {
    pub enable: Option<bool>,
    /// Milliseconds, 0..=65535.
    pub timeout: Option<u32>,
}

keyword_enum! {
    /// `<smbios mode=>`: where the guest's SMBIOS tables come from.
    pub enum SmbiosMode {
        Emulate = "emulate",
        Host = "host",
        Sysinfo = "sysinfo",
    }
}

keyword_enum! {
    pub enum CpuMode {
        Custom = "custom",
        HostModel = "host-model",
        HostPassthrough = "host-passthrough",
        Maximum = "maximum",
    }
}

keyword_enum! {
    pub enum CpuMatch {
        Minimum = "minimum",
        Exact = "exact",
        Strict = "strict",
    }
}

keyword_enum! {
    pub enum CpuCheck {
        None = "none",
        Partial = "partial",
        Full = "full",
    }
}

keyword_enum! {
    /// `<cpu><model fallback=>`: whether a close model may replace it.
    pub enum CpuFallback {
        Allow = "allow",
        Forbid = "forbid",
    }
}

keyword_enum! {
    pub enum CpuFeaturePolicy {
        Force = "force",
        Require = "require",
        Optional = "optional",
        Disable = "disable",
        Forbid = "forbid",
    }
}

/// `<cpu><model>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuModel {
    /// A CPU model name such as `Skylake-Client`; `None` with only
    /// `fallback` given.
    pub name: Option<String>,
    pub fallback: Option<CpuFallback>,
}

/// `<cpu><topology>`: each count 1..=4096 when given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTopology {
    pub sockets: Option<u32>,
    pub dies: Option<u32>,
    /// Groups of cores sharing a cache level, between dies and cores.
    pub clusters: Option<u32>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
}

/// `<cpu><feature>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    /// `None`: `require`, libvirt's default.
    pub policy: Option<CpuFeaturePolicy>,
    pub name: String,
}

/// `<cpu>` of a virtual machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    pub mode: Option<CpuMode>,
    pub match_mode: Option<CpuMatch>,
    pub check: Option<CpuCheck>,
    pub migratable: Option<bool>,
    pub model: Option<CpuModel>,
    pub topology: Option<CpuTopology>,
    /// In document order; names distinct.
    pub features: Vec<CpuFeature>,
    /// Kept children: `<vendor>`, `<cache>`, `<maxphysaddr>`, `<numa>`.
    pub kept: Vec<KeptElement>,
}

/// `<pm>`: which sleep states the guest's firmware offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pm {
    pub suspend_to_mem: Option<bool>,
    pub suspend_to_disk: Option<bool>,
}

/// `<idmap>`: user namespace mappings, each list sorted by `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uid: Vec<IdMapEntry>,
    pub gid: Vec<IdMapEntry>,
}

/// One `<uid>` or `<gid>` mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapEntry {
    /// First id inside the container.
    pub start: u32,
    /// First id on the host.
    pub target: u32,
    pub count: u32,
}

keyword_enum! {
    pub enum CapsPolicy {
        Default = "default",
        Allow = "allow",
        Deny = "deny",
    }
}

/// `<features><capabilities>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub policy: CapsPolicy,
    /// Per-capability overrides: `true` keeps it, `false` drops it.
    pub states: BTreeMap<Capability, bool>,
}

/// `<features>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// LXC: a private network namespace even without interfaces.
    pub privnet: bool,
    /// LXC: capability policy.
    pub capabilities: Option<Capabilities>,
    /// Virtual machines only.
    pub acpi: bool,
    pub apic: bool,
    /// `<apic eoi=>`: KVM's paravirtual end of interrupt.
    pub apic_eoi: Option<bool>,
    pub pae: bool,
    /// `<vmport state=>` (virtual machines).
    pub vmport: Option<bool>,
    /// `<smm state=>` (virtual machines; secure boot needs it on).
    pub smm: Option<bool>,
    /// `<smm><tseg>`: the SMRAM's extended size, in MiB.
    pub smm_tseg_mib: Option<u64>,
    /// `<ioapic driver=>` (virtual machines).
    pub ioapic: Option<IoapicDriver>,
    /// Kept children (virtual machines): `<hyperv>`, `<kvm>`, `<pmu>`, …
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    /// `<ioapic driver=>`: who emulates the I/O APIC.
    pub enum IoapicDriver {
        Kvm = "kvm",
        Qemu = "qemu",
    }
}

impl Features {
    pub fn is_empty(&self) -> bool {
        *self == Features::default()
    }
}

keyword_enum! {
    pub enum ClockOffset {
        Utc = "utc",
        Localtime = "localtime",
    }
}

keyword_enum! {
    pub enum TimerName {
        Rtc = "rtc",
        Hpet = "hpet",
        Pit = "pit",
        Tsc = "tsc",
        Kvmclock = "kvmclock",
        Hypervclock = "hypervclock",
    }
}

keyword_enum! {
    /// `<timer tickpolicy=>`: what to do with ticks the guest missed.
    pub enum TickPolicy {
        Delay = "delay",
        Catchup = "catchup",
        Merge = "merge",
        Discard = "discard",
    }
}

/// `<clock>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub offset: ClockOffset,
    pub timers: Vec<Timer>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            offset: ClockOffset::Utc,
            timers: Vec::new(),
        }
    }
}

/// `<clock><timer>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub name: TimerName,
    pub present: Option<bool>,
    /// Virtual machines only.
    pub tickpolicy: Option<TickPolicy>,
    /// Virtual machines, `tsc`: the guest's TSC rate in Hz.
    pub frequency: Option<u64>,
    /// Virtual machines: `<catchup>`, how a catching-up timer does it.
    pub catchup: Option<TimerCatchup>,
}

/// `<timer><catchup>`: thresholds and rates of tick catch-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerCatchup {
    pub threshold: Option<u64>,
    pub slew: Option<u64>,
    pub limit: Option<u64>,
}

keyword_enum! {
    /// What to do when the domain powers off, reboots or crashes. Accepted
    /// as libvirt does; the LXC driver (like libvirt's) only acts on
    /// `on_reboot` destroy/restart.
    pub enum LifecycleAction {
        Destroy = "destroy",
        Restart = "restart",
        Preserve = "preserve",
        RenameRestart = "rename-restart",
        /// `on_crash` only.
        CoredumpDestroy = "coredump-destroy",
        /// `on_crash` only.
        CoredumpRestart = "coredump-restart",
        /// `on_crash` only, virtual machines: the guest keeps running
        /// after it reported the crash (it may dump and reboot by itself).
        PreserveRunning = "preserve-running",
    }
}

/// `<devices>`, each kind in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub emulator: Option<PathBuf>,
    pub filesystems: Vec<Filesystem>,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    pub hostdevs: Vec<Hostdev>,
    /// Virtual machines only.
    pub serials: Vec<Serial>,
    pub consoles: Vec<Console>,
    /// Virtual machines only, from here to `kept`.
    pub controllers: Vec<Controller>,
    pub inputs: Vec<Input>,
    pub graphics: Vec<Graphics>,
    pub videos: Vec<Video>,
    pub sounds: Vec<Sound>,
    pub audios: Vec<Audio>,
    pub channels: Vec<Channel>,
    pub rngs: Vec<Rng>,
    pub memballoon: Option<Memballoon>,
    pub watchdogs: Vec<Watchdog>,
    pub panics: Vec<Panic>,
    /// Kept devices (virtual machines): `<tpm>`, `<smartcard>`, `<hostdev>`,
    /// … in document order.
    pub kept: Vec<KeptElement>,
}

impl Devices {
    /// Gives back the spare capacity of every list: a daemon holds two
    /// definitions per running domain, thousands of them, and a list of
    /// one device would otherwise keep room for four.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.filesystems.shrink_to_fit();
        self.disks.shrink_to_fit();
        self.interfaces.shrink_to_fit();
        self.hostdevs.shrink_to_fit();
        self.serials.shrink_to_fit();
        self.consoles.shrink_to_fit();
        self.controllers.shrink_to_fit();
        self.inputs.shrink_to_fit();
        self.graphics.shrink_to_fit();
        self.videos.shrink_to_fit();
        self.sounds.shrink_to_fit();
        self.audios.shrink_to_fit();
        self.channels.shrink_to_fit();
        self.rngs.shrink_to_fit();
        self.watchdogs.shrink_to_fit();
        self.panics.shrink_to_fit();
        self.kept.shrink_to_fit();
    }
}

keyword_enum! {
    pub enum AccessMode {
        Passthrough = "passthrough",
        Mapped = "mapped",
        Squash = "squash",
    }
}

keyword_enum! {
    /// How a `file` filesystem's image is attached.
    pub enum FsDriverType {
        Loop = "loop",
        Nbd = "nbd",
    }
}

keyword_enum! {
    pub enum ImageFormat {
        Raw = "raw",
        Qcow2 = "qcow2",
        Qcow = "qcow",
        Qed = "qed",
        Vmdk = "vmdk",
        Vdi = "vdi",
        Vpc = "vpc",
        Vhdx = "vhdx",
    }
}

/// `<filesystem><driver>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsDriver {
    pub driver_type: FsDriverType,
    pub format: Option<ImageFormat>,
}

/// What a `<filesystem>` mounts, by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsSource {
    /// `mount`: a host directory bound into the container.
    Mount { dir: PathBuf },
    /// `bind`: a directory of the container bound elsewhere in it.
    Bind { dir: PathBuf },
    /// `ram`: a tmpfs of `usage` bytes.
    Ram { usage: u64 },
    /// `block`: a host block device.
    Block { dev: PathBuf },
    /// `file`: an image file attached through loop or nbd.
    File {
        file: PathBuf,
        driver: Option<FsDriver>,
    },
    /// `volume`: an image of lxvirt's image store (`pool` is always
    /// [`IMAGE_POOL`]), under the container's own writable layer; only as
    /// the root filesystem.
    Volume { pool: String, volume: String },
}

/// The only storage pool a `volume` filesystem may name: the image store.
pub const IMAGE_POOL: &str = "images";

impl FsSource {
    /// The `type` attribute.
    pub fn type_str(&self) -> &'static str {
        match self {
            FsSource::Mount { .. } => "mount",
            FsSource::Bind { .. } => "bind",
            FsSource::Ram { .. } => "ram",
            FsSource::Block { .. } => "block",
            FsSource::File { .. } => "file",
            FsSource::Volume { .. } => "volume",
        }
    }
}

/// `<filesystem>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    pub source: FsSource,
    pub accessmode: Option<AccessMode>,
    /// Mount point inside the container.
    pub target: PathBuf,
    pub readonly: bool,
}

keyword_enum! {
    pub enum DiskDevice {
        Disk = "disk",
        Cdrom = "cdrom",
        /// Kept; the QEMU driver refuses it at start.
        Floppy = "floppy",
        /// A SCSI LUN passed through; kept, refused at start.
        Lun = "lun",
    }
}

keyword_enum! {
    pub enum DiskBus {
        Virtio = "virtio",
        Scsi = "scsi",
        Sata = "sata",
        Ide = "ide",
        Usb = "usb",
        Fdc = "fdc",
        Sd = "sd",
    }
}

keyword_enum! {
    pub enum DiskDriverName {
        Qemu = "qemu",
    }
}

/// Where a `<disk>` comes from, by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// `type='file'`; `None` for an empty CD-ROM drive.
    File(Option<PathBuf>),
    /// `type='block'`; `None` for an empty CD-ROM drive.
    Block(Option<PathBuf>),
    /// A disk lxvirt keeps but does not run (virtual machines only): a
    /// type other than file and block, or a file or block source with
    /// more than its path (`startupPolicy`, `<seclabel>`, `<slices>`, …).
    /// The `<source>` is among the disk's kept children.
    Kept(KeptDiskType),
}

keyword_enum! {
    /// `<disk type=>` of a kept disk source ([`DiskSource::Kept`]).
    pub enum KeptDiskType {
        File = "file",
        Block = "block",
        Network = "network",
        Volume = "volume",
        Nvme = "nvme",
        Dir = "dir",
        Vhostuser = "vhostuser",
        Vhostvdpa = "vhostvdpa",
    }
}

keyword_enum! {
    /// `<disk><driver cache=>`: the host page cache mode.
    pub enum DiskCache {
        Default = "default",
        None = "none",
        Writethrough = "writethrough",
        Writeback = "writeback",
        Directsync = "directsync",
        Unsafe = "unsafe",
    }
}

keyword_enum! {
    /// `<disk><driver io=>`: how the host submits I/O.
    pub enum DiskIo {
        Threads = "threads",
        Native = "native",
        IoUring = "io_uring",
    }
}

keyword_enum! {
    /// `<disk><driver discard=>`: whether guest discards reach the image.
    pub enum DiskDiscard {
        Unmap = "unmap",
        Ignore = "ignore",
    }
}

/// `<disk><driver>` (virtual machines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskDriver {
    pub name: Option<DiskDriverName>,
    pub format: Option<ImageFormat>,
    pub cache: Option<DiskCache>,
    pub io: Option<DiskIo>,
    pub discard: Option<DiskDiscard>,
    /// virtio-blk request queues, 1 or more.
    pub queues: Option<u32>,
    /// The other attributes (`iothread`, `event_idx`, …), kept in the
    /// table's order; refused at start.
    pub kept_attrs: Vec<(String, String)>,
    /// Kept children (`<metadata_cache>`); refused at start.
    pub kept: Vec<KeptElement>,
}

/// `<disk>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub source: DiskSource,
    pub device: DiskDevice,
    /// Virtual machines: `<disk model=>`, which virtio variant.
    pub model: Option<VirtioModel>,
    pub driver: Option<DiskDriver>,
    /// Device name in the guest (`vdb`, `sda`).
    pub target_dev: String,
    pub target_bus: Option<DiskBus>,
    /// `<target>`'s other attributes (`tray`, `removable`,
    /// `rotation_rate`), kept in the table's order; refused at start.
    pub target_kept: Vec<(String, String)>,
    pub readonly: bool,
    /// Virtual machines: `<boot order=>`, 1 or more, unique among devices.
    pub boot_order: Option<u32>,
    /// Virtual machines: `<serial>`, the serial number the guest sees.
    pub serial: Option<String>,
    /// Virtual machines: `<shareable/>`.
    pub shareable: bool,
    /// Virtual machines: `<transient/>`, writes go to a discarded overlay.
    pub transient: bool,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Virtual machines: the image chain under the disk's image.
    pub backing_store: Option<BackingStore>,
    /// Kept children (virtual machines): `<iotune>`, `<encryption>`, …
    pub kept: Vec<KeptElement>,
}

/// `<backingStore>`: one image of a disk's backing chain. An empty
/// `<backingStore/>` (no source, no format, nothing under it) says the
/// chain ends here; without the element the chain is probed at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackingStore {
    /// `type='file'` or `'block'` with `<source file|dev>`.
    pub source: Option<DiskSource>,
    pub format: Option<ImageFormat>,
    pub backing: Option<Box<BackingStore>>,
}

keyword_enum! {
    /// `<address type=>`: the bus a device sits on.
    pub enum AddressType {
        Pci = "pci",
        Drive = "drive",
        VirtioSerial = "virtio-serial",
        Ccid = "ccid",
        Usb = "usb",
        Isa = "isa",
        Dimm = "dimm",
        Unassigned = "unassigned",
    }
}

/// `<address>` of a VM device: where the guest sees it. Which attributes
/// apply depends on the type (PCI: domain, bus, slot, function; drive:
/// controller, bus, target, unit; …); the parser checks their ranges
/// only, as the bus a device sits on is the driver's to judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAddress {
    pub address_type: Option<AddressType>,
    /// 0..=0xffff.
    pub domain: Option<u64>,
    /// 0..=0xff.
    pub bus: Option<u64>,
    /// 0..=0x1f.
    pub slot: Option<u64>,
    /// 0..=7.
    pub function: Option<u64>,
    pub multifunction: Option<bool>,
    pub controller: Option<u64>,
    pub target: Option<u64>,
    pub unit: Option<u64>,
    /// A USB port path such as `1.2`, or a virtio-serial port number.
    pub port: Option<String>,
    pub reg: Option<u64>,
    pub iobase: Option<u64>,
    pub irq: Option<u64>,
    pub base: Option<u64>,
    pub slots: Option<u64>,
}

keyword_enum! {
    /// macvtap modes of a `direct` interface.
    pub enum DirectMode {
        Vepa = "vepa",
        Bridge = "bridge",
        Private = "private",
        Passthrough = "passthrough",
    }
}

/// How an `<interface>` connects, by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSource {
    /// A virtual network by name (`<source network= portgroup=>`).
    Network {
        network: String,
        /// A port group of that network; stored, the network decides what
        /// it means.
        portgroup: Option<String>,
    },
    /// A host bridge.
    Bridge { bridge: String },
    /// A veth pair with no bridge. `<source>` may give addresses and routes
    /// for the host side of the pair (libvirt's host-side IP information,
    /// which it accepts for `ethernet` interfaces only).
    Ethernet {
        ips: Vec<IpConfig>,
        routes: Vec<Route>,
    },
    /// macvlan/macvtap on a host device.
    Direct { dev: String, mode: DirectMode },
    /// A type of libvirt's that lxvirt keeps but does not run (virtual
    /// machines only): its `<source>`, if any, is among the interface's
    /// kept children, and a driver refuses to start the domain.
    Kept(KeptInterfaceType),
}

keyword_enum! {
    /// `<interface type=>` values kept but not run (see
    /// [`InterfaceSource::Kept`]).
    pub enum KeptInterfaceType {
        User = "user",
        Vhostuser = "vhostuser",
        Server = "server",
        Client = "client",
        Mcast = "mcast",
        Udp = "udp",
        Vdpa = "vdpa",
        Hostdev = "hostdev",
        Null = "null",
        Vds = "vds",
    }
}

impl InterfaceSource {
    pub fn type_str(&self) -> &'static str {
        match self {
            InterfaceSource::Network { .. } => "network",
            InterfaceSource::Bridge { .. } => "bridge",
            InterfaceSource::Ethernet { .. } => "ethernet",
            InterfaceSource::Direct { .. } => "direct",
            InterfaceSource::Kept(t) => t.as_str(),
        }
    }
}

/// `<ip>` of an interface or a network `<hostdev>`: an address set on the
/// device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpAddr,
    /// 0..=32 or 0..=128 by family; `None`: the kernel's default for the
    /// address.
    pub prefix: Option<u8>,
    /// Point-to-point peer, of the same family.
    pub peer: Option<IpAddr>,
}

/// `<route>` of an interface or a network `<hostdev>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// A network address: no bits set after `prefix` (so `0.0.0.0` or `::`
    /// when there is no prefix, a default route), as libvirt requires.
    pub address: IpAddr,
    /// `None` counts as 0.
    pub prefix: Option<u8>,
    /// Of the same family as `address`.
    pub gateway: IpAddr,
}

keyword_enum! {
    /// Virtual NIC models (virtual machines).
    pub enum NicModel {
        Virtio = "virtio",
        E1000 = "e1000",
        E1000e = "e1000e",
        Rtl8139 = "rtl8139",
        VirtioTransitional = "virtio-transitional",
        VirtioNonTransitional = "virtio-non-transitional",
        UsbNet = "usb-net",
    }
}

keyword_enum! {
    /// `<link state=>`: whether the guest side of the link starts up.
    pub enum LinkState {
        Up = "up",
        Down = "down",
    }
}

/// Smallest accepted `<mtu size=>`: the least IPv4 needs.
pub const MIN_MTU: u16 = 68;

/// Largest value accepted for a bandwidth attribute (kB/s or KiB).
pub const MAX_BANDWIDTH: u64 = u32::MAX as u64;

/// One direction of `<bandwidth>`: `<inbound>` or `<outbound>`. Rates are
/// in kB/s (1000 bytes a second) and `burst` in KiB, libvirt's units (tc's
/// `kbps` and `kb`), as written; every value is 1..=[`MAX_BANDWIDTH`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthRate {
    /// Average rate, kB/s. Required unless `floor` is given.
    pub average: Option<u64>,
    /// Highest rate, kB/s; at least `average`, and only with it.
    pub peak: Option<u64>,
    /// How much may be sent at `peak`, KiB; only with `average`.
    pub burst: Option<u64>,
    /// Guaranteed rate, kB/s: `<inbound>` of `type='network'` interfaces
    /// only.
    pub floor: Option<u64>,
}

/// `<bandwidth>`: traffic shaping, each direction optional (but not both
/// absent: an empty `<bandwidth/>` reads as none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// Traffic towards the domain.
    pub inbound: Option<BandwidthRate>,
    /// Traffic from the domain.
    pub outbound: Option<BandwidthRate>,
}

keyword_enum! {
    /// How a trunk's native VLAN is carried.
    pub enum NativeMode {
        Tagged = "tagged",
        Untagged = "untagged",
    }
}

/// Largest VLAN id.
pub const MAX_VLAN_ID: u16 = 4095;

/// `<vlan><tag id= nativeMode=>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 0..=[`MAX_VLAN_ID`].
    pub id: u16,
    /// At most one tag of a `<vlan>` has one.
    pub native_mode: Option<NativeMode>,
}

/// `<vlan>`: at least one tag, ids distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    /// `trunk='yes'`; always true with more than one tag.
    pub trunk: bool,
    pub tags: Vec<VlanTag>,
}

/// `<interface>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub source: InterfaceSource,
    /// Unique among the domain's interfaces.
    pub mac: Option<MacAddr>,
    /// Host-side device name; unique among the domain's interfaces.
    pub target_dev: Option<String>,
    /// Device name inside the container (LXC); unique among the domain's
    /// interfaces.
    pub guest_dev: Option<String>,
    /// Virtual machines only.
    pub model: Option<NicModel>,
    /// Guest-side addresses (LXC only).
    pub ips: Vec<IpConfig>,
    /// Guest-side routes (LXC only).
    pub routes: Vec<Route>,
    /// `<mtu size=>`, [`MIN_MTU`]..=65535.
    pub mtu: Option<u16>,
    /// `<link state=>`; `None`: up (lxvirt's LXC driver brings every
    /// interface up; libvirt's only those with an address).
    pub link_state: Option<LinkState>,
    /// Not on `direct` interfaces of containers (nothing on the host side
    /// to shape).
    pub bandwidth: Option<Bandwidth>,
    /// Not on `ethernet` interfaces (no switch port to tag).
    pub vlan: Option<Vlan>,
    /// Virtual machines: `<boot order=>`.
    pub boot_order: Option<u32>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children (virtual machines): `<driver>`, `<rom>`, …
    pub kept: Vec<KeptElement>,
}

/// A USB device selected by vendor and product id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbIds {
    pub vendor: u16,
    pub product: u16,
}

/// A USB device selected by bus and device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbAddress {
    pub bus: u32,
    pub device: u32,
}

/// `<hostdev>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostdev {
    /// `mode='capabilities' type='storage'`: a host block device node.
    Storage { block: PathBuf },
    /// `mode='capabilities' type='misc'`: a host character device node.
    Misc { char_dev: PathBuf },
    /// `mode='capabilities' type='net'`: a host network interface moved
    /// into the container under its own name, with the addresses and
    /// routes to set on it there (`<ip>`, `<route>` next to `<source>`).
    Net {
        interface: String,
        ips: Vec<IpConfig>,
        routes: Vec<Route>,
    },
    /// `mode='subsystem' type='usb'`: at least one of the two is set.
    Usb {
        ids: Option<UsbIds>,
        address: Option<UsbAddress>,
    },
}

keyword_enum! {
    pub enum ConsoleTargetType {
        Lxc = "lxc",
        Serial = "serial",
        Virtio = "virtio",
    }
}

keyword_enum! {
    /// `<serial type=>`, `<console type=>`: the host side of a character
    /// device. Containers have `pty` only.
    pub enum ChardevType {
        Pty = "pty",
        File = "file",
        Unix = "unix",
        Tcp = "tcp",
        Udp = "udp",
        Null = "null",
        Stdio = "stdio",
        Vc = "vc",
        Dev = "dev",
        Pipe = "pipe",
        Spicevmc = "spicevmc",
        Spiceport = "spiceport",
        QemuVdagent = "qemu-vdagent",
        Dbus = "dbus",
        Nmdm = "nmdm",
    }
}

/// `<console>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// Virtual machines: other types than `pty` are kept, refused at start.
    pub chardev_type: ChardevType,
    pub target_type: ConsoleTargetType,
    /// Assigned in document order when not given.
    pub port: u32,
    /// Virtual machines: a virtio console sits on a virtio-serial port.
    pub address: Option<DeviceAddress>,
    /// Virtual machines.
    pub alias: Option<String>,
    /// Virtual machines: `<source>`, `<protocol>`, `<log>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    /// `<serial><target type=>`: how the port attaches to the guest.
    pub enum SerialTargetType {
        IsaSerial = "isa-serial",
        UsbSerial = "usb-serial",
        PciSerial = "pci-serial",
        IsaDebug = "isa-debug",
    }
}

keyword_enum! {
    /// `<serial><target><model name=>`: the emulated device.
    pub enum SerialModel {
        IsaSerial = "isa-serial",
        UsbSerial = "usb-serial",
        PciSerial = "pci-serial",
        IsaDebugcon = "isa-debugcon",
    }
}

/// `<serial type='pty'>` (virtual machines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial {
    /// Other types than `pty` are kept, refused at start.
    pub chardev_type: ChardevType,
    pub port: u32,
    pub target_type: Option<SerialTargetType>,
    pub model: Option<SerialModel>,
    /// USB and PCI serial ports sit at an address.
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// `<source>`, `<protocol>`, `<log>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum SecLabelType {
        Dynamic = "dynamic",
        Static = "static",
        None = "none",
    }
}

keyword_enum! {
    pub enum SecModel {
        Selinux = "selinux",
        None = "none",
    }
}

/// `<seclabel>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecLabel {
    pub label_type: SecLabelType,
    /// `None`: the host's default security driver, chosen at start.
    pub model: Option<SecModel>,
    /// Whether files are relabelled; always true for dynamic labels.
    pub relabel: bool,
    /// Dynamic: the context the generated label is based on.
    pub baselabel: Option<String>,
    /// Static: the process label.
    pub label: Option<String>,
    /// Labels of a running domain; never in the persistent definition.
    pub live: LiveLabels,
}

/// Labels that exist only while a domain runs: the generated process label
/// of a dynamic seclabel and the image label of any seclabel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveLabels {
    pub label: Option<String>,
    pub imagelabel: Option<String>,
}

impl LiveLabels {
    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.imagelabel.is_none()
    }
}

keyword_enum! {
    pub enum NsShareType {
        /// A named network namespace (`ip netns`), sharenet only.
        Netns = "netns",
        /// The namespace of another lxvirt domain, by name.
        Name = "name",
        /// The namespace of a host process.
        Pid = "pid",
    }
}

/// One `<lxc:share*>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsShare {
    pub share_type: NsShareType,
    pub value: String,
}

/// `<lxc:namespace>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LxcNamespace {
    pub sharenet: Option<NsShare>,
    pub shareipc: Option<NsShare>,
    pub shareuts: Option<NsShare>,
}

keyword_enum! {
    /// Whether a container gets lxvirt's seccomp filter.
    pub enum SeccompMode {
        Default = "default",
        Off = "off",
    }
}

keyword_enum! {
    /// Whether the filter blocks the mount family.
    pub enum SeccompMount {
        /// Only for containers without a user namespace.
        Auto = "auto",
        Allow = "allow",
        Deny = "deny",
    }
}

keyword_enum! {
    /// How a container's ids relate to the host's.
    pub enum UsernsMode {
        /// A user namespace with a block of host ids lxvirt allocates.
        Auto = "auto",
        /// No user namespace: root inside is host root (libvirt's LXC
        /// default without `<idmap>`).
        Host = "host",
    }
}

keyword_enum! {
    /// What processes inside a container may ask of lxvirtd, whatever
    /// their uid (`<lxvirt:api access='…'/>`).
    pub enum ApiAccess {
        /// Nothing: every call is refused (the default).
        NoAccess = "none",
        /// Reads only: lookups, lists, XML, stats, properties.
        Read = "read",
        /// Everything the caller's uid may do on the host.
        Manage = "manage",
    }
}

/// `<lxvirt:userns mode='auto|host'/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Userns {
    pub mode: UsernsMode,
    /// Live definitions only: the block the running container has, as
    /// (first host id, count) — `target` and `count` attributes.
    pub allocated: Option<(u32, u32)>,
}

/// `<lxvirt:seccomp>`: the container's seccomp filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seccomp {
    pub mode: SeccompMode,
    pub mount: SeccompMount,
    /// Syscalls blocked besides the default, by name, in document order
    /// (`<lxvirt:deny syscall='NAME'/>`); known on this host, no repeats.
    pub deny: Vec<String>,
}

/// A single device, as attached to, detached from or updated in a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceDef {
    Interface(Interface),
    Disk(Disk),
    Filesystem(Filesystem),
    Hostdev(Hostdev),
}

impl DeviceDef {
    /// Parses one device element of a domain of type `kind`.
    pub fn from_xml(kind: DomainType, text: &str) -> Result<DeviceDef, crate::DomainError> {
        let root = crate::xml::parse_str(text)?;
        crate::parse::parse_device(kind, &root)
    }

    /// The element's name, for messages.
    pub fn element(&self) -> &'static str {
        match self {
            DeviceDef::Interface(_) => "interface",
            DeviceDef::Disk(_) => "disk",
            DeviceDef::Filesystem(_) => "filesystem",
            DeviceDef::Hostdev(_) => "hostdev",
        }
    }
}

keyword_enum! {
    pub enum ControllerType {
        Pci = "pci",
        Usb = "usb",
        Sata = "sata",
        Ide = "ide",
        Fdc = "fdc",
        Scsi = "scsi",
        VirtioSerial = "virtio-serial",
        Ccid = "ccid",
        Isa = "isa",
    }
}

/// `<controller><target>` (PCI controllers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerTarget {
    pub chassis_nr: Option<u32>,
    pub chassis: Option<u32>,
    /// 0..=0xff.
    pub port: Option<u32>,
    pub bus_nr: Option<u32>,
    pub index: Option<u32>,
    pub hotplug: Option<bool>,
    /// `<node>`: the NUMA node an expander bus belongs to.
    pub node: Option<u32>,
}

/// `<controller>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub controller_type: ControllerType,
    pub index: Option<u32>,
    /// Such as `pcie-root-port`, `qemu-xhci`, `virtio-scsi`: many, and
    /// the emulator's to judge.
    pub model: Option<String>,
    pub ports: Option<u32>,
    pub vectors: Option<u32>,
    /// `<model name=>`: the emulated device of a PCI controller.
    pub model_name: Option<String>,
    pub target: Option<ControllerTarget>,
    /// `<driver queues=>`.
    pub queues: Option<u32>,
    /// `<driver iothread=>`.
    pub iothread: Option<u32>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children: `<master>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum InputType {
        Tablet = "tablet",
        Mouse = "mouse",
        Keyboard = "keyboard",
        Passthrough = "passthrough",
        Evdev = "evdev",
    }
}

keyword_enum! {
    pub enum InputBus {
        Usb = "usb",
        Ps2 = "ps2",
        Virtio = "virtio",
        Xen = "xen",
        None = "none",
    }
}

/// `<input>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub input_type: InputType,
    pub bus: Option<InputBus>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children: `<source>`, `<driver>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum GraphicsType {
        Vnc = "vnc",
        Spice = "spice",
        Sdl = "sdl",
        Rdp = "rdp",
        Desktop = "desktop",
        EglHeadless = "egl-headless",
        Dbus = "dbus",
    }
}

keyword_enum! {
    pub enum ListenType {
        Address = "address",
        Network = "network",
        Socket = "socket",
        None = "none",
    }
}

/// `<graphics><listen>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphicsListen {
    pub listen_type: Option<ListenType>,
    pub address: Option<String>,
    pub network: Option<String>,
    pub socket: Option<PathBuf>,
}

/// `<graphics>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graphics {
    pub graphics_type: GraphicsType,
    /// A TCP port, or -1: chosen at start.
    pub port: Option<i32>,
    pub autoport: Option<bool>,
    pub websocket: Option<i32>,
    /// The listen address (the old form of `<listen type='address'>`).
    pub listen: Option<String>,
    /// A UNIX socket (VNC).
    pub socket: Option<PathBuf>,
    pub passwd: Option<String>,
    pub keymap: Option<String>,
    pub tls_port: Option<i32>,
    /// SPICE: `defaultMode=` of channels (`any`, `secure`, `insecure`).
    pub default_mode: Option<String>,
    pub listens: Vec<GraphicsListen>,
    /// Kept children: `<image>`, `<gl>`, `<audio>`, …
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum VideoModelType {
        Vga = "vga",
        Cirrus = "cirrus",
        Vmvga = "vmvga",
        Qxl = "qxl",
        Virtio = "virtio",
        Bochs = "bochs",
        Ramfb = "ramfb",
        None = "none",
    }
}

/// `<video><model>`; sizes in KiB as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoModel {
    pub model_type: VideoModelType,
    pub vram: Option<u64>,
    pub ram: Option<u64>,
    pub vgamem: Option<u64>,
    pub vram64: Option<u64>,
    pub heads: Option<u32>,
    pub primary: Option<bool>,
    /// virtio: guest memory shared with the display as blob resources.
    pub blob: Option<bool>,
    /// Kept children: `<acceleration>`, `<resolution>`.
    pub kept: Vec<KeptElement>,
}

/// `<video>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    pub model: Option<VideoModel>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children: `<driver>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum SoundModel {
        Sb16 = "sb16",
        Es1370 = "es1370",
        Pcspk = "pcspk",
        Ac97 = "ac97",
        Ich6 = "ich6",
        Ich7 = "ich7",
        Ich9 = "ich9",
        Usb = "usb",
        Virtio = "virtio",
    }
}

keyword_enum! {
    pub enum SoundCodecType {
        Duplex = "duplex",
        Micro = "micro",
        Output = "output",
    }
}

/// `<sound>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sound {
    pub model: SoundModel,
    pub codecs: Vec<SoundCodecType>,
    /// `<audio id=>`: the `<audio>` backend it plays through.
    pub audio: Option<u32>,
    /// virtio: PCM streams, 1 or more.
    pub streams: Option<u32>,
    /// usb: 5.1 output rather than stereo.
    pub multichannel: Option<bool>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children: `<driver>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum AudioType {
        None = "none",
        Alsa = "alsa",
        Coreaudio = "coreaudio",
        Dbus = "dbus",
        Jack = "jack",
        Oss = "oss",
        Pulseaudio = "pulseaudio",
        Sdl = "sdl",
        Spice = "spice",
        File = "file",
        Pipewire = "pipewire",
    }
}

/// `<audio>`: a host audio backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// 1 or more, unique.
    pub id: u32,
    pub audio_type: AudioType,
    pub timer_period: Option<u32>,
    /// Kept children: `<input>`, `<output>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum ChannelType {
        Unix = "unix",
        Pty = "pty",
        Spicevmc = "spicevmc",
        Spiceport = "spiceport",
        QemuVdagent = "qemu-vdagent",
        Pipe = "pipe",
        File = "file",
        Null = "null",
    }
}

keyword_enum! {
    pub enum ChannelSourceMode {
        Bind = "bind",
        Connect = "connect",
    }
}

keyword_enum! {
    pub enum ChannelTargetType {
        Virtio = "virtio",
        Guestfwd = "guestfwd",
    }
}

keyword_enum! {
    pub enum ChannelState {
        Connected = "connected",
        Disconnected = "disconnected",
    }
}

/// `<channel>`: a host-guest channel such as the guest agent's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub channel_type: ChannelType,
    pub source_mode: Option<ChannelSourceMode>,
    /// `None` for a unix channel: a socket path chosen at start.
    pub source_path: Option<PathBuf>,
    /// `<source channel=>` of a spiceport.
    pub source_channel: Option<String>,
    pub target_type: Option<ChannelTargetType>,
    /// Such as `org.qemu.guest_agent.0`.
    pub target_name: Option<String>,
    /// Live only in libvirt; kept as given.
    pub target_state: Option<ChannelState>,
    /// guestfwd: the guest-side address and port.
    pub target_address: Option<String>,
    pub target_port: Option<String>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
}

keyword_enum! {
    /// Models of virtio devices (`rng`).
    pub enum VirtioModel {
        Virtio = "virtio",
        VirtioTransitional = "virtio-transitional",
        VirtioNonTransitional = "virtio-non-transitional",
    }
}

keyword_enum! {
    pub enum RngBackendModel {
        Random = "random",
        Builtin = "builtin",
    }
}

/// `<rng>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    pub model: VirtioModel,
    pub backend: Option<RngBackendModel>,
    /// A `random` backend's device, such as `/dev/urandom`.
    pub backend_path: Option<PathBuf>,
    /// `<rate bytes=>`: at most this many bytes per period.
    pub rate_bytes: Option<u64>,
    /// `<rate period=>`, milliseconds.
    pub rate_period: Option<u64>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children: `<driver>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum MemballoonModel {
        Virtio = "virtio",
        VirtioTransitional = "virtio-transitional",
        VirtioNonTransitional = "virtio-non-transitional",
        None = "none",
    }
}

/// `<memballoon>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memballoon {
    pub model: MemballoonModel,
    pub autodeflate: Option<bool>,
    pub free_page_reporting: Option<bool>,
    /// `<stats period=>`, seconds.
    pub stats_period: Option<u32>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    /// Kept children: `<driver>`.
    pub kept: Vec<KeptElement>,
}

keyword_enum! {
    pub enum WatchdogModel {
        I6300esb = "i6300esb",
        Ib700 = "ib700",
        Itco = "itco",
    }
}

keyword_enum! {
    pub enum WatchdogAction {
        Reset = "reset",
        Shutdown = "shutdown",
        Poweroff = "poweroff",
        Pause = "pause",
        None = "none",
        Dump = "dump",
        InjectNmi = "inject-nmi",
    }
}

/// `<watchdog>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    pub model: WatchdogModel,
    pub action: Option<WatchdogAction>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
}

keyword_enum! {
    pub enum PanicModel {
        Isa = "isa",
        Hyperv = "hyperv",
        Pvpanic = "pvpanic",
    }
}

/// `<panic>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    pub model: Option<PanicModel>,
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
}
