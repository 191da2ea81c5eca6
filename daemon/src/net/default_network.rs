//! The network a fresh host gets: `default`, NAT with DHCP and DNS, as
//! libvirt's package installs one. lxvirtd defines it once, the first
//! time it runs with a configuration directory that has no networks yet,
//! on the first subnet of 192.168.122.0/24 … 192.168.254.0/24 the host
//! does not route already; it is marked to start with the host. Whoever
//! undefines it keeps it undefined.

use std::net::{IpAddr, Ipv4Addr};

use crate::domain::NetworkDef;
use crate::domain::addr::Subnet;
use crate::net::HostRoute;

/// The name of the network a fresh host gets.
pub const NAME: &str = "default";

/// The default network on the first free subnet, or `None` when the host
/// routes all of them.
pub fn definition(routes: &[HostRoute]) -> Option<NetworkDef> {
    let taken = |third: u8| {
        let ours = Subnet {
            address: IpAddr::V4(Ipv4Addr::new(192, 168, third, 0)),
            prefix: 24,
        };
        routes.iter().any(|route| {
            route.prefix > 0
                && Subnet {
                    address: route.destination,
                    prefix: route.prefix,
                }
                .overlaps(&ours)
        })
    };
    let third = (122..=254).find(|third| !taken(*third))?;
    let xml = format!(
        "<network><name>{NAME}</name><forward mode='nat'/>\
         <ip address='192.168.{third}.1' prefix='24'>\
         <dhcp><range start='192.168.{third}.2' end='192.168.{third}.254'/></dhcp></ip></network>"
    );
    NetworkDef::from_xml(&xml).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn route(text: &str, prefix: u8) -> HostRoute {
        HostRoute {
            destination: text.parse().unwrap(),
            prefix,
            oif: Some(2),
        }
    }

    #[test]
    fn the_default_network_takes_the_first_subnet_the_host_does_not_route() {
        let free = definition(&[route("0.0.0.0", 0), route("10.0.0.0", 8)]).unwrap();
        assert_eq!(free.name(), "default");
        assert_eq!(free.ips[0].address.to_string(), "192.168.122.1");
        assert!(free.ips[0].dhcp.is_some());
        let shifted =
            definition(&[route("192.168.122.0", 24), route("192.168.123.0", 24)]).unwrap();
        assert_eq!(shifted.ips[0].address.to_string(), "192.168.124.1");
        assert!(definition(&[route("192.168.0.0", 16)]).is_none());
    }
}
