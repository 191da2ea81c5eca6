//! A container's network interfaces as it sees them: names, MACs and
//! addresses over rtnetlink in its network namespace, counters from its
//! `/proc/PID/net/dev`. Read from the daemon, without entering it.

use std::collections::HashMap;
use std::path::Path;

use crate::driver::{GuestInterface, InterfaceCounters};
use crate::net::{LinkError, Netlink};
use crate::sys::linux;

/// Why a container's interfaces could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot open its network namespace: {0}")]
    Namespace(crate::sys::Errno),
    #[error(transparent)]
    Netlink(#[from] LinkError),
    #[error("cannot read /proc/{pid}/net/dev: {source}")]
    Counters {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

/// The interfaces of the network namespace of process `pid`, loopback
/// left out, by name.
pub fn interfaces(pid: i32) -> Result<Vec<GuestInterface>, GuestError> {
    let netns = linux::open_namespace(Path::new(&format!("/proc/{pid}/ns/net")))
        .map_err(GuestError::Namespace)?;
    let netlink = Netlink::open_in(std::os::fd::AsFd::as_fd(&netns))?;
    let links = netlink.links()?;
    let addresses = netlink.addresses()?;
    let counters = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|text| parse_net_dev(&text))
        .map_err(|source| GuestError::Counters { pid, source })?;
    let mut list: Vec<GuestInterface> = links
        .into_iter()
        .filter(|link| link.name != "lo")
        .map(|link| GuestInterface {
            mac: link.mac.map(|m| crate::domain::MacAddr(m).to_string()),
            addresses: addresses
                .iter()
                .filter(|(index, _, _)| *index == link.index)
                .map(|(_, address, prefix)| (*address, *prefix))
                .collect(),
            counters: counters.get(&link.name).copied().unwrap_or_default(),
            name: link.name,
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// `/proc/net/dev`: two header lines, then `NAME: rx_bytes rx_packets
/// rx_errs rx_drop fifo frame compressed multicast tx_bytes tx_packets
/// tx_errs tx_drop …` per interface.
pub fn parse_net_dev(text: &str) -> HashMap<String, InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let field = |i: usize| fields.get(i).copied().unwrap_or(0);
            Some((
                name.trim().to_owned(),
                InterfaceCounters {
                    rx_bytes: field(0),
                    rx_packets: field(1),
                    rx_errors: field(2),
                    rx_dropped: field(3),
                    tx_bytes: field(8),
                    tx_packets: field(9),
                    tx_errors: field(10),
                    tx_dropped: field(11),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_are_read_by_name() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
 eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n";
        let counters = parse_net_dev(text);
        let eth0 = counters["eth0"];
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (5000, 40, 1, 2)
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (3000, 30, 3, 4)
        );
        assert_eq!(counters["lo"].rx_bytes, 100);
    }

    /// This process's own namespace: at least loopback is there, and it
    /// is left out.
    #[test]
    fn the_interfaces_of_a_namespace_leave_loopback_out() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let list = interfaces(std::process::id() as i32).unwrap();
        assert!(list.iter().all(|i| i.name != "lo"), "{list:?}");
    }
}
