//! Typed fields of virtual machines read from elements of the kept
//! vocabulary: the table ([`crate::kept`]) has checked their names and
//! keywords already; here they become typed values, with the ranges the
//! table does not know.

use std::path::PathBuf;

use super::super::def::*;
use super::super::error::DomainError;
use super::super::units::parse_size;
use super::super::xml::Element;
use super::helpers::*;

/// Takes the element `name` out of `kept`, refusing a second one; `parent`
/// is the element they were read from (for positions).
pub(super) fn take(
    kept: &mut Vec<KeptElement>,
    name: &str,
    parent: &Element,
) -> Result<Option<KeptElement>> {
    let mut found = None;
    let mut i = 0;
    while i < kept.len() {
        if kept[i].name == name {
            if found.is_some() {
                let pos = parent
                    .elements_named(name)
                    .nth(1)
                    .map_or(parent.pos, |e| e.pos);
                return Err(DomainError::duplicate(
                    pos,
                    &parent.qname,
                    format!("<{name}>"),
                ));
            }
            found = Some(kept.remove(i));
        } else {
            i += 1;
        }
    }
    Ok(found)
}

/// The position of `parent`'s first child `name`, or `parent`'s own.
fn pos_of(parent: &Element, name: &str) -> super::super::xml::Pos {
    parent.element(name).map_or(parent.pos, |e| e.pos)
}

fn yes(k: &KeptElement, attr: &str) -> Option<bool> {
    k.attr(attr).map(|v| v == "yes")
}

fn on(k: &KeptElement, attr: &str) -> Option<bool> {
    k.attr(attr).map(|v| v == "on")
}

/// A path the table has checked to be absolute, normalised.
fn path(parent: &Element, name: &str, value: Option<&str>) -> Result<Option<PathBuf>> {
    value
        .map(|v| abs_path(pos_of(parent, name), name, "path", v))
        .transpose()
}

/// A keyword the table has checked against `T::NAMES`.
fn kw<T>(value: Option<&str>, parse: fn(&str) -> Option<T>) -> Option<T> {
    value.and_then(parse)
}

fn count(parent: &Element, k: &KeptElement, attr: &str, max: u32) -> Result<Option<u32>> {
    k.attr(attr)
        .map(|v| number(pos_of(parent, &k.name), &k.name, attr, v, 1u32, max))
        .transpose()
}

/// `<loader>`, `<nvram>`, `<bootmenu>`, `<smbios>` of `<os>`.
pub(super) fn os_fields(os: &mut HvmOs, el: &Element) -> Result<()> {
    if let Some(k) = take(&mut os.kept, "loader", el)? {
        os.loader = Some(Loader {
            path: path(el, "loader", k.text.as_deref())?,
            readonly: yes(&k, "readonly"),
            loader_type: kw(k.attr("type"), LoaderType::parse),
            secure: yes(&k, "secure"),
            stateless: yes(&k, "stateless"),
        });
    }
    match take(&mut os.kept, "nvram", el)? {
        // A path and its template: typed. A type, format or <source>:
        // kept whole, refused at start.
        Some(k) if k.children.is_empty() && k.attributes.iter().all(|(n, _)| n == "template") => {
            os.nvram = Some(Nvram {
                path: path(el, "nvram", k.text.as_deref())?,
                template: path(el, "nvram", k.attr("template"))?,
            });
        }
        Some(k) => os.kept.push(k),
        None => {}
    }
    if let Some(k) = take(&mut os.kept, "bootmenu", el)? {
        let timeout = k
            .attr("timeout")
            .map(|v| {
                number(
                    pos_of(el, "bootmenu"),
                    "bootmenu",
                    "timeout",
                    v,
                    0u32,
                    65535,
                )
            })
            .transpose()?;
        os.bootmenu = Some(BootMenu {
            enable: yes(&k, "enable"),
            timeout,
        });
    }
    if let Some(k) = take(&mut os.kept, "smbios", el)? {
        os.smbios = kw(k.attr("mode"), SmbiosMode::parse);
        if os.smbios.is_none() {
            return Err(DomainError::missing(
                pos_of(el, "smbios"),
                "smbios",
                "attribute 'mode'",
                "add mode='emulate' (or 'host', 'sysinfo')",
            ));
        }
    }
    Ok(())
}

/// `<vmport>`, `<smm>`, `<ioapic>` of `<features>`.
pub(super) fn feature_fields(f: &mut Features, el: &Element) -> Result<()> {
    // libvirt reads a state-less <smm/> or <vmport/> as on.
    if let Some(k) = take(&mut f.kept, "vmport", el)? {
        f.vmport = Some(on(&k, "state").unwrap_or(true));
    }
    if let Some(mut k) = take(&mut f.kept, "smm", el)? {
        f.smm = Some(on(&k, "state").unwrap_or(true));
        if let Some(t) = take(&mut k.children, "tseg", el)? {
            f.smm_tseg_mib = Some(tseg_mib(el, &t)?);
        }
    }
    if let Some(k) = take(&mut f.kept, "ioapic", el)? {
        f.ioapic = kw(k.attr("driver"), IoapicDriver::parse);
        if f.ioapic.is_none() {
            return Err(DomainError::missing(
                pos_of(el, "ioapic"),
                "ioapic",
                "attribute 'driver'",
                "add driver='kvm' or driver='qemu'",
            ));
        }
    }
    Ok(())
}

/// `<tseg>` in whole MiB (libvirt's default unit), as qemu takes it.
fn tseg_mib(el: &Element, t: &KeptElement) -> Result<u64> {
    const MIB: u64 = 1 << 20;
    let pos = pos_of(el, "smm");
    let text = t.text.as_deref().unwrap_or("0");
    let bytes = parse_size(text, Some(t.attr("unit").unwrap_or("MiB"))).map_err(|_| {
        DomainError::invalid(
            pos,
            "tseg",
            format!(
                "'{text}' with unit '{}' is not a size",
                t.attr("unit").unwrap_or("MiB")
            ),
            "write a number of MiB, e.g. <tseg unit='MiB'>48</tseg>",
        )
    })?;
    if bytes % MIB != 0 {
        return Err(DomainError::invalid(
            pos,
            "tseg",
            format!("{bytes} bytes is not a whole number of MiB"),
            "give the size in whole MiB",
        ));
    }
    Ok(bytes / MIB)
}

/// Most vCPUs of a topology level.
const MAX_TOPOLOGY: u32 = 4096;

/// `<cpu>` and `<pm>` of `<domain>`.
pub(super) fn root_fields(
    kept: &mut Vec<KeptElement>,
    root: &Element,
) -> Result<(Option<Cpu>, Option<Pm>)> {
    let pm = take(kept, "pm", root)?.map(|k| {
        let state = |name: &str| k.child(name).and_then(|c| yes(c, "enabled"));
        Pm {
            suspend_to_mem: state("suspend-to-mem"),
            suspend_to_disk: state("suspend-to-disk"),
        }
    });
    let Some(k) = take(kept, "cpu", root)? else {
        return Ok((None, pm));
    };
    let el = root.element("cpu").unwrap_or(root);
    let mut cpu = Cpu {
        mode: kw(k.attr("mode"), CpuMode::parse),
        match_mode: kw(k.attr("match"), CpuMatch::parse),
        check: kw(k.attr("check"), CpuCheck::parse),
        migratable: on(&k, "migratable"),
        ..Cpu::default()
    };
    for c in k.children {
        let once = |seen: bool| {
            if seen {
                Err(DomainError::duplicate(
                    pos_of(el, &c.name),
                    "cpu",
                    format!("<{}>", c.name),
                ))
            } else {
                Ok(())
            }
        };
        match c.name.as_str() {
            "model" => {
                once(cpu.model.is_some())?;
                cpu.model = Some(CpuModel {
                    fallback: kw(c.attr("fallback"), CpuFallback::parse),
                    name: c.text,
                });
            }
            "topology" => {
                once(cpu.topology.is_some())?;
                cpu.topology = Some(CpuTopology {
                    sockets: count(el, &c, "sockets", MAX_TOPOLOGY)?,
                    dies: count(el, &c, "dies", MAX_TOPOLOGY)?,
                    clusters: count(el, &c, "clusters", MAX_TOPOLOGY)?,
                    cores: count(el, &c, "cores", MAX_TOPOLOGY)?,
                    threads: count(el, &c, "threads", MAX_TOPOLOGY)?,
                });
            }
            "feature" => {
                let Some(name) = c.attr("name").map(str::to_owned) else {
                    return Err(DomainError::missing(
                        pos_of(el, "feature"),
                        "feature",
                        "attribute 'name'",
                        "add name='vmx' (a CPU flag)",
                    ));
                };
                if cpu.features.iter().any(|f| f.name == name) {
                    return Err(DomainError::duplicate(
                        pos_of(el, "feature"),
                        "cpu",
                        format!("<feature name='{name}'>"),
                    ));
                }
                cpu.features.push(CpuFeature {
                    policy: kw(c.attr("policy"), CpuFeaturePolicy::parse),
                    name,
                });
            }
            _ => cpu.kept.push(c),
        }
    }
    Ok((Some(cpu), pm))
}

/// `<address>`, from its kept form (the table has checked every value).
fn address(k: &KeptElement) -> DeviceAddress {
    let n = |name: &str| k.attr(name).and_then(hex_or_dec);
    DeviceAddress {
        address_type: kw(k.attr("type"), AddressType::parse),
        domain: n("domain"),
        bus: n("bus"),
        slot: n("slot"),
        function: n("function"),
        multifunction: on(k, "multifunction"),
        controller: n("controller"),
        target: n("target"),
        unit: n("unit"),
        port: k.attr("port").map(str::to_owned),
        reg: n("reg"),
        iobase: n("iobase"),
        irq: n("irq"),
        base: n("base"),
        slots: n("slots"),
    }
}

/// What most VM devices may carry: `<address>`, `<alias name>` and
/// `<boot order>`, taken out of the device's kept children.
pub(super) struct Common {
    pub address: Option<DeviceAddress>,
    pub alias: Option<String>,
    pub boot_order: Option<u32>,
}

/// Largest `<boot order=>`.
const MAX_BOOT_ORDER: u32 = 65535;

pub(super) fn common(kept: &mut Vec<KeptElement>, el: &Element) -> Result<Common> {
    let address = take(kept, "address", el)?.map(|k| address(&k));
    let alias = take(kept, "alias", el)?.and_then(|k| k.attr("name").map(str::to_owned));
    let boot_order = match take(kept, "boot", el)? {
        None => None,
        Some(k) => {
            let pos = pos_of(el, "boot");
            let v = k.attr("order").ok_or_else(|| {
                DomainError::missing(pos, "boot", "attribute 'order'", "add order='1'")
            })?;
            Some(number(pos, "boot", "order", v, 1u32, MAX_BOOT_ORDER)?)
        }
    };
    Ok(Common {
        address,
        alias,
        boot_order,
    })
}

/// The typed children of a disk besides its source and target.
pub(super) struct DiskFields {
    pub serial: Option<String>,
    pub shareable: bool,
    pub transient: bool,
    pub backing_store: Option<BackingStore>,
}

/// `<serial>`, `<shareable/>`, `<transient/>`, `<backingStore>` of a disk.
pub(super) fn disk_fields(kept: &mut Vec<KeptElement>, el: &Element) -> Result<DiskFields> {
    let backing_store = match take(kept, "backingStore", el)? {
        Some(k) if plain_backing_store(&k) => Some(backing_store(k, el)?),
        Some(k) => {
            kept.push(k);
            None
        }
        None => None,
    };
    Ok(DiskFields {
        serial: take(kept, "serial", el)?.and_then(|k| k.text),
        shareable: take(kept, "shareable", el)?.is_some(),
        transient: take(kept, "transient", el)?.is_some(),
        backing_store,
    })
}

/// Whether each image of the chain is a file or block device named by
/// its path alone, with nothing but its format: what [`BackingStore`]
/// holds. Another chain stays kept as written, whole.
fn plain_backing_store(k: &KeptElement) -> bool {
    let type_ok = matches!(k.attr("type"), None | Some("file" | "block"));
    type_ok
        && k.children.iter().all(|c| match c.name.as_str() {
            "source" => {
                c.children.is_empty() && c.attributes.iter().all(|(n, _)| n == "file" || n == "dev")
            }
            "format" => c.children.is_empty(),
            _ => plain_backing_store(c),
        })
}

/// One `<backingStore>` and, nested, those under it.
fn backing_store(mut k: KeptElement, el: &Element) -> Result<BackingStore> {
    let format =
        take(&mut k.children, "format", el)?.and_then(|f| kw(f.attr("type"), ImageFormat::parse));
    let source = take(&mut k.children, "source", el)?;
    let backing = take(&mut k.children, "backingStore", el)?
        .map(|b| backing_store(b, el).map(Box::new))
        .transpose()?;
    let pos = pos_of(el, "backingStore");
    let source = match (k.attr("type"), source) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(DomainError::missing(
                pos,
                "backingStore",
                "attribute 'type'",
                "add type='file' (or 'block') to say what the <source> is",
            ));
        }
        (Some(t), s) => {
            let attr = if t == "block" { "dev" } else { "file" };
            if let Some(other) = s
                .as_ref()
                .and_then(|s| s.attributes.iter().find(|(n, _)| n != attr))
            {
                return Err(DomainError::invalid(
                    pos,
                    "backingStore",
                    format!("a type='{t}' backing store's <source> has {}=", other.0),
                    format!("write <source {attr}='…'/>"),
                ));
            }
            let p = path(el, "backingStore", s.as_ref().and_then(|s| s.attr(attr)))?;
            Some(if t == "block" {
                DiskSource::Block(p)
            } else {
                DiskSource::File(p)
            })
        }
    };
    Ok(BackingStore {
        source,
        format,
        backing,
    })
}

/// A number the table has checked to be decimal, as u32 in `min..=max`.
fn u32_attr(el: &Element, k: &KeptElement, attr: &str, min: u32, max: u32) -> Result<Option<u32>> {
    k.attr(attr)
        .map(|v| number(pos_of(el, &k.name), &k.name, attr, v, min, max))
        .transpose()
}

fn u64_attr(k: &KeptElement, attr: &str) -> Option<u64> {
    k.attr(attr).and_then(hex_or_dec)
}

/// A TCP port, or -1 for one chosen at start.
fn port_attr(el: &Element, k: &KeptElement, attr: &str) -> Result<Option<i32>> {
    let Some(v) = k.attr(attr) else {
        return Ok(None);
    };
    match v.parse::<i32>() {
        Ok(p) if (-1..=65535).contains(&p) => Ok(Some(p)),
        _ => Err(DomainError::invalid(
            pos_of(el, &k.name),
            &k.name,
            format!("{attr} '{v}' is not a port"),
            "give a TCP port from 0 to 65535, or -1 to have one chosen at start",
        )),
    }
}

/// A required keyword attribute the table has checked.
fn req_kw<T>(
    el: &Element,
    k: &KeptElement,
    attr: &str,
    parse: fn(&str) -> Option<T>,
    example: &str,
) -> Result<T> {
    kw(k.attr(attr), parse).ok_or_else(|| {
        DomainError::missing(
            pos_of(el, &k.name),
            &k.name,
            format!("attribute '{attr}'"),
            format!("add {attr}='{example}'"),
        )
    })
}

/// The devices of the kept vocabulary that have typed fields.
const TYPED_DEVICES: &[&str] = &[
    "controller",
    "input",
    "graphics",
    "video",
    "sound",
    "audio",
    "channel",
    "rng",
    "memballoon",
    "watchdog",
    "panic",
];

/// Turns the kept devices that have typed fields into them; the rest stay
/// kept. `el` is `<devices>`, for positions.
pub(super) fn device_fields(d: &mut Devices, el: &Element) -> Result<()> {
    let mut audio_ids = std::collections::HashSet::new();
    for mut k in std::mem::take(&mut d.kept) {
        if !TYPED_DEVICES.contains(&k.name.as_str()) {
            d.kept.push(k);
            continue;
        }
        let c = common(&mut k.children, el)?;
        match k.name.as_str() {
            "controller" => {
                let mut model_name = None;
                let mut target = None;
                let (mut queues, mut iothread) = (None, None);
                let mut kept = Vec::new();
                for ch in std::mem::take(&mut k.children) {
                    match ch.name.as_str() {
                        "model" => model_name = ch.attr("name").map(str::to_owned),
                        "target" => {
                            target = Some(ControllerTarget {
                                chassis_nr: u32_attr(el, &ch, "chassisNr", 0, u32::MAX)?,
                                chassis: u32_attr(el, &ch, "chassis", 0, u32::MAX)?,
                                port: ch.attr("port").and_then(hex_or_dec).map(|p| p as u32),
                                bus_nr: u32_attr(el, &ch, "busNr", 0, u32::MAX)?,
                                index: u32_attr(el, &ch, "index", 0, u32::MAX)?,
                                hotplug: on(&ch, "hotplug"),
                                node: match take(&mut ch.children.clone(), "node", el)? {
                                    None => None,
                                    Some(n) => n
                                        .text
                                        .as_deref()
                                        .map(|v| {
                                            number(
                                                pos_of(el, "node"),
                                                "node",
                                                "node",
                                                v,
                                                0u32,
                                                u32::MAX,
                                            )
                                        })
                                        .transpose()?,
                                },
                            })
                        }
                        "driver" => {
                            queues = u32_attr(el, &ch, "queues", 1, u32::MAX)?;
                            iothread = u32_attr(el, &ch, "iothread", 1, u32::MAX)?;
                        }
                        _ => kept.push(ch),
                    }
                }
                d.controllers.push(Controller {
                    controller_type: req_kw(el, &k, "type", ControllerType::parse, "pci")?,
                    index: u32_attr(el, &k, "index", 0, u32::MAX)?,
                    model: k.attr("model").map(str::to_owned),
                    ports: u32_attr(el, &k, "ports", 1, u32::MAX)?,
                    vectors: u32_attr(el, &k, "vectors", 1, u32::MAX)?,
                    model_name,
                    target,
                    queues,
                    iothread,
                    address: c.address,
                    alias: c.alias,
                    kept,
                });
            }
            "input" => d.inputs.push(Input {
                input_type: req_kw(el, &k, "type", InputType::parse, "tablet")?,
                bus: kw(k.attr("bus"), InputBus::parse),
                address: c.address,
                alias: c.alias,
                kept: k.children,
            }),
            "graphics" => {
                let mut listens = Vec::new();
                let mut kept = Vec::new();
                for ch in std::mem::take(&mut k.children) {
                    if ch.name == "listen" {
                        listens.push(GraphicsListen {
                            listen_type: kw(ch.attr("type"), ListenType::parse),
                            address: ch.attr("address").map(str::to_owned),
                            network: ch.attr("network").map(str::to_owned),
                            socket: path(el, "graphics", ch.attr("socket"))?,
                        });
                    } else {
                        kept.push(ch);
                    }
                }
                d.graphics.push(Graphics {
                    graphics_type: req_kw(el, &k, "type", GraphicsType::parse, "vnc")?,
                    port: port_attr(el, &k, "port")?,
                    autoport: yes(&k, "autoport"),
                    websocket: port_attr(el, &k, "websocket")?,
                    listen: k.attr("listen").map(str::to_owned),
                    socket: path(el, "graphics", k.attr("socket"))?,
                    passwd: k.attr("passwd").map(str::to_owned),
                    keymap: k.attr("keymap").map(str::to_owned),
                    tls_port: port_attr(el, &k, "tlsPort")?,
                    default_mode: k.attr("defaultMode").map(str::to_owned),
                    listens,
                    kept,
                });
            }
            "video" => {
                let mut model = None;
                let mut kept = Vec::new();
                for ch in std::mem::take(&mut k.children) {
                    if ch.name == "model" {
                        if model.is_some() {
                            return Err(DomainError::duplicate(
                                pos_of(el, "video"),
                                "video",
                                "<model>",
                            ));
                        }
                        model = Some(VideoModel {
                            model_type: req_kw(el, &ch, "type", VideoModelType::parse, "virtio")?,
                            vram: u64_attr(&ch, "vram"),
                            ram: u64_attr(&ch, "ram"),
                            vgamem: u64_attr(&ch, "vgamem"),
                            vram64: u64_attr(&ch, "vram64"),
                            heads: u32_attr(el, &ch, "heads", 1, 64)?,
                            primary: yes(&ch, "primary"),
                            blob: on(&ch, "blob"),
                            kept: ch.children,
                        });
                    } else {
                        kept.push(ch);
                    }
                }
                d.videos.push(Video {
                    model,
                    address: c.address,
                    alias: c.alias,
                    kept,
                });
            }
            "sound" => {
                let codecs = k
                    .children
                    .iter()
                    .filter(|ch| ch.name == "codec")
                    .filter_map(|ch| kw(ch.attr("type"), SoundCodecType::parse))
                    .collect();
                let audio = match k.children.iter().find(|ch| ch.name == "audio") {
                    None => None,
                    Some(a) => u32_attr(el, a, "id", 1, u32::MAX)?,
                };
                d.sounds.push(Sound {
                    model: req_kw(el, &k, "model", SoundModel::parse, "ich9")?,
                    codecs,
                    audio,
                    streams: u32_attr(el, &k, "streams", 1, u32::MAX)?,
                    multichannel: yes(&k, "multichannel"),
                    address: c.address,
                    alias: c.alias,
                    kept: k
                        .children
                        .into_iter()
                        .filter(|ch| ch.name != "codec" && ch.name != "audio")
                        .collect(),
                });
            }
            "audio" => {
                let id = u32_attr(el, &k, "id", 1, u32::MAX)?.ok_or_else(|| {
                    DomainError::missing(
                        pos_of(el, "audio"),
                        "audio",
                        "attribute 'id'",
                        "add id='1'",
                    )
                })?;
                if !audio_ids.insert(id) {
                    return Err(DomainError::duplicate(
                        pos_of(el, "audio"),
                        "devices",
                        format!("<audio id='{id}'>"),
                    ));
                }
                d.audios.push(Audio {
                    id,
                    audio_type: req_kw(el, &k, "type", AudioType::parse, "none")?,
                    timer_period: u32_attr(el, &k, "timerPeriod", 1, u32::MAX)?,
                    kept: k.children,
                });
            }
            "channel" => {
                let source = k.child("source");
                let target = k.child("target");
                let t = |attr: &str| target.and_then(|t| t.attr(attr)).map(str::to_owned);
                d.channels.push(Channel {
                    channel_type: req_kw(el, &k, "type", ChannelType::parse, "unix")?,
                    source_mode: kw(
                        source.and_then(|s| s.attr("mode")),
                        ChannelSourceMode::parse,
                    ),
                    source_path: path(el, "channel", source.and_then(|s| s.attr("path")))?,
                    source_channel: source.and_then(|s| s.attr("channel")).map(str::to_owned),
                    target_type: kw(
                        target.and_then(|t| t.attr("type")),
                        ChannelTargetType::parse,
                    ),
                    target_name: t("name"),
                    target_state: kw(target.and_then(|t| t.attr("state")), ChannelState::parse),
                    target_address: t("address"),
                    target_port: t("port"),
                    address: c.address,
                    alias: c.alias,
                });
            }
            "rng" => {
                let backend = k.child("backend");
                let rate = k.child("rate");
                let model = req_kw(el, &k, "model", VirtioModel::parse, "virtio")?;
                let rng = Rng {
                    model,
                    backend: kw(
                        backend.and_then(|b| b.attr("model")),
                        RngBackendModel::parse,
                    ),
                    backend_path: path(el, "backend", backend.and_then(|b| b.text.as_deref()))?,
                    rate_bytes: rate.and_then(|r| u64_attr(r, "bytes")),
                    rate_period: rate.and_then(|r| u64_attr(r, "period")),
                    address: c.address,
                    alias: c.alias,
                    kept: Vec::new(),
                };
                let kept = k
                    .children
                    .into_iter()
                    .filter(|ch| ch.name != "backend" && ch.name != "rate")
                    .collect();
                d.rngs.push(Rng { kept, ..rng });
            }
            "memballoon" => {
                if d.memballoon.is_some() {
                    return Err(DomainError::duplicate(
                        pos_of(el, "memballoon"),
                        "devices",
                        "<memballoon>",
                    ));
                }
                let stats_period = match k.child("stats") {
                    None => None,
                    Some(s) => u32_attr(el, s, "period", 0, u32::MAX)?,
                };
                d.memballoon = Some(Memballoon {
                    model: req_kw(el, &k, "model", MemballoonModel::parse, "virtio")?,
                    autodeflate: on(&k, "autodeflate"),
                    free_page_reporting: on(&k, "freePageReporting"),
                    stats_period,
                    address: c.address,
                    alias: c.alias,
                    kept: k
                        .children
                        .into_iter()
                        .filter(|ch| ch.name != "stats")
                        .collect(),
                });
            }
            "watchdog" => d.watchdogs.push(Watchdog {
                model: req_kw(el, &k, "model", WatchdogModel::parse, "itco")?,
                action: kw(k.attr("action"), WatchdogAction::parse),
                address: c.address,
                alias: c.alias,
            }),
            "panic" => d.panics.push(Panic {
                model: kw(k.attr("model"), PanicModel::parse),
                address: c.address,
                alias: c.alias,
            }),
            _ => d.kept.push(k),
        }
    }
    Ok(())
}
