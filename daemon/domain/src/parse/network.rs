//! From the raw XML tree to a validated [`NetworkDef`].
//!
//! The same strictness as for domains: children in any order, unknown
//! elements and attributes refused, every error positioned with a fix.
//! Address rules (ranges inside their subnet, unique hosts, …) are checked
//! here, where the positions are at hand.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use super::super::addr::{self, Subnet};
use super::super::error::DomainError;
use super::super::network::{
    Bridge, Dhcp, DhcpHost, DhcpRange, Dns, DnsForwarder, DnsHost, Forward, ForwardMode, Ipv4Range,
    MAX_BRIDGE_DELAY, Nat, NetworkDef, NetworkDomain, NetworkIp, PortRange,
};
use super::super::values::{MacAddr, NetworkName};
use super::super::xml::{Attribute, Element};
use super::addresses::{
    check_family, dns_name, ifname, ifname_child, ip_attr, mac_attr, mac_element, mtu_element,
    req_ip,
};
use super::helpers::{
    Result, attr_keyword, attr_yes_no, check_attrs, check_children, keyword, number, object_name,
    parse_on_off, req_attr, text, uuid_or_new,
};

/// libvirt's forward modes that lxvirt does not offer as network modes.
const DEVICE_MODES: &[&str] = &["bridge", "private", "vepa", "passthrough", "hostdev"];

/// Parses a network document.
pub fn parse_network(root: &Element) -> Result<NetworkDef> {
    if root.namespace.is_some() || root.name != "network" {
        return Err(DomainError::invalid(
            root.pos,
            &root.qname,
            format!("the root element is <{}>", root.qname),
            "a network document starts with <network>",
        ));
    }
    check_attrs(root, &[])?;
    check_children(
        root,
        &[
            "name", "uuid", "forward", "bridge", "mac", "mtu", "domain", "dns",
        ],
        &["ip"],
    )?;
    let name = object_name(root, "network", "default", NetworkName::new)?;
    let uuid = uuid_or_new(root, "network")?;
    let forward = root.element("forward").map(parse_forward).transpose()?;
    let bridge = root
        .element("bridge")
        .map(parse_bridge)
        .transpose()?
        .unwrap_or_default();
    let mac = root.element("mac").map(mac_element).transpose()?;
    let mtu = root.element("mtu").map(mtu_element).transpose()?;
    let domain = root.element("domain").map(parse_domain).transpose()?;
    let dns = root
        .element("dns")
        .map(parse_dns)
        .transpose()?
        .unwrap_or_default();
    let ips = parse_ips(root)?;
    Ok(NetworkDef {
        name,
        uuid,
        forward,
        bridge,
        mac,
        mtu,
        domain,
        dns,
        ips,
    })
}

fn parse_forward(el: &Element) -> Result<Forward> {
    check_attrs(el, &["mode", "dev"])?;
    check_children(el, &["nat"], &["interface"])?;
    let mode = match el.attribute("mode") {
        None => ForwardMode::Nat,
        Some(a) if DEVICE_MODES.contains(&a.value.trim()) => {
            return Err(DomainError::invalid(
                a.pos,
                "forward",
                format!("forward mode '{}' is not a network mode in lxvirt", a.value),
                "use mode='nat', 'route' or 'open', or give the domain an <interface type='bridge'> or type='direct' instead",
            ));
        }
        Some(a) => keyword(
            a.pos,
            "forward",
            "forward mode",
            &a.value,
            ForwardMode::parse,
            ForwardMode::NAMES,
        )?,
    };
    let dev_attr = el.attribute("dev");
    let mut dev = dev_attr.map(|a| ifname(el, a)).transpose()?;
    for (i, iface) in el.elements_named("interface").enumerate() {
        let name = ifname_child(iface, "dev")?;
        if i > 0 {
            return Err(DomainError::invalid(
                iface.pos,
                "forward",
                format!(
                    "forward mode '{mode}' leaves by one device, and this is a second <interface>"
                ),
                "keep one <interface>, or none to leave by any device",
            ));
        }
        match &dev {
            Some(d) if *d != name => {
                return Err(DomainError::invalid(
                    iface.pos,
                    "interface",
                    format!("dev '{name}' is not the forward dev '{d}'"),
                    "name the same device in both, or keep only one of them",
                ));
            }
            _ => dev = Some(name),
        }
    }
    if mode == ForwardMode::Open
        && let Some(d) = &dev
    {
        let pos = dev_attr
            .map(|a| a.pos)
            .or_else(|| el.element("interface").map(|e| e.pos))
            .unwrap_or(el.pos);
        return Err(DomainError::invalid(
            pos,
            "forward",
            format!("forward mode 'open' adds no rules, so it cannot confine traffic to '{d}'"),
            "remove dev= and <interface>, or use mode='route'",
        ));
    }
    let nat = match el.element("nat") {
        None => Nat::default(),
        Some(n) if mode != ForwardMode::Nat => {
            return Err(DomainError::invalid(
                n.pos,
                "nat",
                format!("<nat> has no effect in forward mode '{mode}'"),
                "remove <nat>, or use mode='nat'",
            ));
        }
        Some(n) => parse_nat(n)?,
    };
    Ok(Forward { mode, dev, nat })
}

fn parse_nat(el: &Element) -> Result<Nat> {
    check_attrs(el, &[])?;
    check_children(el, &["address", "port"], &[])?;
    let addresses = el
        .element("address")
        .map(|a| {
            start_end(
                a,
                "start='203.0.113.10' end='203.0.113.20'",
                |at| match ip_attr(a, at)? {
                    IpAddr::V4(v4) => Ok(v4),
                    IpAddr::V6(v6) => Err(DomainError::invalid(
                        at.pos,
                        "address",
                        format!("{} {v6} is an IPv6 address", at.name),
                        "masquerading uses IPv4 addresses; give IPv4 addresses of the host",
                    )),
                },
            )
        })
        .transpose()?
        .map(|(start, end)| Ipv4Range { start, end });
    let ports = el
        .element("port")
        .map(|p| {
            start_end(p, "start='1024' end='65535'", |at| {
                number(at.pos, "port", &at.name, &at.value, 1u16, u16::MAX)
            })
        })
        .transpose()?
        .map(|(start, end)| PortRange { start, end });
    Ok(Nat { addresses, ports })
}

/// An element that is an inclusive range, `<x start= end=/>`: both
/// attributes read by `read`, `start` not after `end`.
fn start_end<T: Ord + std::fmt::Display>(
    el: &Element,
    example: &str,
    read: impl Fn(&Attribute) -> Result<T>,
) -> Result<(T, T)> {
    check_attrs(el, &["start", "end"])?;
    check_children(el, &[], &[])?;
    let fix = format!("give start= and end=, such as {example}");
    let start = read(req_attr(el, "start", &fix)?)?;
    let end_attr = req_attr(el, "end", &fix)?;
    let end = read(end_attr)?;
    if start > end {
        return Err(DomainError::invalid(
            end_attr.pos,
            &el.qname,
            format!("end {end} comes before start {start}"),
            "swap start and end",
        ));
    }
    Ok((start, end))
}

fn parse_bridge(el: &Element) -> Result<Bridge> {
    check_attrs(el, &["name", "stp", "delay"])?;
    check_children(el, &[], &[])?;
    let defaults = Bridge::default();
    Ok(Bridge {
        name: el.attribute("name").map(|a| ifname(el, a)).transpose()?,
        stp: attr_keyword(el, "stp", parse_on_off, &["on", "off"])?.unwrap_or(defaults.stp),
        delay: el
            .attribute("delay")
            .map(|a| number(a.pos, "bridge", "delay", &a.value, 0, MAX_BRIDGE_DELAY))
            .transpose()?
            .unwrap_or(defaults.delay),
    })
}

fn parse_domain(el: &Element) -> Result<NetworkDomain> {
    check_attrs(el, &["name", "localOnly"])?;
    check_children(el, &[], &[])?;
    let a = req_attr(el, "name", "add name='lxvirt.example.org'")?;
    Ok(NetworkDomain {
        name: dns_name(el, a.pos, "name", &a.value)?,
        local_only: attr_yes_no(el, "localOnly")?.unwrap_or(false),
    })
}

fn parse_dns(el: &Element) -> Result<Dns> {
    check_attrs(el, &["enable"])?;
    check_children(el, &[], &["forwarder", "host"])?;
    let enable = attr_yes_no(el, "enable")?.unwrap_or(true);
    if !enable && let Some(child) = el.elements().next() {
        return Err(DomainError::invalid(
            child.pos,
            "dns",
            format!(
                "DNS is disabled (enable='no'), so <{}> has no effect",
                child.name
            ),
            "remove it, or remove enable='no'",
        ));
    }
    let mut forwarders: Vec<DnsForwarder> = Vec::new();
    for f in el.elements_named("forwarder") {
        check_attrs(f, &["addr", "domain"])?;
        check_children(f, &[], &[])?;
        let fwd = DnsForwarder {
            addr: f.attribute("addr").map(|a| ip_attr(f, a)).transpose()?,
            domain: f
                .attribute("domain")
                .map(|a| dns_name(f, a.pos, "domain", &a.value))
                .transpose()?,
        };
        if fwd.addr.is_none() && fwd.domain.is_none() {
            return Err(DomainError::missing(
                f.pos,
                "forwarder",
                "attribute 'addr' or 'domain'",
                "add addr='192.0.2.53' (a server to ask) and/or domain='example.org' (the names it is asked about)",
            ));
        }
        if forwarders.contains(&fwd) {
            return Err(DomainError::duplicate(f.pos, "dns", "this <forwarder>"));
        }
        forwarders.push(fwd);
    }
    let mut hosts: Vec<DnsHost> = Vec::new();
    for h in el.elements_named("host") {
        check_attrs(h, &["ip"])?;
        check_children(h, &[], &["hostname"])?;
        let ip = req_ip(h, "ip", "10.213.0.5")?;
        if hosts.iter().any(|o| o.ip == ip) {
            return Err(DomainError::invalid(
                h.pos,
                "host",
                format!("another <host> already has ip {ip}"),
                "list all names of one address in one <host>",
            ));
        }
        let mut hostnames: Vec<String> = Vec::new();
        for n in h.elements_named("hostname") {
            check_attrs(n, &[])?;
            let name = dns_name(n, n.pos, "host name", &text(n)?)?;
            if hostnames.contains(&name) {
                return Err(DomainError::duplicate(
                    n.pos,
                    "host",
                    format!("<hostname>{name}</hostname>"),
                ));
            }
            hostnames.push(name);
        }
        if hostnames.is_empty() {
            return Err(DomainError::missing(
                h.pos,
                "host",
                "<hostname>",
                "add <hostname>web</hostname>",
            ));
        }
        hosts.push(DnsHost { ip, hostnames });
    }
    Ok(Dns {
        enable,
        forwarders,
        hosts,
    })
}

/// Every `<ip>`, with the rules between them: subnets apart, one DHCP
/// service per family.
fn parse_ips(root: &Element) -> Result<Vec<NetworkIp>> {
    let mut ips: Vec<NetworkIp> = Vec::new();
    let mut dhcp_by_family: [Option<&Element>; 2] = [None, None];
    for el in root.elements_named("ip") {
        let ip = parse_ip(el)?;
        if let Some(other) = ips.iter().find(|o| o.subnet().overlaps(&ip.subnet())) {
            return Err(DomainError::invalid(
                el.pos,
                "ip",
                format!(
                    "subnet {} overlaps {} of another <ip>",
                    ip.subnet(),
                    other.subnet()
                ),
                "give each <ip> of a network its own subnet",
            ));
        }
        if ip.dhcp.is_some() {
            let slot = &mut dhcp_by_family[usize::from(ip.address.is_ipv6())];
            if let Some(first) = slot {
                let family = if ip.address.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(DomainError::invalid(
                    el.element("dhcp").map_or(el.pos, |d| d.pos),
                    "ip",
                    format!(
                        "a second {family} <ip> with <dhcp> (the first is on line {})",
                        first.pos.line
                    ),
                    format!("a network serves DHCP on one {family} subnet; remove one <dhcp>"),
                ));
            }
            *slot = Some(el);
        }
        ips.push(ip);
    }
    Ok(ips)
}

fn parse_ip(el: &Element) -> Result<NetworkIp> {
    check_attrs(el, &["address", "netmask", "prefix", "family"])?;
    check_children(el, &["dhcp"], &[])?;
    let address = req_ip(el, "address", "10.213.0.1")?;
    check_family(el, address)?;
    let prefix = match (el.attribute("prefix"), el.attribute("netmask")) {
        (Some(_), Some(m)) => {
            return Err(DomainError::invalid(
                m.pos,
                "ip",
                "both prefix= and netmask= are given",
                "keep one of them",
            ));
        }
        (Some(p), None) => number(
            p.pos,
            "ip",
            "prefix",
            &p.value,
            1,
            addr::max_prefix(address),
        )?,
        (None, Some(m)) => netmask(el, m, address)?,
        (None, None) => {
            return Err(DomainError::missing(
                el.pos,
                "ip",
                "attribute 'prefix' (or 'netmask')",
                if address.is_ipv4() {
                    "add prefix='24' (or netmask='255.255.255.0')"
                } else {
                    "add prefix='64'"
                },
            ));
        }
    };
    let subnet = Subnet { address, prefix };
    if subnet.is_reserved(address) {
        let a = el.attribute("address").map_or(el.pos, |a| a.pos);
        return Err(DomainError::invalid(
            a,
            "ip",
            format!("{address} is the network or broadcast address of {subnet}"),
            format!(
                "give the bridge a host address of the subnet, such as {}",
                first_host(subnet)
            ),
        ));
    }
    let dhcp = el
        .element("dhcp")
        .map(|d| parse_dhcp(d, subnet))
        .transpose()?
        .flatten();
    Ok(NetworkIp {
        address,
        prefix,
        dhcp,
    })
}

/// The first address after the network address, for advice.
fn first_host(subnet: Subnet) -> IpAddr {
    match subnet.network() {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_add(1))),
        IpAddr::V6(n) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n).wrapping_add(1))),
    }
}

fn netmask(el: &Element, m: &Attribute, address: IpAddr) -> Result<u8> {
    let mask = match (address, ip_attr(el, m)?) {
        (IpAddr::V4(_), IpAddr::V4(mask)) => mask,
        _ => {
            return Err(DomainError::invalid(
                m.pos,
                "ip",
                "netmask= is for IPv4 addresses",
                "write prefix='64' (the prefix length) instead",
            ));
        }
    };
    match addr::netmask_prefix(mask) {
        Some(p) if p > 0 => Ok(p),
        _ => Err(DomainError::invalid(
            m.pos,
            "ip",
            format!("netmask {mask} is not a run of ones followed by zeros"),
            "write a netmask such as 255.255.255.0, or prefix='24'",
        )),
    }
}

/// Refuses `ip` (of attribute `a`) unless it is a usable host address of
/// `subnet` other than the bridge's own.
fn check_host_address(el: &Element, a: &Attribute, ip: IpAddr, subnet: Subnet) -> Result<()> {
    let problem = if !subnet.contains(ip) {
        format!("{} {ip} is outside the subnet {subnet}", a.name)
    } else if subnet.is_reserved(ip) {
        format!(
            "{} {ip} is the network or broadcast address of {subnet}",
            a.name
        )
    } else if ip == subnet.address {
        format!("{} {ip} is the bridge's own address", a.name)
    } else {
        return Ok(());
    };
    Err(DomainError::invalid(
        a.pos,
        &el.qname,
        problem,
        format!(
            "use addresses of {subnet} other than the network, broadcast and bridge ({}) addresses",
            subnet.address
        ),
    ))
}

/// `<dhcp>`; `None` when it has neither ranges nor hosts.
fn parse_dhcp(el: &Element, subnet: Subnet) -> Result<Option<Dhcp>> {
    check_attrs(el, &[])?;
    check_children(el, &[], &["range", "host"])?;
    let mut dhcp = Dhcp::default();
    for r in el.elements_named("range") {
        // Same family and inside the subnet, so IpAddr's order is numeric.
        let (start, end) = start_end(r, "start='10.213.0.100' end='10.213.0.199'", |a| {
            let ip = ip_attr(r, a)?;
            check_host_address(r, a, ip, subnet)?;
            Ok(ip)
        })?;
        let range = DhcpRange { start, end };
        if (start..=end).contains(&subnet.address) {
            return Err(DomainError::invalid(
                r.pos,
                "range",
                format!(
                    "the range {start}-{end} contains the bridge's own address {}",
                    subnet.address
                ),
                "start the range after the bridge's address or end it before",
            ));
        }
        if let Some(other) = dhcp
            .ranges
            .iter()
            .find(|o| o.start <= end && start <= o.end)
        {
            return Err(DomainError::invalid(
                r.pos,
                "range",
                format!(
                    "the range {start}-{end} overlaps {}-{}",
                    other.start, other.end
                ),
                "make the ranges disjoint, or merge them into one",
            ));
        }
        dhcp.ranges.push(range);
    }
    let mut macs: HashSet<MacAddr> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut ips: HashSet<IpAddr> = HashSet::new();
    for h in el.elements_named("host") {
        check_attrs(h, &["mac", "name", "ip"])?;
        check_children(h, &[], &[])?;
        let mac = h.attribute("mac").map(|a| mac_attr(h, a)).transpose()?;
        let name = h
            .attribute("name")
            .map(|a| dns_name(h, a.pos, "name", &a.value))
            .transpose()?;
        if subnet.address.is_ipv4() && mac.is_none() && name.is_none() {
            return Err(DomainError::missing(
                h.pos,
                "host",
                "attribute 'mac' or 'name'",
                "say which client gets the address: add mac='52:54:00:12:34:56' and/or name='web'",
            ));
        }
        if subnet.address.is_ipv6() {
            if let Some(a) = h.attribute("mac") {
                return Err(DomainError::invalid(
                    a.pos,
                    "host",
                    "DHCPv6 clients are not known by MAC address",
                    "remove mac= and identify the client by name=",
                ));
            }
            if name.is_none() {
                return Err(DomainError::missing(
                    h.pos,
                    "host",
                    "attribute 'name'",
                    "add name='web': DHCPv6 clients are known by name",
                ));
            }
        }
        let ip_a = req_attr(h, "ip", "add ip='10.213.0.10'")?;
        let ip = ip_attr(h, ip_a)?;
        check_host_address(h, ip_a, ip, subnet)?;
        let taken = |what: String| {
            Err(DomainError::invalid(
                h.pos,
                "host",
                format!("another <host> already has {what}"),
                "give each fixed lease its own MAC address, name and address",
            ))
        };
        if let Some(m) = mac
            && !macs.insert(m)
        {
            return taken(format!("mac {m}"));
        }
        if let Some(n) = &name
            && !names.insert(n.clone())
        {
            return taken(format!("name '{n}'"));
        }
        if !ips.insert(ip) {
            return taken(format!("ip {ip}"));
        }
        dhcp.hosts.push(DhcpHost { mac, name, ip });
    }
    Ok((dhcp != Dhcp::default()).then_some(dhcp))
}
