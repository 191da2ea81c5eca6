//! From a [`DomainDef`] (and, in [`network`], a network definition) to
//! canonical XML.
//!
//! Canonical: two-space indentation, attributes in single quotes, elements
//! in the order of `xml-schemas/examples/lxc-everything.xml`, sizes in KiB,
//! defaults written out. Formatting a parsed definition and parsing the
//! result gives the same definition, and formatting is a fixed point.

mod network;

pub use network::format_network;

use std::fmt::Write as _;
use std::path::Path;

use super::addr;
use super::def::*;

/// Which data to include.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FormatOptions {
    /// Include live-only data (generated security labels).
    pub live: bool,
}

/// Escapes text content.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an attribute value for single quotes; whitespace other than
/// spaces is written as character references so that it survives
/// attribute-value normalisation.
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A small indenting writer.
struct Out {
    buf: String,
    depth: usize,
}

impl Out {
    fn new() -> Out {
        Out {
            buf: String::new(),
            depth: 0,
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.buf.push_str("  ");
        }
    }

    fn attrs(&mut self, attrs: &[(&str, String)]) {
        for (k, v) in attrs {
            let _ = write!(self.buf, " {k}='{}'", attr(v));
        }
    }

    /// An indented `<name attrs`, to be closed by the caller.
    fn start_tag(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.indent();
        self.buf.push('<');
        self.buf.push_str(name);
        self.attrs(attrs);
    }

    /// `<name attrs/>`.
    fn empty(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.start_tag(name, attrs);
        self.buf.push_str("/>\n");
    }

    /// `<name attrs>text</name>`.
    fn leaf(&mut self, name: &str, attrs: &[(&str, String)], content: &str) {
        self.start_tag(name, attrs);
        let _ = writeln!(self.buf, ">{}</{name}>", text(content));
    }

    fn open(&mut self, name: &str, attrs: &[(&str, String)]) {
        self.start_tag(name, attrs);
        self.buf.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        let _ = writeln!(self.buf, "</{name}>");
    }

    fn size(&mut self, name: &str, bytes: u64) {
        self.leaf(name, &[("unit", "KiB".into())], &(bytes / 1024).to_string());
    }
}

fn a(k: &str, v: impl ToString) -> (&str, String) {
    (k, v.to_string())
}

/// Formats `def`.
pub fn format_domain(def: &DomainDef, opts: FormatOptions) -> String {
    let mut o = Out::new();
    let mut root = vec![a("type", def.domain_type)];
    if def.lxc_namespace.is_some() {
        root.push(a("xmlns:lxc", LXC_NAMESPACE_URI));
    }
    if def.seccomp.is_some()
        || def.userns.is_some()
        || def.pids_max.is_some()
        || def.api_access.is_some()
    {
        root.push(a("xmlns:lxvirt", LXVIRT_NAMESPACE_URI));
    }
    o.open("domain", &root);
    o.leaf("name", &[], def.name.as_str());
    o.leaf("uuid", &[], &def.uuid.hyphenated().to_string());
    if let Some(t) = &def.title {
        o.leaf("title", &[], t);
    }
    if let Some(d) = &def.description {
        o.leaf("description", &[], d);
    }
    if let Some(m) = &def.metadata {
        o.indent();
        let _ = writeln!(o.buf, "<metadata>{}</metadata>", m.as_str());
    }
    let mut memory = vec![a("unit", "KiB")];
    opt_attr(&mut memory, "dumpCore", def.dump_core.map(on_off));
    o.leaf("memory", &memory, &(def.memory / 1024).to_string());
    o.size("currentMemory", def.current_memory);
    if let Some(m) = &def.memtune {
        o.open("memtune", &[]);
        for (name, v) in [
            ("hard_limit", m.hard_limit),
            ("soft_limit", m.soft_limit),
            ("swap_hard_limit", m.swap_hard_limit),
            ("min_guarantee", m.min_guarantee),
        ] {
            if let Some(v) = v {
                o.size(name, v);
            }
        }
        o.close("memtune");
    }
    let mut vcpu = vec![a("placement", def.vcpu.placement)];
    if let Some(c) = &def.vcpu.cpuset {
        vcpu.push(a("cpuset", c));
    }
    if let Some(c) = def.vcpu.current {
        vcpu.push(a("current", c));
    }
    o.leaf("vcpu", &vcpu, &def.vcpu.count.to_string());
    if let Some(c) = &def.cputune {
        o.open("cputune", &[]);
        if let Some(v) = c.shares {
            o.leaf("shares", &[], &v.to_string());
        }
        if let Some(v) = c.period {
            o.leaf("period", &[], &v.to_string());
        }
        if let Some(v) = c.quota {
            o.leaf("quota", &[], &v.to_string());
        }
        o.close("cputune");
    }
    if let Some(n) = &def.numatune {
        o.open("numatune", &[]);
        if let Some(m) = &n.memory {
            o.empty("memory", &[a("mode", m.mode), a("nodeset", &m.nodeset)]);
        }
        for m in &n.memnodes {
            o.empty(
                "memnode",
                &[
                    a("cellid", m.cellid),
                    a("mode", m.mode),
                    a("nodeset", &m.nodeset),
                ],
            );
        }
        o.close("numatune");
    }
    if let Some(b) = &def.blkiotune {
        format_blkiotune(&mut o, b);
    }
    if let Some(p) = &def.partition {
        o.open("resource", &[]);
        o.leaf("partition", &[], &path(p));
        o.close("resource");
    }
    format_os(&mut o, &def.os);
    if let Some(m) = &def.idmap {
        o.open("idmap", &[]);
        for (kind, list) in [("uid", &m.uid), ("gid", &m.gid)] {
            for e in list {
                o.empty(
                    kind,
                    &[
                        a("start", e.start),
                        a("target", e.target),
                        a("count", e.count),
                    ],
                );
            }
        }
        o.close("idmap");
    }
    format_features(&mut o, &def.features);
    if let Some(c) = &def.cpu {
        format_cpu(&mut o, c);
    }
    for k in &def.kept {
        format_kept(&mut o, k);
    }
    let clock = [a("offset", def.clock.offset)];
    if def.clock.timers.is_empty() {
        o.empty("clock", &clock);
    } else {
        o.open("clock", &clock);
        for t in &def.clock.timers {
            let mut attrs = vec![a("name", t.name)];
            if let Some(p) = t.present {
                attrs.push(a("present", if p { "yes" } else { "no" }));
            }
            if let Some(p) = t.tickpolicy {
                attrs.push(a("tickpolicy", p));
            }
            opt_attr(&mut attrs, "frequency", t.frequency);
            match &t.catchup {
                None => o.empty("timer", &attrs),
                Some(c) => {
                    o.open("timer", &attrs);
                    let mut ca = Vec::new();
                    opt_attr(&mut ca, "threshold", c.threshold);
                    opt_attr(&mut ca, "slew", c.slew);
                    opt_attr(&mut ca, "limit", c.limit);
                    o.empty("catchup", &ca);
                    o.close("timer");
                }
            }
        }
        o.close("clock");
    }
    o.leaf("on_poweroff", &[], def.on_poweroff.as_str());
    o.leaf("on_reboot", &[], def.on_reboot.as_str());
    o.leaf("on_crash", &[], def.on_crash.as_str());
    if let Some(pm) = &def.pm {
        let states = [
            ("suspend-to-mem", pm.suspend_to_mem),
            ("suspend-to-disk", pm.suspend_to_disk),
        ];
        if states.iter().all(|(_, s)| s.is_none()) {
            o.empty("pm", &[]);
        } else {
            o.open("pm", &[]);
            for (name, state) in states {
                if let Some(s) = state {
                    o.empty(name, &[a("enabled", yes_no(s))]);
                }
            }
            o.close("pm");
        }
    }
    format_devices(&mut o, &def.devices);
    if let Some(s) = &def.seclabel {
        format_seclabel(&mut o, s, opts);
    }
    if let Some(ns) = &def.lxc_namespace {
        let shares = [
            ("lxc:sharenet", &ns.sharenet),
            ("lxc:shareipc", &ns.shareipc),
            ("lxc:shareuts", &ns.shareuts),
        ];
        if shares.iter().all(|(_, s)| s.is_none()) {
            o.empty("lxc:namespace", &[]);
        } else {
            o.open("lxc:namespace", &[]);
            for (name, share) in shares {
                if let Some(s) = share {
                    o.empty(name, &[a("type", s.share_type), a("value", &s.value)]);
                }
            }
            o.close("lxc:namespace");
        }
    }
    if let Some(s) = &def.seccomp {
        let mut attrs = vec![a("mode", s.mode)];
        if s.mount != SeccompMount::Auto {
            attrs.push(a("mount", s.mount));
        }
        if s.deny.is_empty() {
            o.empty("lxvirt:seccomp", &attrs);
        } else {
            o.open("lxvirt:seccomp", &attrs);
            for name in &s.deny {
                o.empty("lxvirt:deny", &[a("syscall", name)]);
            }
            o.close("lxvirt:seccomp");
        }
    }
    if let Some(u) = &def.userns {
        let mut attrs = vec![a("mode", u.mode)];
        if let (true, Some((target, count))) = (opts.live, u.allocated) {
            attrs.push(a("target", target));
            attrs.push(a("count", count));
        }
        o.empty("lxvirt:userns", &attrs);
    }
    if let Some(max) = def.pids_max {
        o.empty("lxvirt:pids", &[a("max", max)]);
    }
    if let Some(access) = def.api_access {
        o.empty("lxvirt:api", &[a("access", access)]);
    }
    o.close("domain");
    o.buf
}

fn format_blkiotune(o: &mut Out, b: &BlkioTune) {
    if b.weight.is_none() && b.devices.is_empty() {
        o.empty("blkiotune", &[]);
        return;
    }
    o.open("blkiotune", &[]);
    if let Some(w) = b.weight {
        o.leaf("weight", &[], &w.to_string());
    }
    for d in &b.devices {
        o.open("device", &[]);
        o.leaf("path", &[], &path(&d.path));
        if let Some(w) = d.weight {
            o.leaf("weight", &[], &w.to_string());
        }
        for (name, v) in [
            ("read_bytes_sec", d.read_bytes_sec),
            ("write_bytes_sec", d.write_bytes_sec),
            ("read_iops_sec", d.read_iops_sec),
            ("write_iops_sec", d.write_iops_sec),
        ] {
            if let Some(v) = v {
                o.leaf(name, &[], &v.to_string());
            }
        }
        o.close("device");
    }
    o.close("blkiotune");
}

fn format_os(o: &mut Out, os: &Os) {
    match os {
        Os::Hvm(HvmOs {
            firmware: Some(f), ..
        }) => o.open("os", &[a("firmware", f)]),
        _ => o.open("os", &[]),
    }
    match os {
        Os::Exe(e) => {
            let mut t = Vec::new();
            if let Some(arch) = &e.arch {
                t.push(a("arch", arch));
            }
            o.leaf("type", &t, "exe");
            o.leaf("init", &[], &path(&e.init));
            for arg in &e.initargs {
                o.leaf("initarg", &[], arg);
            }
            for (k, v) in &e.initenv {
                o.leaf("initenv", &[a("name", k)], v);
            }
            if let Some(d) = &e.initdir {
                o.leaf("initdir", &[], &path(d));
            }
            if let Some(u) = &e.inituser {
                o.leaf("inituser", &[], &u.to_string());
            }
            if let Some(g) = &e.initgroup {
                o.leaf("initgroup", &[], &g.to_string());
            }
            if let Some(c) = &e.cmdline {
                o.leaf("cmdline", &[], c);
            }
        }
        Os::Hvm(h) => {
            let mut t = Vec::new();
            if let Some(arch) = &h.arch {
                t.push(a("arch", arch));
            }
            if let Some(m) = &h.machine {
                t.push(a("machine", m));
            }
            o.leaf("type", &t, "hvm");
            if let Some(l) = &h.loader {
                let mut attrs = Vec::new();
                if let Some(r) = l.readonly {
                    attrs.push(a("readonly", yes_no(r)));
                }
                if let Some(t) = l.loader_type {
                    attrs.push(a("type", t));
                }
                if let Some(s) = l.secure {
                    attrs.push(a("secure", yes_no(s)));
                }
                opt_attr(&mut attrs, "stateless", l.stateless.map(yes_no));
                match &l.path {
                    Some(p) => o.leaf("loader", &attrs, &path(p)),
                    None => o.empty("loader", &attrs),
                }
            }
            if let Some(n) = &h.nvram {
                let mut attrs = Vec::new();
                if let Some(t) = &n.template {
                    attrs.push(a("template", path(t)));
                }
                match &n.path {
                    Some(p) => o.leaf("nvram", &attrs, &path(p)),
                    None => o.empty("nvram", &attrs),
                }
            }
            if let Some(k) = &h.kernel {
                o.leaf("kernel", &[], &path(k));
            }
            if let Some(i) = &h.initrd {
                o.leaf("initrd", &[], &path(i));
            }
            if let Some(c) = &h.cmdline {
                o.leaf("cmdline", &[], c);
            }
            for b in &h.boot {
                o.empty("boot", &[a("dev", b)]);
            }
            if let Some(m) = &h.bootmenu {
                let mut attrs = Vec::new();
                if let Some(e) = m.enable {
                    attrs.push(a("enable", yes_no(e)));
                }
                if let Some(t) = m.timeout {
                    attrs.push(a("timeout", t));
                }
                o.empty("bootmenu", &attrs);
            }
            if let Some(m) = h.smbios {
                o.empty("smbios", &[a("mode", m)]);
            }
            for k in &h.kept {
                format_kept(o, k);
            }
        }
    }
    o.close("os");
}

fn format_features(o: &mut Out, f: &Features) {
    if f.is_empty() {
        return;
    }
    o.open("features", &[]);
    if f.acpi {
        o.empty("acpi", &[]);
    }
    if f.apic {
        let mut attrs = Vec::new();
        opt_attr(&mut attrs, "eoi", f.apic_eoi.map(on_off));
        o.empty("apic", &attrs);
    }
    for (flag, name) in [(f.pae, "pae"), (f.privnet, "privnet")] {
        if flag {
            o.empty(name, &[]);
        }
    }
    if let Some(c) = &f.capabilities {
        let policy = [a("policy", c.policy)];
        if c.states.is_empty() {
            o.empty("capabilities", &policy);
        } else {
            o.open("capabilities", &policy);
            for (cap, on) in &c.states {
                o.empty(cap.as_str(), &[a("state", if *on { "on" } else { "off" })]);
            }
            o.close("capabilities");
        }
    }
    if let Some(s) = f.vmport {
        o.empty("vmport", &[a("state", on_off(s))]);
    }
    if let Some(s) = f.smm {
        let state = [a("state", on_off(s))];
        match f.smm_tseg_mib {
            None => o.empty("smm", &state),
            Some(mib) => {
                o.open("smm", &state);
                o.leaf("tseg", &[a("unit", "MiB")], &mib.to_string());
                o.close("smm");
            }
        }
    }
    if let Some(d) = f.ioapic {
        o.empty("ioapic", &[a("driver", d)]);
    }
    for k in &f.kept {
        format_kept(o, k);
    }
    o.close("features");
}

fn format_devices(o: &mut Out, d: &Devices) {
    if *d == Devices::default() {
        o.empty("devices", &[]);
        return;
    }
    o.open("devices", &[]);
    if let Some(e) = &d.emulator {
        o.leaf("emulator", &[], &path(e));
    }
    for fs in &d.filesystems {
        format_filesystem(o, fs);
    }
    for disk in &d.disks {
        format_disk(o, disk);
    }
    for i in &d.interfaces {
        format_interface(o, i);
    }
    for h in &d.hostdevs {
        format_hostdev(o, h);
    }
    for s in &d.serials {
        o.open("serial", &[a("type", s.chardev_type)]);
        for k in &s.kept {
            format_kept(o, k);
        }
        let mut target = Vec::new();
        if let Some(t) = s.target_type {
            target.push(a("type", t));
        }
        target.push(a("port", s.port));
        match s.model {
            None => o.empty("target", &target),
            Some(m) => {
                o.open("target", &target);
                o.empty("model", &[a("name", m)]);
                o.close("target");
            }
        }
        format_common(o, None, &s.alias, &s.address);
        o.close("serial");
    }
    for c in &d.consoles {
        o.open("console", &[a("type", c.chardev_type)]);
        for k in &c.kept {
            format_kept(o, k);
        }
        o.empty("target", &[a("type", c.target_type), a("port", c.port)]);
        format_common(o, None, &c.alias, &c.address);
        o.close("console");
    }
    format_vm_devices(o, d);
    for k in &d.kept {
        format_kept(o, k);
    }
    o.close("devices");
}

fn format_filesystem(o: &mut Out, fs: &Filesystem) {
    let mut attrs = vec![a("type", fs.source.type_str())];
    if let Some(m) = fs.accessmode {
        attrs.push(a("accessmode", m));
    }
    o.open("filesystem", &attrs);
    match &fs.source {
        FsSource::Mount { dir } | FsSource::Bind { dir } => {
            o.empty("source", &[a("dir", path(dir))]);
        }
        FsSource::Ram { usage } => {
            o.empty("source", &[a("usage", usage / 1024), a("units", "KiB")]);
        }
        FsSource::Block { dev } => o.empty("source", &[a("dev", path(dev))]),
        FsSource::File { file, driver } => {
            if let Some(d) = driver {
                let mut attrs = vec![a("type", d.driver_type)];
                if let Some(f) = d.format {
                    attrs.push(a("format", f));
                }
                o.empty("driver", &attrs);
            }
            o.empty("source", &[a("file", path(file))]);
        }
        FsSource::Volume { pool, volume } => {
            o.empty("source", &[a("pool", pool), a("volume", volume)]);
        }
    }
    o.empty("target", &[a("dir", path(&fs.target))]);
    if fs.readonly {
        o.empty("readonly", &[]);
    }
    o.close("filesystem");
}

fn format_disk(o: &mut Out, d: &Disk) {
    let (kind, src_attr, src) = match &d.source {
        DiskSource::File(p) => ("file", "file", p),
        DiskSource::Block(p) => ("block", "dev", p),
        // The source is among the kept children.
        DiskSource::Kept(t) => (t.as_str(), "", &None),
    };
    let mut attrs = vec![a("type", kind), a("device", d.device)];
    opt_attr(&mut attrs, "model", d.model);
    o.open("disk", &attrs);
    if let Some(drv) = &d.driver {
        let mut attrs = Vec::new();
        if let Some(n) = drv.name {
            attrs.push(a("name", n));
        }
        if let Some(f) = drv.format {
            attrs.push(a("type", f));
        }
        if let Some(c) = drv.cache {
            attrs.push(a("cache", c));
        }
        if let Some(i) = drv.io {
            attrs.push(a("io", i));
        }
        if let Some(d) = drv.discard {
            attrs.push(a("discard", d));
        }
        if let Some(q) = drv.queues {
            attrs.push(a("queues", q));
        }
        for (name, value) in &drv.kept_attrs {
            attrs.push(a(name, value));
        }
        if drv.kept.is_empty() {
            o.empty("driver", &attrs);
        } else {
            o.open("driver", &attrs);
            for k in &drv.kept {
                format_kept(o, k);
            }
            o.close("driver");
        }
    }
    if let Some(p) = src {
        o.empty("source", &[a(src_attr, path(p))]);
    }
    if let Some(b) = &d.backing_store {
        format_backing_store(o, b);
    }
    let mut target = vec![a("dev", &d.target_dev)];
    if let Some(b) = d.target_bus {
        target.push(a("bus", b));
    }
    for (name, value) in &d.target_kept {
        target.push(a(name, value));
    }
    o.empty("target", &target);
    if d.readonly {
        o.empty("readonly", &[]);
    }
    if d.shareable {
        o.empty("shareable", &[]);
    }
    if d.transient {
        o.empty("transient", &[]);
    }
    if let Some(s) = &d.serial {
        o.leaf("serial", &[], s);
    }
    format_common(o, d.boot_order, &d.alias, &d.address);
    for k in &d.kept {
        format_kept(o, k);
    }
    o.close("disk");
}

/// One `<interface>` element, as a device document.
pub fn format_interface_element(i: &Interface) -> String {
    let mut o = Out::new();
    format_interface(&mut o, i);
    o.buf
}

fn format_interface(o: &mut Out, i: &Interface) {
    o.open("interface", &[a("type", i.source.type_str())]);
    if let Some(m) = &i.mac {
        o.empty("mac", &[a("address", m)]);
    }
    match &i.source {
        InterfaceSource::Network { network, portgroup } => {
            let mut attrs = vec![a("network", network)];
            if let Some(p) = portgroup {
                attrs.push(a("portgroup", p));
            }
            o.empty("source", &attrs);
        }
        InterfaceSource::Bridge { bridge } => o.empty("source", &[a("bridge", bridge)]),
        InterfaceSource::Ethernet { ips, routes } => {
            if !ips.is_empty() || !routes.is_empty() {
                o.open("source", &[]);
                format_ips_and_routes(o, ips, routes);
                o.close("source");
            }
        }
        InterfaceSource::Direct { dev, mode } => {
            o.empty("source", &[a("dev", dev), a("mode", mode)]);
        }
        // The source is among the kept children.
        InterfaceSource::Kept(_) => {}
    }
    if let Some(t) = &i.target_dev {
        o.empty("target", &[a("dev", t)]);
    }
    if let Some(g) = &i.guest_dev {
        o.empty("guest", &[a("dev", g)]);
    }
    if let Some(m) = i.model {
        o.empty("model", &[a("type", m)]);
    }
    format_ips_and_routes(o, &i.ips, &i.routes);
    if let Some(b) = &i.bandwidth {
        o.open("bandwidth", &[]);
        for (name, rate) in [("inbound", &b.inbound), ("outbound", &b.outbound)] {
            if let Some(r) = rate {
                let mut attrs = Vec::new();
                for (k, v) in [
                    ("average", r.average),
                    ("peak", r.peak),
                    ("burst", r.burst),
                    ("floor", r.floor),
                ] {
                    if let Some(v) = v {
                        attrs.push(a(k, v));
                    }
                }
                o.empty(name, &attrs);
            }
        }
        o.close("bandwidth");
    }
    if let Some(v) = &i.vlan {
        o.open(
            "vlan",
            &if v.trunk {
                vec![a("trunk", "yes")]
            } else {
                Vec::new()
            },
        );
        for t in &v.tags {
            let mut attrs = vec![a("id", t.id)];
            if let Some(m) = t.native_mode {
                attrs.push(a("nativeMode", m));
            }
            o.empty("tag", &attrs);
        }
        o.close("vlan");
    }
    if let Some(l) = i.link_state {
        o.empty("link", &[a("state", l)]);
    }
    if let Some(m) = i.mtu {
        o.empty("mtu", &[a("size", m)]);
    }
    format_common(o, i.boot_order, &i.alias, &i.address);
    for k in &i.kept {
        format_kept(o, k);
    }
    o.close("interface");
}

/// `<ip>` and `<route>` elements, family always written.
fn format_ips_and_routes(o: &mut Out, ips: &[IpConfig], routes: &[Route]) {
    for ip in ips {
        let mut attrs = vec![
            a("address", ip.address),
            a("family", addr::family(ip.address)),
        ];
        if let Some(p) = ip.prefix {
            attrs.push(a("prefix", p));
        }
        if let Some(p) = ip.peer {
            attrs.push(a("peer", p));
        }
        o.empty("ip", &attrs);
    }
    for r in routes {
        let mut attrs = vec![
            a("address", r.address),
            a("family", addr::family(r.address)),
        ];
        if let Some(p) = r.prefix {
            attrs.push(a("prefix", p));
        }
        attrs.push(a("gateway", r.gateway));
        o.empty("route", &attrs);
    }
}

fn format_hostdev(o: &mut Out, h: &Hostdev) {
    let (mode, kind) = match h {
        Hostdev::Storage { .. } => ("capabilities", "storage"),
        Hostdev::Misc { .. } => ("capabilities", "misc"),
        Hostdev::Net { .. } => ("capabilities", "net"),
        Hostdev::Usb { .. } => ("subsystem", "usb"),
    };
    o.open("hostdev", &[a("mode", mode), a("type", kind)]);
    o.open("source", &[]);
    match h {
        Hostdev::Storage { block } => o.leaf("block", &[], &path(block)),
        Hostdev::Misc { char_dev } => o.leaf("char", &[], &path(char_dev)),
        Hostdev::Net { interface, .. } => o.leaf("interface", &[], interface),
        Hostdev::Usb { ids, address } => {
            if let Some(ids) = ids {
                o.empty("vendor", &[a("id", format!("{:#06x}", ids.vendor))]);
                o.empty("product", &[a("id", format!("{:#06x}", ids.product))]);
            }
            if let Some(ad) = address {
                o.empty("address", &[a("bus", ad.bus), a("device", ad.device)]);
            }
        }
    }
    o.close("source");
    if let Hostdev::Net { ips, routes, .. } = h {
        format_ips_and_routes(o, ips, routes);
    }
    o.close("hostdev");
}

fn format_seclabel(o: &mut Out, s: &SecLabel, opts: FormatOptions) {
    let mut attrs = vec![a("type", s.label_type)];
    if let Some(m) = s.model {
        attrs.push(a("model", m));
    }
    if s.label_type != SecLabelType::None {
        attrs.push(a("relabel", if s.relabel { "yes" } else { "no" }));
    }
    let mut children: Vec<(&str, &str)> = Vec::new();
    if let Some(b) = &s.baselabel {
        children.push(("baselabel", b));
    }
    let live_label = if opts.live {
        s.live.label.as_deref()
    } else {
        None
    };
    if let Some(l) = s.label.as_deref().or(live_label) {
        children.push(("label", l));
    }
    if opts.live
        && let Some(l) = &s.live.imagelabel
    {
        children.push(("imagelabel", l));
    }
    if children.is_empty() {
        o.empty("seclabel", &attrs);
    } else {
        o.open("seclabel", &attrs);
        for (name, value) in children {
            o.leaf(name, &[], value);
        }
        o.close("seclabel");
    }
}

/// A kept element in canonical form: attributes in the table's order,
/// text trimmed, children in document order.
fn format_kept(o: &mut Out, k: &KeptElement) {
    let attrs: Vec<(&str, String)> = k
        .attributes
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    match (&k.text, k.children.is_empty()) {
        (Some(t), _) => o.leaf(&k.name, &attrs, t),
        (None, true) => o.empty(&k.name, &attrs),
        (None, false) => {
            o.open(&k.name, &attrs);
            for c in &k.children {
                format_kept(o, c);
            }
            o.close(&k.name);
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn format_cpu(o: &mut Out, c: &Cpu) {
    let mut attrs = Vec::new();
    if let Some(m) = c.mode {
        attrs.push(a("mode", m));
    }
    if let Some(m) = c.match_mode {
        attrs.push(a("match", m));
    }
    if let Some(ch) = c.check {
        attrs.push(a("check", ch));
    }
    if let Some(m) = c.migratable {
        attrs.push(a("migratable", if m { "on" } else { "off" }));
    }
    if c.model.is_none() && c.topology.is_none() && c.features.is_empty() && c.kept.is_empty() {
        o.empty("cpu", &attrs);
        return;
    }
    o.open("cpu", &attrs);
    if let Some(m) = &c.model {
        let fallback: Vec<(&str, String)> = m.fallback.iter().map(|f| a("fallback", f)).collect();
        match &m.name {
            Some(n) => o.leaf("model", &fallback, n),
            None => o.empty("model", &fallback),
        }
    }
    if let Some(t) = &c.topology {
        let mut attrs = Vec::new();
        for (name, v) in [
            ("sockets", t.sockets),
            ("dies", t.dies),
            ("clusters", t.clusters),
            ("cores", t.cores),
            ("threads", t.threads),
        ] {
            if let Some(v) = v {
                attrs.push(a(name, v));
            }
        }
        o.empty("topology", &attrs);
    }
    for f in &c.features {
        let mut attrs = Vec::new();
        if let Some(p) = f.policy {
            attrs.push(a("policy", p));
        }
        attrs.push(a("name", &f.name));
        o.empty("feature", &attrs);
    }
    for k in &c.kept {
        format_kept(o, k);
    }
    o.close("cpu");
}

/// `<boot order>`, `<alias>` and `<address>` of a VM device.
fn format_common(
    o: &mut Out,
    boot: Option<u32>,
    alias: &Option<String>,
    address: &Option<DeviceAddress>,
) {
    if let Some(b) = boot {
        o.empty("boot", &[a("order", b)]);
    }
    if let Some(n) = alias {
        o.empty("alias", &[a("name", n)]);
    }
    if let Some(ad) = address {
        format_address(o, ad);
    }
}

/// `<address>`: PCI numbers in hex as libvirt writes them, register and
/// I/O numbers in hex, the rest in decimal.
fn format_address(o: &mut Out, ad: &DeviceAddress) {
    let pci = ad.address_type == Some(AddressType::Pci);
    let mut attrs = Vec::new();
    if let Some(t) = ad.address_type {
        attrs.push(a("type", t));
    }
    let n = |v: Option<u64>, width: Option<usize>| {
        v.map(|v| match width {
            Some(w) => format!("{v:#0width$x}", width = w + 2),
            None => v.to_string(),
        })
    };
    let pci_hex = |w: usize| pci.then_some(w);
    let fields = [
        ("domain", n(ad.domain, pci_hex(4))),
        ("bus", n(ad.bus, pci_hex(2))),
        ("slot", n(ad.slot, pci_hex(2))),
        ("function", n(ad.function, pci_hex(1))),
        (
            "multifunction",
            ad.multifunction
                .map(|m| if m { "on" } else { "off" }.to_owned()),
        ),
        ("controller", n(ad.controller, None)),
        ("target", n(ad.target, None)),
        ("unit", n(ad.unit, None)),
        ("port", ad.port.clone()),
        ("reg", n(ad.reg, Some(1))),
        ("iobase", n(ad.iobase, Some(1))),
        ("irq", n(ad.irq, Some(1))),
        ("base", n(ad.base, Some(1))),
        ("slots", n(ad.slots, None)),
    ];
    for (name, v) in fields {
        if let Some(v) = v {
            attrs.push((name, v));
        }
    }
    o.empty("address", &attrs);
}

/// Writes `<name attrs>` with `children` inside, or empty without any.
fn element_with(
    o: &mut Out,
    name: &str,
    attrs: &[(&str, String)],
    children: impl FnOnce(&mut Out),
) {
    let mut inner = Out {
        buf: String::new(),
        depth: o.depth + 1,
    };
    children(&mut inner);
    if inner.buf.is_empty() {
        o.empty(name, attrs);
    } else {
        o.start_tag(name, attrs);
        o.buf.push_str(">\n");
        o.buf.push_str(&inner.buf);
        o.indent();
        let _ = writeln!(o.buf, "</{name}>");
    }
}

/// Pushes `(name, value)` when the value is there.
fn opt_attr<'n>(attrs: &mut Vec<(&'n str, String)>, name: &'n str, value: Option<impl ToString>) {
    if let Some(v) = value {
        attrs.push((name, v.to_string()));
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The typed VM devices, kind by kind.
fn format_vm_devices(o: &mut Out, d: &Devices) {
    for c in &d.controllers {
        let mut attrs = vec![a("type", c.controller_type)];
        opt_attr(&mut attrs, "index", c.index);
        opt_attr(&mut attrs, "model", c.model.as_ref());
        opt_attr(&mut attrs, "ports", c.ports);
        opt_attr(&mut attrs, "vectors", c.vectors);
        element_with(o, "controller", &attrs, |o| {
            if let Some(m) = &c.model_name {
                o.empty("model", &[a("name", m)]);
            }
            if let Some(t) = &c.target {
                let mut ta = Vec::new();
                opt_attr(&mut ta, "chassisNr", t.chassis_nr);
                opt_attr(&mut ta, "chassis", t.chassis);
                opt_attr(&mut ta, "port", t.port.map(|p| format!("{p:#x}")));
                opt_attr(&mut ta, "busNr", t.bus_nr);
                opt_attr(&mut ta, "index", t.index);
                opt_attr(&mut ta, "hotplug", t.hotplug.map(on_off));
                match t.node {
                    None => o.empty("target", &ta),
                    Some(n) => {
                        o.open("target", &ta);
                        o.leaf("node", &[], &n.to_string());
                        o.close("target");
                    }
                }
            }
            if c.queues.is_some() || c.iothread.is_some() {
                let mut da = Vec::new();
                opt_attr(&mut da, "queues", c.queues);
                opt_attr(&mut da, "iothread", c.iothread);
                o.empty("driver", &da);
            }
            device_tail(o, &c.alias, &c.address, &c.kept);
        });
    }
    for i in &d.inputs {
        let mut attrs = vec![a("type", i.input_type)];
        opt_attr(&mut attrs, "bus", i.bus);
        element_with(o, "input", &attrs, |o| {
            device_tail(o, &i.alias, &i.address, &i.kept)
        });
    }
    for g in &d.graphics {
        let mut attrs = vec![a("type", g.graphics_type)];
        opt_attr(&mut attrs, "port", g.port);
        opt_attr(&mut attrs, "autoport", g.autoport.map(yes_no));
        opt_attr(&mut attrs, "websocket", g.websocket);
        opt_attr(&mut attrs, "listen", g.listen.as_ref());
        opt_attr(&mut attrs, "socket", g.socket.as_deref().map(path));
        opt_attr(&mut attrs, "passwd", g.passwd.as_ref());
        opt_attr(&mut attrs, "keymap", g.keymap.as_ref());
        opt_attr(&mut attrs, "tlsPort", g.tls_port);
        opt_attr(&mut attrs, "defaultMode", g.default_mode.as_ref());
        element_with(o, "graphics", &attrs, |o| {
            for l in &g.listens {
                let mut la = Vec::new();
                opt_attr(&mut la, "type", l.listen_type);
                opt_attr(&mut la, "address", l.address.as_ref());
                opt_attr(&mut la, "network", l.network.as_ref());
                opt_attr(&mut la, "socket", l.socket.as_deref().map(path));
                o.empty("listen", &la);
            }
            for k in &g.kept {
                format_kept(o, k);
            }
        });
    }
    for v in &d.videos {
        element_with(o, "video", &[], |o| {
            if let Some(m) = &v.model {
                let mut ma = vec![a("type", m.model_type)];
                opt_attr(&mut ma, "vram", m.vram);
                opt_attr(&mut ma, "ram", m.ram);
                opt_attr(&mut ma, "vgamem", m.vgamem);
                opt_attr(&mut ma, "vram64", m.vram64);
                opt_attr(&mut ma, "heads", m.heads);
                opt_attr(&mut ma, "primary", m.primary.map(yes_no));
                opt_attr(&mut ma, "blob", m.blob.map(on_off));
                element_with(o, "model", &ma, |o| {
                    for k in &m.kept {
                        format_kept(o, k);
                    }
                });
            }
            device_tail(o, &v.alias, &v.address, &v.kept);
        });
    }
    for s in &d.sounds {
        let mut attrs = vec![a("model", s.model)];
        opt_attr(&mut attrs, "streams", s.streams);
        opt_attr(&mut attrs, "multichannel", s.multichannel.map(yes_no));
        element_with(o, "sound", &attrs, |o| {
            for c in &s.codecs {
                o.empty("codec", &[a("type", c)]);
            }
            if let Some(id) = s.audio {
                o.empty("audio", &[a("id", id)]);
            }
            device_tail(o, &s.alias, &s.address, &s.kept);
        });
    }
    for au in &d.audios {
        let mut attrs = vec![a("id", au.id), a("type", au.audio_type)];
        opt_attr(&mut attrs, "timerPeriod", au.timer_period);
        element_with(o, "audio", &attrs, |o| {
            for k in &au.kept {
                format_kept(o, k);
            }
        });
    }
    for c in &d.channels {
        element_with(o, "channel", &[a("type", c.channel_type)], |o| {
            let mut sa = Vec::new();
            opt_attr(&mut sa, "mode", c.source_mode);
            opt_attr(&mut sa, "path", c.source_path.as_deref().map(path));
            opt_attr(&mut sa, "channel", c.source_channel.as_ref());
            if !sa.is_empty() {
                o.empty("source", &sa);
            }
            let mut ta = Vec::new();
            opt_attr(&mut ta, "type", c.target_type);
            opt_attr(&mut ta, "name", c.target_name.as_ref());
            opt_attr(&mut ta, "state", c.target_state);
            opt_attr(&mut ta, "address", c.target_address.as_ref());
            opt_attr(&mut ta, "port", c.target_port.as_ref());
            if !ta.is_empty() {
                o.empty("target", &ta);
            }
            device_tail(o, &c.alias, &c.address, &[]);
        });
    }
    for r in &d.rngs {
        element_with(o, "rng", &[a("model", r.model)], |o| {
            if r.backend.is_some() || r.backend_path.is_some() {
                let mut ba = Vec::new();
                opt_attr(&mut ba, "model", r.backend);
                match &r.backend_path {
                    Some(p) => o.leaf("backend", &ba, &path(p)),
                    None => o.empty("backend", &ba),
                }
            }
            if r.rate_bytes.is_some() || r.rate_period.is_some() {
                let mut ra = Vec::new();
                opt_attr(&mut ra, "bytes", r.rate_bytes);
                opt_attr(&mut ra, "period", r.rate_period);
                o.empty("rate", &ra);
            }
            device_tail(o, &r.alias, &r.address, &r.kept);
        });
    }
    if let Some(m) = &d.memballoon {
        let mut attrs = vec![a("model", m.model)];
        opt_attr(&mut attrs, "autodeflate", m.autodeflate.map(on_off));
        opt_attr(
            &mut attrs,
            "freePageReporting",
            m.free_page_reporting.map(on_off),
        );
        element_with(o, "memballoon", &attrs, |o| {
            if let Some(p) = m.stats_period {
                o.empty("stats", &[a("period", p)]);
            }
            device_tail(o, &m.alias, &m.address, &m.kept);
        });
    }
    for w in &d.watchdogs {
        let mut attrs = vec![a("model", w.model)];
        opt_attr(&mut attrs, "action", w.action);
        element_with(o, "watchdog", &attrs, |o| {
            device_tail(o, &w.alias, &w.address, &[])
        });
    }
    for p in &d.panics {
        let mut attrs = Vec::new();
        opt_attr(&mut attrs, "model", p.model);
        element_with(o, "panic", &attrs, |o| {
            device_tail(o, &p.alias, &p.address, &[])
        });
    }
}

/// A device's kept children, `<alias>` and `<address>`, in that order.
fn device_tail(
    o: &mut Out,
    alias: &Option<String>,
    address: &Option<DeviceAddress>,
    kept: &[KeptElement],
) {
    for k in kept {
        format_kept(o, k);
    }
    format_common(o, None, alias, address);
}

fn format_backing_store(o: &mut Out, b: &BackingStore) {
    let (attrs, source) = match &b.source {
        None => (Vec::new(), None),
        Some(DiskSource::File(p)) => (
            vec![a("type", "file")],
            p.as_ref().map(|p| a("file", path(p))),
        ),
        Some(DiskSource::Block(p)) => (
            vec![a("type", "block")],
            p.as_ref().map(|p| a("dev", path(p))),
        ),
        // Backing stores are read from the kept table: file or block only.
        Some(DiskSource::Kept(t)) => (vec![a("type", t)], None),
    };
    element_with(o, "backingStore", &attrs, |o| {
        if let Some(f) = b.format {
            o.empty("format", &[a("type", f)]);
        }
        if let Some(s) = source {
            o.empty("source", &[s]);
        }
        if let Some(inner) = &b.backing {
            format_backing_store(o, inner);
        }
    });
}
