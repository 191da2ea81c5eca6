//! A virtual machine's definition as a qemu command line: pure, so every
//! element's translation is unit-tested without running anything (no
//! file is opened, no path checked: what the driver prepares, such as tap
//! descriptors, sockets and overlay files, comes in [`Settings`]).
//!
//! The guest starts paused (`-S`): the driver sets up what needs QMP and
//! then sends `cont`. qemu gets no defaults (`-nodefaults`,
//! `-no-user-config`): every device comes from the definition. The
//! guest's power-off stops qemu without ending it (`-no-shutdown`), so
//! the driver reads the `SHUTDOWN` event, applies `on_poweroff` and then
//! quits it; `on_reboot='destroy'` turns a guest's reboot into a
//! power-off (`-no-reboot`); a guest's panic pauses it (`-action
//! panic=pause`) so the driver reads `GUEST_PANICKED` and applies
//! `on_crash`. qemu's own seccomp filter is on with every group of calls a
//! guest never needs denied (which is why the launcher, [`super::process`],
//! daemonizes qemu rather than `-daemonize`).
//!
//! Translated: the machine, CPUs (with their features), memory, firmware
//! (`<loader>` as ROM or pflash with `<nvram>`) and boot order, direct
//! kernel boot, the clock with its timers,
//! serial consoles, and these devices:
//! - `<disk>` (file or block; raw or qcow2 with its `<backingStore>`
//!   chain; on virtio, SATA, IDE or virtio-SCSI; a transient disk on an
//!   overlay the driver made) — [`storage`];
//! - `<interface>` of type network, bridge or ethernet, on a tap the
//!   driver opened — [`net`];
//! - `<controller>`, `<input>`, `<video>`, `<graphics type='vnc'>` (on a
//!   local socket only), `<sound>` (Intel HDA, with no host audio),
//!   `<channel type='unix'>` on virtio-serial, `<rng>`, `<memballoon>`,
//!   `<watchdog>`, `<panic>` — [`devices`].
//!
//! Placement: a device's PCI, USB, virtio-serial or ISA `<address>` is
//! ignored (qemu places devices on the root bus in order; guests do not
//! care, except Windows' activation, which may notice a slot change), so
//! PCI bridges and root ports are accepted and not created; a disk's
//! `<address type='drive'>` is honoured, as it chooses the port a disk
//! sits on. `<alias>` names a device's qemu id; devices without one get a
//! stable id (see each module).
//!
//! Refused by name ([`CommandError::NotSupported`]), the definition keeping
//! them: whatever [`DomainDef::unsupported_for_vm`] lists (`<hostdev>`,
//! `<tpm>`, `<redirdev>`, `<smartcard>`, `<filesystem>`, …), `<graphics>`
//! other than VNC, sound models other than ich6/ich9 and audio backends
//! other than `none`, channels other than unix/virtio, `direct`
//! interfaces, and every model or option the modules above do not list.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::domain::{
    BootDev, ChardevType, ClockOffset, CpuFeaturePolicy, CpuMode, DomainDef, DomainType, HvmOs,
    KeptElement, LifecycleAction, Os, TickPolicy, TimerName,
};

mod devices;
mod net;
mod storage;

pub use storage::{disk_device_id, disk_node_name};

/// How this host runs guests, decided by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation: `type='qemu'`, or no usable KVM.
    Tcg,
}

/// What the command line needs besides the definition: what the driver
/// prepared before start. The vectors are indexed like the definition's
/// devices of that kind; a missing entry counts as `None`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub accel: Accel,
    /// The QMP socket qemu listens on.
    pub qmp: PathBuf,
    /// Where qemu keeps a copy of each serial port's output
    /// (`serialN.log`), written whether or not a console is attached;
    /// `None` keeps none.
    pub serial_logs: Option<PathBuf>,
    /// Per `<disk>`: the qcow2 overlay the driver created over the disk
    /// (a `<transient/>` one needs one). The overlay is the disk's
    /// writable top; the disk's own chain becomes its read-only backing.
    pub disk_overlays: Vec<Option<PathBuf>>,
    /// Per `<interface>`: the tap device the driver opened (and left open
    /// across exec, not close-on-exec), which qemu takes as `fd=N`.
    pub tap_fds: Vec<Option<RawFd>>,
    /// Per `<channel>`: the unix socket qemu listens on for it (in the
    /// domain's run directory).
    pub channel_sockets: Vec<Option<PathBuf>>,
    /// The unix socket of a `<graphics type='vnc'>` display; VNC never
    /// listens on a network address.
    pub vnc_socket: Option<PathBuf>,
}

impl Settings {
    /// Settings with nothing prepared besides the QMP socket.
    pub fn new(accel: Accel, qmp: PathBuf) -> Settings {
        Settings {
            accel,
            qmp,
            disk_overlays: Vec::new(),
            tap_fds: Vec::new(),
            channel_sockets: Vec::new(),
            vnc_socket: None,
            serial_logs: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(
        "domain '{domain}': {element} cannot run yet ({why}); remove it to start the domain (the definition keeps it)"
    )]
    NotSupported {
        domain: String,
        element: String,
        why: &'static str,
    },
    #[error("domain '{domain}' is a container (type='lxc'), not a virtual machine")]
    NotVm { domain: String },
}

/// The machine type when `<type machine=>` names none: libvirt's default
/// for new x86 guests.
const DEFAULT_MACHINE: &str = "q35";

/// The chipset a machine type emulates, for the buses it has built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chipset {
    /// `q35`, `pc-q35-*`: AHCI (SATA) built in, no IDE.
    Q35,
    /// `pc`, `pc-i440fx-*`: IDE built in.
    I440fx,
    Other,
}

/// What the translation of one definition shares between devices.
struct Ctx<'a> {
    def: &'a DomainDef,
    settings: &'a Settings,
    chipset: Chipset,
    /// Every device id given so far: qemu refuses a duplicate with an
    /// error that names no element, so it is caught here.
    ids: HashSet<String>,
}

impl Ctx<'_> {
    fn refuse(&self, element: impl Into<String>, why: &'static str) -> CommandError {
        CommandError::NotSupported {
            domain: self.def.name().to_owned(),
            element: element.into(),
            why,
        }
    }

    /// The qemu id of a device: its `<alias>`, else `generated`.
    fn id(
        &mut self,
        alias: Option<&str>,
        generated: String,
        element: &str,
    ) -> Result<String, CommandError> {
        let id = match alias {
            Some(alias) if !is_qemu_id(alias) => {
                return Err(self.refuse(
                    format!("{element} with <alias name='{alias}'>"),
                    "a qemu id starts with a letter and has only letters, digits, '-', '.' and '_'",
                ));
            }
            Some(alias) => alias.to_owned(),
            None => generated,
        };
        if !self.ids.insert(id.clone()) {
            return Err(self.refuse(
                format!("{element} with id '{id}'"),
                "another device has the same <alias> or generated id",
            ));
        }
        Ok(id)
    }

    /// Refuses a translated element's kept children: options lxvirt
    /// stores but does not pass on.
    fn refuse_kept(&self, element: &str, kept: &[KeptElement]) -> Result<(), CommandError> {
        match kept.first() {
            Some(child) => Err(self.refuse(
                format!("{element}{child}"),
                "lxvirt keeps it but does not run it",
            )),
            None => Ok(()),
        }
    }
}

fn is_qemu_id(id: &str) -> bool {
    id.len() <= 128
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn chipset(machine: &str) -> Chipset {
    if machine == "q35" || machine.starts_with("pc-q35") {
        Chipset::Q35
    } else if machine == "pc" || machine.starts_with("pc-i440fx") {
        Chipset::I440fx
    } else {
        Chipset::Other
    }
}

/// The arguments after the program name (`-daemonize` and `-pidfile` are
/// the launcher's).
pub fn command_line(def: &DomainDef, settings: &Settings) -> Result<Vec<OsString>, CommandError> {
    let name = def.name();
    let Os::Hvm(os) = &def.os else {
        return Err(CommandError::NotVm {
            domain: name.to_owned(),
        });
    };
    if def.domain_type == DomainType::Lxc {
        return Err(CommandError::NotVm {
            domain: name.to_owned(),
        });
    }
    let machine_type = machine_type(os);
    let mut ctx = Ctx {
        def,
        settings,
        chipset: chipset(machine_type),
        ids: HashSet::new(),
    };
    refuse_untranslated(&ctx, os)?;
    let mut args = Args::default();
    args.push2("-name", format!("guest={},debug-threads=on", name));
    args.push2("-uuid", def.uuid.to_string());
    let clock = clock(&ctx, settings.accel)?;
    let mut machine = machine(def, machine_type, settings.accel);
    machine.push_str(&clock.machine);
    storage::firmware(&mut args, &mut machine, &ctx, os)?;
    args.push2("-machine", machine);
    let mut cpu_flags = clock.cpu.clone();
    // Paravirtual EOI is KVM's; TCG's APIC has none to turn on or off.
    if settings.accel == Accel::Kvm
        && let Some(eoi) = def.features.apic_eoi
    {
        cpu_flags.push(format!("kvm-pv-eoi={}", on_off(eoi)));
    }
    if let Some(cpu) = cpu_model(def, settings.accel, &cpu_flags) {
        args.push2("-cpu", cpu);
    }
    args.push2("-m", format!("size={}k", def.memory.div_ceil(1024)));
    args.push2("-smp", smp(&ctx)?);
    args.push2("-rtc", clock.rtc);
    for global in clock.globals {
        args.push2("-global", global);
    }
    if let Some(mib) = def.features.smm_tseg_mib {
        // q35's MCH is where qemu sizes the extended TSEG.
        if ctx.chipset != Chipset::Q35 {
            return Err(ctx.refuse(
                "<features><smm><tseg>",
                "the TSEG size is a q35 machine's; use machine='q35' or remove <tseg>",
            ));
        }
        args.push2("-global", format!("mch.extended-tseg-mbytes={mib}"));
    }
    boot(&mut args, os);
    serials(&mut args, def, settings.serial_logs.as_deref());
    let buses = devices::controllers(&mut args, &mut ctx)?;
    storage::disks(&mut args, &mut ctx, &buses)?;
    net::interfaces(&mut args, &mut ctx)?;
    devices::others(&mut args, &mut ctx, &buses)?;
    args.push("-nodefaults");
    args.push("-no-user-config");
    args.push2("-display", "none");
    args.push("-no-shutdown");
    if def.on_reboot == LifecycleAction::Destroy {
        args.push("-no-reboot");
    }
    // A panic pauses the guest rather than letting qemu act on it: the
    // driver sees GUEST_PANICKED and applies <on_crash> itself, with the
    // guest's memory still there for a dump.
    args.push2("-action", "panic=pause");
    args.push2(
        "-qmp",
        format!("unix:{},server=on,wait=off", escape_commas(&settings.qmp)),
    );
    args.push2(
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    );
    args.push2("-msg", "timestamp=on");
    args.push("-S");
    Ok(args.0)
}

/// Refuses what lxvirt keeps but does not run, naming the first element.
fn refuse_untranslated(ctx: &Ctx<'_>, os: &HvmOs) -> Result<(), CommandError> {
    let explicit_loader = os.loader.as_ref().is_some_and(|l| l.path.is_some());
    let first = ctx.def.unsupported_for_vm().into_iter().find(|element| {
        // <firmware> features guide libvirt's choice of a firmware file;
        // with the file named in <loader> there is nothing to choose.
        !(explicit_loader && element == "<os><firmware>")
    });
    if let Some(element) = first {
        return Err(ctx.refuse(element, "lxvirt keeps it but does not run it"));
    }
    if ctx
        .def
        .numatune
        .as_ref()
        .is_some_and(|n| !n.memnodes.is_empty())
    {
        return Err(ctx.refuse(
            "<numatune><memnode>",
            "the QEMU driver binds no guest NUMA cell to host nodes yet",
        ));
    }
    let devices = &ctx.def.devices;
    let chardevs = devices
        .serials
        .iter()
        .map(|s| ("serial", s.chardev_type, &s.kept))
        .chain(
            devices
                .consoles
                .iter()
                .map(|c| ("console", c.chardev_type, &c.kept)),
        );
    for (name, chardev, kept) in chardevs {
        let what = format!("<{name} type='{chardev}'>");
        if chardev != ChardevType::Pty {
            return Err(ctx.refuse(what, "the QEMU driver runs serial ports on ptys only"));
        }
        ctx.refuse_kept(&what, kept)?;
    }
    if ctx.def.on_crash == LifecycleAction::PreserveRunning {
        // The driver pauses a panicked guest to apply <on_crash>; letting
        // it run on needs another path through the panic handling.
        return Err(ctx.refuse(
            "<on_crash>preserve-running",
            "the QEMU driver pauses a crashed guest; use preserve, destroy or restart",
        ));
    }
    if !ctx.def.devices.filesystems.is_empty() {
        return Err(ctx.refuse(
            "<devices><filesystem>",
            "the QEMU driver does not share host directories (virtiofs) yet",
        ));
    }
    if !ctx.def.devices.hostdevs.is_empty() {
        return Err(ctx.refuse(
            "<devices><hostdev>",
            "the QEMU driver does not pass host devices through yet",
        ));
    }
    Ok(())
}

/// The machine type qemu is asked for.
pub fn machine_type(os: &HvmOs) -> &str {
    os.machine.as_deref().unwrap_or(DEFAULT_MACHINE)
}

/// `-machine TYPE,accel=…` with the features that are machine options.
fn machine(def: &DomainDef, machine_type: &str, accel: Accel) -> String {
    let mut machine = machine_type.to_owned();
    machine.push_str(match accel {
        Accel::Kvm => ",accel=kvm",
        Accel::Tcg => ",accel=tcg",
    });
    if !def.features.acpi {
        machine.push_str(",acpi=off");
    }
    if let Some(vmport) = def.features.vmport {
        machine.push_str(if vmport { ",vmport=on" } else { ",vmport=off" });
    }
    if let Some(smm) = def.features.smm {
        machine.push_str(if smm { ",smm=on" } else { ",smm=off" });
    }
    if let Some(dump) = def.dump_core {
        machine.push_str(if dump {
            ",dump-guest-core=on"
        } else {
            ",dump-guest-core=off"
        });
    }
    machine
}

/// `-cpu`: the host's CPU where KVM runs it, QEMU's richest model under
/// TCG (which cannot pass the host's through), a named model as given
/// (qemu's default model when only features are given), then the
/// `<feature>`s and what the clock's timers add (`clock_flags`). qemu
/// takes libvirt's feature names (it reads `_` as `-`); one it does not
/// know fails the start with qemu's own words.
fn cpu_model(def: &DomainDef, accel: Accel, clock_flags: &[String]) -> Option<String> {
    let cpu = def.cpu.as_ref();
    let model = match (cpu.and_then(|c| c.mode), accel) {
        (Some(CpuMode::HostPassthrough | CpuMode::HostModel), Accel::Kvm) => "host".to_owned(),
        (Some(CpuMode::HostPassthrough | CpuMode::HostModel | CpuMode::Maximum), Accel::Tcg)
        | (Some(CpuMode::Maximum), Accel::Kvm) => "max".to_owned(),
        (Some(CpuMode::Custom) | None, _) => {
            match cpu
                .and_then(|c| c.model.as_ref())
                .and_then(|m| m.name.clone())
            {
                Some(name) => name,
                None if cpu.is_some_and(|c| !c.features.is_empty()) || !clock_flags.is_empty() => {
                    DEFAULT_CPU_MODEL.to_owned()
                }
                None => return None,
            }
        }
    };
    let mut line = model;
    for feature in cpu.map_or(&[][..], |c| &c.features[..]) {
        match feature.policy.unwrap_or(CpuFeaturePolicy::Require) {
            CpuFeaturePolicy::Require | CpuFeaturePolicy::Force => {
                line.push_str(&format!(",+{}", feature.name));
            }
            CpuFeaturePolicy::Disable | CpuFeaturePolicy::Forbid => {
                line.push_str(&format!(",-{}", feature.name));
            }
            // "Use it if the host has it": qemu's model decides.
            CpuFeaturePolicy::Optional => {}
        }
    }
    for flag in clock_flags {
        line.push(',');
        line.push_str(flag);
    }
    Some(line)
}

/// qemu's own default x86 model, the base for features given alone.
const DEFAULT_CPU_MODEL: &str = "qemu64";

/// What `<clock>` and its `<timer>`s make of the command line.
#[derive(Debug, Default)]
struct ClockArgs {
    /// `-rtc`.
    rtc: String,
    /// Appended to `-machine`.
    machine: String,
    /// Added to `-cpu`.
    cpu: Vec<String>,
    /// `-global` options.
    globals: Vec<String>,
}

/// The clock as libvirt's QEMU driver runs it: the RTC's base and its
/// catch-up (`driftfix=slew`), the PIT's lost-tick policy (KVM's in-kernel
/// PIT; TCG's emulated one delivers ticks as it runs, which is `delay`),
/// the HPET on or off, kvmclock as a CPU flag (KVM only: TCG has none).
/// A combination qemu cannot do is refused naming the timer.
fn clock(ctx: &Ctx<'_>, accel: Accel) -> Result<ClockArgs, CommandError> {
    let def = ctx.def;
    let mut clock = ClockArgs {
        rtc: match def.clock.offset {
            ClockOffset::Utc => "base=utc",
            ClockOffset::Localtime => "base=localtime",
        }
        .to_owned(),
        ..ClockArgs::default()
    };
    for timer in &def.clock.timers {
        let element = || format!("<clock><timer name='{}'", timer.name.as_str());
        if timer.catchup.is_some() {
            return Err(ctx.refuse(
                format!("{}><catchup>", element()),
                "qemu takes no catch-up thresholds or rates; remove <catchup>",
            ));
        }
        match (timer.name, timer.frequency, accel) {
            (_, None, _) => {}
            (TimerName::Tsc, Some(hz), Accel::Kvm) => clock.cpu.push(format!("tsc-frequency={hz}")),
            (_, Some(hz), _) => {
                return Err(ctx.refuse(
                    format!("{} frequency='{hz}'>", element()),
                    "KVM sets the rate of the TSC only; TCG's follows the host clock",
                ));
            }
        }
        match (timer.name, timer.present, timer.tickpolicy) {
            (TimerName::Rtc, Some(false), _) | (TimerName::Pit, Some(false), _) => {
                return Err(ctx.refuse(
                    format!("{} present='no'>", element()),
                    "every x86 machine qemu makes has it",
                ));
            }
            (TimerName::Rtc, _, None | Some(TickPolicy::Delay)) => {}
            (TimerName::Rtc, _, Some(TickPolicy::Catchup)) => clock.rtc.push_str(",driftfix=slew"),
            (TimerName::Pit, _, None) => {}
            (TimerName::Pit, _, Some(policy)) => match (accel, policy) {
                (Accel::Tcg, TickPolicy::Delay) => {}
                (Accel::Kvm, TickPolicy::Delay | TickPolicy::Discard) => clock
                    .globals
                    .push(format!("kvm-pit.lost_tick_policy={}", policy.as_str())),
                (Accel::Kvm, TickPolicy::Catchup) => {
                    clock.globals.push("kvm-pit.lost_tick_policy=slew".into())
                }
                _ => {
                    return Err(ctx.refuse(
                        format!("{} tickpolicy='{}'>", element(), policy.as_str()),
                        "qemu's PIT cannot do it here",
                    ));
                }
            },
            (TimerName::Hpet, present, None) => match present {
                Some(true) => clock.machine.push_str(",hpet=on"),
                Some(false) => clock.machine.push_str(",hpet=off"),
                None => {}
            },
            (TimerName::Kvmclock, present, None) => {
                if accel == Accel::Kvm
                    && let Some(present) = present
                {
                    clock.cpu.push(format!("kvmclock={}", on_off(present)));
                }
            }
            (TimerName::Hypervclock, Some(false) | None, None) => {}
            (TimerName::Hypervclock, Some(true), None) => {
                return Err(ctx.refuse(
                    format!("{} present='yes'>", element()),
                    "it needs the Hyper-V enlightenments, not run yet",
                ));
            }
            (TimerName::Tsc, _, None) => {}
            (_, _, Some(policy)) => {
                return Err(ctx.refuse(
                    format!("{} tickpolicy='{}'>", element(), policy.as_str()),
                    "only the RTC and the PIT take a tick policy",
                ));
            }
        }
    }
    Ok(clock)
}

/// `-smp`: vCPUs online at start, the maximum, and the topology.
fn smp(ctx: &Ctx<'_>) -> Result<String, CommandError> {
    let vcpu = &ctx.def.vcpu;
    let mut smp = format!(
        "cpus={},maxcpus={}",
        vcpu.current.unwrap_or(vcpu.count),
        vcpu.count
    );
    if let Some(topology) = ctx.def.cpu.as_ref().and_then(|c| c.topology.as_ref()) {
        // qemu 7.2 knows clusters on x86 only as one per die; more stop
        // it with an error that names no element.
        if let Some(clusters) = topology.clusters.filter(|&n| n > 1) {
            return Err(ctx.refuse(
                format!("<cpu><topology clusters='{clusters}'>"),
                "qemu 7.2 has no CPU clusters on x86; use clusters='1' or leave it out",
            ));
        }
        for (key, value) in [
            ("sockets", topology.sockets),
            ("dies", topology.dies),
            ("clusters", topology.clusters),
            ("cores", topology.cores),
            ("threads", topology.threads),
        ] {
            if let Some(value) = value {
                smp.push_str(&format!(",{key}={value}"));
            }
        }
    }
    Ok(smp)
}

/// A kernel given: qemu loads it (with its initrd and command line) and
/// the firmware's boot order does not matter; otherwise `<boot dev>` in
/// document order.
fn boot(args: &mut Args, os: &HvmOs) {
    if let Some(kernel) = &os.kernel {
        args.push2("-kernel", kernel.as_os_str());
        if let Some(initrd) = &os.initrd {
            args.push2("-initrd", initrd.as_os_str());
        }
        if let Some(cmdline) = &os.cmdline {
            args.push2("-append", cmdline.as_str());
        }
        return;
    }
    let order: String = os
        .boot
        .iter()
        .map(|dev| match dev {
            BootDev::Hd => 'c',
            BootDev::Cdrom => 'd',
            BootDev::Network => 'n',
            BootDev::Fd => 'a',
        })
        .collect();
    let mut boot = Vec::new();
    if !order.is_empty() {
        boot.push(format!("order={order}"));
    }
    if let Some(menu) = &os.bootmenu {
        if let Some(enable) = menu.enable {
            boot.push(format!("menu={}", on_off(enable)));
        }
        if let (Some(true), Some(timeout)) = (menu.enable, menu.timeout) {
            boot.push(format!("splash-time={timeout}"));
        }
    }
    if !boot.is_empty() {
        args.push2("-boot", boot.join(","));
    }
}

/// Each `<serial type='pty'>` an ISA serial port on a pty of its own; a
/// `<console>` alone gets the serial port 0 it stands for (as libvirt
/// adds one). A pty drops what is written while nobody holds it, so the
/// log is how a boot's first lines are kept.
fn serials(args: &mut Args, def: &DomainDef, logs: Option<&Path>) {
    let mut ports: Vec<u32> = def.devices.serials.iter().map(|s| s.port).collect();
    if ports.is_empty() && !def.devices.consoles.is_empty() {
        ports.push(0);
    }
    for port in ports {
        let log = logs.map_or(String::new(), |dir| {
            format!(
                ",logfile={}",
                escape_commas(&dir.join(format!("serial{port}.log")))
            )
        });
        args.push2("-chardev", format!("pty,id=charserial{port}{log}"));
        args.push2(
            "-device",
            format!("isa-serial,chardev=charserial{port},id=serial{port},index={port}"),
        );
    }
}

/// qemu's option syntax doubles a comma inside a value.
fn escape_commas(path: &Path) -> String {
    escape(&path.display().to_string())
}

/// A value inside a `key=value,…` option.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

#[derive(Debug, Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, arg: impl Into<OsString>) {
        self.0.push(arg.into());
    }

    fn push2(&mut self, option: &str, value: impl Into<OsString>) {
        self.push(option);
        self.push(value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Debian's ovmf.
    const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

    pub(super) fn settings(accel: Accel) -> Settings {
        Settings::new(accel, "/run/lxvirt/qemu/vm,1/qmp.sock".into())
    }

    pub(super) fn vm(body: &str) -> DomainDef {
        DomainDef::from_xml(&format!(
            "<domain type='qemu'><name>vm1</name><uuid>ad4f5061-7283-4945-b067-cd3e4f506172</uuid>\
             <memory unit='MiB'>256</memory>{body}</domain>"
        ))
        .unwrap()
    }

    fn line(def: &DomainDef, accel: Accel) -> Vec<String> {
        command_line(def, &settings(accel))
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    /// The line for `def`, as strings.
    pub(super) fn line_with(def: &DomainDef, settings: &Settings) -> Vec<String> {
        command_line(def, settings)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    /// Every value after `option`, in order.
    pub(super) fn values<'a>(args: &'a [String], option: &str) -> Vec<&'a str> {
        (0..args.len().saturating_sub(1))
            .filter(|&i| args[i] == option)
            .map(|i| args[i + 1].as_str())
            .collect()
    }

    /// Why `def` does not run with `settings`.
    pub(super) fn refusal(def: &DomainDef, settings: &Settings) -> String {
        command_line(def, settings).unwrap_err().to_string()
    }

    /// A VM with `devices` in `<devices>` on machine `machine`.
    pub(super) fn with_devices(machine: &str, devices: &str) -> DomainDef {
        vm(&format!(
            "<vcpu>1</vcpu><os><type machine='{machine}'>hvm</type></os><devices>{devices}</devices>"
        ))
    }

    /// The value after `option`, which must appear once.
    pub(super) fn value<'a>(args: &'a [String], option: &str) -> &'a str {
        let at: Vec<usize> = (0..args.len()).filter(|&i| args[i] == option).collect();
        assert_eq!(at.len(), 1, "{option} in {args:?}");
        &args[at[0] + 1]
    }

    const DIRECT: &str = "<vcpu>2</vcpu><os><type arch='x86_64' machine='q35'>hvm</type>\
        <kernel>/boot/vmlinuz</kernel><initrd>/boot/initrd.img</initrd>\
        <cmdline>console=ttyS0 quiet</cmdline></os><features><acpi/><apic/></features>\
        <devices><serial type='pty'><target port='0'/></serial>\
        <console type='pty'><target type='serial' port='0'/></console></devices>";

    #[test]
    fn a_direct_kernel_guest_starts_paused_with_its_kernel_and_serial_console() {
        let args = line(&vm(DIRECT), Accel::Tcg);
        assert_eq!(value(&args, "-name"), "guest=vm1,debug-threads=on");
        assert_eq!(
            value(&args, "-uuid"),
            "ad4f5061-7283-4945-b067-cd3e4f506172"
        );
        assert_eq!(value(&args, "-machine"), "q35,accel=tcg");
        assert_eq!(value(&args, "-m"), "size=262144k");
        assert_eq!(value(&args, "-smp"), "cpus=2,maxcpus=2");
        assert_eq!(value(&args, "-kernel"), "/boot/vmlinuz");
        assert_eq!(value(&args, "-initrd"), "/boot/initrd.img");
        assert_eq!(value(&args, "-append"), "console=ttyS0 quiet");
        assert_eq!(value(&args, "-chardev"), "pty,id=charserial0");
        assert_eq!(
            value(&args, "-device"),
            "isa-serial,chardev=charserial0,id=serial0,index=0"
        );
        assert_eq!(
            value(&args, "-qmp"),
            "unix:/run/lxvirt/qemu/vm,,1/qmp.sock,server=on,wait=off"
        );
        assert!(value(&args, "-sandbox").starts_with("on,"));
        for flag in ["-S", "-nodefaults", "-no-user-config", "-no-shutdown"] {
            assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
        }
        // on_reboot defaults to restart: qemu resets the guest itself.
        assert!(!args.iter().any(|a| a == "-no-reboot"));
        assert!(!args.iter().any(|a| a == "-boot"));
        assert!(!args.iter().any(|a| a == "-cpu"));
    }

    #[test]
    fn kvm_cpu_modes_topology_and_machine_features() {
        let def = vm(
            "<vcpu current='2'>4</vcpu><os><type machine='pc'>hvm</type><boot dev='cdrom'/><boot dev='hd'/></os>\
             <features><vmport state='off'/><smm state='on'/></features>\
             <cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='2' threads='2'/></cpu>\
             <clock offset='localtime'/><on_reboot>destroy</on_reboot>",
        );
        let args = line(&def, Accel::Kvm);
        assert_eq!(
            value(&args, "-machine"),
            "pc,accel=kvm,acpi=off,vmport=off,smm=on"
        );
        assert_eq!(value(&args, "-cpu"), "host");
        assert_eq!(
            value(&args, "-smp"),
            "cpus=2,maxcpus=4,sockets=1,dies=1,cores=2,threads=2"
        );
        assert_eq!(value(&args, "-boot"), "order=dc");
        assert_eq!(value(&args, "-rtc"), "base=localtime");
        assert!(args.iter().any(|a| a == "-no-reboot"));
        // Under TCG the host's CPU cannot be passed through.
        assert_eq!(value(&line(&def, Accel::Tcg), "-cpu"), "max");
        let custom = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <cpu mode='custom'><model fallback='allow'>Skylake-Client</model></cpu>");
        assert_eq!(value(&line(&custom, Accel::Kvm), "-cpu"), "Skylake-Client");
    }

    #[test]
    fn cpu_features_are_added_to_the_model() {
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <cpu mode='custom'><model>Skylake-Client</model>\
             <feature policy='require' name='vmx'/><feature name='pcid'/>\
             <feature policy='disable' name='lahf_lm'/><feature policy='forbid' name='x2apic'/>\
             <feature policy='force' name='invtsc'/><feature policy='optional' name='pdpe1gb'/></cpu>");
        assert_eq!(
            value(&line(&def, Accel::Kvm), "-cpu"),
            "Skylake-Client,+vmx,+pcid,-lahf_lm,-x2apic,+invtsc"
        );
        // host-passthrough under TCG: the richest model, with the features.
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <cpu mode='host-passthrough'><feature policy='disable' name='vmx'/></cpu>");
        assert_eq!(value(&line(&def, Accel::Tcg), "-cpu"), "max,-vmx");
        // Features alone go on qemu's default model.
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <cpu><feature name='sse4.2'/></cpu>");
        assert_eq!(value(&line(&def, Accel::Tcg), "-cpu"), "qemu64,+sse4.2");
    }

    #[test]
    fn clock_timers_as_libvirt_exports_them() {
        // What virsh dumpxml shows for an ordinary KVM guest.
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/>\
             <timer name='pit' tickpolicy='delay'/><timer name='hpet' present='no'/>\
             <timer name='kvmclock' present='yes'/></clock>");
        let kvm = line(&def, Accel::Kvm);
        assert_eq!(value(&kvm, "-rtc"), "base=utc,driftfix=slew");
        assert_eq!(value(&kvm, "-global"), "kvm-pit.lost_tick_policy=delay");
        assert!(value(&kvm, "-machine").ends_with(",hpet=off"), "{kvm:?}");
        assert_eq!(value(&kvm, "-cpu"), "qemu64,kvmclock=on");
        // TCG: its emulated PIT delays by itself, and it has no kvmclock.
        let tcg = line(&def, Accel::Tcg);
        assert!(values(&tcg, "-global").is_empty(), "{tcg:?}");
        assert!(values(&tcg, "-cpu").is_empty(), "{tcg:?}");
        assert_eq!(value(&tcg, "-rtc"), "base=utc,driftfix=slew");
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <clock offset='utc'><timer name='pit' tickpolicy='catchup'/></clock>");
        assert_eq!(
            value(&line(&def, Accel::Kvm), "-global"),
            "kvm-pit.lost_tick_policy=slew"
        );
        for (timer, named) in [
            (
                "<timer name='pit' tickpolicy='catchup'/>",
                "<clock><timer name='pit' tickpolicy='catchup'>",
            ),
            (
                "<timer name='rtc' tickpolicy='merge'/>",
                "<clock><timer name='rtc' tickpolicy='merge'>",
            ),
            (
                "<timer name='rtc' present='no'/>",
                "<clock><timer name='rtc' present='no'>",
            ),
            (
                "<timer name='hypervclock' present='yes'/>",
                "<clock><timer name='hypervclock' present='yes'>",
            ),
        ] {
            let def = vm(&format!(
                "<vcpu>1</vcpu><os><type>hvm</type></os><clock offset='utc'>{timer}</clock>"
            ));
            let error = refusal(&def, &settings(Accel::Tcg));
            assert!(
                error.starts_with(&format!("domain 'vm1': {named} cannot run yet")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_console_alone_gets_its_serial_port() {
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os>\
             <devices><console type='pty'><target type='serial' port='0'/></console></devices>");
        let args = line(&def, Accel::Tcg);
        assert_eq!(value(&args, "-chardev"), "pty,id=charserial0");
    }

    #[test]
    fn what_cannot_run_yet_is_refused_by_name() {
        let def = vm("<vcpu>1</vcpu><os><type>hvm</type></os><devices>\
             <graphics type='spice' autoport='yes'/></devices>");
        let error = command_line(&def, &settings(Accel::Tcg)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "domain 'vm1': <graphics type='spice'> cannot run yet (the QEMU driver serves VNC displays only); remove it to start the domain (the definition keeps it)"
        );
        let kept = vm(
            "<vcpu>1</vcpu><os><type>hvm</type></os><devices><tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm></devices>",
        );
        let error = command_line(&kept, &settings(Accel::Tcg)).unwrap_err();
        assert!(
            error.to_string().contains("<tpm model='tpm-crb'>")
                && error.to_string().contains("keeps it but does not run it"),
            "{error}"
        );
        let container = DomainDef::from_xml(
            "<domain type='lxc'><name>c</name><memory unit='MiB'>64</memory><os><type>exe</type><init>/bin/sh</init></os></domain>",
        )
        .unwrap();
        assert!(matches!(
            command_line(&container, &settings(Accel::Tcg)),
            Err(CommandError::NotVm { .. })
        ));
    }

    /// Parts of libvirt's vocabulary that lxvirt keeps: each is refused at
    /// start, naming the element.
    #[test]
    fn kept_vocabulary_is_refused_by_name() {
        for (devices, named) in [
            ("<interface type='user'/>", "<interface type='user'>"),
            (
                "<interface type='vhostuser'><source type='unix' path='/run/v.sock' mode='client'/></interface>",
                "<interface type='vhostuser'>",
            ),
            (
                "<interface type='ethernet'><target dev='tap0'/><script path='/etc/qemu-ifup'/></interface>",
                "<script>",
            ),
            (
                "<disk type='network'><source protocol='nbd' name='x'><host name='h'/></source><target dev='vda'/></disk>",
                "<disk type='network'>",
            ),
            (
                "<disk type='file' device='floppy'><source file='/f.img'/><target dev='fda' bus='fdc'/></disk>",
                "'fda'",
            ),
            (
                "<disk><source file='/d.img' startupPolicy='optional'/><target dev='vda'/></disk>",
                "<disk dev='vda'><source>",
            ),
            (
                "<disk type='file' device='cdrom'><target dev='sda' bus='sata' tray='open'/></disk>",
                "<target tray='open'>",
            ),
        ] {
            let def = with_devices("q35", devices);
            let error = refusal(&def, &settings(Accel::Kvm));
            assert!(
                error.contains(named) && error.contains("cannot run yet"),
                "{devices}: {error}"
            );
        }
        let def = example("kvm-kept-vocabulary.xml");
        assert!(refusal(&def, &prepared(&def)).contains("keeps it but does not run it"));
    }

    /// Vocabulary of newer libvirt releases: applied where qemu 7.2 has
    /// it, refused by name where it has not.
    #[test]
    fn newer_libvirt_vocabulary_is_applied_or_refused_by_name() {
        let topology = |clusters: u32| {
            vm(&format!(
                "<vcpu>4</vcpu><os><type machine='q35'>hvm</type></os>\
                 <cpu><topology sockets='1' dies='1' clusters='{clusters}' cores='4' threads='1'/></cpu>"
            ))
        };
        assert_eq!(
            value(&line(&topology(1), Accel::Tcg), "-smp"),
            "cpus=4,maxcpus=4,sockets=1,dies=1,clusters=1,cores=4,threads=1"
        );
        let error = refusal(&topology(2), &settings(Accel::Tcg));
        assert!(error.contains("<cpu><topology clusters='2'>"), "{error}");

        let disk = |driver: &str, bus: &str| {
            with_devices(
                "q35",
                &format!(
                    "<disk type='file'><driver type='raw' {driver}/><source file='/a.img'/>\
                     <target dev='{}da' bus='{bus}'/></disk>",
                    if bus == "virtio" { "v" } else { "s" }
                ),
            )
        };
        let args = line(&disk("queues='4'", "virtio"), Accel::Tcg);
        assert!(
            values(&args, "-device")
                .iter()
                .any(|d| d.starts_with("virtio-blk-pci,") && d.ends_with(",num-queues=4")),
            "{args:?}"
        );
        for (def, named) in [
            (disk("queues='4'", "sata"), "with <driver queues>"),
            (disk("iothread='1'", "virtio"), "<driver iothread='1'>"),
            (
                disk("discard_no_unref='on'", "virtio"),
                "<driver discard_no_unref='on'>",
            ),
            (
                vm("<vcpu>1</vcpu><os><type machine='q35'>hvm</type></os>\
                    <on_crash>preserve-running</on_crash>"),
                "<on_crash>preserve-running",
            ),
            (
                with_devices(
                    "q35",
                    "<video><model type='virtio'/><acpi index='2'/></video>",
                ),
                "<acpi>",
            ),
            (
                with_devices(
                    "q35",
                    "<filesystem type='mount'><driver type='mtp'/><source dir='/srv'/>\
                     <target dir='share'/></filesystem>",
                ),
                "<filesystem",
            ),
        ] {
            let error = refusal(&def, &settings(Accel::Tcg));
            assert!(error.contains(named), "{named}: {error}");
        }
        let def = with_devices(
            "q35",
            "<disk type='file'><driver type='qcow2'/><source file='/a.qcow2'/>\
             <backingStore type='network'><format type='raw'/><source protocol='nbd' name='b'>\
             <host name='h'/></source></backingStore><target dev='vda' bus='virtio'/></disk>",
        );
        let error = refusal(&def, &settings(Accel::Tcg));
        assert!(error.contains("<backingStore type='network'>"), "{error}");
        // <metadata_cache> is named by the driver holding it.
        let def = with_devices(
            "q35",
            "<disk type='file'><driver type='qcow2'><metadata_cache><max_size unit='KiB'>64</max_size>\
             </metadata_cache></driver><source file='/a.qcow2'/><target dev='vda' bus='virtio'/></disk>",
        );
        let error = refusal(&def, &settings(Accel::Tcg));
        assert!(error.contains("<driver><metadata_cache>"), "{error}");
    }

    /// The example of newer vocabulary runs once what the driver refuses
    /// is taken out, each refusal naming its element in turn.
    #[test]
    fn the_newer_vocabulary_example_is_refused_by_name_then_runs() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../xml-schemas/examples/kvm-newer-vocabulary.xml");
        let mut text = std::fs::read_to_string(path).unwrap();
        for (named, remove) in [
            (
                "<numatune><memnode>",
                "<memnode cellid='0' mode='preferred' nodeset='0'/>",
            ),
            (
                "<on_crash>preserve-running",
                "<on_crash>preserve-running</on_crash>",
            ),
            (
                "<timer name='rtc'><catchup>",
                "<catchup threshold='10' slew='120' limit='10000'/>",
            ),
            ("<video><acpi>", "<acpi index='5'/>"),
            ("blob='on'", " blob='on'"),
            (
                "<sound model='virtio'>",
                "<sound model='virtio' streams='2'/>",
            ),
        ] {
            let def = DomainDef::from_xml(&text).unwrap();
            let error = refusal(&def, &prepared(&def));
            assert!(error.contains(named), "{named}: {error}");
            text = text.replace(remove, "");
        }
        let def = DomainDef::from_xml(&text).unwrap();
        let args = line_with(&def, &prepared(&def));
        assert_eq!(
            value(&args, "-cpu"),
            "host,tsc-frequency=3000000000,kvm-pv-eoi=on"
        );
        assert!(value(&args, "-smp").contains(",clusters=1,"));
    }

    /// Typed vocabulary of newer libvirt releases that qemu 7.2 runs.
    #[test]
    fn newer_machine_and_cpu_options_are_applied() {
        let def = DomainDef::from_xml(
            "<domain type='kvm'><name>vm1</name><memory dumpCore='off' unit='MiB'>256</memory>\
             <vcpu>1</vcpu><os><type machine='q35'>hvm</type></os>\
             <features><apic eoi='on'/><smm state='on'><tseg unit='MiB'>48</tseg></smm></features>\
             <clock offset='utc'><timer name='tsc' frequency='2500000000'/></clock></domain>",
        )
        .unwrap();
        let kvm = line(&def, Accel::Kvm);
        assert_eq!(
            value(&kvm, "-machine"),
            "q35,accel=kvm,acpi=off,smm=on,dump-guest-core=off"
        );
        assert_eq!(
            value(&kvm, "-cpu"),
            "qemu64,tsc-frequency=2500000000,kvm-pv-eoi=on"
        );
        assert!(values(&kvm, "-global").contains(&"mch.extended-tseg-mbytes=48"));
        // TCG has no paravirtual EOI, and its TSC follows the host.
        let error = refusal(&def, &settings(Accel::Tcg));
        assert!(
            error.contains("<timer name='tsc' frequency='2500000000'>"),
            "{error}"
        );

        let pc = vm("<vcpu>1</vcpu><os><type machine='pc'>hvm</type></os>\
             <features><smm><tseg unit='MiB'>16</tseg></smm></features>");
        assert!(refusal(&pc, &settings(Accel::Tcg)).contains("<smm><tseg>"));
        let catchup = vm("<vcpu>1</vcpu><os><type machine='q35'>hvm</type></os>\
             <clock offset='utc'><timer name='rtc' tickpolicy='catchup'><catchup slew='100'/></timer></clock>");
        assert!(refusal(&catchup, &settings(Accel::Kvm)).contains("<timer name='rtc'><catchup>"));

        let devices = with_devices(
            "q35",
            "<disk type='file' model='virtio-transitional'><source file='/a.img'/>\
             <target dev='vda' bus='virtio'/></disk>",
        );
        let args = line(&devices, Accel::Tcg);
        assert!(
            values(&args, "-device")
                .iter()
                .any(|d| d.starts_with("virtio-blk-pci-transitional,")),
            "{args:?}"
        );
        for (def, named) in [
            (
                with_devices(
                    "q35",
                    "<disk type='file' model='virtio'><source file='/a.img'/>\
                     <target dev='sda' bus='sata'/></disk>",
                ),
                "with model='virtio'",
            ),
            (
                with_devices("q35", "<video><model type='virtio' blob='on'/></video>"),
                "blob='on'",
            ),
            (
                with_devices("q35", "<sound model='ich9' streams='2'/>"),
                "with streams or multichannel",
            ),
            (
                with_devices("q35", "<sound model='ich9'><driver iommu='on'/></sound>"),
                "<sound model='ich9'><driver>",
            ),
            (
                vm(
                    "<vcpu>1</vcpu><numatune><memnode cellid='0' nodeset='0'/></numatune>\
                    <os><type machine='q35'>hvm</type></os>",
                ),
                "<numatune><memnode>",
            ),
            (
                with_devices(
                    "q35",
                    "<serial type='spiceport'><source channel='c'/><target port='0'/></serial>",
                ),
                "<serial type='spiceport'>",
            ),
            (
                with_devices(
                    "q35",
                    "<serial type='pty'><log file='/var/log/s.log'/><target port='0'/></serial>",
                ),
                "<serial type='pty'><log>",
            ),
            (
                vm("<vcpu>1</vcpu><os><type machine='q35'>hvm</type>\
                    <nvram type='network'><source protocol='nbd' name='vars'><host name='h'/></source></nvram></os>"),
                "<os><nvram type='network'>",
            ),
            (
                with_devices(
                    "q35",
                    "<controller type='pci' model='pcie-root-port'><target><node>1</node></target></controller>",
                ),
                "<target><node>",
            ),
            (
                with_devices(
                    "q35",
                    "<interface type='network'><source network='default'/><model type='usb-net'/></interface>",
                ),
                "<model type='usb-net'>",
            ),
        ] {
            let error = refusal(&def, &prepared(&def));
            assert!(error.contains(named), "{named}: {error}");
        }
    }

    fn example(name: &str) -> DomainDef {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../xml-schemas/examples")
            .join(name);
        DomainDef::from_xml(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// What the driver prepares for `def`: a tap per interface, a socket
    /// per channel and for VNC, an overlay per transient disk.
    fn prepared(def: &DomainDef) -> Settings {
        let mut settings = settings(Accel::Kvm);
        settings.tap_fds = (0..def.devices.interfaces.len())
            .map(|i| Some(30 + i as i32))
            .collect();
        settings.channel_sockets = (0..def.devices.channels.len())
            .map(|i| {
                Some(PathBuf::from(format!(
                    "/run/lxvirt/qemu/vm/channel{i}.sock"
                )))
            })
            .collect();
        settings.disk_overlays = def
            .devices
            .disks
            .iter()
            .map(|d| d.transient.then(|| PathBuf::from("/run/overlay.qcow2")))
            .collect();
        settings.vnc_socket = Some("/run/lxvirt/qemu/vm/vnc.sock".into());
        settings
    }

    /// libvirt's export runs as it is (its `<firmware>` features only
    /// guided libvirt's choice of the files its `<loader>` names).
    #[test]
    fn the_libvirt_export_runs() {
        let def = example("kvm-libvirt-export.xml");
        let args = line_with(&def, &prepared(&def));
        assert!(
            value(&args, "-machine").starts_with(
                "pc-q35-8.2,accel=kvm,vmport=off,smm=on,hpet=off,pflash0=pflash0,pflash1=pflash1"
            ),
            "{args:?}"
        );
        let devices = values(&args, "-device");
        for expected in [
            "virtio-blk-pci,drive=disk0,id=disk-vda,bootindex=1,write-cache=on",
            "ide-cd,bus=ide.0,drive=disk1,id=disk-sda",
            "virtio-blk-pci,drive=disk2,id=disk-vdb,serial=shared-0001,share-rw=on,write-cache=on",
            "virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:3e:8a:11",
            "usb-tablet,bus=usb0.0,id=input0",
            "virtio-vga,id=video0,max_outputs=1",
            "ich9-intel-hda,id=sound0",
            "virtio-balloon-pci,id=balloon0,guest-stats-polling-interval=5",
            "virtio-rng-pci,rng=objrng0,id=rng0,max-bytes=1024,period=1000",
            "pvpanic-pci,id=panic0",
        ] {
            assert!(devices.contains(&expected), "{expected} in {devices:?}");
        }
        assert_eq!(values(&args, "-action"), ["watchdog=reset", "panic=pause"]);
    }

    /// The i440fx example keeps what lxvirt does not run (`<bios>`, CPU
    /// vendor and NUMA, a PCI host device, an interface's `<driver>`);
    /// without those it runs.
    #[test]
    fn the_i440fx_example_runs_without_what_is_kept() {
        let def = example("qemu-i440fx-bios.xml");
        assert!(
            refusal(&def, &prepared(&def)).contains("<os><bios> cannot run yet"),
            "{}",
            refusal(&def, &prepared(&def))
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../xml-schemas/examples/qemu-i440fx-bios.xml");
        let mut text = std::fs::read_to_string(path).unwrap();
        for kept in [
            "<bios useserial='yes' rebootTimeout='0'/>",
            "<vendor>AMD</vendor>",
            "<driver name='qemu'/>",
        ] {
            text = text.replace(kept, "");
        }
        for (start, end) in [("<numa>", "</numa>"), ("<hostdev ", "</hostdev>")] {
            let a = text.find(start).unwrap();
            let b = text.find(end).unwrap() + end.len();
            text.replace_range(a..b, "");
        }
        let def = DomainDef::from_xml(&text).unwrap();
        let args = line_with(&def, &prepared(&def));
        let devices = values(&args, "-device");
        for expected in [
            "ide-hd,bus=ide.0,unit=0,drive=disk0,id=disk-hda,write-cache=on",
            "ich9-usb-ehci1,id=usb0",
            "ich9-usb-uhci1,id=usb0-uhci1,masterbus=usb0.0,firstport=0",
            "rtl8139,netdev=hostnet0,id=net0,mac=52:54:00:01:02:03",
            "cirrus-vga,id=video0,vgamem_mb=16",
            "pvpanic,id=panic0",
        ] {
            assert!(devices.contains(&expected), "{expected} in {devices:?}");
        }
        // The channel's alias names it; VNC's TCP listen is the socket.
        assert!(devices.contains(&"virtserialport,bus=virtio-serial0.0,chardev=charchannel0,id=channel0,name=org.qemu.guest_agent.0"), "{devices:?}");
        assert_eq!(value(&args, "-vnc"), "unix:/run/lxvirt/qemu/vm/vnc.sock");
        assert_eq!(value(&args, "-boot"), "order=dc,menu=off");
    }

    /// The Windows example is refused: Hyper-V enlightenments, a TPM and
    /// USB redirection are kept, not run; SPICE (its display, channel and
    /// audio) and a SCSI controller's I/O thread are not translated.
    #[test]
    fn the_windows_example_is_refused_by_name() {
        let def = example("kvm-windows-uefi.xml");
        let error = refusal(&def, &prepared(&def));
        assert!(
            error.starts_with("domain 'win11': <features><hyperv mode='custom'> cannot run yet"),
            "{error}"
        );
    }

    /// A tap device for a test, open (and inherited by children: not
    /// close-on-exec) as long as it lives; the kernel removes it on close.
    struct Tap(std::fs::File);

    fn open_tap() -> Tap {
        use std::os::fd::AsRawFd;
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        // struct ifreq: a name (empty: the kernel picks tapN), then flags.
        let mut ifreq = [0u8; 40];
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
        ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes on
        // x86_64), which `ifreq` is, alive for the call.
        let done = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifreq.as_mut_ptr()) };
        assert_eq!(done, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        // SAFETY: clears the descriptor flags of a descriptor we own.
        let done = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
        assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
        Tap(file)
    }

    fn qemu_img(args: &[&str]) {
        let status = std::process::Command::new("qemu-img")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("qemu-img (Debian's qemu-utils)");
        assert!(status.success(), "qemu-img {args:?}");
    }

    /// Starts qemu on the line of `def` and connects to its QMP socket.
    async fn start(
        def: &DomainDef,
        settings: &Settings,
        dir: &Path,
    ) -> (
        crate::qemu::process::test_support::Guard,
        crate::qemu::qmp::Qmp,
    ) {
        use crate::qemu::process::test_support::{Guard, QEMU};
        let launch = crate::qemu::process::Launch {
            emulator: QEMU.into(),
            args: command_line(def, settings).unwrap(),
            uid: 0,
            gid: 0,
            cgroup_procs: Vec::new(),
            pidfile: dir.join("qemu.pid"),
            log: dir.join("qemu.log"),
            exec_label: None,
            keep_fds: settings.tap_fds.iter().flatten().copied().collect(),
        };
        let pid = match crate::qemu::process::launch(&launch, &settings.qmp) {
            Ok(pid) => pid,
            Err(e) => panic!("{e}\n{:?}", launch.args),
        };
        let guard = Guard(pid);
        let (client, _events) = crate::qemu::qmp::Qmp::connect(&settings.qmp).await.unwrap();
        (guard, client)
    }

    /// The devices with an id, by id, with their type.
    async fn peripherals(
        client: &crate::qemu::qmp::Qmp,
    ) -> std::collections::BTreeMap<String, String> {
        client
            .qom_list("/machine/peripheral")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|p| {
                let kind = p.kind.strip_prefix("child<")?.strip_suffix('>')?;
                Some((p.name, kind.to_owned()))
            })
            .collect()
    }

    /// qemu itself takes the line: a q35 guest with UEFI flash, a disk on
    /// a qcow2 chain, a transient disk, SATA and SCSI drives, two NICs on
    /// taps and every other translated device starts, answers QMP in
    /// `prelaunch` and shows what the definition asked for.
    #[tokio::test]
    async fn qemu_accepts_the_line() {
        use crate::qemu::process::test_support::qemu_missing;
        if qemu_missing() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = |name: &str| dir.join(name).display().to_string();
        qemu_img(&["create", "-q", "-f", "raw", &p("base.raw"), "1M"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &p("base.raw"),
            "-F",
            "raw",
            &p("mid.qcow2"),
        ]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &p("mid.qcow2"),
            "-F",
            "qcow2",
            &p("top.qcow2"),
        ]);
        for raw in ["plain.raw", "shared.raw", "cd.iso", "scsi.raw"] {
            qemu_img(&["create", "-q", "-f", "raw", &p(raw), "1M"]);
        }
        // What the driver does for <transient/>.
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &p("plain.raw"),
            "-F",
            "raw",
            &p("overlay.qcow2"),
        ]);
        let ovmf = Path::new(OVMF_CODE).exists() && Path::new(OVMF_VARS).exists();
        let firmware = if ovmf {
            std::fs::copy(OVMF_VARS, dir.join("VARS.fd")).unwrap();
            format!(
                "<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader><nvram>{}</nvram>",
                p("VARS.fd")
            )
        } else {
            println!("partly skipped: needs Debian's ovmf for the flash firmware");
            String::new()
        };
        let def = vm(&format!(
            "<vcpu current='1'>2</vcpu><os><type machine='q35'>hvm</type>{firmware}</os>\
             <features><acpi/><apic/><vmport state='off'/></features>\
             <cpu mode='maximum'><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>\
             <devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>\
               <source file='{top}'/>\
               <backingStore type='file'><format type='qcow2'/><source file='{mid}'/>\
                 <backingStore type='file'><format type='raw'/><source file='{base}'/><backingStore/></backingStore>\
               </backingStore>\
               <target dev='vda' bus='virtio'/><boot order='1'/><serial>s,1</serial></disk>\
             <disk type='file' device='disk'><driver type='raw'/><source file='{plain}'/>\
               <target dev='vdb' bus='virtio'/><transient/></disk>\
             <disk type='file' device='disk'><driver type='raw' cache='none' io='native'/><source file='{shared}'/>\
               <target dev='vdc' bus='virtio'/><shareable/><alias name='ua-shared'/></disk>\
             <disk type='file' device='cdrom'><driver type='raw'/><source file='{iso}'/>\
               <target dev='sda' bus='sata'/><readonly/></disk>\
             <disk type='file' device='cdrom'><target dev='sdb' bus='sata'/><readonly/></disk>\
             <disk type='file' device='disk'><driver type='raw'/><source file='{scsi}'/>\
               <target dev='sdc' bus='scsi'/><readonly/></disk>\
             <controller type='usb' index='0' model='qemu-xhci' ports='15'/>\
             <controller type='pci' index='0' model='pcie-root'/>\
             <controller type='pci' index='1' model='pcie-root-port'/>\
             <controller type='sata' index='0'/>\
             <controller type='virtio-serial' index='0'/>\
             <controller type='scsi' index='0' model='virtio-scsi'><driver queues='2'/></controller>\
             <interface type='bridge'><mac address='52:54:00:aa:bb:01'/><source bridge='br0'/>\
               <model type='virtio'/><mtu size='1400'/></interface>\
             <interface type='network'><mac address='52:54:00:aa:bb:02'/><source network='default'/>\
               <model type='e1000e'/><boot order='2'/></interface>\
             <serial type='pty'><target port='0'/></serial>\
             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
             <input type='tablet' bus='usb'/><input type='mouse' bus='ps2'/>\
             <input type='keyboard' bus='virtio'/>\
             <graphics type='vnc' port='-1' autoport='yes'><listen type='address'/></graphics>\
             <sound model='ich9'/><audio id='1' type='none'/>\
             <video><model type='virtio' heads='1' primary='yes'/></video>\
             <watchdog model='i6300esb' action='poweroff'/><watchdog model='itco' action='poweroff'/>\
             <memballoon model='virtio'><stats period='5'/></memballoon>\
             <rng model='virtio'><backend model='random'>/dev/urandom</backend>\
               <rate bytes='1024' period='1000'/></rng>\
             <panic model='isa'/><panic model='pvpanic'/>\
             </devices>",
            top = p("top.qcow2"),
            mid = p("mid.qcow2"),
            base = p("base.raw"),
            plain = p("plain.raw"),
            shared = p("shared.raw"),
            iso = p("cd.iso"),
            scsi = p("scsi.raw"),
        ));
        let taps = [open_tap(), open_tap()];
        let mut settings = Settings::new(Accel::Tcg, dir.join("qmp.sock"));
        settings.disk_overlays = vec![None, Some(dir.join("overlay.qcow2"))];
        settings.tap_fds = taps
            .iter()
            .map(|t| Some(std::os::fd::AsRawFd::as_raw_fd(&t.0)))
            .collect();
        settings.channel_sockets = vec![Some(dir.join("agent.sock"))];
        settings.vnc_socket = Some(dir.join("vnc.sock"));
        settings.serial_logs = Some(dir.to_owned());
        let (_guard, client) = start(&def, &settings, dir).await;
        assert_eq!(
            client.query_status().await.unwrap(),
            crate::qemu::qmp::RunState::Prelaunch
        );

        let blocks = client.query_block().await.unwrap();
        let block = |id: &str| {
            blocks
                .iter()
                .find(|b| b.qdev.as_deref().is_some_and(|q| q.contains(id)))
                .unwrap_or_else(|| panic!("{id} in {blocks:#?}"))
        };
        let vda = block("disk-vda").inserted.as_ref().unwrap();
        assert_eq!(vda.node_name.as_deref(), Some("disk0"));
        assert!(!vda.ro);
        let chain: Vec<(&str, &str)> =
            std::iter::successors(Some(&vda.image), |i| i.backing_image.as_deref())
                .map(|i| (i.filename.as_str(), i.format.as_str()))
                .collect();
        assert_eq!(
            chain,
            [
                (p("top.qcow2").as_str(), "qcow2"),
                (p("mid.qcow2").as_str(), "qcow2"),
                (p("base.raw").as_str(), "raw")
            ]
        );
        let vdb = block("disk-vdb").inserted.as_ref().unwrap();
        assert_eq!(vdb.node_name.as_deref(), Some("disk1-overlay"));
        assert!(!vdb.ro);
        assert_eq!(vdb.image.filename, p("overlay.qcow2"));
        assert_eq!(
            vdb.image.backing_image.as_ref().unwrap().filename,
            p("plain.raw")
        );
        assert!(!block("ua-shared").inserted.as_ref().unwrap().ro);
        let sda = block("disk-sda").inserted.as_ref().unwrap();
        assert!(sda.ro);
        assert_eq!(sda.image.filename, p("cd.iso"));
        assert!(block("disk-sdb").inserted.is_none(), "an empty drive");
        assert!(block("disk-sdc").inserted.as_ref().unwrap().ro);
        if ovmf {
            let code = blocks
                .iter()
                .filter_map(|b| b.inserted.as_ref())
                .find(|i| i.node_name.as_deref() == Some("pflash0"))
                .unwrap();
            assert!(code.ro);
            assert_eq!(code.image.filename, OVMF_CODE);
            let vars = blocks
                .iter()
                .filter_map(|b| b.inserted.as_ref())
                .find(|i| i.node_name.as_deref() == Some("pflash1"))
                .unwrap();
            assert!(!vars.ro);
        }

        let devices = peripherals(&client).await;
        for (id, kind) in [
            ("usb0", "qemu-xhci"),
            ("scsi0", "virtio-scsi-pci"),
            ("virtio-serial0", "virtio-serial-pci"),
            ("disk-vda", "virtio-blk-pci"),
            ("disk-sda", "ide-cd"),
            ("disk-sdc", "scsi-hd"),
            ("net0", "virtio-net-pci"),
            ("net1", "e1000e"),
            ("channel0", "virtserialport"),
            ("input0", "usb-tablet"),
            ("input2", "virtio-keyboard-pci"),
            ("video0", "virtio-vga"),
            ("sound0", "ich9-intel-hda"),
            ("rng0", "virtio-rng-pci"),
            ("balloon0", "virtio-balloon-pci"),
            ("watchdog0", "i6300esb"),
            ("panic0", "pvpanic"),
            ("panic1", "pvpanic-pci"),
        ] {
            assert_eq!(
                devices.get(id).map(String::as_str),
                Some(kind),
                "{id}: {devices:?}"
            );
        }
        assert!(!devices.contains_key("input1"), "PS/2 is built in");

        let chardevs = client.query_chardev().await.unwrap();
        let serial = chardevs.iter().find(|c| c.label == "charserial0").unwrap();
        assert!(serial.pty_path().is_some(), "{chardevs:?}");
        assert!(dir.join("serial0.log").exists());
        let agent = chardevs.iter().find(|c| c.label == "charchannel0").unwrap();
        assert!(agent.filename.contains(&p("agent.sock")), "{agent:?}");
        let vnc = client.query_vnc().await.unwrap();
        assert!(vnc.enabled, "{vnc:?}");
        assert_eq!(vnc.family.as_deref(), Some("unix"), "{vnc:?}");
        assert!(client.query_balloon().await.unwrap().is_some());
        client.quit().await.unwrap();
        drop(taps);
    }

    /// The i440fx side: IDE, SATA through an added AHCI, USB 2 with a
    /// companion, cirrus, the ib700 watchdog, a ROM BIOS.
    #[tokio::test]
    async fn qemu_accepts_an_i440fx_line() {
        use crate::qemu::process::test_support::qemu_missing;
        if qemu_missing() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = |name: &str| dir.join(name).display().to_string();
        for raw in ["ide.raw", "sata.raw"] {
            qemu_img(&["create", "-q", "-f", "raw", &p(raw), "1M"]);
        }
        let def = vm(&format!(
            "<vcpu>1</vcpu><os><type machine='pc'>hvm</type>\
             <loader type='rom'>/usr/share/seabios/bios-256k.bin</loader>\
             <boot dev='cdrom'/><boot dev='hd'/><bootmenu enable='yes' timeout='1000'/></os>\
             <features><acpi/></features><devices>\
             <disk type='file' device='disk'><source file='{ide}'/><target dev='hda' bus='ide'/></disk>\
             <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>\
             <disk type='file' device='disk'><source file='{sata}'/><target dev='sda' bus='sata'/></disk>\
             <controller type='ide' index='0'/><controller type='pci' index='0' model='pci-root'/>\
             <controller type='usb' index='0' model='ich9-ehci1'/>\
             <controller type='usb' index='0' model='ich9-uhci1'><master startport='0'/></controller>\
             <interface type='ethernet'><target dev='tap-x'/><model type='rtl8139'/></interface>\
             <input type='tablet' bus='usb'/><input type='keyboard' bus='ps2'/>\
             <video><model type='cirrus' vram='16384'/></video>\
             <watchdog model='ib700' action='pause'/><panic/>\
             <memballoon model='none'/></devices>",
            ide = p("ide.raw"),
            sata = p("sata.raw"),
        ));
        let tap = open_tap();
        let mut settings = Settings::new(Accel::Tcg, dir.join("qmp.sock"));
        settings.tap_fds = vec![Some(std::os::fd::AsRawFd::as_raw_fd(&tap.0))];
        let (_guard, client) = start(&def, &settings, dir).await;
        let devices = peripherals(&client).await;
        for (id, kind) in [
            ("disk-hda", "ide-hd"),
            ("disk-hdc", "ide-cd"),
            ("sata0", "ich9-ahci"),
            ("disk-sda", "ide-hd"),
            ("usb0", "ich9-usb-ehci1"),
            ("usb0-uhci1", "ich9-usb-uhci1"),
            ("net0", "rtl8139"),
            ("input0", "usb-tablet"),
            ("video0", "cirrus-vga"),
            ("watchdog0", "ib700"),
            ("panic0", "pvpanic"),
        ] {
            assert_eq!(
                devices.get(id).map(String::as_str),
                Some(kind),
                "{id}: {devices:?}"
            );
        }
        assert!(client.query_balloon().await.unwrap().is_none());
        client.quit().await.unwrap();
        drop(tap);
    }
}
