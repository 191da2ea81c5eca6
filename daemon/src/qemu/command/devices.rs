//! The devices that are one `-device` each (with a back end where they
//! need one): `<controller>`, `<input>`, `<video>`, `<graphics>`,
//! `<sound>`, `<channel>`, `<rng>`, `<memballoon>`, `<watchdog>`,
//! `<panic>`.
//!
//! Controllers come first, as the buses other devices name must exist
//! when qemu creates them: `{id}.0` of the first USB and virtio-serial
//! controller, `{id}.0` of each SCSI controller, `{id}.N` (port N) of
//! each AHCI controller (`ide.N` for the one built into q35). A SCSI or
//! virtio-serial controller that disks or channels need but the
//! definition lacks is added, as libvirt adds it. Generated ids follow
//! the element and its index: `usb0`, `scsi0`, `virtio-serial0`,
//! `input0`, `video0`, `sound0`, `channel0`, `rng0`, `balloon0`,
//! `watchdog0`, `panic0`.

use std::collections::BTreeMap;
use std::path::Path;

use super::storage::{sata_controller_of, scsi_controller_of};
use super::{Args, Chipset, Ctx, escape, escape_commas};
use crate::domain::{
    AudioType, ChannelSourceMode, ChannelTargetType, ChannelType, Controller, ControllerType,
    GraphicsType, InputBus, InputType, MemballoonModel, PanicModel, RngBackendModel,
    SoundCodecType, SoundModel, VideoModelType, VirtioModel, WatchdogAction, WatchdogModel,
};
use crate::qemu::command::CommandError;

/// The buses devices are put on, by controller.
#[derive(Debug, Default)]
pub(super) struct Buses {
    /// The bus USB devices go on; `None`: no USB.
    usb: Option<String>,
    /// The bus of virtio-serial ports.
    virtio_serial: Option<String>,
    /// SCSI controller index to its id.
    pub(super) scsi: BTreeMap<u32, String>,
    /// SATA controller index to the prefix of its ports' buses.
    pub(super) sata: BTreeMap<u32, String>,
}

/// PCI controllers qemu places by itself or that lxvirt does not need:
/// devices go on the root bus (see the module doc of `command`).
const PCI_MODELS: &[&str] = &[
    "pci-root",
    "pcie-root",
    "pcie-root-port",
    "pci-bridge",
    "pcie-to-pci-bridge",
    "dmi-to-pci-bridge",
    "pcie-switch-upstream-port",
    "pcie-switch-downstream-port",
];

/// The qemu device of a USB controller model, and whether it is an EHCI
/// companion (and at which port it starts by default).
fn usb_model(model: &str) -> Option<(&'static str, Option<u32>)> {
    Some(match model {
        "qemu-xhci" => ("qemu-xhci", None),
        "nec-xhci" => ("nec-usb-xhci", None),
        "piix3-uhci" => ("piix3-usb-uhci", None),
        "piix4-uhci" => ("piix4-usb-uhci", None),
        "ich9-ehci1" => ("ich9-usb-ehci1", None),
        "ich9-uhci1" => ("ich9-usb-uhci1", Some(0)),
        "ich9-uhci2" => ("ich9-usb-uhci2", Some(2)),
        "ich9-uhci3" => ("ich9-usb-uhci3", Some(4)),
        _ => return None,
    })
}

fn controller_element(c: &Controller) -> String {
    let mut s = format!(
        "<controller type='{}' index='{}'",
        c.controller_type,
        c.index.unwrap_or(0)
    );
    if let Some(model) = &c.model {
        s.push_str(&format!(" model='{model}'"));
    }
    s.push('>');
    s
}

pub(super) fn controllers(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<Buses, CommandError> {
    let def = ctx.def;
    let mut buses = Buses::default();
    if ctx.chipset == Chipset::Q35 {
        buses.sata.insert(0, "ide".to_owned());
    }
    let mut usb_masters: BTreeMap<u32, String> = BTreeMap::new();
    // Companions last: their EHCI master must exist first.
    let (companions, controllers): (Vec<&Controller>, Vec<&Controller>) =
        def.devices.controllers.iter().partition(|c| {
            c.controller_type == ControllerType::Usb
                && c.model
                    .as_deref()
                    .and_then(usb_model)
                    .is_some_and(|(_, start)| start.is_some())
        });
    for c in controllers.into_iter().chain(companions) {
        let what = controller_element(c);
        let index = c.index.unwrap_or(0);
        let model = c.model.as_deref();
        let kept_ok = c.controller_type == ControllerType::Usb;
        if !kept_ok {
            ctx.refuse_kept(&what, &c.kept)?;
        }
        match c.controller_type {
            ControllerType::Pci => {
                if model.is_some_and(|m| !PCI_MODELS.contains(&m)) {
                    return Err(ctx.refuse(what, "lxvirt does not know this PCI controller"));
                }
                if c.target.is_some_and(|t| t.node.is_some()) {
                    return Err(ctx.refuse(
                        format!("{what}<target><node>"),
                        "a NUMA node belongs to an expander bus, which lxvirt does not run",
                    ));
                }
            }
            ControllerType::Usb => {
                let default = if ctx.chipset == Chipset::Q35 {
                    "qemu-xhci"
                } else {
                    "piix3-uhci"
                };
                let model = model.unwrap_or(default);
                if model == "none" {
                    continue;
                }
                let Some((device, companion_start)) = usb_model(model) else {
                    return Err(ctx.refuse(what, "qemu 7.2 has no such USB controller"));
                };
                let generated = match companion_start {
                    None => format!("usb{index}"),
                    Some(start) => format!("usb{index}-uhci{}", start / 2 + 1),
                };
                let id = ctx.id(c.alias.as_deref(), generated, &what)?;
                let mut line = format!("{device},id={id}");
                match companion_start {
                    None => {
                        if let (Some(ports), true) = (c.ports, device.ends_with("xhci")) {
                            line.push_str(&format!(",p2={ports},p3={ports}"));
                        }
                        usb_masters.insert(index, id.clone());
                        buses.usb.get_or_insert(format!("{id}.0"));
                    }
                    Some(start) => {
                        let Some(master) = usb_masters.get(&index) else {
                            return Err(ctx.refuse(
                                what,
                                "a UHCI companion needs an ich9-ehci1 controller of the same index",
                            ));
                        };
                        let start = c
                            .kept
                            .iter()
                            .find(|k| k.name == "master")
                            .and_then(|m| m.attr("startport"))
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(start);
                        line.push_str(&format!(",masterbus={master}.0,firstport={start}"));
                    }
                }
                if let Some(k) = c.kept.iter().find(|k| k.name != "master") {
                    return Err(
                        ctx.refuse(format!("{what}{k}"), "lxvirt keeps it but does not run it")
                    );
                }
                args.push2("-device", line);
            }
            ControllerType::Sata => {
                if ctx.chipset == Chipset::Q35 && index == 0 {
                    // q35's own AHCI controller.
                    continue;
                }
                let id = ctx.id(c.alias.as_deref(), format!("sata{index}"), &what)?;
                args.push2("-device", format!("ich9-ahci,id={id}"));
                buses.sata.insert(index, id);
            }
            ControllerType::Ide => {
                if ctx.chipset != Chipset::I440fx || index != 0 {
                    return Err(ctx.refuse(
                        what,
                        "IDE is the i440fx ('pc') machine's built-in controller only",
                    ));
                }
            }
            ControllerType::Scsi => {
                if model.is_some_and(|m| m != "virtio-scsi") {
                    return Err(ctx.refuse(what, "SCSI controllers run as model='virtio-scsi'"));
                }
                if c.iothread.is_some() {
                    return Err(ctx.refuse(
                        format!("{what} with <driver iothread>"),
                        "lxvirt does not run I/O threads yet",
                    ));
                }
                let id = ctx.id(c.alias.as_deref(), format!("scsi{index}"), &what)?;
                let mut line = format!("virtio-scsi-pci,id={id}");
                if let Some(queues) = c.queues {
                    line.push_str(&format!(",num_queues={queues}"));
                }
                args.push2("-device", line);
                buses.scsi.insert(index, id);
            }
            ControllerType::VirtioSerial => {
                let id = ctx.id(c.alias.as_deref(), format!("virtio-serial{index}"), &what)?;
                let mut line = format!("virtio-serial-pci,id={id}");
                if let Some(ports) = c.ports {
                    line.push_str(&format!(",max_ports={ports}"));
                }
                if let Some(vectors) = c.vectors {
                    line.push_str(&format!(",vectors={vectors}"));
                }
                args.push2("-device", line);
                buses.virtio_serial.get_or_insert(format!("{id}.0"));
            }
            ControllerType::Fdc | ControllerType::Ccid | ControllerType::Isa => {
                return Err(ctx.refuse(what, "lxvirt does not run this controller"));
            }
        }
    }
    // What disks need and the definition does not declare (libvirt adds
    // these to the definition; lxvirt adds them to the command line).
    for disk in &def.devices.disks {
        if let Some(index) = scsi_controller_of(disk)
            && !buses.scsi.contains_key(&index)
        {
            let what = format!("<controller type='scsi' index='{index}'>");
            let id = ctx.id(None, format!("scsi{index}"), &what)?;
            args.push2("-device", format!("virtio-scsi-pci,id={id}"));
            buses.scsi.insert(index, id);
        }
        if let Some(index) = sata_controller_of(disk)
            && !buses.sata.contains_key(&index)
            && ctx.chipset != Chipset::Q35
        {
            let what = format!("<controller type='sata' index='{index}'>");
            let id = ctx.id(None, format!("sata{index}"), &what)?;
            args.push2("-device", format!("ich9-ahci,id={id}"));
            buses.sata.insert(index, id);
        }
    }
    if buses.virtio_serial.is_none() && !def.devices.channels.is_empty() {
        let what = "<controller type='virtio-serial' index='0'>";
        let id = ctx.id(None, "virtio-serial0".to_owned(), what)?;
        args.push2("-device", format!("virtio-serial-pci,id={id}"));
        buses.virtio_serial = Some(format!("{id}.0"));
    }
    Ok(buses)
}

/// Every device that is not a controller, disk or interface.
pub(super) fn others(
    args: &mut Args,
    ctx: &mut Ctx<'_>,
    buses: &Buses,
) -> Result<(), CommandError> {
    inputs(args, ctx, buses)?;
    videos(args, ctx)?;
    graphics(args, ctx)?;
    sounds(args, ctx)?;
    channels(args, ctx, buses)?;
    rngs(args, ctx)?;
    memballoon(args, ctx)?;
    watchdogs(args, ctx)?;
    panics(args, ctx)
}

fn inputs(args: &mut Args, ctx: &mut Ctx<'_>, buses: &Buses) -> Result<(), CommandError> {
    for (index, input) in ctx.def.devices.inputs.iter().enumerate() {
        let kind = input.input_type;
        // libvirt's defaults: a tablet on USB, mouse and keyboard on PS/2.
        let bus = input.bus.unwrap_or(match kind {
            InputType::Tablet => InputBus::Usb,
            _ => InputBus::Ps2,
        });
        let what = format!("<input type='{kind}' bus='{bus}'>");
        ctx.refuse_kept(&what, &input.kept)?;
        let device = match (kind, bus) {
            // The i8042 controller of pc and q35 has them already.
            (InputType::Mouse | InputType::Keyboard, InputBus::Ps2)
                if ctx.chipset != Chipset::Other =>
            {
                continue;
            }
            (InputType::Tablet, InputBus::Usb) => "usb-tablet",
            (InputType::Mouse, InputBus::Usb) => "usb-mouse",
            (InputType::Keyboard, InputBus::Usb) => "usb-kbd",
            (InputType::Tablet, InputBus::Virtio) => "virtio-tablet-pci",
            (InputType::Mouse, InputBus::Virtio) => "virtio-mouse-pci",
            (InputType::Keyboard, InputBus::Virtio) => "virtio-keyboard-pci",
            _ => return Err(ctx.refuse(what, "qemu has no such input device")),
        };
        let mut line = device.to_owned();
        if bus == InputBus::Usb {
            let Some(usb) = &buses.usb else {
                return Err(ctx.refuse(
                    what,
                    "a USB input device needs a USB controller; add <controller type='usb' model='qemu-xhci'/>",
                ));
            };
            line.push_str(&format!(",bus={usb}"));
        }
        let id = ctx.id(input.alias.as_deref(), format!("input{index}"), &what)?;
        line.push_str(&format!(",id={id}"));
        args.push2("-device", line);
    }
    Ok(())
}

fn videos(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    for (index, video) in ctx.def.devices.videos.iter().enumerate() {
        let Some(model) = &video.model else {
            return Err(ctx.refuse(
                "<video> without <model>",
                "name the card with <model type='virtio'/> (or vga, qxl, bochs, …)",
            ));
        };
        let kind = model.model_type;
        let what = format!("<video><model type='{kind}'>");
        ctx.refuse_kept("<video>", &video.kept)?;
        ctx.refuse_kept(&what, &model.kept)?;
        if model.blob == Some(true) {
            // Blob resources need the guest's memory in a memfd backend,
            // which the driver does not set up.
            return Err(ctx.refuse(
                format!("{what} with blob='on'"),
                "blob resources need memfd guest memory, which the QEMU driver does not set up",
            ));
        }
        // The first card is the primary, the one that takes the legacy VGA
        // ports; only virtio and qxl have a model for secondary cards.
        let primary = index == 0;
        let device = match (kind, primary) {
            (VideoModelType::None, _) => continue,
            (VideoModelType::Vga, true) => "VGA",
            (VideoModelType::Cirrus, true) => "cirrus-vga",
            (VideoModelType::Vmvga, true) => "vmware-svga",
            (VideoModelType::Bochs, true) => "bochs-display",
            (VideoModelType::Ramfb, true) => "ramfb",
            (VideoModelType::Virtio, true) => "virtio-vga",
            (VideoModelType::Virtio, false) => "virtio-gpu-pci",
            (VideoModelType::Qxl, true) => "qxl-vga",
            (VideoModelType::Qxl, false) => "qxl",
            _ => {
                return Err(ctx.refuse(
                    format!("{what} (a second card)"),
                    "only virtio and qxl cards can be secondary",
                ));
            }
        };
        let id = ctx.id(video.alias.as_deref(), format!("video{index}"), &what)?;
        let mut line = format!("{device},id={id}");
        let mib = |kib: u64| kib.div_ceil(1024);
        match kind {
            VideoModelType::Vga | VideoModelType::Cirrus | VideoModelType::Vmvga => {
                // libvirt's vram of these cards is their VGA memory.
                if let Some(vram) = model.vram {
                    line.push_str(&format!(",vgamem_mb={}", mib(vram)));
                }
            }
            VideoModelType::Qxl => {
                if let Some(ram) = model.ram {
                    line.push_str(&format!(",ram_size={}", ram * 1024));
                }
                if let Some(vram) = model.vram {
                    line.push_str(&format!(",vram_size={}", vram * 1024));
                }
                if let Some(vgamem) = model.vgamem {
                    line.push_str(&format!(",vgamem_mb={}", mib(vgamem)));
                }
                if let Some(heads) = model.heads {
                    line.push_str(&format!(",max_outputs={heads}"));
                }
            }
            VideoModelType::Virtio => {
                if let Some(heads) = model.heads {
                    line.push_str(&format!(",max_outputs={heads}"));
                }
            }
            _ => {}
        }
        args.push2("-device", line);
    }
    Ok(())
}

/// VNC only, on the unix socket the driver chose: a definition's TCP
/// listen address (libvirt's default is any address of the host) is
/// served on that socket instead, so no display is ever reachable from
/// the network; tools connect through the socket (or a tunnel to it).
fn graphics(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let mut vnc = None;
    for graphics in &ctx.def.devices.graphics {
        let kind = graphics.graphics_type;
        let what = format!("<graphics type='{kind}'>");
        if kind != GraphicsType::Vnc {
            return Err(ctx.refuse(what, "the QEMU driver serves VNC displays only"));
        }
        if vnc.is_some() {
            return Err(ctx.refuse(
                format!("{what} (a second one)"),
                "qemu serves one VNC display",
            ));
        }
        ctx.refuse_kept(&what, &graphics.kept)?;
        if graphics.passwd.is_some() {
            return Err(ctx.refuse(
                format!("{what} with passwd"),
                "VNC is served on a local socket that only root and the guest's user reach; remove passwd",
            ));
        }
        if graphics.websocket.is_some() {
            return Err(ctx.refuse(
                format!("{what} with websocket"),
                "VNC is served on a local socket only",
            ));
        }
        // keymap: qemu's VNC server takes the client's raw key codes
        // (the extended key event of current clients); nothing to pass.
        let Some(socket) = &ctx.settings.vnc_socket else {
            return Err(ctx.refuse(what, "the driver chose no socket for it"));
        };
        vnc = Some(socket);
    }
    if let Some(socket) = vnc {
        args.push2("-vnc", format!("unix:{}", escape_commas(socket)));
    }
    Ok(())
}

/// Intel HD Audio cards, playing to no host audio (`-audiodev none`): a
/// daemon has no sound device, and a guest that expects a card gets one.
fn sounds(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let def = ctx.def;
    for audio in &def.devices.audios {
        let what = format!("<audio id='{}' type='{}'>", audio.id, audio.audio_type);
        if audio.audio_type != AudioType::None {
            return Err(ctx.refuse(what, "lxvirt plays guest audio nowhere (type='none')"));
        }
        ctx.refuse_kept(&what, &audio.kept)?;
    }
    if def.devices.sounds.is_empty() {
        return Ok(());
    }
    let audios: Vec<u32> = def.devices.audios.iter().map(|a| a.id).collect();
    for id in &audios {
        args.push2("-audiodev", format!("none,id=audio{id}"));
    }
    if audios.is_empty() {
        args.push2("-audiodev", "none,id=audio0");
    }
    for (index, sound) in def.devices.sounds.iter().enumerate() {
        let what = format!("<sound model='{}'>", sound.model);
        let device = match sound.model {
            SoundModel::Ich6 => "intel-hda",
            SoundModel::Ich9 => "ich9-intel-hda",
            _ => return Err(ctx.refuse(what, "the QEMU driver runs sound models ich6 and ich9")),
        };
        ctx.refuse_kept(&what, &sound.kept)?;
        // Options of the virtio and usb models, which an HDA card lacks.
        if sound.streams.is_some() || sound.multichannel.is_some() {
            return Err(ctx.refuse(
                format!("{what} with streams or multichannel"),
                "they belong to sound models virtio and usb; remove them",
            ));
        }
        let audio = match sound.audio {
            Some(id) if audios.contains(&id) => id,
            Some(_) => {
                return Err(ctx.refuse(
                    format!("{what} with <audio id>"),
                    "it names no <audio> of the definition",
                ));
            }
            None => audios.first().copied().unwrap_or(0),
        };
        let id = ctx.id(sound.alias.as_deref(), format!("sound{index}"), &what)?;
        args.push2("-device", format!("{device},id={id}"));
        let codecs = if sound.codecs.is_empty() {
            &[SoundCodecType::Duplex][..]
        } else {
            &sound.codecs[..]
        };
        for (cad, codec) in codecs.iter().enumerate() {
            let codec = match codec {
                SoundCodecType::Duplex => "hda-duplex",
                SoundCodecType::Micro => "hda-micro",
                SoundCodecType::Output => "hda-output",
            };
            args.push2(
                "-device",
                format!("{codec},id={id}-codec{cad},bus={id}.0,cad={cad},audiodev=audio{audio}"),
            );
        }
    }
    Ok(())
}

/// `<channel type='unix'>` to a virtio-serial port: qemu listens on the
/// socket the driver chose (in the domain's run directory; a `<source
/// path>` of the definition is not used, as qemu's user may not write
/// there) and the guest sees a port of the target's name.
fn channels(args: &mut Args, ctx: &mut Ctx<'_>, buses: &Buses) -> Result<(), CommandError> {
    for (index, channel) in ctx.def.devices.channels.iter().enumerate() {
        let what = format!("<channel type='{}'>", channel.channel_type);
        if channel.channel_type != ChannelType::Unix {
            return Err(ctx.refuse(what, "the QEMU driver runs unix channels only"));
        }
        if channel.target_type != Some(ChannelTargetType::Virtio) {
            return Err(ctx.refuse(
                format!("{what} without <target type='virtio'>"),
                "a unix channel runs as a virtio-serial port",
            ));
        }
        if channel.source_mode == Some(ChannelSourceMode::Connect) {
            return Err(ctx.refuse(
                format!("{what} with <source mode='connect'>"),
                "qemu listens on the channel's socket (mode='bind')",
            ));
        }
        let Some(socket) = ctx
            .settings
            .channel_sockets
            .get(index)
            .and_then(|s| s.as_deref())
        else {
            return Err(ctx.refuse(what, "the driver chose no socket for it"));
        };
        let Some(bus) = &buses.virtio_serial else {
            // controllers() adds one whenever there is a channel.
            return Err(ctx.refuse(what, "there is no virtio-serial controller"));
        };
        let id = ctx.id(channel.alias.as_deref(), format!("channel{index}"), &what)?;
        let chardev = format!("char{id}");
        args.push2(
            "-chardev",
            format!(
                "socket,id={chardev},path={},server=on,wait=off",
                escape_commas(socket)
            ),
        );
        let mut line = format!("virtserialport,bus={bus},chardev={chardev},id={id}");
        if let Some(name) = &channel.target_name {
            line.push_str(&format!(",name={}", escape(name)));
        }
        args.push2("-device", line);
    }
    Ok(())
}

/// The entropy sources a `random` back end may read.
const RNG_SOURCES: &[&str] = &["/dev/urandom", "/dev/random", "/dev/hwrng"];

fn rngs(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    for (index, rng) in ctx.def.devices.rngs.iter().enumerate() {
        let what = format!("<rng model='{}'>", rng.model);
        ctx.refuse_kept(&what, &rng.kept)?;
        let id = ctx.id(rng.alias.as_deref(), format!("rng{index}"), &what)?;
        let object = format!("obj{id}");
        match rng.backend.unwrap_or(RngBackendModel::Random) {
            RngBackendModel::Random => {
                let path = rng
                    .backend_path
                    .as_deref()
                    .unwrap_or(Path::new("/dev/urandom"));
                if !RNG_SOURCES.iter().any(|s| Path::new(s) == path) {
                    return Err(ctx.refuse(
                        format!("{what} with <backend model='random'>{}", path.display()),
                        "the source is /dev/urandom, /dev/random or /dev/hwrng",
                    ));
                }
                args.push2(
                    "-object",
                    format!("rng-random,id={object},filename={}", path.display()),
                );
            }
            RngBackendModel::Builtin => {
                args.push2("-object", format!("rng-builtin,id={object}"));
            }
        }
        let device = match rng.model {
            VirtioModel::Virtio => "virtio-rng-pci",
            VirtioModel::VirtioTransitional => "virtio-rng-pci-transitional",
            VirtioModel::VirtioNonTransitional => "virtio-rng-pci-non-transitional",
        };
        let mut line = format!("{device},rng={object},id={id}");
        if let Some(bytes) = rng.rate_bytes {
            // libvirt's default period: a second.
            let period = rng.rate_period.unwrap_or(1000);
            line.push_str(&format!(",max-bytes={bytes},period={period}"));
        }
        args.push2("-device", line);
    }
    Ok(())
}

fn memballoon(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let Some(balloon) = &ctx.def.devices.memballoon else {
        return Ok(());
    };
    let what = format!("<memballoon model='{}'>", balloon.model);
    let device = match balloon.model {
        MemballoonModel::None => return Ok(()),
        MemballoonModel::Virtio => "virtio-balloon-pci",
        MemballoonModel::VirtioTransitional => "virtio-balloon-pci-transitional",
        MemballoonModel::VirtioNonTransitional => "virtio-balloon-pci-non-transitional",
    };
    ctx.refuse_kept(&what, &balloon.kept)?;
    let id = ctx.id(balloon.alias.as_deref(), "balloon0".to_owned(), &what)?;
    let mut line = format!("{device},id={id}");
    if let Some(period) = balloon.stats_period {
        line.push_str(&format!(",guest-stats-polling-interval={period}"));
    }
    if let Some(on) = balloon.autodeflate {
        line.push_str(&format!(",deflate-on-oom={}", super::on_off(on)));
    }
    if let Some(on) = balloon.free_page_reporting {
        line.push_str(&format!(",free-page-reporting={}", super::on_off(on)));
    }
    args.push2("-device", line);
    Ok(())
}

/// Watchdogs share qemu's one watchdog action (`-action watchdog=`).
fn watchdogs(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let mut action = None;
    for (index, watchdog) in ctx.def.devices.watchdogs.iter().enumerate() {
        let what = format!("<watchdog model='{}'>", watchdog.model);
        // libvirt's default action.
        let wanted = watchdog.action.unwrap_or(WatchdogAction::Reset);
        let qemu_action = match wanted {
            WatchdogAction::Reset => "reset",
            // libvirt's shutdown is the guest's (ACPI) one, qemu's too;
            // poweroff is immediate in both.
            WatchdogAction::Shutdown => "shutdown",
            WatchdogAction::Poweroff => "poweroff",
            WatchdogAction::Pause => "pause",
            WatchdogAction::None => "none",
            WatchdogAction::InjectNmi => "inject-nmi",
            WatchdogAction::Dump => {
                return Err(ctx.refuse(
                    format!("<watchdog model='{}' action='dump'>", watchdog.model),
                    "lxvirt does not dump guests' memory",
                ));
            }
        };
        if action.is_some_and(|a| a != qemu_action) {
            return Err(ctx.refuse(
                format!("<watchdog model='{}' action='{wanted}'>", watchdog.model),
                "qemu has one action for every watchdog; give them the same action",
            ));
        }
        action = Some(qemu_action);
        match watchdog.model {
            WatchdogModel::Itco => {
                if ctx.chipset != Chipset::Q35 {
                    return Err(ctx.refuse(what, "the iTCO watchdog is q35's only"));
                }
                // q35's chipset has it; by default its strap keeps it from
                // resetting the machine.
                args.push2("-global", "ICH9-LPC.noreboot=off");
            }
            WatchdogModel::I6300esb | WatchdogModel::Ib700 => {
                let device = if watchdog.model == WatchdogModel::Ib700 {
                    "ib700"
                } else {
                    "i6300esb"
                };
                let id = ctx.id(watchdog.alias.as_deref(), format!("watchdog{index}"), &what)?;
                args.push2("-device", format!("{device},id={id}"));
            }
        }
    }
    if let Some(action) = action {
        args.push2("-action", format!("watchdog={action}"));
    }
    Ok(())
}

fn panics(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    for (index, panic) in ctx.def.devices.panics.iter().enumerate() {
        // libvirt's default on x86: the ISA device.
        let model = panic.model.unwrap_or(PanicModel::Isa);
        let what = format!("<panic model='{model}'>");
        let device = match model {
            PanicModel::Isa => "pvpanic",
            PanicModel::Pvpanic => "pvpanic-pci",
            PanicModel::Hyperv => {
                return Err(ctx.refuse(what, "lxvirt does not pass Hyper-V enlightenments yet"));
            }
        };
        let id = ctx.id(panic.alias.as_deref(), format!("panic{index}"), &what)?;
        args.push2("-device", format!("{device},id={id}"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{line_with, refusal, settings, value, values, with_devices};
    use super::super::{Accel, Settings};

    fn prepared() -> Settings {
        let mut s = settings(Accel::Kvm);
        s.channel_sockets = vec![Some("/run/vm/agent,0.sock".into())];
        s.vnc_socket = Some("/run/vm/vnc.sock".into());
        s
    }

    fn devices(machine: &str, xml: &str) -> Vec<String> {
        let args = line_with(&with_devices(machine, xml), &prepared());
        values(&args, "-device")
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn refused(machine: &str, xml: &str) -> String {
        refusal(&with_devices(machine, xml), &prepared())
    }

    #[test]
    fn controllers_make_the_buses_devices_name() {
        assert_eq!(
            devices(
                "q35",
                "<controller type='pci' index='0' model='pcie-root'/>\
                 <controller type='pci' index='1' model='pcie-root-port'/>\
                 <controller type='sata' index='0'/>\
                 <controller type='usb' index='0' model='qemu-xhci' ports='15'/>\
                 <controller type='scsi' index='0' model='virtio-scsi'><driver queues='4'/></controller>\
                 <controller type='virtio-serial' index='0' ports='16'/>\
                 <input type='tablet' bus='usb'/><input type='keyboard' bus='ps2'/>\
                 <input type='mouse' bus='virtio'/>"
            ),
            [
                "qemu-xhci,id=usb0,p2=15,p3=15",
                "virtio-scsi-pci,id=scsi0,num_queues=4",
                "virtio-serial-pci,id=virtio-serial0,max_ports=16",
                "usb-tablet,bus=usb0.0,id=input0",
                "virtio-mouse-pci,id=input2",
            ]
        );
        // The companion comes after its master, whatever the order.
        assert_eq!(
            devices(
                "pc",
                "<controller type='usb' index='0' model='ich9-uhci2'/>\
                 <controller type='usb' index='0' model='ich9-ehci1'/>\
                 <controller type='ide' index='0'/>"
            ),
            [
                "ich9-usb-ehci1,id=usb0",
                "ich9-usb-uhci2,id=usb0-uhci2,masterbus=usb0.0,firstport=2",
            ]
        );
        assert_eq!(
            devices("pc", "<controller type='usb'/>"),
            ["piix3-usb-uhci,id=usb0"]
        );
        for (machine, xml, expected) in [
            (
                "q35",
                "<controller type='usb' index='0' model='ich9-uhci1'/>",
                "<controller type='usb' index='0' model='ich9-uhci1'> cannot run yet (a UHCI companion",
            ),
            (
                "q35",
                "<controller type='usb' model='vt82c686b-uhci'/>",
                "<controller type='usb' index='0' model='vt82c686b-uhci'>",
            ),
            (
                "q35",
                "<controller type='pci' index='1' model='pci-expander-bus'/>",
                "<controller type='pci' index='1' model='pci-expander-bus'>",
            ),
            (
                "q35",
                "<controller type='scsi' model='lsilogic'/>",
                "<controller type='scsi' index='0' model='lsilogic'>",
            ),
            (
                "q35",
                "<controller type='ide' index='0'/>",
                "<controller type='ide' index='0'> cannot run yet",
            ),
            (
                "q35",
                "<controller type='usb' model='none'/><input type='tablet' bus='usb'/>",
                "<input type='tablet' bus='usb'> cannot run yet (a USB input device needs a USB controller",
            ),
        ] {
            let error = refused(machine, xml);
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn video_cards_primary_first() {
        assert_eq!(
            devices(
                "q35",
                "<video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1'/></video>\
                 <video><model type='virtio' heads='2'/></video><video><model type='none'/></video>"
            ),
            [
                "qxl-vga,id=video0,ram_size=67108864,vram_size=67108864,vgamem_mb=16,max_outputs=1",
                "virtio-gpu-pci,id=video1,max_outputs=2",
            ]
        );
        assert_eq!(
            devices("q35", "<video><model type='bochs'/></video>"),
            ["bochs-display,id=video0"]
        );
        let error = refused(
            "q35",
            "<video><model type='virtio'/></video><video><model type='vga'/></video>",
        );
        assert!(
            error.contains("<video><model type='vga'> (a second card)"),
            "{error}"
        );
    }

    #[test]
    fn vnc_is_served_on_the_local_socket_only() {
        let def = with_devices(
            "q35",
            "<graphics type='vnc' port='5901' listen='0.0.0.0' keymap='de'/>",
        );
        let args = line_with(&def, &prepared());
        assert_eq!(value(&args, "-vnc"), "unix:/run/vm/vnc.sock");
        assert!(refusal(&def, &settings(Accel::Kvm)).contains("the driver chose no socket for it"));
        for (xml, expected) in [
            ("<graphics type='spice'/>", "<graphics type='spice'>"),
            ("<graphics type='sdl'/>", "<graphics type='sdl'>"),
            (
                "<graphics type='vnc' passwd='secret'/>",
                "<graphics type='vnc'> with passwd",
            ),
        ] {
            let error = refused("q35", xml);
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn sound_plays_to_no_host_audio() {
        let args = line_with(
            &with_devices(
                "q35",
                "<sound model='ich9'><codec type='micro'/></sound><audio id='1' type='none'/>",
            ),
            &prepared(),
        );
        assert_eq!(value(&args, "-audiodev"), "none,id=audio1");
        assert_eq!(
            values(&args, "-device"),
            [
                "ich9-intel-hda,id=sound0",
                "hda-micro,id=sound0-codec0,bus=sound0.0,cad=0,audiodev=audio1"
            ]
        );
        assert_eq!(
            value(
                &line_with(&with_devices("pc", "<sound model='ich6'/>"), &prepared()),
                "-audiodev"
            ),
            "none,id=audio0"
        );
        for (xml, expected) in [
            ("<sound model='ac97'/>", "<sound model='ac97'>"),
            (
                "<sound model='ich9'/><audio id='1' type='pulseaudio'/>",
                "<audio id='1' type='pulseaudio'>",
            ),
        ] {
            let error = refused("q35", xml);
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn a_guest_agent_channel_is_a_port_on_a_socket() {
        let args = line_with(
            &with_devices(
                "q35",
                "<channel type='unix'><source mode='bind' path='/elsewhere.sock'/>\
                 <target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
            ),
            &prepared(),
        );
        assert_eq!(
            value(&args, "-chardev"),
            "socket,id=charchannel0,path=/run/vm/agent,,0.sock,server=on,wait=off"
        );
        assert_eq!(
            values(&args, "-device"),
            [
                // Added: no virtio-serial controller was declared.
                "virtio-serial-pci,id=virtio-serial0",
                "virtserialport,bus=virtio-serial0.0,chardev=charchannel0,id=channel0,name=org.qemu.guest_agent.0",
            ]
        );
        for (xml, expected) in [
            (
                "<channel type='pty'><target type='virtio' name='x'/></channel>",
                "<channel type='pty'>",
            ),
            (
                "<channel type='unix'><source mode='connect' path='/a'/><target type='virtio' name='x'/></channel>",
                "<channel type='unix'> with <source mode='connect'>",
            ),
        ] {
            let error = refused("q35", xml);
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let error = refusal(
            &with_devices(
                "q35",
                "<channel type='unix'><target type='virtio' name='x'/></channel>",
            ),
            &settings(Accel::Kvm),
        );
        assert!(
            error.contains("the driver chose no socket for it"),
            "{error}"
        );
    }

    #[test]
    fn rng_balloon_watchdog_and_panic() {
        let args = line_with(
            &with_devices(
                "q35",
                "<rng model='virtio'><backend model='random'>/dev/random</backend><rate bytes='512'/></rng>\
                 <memballoon model='virtio' autodeflate='on'><stats period='10'/></memballoon>\
                 <watchdog model='itco' action='shutdown'/><watchdog model='i6300esb' action='shutdown'/>\
                 <panic/><panic model='pvpanic'/>",
            ),
            &prepared(),
        );
        assert_eq!(
            value(&args, "-object"),
            "rng-random,id=objrng0,filename=/dev/random"
        );
        assert_eq!(value(&args, "-global"), "ICH9-LPC.noreboot=off");
        assert_eq!(
            values(&args, "-action"),
            ["watchdog=shutdown", "panic=pause"]
        );
        assert_eq!(
            values(&args, "-device"),
            [
                "virtio-rng-pci,rng=objrng0,id=rng0,max-bytes=512,period=1000",
                "virtio-balloon-pci,id=balloon0,guest-stats-polling-interval=10,deflate-on-oom=on",
                "i6300esb,id=watchdog1",
                "pvpanic,id=panic0",
                "pvpanic-pci,id=panic1",
            ]
        );
        assert!(
            devices("q35", "<memballoon model='none'/>").is_empty(),
            "no balloon"
        );
        for (machine, xml, expected) in [
            (
                "q35",
                "<rng model='virtio'><backend model='random'>/dev/sda</backend></rng>",
                "<rng model='virtio'> with <backend model='random'>/dev/sda",
            ),
            (
                "q35",
                "<watchdog model='i6300esb' action='dump'/>",
                "<watchdog model='i6300esb' action='dump'>",
            ),
            (
                "q35",
                "<watchdog model='i6300esb' action='reset'/><watchdog model='itco' action='pause'/>",
                "<watchdog model='itco' action='pause'> cannot run yet (qemu has one action",
            ),
            ("pc", "<watchdog model='itco'/>", "<watchdog model='itco'>"),
            ("q35", "<panic model='hyperv'/>", "<panic model='hyperv'>"),
            (
                "q35",
                "<panic/><panic><alias name='panic0'/></panic>",
                "<panic model='isa'> with id 'panic0' cannot run yet (another device has the same",
            ),
        ] {
            let error = refused(machine, xml);
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
