//! The ports of one virtual network: which MAC is plugged in through
//! which host end, which IPv4 addresses it may send from, and the address
//! lxvirt picks for it from the network's DHCP range.
//!
//! A port's IPv4 addresses are known when it joins: the interface's own
//! IPv4 `<ip>`s if it has any; else, on a network that serves IPv4 DHCP,
//! one address lxvirt assigns and pins in dnsmasq (so DHCP hands out
//! exactly that one); else none is known, and the port filter holds it to
//! its MAC only. The assignment is:
//!
//! 1. the `<host>` of the network's `<dhcp>` with the port's MAC (or,
//!    without a MAC, with the domain's name);
//! 2. the address the MAC had before while the network ran;
//! 3. the address of an unexpired lease of the MAC (so it keeps its
//!    address across a daemon restart);
//! 4. the lowest address of the ranges that is not the bridge's, not a
//!    `<host>`'s, not another port's, not remembered for another MAC and
//!    not leased to another MAC; when every address is so, the ones only
//!    remembered for MACs that left are taken back.
//!
//! An address is remembered for the last MAC that left with it only, so
//! the memory of a network is bounded by its ranges, whatever comes and
//! goes (transient domains get a new MAC at every start).
//!
//! dnsmasq refuses to hand out a configured address that is leased to
//! another MAC, which is why leases count as taken.
//!
//! Each plugged port has a record, `RUN/network/NAME.ports/MAC`, from
//! which a restarted daemon rebuilds the table.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::network::ForwardMode;
use crate::domain::{MacAddr, NetworkDef};
use crate::net::dnsmasq::Lease;
use crate::persist::{self, Durability, PersistError, Versioned};

/// Why a port cannot join its network.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "network {network}: no free address left in its DHCP range {ranges} (each is the bridge's, a <host>'s, another port's or leased); widen the <range> or stop a domain on the network"
    )]
    Exhausted { network: String, ranges: String },
    #[error(
        "network {network}: address {address} is the network's own; give the interface another <ip>"
    )]
    OwnAddress { network: String, address: Ipv4Addr },
    #[error(
        "network {network}: address {address} is held by the port of domain '{holder}'; give the interface another <ip>"
    )]
    AddressTaken {
        network: String,
        address: Ipv4Addr,
        holder: String,
    },
    #[error(
        "network {network}: MAC {mac} is plugged in already, by domain '{holder}'; give the interface another <mac>"
    )]
    MacTaken {
        network: String,
        mac: MacAddr,
        holder: String,
    },
    #[error("network {network}: cannot record the port of MAC {mac}")]
    Record {
        network: String,
        mac: MacAddr,
        #[source]
        source: PersistError,
    },
}

/// A port a domain's interface asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub network: String,
    pub mac: MacAddr,
    /// The host end's name (the live definition's `<target dev>`).
    pub port: String,
    pub domain: String,
    /// The interface's own IPv4 `<ip>` addresses.
    pub ipv4: Vec<Ipv4Addr>,
}

/// A plugged port, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub mac: String,
    pub port: String,
    pub domain: String,
    /// The addresses it may send from; `None`: not known (held to its MAC
    /// only).
    pub ipv4: Option<Vec<Ipv4Addr>>,
    /// The address lxvirt assigned it and pinned in dnsmasq.
    pub pinned: Option<Ipv4Addr>,
    /// The device group its host end was made in; `None`: the network
    /// filters nothing (`open`).
    pub group: Option<u32>,
}

impl Versioned for PortRecord {
    const VERSION: u32 = 1;
}

impl PortRecord {
    /// Its MAC; a record with a bad one is not lxvirtd's.
    pub fn mac(&self) -> Option<MacAddr> {
        MacAddr::parse(&self.mac).ok()
    }
}

/// The file of the port of `mac` in `dir`.
pub fn record_path(dir: &Path, mac: MacAddr) -> PathBuf {
    dir.join(mac.to_string().replace(':', "-"))
}

/// Whether the network filters its ports: every mode but `open`.
pub fn filtered(def: &NetworkDef) -> bool {
    def.forward_mode() != Some(ForwardMode::Open)
}

/// The IPv4 addresses of the network whose owner lxvirt knows without a
/// port: the bridge's own and those of the `<host>`s of its `<dhcp>`.
pub fn static_ipv4(def: &NetworkDef) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    for ip in &def.ips {
        if let IpAddr::V4(v4) = ip.address {
            addresses.push(v4);
        }
        for host in ip.dhcp.iter().flat_map(|d| &d.hosts) {
            if let IpAddr::V4(v4) = host.ip {
                addresses.push(v4);
            }
        }
    }
    addresses
}

/// The network's IPv4 DHCP ranges, by start.
fn ranges(def: &NetworkDef) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut ranges: Vec<_> = def
        .ips
        .iter()
        .flat_map(|ip| ip.dhcp.iter().flat_map(|d| &d.ranges))
        .filter_map(|range| match (range.start, range.end) {
            (IpAddr::V4(start), IpAddr::V4(end)) => Some((start, end)),
            _ => None,
        })
        .collect();
    ranges.sort();
    ranges
}

fn in_ranges(ranges: &[(Ipv4Addr, Ipv4Addr)], address: Ipv4Addr) -> bool {
    ranges
        .iter()
        .any(|(start, end)| (*start..=*end).contains(&address))
}

/// What else holds addresses on the network, for [`assign`].
#[derive(Debug, Clone, Copy)]
pub struct Holders<'a> {
    /// The plugged ports' known addresses, with their MACs.
    pub ports: &'a HashMap<Ipv4Addr, MacAddr>,
    /// What MACs that left had, while the network ran.
    pub remembered: &'a HashMap<MacAddr, Ipv4Addr>,
    /// The same, by address.
    pub remembered_at: &'a HashMap<Ipv4Addr, MacAddr>,
    /// dnsmasq's leases.
    pub leases: &'a [Lease],
    /// Seconds since the epoch, to tell expired leases.
    pub now: u64,
}

/// The address lxvirt assigns to `mac` (the port of `domain`), or `None`
/// when the network serves no IPv4 DHCP.
pub fn assign(
    def: &NetworkDef,
    mac: MacAddr,
    domain: &str,
    holders: Holders<'_>,
) -> Result<Option<Ipv4Addr>, PortError> {
    let ranges = ranges(def);
    if ranges.is_empty() {
        return Ok(None);
    }
    let hosts: Vec<_> = def
        .ips
        .iter()
        .flat_map(|ip| ip.dhcp.iter().flat_map(|d| &d.hosts))
        .filter_map(|host| match host.ip {
            IpAddr::V4(v4) => Some((host, v4)),
            IpAddr::V6(_) => None,
        })
        .collect();
    if let Some((_, address)) = hosts.iter().find(|(host, _)| host.mac == Some(mac)) {
        return Ok(Some(*address));
    }
    if let Some((_, address)) = hosts
        .iter()
        .find(|(host, _)| host.mac.is_none() && host.name.as_deref() == Some(domain))
    {
        return Ok(Some(*address));
    }
    let mac_text = mac.to_string();
    let live_leases: Vec<&Lease> = holders
        .leases
        .iter()
        .filter(|l| l.expiry == 0 || l.expiry > holders.now)
        .collect();
    // Sets, not scans: the search below may try as many addresses as the
    // network has ports, and each must cost O(1).
    let leased_to_others: HashSet<Ipv4Addr> = live_leases
        .iter()
        .filter(|l| !l.mac.eq_ignore_ascii_case(&mac_text))
        .filter_map(|l| match l.ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    let leased_to_another = |address: Ipv4Addr| leased_to_others.contains(&address);
    let held_by_another = |address: Ipv4Addr| {
        holders
            .ports
            .get(&address)
            .is_some_and(|holder| *holder != mac)
    };
    let usable = |address: Ipv4Addr| {
        in_ranges(&ranges, address) && !held_by_another(address) && !leased_to_another(address)
    };
    if let Some(address) = holders.remembered.get(&mac).copied()
        && usable(address)
    {
        return Ok(Some(address));
    }
    if let Some(address) = live_leases
        .iter()
        .filter(|l| l.mac.eq_ignore_ascii_case(&mac_text))
        .find_map(|l| match l.ip {
            IpAddr::V4(v4) if usable(v4) => Some(v4),
            _ => None,
        })
    {
        return Ok(Some(address));
    }
    let fixed: HashSet<Ipv4Addr> = static_ipv4(def).into_iter().collect();
    let remembered_by_another = |address: Ipv4Addr| {
        (holders.remembered_at.get(&address)).is_some_and(|other| *other != mac)
    };
    let free = |address: Ipv4Addr, keep_remembered: bool| {
        !fixed.contains(&address)
            && usable(address)
            && !(keep_remembered && remembered_by_another(address))
    };
    for keep_remembered in [true, false] {
        for (start, end) in &ranges {
            let found = (u32::from(*start)..=u32::from(*end))
                .map(Ipv4Addr::from)
                .find(|address| free(*address, keep_remembered));
            if let Some(address) = found {
                return Ok(Some(address));
            }
        }
    }
    Err(PortError::Exhausted {
        network: def.name().to_owned(),
        ranges: ranges
            .iter()
            .map(|(start, end)| format!("{start}-{end}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The plugged ports of one network, by MAC, and what those that left
/// had.
#[derive(Debug, Default)]
pub struct PortTable {
    plugged: BTreeMap<MacAddr, PortRecord>,
    remembered: HashMap<MacAddr, Ipv4Addr>,
    /// `remembered` by address: one MAC each.
    remembered_at: HashMap<Ipv4Addr, MacAddr>,
    /// The plugged ports' known addresses, with their MACs: kept with
    /// `plugged`, so that a plug looks an address up instead of going
    /// through every port.
    addresses: HashMap<Ipv4Addr, MacAddr>,
}

impl PortTable {
    /// The table the records in `dir` describe; a record that cannot be
    /// read is skipped and returned as a problem.
    pub fn load(dir: &Path) -> (PortTable, Vec<PersistError>) {
        let mut table = PortTable::default();
        let mut problems = Vec::new();
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        for entry in entries {
            let path = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(persist::TEMP_PREFIX)
            {
                continue;
            }
            match persist::read_versioned::<PortRecord>(&path) {
                Ok(record) => {
                    if let Some(mac) = record.mac() {
                        table.index(mac, &record);
                        table.plugged.insert(mac, record);
                    }
                }
                Err(error) => problems.push(error),
            }
        }
        (table, problems)
    }

    /// The plugged ports.
    pub fn ports(&self) -> impl Iterator<Item = &PortRecord> {
        self.plugged.values()
    }

    /// How many ports are plugged.
    pub fn len(&self) -> usize {
        self.plugged.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plugged.is_empty()
    }

    pub fn get(&self, mac: MacAddr) -> Option<&PortRecord> {
        self.plugged.get(&mac)
    }

    /// Plugs a port in (replacing the same domain's earlier port of that
    /// MAC) and returns its record; `group` is the network's port group,
    /// if it filters.
    pub fn plug(
        &mut self,
        def: &NetworkDef,
        request: &PortRequest,
        group: Option<u32>,
        leases: &[Lease],
        now: u64,
    ) -> Result<PortRecord, PortError> {
        let network = def.name();
        if let Some(other) = self.plugged.get(&request.mac)
            && other.domain != request.domain
        {
            return Err(PortError::MacTaken {
                network: network.to_owned(),
                mac: request.mac,
                holder: other.domain.clone(),
            });
        }
        let held = &self.addresses;
        let (ipv4, pinned) = if request.ipv4.is_empty() {
            let holders = Holders {
                ports: held,
                remembered: &self.remembered,
                remembered_at: &self.remembered_at,
                leases,
                now,
            };
            let pinned = assign(def, request.mac, &request.domain, holders)?;
            (pinned.map(|a| vec![a]), pinned)
        } else {
            let bridge: Vec<IpAddr> = def.ips.iter().map(|ip| ip.address).collect();
            for address in &request.ipv4 {
                if bridge.contains(&IpAddr::V4(*address)) {
                    return Err(PortError::OwnAddress {
                        network: network.to_owned(),
                        address: *address,
                    });
                }
                let holder = (held.get(address))
                    .filter(|holder| **holder != request.mac)
                    .and_then(|mac| self.plugged.get(mac));
                if let Some(holder) = holder {
                    return Err(PortError::AddressTaken {
                        network: network.to_owned(),
                        address: *address,
                        holder: holder.domain.clone(),
                    });
                }
            }
            (Some(request.ipv4.clone()), None)
        };
        let record = PortRecord {
            mac: request.mac.to_string(),
            port: request.port.clone(),
            domain: request.domain.clone(),
            ipv4,
            pinned,
            group,
        };
        if let Some(old) = self.plugged.insert(request.mac, record.clone()) {
            self.unindex(request.mac, &old);
        }
        self.index(request.mac, &record);
        Ok(record)
    }

    /// Adds `record`'s addresses to the index, as `mac`'s.
    fn index(&mut self, mac: MacAddr, record: &PortRecord) {
        for address in record.ipv4.iter().flatten() {
            self.addresses.insert(*address, mac);
        }
    }

    /// Takes `record`'s addresses out of the index where `mac` holds them.
    fn unindex(&mut self, mac: MacAddr, record: &PortRecord) {
        for address in record.ipv4.iter().flatten() {
            if self.addresses.get(address) == Some(&mac) {
                self.addresses.remove(address);
            }
        }
    }

    /// Unplugs the port of `mac`; its pinned address stays remembered for
    /// the MAC while the network runs.
    pub fn unplug(&mut self, mac: MacAddr) -> Option<PortRecord> {
        let record = self.plugged.remove(&mac)?;
        self.unindex(mac, &record);
        if let Some(address) = record.pinned {
            // The MAC that left with it before forgets it: it was taken.
            if let Some(before) = self.remembered_at.insert(address, mac)
                && before != mac
            {
                self.remembered.remove(&before);
            }
            if let Some(other) = self.remembered.insert(mac, address)
                && other != address
                && self.remembered_at.get(&other) == Some(&mac)
            {
                self.remembered_at.remove(&other);
            }
        }
        Some(record)
    }

    /// Records the port of `mac` in `dir`.
    pub fn save(&self, dir: &Path, network: &str, mac: MacAddr) -> Result<(), PortError> {
        let Some(record) = self.plugged.get(&mac) else {
            return Ok(());
        };
        let error = |source| PortError::Record {
            network: network.to_owned(),
            mac,
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| {
            error(PersistError::Write {
                path: dir.to_owned(),
                source,
            })
        })?;
        persist::write_versioned(&record_path(dir, mac), record, 0o600, Durability::Volatile)
            .map_err(error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn network(dhcp: &str) -> NetworkDef {
        NetworkDef::from_xml(&format!(
            "<network><name>lab</name><ip address='10.251.9.1' prefix='24'><dhcp>{dhcp}</dhcp></ip></network>"
        ))
        .unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }

    fn request(last: u8, domain: &str, ipv4: &[&str]) -> PortRequest {
        PortRequest {
            network: "lab".into(),
            mac: mac(last),
            port: format!("lxv{last}"),
            domain: domain.into(),
            ipv4: ipv4.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn lease(mac: MacAddr, ip: &str, expiry: u64) -> Lease {
        Lease {
            expiry,
            mac: mac.to_string(),
            ip: ip.parse().unwrap(),
            prefix: 0,
            hostname: None,
            client_id: None,
        }
    }

    fn pinned(record: &PortRecord) -> String {
        record.pinned.unwrap().to_string()
    }

    const RANGE: &str = "<range start='10.251.9.100' end='10.251.9.103'/>";

    #[test]
    fn each_port_gets_the_lowest_free_address_and_keeps_it_while_the_network_runs() {
        let def = network(RANGE);
        let mut table = PortTable::default();
        let a = table
            .plug(&def, &request(1, "a", &[]), None, &[], 0)
            .unwrap();
        let b = table
            .plug(&def, &request(2, "b", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&a), "10.251.9.100");
        assert_eq!(pinned(&b), "10.251.9.101");
        assert_eq!(a.ipv4, Some(vec![a.pinned.unwrap()]));
        // a leaves: its address stays a's while another port comes.
        table.unplug(mac(1)).unwrap();
        let c = table
            .plug(&def, &request(3, "c", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&c), "10.251.9.102");
        let again = table
            .plug(&def, &request(1, "a", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&again), "10.251.9.100", "stable for the MAC");
    }

    #[test]
    fn an_address_is_held_while_its_port_has_it_and_free_once_it_has_not() {
        let def = network(RANGE);
        let mut table = PortTable::default();
        table
            .plug(&def, &request(1, "a", &["10.251.9.5"]), None, &[], 0)
            .unwrap();
        let taken = table
            .plug(&def, &request(2, "b", &["10.251.9.5"]), None, &[], 0)
            .unwrap_err();
        assert!(
            matches!(taken, PortError::AddressTaken { ref holder, .. } if holder == "a"),
            "{taken:?}"
        );
        // The same port plugged again with its own address is no clash.
        table
            .plug(&def, &request(1, "a", &["10.251.9.5"]), None, &[], 0)
            .unwrap();
        // Plugged again with another address: the first is free.
        table
            .plug(&def, &request(1, "a", &["10.251.9.6"]), None, &[], 0)
            .unwrap();
        table
            .plug(&def, &request(2, "b", &["10.251.9.5"]), None, &[], 0)
            .unwrap();
        // Gone: its address is free; assignment skips the addresses held.
        table.unplug(mac(1)).unwrap();
        table
            .plug(
                &def,
                &request(3, "c", &["10.251.9.6", "10.251.9.100"]),
                None,
                &[],
                0,
            )
            .unwrap();
        let d = table
            .plug(&def, &request(4, "d", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&d), "10.251.9.101");
    }

    #[test]
    fn what_is_remembered_is_bounded_by_the_range_not_by_the_macs_that_came() {
        let def = network(RANGE);
        let mut table = PortTable::default();
        // 200 ports come and go, each with a MAC of its own (transient
        // domains): one address is remembered for one MAC at most.
        for n in 0..200u8 {
            let record = table
                .plug(&def, &request(n, "t", &[]), None, &[], 0)
                .unwrap();
            assert!(record.pinned.is_some());
            table.unplug(mac(n)).unwrap();
        }
        assert!(table.remembered.len() <= 4, "{}", table.remembered.len());
        assert_eq!(table.remembered.len(), table.remembered_at.len());
        // The last MAC to leave with an address gets it back.
        let back = table
            .plug(&def, &request(199, "t", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(back.pinned, table.remembered.get(&mac(199)).copied());
    }

    #[test]
    fn static_hosts_the_bridge_other_ports_and_leases_are_skipped() {
        let def = network(
            "<range start='10.251.9.100' end='10.251.9.110'/>\
             <host mac='52:54:00:00:00:09' ip='10.251.9.100'/>\
             <host name='db' ip='10.251.9.101'/>",
        );
        let mut table = PortTable::default();
        // An interface's own <ip> in the range holds it.
        table
            .plug(&def, &request(1, "own", &["10.251.9.102"]), None, &[], 0)
            .unwrap();
        let leases = [
            lease(mac(7), "10.251.9.103", 0),             // infinite
            lease(mac(8), "10.251.9.104", 4_000_000_000), // not expired
            lease(mac(6), "10.251.9.105", 1),             // expired
        ];
        let next = table
            .plug(&def, &request(2, "next", &[]), None, &leases, 1_000)
            .unwrap();
        assert_eq!(pinned(&next), "10.251.9.105");
        // The static hosts get their own addresses, by MAC and by name.
        let host = table
            .plug(&def, &request(9, "anything", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&host), "10.251.9.100");
        let db = table
            .plug(&def, &request(4, "db", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&db), "10.251.9.101");
        // A MAC with a lease of its own gets that address back.
        let leased = table
            .plug(&def, &request(8, "leased", &[]), None, &leases, 1_000)
            .unwrap();
        assert_eq!(pinned(&leased), "10.251.9.104");
    }

    #[test]
    fn an_exhausted_range_names_the_network_and_takes_back_what_only_memory_holds() {
        let def = network("<range start='10.251.9.100' end='10.251.9.101'/>");
        let mut table = PortTable::default();
        table
            .plug(&def, &request(1, "a", &[]), None, &[], 0)
            .unwrap();
        table
            .plug(&def, &request(2, "b", &[]), None, &[], 0)
            .unwrap();
        let error = table
            .plug(&def, &request(3, "c", &[]), None, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "network lab: no free address left in its DHCP range 10.251.9.100-10.251.9.101"
            ),
            "{error}"
        );
        // b left and holds no lease: its address goes to c.
        table.unplug(mac(2)).unwrap();
        let c = table
            .plug(&def, &request(3, "c", &[]), None, &[], 0)
            .unwrap();
        assert_eq!(pinned(&c), "10.251.9.101");
        // …unless b still holds a lease of it.
        table.unplug(mac(3)).unwrap();
        let leases = [lease(mac(2), "10.251.9.101", 0)];
        assert!(
            table
                .plug(&def, &request(4, "d", &[]), None, &leases, 0)
                .is_err()
        );
    }

    #[test]
    fn own_addresses_are_used_as_given_and_clashes_are_refused() {
        let def = network(RANGE);
        let mut table = PortTable::default();
        let own = table
            .plug(
                &def,
                &request(1, "a", &["10.251.9.50", "10.251.9.51"]),
                Some(7),
                &[],
                0,
            )
            .unwrap();
        assert_eq!(own.pinned, None, "nothing pinned in dnsmasq");
        assert_eq!(own.ipv4.as_ref().unwrap().len(), 2);
        assert_eq!(own.group, Some(7));
        let taken = table
            .plug(&def, &request(2, "b", &["10.251.9.51"]), None, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(taken.contains("held by the port of domain 'a'"), "{taken}");
        let bridge = table
            .plug(&def, &request(2, "b", &["10.251.9.1"]), None, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(bridge.contains("is the network's own"), "{bridge}");
        let mac_taken = table
            .plug(&def, &request(1, "other", &[]), None, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(mac_taken.contains("by domain 'a'"), "{mac_taken}");
    }

    #[test]
    fn without_ipv4_dhcp_no_address_is_known() {
        let def = NetworkDef::from_xml(
            "<network><name>lab</name><ip address='10.251.9.1' prefix='24'/></network>",
        )
        .unwrap();
        let mut table = PortTable::default();
        let port = table
            .plug(&def, &request(1, "a", &[]), None, &[], 0)
            .unwrap();
        assert_eq!((port.ipv4, port.pinned), (None, None));
    }

    #[test]
    fn records_are_saved_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let def = network(RANGE);
        let mut table = PortTable::default();
        table
            .plug(&def, &request(1, "a", &[]), Some(0x4000_0005), &[], 0)
            .unwrap();
        table.save(dir.path(), "lab", mac(1)).unwrap();
        std::fs::write(dir.path().join("junk"), "{").unwrap();
        let (loaded, problems) = PortTable::load(dir.path());
        assert_eq!(problems.len(), 1, "{problems:?}");
        let record = loaded.get(mac(1)).unwrap();
        assert_eq!(record.port, "lxv1");
        assert_eq!(pinned(record), "10.251.9.100");
        assert_eq!(record.group, Some(0x4000_0005));
    }
}
