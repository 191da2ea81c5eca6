//! The command-line grammar; also the source of completions and the man page.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;

/// Manage lxvirt domains: Linux containers (and KVM guests) defined by domain XML.
///
/// Exit status: 0 success; 1 the operation failed; 2 usage error; 3 cannot
/// reach lxvirtd; 4 invalid domain XML; 5 no such domain; 6 permission denied;
/// 7 operation not valid in the domain's current state (or image in use);
/// 8 no such image.
#[derive(Debug, Parser)]
#[command(name = "lxvirt", version, propagate_version = true)]
pub struct Cli {
    /// D-Bus address of the bus lxvirtd is on (default: the system bus).
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "ADDR",
        env = "LXVIRT_BUS_ADDRESS"
    )]
    pub connect: Option<String>,

    /// lxvirtd's private socket (root only), for the commands it serves
    /// there: list, and start, shutdown, destroy, reboot, reset, suspend and
    /// resume of a domain given by name; they skip the bus's hops (default:
    /// /run/lxvirt/private, unless --connect is given; without it, the bus).
    #[arg(long, global = true, value_name = "PATH", env = "LXVIRT_SOCKET")]
    pub socket: Option<std::path::PathBuf>,

    /// Output format of listing and info commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Import a root-filesystem tarball (plain, gzip, zstd; '-' reads stdin).
    Import {
        file: PathBuf,
        /// A name for the image.
        #[arg(long)]
        name: Option<String>,
        /// The image this tarball is a layer of (its whiteouts apply to it).
        #[arg(long)]
        parent: Option<String>,
    },
    /// Import an OCI image layout directory.
    ImportOci {
        dir: PathBuf,
        /// The manifest to import (its org.opencontainers.image.ref.name).
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
        /// A name for the image.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    List,
    /// Show an image: names, parent chain, sizes, users.
    Inspect {
        #[arg(add = ArgValueCandidates::new(crate::complete::images))]
        image: String,
    },
    /// Remove an image (refused while a domain or a child image uses it).
    Rm {
        #[arg(add = ArgValueCandidates::new(crate::complete::images))]
        image: String,
    },
    /// Give an image a name.
    Tag {
        #[arg(add = ArgValueCandidates::new(crate::complete::images))]
        image: String,
        name: String,
    },
    /// Remove a name.
    Untag { name: String },
    /// Write an image as a tarball ('-' for stdout).
    Export {
        #[arg(add = ArgValueCandidates::new(crate::complete::images))]
        image: String,
        file: PathBuf,
        /// Only the image's own layer (whiteouts as .wh. entries).
        #[arg(long)]
        layer_only: bool,
        /// none, gzip or zstd.
        #[arg(long, default_value = "none", value_parser = ["none", "gzip", "zstd"])]
        compression: String,
    },
}

/// How `shutdown` and `reboot` ask a domain (virsh's `--mode` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShutdownMode {
    /// SIGTERM to a container's init.
    Signal,
    /// A runlevel request on a container's /run/initctl (sysvinit).
    Initctl,
    /// SIGRTMIN+3 to a container's init (systemd halts).
    Systemd,
    /// The ACPI power button of a VM.
    Acpi,
    /// The QEMU guest agent of a VM.
    Agent,
}

impl ShutdownMode {
    /// The mode's name on the bus.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Signal => "signal",
            ShutdownMode::Initctl => "initctl",
            ShutdownMode::Systemd => "systemd",
            ShutdownMode::Acpi => "acpi",
            ShutdownMode::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Define (or update) a persistent domain from an XML file ('-' reads stdin).
    Define { file: PathBuf },
    /// Remove a domain's persistent definition (and its writable layer).
    Undefine {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Keep the domain's writable layer (its changes to its image).
        #[arg(long)]
        keep_writable_layer: bool,
    },
    /// Start a defined domain.
    Start {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Create and start a transient domain from an XML file (forgotten when it stops).
    Create { file: PathBuf },
    /// Ask a domain to stop as its init wants it (SIGRTMIN+3 to systemd, /run/initctl for sysvinit, else SIGTERM), the ACPI power button to a VM; killed after the grace period.
    Shutdown {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Seconds before the domain is killed (default 10).
        #[arg(long, default_value_t = 10)]
        grace: u32,
        /// How to ask: signal, initctl or systemd (containers), acpi or agent (VMs); by default as the domain's init or VM wants it.
        #[arg(long, value_enum)]
        mode: Option<ShutdownMode>,
    },
    /// Stop a domain at once: SIGKILL to every process of a container, SIGTERM then SIGKILL to a VM's qemu.
    Destroy {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Stop a domain as shutdown does and start it again.
    Reboot {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Seconds before the domain is killed (default 10).
        #[arg(long, default_value_t = 10)]
        grace: u32,
        /// How to ask: signal, initctl or systemd (containers), acpi or agent (VMs); by default as the domain's init or VM wants it.
        #[arg(long, value_enum)]
        mode: Option<ShutdownMode>,
    },
    /// Restart a domain at once without asking it: a VM's reset button, a container killed and started again.
    Reset {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Pause a domain: freeze a container's processes, stop a VM's CPUs.
    Suspend {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Let a suspended domain run again.
    Resume {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Attach to a domain's console (Ctrl-] detaches).
    Console {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Which console: console0 (default), console1, …
        #[arg(long)]
        devname: Option<String>,
    },
    /// Print a domain's console output, kept whether or not a console was
    /// attached (a container's first console, a VM's first serial port).
    Logs {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Go on printing new output until the domain stops.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines of what was kept.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
    },
    /// Run a command inside a running domain, confined as the domain is.
    Enter {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Do not apply the domain's SELinux label to the command.
        #[arg(long)]
        noseclabel: bool,
        /// Working directory inside the domain.
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Extra environment variables (KEY=VALUE).
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Give the command a terminal of the container's own (its
        /// controlling terminal: job control, window size), relayed to
        /// this one.
        #[arg(long, short = 't')]
        tty: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive login shell inside a running container, on a
    /// terminal of its own (as 'enter -t DOMAIN -- /bin/sh -l').
    Shell {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Extra environment variables (KEY=VALUE).
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The shell or command to run instead of '/bin/sh -l'.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Show a running domain's resource use.
    Domstats {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Show or set a domain's memory limits (<memtune>, KiB): live, in the definition, or both.
    Memtune {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        #[arg(long, value_name = "KiB")]
        hard_limit: Option<u64>,
        #[arg(long, value_name = "KiB")]
        soft_limit: Option<u64>,
        #[arg(long, value_name = "KiB")]
        swap_hard_limit: Option<u64>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Show or set a domain's CPU scheduler parameters (<cputune>): --set cpu_shares=N, vcpu_period=µs, vcpu_quota=µs|-1.
    Schedinfo {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// PARAM=VALUE; repeat for several.
        #[arg(long = "set", value_name = "PARAM=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Show or set a domain's block I/O weights and limits (<blkiotune>); per device as PATH,VALUE[,PATH,VALUE…], 0 removes one.
    Blkiotune {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// 100–1000.
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long, value_name = "PATH,WEIGHT")]
        device_weights: Option<String>,
        #[arg(long, value_name = "PATH,BYTES")]
        device_read_bytes_sec: Option<String>,
        #[arg(long, value_name = "PATH,BYTES")]
        device_write_bytes_sec: Option<String>,
        #[arg(long, value_name = "PATH,IOPS")]
        device_read_iops_sec: Option<String>,
        #[arg(long, value_name = "PATH,IOPS")]
        device_write_iops_sec: Option<String>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Show or set the host NUMA nodes of a domain's memory (<numatune>); the mode only in the definition.
    Numatune {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Host nodes, such as 0-1.
        #[arg(long)]
        nodeset: Option<String>,
        /// strict, preferred, interleave or restrictive.
        #[arg(long)]
        mode: Option<String>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Set the current memory (<currentMemory>): a container's memory
    /// limit, a VM's balloon target; live, in the definition, or both.
    Setmem {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// KiB, or with a suffix: 512M, 2G (powers of 1024).
        size: String,
        #[command(flatten)]
        affect: Affect,
    },
    /// Set the maximum memory (<memory>) in the definition (--config; a
    /// running domain's cannot change).
    Setmaxmem {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// KiB, or with a suffix: 512M, 2G (powers of 1024).
        size: String,
        #[command(flatten)]
        affect: Affect,
    },
    /// Show or set the host CPUs the domain runs on (<vcpu cpuset>, the
    /// container's cpuset.cpus); 'none' removes the pinning.
    Emulatorpin {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// A CPU list such as 0-3,^2; absent: show it.
        cpulist: Option<String>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Show or set a container's task limit (<lxvirt:pids max>, its
    /// pids.max); 'default' goes back to lxvirtd's pids-max setting.
    #[command(name = "pids-limit")]
    PidsLimit {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// The most tasks, or 'default'; absent: show it.
        max: Option<String>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Send a signal to a process of a running container, by its pid inside (1 is init).
    #[command(name = "send-process-signal")]
    SendProcessSignal {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// The process's pid as the container sees it.
        #[arg(allow_negative_numbers = true)]
        pid: i64,
        /// A name or number as kill takes it: SIGTERM, term, 15, SIGRTMIN+3; 0 only checks the process exists.
        signal: String,
    },
    /// List domains (running ones; --all for every defined domain).
    List {
        /// Include inactive domains.
        #[arg(long, short = 'a')]
        all: bool,
        /// Only the names, one a line (for scripts).
        #[arg(long)]
        name: bool,
    },
    /// Show a domain's identity, state and settings.
    Dominfo {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Print a domain's state (running, paused, shutoff…), with --reason
    /// why it is in it.
    Domstate {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Also print the reason: "running (booted)".
        #[arg(long)]
        reason: bool,
    },
    /// Print a domain's UUID.
    Domuuid {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Print the name of the domain with this UUID.
    Domname { uuid: String },
    /// Edit a domain's persistent XML in $VISUAL or $EDITOR, then define it
    /// again (offers to edit again when it is refused).
    Edit {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
    },
    /// Print lifecycle events of domains as they happen (the first one,
    /// or all with --loop).
    Event {
        /// Only this domain's events.
        #[arg(long)]
        domain: Option<String>,
        /// Keep printing events until interrupted (or --timeout).
        #[arg(long = "loop")]
        keep_going: bool,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Prefix each event with the time it was received.
        #[arg(long)]
        timestamp: bool,
    },
    /// Print the versions of lxvirt and of the lxvirtd it talks to.
    Version,
    /// Stop every active domain, as at host shutdown (lxvirt-guests.service
    /// runs it): the options not given are lxvirtd's settings.
    ShutdownAll {
        /// shutdown (ask each, destroy what still runs at the time limit),
        /// destroy, or keep.
        #[arg(long, value_parser = ["shutdown", "destroy", "keep"])]
        mode: Option<String>,
        /// Seconds for all of them together.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// At most this many at a time (0: all at once).
        #[arg(long, value_name = "N")]
        parallel: Option<u32>,
    },
    /// Bring the host in line with a directory of domain and network
    /// documents (kept in git): define new ones, update changed ones, set
    /// autostart (an entry in the 'autostart' directory beside a document).
    /// Exit status 0: nothing changed; 9: something changed (with
    /// --dry-run: would); other: an error, as for every command.
    Apply(ApplyArgs),
    /// Print a domain's XML.
    Dumpxml {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// The persistent definition rather than the live one.
        #[arg(long)]
        inactive: bool,
        /// Include security-sensitive data.
        #[arg(long)]
        security_info: bool,
    },
    /// Check domain and network XML files offline, against their schema and lxvirt's rules.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Mark a domain to start when lxvirtd starts (or unmark it).
    Autostart {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Remove the mark.
        #[arg(long)]
        disable: bool,
    },
    /// Print what this host supports (XML).
    Capabilities,
    #[command(flatten)]
    Net(NetCommand),
    #[command(flatten)]
    DomIf(DomIfCommand),
    /// Manage images: the root filesystems domains start from.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Copy a shut off or paused domain's writable layer into a new image.
    Commit {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// The new image's name.
        #[arg(add = ArgValueCandidates::new(crate::complete::images))]
        image: String,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

/// A running domain's network interfaces.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum DomIfCommand {
    /// List a domain's interfaces: host-side name, type, source, MAC.
    Domiflist {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// The persistent definition's interfaces.
        #[arg(long)]
        inactive: bool,
    },
    /// Show a running domain's interface addresses.
    Domifaddr {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Only this interface (name or MAC).
        #[arg(long)]
        interface: Option<String>,
        /// Where they come from: the DHCP leases of its networks, or the
        /// container's own view.
        #[arg(long, value_enum, default_value_t = AddressSourceArg::Lease)]
        source: AddressSourceArg,
    },
    /// Show an interface's traffic counters, from the domain's side.
    Domifstat {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Its name inside, its host-side name or its MAC.
        interface: String,
    },
    /// Set an interface's link up or down (its <link state>): on the
    /// running domain, or in the definition with --config.
    #[command(name = "domif-setlink")]
    DomifSetlink {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Its host-side name (target dev) or its MAC.
        interface: String,
        #[arg(value_enum)]
        state: LinkStateArg,
        /// Change the persistent definition instead.
        #[arg(long)]
        config: bool,
    },
    /// Show an interface's link state: of the running domain, or of the
    /// definition with --config.
    #[command(name = "domif-getlink")]
    DomifGetlink {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Its host-side name (target dev) or its MAC.
        interface: String,
        #[arg(long)]
        config: bool,
    },
    /// Show or change an interface's <bandwidth>: average, peak (kB/s)
    /// and burst (KiB) each way, as virsh's domiftune; 0 ends a direction's
    /// limit. Without --inbound or --outbound, prints the limits.
    Domiftune {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        /// Its host-side name (target dev) or its MAC.
        interface: String,
        /// Traffic towards the domain: AVERAGE[,PEAK[,BURST[,FLOOR]]].
        #[arg(long, value_parser = parse_rate, value_name = "AVERAGE[,PEAK[,BURST[,FLOOR]]]")]
        inbound: Option<RateArg>,
        /// Traffic from the domain: AVERAGE[,PEAK[,BURST]].
        #[arg(long, value_parser = parse_rate, value_name = "AVERAGE[,PEAK[,BURST]]")]
        outbound: Option<RateArg>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Attach a device from an XML file ('-' reads stdin): an <interface>,
    /// a block <disk>, a <filesystem> (mount or bind), a <hostdev>
    /// (storage or misc).
    #[command(name = "attach-device")]
    AttachDevice {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        file: PathBuf,
        #[command(flatten)]
        affect: Affect,
    },
    /// Detach the device an XML file describes (an <interface> by its
    /// <mac>, a <disk> by its target, a <filesystem> by its target
    /// directory, a <hostdev> by its source).
    #[command(name = "detach-device")]
    DetachDevice {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        file: PathBuf,
        #[command(flatten)]
        affect: Affect,
    },
    /// Replace a device with the one an XML file describes (named as
    /// detach-device names it); a running container can change a disk's
    /// or filesystem's <readonly/>.
    #[command(name = "update-device")]
    UpdateDevice {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        file: PathBuf,
        #[command(flatten)]
        affect: Affect,
    },
    /// Attach a network interface: TYPE network|bridge|ethernet|direct,
    /// SOURCE the network, bridge or host device (none for ethernet).
    #[command(name = "attach-interface")]
    AttachInterface {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        #[arg(value_name = "TYPE")]
        kind: String,
        source: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// The host-side name.
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        affect: Affect,
    },
    /// Detach a network interface of TYPE: the one with --mac, or the
    /// only one of that type.
    #[command(name = "detach-interface")]
    DetachInterface {
        #[arg(add = ArgValueCandidates::new(crate::complete::domains))]
        domain: String,
        #[arg(value_name = "TYPE")]
        kind: String,
        #[arg(long)]
        mac: Option<String>,
        #[command(flatten)]
        affect: Affect,
    },
}

// What a device change affects (virsh's --live, --config, --current); a
// plain comment, not a doc comment: a flattened struct's doc would become
// the about of the subcommand it is built into (deferred, after the
// subcommand's own).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Affect {
    /// The running domain.
    #[arg(long)]
    pub live: bool,
    /// The persistent definition.
    #[arg(long)]
    pub config: bool,
    /// The running domain if it runs, else the definition (the default).
    #[arg(long, conflicts_with_all = ["live", "config"])]
    pub current: bool,
}

impl Affect {
    pub fn flags(self) -> u32 {
        u32::from(self.live) | (u32::from(self.config) << 1)
    }
}

/// One direction of `domiftune`: `None` ends its limit (an average of 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateArg(pub Option<lxvirt_domain::BandwidthRate>);

/// `AVERAGE[,PEAK[,BURST[,FLOOR]]]`, each a whole number, empty for none
/// but the average (`100,,64`).
fn parse_rate(text: &str) -> Result<RateArg, String> {
    let mut fields = [None; 4];
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > 4 {
        return Err("at most four numbers: AVERAGE,PEAK,BURST,FLOOR".into());
    }
    for (slot, part) in fields.iter_mut().zip(&parts) {
        if part.is_empty() {
            continue;
        }
        *slot = Some(
            part.parse::<u64>()
                .map_err(|_| format!("'{part}' is not a whole number"))?,
        );
    }
    let [average, peak, burst, floor] = fields;
    match average {
        None => Err("the average comes first (0 ends the limit)".into()),
        Some(0) if peak.is_some() || burst.is_some() || floor.is_some() => {
            Err("an average of 0 ends the limit and takes nothing else".into())
        }
        Some(0) => Ok(RateArg(None)),
        Some(average) => Ok(RateArg(Some(lxvirt_domain::BandwidthRate {
            average: Some(average),
            peak,
            burst,
            floor,
        }))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkStateArg {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AddressSourceArg {
    Lease,
    Agent,
}

/// Virtual networks: a bridge with NAT or routing, DHCP and DNS.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum NetCommand {
    /// Define (or update) a network from an XML file ('-' reads stdin).
    #[command(name = "net-define")]
    Define { file: PathBuf },
    /// Create and start a transient network from an XML file ('-' reads
    /// stdin); it is forgotten when destroyed.
    #[command(name = "net-create")]
    Create { file: PathBuf },
    /// Remove a network's definition (an active network runs on until
    /// destroyed).
    #[command(name = "net-undefine")]
    Undefine {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
    },
    /// Start a defined network: bridge, firewall table, DHCP and DNS.
    #[command(name = "net-start")]
    Start {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
    },
    /// Stop a network (refused while running domains use it).
    #[command(name = "net-destroy")]
    Destroy {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
        /// Even with running domains on it: they lose their connection.
        #[arg(long)]
        force: bool,
    },
    /// List networks (active ones; --all for every defined network).
    #[command(name = "net-list")]
    List {
        /// Include inactive networks.
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Show the DHCP leases a network has given.
    #[command(name = "net-dhcp-leases")]
    DhcpLeases {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
        /// Only the lease of this MAC address.
        #[arg(long)]
        mac: Option<String>,
    },
    /// Show a network's identity, state and bridge.
    #[command(name = "net-info")]
    Info {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
    },
    /// Print a network's XML.
    #[command(name = "net-dumpxml")]
    Dumpxml {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
    },
    /// Mark a network to start with the host (or unmark it).
    #[command(name = "net-autostart")]
    Autostart {
        #[arg(add = ArgValueCandidates::new(crate::complete::networks))]
        network: String,
        /// Remove the mark.
        #[arg(long)]
        disable: bool,
    },
}

// `lxvirt apply`'s arguments (a plain comment: see `Affect`).
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// The directory: every *.xml below it.
    pub dir: PathBuf,
    /// Print the plan (and each change as a diff); change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Undefine the persistent domains and networks no document names.
    #[arg(long)]
    pub prune: bool,
    /// Start what should autostart and does not run; stop what should
    /// not and runs (and what --prune undefines).
    #[arg(long)]
    pub converge_state: bool,
    /// Seconds a stop waits before it kills (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// At most this many starts or stops at a time (default 8).
    #[arg(long, value_name = "N")]
    pub parallel: Option<u32>,
    /// Print each change as a diff when applying too.
    #[arg(long)]
    pub diff: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::CommandFactory;

    use super::Cli;

    /// Subcommands are built only when used (`defer`), so a mistake in one
    /// would show only when someone runs it: build them all here.
    #[test]
    fn every_subcommand_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Built late, a subcommand could take the about of a struct flattened
    /// into it: each keeps its own, and no two share one.
    #[test]
    fn every_subcommand_keeps_its_own_about() {
        let mut cli = Cli::command();
        cli.build();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut check = |path: String, command: &clap::Command| {
            let about = command
                .get_about()
                .unwrap_or_else(|| panic!("{path} has no about"))
                .to_string();
            if let Some(other) = seen.insert(about.clone(), path.clone()) {
                panic!("{path} and {other} share the about {about:?}");
            }
        };
        // clap's own `help` subcommands repeat the others' abouts.
        let ours = |command: &&clap::Command| command.get_name() != "help";
        for command in cli.get_subcommands().filter(ours) {
            check(command.get_name().to_owned(), command);
            for sub in command.get_subcommands().filter(ours) {
                check(format!("{} {}", command.get_name(), sub.get_name()), sub);
            }
        }
    }
}
