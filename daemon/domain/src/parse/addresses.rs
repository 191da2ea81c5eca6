//! Addresses in attributes, for both documents: IP addresses, families,
//! prefixes, MAC addresses, interface and DNS names, each read with an
//! error that names its position and says what to write instead.

use std::net::IpAddr;

use super::super::addr::{self, max_prefix};
use super::super::error::DomainError;
use super::super::values::{MacAddr, check_dns_name, check_ifname};
use super::super::xml::{Attribute, Element, Pos};
use super::helpers::{Result, check_attrs, check_children, keyword, number, req_attr};

/// An IPv4 or IPv6 address.
pub(super) fn ip_attr(el: &Element, a: &Attribute) -> Result<IpAddr> {
    a.value.trim().parse().map_err(|_| {
        DomainError::invalid(
            a.pos,
            &el.qname,
            format!("{} '{}' is not an IP address", a.name, a.value),
            "write an IPv4 address like 192.168.122.10 or an IPv6 address like fd00::10",
        )
    })
}

/// A required IP address attribute.
pub(super) fn req_ip(el: &Element, name: &str, example: &str) -> Result<IpAddr> {
    ip_attr(el, req_attr(el, name, &format!("add {name}='{example}'"))?)
}

/// Checks the optional `family` attribute against `address`.
pub(super) fn check_family(el: &Element, address: IpAddr) -> Result<()> {
    if let Some(f) = el.attribute("family") {
        keyword(
            f.pos,
            &el.qname,
            "family",
            &f.value,
            |s| matches!(s, "ipv4" | "ipv6").then_some(()),
            &["ipv4", "ipv6"],
        )?;
        if f.value.trim() != addr::family(address) {
            return Err(DomainError::invalid(
                f.pos,
                &el.qname,
                format!("family '{}' does not match address {address}", f.value),
                format!("write family='{}' or leave it out", addr::family(address)),
            ));
        }
    }
    Ok(())
}

/// Refuses `other` (attribute `a`) unless it has `address`'s family.
pub(super) fn same_family(
    el: &Element,
    a: &Attribute,
    address: IpAddr,
    other: IpAddr,
) -> Result<()> {
    if address.is_ipv4() != other.is_ipv4() {
        return Err(DomainError::invalid(
            a.pos,
            &el.qname,
            format!("{} {other} is not in the same family as {address}", a.name),
            "use addresses of one family (IPv4 or IPv6) in one element",
        ));
    }
    Ok(())
}

/// The optional `prefix` attribute, `min` up to 32 or 128 by `address`'s
/// family.
pub(super) fn prefix_attr(el: &Element, address: IpAddr, min: u8) -> Result<Option<u8>> {
    el.attribute("prefix")
        .map(|a| {
            number(
                a.pos,
                &el.qname,
                "prefix",
                &a.value,
                min,
                max_prefix(address),
            )
        })
        .transpose()
}

/// A network interface name (at most 15 bytes).
pub(super) fn ifname(el: &Element, a: &Attribute) -> Result<String> {
    check_ifname(&a.value).map_err(|e| {
        DomainError::invalid(
            a.pos,
            &el.qname,
            format!("{} '{}': {e}", a.name, a.value),
            "use a network interface name of at most 15 characters, such as eth0",
        )
    })?;
    Ok(a.value.clone())
}

/// An element with one required interface-name attribute `attr` and
/// nothing else (`<target dev='veth0'/>`).
pub(super) fn ifname_child(el: &Element, attr: &str) -> Result<String> {
    check_attrs(el, &[attr])?;
    check_children(el, &[], &[])?;
    ifname(el, req_attr(el, attr, &format!("add {attr}='eth0'"))?)
}

/// A unicast MAC address.
pub(super) fn mac_attr(el: &Element, a: &Attribute) -> Result<MacAddr> {
    MacAddr::parse(&a.value).map_err(|e| {
        DomainError::invalid(
            a.pos,
            &el.qname,
            e,
            "use a unicast address (even first byte) like 52:54:00:12:34:56",
        )
    })
}

/// `<mac address=…/>`.
pub(super) fn mac_element(el: &Element) -> Result<MacAddr> {
    check_attrs(el, &["address"])?;
    check_children(el, &[], &[])?;
    mac_attr(
        el,
        req_attr(el, "address", "add address='52:54:00:12:34:56'")?,
    )
}

/// A DNS name (`example.org`) or host name (`web1`).
pub(super) fn dns_name(el: &Element, pos: Pos, what: &str, value: &str) -> Result<String> {
    let v = value.trim();
    check_dns_name(v).map_err(|e| {
        DomainError::invalid(
            pos,
            &el.qname,
            format!("{what} '{value}' is not a DNS name: {e}"),
            "use labels of letters, digits and '-' separated by dots, such as web1 or lxvirt.example.org",
        )
    })?;
    Ok(v.to_owned())
}

/// `<mtu size=…/>`.
pub(super) fn mtu_element(el: &Element) -> Result<u16> {
    check_attrs(el, &["size"])?;
    check_children(el, &[], &[])?;
    let a = req_attr(el, "size", "add size='1500'")?;
    number(
        a.pos,
        "mtu",
        "MTU",
        &a.value,
        super::super::def::MIN_MTU,
        u16::MAX,
    )
}
