//! Typed fields of virtual machines read from elements of the kept
//! vocabulary: the table ([`crate::kept`]) has checked their names and
//! keywords already; here they become typed values, with the ranges the
//! table does not know.

use std::path::PathBuf;

use super::super::def::*;
use super::super::error::DomainError;
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
        });
    }
    if let Some(k) = take(&mut os.kept, "nvram", el)? {
        os.nvram = Some(Nvram {
            path: path(el, "nvram", k.text.as_deref())?,
            template: path(el, "nvram", k.attr("template"))?,
        });
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
    if let Some(k) = take(&mut f.kept, "smm", el)? {
        f.smm = Some(on(&k, "state").unwrap_or(true));
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

/// `<serial>`, `<shareable/>`, `<transient/>` of a disk.
pub(super) fn disk_fields(
    kept: &mut Vec<KeptElement>,
    el: &Element,
) -> Result<(Option<String>, bool, bool)> {
    let serial = take(kept, "serial", el)?.and_then(|k| k.text);
    let shareable = take(kept, "shareable", el)?.is_some();
    let transient = take(kept, "transient", el)?.is_some();
    Ok((serial, shareable, transient))
}
