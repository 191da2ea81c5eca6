//! A virtual network's port filter: the table `bridge lxvirt-NAME`, which
//! holds each container port to its MAC address and IPv4 addresses, so
//! that a container cannot take another's (libvirt's `clean-traffic`
//! idea, in a table of lxvirt's own).
//!
//! Ports are told apart from other devices by their device group: lxvirt
//! makes the host end of every port of the network in the group
//! [`port_group`] of its bridge, in the same netlink request that makes
//! the veth. Whatever a port in that group sends is dropped until the
//! port's elements are in the sets, so the port is filtered from its
//! first frame although the elements are added after the container
//! started (by `nft`, off the start's path). The kernel's bridge match
//! (`meta ibrname`) would name the bridge instead, but it is an optional
//! module that many kernels lack.
//!
//! What a port sends into the bridge goes through, in order (the host's
//! own frames, which leave through the bridge device, are not filtered):
//!
//! - a source MAC other than the port's: dropped (every ethertype);
//! - VLAN-tagged frames: dropped (their payload would pass unchecked);
//! - ARP: anything but Ethernet/IPv4 ARP is dropped; a sender MAC other
//!   than the port's is dropped; a probe (sender IP 0.0.0.0) passes; a
//!   sender IP the port holds passes; for a port whose addresses are
//!   known, the rest is dropped; for the others, a sender IP lxvirt knows
//!   the owner of (a port's, the bridge's, a `<host>`'s) is dropped;
//! - IPv4: a DHCP client without an address (0.0.0.0, UDP 68 to 67)
//!   passes; a source the port holds passes; the rest as for ARP;
//! - IPv6 and everything else: passes, its source MAC checked above
//!   (IPv6 source addresses are not checked).
//!
//! The rules are built as libnftables JSON, like the network's `inet`
//! table, and created and removed in the same transactions as that one.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::domain::{MacAddr, NetworkDef};
use crate::net::nft::{ElementChange, Key, Verb};
use crate::net::ports::{PortRecord, static_ipv4};

/// nftables' family of the table.
pub const FAMILY: &str = "bridge";

/// Set: (port . MAC) of every port.
const MACS: &str = "allowed-mac";
/// Set: (port . MAC . IPv4) of the ports whose addresses are known.
const IPV4: &str = "allowed-ipv4";
/// Set: the ports whose IPv4 addresses are known.
const CHECKED: &str = "checked-ipv4";
/// Set: the addresses those ports hold.
const HELD: &str = "held-ipv4";
/// Set: the network's own IPv4 addresses, the bridge's and its `<host>`s'
/// (fixed while it runs).
const RESERVED: &str = "reserved-ipv4";

/// The device group of the ports of the network on the bridge with
/// ifindex `bridge_index`: one per bridge, so the tables of two networks
/// never take each other's ports. Bit 30 keeps it clear of the small
/// groups administrators name in `/etc/iproute2/group`, and below 2^31,
/// which `ip link … group` accepts.
pub fn port_group(bridge_index: u32) -> u32 {
    // Ifindexes stay far below 2^30, so no two bridges share a group.
    PORT_GROUP_BASE | (bridge_index & 0x3fff_ffff)
}

const PORT_GROUP_BASE: u32 = 0x4000_0000;

/// The commands that fill the (just created, empty) table `table` of
/// network `def`: its sets, with the elements of `ports`, and its chains.
pub fn table(def: &NetworkDef, table: &str, group: u32, ports: &[PortRecord]) -> Vec<Value> {
    let fixed: Vec<String> = static_ipv4(def).iter().map(Ipv4Addr::to_string).collect();
    let mut commands = vec![
        set(table, MACS, json!(["ifname", "ether_addr"]), Vec::new()),
        set(
            table,
            IPV4,
            json!(["ifname", "ether_addr", "ipv4_addr"]),
            Vec::new(),
        ),
        set(table, CHECKED, json!("ifname"), Vec::new()),
        set(table, HELD, json!("ipv4_addr"), Vec::new()),
        set(
            table,
            RESERVED,
            json!("ipv4_addr"),
            fixed.into_iter().map(Value::from).collect(),
        ),
    ];
    commands.push(json!({ "add": { "chain": {
        "family": FAMILY, "table": table, "name": "prerouting",
        "type": "filter", "hook": "prerouting", "prio": -200, "policy": "accept",
    } } }));
    for name in ["port", "arp-from-port", "ipv4-from-port"] {
        commands.push(json!({ "add": { "chain": {
            "family": FAMILY, "table": table, "name": name,
        } } }));
    }
    let mut add = |chain: &str, expr: Vec<Value>| {
        commands.push(json!({ "add": { "rule": {
            "family": FAMILY, "table": table, "chain": chain, "expr": expr,
        } } }));
    };
    add(
        "prerouting",
        vec![
            json!({ "match": { "op": "==",
                "left": { "meta": { "key": "iifgroup" } }, "right": group } }),
            json!({ "jump": { "target": "port" } }),
        ],
    );
    // Every frame: the port's own MAC.
    add(
        "port",
        dropped(lookup(
            "!=",
            vec![meta("iifname"), field("ether", "saddr")],
            MACS,
        )),
    );
    add(
        "port",
        dropped(matches(
            field("ether", "type"),
            json!({ "set": ["8021q", "8021ad"] }),
        )),
    );
    add(
        "port",
        vec![
            matches(field("ether", "type"), json!("arp")),
            json!({ "jump": { "target": "arp-from-port" } }),
        ],
    );
    add(
        "port",
        vec![
            matches(field("ether", "type"), json!("ip")),
            json!({ "jump": { "target": "ipv4-from-port" } }),
        ],
    );
    // ARP: only Ethernet/IPv4, whose sender fields are where the rules
    // below read them.
    for (name, value) in [
        ("htype", json!(1)),
        ("ptype", json!("ip")),
        ("hlen", json!(6)),
        ("plen", json!(4)),
    ] {
        add(
            "arp-from-port",
            dropped(json!({ "match": { "op": "!=",
                "left": field("arp", name), "right": value } })),
        );
    }
    add(
        "arp-from-port",
        dropped(lookup(
            "!=",
            vec![meta("iifname"), field("arp", "saddr ether")],
            MACS,
        )),
    );
    add(
        "arp-from-port",
        vec![
            matches(field("arp", "saddr ip"), json!("0.0.0.0")),
            json!({ "accept": null }),
        ],
    );
    source_checks(
        &mut add,
        "arp-from-port",
        field("arp", "saddr ether"),
        field("arp", "saddr ip"),
    );
    // IPv4: a DHCP client that has no address yet may ask for one.
    add(
        "ipv4-from-port",
        vec![
            matches(field("ip", "saddr"), json!("0.0.0.0")),
            matches(field("udp", "sport"), json!(68)),
            matches(field("udp", "dport"), json!(67)),
            json!({ "accept": null }),
        ],
    );
    source_checks(
        &mut add,
        "ipv4-from-port",
        field("ether", "saddr"),
        field("ip", "saddr"),
    );
    for port in ports {
        commands.extend(
            elements(port)
                .into_iter()
                .map(|(set, elem)| element("add", table, set, elem)),
        );
    }
    commands
}

/// The last rules of the ARP and IPv4 chains: a source the port holds
/// passes; a port whose addresses are known sends from no other; the
/// others do not send from an address lxvirt knows the owner of.
fn source_checks(add: &mut impl FnMut(&str, Vec<Value>), chain: &str, mac: Value, ip: Value) {
    add(
        chain,
        vec![
            lookup("==", vec![meta("iifname"), mac, ip.clone()], IPV4),
            json!({ "accept": null }),
        ],
    );
    add(chain, dropped(lookup("==", vec![meta("iifname")], CHECKED)));
    add(chain, dropped(lookup("==", vec![ip.clone()], HELD)));
    add(chain, dropped(lookup("==", vec![ip], RESERVED)));
}

/// The changes that add the elements of a port that joins.
pub fn plug(port: &PortRecord) -> Vec<ElementChange> {
    keys(port)
        .into_iter()
        .map(|(set, key)| ElementChange {
            verb: Verb::Add,
            set,
            key,
        })
        .collect()
}

/// The changes that remove the elements of a port that left: each added,
/// then deleted, so that the batch also holds when one of them is missing
/// already (nftables refuses to delete a missing element).
pub fn unplug(port: &PortRecord) -> Vec<ElementChange> {
    plug(port)
        .into_iter()
        .flat_map(|added| {
            let deleted = ElementChange {
                verb: Verb::Delete,
                ..added.clone()
            };
            [added, deleted]
        })
        .collect()
}

/// A part of a set element: sets of several parts concatenate them.
#[derive(Debug, Clone, Copy)]
enum Part<'a> {
    Port(&'a str),
    Mac(MacAddr),
    Ipv4(Ipv4Addr),
}

/// The elements of one port, with their sets: one list, rendered for
/// `nft` ([`elements`]) and for netlink ([`keys`]). A record with a bad
/// MAC (not lxvirtd's) has none: its port passes nothing.
fn entries(port: &PortRecord) -> Vec<(&'static str, Vec<Part<'_>>)> {
    let Some(mac) = port.mac() else {
        return Vec::new();
    };
    let name = Part::Port(&port.port);
    let mut entries = vec![(MACS, vec![name, Part::Mac(mac)])];
    if let Some(addresses) = &port.ipv4 {
        entries.push((CHECKED, vec![name]));
        for &address in addresses {
            entries.push((IPV4, vec![name, Part::Mac(mac), Part::Ipv4(address)]));
            entries.push((HELD, vec![Part::Ipv4(address)]));
        }
    }
    entries
}

/// The elements of one port, with their sets, as `nft` reads them.
fn elements(port: &PortRecord) -> Vec<(&'static str, Value)> {
    entries(port)
        .into_iter()
        .map(|(set, parts)| {
            let mut values: Vec<Value> = parts
                .iter()
                .map(|part| match part {
                    Part::Port(name) => json!(name),
                    Part::Mac(mac) => json!(mac.to_string()),
                    Part::Ipv4(address) => json!(address.to_string()),
                })
                .collect();
            let value = if values.len() == 1 {
                values.remove(0)
            } else {
                json!({ "concat": values })
            };
            (set, value)
        })
        .collect()
}

/// The same elements as set keys, as the kernel compares them.
fn keys(port: &PortRecord) -> Vec<(&'static str, Vec<u8>)> {
    entries(port)
        .into_iter()
        .map(|(set, parts)| {
            let key = parts.iter().fold(Key::new(), |key, part| match *part {
                Part::Port(name) => key.ifname(name),
                Part::Mac(MacAddr(mac)) => key.ether(mac),
                Part::Ipv4(address) => key.ipv4(address),
            });
            (set, key.bytes())
        })
        .collect()
}

fn element(verb: &str, table: &str, set: &str, elem: Value) -> Value {
    json!({ verb: { "element": {
        "family": FAMILY, "table": table, "name": set, "elem": [elem],
    } } })
}

fn set(table: &str, name: &str, kind: Value, elements: Vec<Value>) -> Value {
    let mut set = json!({
        "family": FAMILY, "table": table, "name": name, "type": kind,
    });
    if !elements.is_empty() {
        set["elem"] = Value::Array(elements);
    }
    json!({ "add": { "set": set } })
}

fn meta(key: &str) -> Value {
    json!({ "meta": { "key": key } })
}

fn field(protocol: &str, name: &str) -> Value {
    json!({ "payload": { "protocol": protocol, "field": name } })
}

fn matches(left: Value, right: Value) -> Value {
    json!({ "match": { "op": "==", "left": left, "right": right } })
}

/// `left` (a concatenation when it has several parts) in, or not in, `set`.
fn lookup(op: &str, mut left: Vec<Value>, set: &str) -> Value {
    let left = if left.len() == 1 {
        left.remove(0)
    } else {
        json!({ "concat": left })
    };
    json!({ "match": { "op": op, "left": left, "right": format!("@{set}") } })
}

/// A rule that counts and drops what `condition` matches: the counters
/// show an administrator (and the tests) what the filter stopped.
fn dropped(condition: Value) -> Vec<Value> {
    vec![
        condition,
        json!({ "counter": null }),
        json!({ "drop": null }),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::net::nft;

    fn network() -> NetworkDef {
        NetworkDef::from_xml(
            "<network><name>lab</name><ip address='10.251.9.1' prefix='24'><dhcp>\
             <range start='10.251.9.100' end='10.251.9.199'/>\
             <host mac='52:54:00:00:00:09' ip='10.251.9.9'/></dhcp></ip></network>",
        )
        .unwrap()
    }

    fn port(ipv4: Option<&[&str]>) -> PortRecord {
        PortRecord {
            mac: "52:54:00:00:00:01".into(),
            port: "lxv0001".into(),
            domain: "web".into(),
            ipv4: ipv4.map(|list| list.iter().map(|a| a.parse().unwrap()).collect()),
            pinned: None,
            group: Some(port_group(12)),
        }
    }

    fn rules(commands: &[Value], chain: &str) -> Vec<String> {
        commands
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].to_string())
            .collect()
    }

    #[test]
    fn the_group_is_per_bridge_and_clear_of_small_groups() {
        assert_eq!(port_group(12), 0x4000_000c);
        assert_ne!(port_group(12), port_group(13));
        assert!(port_group(u32::MAX) < 0x8000_0000);
    }

    #[test]
    fn ports_of_the_group_go_through_mac_then_arp_and_ipv4_checks() {
        let commands = table(&network(), "lxvirt-lab", port_group(12), &[]);
        let prerouting = rules(&commands, "prerouting");
        assert_eq!(prerouting.len(), 1);
        let expr: Value = serde_json::from_str(&prerouting[0]).unwrap();
        assert_eq!(expr[0]["match"]["left"]["meta"]["key"], "iifgroup");
        assert_eq!(expr[0]["match"]["right"], 0x4000_000c);
        assert_eq!(expr[1]["jump"]["target"], "port");
        let port = rules(&commands, "port");
        assert!(
            port[0].contains(r#""op":"!=""#)
                && port[0].contains(r#""right":"@allowed-mac""#)
                && port[0].contains("drop"),
            "the MAC comes first: {port:?}"
        );
        assert!(port[1].contains("8021q"), "{port:?}");
        let arp = rules(&commands, "arp-from-port");
        assert!(
            arp.iter()
                .any(|r| r.contains("saddr ether") && r.contains("@allowed-mac"))
        );
        let ipv4 = rules(&commands, "ipv4-from-port");
        assert!(ipv4[0].contains("0.0.0.0") && ipv4[0].contains("accept"));
        let last = &ipv4[ipv4.len() - 4..];
        assert!(last[0].contains("@allowed-ipv4") && last[0].contains("accept"));
        assert!(last[1].contains("@checked-ipv4") && last[1].contains("drop"));
        assert!(last[2].contains("@held-ipv4") && last[2].contains("drop"));
        assert!(last[3].contains("@reserved-ipv4") && last[3].contains("drop"));
        // The bridge's and the <host>'s addresses are reserved from the start.
        let reserved = commands
            .iter()
            .find(|c| c["add"]["set"]["name"] == "reserved-ipv4")
            .unwrap();
        assert_eq!(
            reserved["add"]["set"]["elem"],
            json!(["10.251.9.1", "10.251.9.9"])
        );
        // No rule of the chains speaks of IPv6: only its MAC is checked.
        assert!(!serde_json::to_string(&commands).unwrap().contains("ip6"));
    }

    #[test]
    fn a_port_with_known_addresses_gets_all_its_elements() {
        let record = port(Some(&["10.251.9.100", "10.251.9.9"]));
        let changes = plug(&record);
        assert_eq!(changes.len(), 6, "{changes:#?}");
        assert!(changes.iter().all(|c| c.verb == Verb::Add));
        let sets: Vec<&str> = changes.iter().map(|c| c.set).collect();
        assert_eq!(
            sets,
            [MACS, CHECKED, IPV4, HELD, IPV4, HELD],
            "the same sets, in the same order, as the table's own elements"
        );
        let mac = [0x52, 0x54, 0, 0, 0, 1];
        let name = Key::new().ifname("lxv0001").bytes();
        assert_eq!(
            changes[0].key,
            Key::new().ifname("lxv0001").ether(mac).bytes()
        );
        assert_eq!(changes[1].key, name);
        let address = Ipv4Addr::new(10, 251, 9, 100);
        assert_eq!(
            changes[2].key,
            Key::new()
                .ifname("lxv0001")
                .ether(mac)
                .ipv4(address)
                .bytes()
        );
        assert_eq!(changes[3].key, address.octets());
        // The elements the table carries for a port plugged already.
        let json_sets: Vec<&str> = elements(&record).iter().map(|(set, _)| *set).collect();
        assert_eq!(sets, json_sets);
        // Unplugged: each one added, then deleted.
        let removal = unplug(&record);
        assert_eq!(removal.len(), 12, "{removal:#?}");
        for pair in removal.chunks(2) {
            assert_eq!((pair[0].verb, pair[1].verb), (Verb::Add, Verb::Delete));
            assert_eq!((pair[0].set, &pair[0].key), (pair[1].set, &pair[1].key));
        }
        assert_eq!(removal[1].set, MACS);
    }

    #[test]
    fn a_port_whose_addresses_are_unknown_is_held_to_its_mac_only() {
        let changes = plug(&port(None));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].set, MACS);
    }

    #[test]
    fn a_record_with_a_bad_mac_gets_no_element() {
        let mut record = port(Some(&["10.251.9.100"]));
        record.mac = "not a mac".into();
        assert!(plug(&record).is_empty());
    }

    #[test]
    fn the_table_carries_the_elements_of_ports_already_plugged() {
        let commands = table(
            &network(),
            "lxvirt-lab",
            port_group(3),
            &[port(Some(&["10.251.9.100"]))],
        );
        let elements = commands
            .iter()
            .filter(|c| c["add"]["element"].is_object())
            .count();
        assert_eq!(elements, 4);
    }

    /// The elements of every set of the table, as `nft` lists them.
    fn listed(table: &str) -> Vec<(String, Value)> {
        let output = std::process::Command::new("nft")
            .args(["-j", "list", "table", FAMILY, table])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let listing: Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut elements = Vec::new();
        for item in listing["nftables"].as_array().unwrap() {
            let set = &item["set"];
            for elem in set["elem"].as_array().into_iter().flatten() {
                let name = set["name"].as_str().unwrap().to_owned();
                if name != RESERVED {
                    elements.push((name, elem.clone()));
                }
            }
        }
        elements.sort_by_key(|(set, elem)| (set.clone(), elem.to_string()));
        elements
    }

    fn expected(records: &[&PortRecord]) -> Vec<(String, Value)> {
        let mut elements: Vec<(String, Value)> = records
            .iter()
            .flat_map(|r| elements(r))
            .map(|(set, elem)| (set.to_owned(), elem))
            .collect();
        elements.sort_by_key(|(set, elem)| (set.clone(), elem.to_string()));
        elements.dedup();
        elements
    }

    /// The keys sent over netlink are the elements `nft` writes and
    /// reads: added, listed, and taken back from a table filled by `nft`.
    #[test]
    fn netlink_changes_meet_the_elements_nft_makes() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let name = "lxvirt-lab";
            let first = port(Some(&["10.251.9.100", "10.251.9.101"]));
            let mut second = port(None);
            second.port = "lxv0002".into();
            second.mac = "52:54:00:00:00:02".into();
            let mut commands =
                vec![json!({ "add": { "table": { "family": FAMILY, "name": name } } })];
            commands.extend(table(
                &network(),
                name,
                port_group(3),
                std::slice::from_ref(&first),
            ));
            crate::net::firewall::apply(name, &crate::net::firewall::transaction(commands))
                .unwrap();
            assert_eq!(listed(name), expected(&[&first]));

            nft::apply(nft::Family::Bridge, name, &plug(&second)).unwrap();
            assert_eq!(listed(name), expected(&[&first, &second]));
            // Added again: no error, nothing doubled.
            nft::apply(nft::Family::Bridge, name, &plug(&second)).unwrap();
            assert_eq!(listed(name), expected(&[&first, &second]));

            nft::apply(nft::Family::Bridge, name, &unplug(&first)).unwrap();
            assert_eq!(listed(name), expected(&[&second]));
            // Gone already: the unplug holds all the same.
            nft::apply(nft::Family::Bridge, name, &unplug(&first)).unwrap();
            assert_eq!(listed(name), expected(&[&second]));

            // A lone delete of a missing element is refused, and nothing
            // of its batch is applied.
            let mut changes = plug(&first);
            changes.push(ElementChange {
                verb: Verb::Delete,
                set: HELD,
                key: Key::new().ipv4(Ipv4Addr::new(10, 9, 9, 9)).bytes(),
            });
            let error = nft::apply(nft::Family::Bridge, name, &changes).unwrap_err();
            assert_eq!(error.source.errno, crate::sys::Errno::ENOENT, "{error}");
            assert!(error.to_string().contains("bridge lxvirt-lab"), "{error}");
            assert_eq!(listed(name), expected(&[&second]));

            let error = nft::apply(nft::Family::Bridge, "lxvirt-none", &plug(&first)).unwrap_err();
            assert_eq!(error.source.errno, crate::sys::Errno::ENOENT, "{error}");
        })
        .join()
        .unwrap();
    }
}
