//! From a [`NetworkDef`] to canonical XML: the conventions of the domain
//! formatter (two-space indentation, single quotes, defaults written out),
//! elements in the order `name`, `uuid`, `forward`, `bridge`, `mac`,
//! `mtu`, `domain`, `dns`, `ip`….

use super::super::addr;
use super::super::network::{Dns, Forward, NetworkDef, NetworkIp};
use super::{Out, a};

/// Formats `def`.
pub fn format_network(def: &NetworkDef) -> String {
    let mut o = Out::new();
    o.open("network", &[]);
    o.leaf("name", &[], def.name.as_str());
    o.leaf("uuid", &[], &def.uuid.hyphenated().to_string());
    if let Some(f) = &def.forward {
        format_forward(&mut o, f);
    }
    let b = &def.bridge;
    let mut bridge = Vec::new();
    if let Some(n) = &b.name {
        bridge.push(a("name", n));
    }
    bridge.push(a("stp", if b.stp { "on" } else { "off" }));
    bridge.push(a("delay", b.delay));
    o.empty("bridge", &bridge);
    if let Some(m) = &def.mac {
        o.empty("mac", &[a("address", m)]);
    }
    if let Some(m) = def.mtu {
        o.empty("mtu", &[a("size", m)]);
    }
    if let Some(d) = &def.domain {
        let mut attrs = vec![a("name", &d.name)];
        if d.local_only {
            attrs.push(a("localOnly", "yes"));
        }
        o.empty("domain", &attrs);
    }
    format_dns(&mut o, &def.dns);
    for ip in &def.ips {
        format_ip(&mut o, ip);
    }
    o.close("network");
    o.buf
}

fn format_forward(o: &mut Out, f: &Forward) {
    let mut attrs = vec![a("mode", f.mode)];
    if let Some(d) = &f.dev {
        attrs.push(a("dev", d));
    }
    if f.nat.is_empty() {
        o.empty("forward", &attrs);
        return;
    }
    o.open("forward", &attrs);
    o.open("nat", &[]);
    if let Some(r) = f.nat.addresses {
        o.empty("address", &[a("start", r.start), a("end", r.end)]);
    }
    if let Some(p) = f.nat.ports {
        o.empty("port", &[a("start", p.start), a("end", p.end)]);
    }
    o.close("nat");
    o.close("forward");
}

fn format_dns(o: &mut Out, dns: &Dns) {
    if dns.is_default() {
        return;
    }
    let attrs = if dns.enable {
        Vec::new()
    } else {
        vec![a("enable", "no")]
    };
    if dns.forwarders.is_empty() && dns.hosts.is_empty() {
        o.empty("dns", &attrs);
        return;
    }
    o.open("dns", &attrs);
    for f in &dns.forwarders {
        let mut attrs = Vec::new();
        if let Some(ip) = f.addr {
            attrs.push(a("addr", ip));
        }
        if let Some(d) = &f.domain {
            attrs.push(a("domain", d));
        }
        o.empty("forwarder", &attrs);
    }
    for h in &dns.hosts {
        o.open("host", &[a("ip", h.ip)]);
        for name in &h.hostnames {
            o.leaf("hostname", &[], name);
        }
        o.close("host");
    }
    o.close("dns");
}

fn format_ip(o: &mut Out, ip: &NetworkIp) {
    let attrs = [
        a("family", addr::family(ip.address)),
        a("address", ip.address),
        a("prefix", ip.prefix),
    ];
    let Some(dhcp) = &ip.dhcp else {
        o.empty("ip", &attrs);
        return;
    };
    o.open("ip", &attrs);
    o.open("dhcp", &[]);
    for r in &dhcp.ranges {
        o.empty("range", &[a("start", r.start), a("end", r.end)]);
    }
    for h in &dhcp.hosts {
        let mut attrs = Vec::new();
        if let Some(m) = &h.mac {
            attrs.push(a("mac", m));
        }
        if let Some(n) = &h.name {
            attrs.push(a("name", n));
        }
        attrs.push(a("ip", h.ip));
        o.empty("host", &attrs);
    }
    o.close("dhcp");
    o.close("ip");
}
