//! lxvirt's own nftables tables: two per active virtual network.
//!
//! A network's routing rules live in a table of its own, `inet
//! lxvirt-NAME`, and its port filter in `bridge lxvirt-NAME`
//! ([`super::port_filter`]), so a start replaces both in one transaction
//! and a destroy removes them with the tables; lxvirt never reads or
//! changes any other table. The rules are
//! built as libnftables JSON (a pure function, unit-tested) and applied by
//! `nft -j -f -`: a network starts rarely, so a process is cheap here, and
//! the JSON schema is nftables' stable interface.
//!
//! Tables of one hook all see a packet, and a drop in any of them is
//! final: a network's forward chain accepts what its mode allows to and
//! from its bridge and rejects the rest, which is what keeps two networks
//! apart even though each only speaks of its own bridge.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::domain::NetworkDef;
use crate::domain::addr::Subnet;
use crate::domain::network::ForwardMode;
use crate::net::port_filter;
use crate::net::ports::PortRecord;

/// Why the rules could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the rules of table {table}: {message}")]
    Refused { table: String, message: String },
}

/// The table of network `name`.
pub fn table_name(network: &str) -> String {
    format!("lxvirt-{network}")
}

/// The transaction that (re)creates the network's tables with their
/// rules, the port filter holding `ports` already (made in `port_group`),
/// or removes them when the network needs none (`open` mode).
pub fn ruleset(def: &NetworkDef, bridge: &str, port_group: u32, ports: &[PortRecord]) -> Value {
    let table = table_name(def.name());
    let Some(rules) = rules(def, bridge) else {
        return removal(def.name());
    };
    let mut commands = replace_table("inet", &table);
    commands.push(chain(&table, "forward", "filter", "forward", 0));
    for expr in rules.forward {
        commands.push(rule(&table, "forward", expr));
    }
    if !rules.postrouting.is_empty() {
        commands.push(chain(&table, "postrouting", "nat", "postrouting", 100));
        for expr in rules.postrouting {
            commands.push(rule(&table, "postrouting", expr));
        }
    }
    commands.extend(replace_table(port_filter::FAMILY, &table));
    commands.extend(port_filter::table(def, &table, port_group, ports));
    json!({ "nftables": commands })
}

/// The transaction that removes the network's tables, if they are there.
pub fn removal(network: &str) -> Value {
    let table = table_name(network);
    let mut commands = Vec::new();
    for family in ["inet", port_filter::FAMILY] {
        // `add` then `delete` leaves no table, whether it was there or not.
        commands.extend(replace_table(family, &table).into_iter().take(2));
    }
    json!({ "nftables": commands })
}

/// A transaction of `commands`.
pub fn transaction(commands: Vec<Value>) -> Value {
    json!({ "nftables": commands })
}

/// The commands of a transaction.
pub fn commands(transaction: Value) -> Vec<Value> {
    match transaction {
        Value::Object(mut object) => match object.remove("nftables") {
            Some(Value::Array(commands)) => commands,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Applies a transaction: all of it, or nothing.
pub fn apply(table: &str, transaction: &Value) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    // A write error (nft died before it read everything) shows as its
    // exit status below, with what it said.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(transaction.to_string().as_bytes());
    }
    let output = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(FirewallError::Refused {
        table: table.to_owned(),
        message: if said.is_empty() {
            format!("nft ended with {} and said nothing", output.status)
        } else {
            said
        },
    })
}

/// `add table`, `delete table`, `add table`: the table exists and is
/// empty, whatever was there before, in the same transaction as the rules.
fn replace_table(family: &str, table: &str) -> Vec<Value> {
    let spec = json!({ "table": { "family": family, "name": table } });
    vec![
        json!({ "add": spec }),
        json!({ "delete": spec }),
        json!({ "add": spec }),
    ]
}

fn chain(table: &str, name: &str, kind: &str, hook: &str, priority: i32) -> Value {
    json!({ "add": { "chain": {
        "family": "inet", "table": table, "name": name,
        "type": kind, "hook": hook, "prio": priority, "policy": "accept",
    } } })
}

fn rule(table: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({ "add": { "rule": {
        "family": "inet", "table": table, "chain": chain, "expr": expr,
    } } })
}

/// The rules of one network, per chain.
struct Rules {
    forward: Vec<Vec<Value>>,
    postrouting: Vec<Vec<Value>>,
}

/// `None` for an `open` network: it asks for no rules at all.
fn rules(def: &NetworkDef, bridge: &str) -> Option<Rules> {
    let mode = def.forward_mode();
    if mode == Some(ForwardMode::Open) {
        return None;
    }
    let dev = def.forward.as_ref().and_then(|f| f.dev.as_deref());
    let mut forward = Vec::new();
    let mut postrouting = Vec::new();
    // Routed between two ports of the bridge through the host.
    forward.push(vec![
        meta("iifname", bridge),
        meta("oifname", bridge),
        verdict("accept"),
    ]);
    if mode.is_some() {
        for ip in &def.ips {
            let subnet = Subnet {
                address: ip.subnet().network(),
                prefix: ip.prefix,
            };
            let nat = mode == Some(ForwardMode::Nat) && subnet.address.is_ipv4();
            // Out: from the subnet, through the forward device if named.
            let mut out = vec![meta("iifname", bridge)];
            out.extend(dev.map(|d| meta("oifname", d)));
            out.push(address("saddr", "==", &subnet));
            out.push(verdict("accept"));
            forward.push(out);
            // In: replies only behind NAT, anything when routed.
            let mut back = vec![meta("oifname", bridge)];
            back.extend(dev.map(|d| meta("iifname", d)));
            back.push(address("daddr", "==", &subnet));
            if nat {
                back.push(json!({ "match": { "op": "in",
                    "left": { "ct": { "key": "state" } },
                    "right": ["established", "related"] } }));
            }
            back.push(verdict("accept"));
            forward.push(back);
            if nat {
                postrouting.extend(masquerade(def, &subnet, dev));
            }
        }
    }
    // The rest, to or from the bridge, is refused (an isolated network
    // forwards nothing at all).
    forward.push(vec![meta("iifname", bridge), verdict("reject")]);
    forward.push(vec![meta("oifname", bridge), verdict("reject")]);
    Some(Rules {
        forward,
        postrouting,
    })
}

/// Source NAT of an IPv4 subnet leaving for elsewhere: not multicast and
/// broadcast, which never leave, and not the subnet itself.
fn masquerade(def: &NetworkDef, subnet: &Subnet, dev: Option<&str>) -> Vec<Vec<Value>> {
    let from = address("saddr", "==", subnet);
    let mut rules = vec![
        vec![
            from.clone(),
            json!({ "match": { "op": "==",
                "left": { "payload": { "protocol": "ip", "field": "daddr" } },
                "right": { "prefix": { "addr": "224.0.0.0", "len": 24 } } } }),
            verdict("return"),
        ],
        vec![
            from.clone(),
            json!({ "match": { "op": "==",
                "left": { "payload": { "protocol": "ip", "field": "daddr" } },
                "right": "255.255.255.255" } }),
            verdict("return"),
        ],
    ];
    let nat = def.forward.as_ref().map(|f| f.nat).unwrap_or_default();
    let translation = |ports: bool| -> Value {
        let mut args = serde_json::Map::new();
        if let Some(range) = nat.addresses {
            args.insert(
                "addr".into(),
                if range.start == range.end {
                    json!(range.start.to_string())
                } else {
                    json!({ "range": [range.start.to_string(), range.end.to_string()] })
                },
            );
        }
        if let (true, Some(range)) = (ports, nat.ports) {
            args.insert("port".into(), json!({ "range": [range.start, range.end] }));
        }
        match nat.addresses {
            Some(_) => {
                args.insert("family".into(), json!("ip"));
                json!({ "snat": args })
            }
            None if args.is_empty() => json!({ "masquerade": null }),
            None => json!({ "masquerade": args }),
        }
    };
    let base = || {
        let mut rule = Vec::new();
        rule.extend(dev.map(|d| meta("oifname", d)));
        rule.push(from.clone());
        rule.push(address("daddr", "!=", subnet));
        rule
    };
    if nat.ports.is_some() {
        // Ports only mean something to TCP and UDP.
        let mut ported = base();
        ported.push(json!({ "match": { "op": "==",
            "left": { "meta": { "key": "l4proto" } },
            "right": { "set": ["tcp", "udp"] } } }));
        ported.push(translation(true));
        rules.push(ported);
    }
    let mut plain = base();
    plain.push(translation(false));
    rules.push(plain);
    rules
}

fn meta(key: &str, name: &str) -> Value {
    json!({ "match": { "op": "==", "left": { "meta": { "key": key } }, "right": name } })
}

fn address(field: &str, op: &str, subnet: &Subnet) -> Value {
    let protocol = match subnet.address {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    };
    json!({ "match": { "op": op,
        "left": { "payload": { "protocol": protocol, "field": field } },
        "right": { "prefix": { "addr": subnet.address.to_string(), "len": subnet.prefix } } } })
}

fn verdict(kind: &str) -> Value {
    json!({ kind: null })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn network(xml: &str) -> NetworkDef {
        NetworkDef::from_xml(xml).unwrap()
    }

    /// The rules of one chain, as their expression lists.
    fn chain_rules(transaction: &Value, chain: &str) -> Vec<Value> {
        transaction["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }

    #[test]
    fn a_nat_network_masquerades_its_subnet_and_lets_replies_back() {
        let def = network(
            "<network><name>default</name><forward mode='nat' dev='lxvtout0'/>\
             <ip address='10.251.9.1' prefix='24'/></network>",
        );
        let t = ruleset(&def, "lxvirtbr0", port_filter::port_group(7), &[]);
        let commands = t["nftables"].as_array().unwrap();
        assert_eq!(commands[0]["add"]["table"]["name"], "lxvirt-default");
        assert_eq!(commands[1]["delete"]["table"]["name"], "lxvirt-default");
        let forward = chain_rules(&t, "forward");
        let text = serde_json::to_string(&forward).unwrap();
        assert!(text.contains(r#""right":"lxvtout0""#), "{text}");
        assert!(text.contains(r#""addr":"10.251.9.0","len":24"#), "{text}");
        assert!(text.contains("established"), "{text}");
        let last = forward.last().unwrap().to_string();
        assert!(
            last.contains("reject") && last.contains("oifname"),
            "{last}"
        );
        let post = chain_rules(&t, "postrouting");
        assert_eq!(post.len(), 3, "multicast, broadcast, masquerade: {post:?}");
        let masq = post[2].to_string();
        assert!(
            masq.contains("masquerade") && masq.contains(r#""op":"!=""#),
            "{masq}"
        );
    }

    #[test]
    fn nat_addresses_and_ports_become_snat_for_tcp_and_udp() {
        let def = network(
            "<network><name>n</name><forward mode='nat'><nat><address start='10.251.8.5' end='10.251.8.6'/>\
             <port start='2000' end='3000'/></nat></forward><ip address='10.251.9.1' prefix='24'/></network>",
        );
        let post = chain_rules(
            &ruleset(&def, "br", port_filter::port_group(7), &[]),
            "postrouting",
        );
        assert_eq!(post.len(), 4, "{post:?}");
        let ported = post[2].to_string();
        assert!(
            ported.contains("l4proto") && ported.contains("[2000,3000]"),
            "{ported}"
        );
        assert!(
            ported.contains(r#""snat""#) && ported.contains("10.251.8.6"),
            "{ported}"
        );
        assert!(!post[3].to_string().contains("2000"));
    }

    #[test]
    fn an_isolated_network_forwards_nothing_and_an_open_one_has_no_table() {
        let isolated =
            network("<network><name>iso</name><ip address='10.251.9.1' prefix='24'/></network>");
        let t = ruleset(&isolated, "br", port_filter::port_group(7), &[]);
        let forward = chain_rules(&t, "forward");
        assert_eq!(forward.len(), 3, "{forward:?}");
        assert!(chain_rules(&t, "postrouting").is_empty());
        assert!(!t.to_string().contains("postrouting"));
        let open = network(
            "<network><name>o</name><forward mode='open'/><ip address='10.251.9.1' prefix='24'/></network>",
        );
        let t = ruleset(&open, "br", port_filter::port_group(7), &[]);
        let commands = t["nftables"].as_array().unwrap();
        assert_eq!(commands.len(), 4, "add + delete of both tables: {t}");
        assert_eq!(commands[3]["delete"]["table"]["family"], "bridge");
        assert_eq!(removal("o"), t);
    }

    #[test]
    fn one_transaction_replaces_the_routing_table_and_the_port_filter() {
        let def =
            network("<network><name>lab</name><ip address='10.251.9.1' prefix='24'/></network>");
        let t = ruleset(&def, "br", port_filter::port_group(7), &[]);
        let tables: Vec<(String, String)> = t["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                let (verb, body) = c.as_object()?.iter().next()?;
                let table = body.get("table")?;
                Some((verb.clone(), table["family"].as_str()?.to_owned()))
            })
            .collect();
        let expected = ["add", "delete", "add"].map(|v| (v.to_owned(), "inet".to_owned()));
        assert_eq!(tables[..3], expected);
        let bridge: Vec<_> = tables.iter().filter(|(_, f)| f == "bridge").collect();
        assert_eq!(bridge.len(), 3, "{tables:?}");
        assert!(t.to_string().contains(r#""hook":"prerouting""#));
    }

    #[test]
    fn ipv6_subnets_are_routed_not_masqueraded() {
        let def = network(
            "<network><name>six</name><forward mode='nat'/><ip family='ipv6' address='fd00:251::1' prefix='64'/></network>",
        );
        let t = ruleset(&def, "br", port_filter::port_group(7), &[]);
        assert!(chain_rules(&t, "postrouting").is_empty());
        let forward = serde_json::to_string(&chain_rules(&t, "forward")).unwrap();
        assert!(forward.contains(r#""protocol":"ip6""#), "{forward}");
        assert!(!forward.contains("established"), "{forward}");
    }
}
