//! From the raw XML tree to a validated [`DomainDef`].
//!
//! Elements may come in any order. Unknown elements and attributes, and
//! elements of foreign namespaces outside `<metadata>` (but `<lxc:namespace>`
//! and `<lxvirt:seccomp>`),
//! are errors: a definition kept in git must not lose fields silently.
//! Semantic checks run here too, where the positions are at hand.

mod addresses;
mod devices;
pub use devices::parse_device;
mod helpers;
mod kept;
mod network;
mod security;
mod vm;
pub use network::parse_network;
pub use security::is_context;

use std::collections::{BTreeMap, HashSet};

use super::def::*;
use super::error::DomainError;
use super::values::{Capability, DomainName, IdRef, is_env_name};
use super::xml::{self, Element, Node};
use helpers::*;

/// What is being parsed: the domain type decides which elements apply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    pub kind: DomainType,
}

impl Ctx {
    fn lxc(self) -> bool {
        self.kind == DomainType::Lxc
    }

    /// Refuses `el` unless the domain is a container.
    fn lxc_only(self, el: &Element) -> Result<()> {
        if self.lxc() {
            Ok(())
        } else {
            Err(not_for(el, self.kind.as_str(), "lxc"))
        }
    }

    /// Refuses `el` unless the domain is a virtual machine.
    fn vm_only(self, el: &Element) -> Result<()> {
        if self.lxc() {
            Err(not_for(el, "lxc", "kvm and qemu"))
        } else {
            Ok(())
        }
    }
}

const ROOT_CHILDREN: &[&str] = &[
    "name",
    "uuid",
    "title",
    "description",
    "metadata",
    "memory",
    "currentMemory",
    "memtune",
    "vcpu",
    "cputune",
    "numatune",
    "blkiotune",
    "resource",
    "os",
    "idmap",
    "features",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "devices",
    "seclabel",
];

/// Parses a domain document: `source` is the text `root` was parsed from
/// (for `<metadata>`, kept verbatim).
pub fn parse_domain(root: &Element, source: &str) -> Result<DomainDef> {
    if root.namespace.is_some() || root.name != "domain" {
        return Err(DomainError::invalid(
            root.pos,
            &root.qname,
            format!("the root element is <{}>", root.qname),
            "a domain document starts with <domain type='lxc'>",
        ));
    }
    check_attrs(root, &["type", "id"])?;
    // libvirt writes the running domain's id into what `virsh dumpxml`
    // prints and ignores it on define, as lxvirt does: the id belongs to a
    // run, not to the definition, so it is checked and not stored.
    if let Some(id) = root.attribute("id") {
        number(id.pos, "domain", "id", id.value.trim(), 0u32, u32::MAX)?;
    }
    let type_attr = req_attr(root, "type", "add type='lxc' (or 'kvm', 'qemu')")?;
    let kind = keyword(
        type_attr.pos,
        "domain",
        "domain type",
        &type_attr.value,
        DomainType::parse,
        DomainType::NAMES,
    )?;
    let ctx = Ctx { kind };

    // Everything in no namespace, plus <lxc:namespace> and <lxvirt:seccomp>.
    let mut plain = root.clone();
    let mut lxc_namespace = None;
    let mut lxc_ns_seen = false;
    let mut seccomp = None;
    let mut userns = None;
    let mut pids_max = None;
    let mut api_access = None;
    plain.children.retain(|n| match n {
        Node::Element(e) => e.namespace.is_none(),
        Node::Text(_) => true,
    });
    for child in root.elements() {
        let Some(ns) = &child.namespace else { continue };
        if ns == LXC_NAMESPACE_URI && child.name == "namespace" {
            ctx.lxc_only(child)?;
            if lxc_ns_seen {
                return Err(DomainError::duplicate(
                    child.pos,
                    "domain",
                    "<lxc:namespace>",
                ));
            }
            lxc_ns_seen = true;
            lxc_namespace = Some(security::parse_lxc_namespace(child)?);
        } else if ns == LXVIRT_NAMESPACE_URI && child.name == "seccomp" {
            ctx.lxc_only(child)?;
            if seccomp.is_some() {
                return Err(DomainError::duplicate(
                    child.pos,
                    "domain",
                    "<lxvirt:seccomp>",
                ));
            }
            seccomp = Some(security::parse_seccomp(child)?);
        } else if ns == LXVIRT_NAMESPACE_URI && child.name == "pids" {
            ctx.lxc_only(child)?;
            if pids_max.is_some() {
                return Err(DomainError::duplicate(child.pos, "domain", "<lxvirt:pids>"));
            }
            pids_max = Some(security::parse_pids(child)?);
        } else if ns == LXVIRT_NAMESPACE_URI && child.name == "api" {
            ctx.lxc_only(child)?;
            if api_access.is_some() {
                return Err(DomainError::duplicate(child.pos, "domain", "<lxvirt:api>"));
            }
            api_access = Some(security::parse_api(child)?);
        } else if ns == LXVIRT_NAMESPACE_URI && child.name == "userns" {
            if userns.is_some() {
                return Err(DomainError::duplicate(
                    child.pos,
                    "domain",
                    "<lxvirt:userns>",
                ));
            }
            let parsed = security::parse_userns(child)?;
            // A VM's qemu always runs as the first id of a block lxvirt
            // allocates; its live definition says which.
            if !ctx.lxc() && parsed.mode != UsernsMode::Auto {
                return Err(DomainError::invalid(
                    child.pos,
                    &child.qname,
                    "a virtual machine's qemu always runs as host ids lxvirt allocates",
                    "use mode='auto' or remove the element",
                ));
            }
            userns = Some((parsed, child.pos));
        } else {
            return Err(foreign(root, child, ns));
        }
    }
    let (plain, mut kept) =
        kept::split_kept(ctx, &plain, super::kept::ROOT, &["cputune", "idmap"])?;
    let (cpu, pm) = vm::root_fields(&mut kept, root)?;
    check_children(&plain, ROOT_CHILDREN, &[])?;
    // From here on, the typed children only.
    let root = &plain;

    let name = object_name(root, "domain", "my-domain", DomainName::new)?;
    let uuid = uuid_or_new(root, "domain")?;
    let title = match root.element("title") {
        None => None,
        Some(el) => {
            check_attrs(el, &[])?;
            let t = text(el)?;
            printable(el, &t)?;
            if t.contains('\n') {
                return Err(DomainError::invalid(
                    el.pos,
                    "title",
                    "the title has more than one line",
                    "keep the title on one line; longer text belongs in <description>",
                ));
            }
            Some(t)
        }
    };
    let description = match root.element("description") {
        None => None,
        Some(el) => {
            check_attrs(el, &[])?;
            let t = text(el)?;
            printable(el, &t)?;
            Some(t)
        }
    };
    let metadata = match root.element("metadata") {
        None => None,
        Some(el) => parse_metadata(el, source)?,
    };

    let memory_el = req_child(root, "memory", "add <memory unit='MiB'>256</memory>")?;
    let memory = if ctx.lxc() {
        size(memory_el, "unit")?
    } else {
        check_attrs(memory_el, &["unit", "dumpCore"])?;
        let value = text(memory_el)?;
        size_value(
            memory_el,
            memory_el.pos,
            &value,
            memory_el.attribute("unit"),
        )?
    };
    let dump_core = attr_on_off(memory_el, "dumpCore")?;
    if memory == 0 {
        return Err(DomainError::invalid(
            memory_el.pos,
            "memory",
            "memory is zero",
            "give the domain some memory, e.g. <memory unit='MiB'>256</memory>",
        ));
    }
    let current_memory = match root.element("currentMemory") {
        None => memory,
        Some(el) => {
            let cur = size(el, "unit")?;
            if cur > memory {
                return Err(DomainError::invalid(
                    el.pos,
                    "currentMemory",
                    format!(
                        "current memory ({} KiB) is more than <memory> ({} KiB)",
                        cur / 1024,
                        memory / 1024
                    ),
                    "lower <currentMemory> or raise <memory>",
                ));
            }
            if cur == 0 {
                return Err(DomainError::invalid(
                    el.pos,
                    "currentMemory",
                    "current memory is zero",
                    "remove <currentMemory> or give a positive size",
                ));
            }
            cur
        }
    };

    // The same element for containers and VMs (libvirt's shape).
    let memtune = opt(root, "memtune", parse_memtune)?;
    let vcpu = match root.element("vcpu") {
        None => Vcpu::default(),
        Some(el) => parse_vcpu(ctx, el)?,
    };
    let cputune = opt(root, "cputune", |el| {
        ctx.lxc_only(el)?;
        parse_cputune(el)
    })?;
    // The same element for containers and VMs (libvirt's shape).
    let numatune = opt(root, "numatune", |el| parse_numatune(ctx, el))?;
    // The same element for containers and VMs (libvirt's shape).
    let blkiotune = opt(root, "blkiotune", parse_blkiotune)?;
    let partition = opt(root, "resource", |el| {
        check_attrs(el, &[])?;
        check_children(el, &["partition"], &[])?;
        let p = req_child(el, "partition", "add <partition>/machine</partition>")?;
        text_path(p)
    })?;
    let os_el = req_child(
        root,
        "os",
        if ctx.lxc() {
            "add <os><type>exe</type><init>/sbin/init</init></os>"
        } else {
            "add <os><type>hvm</type></os>"
        },
    )?;
    let os = parse_os(ctx, os_el)?;
    let idmap = opt(root, "idmap", |el| {
        ctx.lxc_only(el)?;
        parse_idmap(el)
    })?;
    if let (Some((_, pos)), Some(_)) = (&userns, &idmap) {
        return Err(DomainError::invalid(
            *pos,
            "lxvirt:userns",
            "<lxvirt:userns> and <idmap> both say how the container's ids map",
            "remove one: <idmap> for ranges you choose, <lxvirt:userns mode='auto'/> for a range lxvirt allocates, mode='host' for none",
        ));
    }
    let features = match root.element("features") {
        None => Features::default(),
        Some(el) => parse_features(ctx, el)?,
    };
    let clock = match root.element("clock") {
        None => Clock::default(),
        Some(el) => parse_clock(ctx, el)?,
    };
    let on_poweroff = lifecycle(root, "on_poweroff", LifecycleAction::Destroy)?;
    let on_reboot = lifecycle(root, "on_reboot", LifecycleAction::Restart)?;
    let on_crash = lifecycle(root, "on_crash", LifecycleAction::Destroy)?;
    if ctx.lxc() && on_crash == LifecycleAction::PreserveRunning {
        // A container's crash is its init's end: nothing is left running.
        return Err(DomainError::invalid(
            root.element("on_crash").map_or(root.pos, |e| e.pos),
            "on_crash",
            "'preserve-running' needs a guest that keeps running after a crash, which a container is not",
            "use 'preserve' to keep the crashed container for inspection",
        ));
    }
    let devices = match root.element("devices") {
        None => Devices::default(),
        Some(el) => devices::parse_devices(ctx, el)?,
    };
    let seclabel = opt(root, "seclabel", security::parse_seclabel)?;
    if let Os::Hvm(h) = &os
        && !h.boot.is_empty()
        && (devices.disks.iter().any(|d| d.boot_order.is_some())
            || devices.interfaces.iter().any(|i| i.boot_order.is_some()))
    {
        let pos = os_el.element("boot").map_or(os_el.pos, |b| b.pos);
        return Err(DomainError::invalid(
            pos,
            "boot",
            "<os><boot dev=…> and the devices' <boot order=…> both set the boot order",
            "keep one: remove the <boot dev=…> elements of <os>, or the devices' <boot order=…>",
        ));
    }

    Ok(DomainDef {
        domain_type: kind,
        name,
        uuid,
        title,
        description,
        metadata,
        memory,
        current_memory,
        dump_core,
        memtune,
        vcpu,
        cputune,
        numatune,
        blkiotune,
        partition,
        os,
        idmap,
        features,
        clock,
        on_poweroff,
        on_reboot,
        on_crash,
        devices: std::sync::Arc::new(devices),
        seclabel,
        lxc_namespace,
        seccomp,
        userns: userns.map(|(u, _)| u),
        pids_max,
        api_access,
        cpu,
        pm,
        kept,
    })
}

/// Applies `f` to the child `name` when present.
fn opt<T>(el: &Element, name: &str, f: impl FnOnce(&Element) -> Result<T>) -> Result<Option<T>> {
    el.element(name).map(f).transpose()
}

fn parse_metadata(el: &Element, source: &str) -> Result<Option<Metadata>> {
    check_attrs(el, &[])?;
    for node in &el.children {
        match node {
            Node::Text(t) if !t.trim().is_empty() => return Err(unexpected_text(el, t)),
            Node::Text(_) => {}
            Node::Element(child) if child.namespace.is_none() => {
                return Err(DomainError::invalid(
                    child.pos,
                    "metadata",
                    format!("<{}> is in no namespace", child.qname),
                    "give each element inside <metadata> its own namespace, e.g. <app:info xmlns:app='https://example.org/app/1'>",
                ));
            }
            Node::Element(_) => {}
        }
    }
    let content = source.get(el.content_span.clone()).unwrap_or_default();
    if content.trim().is_empty() {
        return Ok(None);
    }
    // Kept verbatim, the content must stand on its own: namespace prefixes
    // declared on ancestors would be lost.
    if let Err(e) = xml::parse_str(&format!("<metadata>{content}</metadata>")) {
        let detail = match e {
            xml::XmlError::UnknownPrefix { prefix, .. } => {
                format!("prefix '{prefix}' is declared outside <metadata>")
            }
            other => other.to_string(),
        };
        return Err(DomainError::invalid(
            el.pos,
            "metadata",
            format!("the content cannot be kept on its own: {detail}"),
            "declare namespaces on the elements inside <metadata>",
        ));
    }
    Ok(Some(Metadata(content.to_owned())))
}

fn parse_memtune(el: &Element) -> Result<MemTune> {
    check_attrs(el, &[])?;
    check_children(
        el,
        &[
            "hard_limit",
            "soft_limit",
            "swap_hard_limit",
            "min_guarantee",
        ],
        &[],
    )?;
    let get = |name: &str| opt(el, name, |e| size(e, "unit"));
    let tune = MemTune {
        hard_limit: get("hard_limit")?,
        soft_limit: get("soft_limit")?,
        swap_hard_limit: get("swap_hard_limit")?,
        min_guarantee: get("min_guarantee")?,
    };
    if let (Some(hard), Some(swap)) = (tune.hard_limit, tune.swap_hard_limit)
        && swap < hard
    {
        let pos = el.element("swap_hard_limit").map_or(el.pos, |e| e.pos);
        return Err(DomainError::invalid(
            pos,
            "swap_hard_limit",
            "swap_hard_limit is below hard_limit",
            "swap_hard_limit counts memory plus swap; make it at least hard_limit",
        ));
    }
    Ok(tune)
}

fn parse_vcpu(ctx: Ctx, el: &Element) -> Result<Vcpu> {
    if ctx.lxc() {
        check_attrs(el, &["placement", "cpuset"])?;
    } else {
        check_attrs(el, &["placement", "cpuset", "current"])?;
    }
    let count = number(
        el.pos,
        "vcpu",
        "vcpu count",
        &text(el)?,
        1u32,
        super::cpuset::MAX_ID,
    )?;
    let placement = attr_keyword(el, "placement", VcpuPlacement::parse, VcpuPlacement::NAMES)?
        .unwrap_or(VcpuPlacement::Static);
    let cpuset = match el.attribute("cpuset") {
        None => None,
        Some(a) => Some(cpu_list(el, a)?),
    };
    let current = match el.attribute("current") {
        None => None,
        Some(a) => Some(number(
            a.pos,
            "vcpu",
            "current vCPU count",
            &a.value,
            1,
            count,
        )?),
    };
    Ok(Vcpu {
        count,
        placement,
        cpuset,
        current,
    })
}

fn cpu_list(el: &Element, a: &xml::Attribute) -> Result<super::cpuset::CpuSet> {
    super::cpuset::CpuSet::parse(&a.value).map_err(|e| {
        DomainError::invalid(
            a.pos,
            &el.qname,
            format!("{} '{}' is not a valid list: {e}", a.name, a.value),
            "write ids and ranges like 0-3,^2,5",
        )
    })
}

fn parse_cputune(el: &Element) -> Result<CpuTune> {
    check_attrs(el, &[])?;
    check_children(el, &["shares", "period", "quota"], &[])?;
    let shares = opt(el, "shares", |e| {
        number(e.pos, "shares", "shares", &plain_text(e)?, 2u64, 262_144)
    })?;
    let period = opt(el, "period", |e| {
        number(
            e.pos,
            "period",
            "period",
            &plain_text(e)?,
            1000u64,
            1_000_000,
        )
    })?;
    let quota = opt(el, "quota", |e| {
        let t = plain_text(e)?;
        if t == "-1" {
            return Ok(-1);
        }
        let n = number(
            e.pos,
            "quota",
            "quota",
            &t,
            1000u64,
            MAX_QUOTA.unsigned_abs(),
        )
        .map_err(|_| {
            DomainError::invalid(
                e.pos,
                "quota",
                format!("quota '{t}' is out of range"),
                format!(
                    "use -1 for unlimited or a number of microseconds from 1000 to {MAX_QUOTA}"
                ),
            )
        })?;
        Ok(i64::try_from(n).unwrap_or(MAX_QUOTA))
    })?;
    Ok(CpuTune {
        shares,
        period,
        quota,
    })
}

fn parse_numatune(ctx: Ctx, el: &Element) -> Result<NumaTune> {
    check_attrs(el, &[])?;
    check_children(el, &["memory"], &["memnode"])?;
    let mut memnodes: Vec<MemNode> = Vec::new();
    for n in el.elements_named("memnode") {
        // Guest NUMA cells are a virtual machine's.
        ctx.vm_only(n)?;
        check_attrs(n, &["cellid", "mode", "nodeset"])?;
        check_children(n, &[], &[])?;
        let id = req_attr(n, "cellid", "add cellid='0'")?;
        let cellid = number(id.pos, "memnode", "cellid", id.value.trim(), 0u32, u32::MAX)?;
        if memnodes.iter().any(|m| m.cellid == cellid) {
            return Err(DomainError::duplicate(
                n.pos,
                "numatune",
                format!("<memnode cellid='{cellid}'>"),
            ));
        }
        memnodes.push(MemNode {
            cellid,
            mode: numa_mode(n)?,
            nodeset: cpu_list(n, req_attr(n, "nodeset", "add nodeset='0'")?)?,
        });
    }
    let memory = match el.element("memory") {
        None if memnodes.is_empty() => {
            return Err(DomainError::missing(
                el.pos,
                "numatune",
                "<memory>",
                "add <memory mode='strict' nodeset='0'/>",
            ));
        }
        None => None,
        Some(m) => {
            check_attrs(m, &["mode", "nodeset"])?;
            check_children(m, &[], &[])?;
            Some(NumaMemory {
                mode: numa_mode(m)?,
                nodeset: cpu_list(m, req_attr(m, "nodeset", "add nodeset='0'")?)?,
            })
        }
    };
    Ok(NumaTune { memory, memnodes })
}

/// `mode=` of `<memory>` or `<memnode>`; libvirt's default is strict.
fn numa_mode(el: &Element) -> Result<NumaMode> {
    Ok(attr_keyword(el, "mode", NumaMode::parse, NumaMode::NAMES)?.unwrap_or(NumaMode::Strict))
}

fn parse_blkiotune(el: &Element) -> Result<BlkioTune> {
    check_attrs(el, &[])?;
    check_children(el, &["weight"], &["device"])?;
    let weight = opt(el, "weight", blkio_weight)?;
    let mut devices: Vec<BlkioDevice> = Vec::new();
    let mut paths = HashSet::new();
    for d in el.elements_named("device") {
        check_attrs(d, &[])?;
        check_children(
            d,
            &[
                "path",
                "weight",
                "read_bytes_sec",
                "write_bytes_sec",
                "read_iops_sec",
                "write_iops_sec",
            ],
            &[],
        )?;
        let path_el = req_child(d, "path", "add <path>/dev/sda</path>")?;
        let path = text_path(path_el)?;
        if !paths.insert(path.clone()) {
            return Err(DomainError::duplicate(
                path_el.pos,
                "blkiotune",
                format!("device {}", path.display()),
            ));
        }
        let rate = |name: &str| {
            opt(d, name, |e| {
                number(e.pos, name, name, &plain_text(e)?, 0u64, u64::MAX)
            })
        };
        devices.push(BlkioDevice {
            weight: opt(d, "weight", blkio_weight)?,
            read_bytes_sec: rate("read_bytes_sec")?,
            write_bytes_sec: rate("write_bytes_sec")?,
            read_iops_sec: rate("read_iops_sec")?,
            write_iops_sec: rate("write_iops_sec")?,
            path,
        });
    }
    Ok(BlkioTune { weight, devices })
}

fn blkio_weight(e: &Element) -> Result<u32> {
    number(e.pos, "weight", "weight", &plain_text(e)?, 100u32, 1000)
}

fn token(el: &Element, a: &xml::Attribute, extra: &[char]) -> Result<String> {
    let v = a.value.trim();
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
    {
        return Err(DomainError::invalid(
            a.pos,
            &el.qname,
            format!("{} '{}' is not valid", a.name, a.value),
            "use letters, digits and '_' only, such as x86_64",
        ));
    }
    Ok(v.to_owned())
}

fn parse_os(ctx: Ctx, el: &Element) -> Result<Os> {
    let full = el;
    let (el, kept) = kept::split_kept(ctx, el, super::kept::OS, &[])?;
    let el = &el;
    check_attrs(el, if ctx.lxc() { &[] } else { &["firmware"] })?;
    check_children(
        el,
        &[
            "type",
            "init",
            "initdir",
            "inituser",
            "initgroup",
            "cmdline",
            "kernel",
            "initrd",
        ],
        &["initarg", "initenv", "boot"],
    )?;
    let type_el = req_child(
        el,
        "type",
        if ctx.lxc() {
            "add <type>exe</type>"
        } else {
            "add <type>hvm</type>"
        },
    )?;
    check_attrs(type_el, &["arch", "machine"])?;
    let os_type = trim_token(&text(type_el)?).to_owned();
    let arch = type_el
        .attribute("arch")
        .map(|a| token(type_el, a, &[]))
        .transpose()?;
    match (ctx.lxc(), os_type.as_str()) {
        (true, "exe") => {}
        (false, "hvm") => {}
        (true, _) => {
            return Err(DomainError::invalid(
                type_el.pos,
                "type",
                format!("an lxc domain cannot run OS type '{os_type}'"),
                "write <type>exe</type>",
            ));
        }
        (false, _) => {
            return Err(DomainError::invalid(
                type_el.pos,
                "type",
                format!("a {} domain cannot run OS type '{os_type}'", ctx.kind),
                "write <type>hvm</type>",
            ));
        }
    }
    let cmdline = opt(el, "cmdline", |e| {
        check_attrs(e, &[])?;
        let t = text(e)?;
        printable(e, &t)?;
        Ok(t)
    })?;

    if ctx.lxc() {
        for vm in ["kernel", "initrd", "boot"] {
            if let Some(e) = el.element(vm) {
                return Err(not_for(e, "lxc", "kvm and qemu"));
            }
        }
        if let Some(a) = type_el.attribute("machine") {
            return Err(DomainError::UnknownAttribute {
                pos: a.pos,
                element: "type".into(),
                attribute: "machine".into(),
                hint: " (machine types apply to kvm and qemu domains only)".into(),
            });
        }
        let init_el = el.element("init").ok_or_else(|| {
            DomainError::missing(
                el.pos,
                "os",
                "<init>, which an 'exe' domain needs",
                "add <init>/sbin/init</init>",
            )
        })?;
        let init = text_path(init_el)?;
        let mut initargs = Vec::new();
        for a in el.elements_named("initarg") {
            check_attrs(a, &[])?;
            let t = text(a)?;
            printable(a, &t)?;
            initargs.push(t);
        }
        let mut initenv: Vec<(String, String)> = Vec::new();
        let mut env_names = HashSet::new();
        for e in el.elements_named("initenv") {
            check_attrs(e, &["name"])?;
            let n = req_attr(e, "name", "add name='VARIABLE'")?;
            if !is_env_name(&n.value) {
                return Err(DomainError::invalid(
                    n.pos,
                    "initenv",
                    format!("'{}' is not a valid environment variable name", n.value),
                    "use letters, digits and '_', not starting with a digit",
                ));
            }
            if !env_names.insert(n.value.clone()) {
                return Err(DomainError::duplicate(
                    e.pos,
                    "os",
                    format!("<initenv name='{}'>", n.value),
                ));
            }
            let v = text(e)?;
            printable(e, &v)?;
            initenv.push((n.value.clone(), v));
        }
        let initdir = opt(el, "initdir", text_path)?;
        let id = |name: &str| {
            opt(el, name, |e| {
                let t = plain_text(e)?;
                IdRef::parse(&t).map_err(|m| {
                    DomainError::invalid(
                        e.pos,
                        name,
                        m,
                        "give a name, or +NUMBER for a numeric id such as +1000",
                    )
                })
            })
        };
        Ok(Os::Exe(ExeOs {
            arch,
            init,
            initargs,
            initenv,
            initdir,
            inituser: id("inituser")?,
            initgroup: id("initgroup")?,
            cmdline,
        }))
    } else {
        for c in [
            "init",
            "initarg",
            "initenv",
            "initdir",
            "inituser",
            "initgroup",
        ] {
            if let Some(e) = el.element(c) {
                return Err(not_for(e, ctx.kind.as_str(), "lxc"));
            }
        }
        let machine = type_el
            .attribute("machine")
            .map(|a| token(type_el, a, &['.', '-']))
            .transpose()?;
        let mut boot: Vec<BootDev> = Vec::new();
        for b in el.elements_named("boot") {
            check_attrs(b, &["dev"])?;
            check_children(b, &[], &[])?;
            let a = req_attr(b, "dev", "add dev='hd'")?;
            let dev = keyword(
                a.pos,
                "boot",
                "boot device",
                &a.value,
                BootDev::parse,
                BootDev::NAMES,
            )?;
            if boot.contains(&dev) {
                return Err(DomainError::duplicate(
                    b.pos,
                    "os",
                    format!("<boot dev='{dev}'>"),
                ));
            }
            boot.push(dev);
        }
        let mut os = HvmOs {
            firmware: attr_keyword(el, "firmware", Firmware::parse, Firmware::NAMES)?,
            kept,
            arch,
            machine,
            kernel: opt(el, "kernel", text_path)?,
            initrd: opt(el, "initrd", text_path)?,
            cmdline,
            boot,
            loader: None,
            nvram: None,
            bootmenu: None,
            smbios: None,
        };
        vm::os_fields(&mut os, full)?;
        Ok(Os::Hvm(os))
    }
}

/// Largest number of mappings of each kind the kernel accepts.
const MAX_IDMAP_ENTRIES: usize = 340;

fn parse_idmap(el: &Element) -> Result<IdMap> {
    check_attrs(el, &[])?;
    check_children(el, &[], &["uid", "gid"])?;
    let entries = |kind: &str| -> Result<Vec<IdMapEntry>> {
        let mut list: Vec<(IdMapEntry, &Element)> = Vec::new();
        for e in el.elements_named(kind) {
            check_attrs(e, &["start", "target", "count"])?;
            check_children(e, &[], &[])?;
            let get = |attr: &str, min: u32| -> Result<u32> {
                let a = req_attr(
                    e,
                    attr,
                    "give start, target and count, e.g. start='0' target='100000' count='65536'",
                )?;
                number(a.pos, kind, attr, &a.value, min, u32::MAX)
            };
            let entry = IdMapEntry {
                start: get("start", 0)?,
                target: get("target", 0)?,
                count: get("count", 1)?,
            };
            let fits = |base: u32| u64::from(base) + u64::from(entry.count) <= 1 << 32;
            if !fits(entry.start) || !fits(entry.target) {
                return Err(DomainError::invalid(
                    e.pos,
                    kind,
                    "the mapping runs past the largest id (4294967295)",
                    "lower start, target or count",
                ));
            }
            list.push((entry, e));
        }
        if list.len() > MAX_IDMAP_ENTRIES {
            return Err(DomainError::invalid(
                el.pos,
                "idmap",
                format!("more than {MAX_IDMAP_ENTRIES} <{kind}> mappings"),
                "merge adjacent mappings",
            ));
        }
        list.sort_by_key(|(e, _)| e.start);
        for pair in list.windows(2) {
            let (a, _) = pair[0];
            let (b, b_el) = pair[1];
            if u64::from(a.start) + u64::from(a.count) > u64::from(b.start) {
                return Err(DomainError::invalid(
                    b_el.pos,
                    kind,
                    format!("this mapping overlaps the one starting at {}", a.start),
                    "make the container id ranges (start, count) disjoint",
                ));
            }
        }
        if list.is_empty() {
            let other = if kind == "uid" { "gid" } else { "uid" };
            return Err(DomainError::missing(
                el.pos,
                "idmap",
                format!("<{kind}> (a user namespace needs both <uid> and <gid> mappings)"),
                format!(
                    "add <{kind} start='0' target='100000' count='65536'/> next to the <{other}> mapping"
                ),
            ));
        }
        if list[0].0.start != 0 {
            return Err(DomainError::invalid(
                el.pos,
                "idmap",
                format!("no <{kind}> mapping has start='0', so root in the container is unmapped"),
                format!(
                    "map the container's root, e.g. <{kind} start='0' target='100000' count='65536'/>"
                ),
            ));
        }
        Ok(list.into_iter().map(|(e, _)| e).collect())
    };
    Ok(IdMap {
        uid: entries("uid")?,
        gid: entries("gid")?,
    })
}

fn parse_features(ctx: Ctx, el: &Element) -> Result<Features> {
    let full = el;
    let (el, kept) = kept::split_kept(ctx, el, super::kept::FEATURES, &[])?;
    let el = &el;
    check_attrs(el, &[])?;
    check_children(el, &["privnet", "capabilities", "acpi", "apic", "pae"], &[])?;
    let mut f = Features {
        kept,
        ..Features::default()
    };
    vm::feature_fields(&mut f, full)?;
    for child in el.elements() {
        match child.name.as_str() {
            "privnet" => {
                ctx.lxc_only(child)?;
                check_flag(child)?;
                f.privnet = true;
            }
            "capabilities" => {
                ctx.lxc_only(child)?;
                f.capabilities = Some(parse_capabilities(child)?);
            }
            "apic" => {
                ctx.vm_only(child)?;
                check_attrs(child, &["eoi"])?;
                check_children(child, &[], &[])?;
                f.apic = true;
                f.apic_eoi = attr_on_off(child, "eoi")?;
            }
            vm => {
                ctx.vm_only(child)?;
                check_flag(child)?;
                match vm {
                    "acpi" => f.acpi = true,
                    _ => f.pae = true,
                }
            }
        }
    }
    Ok(f)
}

fn parse_capabilities(el: &Element) -> Result<Capabilities> {
    check_attrs(el, &["policy"])?;
    let policy = attr_keyword(el, "policy", CapsPolicy::parse, CapsPolicy::NAMES)?
        .unwrap_or(CapsPolicy::Default);
    check_children(el, &[], Capability::NAMES)?;
    let mut states = BTreeMap::new();
    for c in el.elements() {
        check_attrs(c, &["state"])?;
        check_children(c, &[], &[])?;
        let cap = Capability::parse(&c.name).ok_or_else(|| {
            DomainError::invalid(c.pos, &c.qname, "unknown capability", "check its spelling")
        })?;
        let a = req_attr(c, "state", "add state='on' or state='off'")?;
        let on = keyword(
            a.pos,
            &c.qname,
            "state",
            &a.value,
            parse_on_off,
            &["on", "off"],
        )?;
        if states.insert(cap, on).is_some() {
            return Err(DomainError::duplicate(
                c.pos,
                "capabilities",
                format!("<{}>", c.name),
            ));
        }
    }
    Ok(Capabilities { policy, states })
}

fn parse_clock(ctx: Ctx, el: &Element) -> Result<Clock> {
    check_attrs(el, &["offset"])?;
    check_children(el, &[], &["timer"])?;
    let offset = attr_keyword(el, "offset", ClockOffset::parse, ClockOffset::NAMES)?
        .unwrap_or(ClockOffset::Utc);
    let mut timers: Vec<Timer> = Vec::new();
    for t in el.elements_named("timer") {
        if ctx.lxc() {
            check_attrs(t, &["name", "present"])?;
            check_children(t, &[], &[])?;
        } else {
            check_attrs(t, &["name", "present", "tickpolicy", "frequency"])?;
            check_children(t, &["catchup"], &[])?;
        }
        let a = req_attr(t, "name", "add name='rtc'")?;
        let allowed: &[&str] = if ctx.lxc() {
            &["rtc", "hpet"]
        } else {
            TimerName::NAMES
        };
        let name = keyword(a.pos, "timer", "timer", &a.value, TimerName::parse, allowed)?;
        if !allowed.contains(&name.as_str()) {
            return Err(DomainError::invalid(
                a.pos,
                "timer",
                format!("timer '{name}' is not supported in an lxc domain"),
                "use 'rtc' or 'hpet'",
            ));
        }
        if timers.iter().any(|o| o.name == name) {
            return Err(DomainError::duplicate(
                t.pos,
                "clock",
                format!("timer '{name}'"),
            ));
        }
        timers.push(Timer {
            name,
            present: attr_yes_no(t, "present")?,
            tickpolicy: attr_keyword(t, "tickpolicy", TickPolicy::parse, TickPolicy::NAMES)?,
            frequency: t
                .attribute("frequency")
                .map(|f| number(f.pos, "timer", "frequency", f.value.trim(), 1u64, u64::MAX))
                .transpose()?,
            catchup: t
                .element("catchup")
                .map(|c| {
                    check_attrs(c, &["threshold", "slew", "limit"])?;
                    check_children(c, &[], &[])?;
                    let n = |name: &str| {
                        c.attribute(name)
                            .map(|v| number(v.pos, "catchup", name, v.value.trim(), 0u64, u64::MAX))
                            .transpose()
                    };
                    Ok::<_, DomainError>(TimerCatchup {
                        threshold: n("threshold")?,
                        slew: n("slew")?,
                        limit: n("limit")?,
                    })
                })
                .transpose()?,
        });
    }
    Ok(Clock { offset, timers })
}

fn lifecycle(root: &Element, name: &str, default: LifecycleAction) -> Result<LifecycleAction> {
    let Some(el) = root.element(name) else {
        return Ok(default);
    };
    let t = plain_text(el)?;
    let allowed: &[&str] = if name == "on_crash" {
        LifecycleAction::NAMES
    } else {
        &["destroy", "restart", "preserve", "rename-restart"]
    };
    let action = keyword(el.pos, name, "action", &t, LifecycleAction::parse, allowed)?;
    if !allowed.contains(&action.as_str()) {
        return Err(DomainError::invalid(
            el.pos,
            name,
            format!("action '{action}' applies to <on_crash> only"),
            format!("use one of {}", allowed.join(", ")),
        ));
    }
    Ok(action)
}
