//! Kept elements: the part of libvirt's x86 VM vocabulary that lxvirt
//! accepts in `kvm` and `qemu` domains and stores, but does not model with
//! typed fields (yet).
//!
//! A definition exported by libvirt carries many elements that libvirt
//! writes by itself (controllers, input devices, a memory balloon, …).
//! Refusing them would make such a definition impossible to define here;
//! dropping them would lose configuration silently. So they are kept as a
//! small tree ([`KeptElement`]) and written back in canonical form.
//!
//! Kept does not mean anything goes: the table below ([`Spec`]) names every
//! element, attribute and child lxvirt keeps, and the values it takes where
//! they are keywords or numbers, so a misspelling is still refused with the
//! parser's "unknown element/attribute" errors. The schema's part for kept
//! elements (between the `kept vocabulary` markers of
//! `xml-schemas/domain.rng`) is generated from this table, so the two
//! cannot disagree (the test `kept_schema_is_current` checks it).
//!
//! The table also describes elements that do have typed fields (`<cpu>`,
//! `<controller>`, `<address>`, …): the parser checks them against it
//! first and then reads them into the model (`parse/vm.rs`), so the schema
//! and the checks of names and keywords live in one place. Promoting an
//! element from kept to typed changes the model, not the table.
//!
//! Facts about which elements and attributes libvirt has carry over from
//! its documentation; the table and its wording are lxvirt's own.

use std::fmt;

use super::def::{
    AudioType, ChannelSourceMode, ChannelState, ChannelTargetType, ChannelType, ControllerType,
    CpuCheck, CpuFallback, CpuFeaturePolicy, CpuMatch, CpuMode, DiskCache, DiskDiscard,
    DiskDriverName, DiskIo, GraphicsType, ImageFormat, InputBus, InputType, IoapicDriver,
    ListenType, LoaderType, MemballoonModel, PanicModel, RngBackendModel, SmbiosMode,
    SoundCodecType, SoundModel, VideoModelType, VirtioModel, WatchdogAction, WatchdogModel,
};

/// An element kept as written (canonical form): a name, attributes in the
/// table's order, text or children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptElement {
    pub name: String,
    /// In the order of the vocabulary table, whatever the document's order.
    pub attributes: Vec<(String, String)>,
    /// Trimmed text, for elements that hold text; `None` when empty.
    pub text: Option<String>,
    /// In document order.
    pub children: Vec<KeptElement>,
}

impl KeptElement {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&KeptElement> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// The start tag with the attributes that identify the element (`type`,
/// `model`, `name`, `mode`), as a user would search for it:
/// `<sound model='ich9'>`.
impl fmt::Display for KeptElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}", self.name)?;
        for key in ["type", "model", "name", "mode"] {
            if let Some(v) = self.attr(key) {
                write!(f, " {key}='{v}'")?;
            }
        }
        f.write_str(">")
    }
}

/// What an attribute value (or an element's text) may be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value {
    /// Any text.
    Text,
    /// A decimal whole number.
    Uint,
    /// A whole number, decimal or `0x` hex, at most the bound.
    Hex(u64),
    /// `yes` or `no`.
    YesNo,
    /// `on` or `off`.
    OnOff,
    /// An absolute path.
    Path,
    /// One of these keywords.
    OneOf(&'static [&'static str]),
}

/// What an element holds besides attributes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    /// Nothing.
    Empty,
    /// Text of this kind (may be empty).
    Text(Value),
    /// Child elements of these kinds, each any number of times, in any
    /// order.
    Children(&'static [&'static Spec]),
    /// Either text of this kind or child elements of these kinds: the
    /// old and the new form of one element (`<nvram>PATH</nvram>` and
    /// `<nvram type='file'><source file=…/></nvram>`).
    TextOrChildren(Value, &'static [&'static Spec]),
}

/// One element of the kept vocabulary.
#[derive(Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    /// Unique in the table: names the element's define in the schema
    /// (which only the tests generate).
    #[cfg_attr(not(test), allow(dead_code))]
    pub id: &'static str,
    pub attrs: &'static [(&'static str, Value)],
    pub body: Body,
    /// A placement or naming hint (`<address>`, `<alias>`) that a driver
    /// may ignore without changing what the guest sees; not reported by
    /// [`crate::DomainDef::unsupported_for_vm`].
    pub hint: bool,
}

impl Spec {
    #[cfg(test)]
    pub(crate) fn children(&self) -> &'static [&'static Spec] {
        match self.body {
            Body::Children(c) | Body::TextOrChildren(_, c) => c,
            _ => &[],
        }
    }
}

/// Finds the spec named `name` among `specs`.
pub(crate) fn find(specs: &[&'static Spec], name: &str) -> Option<&'static Spec> {
    specs.iter().copied().find(|s| s.name == name)
}

use Body::{Children, Empty};
use Value::{Hex, OnOff, OneOf, Path, Text, Uint, YesNo};

/// Builds a spec; `hint` is false.
const fn el(
    name: &'static str,
    id: &'static str,
    attrs: &'static [(&'static str, Value)],
    body: Body,
) -> Spec {
    Spec {
        name,
        id,
        attrs,
        body,
        hint: false,
    }
}

/// An element with one `state='on|off'` attribute.
const fn state(name: &'static str, id: &'static str) -> Spec {
    el(name, id, &[("state", OnOff)], Empty)
}

/// An element holding a whole number.
const fn number(name: &'static str, id: &'static str) -> Spec {
    el(name, id, &[], Body::Text(Uint))
}

// ---------------------------------------------------------------------
// Shared by many devices
// ---------------------------------------------------------------------

/// Where a device sits on its bus, as a guest sees it.
pub(crate) static ADDRESS: Spec = Spec {
    name: "address",
    id: "address",
    attrs: &[
        (
            "type",
            OneOf(&[
                "pci",
                "drive",
                "virtio-serial",
                "ccid",
                "usb",
                "isa",
                "dimm",
                "unassigned",
            ]),
        ),
        ("domain", Hex(0xffff)),
        ("bus", Hex(0xff)),
        ("slot", Hex(0x1f)),
        ("function", Hex(0x7)),
        ("multifunction", OnOff),
        ("controller", Uint),
        ("target", Uint),
        ("unit", Uint),
        ("port", Text),
        ("reg", Hex(0xffff_ffff)),
        ("iobase", Hex(0xffff)),
        ("irq", Hex(0xff)),
        ("base", Hex(u64::MAX)),
        ("slots", Uint),
    ],
    body: Empty,
    hint: true,
};

/// A user-chosen device name.
pub(crate) static ALIAS: Spec = Spec {
    name: "alias",
    id: "alias",
    attrs: &[("name", Text)],
    body: Empty,
    hint: true,
};

static BOOT_ORDER: Spec = el(
    "boot",
    "boot-order",
    &[("order", Uint), ("loadparm", Text)],
    Empty,
);

static DEVICE_DRIVER: Spec = el(
    "driver",
    "device-driver",
    &[
        ("iommu", OnOff),
        ("ats", OnOff),
        ("packed", OnOff),
        ("page_per_vq", OnOff),
    ],
    Empty,
);

// ---------------------------------------------------------------------
// Top level
// ---------------------------------------------------------------------

static CPU_MODEL: Spec = el(
    "model",
    "cpu-model",
    &[("fallback", OneOf(CpuFallback::NAMES))],
    Body::Text(Text),
);
static CPU_TOPOLOGY: Spec = el(
    "topology",
    "cpu-topology",
    &[
        ("sockets", Uint),
        ("dies", Uint),
        ("clusters", Uint),
        ("cores", Uint),
        ("threads", Uint),
    ],
    Empty,
);
static CPU_FEATURE: Spec = el(
    "feature",
    "cpu-feature",
    &[("policy", OneOf(CpuFeaturePolicy::NAMES)), ("name", Text)],
    Empty,
);
static CPU_CACHE: Spec = el(
    "cache",
    "cpu-cache",
    &[
        ("level", Uint),
        ("mode", OneOf(&["emulate", "passthrough", "disable"])),
    ],
    Empty,
);
static CPU_MAXPHYSADDR: Spec = el(
    "maxphysaddr",
    "cpu-maxphysaddr",
    &[
        ("mode", OneOf(&["emulate", "passthrough"])),
        ("bits", Uint),
        ("limit", Uint),
    ],
    Empty,
);
static NUMA_SIBLING: Spec = el(
    "sibling",
    "cpu-numa-sibling",
    &[("id", Uint), ("value", Uint)],
    Empty,
);
static NUMA_DISTANCES: Spec = el(
    "distances",
    "cpu-numa-distances",
    &[],
    Children(&[&NUMA_SIBLING]),
);
static NUMA_CELL: Spec = el(
    "cell",
    "cpu-numa-cell",
    &[
        ("id", Uint),
        ("cpus", Text),
        ("memory", Uint),
        ("unit", Text),
        ("memAccess", OneOf(&["shared", "private"])),
        ("discard", YesNo),
    ],
    Children(&[&NUMA_DISTANCES]),
);
static CPU_NUMA: Spec = el("numa", "cpu-numa", &[], Children(&[&NUMA_CELL]));
static CPU_VENDOR: Spec = el("vendor", "cpu-vendor", &[], Body::Text(Text));

/// `<cpu>`: the guest CPU model and topology.
static CPU: Spec = el(
    "cpu",
    "cpu",
    &[
        ("mode", OneOf(CpuMode::NAMES)),
        ("match", OneOf(CpuMatch::NAMES)),
        ("check", OneOf(CpuCheck::NAMES)),
        ("migratable", OnOff),
    ],
    Children(&[
        &CPU_MODEL,
        &CPU_VENDOR,
        &CPU_TOPOLOGY,
        &CPU_FEATURE,
        &CPU_CACHE,
        &CPU_MAXPHYSADDR,
        &CPU_NUMA,
    ]),
);

static PM_MEM: Spec = el("suspend-to-mem", "pm-mem", &[("enabled", YesNo)], Empty);
static PM_DISK: Spec = el("suspend-to-disk", "pm-disk", &[("enabled", YesNo)], Empty);
static PM: Spec = el("pm", "pm", &[], Children(&[&PM_MEM, &PM_DISK]));

static HUGEPAGE: Spec = el(
    "page",
    "hugepage",
    &[("size", Uint), ("unit", Text), ("nodeset", Text)],
    Empty,
);
static HUGEPAGES: Spec = el("hugepages", "hugepages", &[], Children(&[&HUGEPAGE]));
static MB_NOSHARE: Spec = el("nosharepages", "mb-nosharepages", &[], Empty);
static MB_LOCKED: Spec = el("locked", "mb-locked", &[], Empty);
static MB_SOURCE: Spec = el(
    "source",
    "mb-source",
    &[("type", OneOf(&["file", "anonymous", "memfd"]))],
    Empty,
);
static MB_ACCESS: Spec = el(
    "access",
    "mb-access",
    &[("mode", OneOf(&["shared", "private"]))],
    Empty,
);
static MB_ALLOCATION: Spec = el(
    "allocation",
    "mb-allocation",
    &[
        ("mode", OneOf(&["immediate", "ondemand"])),
        ("threads", Uint),
    ],
    Empty,
);
static MB_DISCARD: Spec = el("discard", "mb-discard", &[], Empty);
static MEMORY_BACKING: Spec = el(
    "memoryBacking",
    "memory-backing",
    &[],
    Children(&[
        &HUGEPAGES,
        &MB_NOSHARE,
        &MB_LOCKED,
        &MB_SOURCE,
        &MB_ACCESS,
        &MB_ALLOCATION,
        &MB_DISCARD,
    ]),
);

static SYSINFO_ENTRY: Spec = el(
    "entry",
    "sysinfo-entry",
    &[("name", Text), ("file", Path)],
    Body::Text(Text),
);
static SYSINFO_ENTRIES: &[&Spec] = &[&SYSINFO_ENTRY];
const fn sysinfo_block(name: &'static str, id: &'static str) -> Spec {
    el(name, id, &[], Children(SYSINFO_ENTRIES))
}
static SYSINFO_BIOS: Spec = sysinfo_block("bios", "sysinfo-bios");
static SYSINFO_SYSTEM: Spec = sysinfo_block("system", "sysinfo-system");
static SYSINFO_BASEBOARD: Spec = sysinfo_block("baseBoard", "sysinfo-baseboard");
static SYSINFO_CHASSIS: Spec = sysinfo_block("chassis", "sysinfo-chassis");
static SYSINFO_PROCESSOR: Spec = sysinfo_block("processor", "sysinfo-processor");
static SYSINFO_MEMORY: Spec = sysinfo_block("memory", "sysinfo-memory");
static SYSINFO_OEM: Spec = sysinfo_block("oemStrings", "sysinfo-oemstrings");
static SYSINFO: Spec = el(
    "sysinfo",
    "sysinfo",
    &[("type", OneOf(&["smbios", "fwcfg"]))],
    Children(&[
        &SYSINFO_BIOS,
        &SYSINFO_SYSTEM,
        &SYSINFO_BASEBOARD,
        &SYSINFO_CHASSIS,
        &SYSINFO_PROCESSOR,
        &SYSINFO_MEMORY,
        &SYSINFO_OEM,
        &SYSINFO_ENTRY,
    ]),
);

static KEYWRAP_CIPHER: Spec = el(
    "cipher",
    "keywrap-cipher",
    &[("name", OneOf(&["aes", "dea"])), ("state", OnOff)],
    Empty,
);
static KEYWRAP: Spec = el("keywrap", "keywrap", &[], Children(&[&KEYWRAP_CIPHER]));

static LS_CBITPOS: Spec = number("cbitpos", "ls-cbitpos");
static LS_REDUCED: Spec = number("reducedPhysBits", "ls-reduced-phys-bits");
static LS_POLICY: Spec = el("policy", "ls-policy", &[], Body::Text(Text));
static LS_DHCERT: Spec = el("dhCert", "ls-dhcert", &[], Body::Text(Text));
static LS_SESSION: Spec = el("session", "ls-session", &[], Body::Text(Text));
static LS_WORKAROUNDS: Spec = el(
    "guestVisibleWorkarounds",
    "ls-guest-visible-workarounds",
    &[],
    Body::Text(Text),
);
static LS_ID_BLOCK: Spec = el("idBlock", "ls-id-block", &[], Body::Text(Text));
static LS_ID_AUTH: Spec = el("idAuth", "ls-id-auth", &[], Body::Text(Text));
static LS_HOST_DATA: Spec = el("hostData", "ls-host-data", &[], Body::Text(Text));
static LAUNCH_SECURITY: Spec = el(
    "launchSecurity",
    "launch-security",
    &[
        ("type", OneOf(&["sev", "sev-snp", "s390-pv", "tdx"])),
        ("kernelHashes", YesNo),
        ("authorKey", YesNo),
        ("vcek", YesNo),
    ],
    Children(&[
        &LS_CBITPOS,
        &LS_REDUCED,
        &LS_POLICY,
        &LS_DHCERT,
        &LS_SESSION,
        &LS_WORKAROUNDS,
        &LS_ID_BLOCK,
        &LS_ID_AUTH,
        &LS_HOST_DATA,
    ]),
);

static PERF_EVENT: Spec = el(
    "event",
    "perf-event",
    &[("name", Text), ("enabled", YesNo)],
    Empty,
);
static PERF: Spec = el("perf", "perf", &[], Children(&[&PERF_EVENT]));

static IOTHREADS: Spec = number("iothreads", "iothreads");
static IOTHREAD_ID: Spec = el("iothread", "iothread-id", &[("id", Uint)], Empty);
static IOTHREAD_IDS: Spec = el("iothreadids", "iothreadids", &[], Children(&[&IOTHREAD_ID]));
static VCPUS_VCPU: Spec = el(
    "vcpu",
    "vcpus-vcpu",
    &[
        ("id", Uint),
        ("enabled", YesNo),
        ("hotpluggable", YesNo),
        ("order", Uint),
    ],
    Empty,
);
static VCPUS: Spec = el("vcpus", "vcpus", &[], Children(&[&VCPUS_VCPU]));
static GENID: Spec = el("genid", "genid", &[], Body::Text(Text));
static MAX_MEMORY: Spec = el(
    "maxMemory",
    "max-memory",
    &[("slots", Uint), ("unit", Text)],
    Body::Text(Uint),
);

static PIN: Spec = el(
    "vcpupin",
    "cputune-vcpupin",
    &[("vcpu", Uint), ("cpuset", Text)],
    Empty,
);
static EMULATORPIN: Spec = el(
    "emulatorpin",
    "cputune-emulatorpin",
    &[("cpuset", Text)],
    Empty,
);
static IOTHREADPIN: Spec = el(
    "iothreadpin",
    "cputune-iothreadpin",
    &[("iothread", Uint), ("cpuset", Text)],
    Empty,
);
static CT_SHARES: Spec = number("shares", "cputune-shares");
static CT_PERIOD: Spec = number("period", "cputune-period");
static CT_QUOTA: Spec = el("quota", "cputune-quota", &[], Body::Text(Text));
static CT_GLOBAL_PERIOD: Spec = number("global_period", "cputune-global-period");
static CT_GLOBAL_QUOTA: Spec = el(
    "global_quota",
    "cputune-global-quota",
    &[],
    Body::Text(Text),
);
static CT_IOTHREAD_PERIOD: Spec = number("iothread_period", "cputune-iothread-period");
static CT_IOTHREAD_QUOTA: Spec = el(
    "iothread_quota",
    "cputune-iothread-quota",
    &[],
    Body::Text(Text),
);
const SCHED: &[(&str, Value)] = &[
    ("vcpus", Text),
    ("iothreads", Text),
    ("scheduler", OneOf(&["batch", "idle", "fifo", "rr"])),
    ("priority", Uint),
];
static VCPUSCHED: Spec = el("vcpusched", "cputune-vcpusched", SCHED, Empty);
static IOTHREADSCHED: Spec = el("iothreadsched", "cputune-iothreadsched", SCHED, Empty);
static EMULATORSCHED: Spec = el("emulatorsched", "cputune-emulatorsched", SCHED, Empty);
static CT_EMU_PERIOD: Spec = number("emulator_period", "cputune-emulator-period");
static CT_EMU_QUOTA: Spec = el(
    "emulator_quota",
    "cputune-emulator-quota",
    &[],
    Body::Text(Text),
);
/// `<cputune>` of a virtual machine: per-vCPU pinning besides the
/// container's shares, period and quota (which are typed for containers).
static VM_CPUTUNE: Spec = el(
    "cputune",
    "vm-cputune",
    &[],
    Children(&[
        &PIN,
        &EMULATORPIN,
        &IOTHREADPIN,
        &CT_SHARES,
        &CT_PERIOD,
        &CT_QUOTA,
        &CT_EMU_PERIOD,
        &CT_EMU_QUOTA,
        &CT_GLOBAL_PERIOD,
        &CT_GLOBAL_QUOTA,
        &CT_IOTHREAD_PERIOD,
        &CT_IOTHREAD_QUOTA,
        &VCPUSCHED,
        &IOTHREADSCHED,
        &EMULATORSCHED,
    ]),
);

const ID_RANGE: &[(&str, Value)] = &[("start", Uint), ("target", Uint), ("count", Uint)];
static IDMAP_UID: Spec = el("uid", "idmap-uid", ID_RANGE, Empty);
static IDMAP_GID: Spec = el("gid", "idmap-gid", ID_RANGE, Empty);
/// `<idmap>` of a virtual machine or of its virtiofs `<filesystem>`; a
/// container's is typed.
static VM_IDMAP: Spec = el(
    "idmap",
    "vm-idmap",
    &[],
    Children(&[&IDMAP_UID, &IDMAP_GID]),
);

/// Kept children of `<domain>` (virtual machines). `cputune` and `idmap`
/// are kept for virtual machines only: for containers they are typed.
pub(crate) static ROOT: &[&Spec] = &[
    &CPU,
    &PM,
    &MEMORY_BACKING,
    &SYSINFO,
    &KEYWRAP,
    &LAUNCH_SECURITY,
    &PERF,
    &IOTHREADS,
    &IOTHREAD_IDS,
    &VCPUS,
    &GENID,
    &MAX_MEMORY,
    &VM_CPUTUNE,
    &VM_IDMAP,
];

// ---------------------------------------------------------------------
// <os>
// ---------------------------------------------------------------------

static LOADER: Spec = el(
    "loader",
    "os-loader",
    &[
        ("readonly", YesNo),
        ("type", OneOf(LoaderType::NAMES)),
        ("secure", YesNo),
        ("stateless", YesNo),
    ],
    Body::Text(Path),
);
const FIRMWARE_FORMAT: &[&str] = &["raw", "qcow2"];
/// `<nvram>`: typed as a path ([`crate::Nvram`]); with a type, a format or
/// a `<source>` it is kept as written.
static NVRAM: Spec = el(
    "nvram",
    "os-nvram",
    &[
        ("template", Path),
        ("type", OneOf(&["file", "block", "network"])),
        ("format", OneOf(FIRMWARE_FORMAT)),
        ("templateFormat", OneOf(FIRMWARE_FORMAT)),
    ],
    Body::TextOrChildren(Path, &[&DISK_KEPT_SOURCE]),
);
static BOOTMENU: Spec = el(
    "bootmenu",
    "os-bootmenu",
    &[("enable", YesNo), ("timeout", Uint)],
    Empty,
);
static SMBIOS: Spec = el(
    "smbios",
    "os-smbios",
    &[("mode", OneOf(SmbiosMode::NAMES))],
    Empty,
);
static BIOS: Spec = el(
    "bios",
    "os-bios",
    &[("useserial", YesNo), ("rebootTimeout", Text)],
    Empty,
);
static FIRMWARE_FEATURE: Spec = el(
    "feature",
    "os-firmware-feature",
    &[("enabled", YesNo), ("name", Text)],
    Empty,
);
static FIRMWARE: Spec = el(
    "firmware",
    "os-firmware",
    &[],
    Children(&[&FIRMWARE_FEATURE]),
);
static ACPI_TABLE: Spec = el(
    "table",
    "os-acpi-table",
    &[("type", OneOf(&["raw", "rawset", "slic", "msdm"]))],
    Body::Text(Path),
);
static OS_ACPI: Spec = el("acpi", "os-acpi", &[], Children(&[&ACPI_TABLE]));

/// Kept children of `<os>` (virtual machines).
pub(crate) static OS: &[&Spec] = &[
    &LOADER, &NVRAM, &BOOTMENU, &SMBIOS, &BIOS, &FIRMWARE, &OS_ACPI,
];

// ---------------------------------------------------------------------
// <features>
// ---------------------------------------------------------------------

static HV_SPINLOCKS: Spec = el(
    "spinlocks",
    "hyperv-spinlocks",
    &[("state", OnOff), ("retries", Uint)],
    Empty,
);
static HV_VENDOR: Spec = el(
    "vendor_id",
    "hyperv-vendor-id",
    &[("state", OnOff), ("value", Text)],
    Empty,
);
static HV_DIRECT: Spec = state("direct", "hyperv-direct");
static HV_EXTENDED: Spec = state("extended", "hyperv-extended");
static HV_STIMER: Spec = el(
    "stimer",
    "hyperv-stimer",
    &[("state", OnOff)],
    Children(&[&HV_DIRECT]),
);
static HV_TLBFLUSH: Spec = el(
    "tlbflush",
    "hyperv-tlbflush",
    &[("state", OnOff)],
    Children(&[&HV_DIRECT, &HV_EXTENDED]),
);
static HV_RELAXED: Spec = state("relaxed", "hyperv-relaxed");
static HV_VAPIC: Spec = state("vapic", "hyperv-vapic");
static HV_VPINDEX: Spec = state("vpindex", "hyperv-vpindex");
static HV_RUNTIME: Spec = state("runtime", "hyperv-runtime");
static HV_SYNIC: Spec = state("synic", "hyperv-synic");
static HV_RESET: Spec = state("reset", "hyperv-reset");
static HV_FREQ: Spec = state("frequencies", "hyperv-frequencies");
static HV_REENL: Spec = state("reenlightenment", "hyperv-reenlightenment");
static HV_IPI: Spec = state("ipi", "hyperv-ipi");
static HV_EVMCS: Spec = state("evmcs", "hyperv-evmcs");
static HV_AVIC: Spec = state("avic", "hyperv-avic");
static HV_EMSR: Spec = state("emsr_bitmap", "hyperv-emsr-bitmap");
static HV_XMM: Spec = state("xmm_input", "hyperv-xmm-input");
static HYPERV: Spec = el(
    "hyperv",
    "hyperv",
    &[("mode", OneOf(&["custom", "passthrough"]))],
    Children(&[
        &HV_RELAXED,
        &HV_VAPIC,
        &HV_SPINLOCKS,
        &HV_VPINDEX,
        &HV_RUNTIME,
        &HV_SYNIC,
        &HV_STIMER,
        &HV_RESET,
        &HV_VENDOR,
        &HV_FREQ,
        &HV_REENL,
        &HV_TLBFLUSH,
        &HV_IPI,
        &HV_EVMCS,
        &HV_AVIC,
        &HV_EMSR,
        &HV_XMM,
    ]),
);
static KVM_HIDDEN: Spec = state("hidden", "kvm-hidden");
static KVM_DEDICATED: Spec = state("hint-dedicated", "kvm-hint-dedicated");
static KVM_POLL: Spec = state("poll-control", "kvm-poll-control");
static KVM_PVIPI: Spec = state("pv-ipi", "kvm-pv-ipi");
static KVM_DIRTY: Spec = el(
    "dirty-ring",
    "kvm-dirty-ring",
    &[("state", OnOff), ("size", Uint)],
    Empty,
);
static KVM: Spec = el(
    "kvm",
    "kvm-features",
    &[],
    Children(&[
        &KVM_HIDDEN,
        &KVM_DEDICATED,
        &KVM_POLL,
        &KVM_PVIPI,
        &KVM_DIRTY,
    ]),
);
static SMM_TSEG: Spec = el("tseg", "smm-tseg", &[("unit", Text)], Body::Text(Uint));
static SMM: Spec = el("smm", "smm", &[("state", OnOff)], Children(&[&SMM_TSEG]));
static IOAPIC: Spec = el(
    "ioapic",
    "ioapic",
    &[("driver", OneOf(IoapicDriver::NAMES))],
    Empty,
);
static VMPORT: Spec = state("vmport", "vmport");
static PMU: Spec = state("pmu", "pmu");
static VMCOREINFO: Spec = state("vmcoreinfo", "vmcoreinfo");
static PVSPINLOCK: Spec = state("pvspinlock", "pvspinlock");
static HAP: Spec = state("hap", "hap");
static PS2: Spec = state("ps2", "ps2");
static MSRS: Spec = el(
    "msrs",
    "msrs",
    &[("unknown", OneOf(&["ignore", "fault"]))],
    Empty,
);
static ASYNC_TEARDOWN: Spec = el(
    "async-teardown",
    "async-teardown",
    &[("enabled", YesNo)],
    Empty,
);

/// Kept children of `<features>` (virtual machines).
pub(crate) static FEATURES: &[&Spec] = &[
    &HYPERV,
    &KVM,
    &SMM,
    &IOAPIC,
    &VMPORT,
    &PMU,
    &VMCOREINFO,
    &PVSPINLOCK,
    &HAP,
    &PS2,
    &MSRS,
    &ASYNC_TEARDOWN,
];

// ---------------------------------------------------------------------
// <disk> and <interface> children
// ---------------------------------------------------------------------

static BS_FORMAT: Spec = el(
    "format",
    "backing-format",
    &[("type", OneOf(ImageFormat::NAMES))],
    Children(&[&METADATA_CACHE]),
);
/// `<backingStore>`: the chain of images under a disk's image, nested.
/// Typed when each image is a plain file or block device
/// ([`crate::BackingStore`]); kept as written otherwise (network images,
/// slices, data stores, …).
static BACKING_STORE: Spec = el(
    "backingStore",
    "backing-store",
    &[(
        "type",
        OneOf(&["file", "block", "network", "volume", "nvme", "vhostuser"]),
    )],
    Children(&[&BS_FORMAT, &DISK_KEPT_SOURCE, &BACKING_STORE]),
);
static DISK_SERIAL: Spec = el("serial", "disk-serial", &[], Body::Text(Text));
static DISK_WWN: Spec = el("wwn", "disk-wwn", &[], Body::Text(Text));
static DISK_VENDOR: Spec = el("vendor", "disk-vendor", &[], Body::Text(Text));
static DISK_PRODUCT: Spec = el("product", "disk-product", &[], Body::Text(Text));
static SHAREABLE: Spec = el("shareable", "disk-shareable", &[], Empty);
static TRANSIENT: Spec = el("transient", "disk-transient", &[], Empty);
static BLOCKIO: Spec = el(
    "blockio",
    "disk-blockio",
    &[
        ("logical_block_size", Uint),
        ("physical_block_size", Uint),
        ("discard_granularity", Uint),
    ],
    Empty,
);
static GEOMETRY: Spec = el(
    "geometry",
    "disk-geometry",
    &[
        ("cyls", Uint),
        ("heads", Uint),
        ("secs", Uint),
        ("trans", OneOf(&["none", "lba", "auto"])),
    ],
    Empty,
);
static IO_TOTAL_BYTES: Spec = number("total_bytes_sec", "iotune-total-bytes-sec");
static IO_READ_BYTES: Spec = number("read_bytes_sec", "iotune-read-bytes-sec");
static IO_WRITE_BYTES: Spec = number("write_bytes_sec", "iotune-write-bytes-sec");
static IO_TOTAL_IOPS: Spec = number("total_iops_sec", "iotune-total-iops-sec");
static IO_READ_IOPS: Spec = number("read_iops_sec", "iotune-read-iops-sec");
static IO_WRITE_IOPS: Spec = number("write_iops_sec", "iotune-write-iops-sec");
static IOTUNE: Spec = el(
    "iotune",
    "disk-iotune",
    &[],
    Children(&[
        &IO_TOTAL_BYTES,
        &IO_READ_BYTES,
        &IO_WRITE_BYTES,
        &IO_TOTAL_IOPS,
        &IO_READ_IOPS,
        &IO_WRITE_IOPS,
    ]),
);
static SECRET: Spec = el(
    "secret",
    "secret",
    &[("type", Text), ("usage", Text), ("uuid", Text)],
    Empty,
);
static ENCRYPTION: Spec = el(
    "encryption",
    "disk-encryption",
    &[
        (
            "format",
            OneOf(&["default", "qcow", "luks", "luks2", "luks-any"]),
        ),
        ("engine", OneOf(&["default", "qemu", "librbd"])),
    ],
    Children(&[&SECRET]),
);

static SOURCE_HOST: Spec = el(
    "host",
    "disk-source-host",
    &[
        ("name", Text),
        ("port", Uint),
        ("transport", OneOf(&["tcp", "unix", "rdma"])),
        ("socket", Path),
    ],
    Empty,
);
static SOURCE_AUTH: Spec = el(
    "auth",
    "disk-source-auth",
    &[("username", Text)],
    Children(&[&SECRET]),
);
static SOURCE_SNAPSHOT: Spec = el("snapshot", "disk-source-snapshot", &[("name", Text)], Empty);
static SOURCE_CONFIG: Spec = el("config", "disk-source-config", &[("file", Path)], Empty);
static SOURCE_RECONNECT: Spec = el(
    "reconnect",
    "disk-source-reconnect",
    &[("delay", Uint)],
    Empty,
);
static SOURCE_INITIATOR_IQN: Spec = el("iqn", "disk-source-iqn", &[("name", Text)], Empty);
static SOURCE_INITIATOR: Spec = el(
    "initiator",
    "disk-source-initiator",
    &[],
    Children(&[&SOURCE_INITIATOR_IQN]),
);
static SOURCE_COOKIE: Spec = el(
    "cookie",
    "disk-source-cookie",
    &[("name", Text)],
    Body::Text(Text),
);
static SOURCE_COOKIES: Spec = el(
    "cookies",
    "disk-source-cookies",
    &[],
    Children(&[&SOURCE_COOKIE]),
);
static SOURCE_SSL: Spec = el("ssl", "disk-source-ssl", &[("verify", YesNo)], Empty);
static SOURCE_READAHEAD: Spec = el(
    "readahead",
    "disk-source-readahead",
    &[("size", Uint)],
    Empty,
);
static SOURCE_TIMEOUT: Spec = el(
    "timeout",
    "disk-source-timeout",
    &[("seconds", Uint)],
    Empty,
);
static SOURCE_IDENTITY: Spec = el(
    "identity",
    "disk-source-identity",
    &[
        ("user", Text),
        ("group", Text),
        ("username", Text),
        ("keyfile", Path),
        ("agentsock", Path),
    ],
    Empty,
);
static SOURCE_KNOWN_HOSTS: Spec = el(
    "knownHosts",
    "disk-source-known-hosts",
    &[("path", Path)],
    Empty,
);
static SEC_LABEL_CHILD: Spec = el("label", "disk-seclabel-label", &[], Body::Text(Text));
static SOURCE_SECLABEL: Spec = el(
    "seclabel",
    "disk-source-seclabel",
    &[("model", Text), ("relabel", YesNo), ("labelskip", YesNo)],
    Children(&[&SEC_LABEL_CHILD]),
);
static SLICE: Spec = el(
    "slice",
    "disk-source-slice",
    &[
        ("type", OneOf(&["storage"])),
        ("offset", Uint),
        ("size", Uint),
    ],
    Empty,
);
static SLICES: Spec = el("slices", "disk-source-slices", &[], Children(&[&SLICE]));
static RESERVATIONS_SOURCE: Spec = el(
    "source",
    "disk-reservations-source",
    &[
        ("type", OneOf(&["unix"])),
        ("path", Path),
        ("mode", OneOf(&["server", "client"])),
    ],
    Empty,
);
static RESERVATIONS: Spec = el(
    "reservations",
    "disk-source-reservations",
    &[("managed", YesNo)],
    Children(&[&RESERVATIONS_SOURCE]),
);
static DATA_STORE_FORMAT: Spec = el(
    "format",
    "disk-data-store-format",
    &[("type", OneOf(ImageFormat::NAMES))],
    Empty,
);
/// A network disk's `protocol=`.
const PROTOCOLS: &[&str] = &[
    "nbd", "iscsi", "rbd", "sheepdog", "gluster", "vxhs", "nfs", "http", "https", "ftp", "ftps",
    "tftp", "ssh",
];
static DATA_STORE_SOURCE: Spec = el(
    "source",
    "disk-data-store-source",
    &[
        ("file", Path),
        ("dev", Path),
        ("protocol", OneOf(PROTOCOLS)),
        ("name", Text),
    ],
    Children(&[&SOURCE_HOST, &SOURCE_AUTH]),
);
static DATA_STORE: Spec = el(
    "dataStore",
    "disk-source-data-store",
    &[("type", OneOf(&["file", "block", "network"]))],
    Children(&[&DATA_STORE_FORMAT, &DATA_STORE_SOURCE]),
);
/// A disk's `<source>` kept as written ([`crate::DiskSource::Kept`]):
/// network protocols, storage pool volumes, NVMe and vhost devices, and
/// file or block sources with more than their path. Read by the disk
/// parser itself, as its name clashes with the typed source.
pub(crate) static DISK_KEPT_SOURCE: Spec = el(
    "source",
    "disk-kept-source",
    &[
        ("file", Path),
        ("dev", Path),
        ("dir", Path),
        ("protocol", OneOf(PROTOCOLS)),
        ("name", Text),
        ("query", Text),
        ("tls", YesNo),
        ("tlsHostname", Text),
        ("pool", Text),
        ("volume", Text),
        ("mode", OneOf(&["host", "direct"])),
        ("type", OneOf(&["pci", "unix"])),
        ("managed", YesNo),
        ("namespace", Uint),
        ("path", Path),
        (
            "startupPolicy",
            OneOf(&["mandatory", "requisite", "optional"]),
        ),
        ("index", Uint),
        ("fdgroup", Text),
    ],
    Children(&[
        &SOURCE_HOST,
        &SOURCE_AUTH,
        &SOURCE_SNAPSHOT,
        &SOURCE_CONFIG,
        &SOURCE_RECONNECT,
        &SOURCE_INITIATOR,
        &SOURCE_COOKIES,
        &SOURCE_SSL,
        &SOURCE_READAHEAD,
        &SOURCE_TIMEOUT,
        &SOURCE_IDENTITY,
        &SOURCE_KNOWN_HOSTS,
        &SOURCE_SECLABEL,
        &SLICES,
        &RESERVATIONS,
        &DATA_STORE,
        &ENCRYPTION,
        &ADDRESS,
    ]),
);
static DISK_KEPT_TYPE: &[&Spec] = &[&DISK_KEPT_SOURCE];

static MAX_SIZE: Spec = el(
    "max_size",
    "disk-max-size",
    &[("unit", Text)],
    Body::Text(Uint),
);
static METADATA_CACHE: Spec = el(
    "metadata_cache",
    "disk-metadata-cache",
    &[],
    Children(&[&MAX_SIZE]),
);
const ERROR_POLICY: &[&str] = &["stop", "report", "ignore", "enospace"];
/// A VM disk's `<driver>`: the attributes before `queues` are typed, as
/// is `queues`; the rest are kept ([`crate::DiskDriver::kept_attrs`]).
pub(crate) static DISK_DRIVER: Spec = el(
    "driver",
    "vm-disk-driver",
    &[
        ("name", OneOf(DiskDriverName::NAMES)),
        ("type", OneOf(ImageFormat::NAMES)),
        ("cache", OneOf(DiskCache::NAMES)),
        ("io", OneOf(DiskIo::NAMES)),
        ("discard", OneOf(DiskDiscard::NAMES)),
        ("queues", Uint),
        ("queue_size", Uint),
        ("iothread", Uint),
        ("event_idx", OnOff),
        ("ioeventfd", OnOff),
        ("copy_on_read", OnOff),
        ("discard_no_unref", OnOff),
        ("detect_zeroes", OneOf(&["off", "on", "unmap"])),
        ("error_policy", OneOf(ERROR_POLICY)),
        ("rerror_policy", OneOf(ERROR_POLICY)),
        ("iommu", OnOff),
        ("ats", OnOff),
        ("packed", OnOff),
        ("page_per_vq", OnOff),
    ],
    Children(&[&METADATA_CACHE]),
);
static DISK_DRIVER_CONTEXT: &[&Spec] = &[&DISK_DRIVER];

/// A VM disk's `<target>`: `dev` and `bus` are typed, the rest kept
/// ([`crate::Disk::target_kept`]).
pub(crate) static DISK_TARGET: Spec = el(
    "target",
    "disk-target",
    &[
        ("dev", Text),
        ("bus", Text),
        ("tray", OneOf(&["open", "closed"])),
        ("removable", OnOff),
        ("rotation_rate", Uint),
    ],
    Empty,
);

/// Kept children of a VM's `<disk>`.
pub(crate) static DISK: &[&Spec] = &[
    &ADDRESS,
    &ALIAS,
    &BOOT_ORDER,
    &DISK_SERIAL,
    &SHAREABLE,
    &TRANSIENT,
    &BACKING_STORE,
    &IOTUNE,
    &ENCRYPTION,
    &BLOCKIO,
    &GEOMETRY,
    &DISK_WWN,
    &DISK_VENDOR,
    &DISK_PRODUCT,
    // libvirt's older place for a network disk's credentials.
    &SOURCE_AUTH,
    &NET_ACPI,
];

static ROM: Spec = el(
    "rom",
    "rom",
    &[("bar", OnOff), ("file", Path), ("enabled", YesNo)],
    Empty,
);
const OFFLOAD: &[(&str, Value)] = &[
    ("csum", OnOff),
    ("gso", OnOff),
    ("tso4", OnOff),
    ("tso6", OnOff),
    ("ecn", OnOff),
    ("ufo", OnOff),
    ("mrg_rxbuf", OnOff),
];
static NET_HOST: Spec = el("host", "net-driver-host", OFFLOAD, Empty);
static NET_GUEST: Spec = el("guest", "net-driver-guest", OFFLOAD, Empty);
static NET_DRIVER: Spec = el(
    "driver",
    "net-driver",
    &[
        ("name", OneOf(&["qemu", "vhost"])),
        ("queues", Uint),
        ("txmode", OneOf(&["iothread", "timer"])),
        ("ioeventfd", OnOff),
        ("event_idx", OnOff),
        ("rx_queue_size", Uint),
        ("tx_queue_size", Uint),
        ("iommu", OnOff),
        ("ats", OnOff),
        ("packed", OnOff),
    ],
    Children(&[&NET_HOST, &NET_GUEST]),
);
static FILTER_PARAM: Spec = el(
    "parameter",
    "filterref-parameter",
    &[("name", Text), ("value", Text)],
    Empty,
);
static FILTERREF: Spec = el(
    "filterref",
    "filterref",
    &[("filter", Text)],
    Children(&[&FILTER_PARAM]),
);
static TUNE_SNDBUF: Spec = number("sndbuf", "net-tune-sndbuf");
static NET_TUNE: Spec = el("tune", "net-tune", &[], Children(&[&TUNE_SNDBUF]));
static NET_ACPI: Spec = el("acpi", "net-acpi", &[("index", Uint)], Empty);
static NET_BACKEND: Spec = el(
    "backend",
    "net-backend",
    &[
        ("type", OneOf(&["default", "passt"])),
        ("tap", Path),
        ("vhost", Path),
        ("logFile", Path),
        ("hostname", Text),
        ("fqdn", Text),
    ],
    Empty,
);
static NET_SCRIPT: Spec = el("script", "net-script", &[("path", Path)], Empty);
static NET_DOWNSCRIPT: Spec = el("downscript", "net-downscript", &[("path", Path)], Empty);
static COALESCE_FRAMES: Spec = el("frames", "net-coalesce-frames", &[("max", Uint)], Empty);
static COALESCE_RX: Spec = el("rx", "net-coalesce-rx", &[], Children(&[&COALESCE_FRAMES]));
static NET_COALESCE: Spec = el("coalesce", "net-coalesce", &[], Children(&[&COALESCE_RX]));
static NET_TEAMING: Spec = el(
    "teaming",
    "net-teaming",
    &[
        ("type", OneOf(&["persistent", "transient"])),
        ("persistent", Text),
    ],
    Empty,
);
static NET_PORT: Spec = el("port", "net-port", &[("isolated", YesNo)], Empty);
static VIRTUALPORT_PARAMS: Spec = el(
    "parameters",
    "net-virtualport-parameters",
    &[
        ("managerid", Uint),
        ("typeid", Uint),
        ("typeidversion", Uint),
        ("instanceid", Text),
        ("profileid", Text),
        ("interfaceid", Text),
    ],
    Empty,
);
static NET_VIRTUALPORT: Spec = el(
    "virtualport",
    "net-virtualport",
    &[(
        "type",
        OneOf(&["openvswitch", "802.1Qbg", "802.1Qbh", "midonet"]),
    )],
    Children(&[&VIRTUALPORT_PARAMS]),
);

// Interface types kept but not run (`user`, `vhostuser`, `mcast`, …):
// their source, guest addresses and port forwards, read by the interface
// parser itself, as their names clash with the typed ones.
static NET_SOURCE_LOCAL: Spec = el(
    "local",
    "net-kept-source-local",
    &[("address", Text), ("port", Uint)],
    Empty,
);
static NET_SOURCE_RECONNECT: Spec = el(
    "reconnect",
    "net-kept-source-reconnect",
    &[("enabled", YesNo), ("timeout", Uint)],
    Empty,
);
pub(crate) static NET_KEPT_SOURCE: Spec = el(
    "source",
    "net-kept-source",
    &[
        ("type", OneOf(&["unix"])),
        ("path", Path),
        ("mode", OneOf(&["server", "client"])),
        ("address", Text),
        ("port", Uint),
        ("dev", Text),
        ("managed", YesNo),
    ],
    Children(&[&NET_SOURCE_LOCAL, &NET_SOURCE_RECONNECT, &ADDRESS]),
);
pub(crate) static NET_KEPT_IP: Spec = el(
    "ip",
    "net-kept-ip",
    &[
        ("address", Text),
        ("family", OneOf(&["ipv4", "ipv6"])),
        ("prefix", Uint),
        ("peer", Text),
    ],
    Empty,
);
pub(crate) static NET_KEPT_ROUTE: Spec = el(
    "route",
    "net-kept-route",
    &[
        ("family", OneOf(&["ipv4", "ipv6"])),
        ("address", Text),
        ("prefix", Uint),
        ("gateway", Text),
        ("metric", Uint),
    ],
    Empty,
);
static PORT_RANGE: Spec = el(
    "range",
    "port-forward-range",
    &[
        ("start", Uint),
        ("end", Uint),
        ("to", Uint),
        ("exclude", YesNo),
    ],
    Empty,
);
pub(crate) static PORT_FORWARD: Spec = el(
    "portForward",
    "port-forward",
    &[
        ("proto", OneOf(&["tcp", "udp"])),
        ("address", Text),
        ("dev", Text),
    ],
    Children(&[&PORT_RANGE]),
);
static INTERFACE_KEPT_TYPE: &[&Spec] = &[
    &NET_KEPT_SOURCE,
    &NET_KEPT_IP,
    &NET_KEPT_ROUTE,
    &PORT_FORWARD,
];

/// Kept children of a VM's `<interface>`.
pub(crate) static INTERFACE: &[&Spec] = &[
    &ADDRESS,
    &ALIAS,
    &BOOT_ORDER,
    &ROM,
    &NET_DRIVER,
    &FILTERREF,
    &NET_TUNE,
    &NET_ACPI,
    &NET_BACKEND,
    &NET_SCRIPT,
    &NET_DOWNSCRIPT,
    &NET_COALESCE,
    &NET_TEAMING,
    &NET_PORT,
    &NET_VIRTUALPORT,
];

static CHARDEV_PROTOCOL: Spec = el(
    "protocol",
    "chardev-protocol",
    &[("type", OneOf(&["raw", "telnet", "telnets", "tls"]))],
    Empty,
);
static CHARDEV_LOG: Spec = el(
    "log",
    "chardev-log",
    &[("file", Path), ("append", OnOff)],
    Empty,
);
/// Kept children of a VM's `<serial>` and `<console>` (`<address>` and
/// `<alias>` are read into typed fields).
pub(crate) static CHARDEV: &[&Spec] = &[
    &CHARDEV_SOURCE,
    &CHARDEV_PROTOCOL,
    &CHARDEV_LOG,
    &ADDRESS,
    &ALIAS,
];

// ---------------------------------------------------------------------
// <devices>
// ---------------------------------------------------------------------

static CTRL_MODEL: Spec = el("model", "controller-model", &[("name", Text)], Empty);
static CTRL_TARGET_NODE: Spec = number("node", "controller-target-node");
static CTRL_TARGET: Spec = el(
    "target",
    "controller-target",
    &[
        ("chassisNr", Uint),
        ("chassis", Uint),
        ("port", Hex(0xff)),
        ("busNr", Uint),
        ("index", Uint),
        ("hotplug", OnOff),
    ],
    Children(&[&CTRL_TARGET_NODE]),
);
static CTRL_DRIVER: Spec = el(
    "driver",
    "controller-driver",
    &[("queues", Uint), ("iothread", Uint)],
    Empty,
);
static CTRL_MASTER: Spec = el("master", "controller-master", &[("startport", Uint)], Empty);
static CONTROLLER: Spec = el(
    "controller",
    "controller",
    &[
        ("type", OneOf(ControllerType::NAMES)),
        ("index", Uint),
        ("model", Text),
        ("ports", Uint),
        ("vectors", Uint),
    ],
    Children(&[
        &CTRL_MODEL,
        &CTRL_TARGET,
        &CTRL_DRIVER,
        &CTRL_MASTER,
        &ADDRESS,
        &ALIAS,
    ]),
);

static INPUT_SOURCE: Spec = el(
    "source",
    "input-source",
    &[
        ("dev", Path),
        ("evdev", Path),
        ("grab", OneOf(&["all"])),
        ("repeat", OnOff),
        ("grabToggle", Text),
    ],
    Empty,
);
static INPUT: Spec = el(
    "input",
    "input",
    &[
        ("type", OneOf(InputType::NAMES)),
        ("bus", OneOf(InputBus::NAMES)),
    ],
    Children(&[&INPUT_SOURCE, &DEVICE_DRIVER, &ADDRESS, &ALIAS]),
);

static GFX_LISTEN: Spec = el(
    "listen",
    "graphics-listen",
    &[
        ("type", OneOf(ListenType::NAMES)),
        ("address", Text),
        ("network", Text),
        ("socket", Path),
    ],
    Empty,
);
static GFX_IMAGE: Spec = el("image", "graphics-image", &[("compression", Text)], Empty);
static GFX_JPEG: Spec = el("jpeg", "graphics-jpeg", &[("compression", Text)], Empty);
static GFX_ZLIB: Spec = el("zlib", "graphics-zlib", &[("compression", Text)], Empty);
static GFX_PLAYBACK: Spec = el(
    "playback",
    "graphics-playback",
    &[("compression", OnOff)],
    Empty,
);
static GFX_STREAMING: Spec = el("streaming", "graphics-streaming", &[("mode", Text)], Empty);
static GFX_CLIPBOARD: Spec = el(
    "clipboard",
    "graphics-clipboard",
    &[("copypaste", YesNo)],
    Empty,
);
static GFX_MOUSE: Spec = el(
    "mouse",
    "graphics-mouse",
    &[("mode", OneOf(&["server", "client"]))],
    Empty,
);
static GFX_FILETRANSFER: Spec = el(
    "filetransfer",
    "graphics-filetransfer",
    &[("enable", YesNo)],
    Empty,
);
static GFX_GL: Spec = el(
    "gl",
    "graphics-gl",
    &[("enable", YesNo), ("rendernode", Path)],
    Empty,
);
static GFX_CHANNEL: Spec = el(
    "channel",
    "graphics-channel",
    &[
        ("name", Text),
        ("mode", OneOf(&["any", "secure", "insecure"])),
    ],
    Empty,
);
static AUDIO_REF: Spec = el("audio", "audio-ref", &[("id", Uint)], Empty);
static GRAPHICS: Spec = el(
    "graphics",
    "graphics",
    &[
        ("type", OneOf(GraphicsType::NAMES)),
        ("port", Text),
        ("autoport", YesNo),
        ("websocket", Text),
        ("listen", Text),
        ("socket", Path),
        ("passwd", Text),
        ("keymap", Text),
        ("tlsPort", Text),
        ("defaultMode", OneOf(&["any", "secure", "insecure"])),
    ],
    Children(&[
        &GFX_LISTEN,
        &GFX_IMAGE,
        &GFX_JPEG,
        &GFX_ZLIB,
        &GFX_PLAYBACK,
        &GFX_STREAMING,
        &GFX_CLIPBOARD,
        &GFX_MOUSE,
        &GFX_FILETRANSFER,
        &GFX_GL,
        &GFX_CHANNEL,
        &AUDIO_REF,
    ]),
);

static VIDEO_ACCEL: Spec = el(
    "acceleration",
    "video-acceleration",
    &[("accel3d", YesNo), ("accel2d", YesNo), ("rendernode", Path)],
    Empty,
);
static VIDEO_RESOLUTION: Spec = el(
    "resolution",
    "video-resolution",
    &[("x", Uint), ("y", Uint)],
    Empty,
);
static VIDEO_MODEL: Spec = el(
    "model",
    "video-model",
    &[
        ("type", OneOf(VideoModelType::NAMES)),
        ("vram", Uint),
        ("ram", Uint),
        ("vgamem", Uint),
        ("vram64", Uint),
        ("heads", Uint),
        ("primary", YesNo),
        ("blob", OnOff),
    ],
    Children(&[&VIDEO_ACCEL, &VIDEO_RESOLUTION]),
);
static VIDEO_DRIVER: Spec = el(
    "driver",
    "video-driver",
    &[
        ("name", OneOf(&["qemu", "vhostuser"])),
        ("vgaconf", OneOf(&["io", "on", "off"])),
        ("iommu", OnOff),
        ("ats", OnOff),
        ("packed", OnOff),
    ],
    Empty,
);
static VIDEO: Spec = el(
    "video",
    "video",
    &[],
    Children(&[&VIDEO_MODEL, &VIDEO_DRIVER, &NET_ACPI, &ADDRESS, &ALIAS]),
);

static SOUND_CODEC: Spec = el(
    "codec",
    "sound-codec",
    &[("type", OneOf(SoundCodecType::NAMES))],
    Empty,
);
static SOUND: Spec = el(
    "sound",
    "sound",
    &[
        ("model", OneOf(SoundModel::NAMES)),
        ("streams", Uint),
        ("multichannel", YesNo),
    ],
    Children(&[&SOUND_CODEC, &AUDIO_REF, &DEVICE_DRIVER, &ADDRESS, &ALIAS]),
);

static AUDIO_SETTINGS: Spec = el(
    "settings",
    "audio-settings",
    &[("frequency", Uint), ("channels", Uint), ("format", Text)],
    Empty,
);
const AUDIO_STREAM: &[(&str, Value)] = &[
    ("mixingEngine", YesNo),
    ("fixedSettings", YesNo),
    ("voices", Uint),
    ("bufferLength", Uint),
    ("bufferCount", Uint),
    ("dev", Text),
    ("name", Text),
];
static AUDIO_INPUT: Spec = el(
    "input",
    "audio-input",
    AUDIO_STREAM,
    Children(&[&AUDIO_SETTINGS]),
);
static AUDIO_OUTPUT: Spec = el(
    "output",
    "audio-output",
    AUDIO_STREAM,
    Children(&[&AUDIO_SETTINGS]),
);
/// `<audio>`: a host audio backend that sound devices and graphics refer
/// to by id.
static AUDIO: Spec = el(
    "audio",
    "audio",
    &[
        ("id", Uint),
        ("type", OneOf(AudioType::NAMES)),
        ("timerPeriod", Uint),
    ],
    Children(&[&AUDIO_INPUT, &AUDIO_OUTPUT]),
);

static CHANNEL_SOURCE: Spec = el(
    "source",
    "channel-source",
    &[
        ("mode", OneOf(ChannelSourceMode::NAMES)),
        ("path", Path),
        ("channel", Text),
    ],
    Empty,
);
static CHANNEL_TARGET: Spec = el(
    "target",
    "channel-target",
    &[
        ("type", OneOf(ChannelTargetType::NAMES)),
        ("name", Text),
        ("state", OneOf(ChannelState::NAMES)),
        ("address", Text),
        ("port", Text),
    ],
    Empty,
);
static CHANNEL: Spec = el(
    "channel",
    "channel",
    &[("type", OneOf(ChannelType::NAMES))],
    Children(&[&CHANNEL_SOURCE, &CHANNEL_TARGET, &ADDRESS, &ALIAS]),
);

static RNG_BACKEND: Spec = el(
    "backend",
    "rng-backend",
    &[("model", OneOf(RngBackendModel::NAMES))],
    Body::Text(Path),
);
static RNG_RATE: Spec = el(
    "rate",
    "rng-rate",
    &[("bytes", Uint), ("period", Uint)],
    Empty,
);
static RNG: Spec = el(
    "rng",
    "rng",
    &[("model", OneOf(VirtioModel::NAMES))],
    Children(&[&RNG_BACKEND, &RNG_RATE, &DEVICE_DRIVER, &ADDRESS, &ALIAS]),
);

static BALLOON_STATS: Spec = el("stats", "memballoon-stats", &[("period", Uint)], Empty);
static MEMBALLOON: Spec = el(
    "memballoon",
    "memballoon",
    &[
        ("model", OneOf(MemballoonModel::NAMES)),
        ("autodeflate", OnOff),
        ("freePageReporting", OnOff),
    ],
    Children(&[&BALLOON_STATS, &DEVICE_DRIVER, &ADDRESS, &ALIAS]),
);

static WATCHDOG: Spec = el(
    "watchdog",
    "watchdog",
    &[
        ("model", OneOf(WatchdogModel::NAMES)),
        ("action", OneOf(WatchdogAction::NAMES)),
    ],
    Children(&[&ADDRESS, &ALIAS]),
);

static PANIC: Spec = el(
    "panic",
    "panic",
    &[("model", OneOf(PanicModel::NAMES))],
    Children(&[&ADDRESS, &ALIAS]),
);

static SC_CERT: Spec = el(
    "certificate",
    "smartcard-certificate",
    &[],
    Body::Text(Text),
);
static SC_DB: Spec = el("database", "smartcard-database", &[], Body::Text(Path));
/// The `<source>` of a character device that is not a typed channel:
/// smart cards, USB redirection, serial ports and consoles other than ptys.
static CHARDEV_SOURCE: Spec = el(
    "source",
    "chardev-source",
    &[
        ("mode", OneOf(&["bind", "connect"])),
        ("path", Path),
        ("host", Text),
        ("service", Text),
        ("channel", Text),
        ("append", OnOff),
        ("tls", YesNo),
        ("master", Text),
        ("slave", Text),
    ],
    Children(&[&NET_SOURCE_RECONNECT, &SOURCE_SECLABEL]),
);
static SMARTCARD: Spec = el(
    "smartcard",
    "smartcard",
    &[
        ("mode", OneOf(&["host", "host-certificates", "passthrough"])),
        ("type", OneOf(&["spicevmc", "tcp", "unix"])),
    ],
    Children(&[&SC_CERT, &SC_DB, &CHARDEV_SOURCE, &ADDRESS, &ALIAS]),
);

static REDIRDEV: Spec = el(
    "redirdev",
    "redirdev",
    &[
        ("bus", OneOf(&["usb"])),
        ("type", OneOf(&["spicevmc", "tcp"])),
    ],
    Children(&[&CHARDEV_SOURCE, &BOOT_ORDER, &ADDRESS, &ALIAS]),
);
static USBDEV: Spec = el(
    "usbdev",
    "redirfilter-usbdev",
    &[
        ("class", Text),
        ("vendor", Text),
        ("product", Text),
        ("version", Text),
        ("allow", YesNo),
    ],
    Empty,
);
static REDIRFILTER: Spec = el("redirfilter", "redirfilter", &[], Children(&[&USBDEV]));
static HUB: Spec = el(
    "hub",
    "hub",
    &[("type", OneOf(&["usb"]))],
    Children(&[&ADDRESS, &ALIAS]),
);

static TPM_DEVICE: Spec = el("device", "tpm-device", &[("path", Path)], Empty);
static TPM_ENCRYPTION: Spec = el("encryption", "tpm-encryption", &[("secret", Text)], Empty);
static TPM_BANK_SHA1: Spec = el("sha1", "tpm-sha1", &[], Empty);
static TPM_BANK_SHA256: Spec = el("sha256", "tpm-sha256", &[], Empty);
static TPM_BANK_SHA384: Spec = el("sha384", "tpm-sha384", &[], Empty);
static TPM_BANK_SHA512: Spec = el("sha512", "tpm-sha512", &[], Empty);
static TPM_BANKS: Spec = el(
    "active_pcr_banks",
    "tpm-banks",
    &[],
    Children(&[
        &TPM_BANK_SHA1,
        &TPM_BANK_SHA256,
        &TPM_BANK_SHA384,
        &TPM_BANK_SHA512,
    ]),
);
static TPM_SOURCE: Spec = el(
    "source",
    "tpm-source",
    &[
        ("type", Text),
        ("mode", OneOf(&["connect", "bind"])),
        ("path", Path),
    ],
    Empty,
);
static TPM_BACKEND: Spec = el(
    "backend",
    "tpm-backend",
    &[
        ("type", OneOf(&["passthrough", "emulator", "external"])),
        ("version", OneOf(&["1.2", "2.0"])),
        ("persistent_state", YesNo),
    ],
    Children(&[&TPM_DEVICE, &TPM_ENCRYPTION, &TPM_BANKS, &TPM_SOURCE]),
);
static TPM: Spec = el(
    "tpm",
    "tpm",
    &[("model", OneOf(&["tpm-tis", "tpm-crb"]))],
    Children(&[&TPM_BACKEND, &ADDRESS, &ALIAS]),
);

static IOMMU_GRANULE: Spec = el(
    "granule",
    "iommu-granule",
    &[("mode", OneOf(&["host", "4k", "8k", "16k", "64k"]))],
    Empty,
);
static IOMMU_DRIVER: Spec = el(
    "driver",
    "iommu-driver",
    &[
        ("intremap", OnOff),
        ("caching_mode", OnOff),
        ("eim", OnOff),
        ("iotlb", OnOff),
        ("aw_bits", Uint),
        ("dma_translation", OnOff),
        ("xtsup", OnOff),
        ("passthrough", OnOff),
    ],
    Children(&[&IOMMU_GRANULE]),
);
static IOMMU: Spec = el(
    "iommu",
    "iommu",
    &[("model", OneOf(&["intel", "virtio", "amd"]))],
    Children(&[&IOMMU_DRIVER, &ADDRESS, &ALIAS]),
);

static VSOCK_CID: Spec = el(
    "cid",
    "vsock-cid",
    &[("auto", YesNo), ("address", Uint)],
    Empty,
);
static VSOCK: Spec = el(
    "vsock",
    "vsock",
    &[(
        "model",
        OneOf(&["virtio", "virtio-transitional", "virtio-non-transitional"]),
    )],
    Children(&[&VSOCK_CID, &DEVICE_DRIVER, &ADDRESS, &ALIAS]),
);

static SHMEM_MODEL: Spec = el(
    "model",
    "shmem-model",
    &[(
        "type",
        OneOf(&["ivshmem", "ivshmem-plain", "ivshmem-doorbell"]),
    )],
    Empty,
);
static SHMEM_SIZE: Spec = el("size", "shmem-size", &[("unit", Text)], Body::Text(Uint));
static SHMEM_SERVER: Spec = el("server", "shmem-server", &[("path", Path)], Empty);
static SHMEM_MSI: Spec = el(
    "msi",
    "shmem-msi",
    &[("vectors", Uint), ("ioeventfd", OnOff), ("enabled", OnOff)],
    Empty,
);
static SHMEM: Spec = el(
    "shmem",
    "shmem",
    &[("name", Text), ("role", OneOf(&["master", "peer"]))],
    Children(&[
        &SHMEM_MODEL,
        &SHMEM_SIZE,
        &SHMEM_SERVER,
        &SHMEM_MSI,
        &ADDRESS,
        &ALIAS,
    ]),
);

static MEM_SIZE: Spec = el("size", "memory-size", &[("unit", Text)], Body::Text(Uint));
static MEM_NODE: Spec = number("node", "memory-node");
static MEM_LABEL: Spec = el("label", "memory-label", &[], Children(&[&MEM_SIZE]));
static MEM_PAGESIZE: Spec = el(
    "pagesize",
    "memory-pagesize",
    &[("unit", Text)],
    Body::Text(Uint),
);
static MEM_NODEMASK: Spec = el("nodemask", "memory-nodemask", &[], Body::Text(Text));
static MEM_PATH: Spec = el("path", "memory-path", &[], Body::Text(Path));
static MEM_SOURCE: Spec = el(
    "source",
    "memory-source",
    &[],
    Children(&[&MEM_PAGESIZE, &MEM_NODEMASK, &MEM_PATH]),
);
static MEM_BLOCK: Spec = el("block", "memory-block", &[("unit", Text)], Body::Text(Uint));
static MEM_REQUESTED: Spec = el(
    "requested",
    "memory-requested",
    &[("unit", Text)],
    Body::Text(Uint),
);
static MEM_CURRENT: Spec = el(
    "current",
    "memory-current",
    &[("unit", Text)],
    Body::Text(Uint),
);
static MEM_TARGET: Spec = el(
    "target",
    "memory-target",
    &[("dynamicMemslots", YesNo)],
    Children(&[
        &MEM_SIZE,
        &MEM_NODE,
        &MEM_LABEL,
        &MEM_BLOCK,
        &MEM_REQUESTED,
        &MEM_CURRENT,
        &ADDRESS,
    ]),
);
static PSTORE_PATH: Spec = el("path", "pstore-path", &[], Body::Text(Path));
/// `<pstore>`: a store for the guest kernel's panic logs (ACPI ERST).
static PSTORE: Spec = el(
    "pstore",
    "pstore",
    &[("backend", OneOf(&["acpi-erst"]))],
    Children(&[&PSTORE_PATH, &MEM_SIZE, &ADDRESS, &ALIAS]),
);
static MEMORY_DEVICE: Spec = el(
    "memory",
    "memory-device",
    &[
        (
            "model",
            OneOf(&["dimm", "nvdimm", "virtio-pmem", "virtio-mem", "sgx-epc"]),
        ),
        ("access", OneOf(&["shared", "private"])),
        ("discard", YesNo),
    ],
    Children(&[&MEM_SOURCE, &MEM_TARGET, &ADDRESS, &ALIAS]),
);

static VMFS_DRIVER: Spec = el(
    "driver",
    "vm-filesystem-driver",
    &[
        ("type", OneOf(&["path", "handle", "virtiofs", "mtp"])),
        ("format", Text),
        ("wrpolicy", OneOf(&["immediate"])),
        ("queue", Uint),
    ],
    Empty,
);
static VMFS_SOURCE: Spec = el(
    "source",
    "vm-filesystem-source",
    &[
        ("dir", Path),
        ("file", Path),
        ("dev", Path),
        ("socket", Path),
        ("usage", Uint),
        ("units", Text),
    ],
    Empty,
);
static VMFS_TARGET: Spec = el("target", "vm-filesystem-target", &[("dir", Text)], Empty);
static VMFS_READONLY: Spec = el("readonly", "vm-filesystem-readonly", &[], Empty);
static VMFS_CACHE: Spec = el(
    "cache",
    "vm-filesystem-cache",
    &[("mode", OneOf(&["none", "always"]))],
    Empty,
);
static VMFS_LOCK: Spec = el(
    "lock",
    "vm-filesystem-lock",
    &[("posix", OnOff), ("flock", OnOff)],
    Empty,
);
static VMFS_SANDBOX: Spec = el(
    "sandbox",
    "vm-filesystem-sandbox",
    &[("mode", OneOf(&["namespace", "chroot"]))],
    Empty,
);
static VMFS_THREAD_POOL: Spec = el(
    "thread_pool",
    "vm-filesystem-thread-pool",
    &[("size", Uint)],
    Empty,
);
static VMFS_BINARY: Spec = el(
    "binary",
    "vm-filesystem-binary",
    &[("path", Path), ("xattr", OnOff)],
    Children(&[&VMFS_CACHE, &VMFS_LOCK, &VMFS_SANDBOX, &VMFS_THREAD_POOL]),
);
/// `<filesystem>` of a virtual machine (9p or virtiofs shares), kept;
/// a container's `<filesystem>` is typed.
static VM_FILESYSTEM: Spec = el(
    "filesystem",
    "vm-filesystem",
    &[
        (
            "type",
            OneOf(&["mount", "file", "block", "ram", "bind", "volume"]),
        ),
        ("accessmode", OneOf(&["passthrough", "mapped", "squash"])),
        ("multidevs", OneOf(&["default", "remap", "forbid", "warn"])),
        ("model", OneOf(VirtioModel::NAMES)),
    ],
    Children(&[
        &VMFS_DRIVER,
        &VMFS_BINARY,
        &VMFS_SOURCE,
        &VMFS_TARGET,
        &VMFS_READONLY,
        &VM_IDMAP,
        &ADDRESS,
        &ALIAS,
    ]),
);

/// A host device's address in a VM `<hostdev>`'s `<source>`: PCI by
/// domain/bus/slot/function, USB by bus/device.
static HOST_ADDRESS: Spec = el(
    "address",
    "hostdev-source-address",
    &[
        ("type", OneOf(&["pci", "usb"])),
        ("domain", Hex(0xffff)),
        ("bus", Hex(0xff)),
        ("slot", Hex(0x1f)),
        ("function", Hex(0x7)),
        ("device", Uint),
    ],
    Empty,
);
static HOST_VENDOR: Spec = el("vendor", "hostdev-vendor", &[("id", Hex(0xffff))], Empty);
static HOST_PRODUCT: Spec = el("product", "hostdev-product", &[("id", Hex(0xffff))], Empty);
static HOST_ADAPTER: Spec = el("adapter", "hostdev-adapter", &[("name", Text)], Empty);
static HOST_SOURCE: Spec = el(
    "source",
    "vm-hostdev-source",
    &[
        (
            "startupPolicy",
            OneOf(&["mandatory", "requisite", "optional"]),
        ),
        ("protocol", OneOf(&["vhost", "iscsi"])),
        ("wwpn", Text),
    ],
    Children(&[&HOST_ADDRESS, &HOST_VENDOR, &HOST_PRODUCT, &HOST_ADAPTER]),
);
static HOST_DRIVER: Spec = el(
    "driver",
    "vm-hostdev-driver",
    &[("name", OneOf(&["vfio", "kvm"])), ("model", Text)],
    Empty,
);
/// `<acpi>` of a host device: its ACPI index, or the NUMA nodes it
/// serves as a generic initiator.
static HOSTDEV_ACPI: Spec = el(
    "acpi",
    "hostdev-acpi",
    &[("index", Uint), ("nodeset", Text)],
    Empty,
);
/// `<hostdev>` of a virtual machine (PCI and USB passthrough), kept; a
/// container's `<hostdev>` is typed.
static VM_HOSTDEV: Spec = el(
    "hostdev",
    "vm-hostdev",
    &[
        ("mode", OneOf(&["subsystem"])),
        ("type", OneOf(&["pci", "usb", "scsi", "scsi_host", "mdev"])),
        ("managed", YesNo),
        ("model", Text),
        ("display", OnOff),
        ("ramfb", OnOff),
    ],
    Children(&[
        &HOST_SOURCE,
        &HOST_DRIVER,
        &ROM,
        &BOOT_ORDER,
        &HOSTDEV_ACPI,
        &ADDRESS,
        &ALIAS,
    ]),
);

static PARALLEL_TARGET: Spec = el("target", "parallel-target", &[("port", Uint)], Empty);
static PARALLEL: Spec = el(
    "parallel",
    "parallel",
    &[("type", OneOf(&["pty"]))],
    Children(&[&PARALLEL_TARGET, &ADDRESS, &ALIAS]),
);

/// Kept children of a VM's `<devices>`. `filesystem` and `hostdev` are
/// kept for virtual machines only: for containers they are typed.
pub(crate) static DEVICES: &[&Spec] = &[
    &CONTROLLER,
    &INPUT,
    &GRAPHICS,
    &VIDEO,
    &SOUND,
    &AUDIO,
    &CHANNEL,
    &RNG,
    &MEMBALLOON,
    &WATCHDOG,
    &PANIC,
    &SMARTCARD,
    &REDIRDEV,
    &REDIRFILTER,
    &HUB,
    &TPM,
    &IOMMU,
    &VSOCK,
    &SHMEM,
    &MEMORY_DEVICE,
    &VM_FILESYSTEM,
    &VM_HOSTDEV,
    &PARALLEL,
    &PSTORE,
];

/// Every context that keeps elements, with the name of its schema define.
pub(crate) static CONTEXTS: &[(&str, &[&Spec])] = &[
    ("kept-domain-child", ROOT),
    ("kept-os-child", OS),
    ("kept-features-child", FEATURES),
    ("kept-device", DEVICES),
    ("kept-disk-child", DISK),
    ("kept-interface-child", INTERFACE),
    ("kept-interface-type-child", INTERFACE_KEPT_TYPE),
    ("kept-disk-type-child", DISK_KEPT_TYPE),
    ("kept-disk-driver-element", DISK_DRIVER_CONTEXT),
    ("kept-chardev-child", CHARDEV),
];

/// The schema text for the kept vocabulary: one define per context (a
/// choice of its elements) and one per element.
#[cfg(test)]
pub(crate) fn schema_fragment() -> String {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;

    fn value(out: &mut String, v: Value, indent: &str) {
        let _ = match v {
            Value::Text => writeln!(out, "{indent}<text/>"),
            Value::Uint => writeln!(out, "{indent}<ref name=\"unsigned-long\"/>"),
            Value::Hex(_) => writeln!(out, "{indent}<ref name=\"hex-or-decimal\"/>"),
            Value::YesNo => writeln!(out, "{indent}<ref name=\"yes-no\"/>"),
            Value::OnOff => writeln!(out, "{indent}<ref name=\"on-off\"/>"),
            Value::Path => writeln!(out, "{indent}<ref name=\"absolute-path\"/>"),
            Value::OneOf(names) => {
                let _ = writeln!(out, "{indent}<choice>");
                for n in names {
                    let _ = writeln!(out, "{indent}  <value>{n}</value>");
                }
                writeln!(out, "{indent}</choice>")
            }
        };
    }

    /// `<zeroOrMore>` or `<oneOrMore>` of a choice of `children`.
    fn repeat(out: &mut String, how: &str, children: &[&Spec], indent: &str) {
        let _ = writeln!(out, "{indent}<{how}>");
        let _ = writeln!(out, "{indent}  <choice>");
        for c in children {
            let _ = writeln!(out, "{indent}    <ref name=\"kept-{}\"/>", c.id);
        }
        let _ = writeln!(out, "{indent}  </choice>");
        let _ = writeln!(out, "{indent}</{how}>");
    }

    fn define(out: &mut String, spec: &'static Spec, done: &mut BTreeSet<&'static str>) {
        if !done.insert(spec.id) {
            return;
        }
        let _ = writeln!(out, "  <define name=\"kept-{}\">", spec.id);
        let _ = writeln!(out, "    <element name=\"{}\">", spec.name);
        for (name, v) in spec.attrs {
            let _ = writeln!(out, "      <optional>");
            let _ = writeln!(out, "        <attribute name=\"{name}\">");
            value(out, *v, "          ");
            let _ = writeln!(out, "        </attribute>");
            let _ = writeln!(out, "      </optional>");
        }
        match spec.body {
            Body::Empty => {
                let _ = writeln!(out, "      <empty/>");
            }
            Body::Text(Value::Text) => {
                let _ = writeln!(out, "      <text/>");
            }
            Body::Text(v) => {
                let _ = writeln!(out, "      <choice>");
                let _ = writeln!(out, "        <empty/>");
                value(out, v, "        ");
                let _ = writeln!(out, "      </choice>");
            }
            Body::Children(children) => repeat(out, "zeroOrMore", children, "      "),
            Body::TextOrChildren(v, children) => {
                let _ = writeln!(out, "      <choice>");
                let _ = writeln!(out, "        <empty/>");
                value(out, v, "        ");
                repeat(out, "oneOrMore", children, "        ");
                let _ = writeln!(out, "      </choice>");
            }
        }
        let _ = writeln!(out, "    </element>");
        let _ = writeln!(out, "  </define>\n");
        for c in spec.children() {
            define(out, c, done);
        }
    }

    let mut out = String::new();
    let mut done = BTreeSet::new();
    for (name, specs) in CONTEXTS {
        let _ = writeln!(out, "  <define name=\"{name}\">");
        let _ = writeln!(out, "    <choice>");
        for s in *specs {
            let _ = writeln!(out, "      <ref name=\"kept-{}\"/>", s.id);
        }
        let _ = writeln!(out, "    </choice>");
        let _ = writeln!(out, "  </define>\n");
    }
    for (_, specs) in CONTEXTS {
        for s in *specs {
            define(&mut out, s, &mut done);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::{CONTEXTS, Spec, schema_fragment};

    const BEGIN: &str =
        "  <!-- BEGIN kept vocabulary: generated from daemon/domain/src/kept.rs; do not edit -->\n";
    const END: &str = "  <!-- END kept vocabulary -->\n";

    /// The schema's kept part is what the table generates. Run with
    /// `LXVIRT_BLESS_SCHEMA=1` to write it after changing the table.
    #[test]
    fn kept_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xml-schemas/domain.rng");
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, rest) = text.split_once(BEGIN).expect("begin marker");
        let (_, tail) = rest.split_once(END).expect("end marker");
        let want = format!("{head}{BEGIN}{}{END}{tail}", schema_fragment());
        if std::env::var_os("LXVIRT_BLESS_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
        } else {
            assert!(
                text == want,
                "xml-schemas/domain.rng is out of date with kept.rs; run LXVIRT_BLESS_SCHEMA=1 cargo test -p lxvirt-domain kept_schema_is_current"
            );
        }
    }

    /// One id names one element description.
    #[test]
    fn ids_are_unique() {
        fn walk(s: &'static Spec, seen: &mut BTreeMap<&'static str, *const Spec>) {
            if let Some(prev) = seen.insert(s.id, s as *const Spec) {
                assert_eq!(prev, s as *const Spec, "id {} used twice", s.id);
                return;
            }
            for c in s.children() {
                walk(c, seen);
            }
        }
        let mut seen = BTreeMap::new();
        for (_, specs) in CONTEXTS {
            for s in *specs {
                walk(s, &mut seen);
            }
        }
    }
}
