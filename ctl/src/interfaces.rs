//! `lxvirt domiflist`, `domifaddr`, `domifstat`: a domain's interfaces.

use lxvirt_api::proxy::{DomainProxy, ManagerProxy};
use lxvirt_api::{AffectFlags, XmlFlags};
use lxvirt_domain::{DomainDef, Interface, InterfaceSource, LinkState};

use crate::cli::{AddressSourceArg, DomIfCommand, Format, LinkStateArg, RateArg};
use crate::commands::{EXIT_FAILURE, Failure, Result, lookup, print_json, read_input};
use crate::output::{self, InterfaceAddressRow, InterfaceRow};

pub async fn run(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    format: Format,
    command: DomIfCommand,
) -> Result<()> {
    match command {
        DomIfCommand::Domiflist { domain, inactive } => {
            let proxy = lookup(connection, manager, &domain).await?;
            let def = definition(&proxy, inactive).await?;
            let rows = interface_rows(&def);
            match format {
                Format::Text => print!("{}", output::domiflist_text(&rows)),
                Format::Json => print_json(&rows)?,
            }
        }
        DomIfCommand::Domifaddr {
            domain,
            interface,
            source,
        } => {
            let proxy = lookup(connection, manager, &domain).await?;
            let source = match source {
                AddressSourceArg::Lease => 0,
                AddressSourceArg::Agent => 1,
            };
            let rows: Vec<InterfaceAddressRow> = proxy
                .get_interface_addresses(source, 0)
                .await?
                .into_iter()
                .filter(|(name, mac, _)| {
                    interface
                        .as_deref()
                        .is_none_or(|i| i == name || i.eq_ignore_ascii_case(mac))
                })
                .map(|(name, mac, addresses)| InterfaceAddressRow {
                    name,
                    mac,
                    addresses: addresses
                        .into_iter()
                        .map(|(address, prefix)| format!("{address}/{prefix}"))
                        .collect(),
                })
                .collect();
            match format {
                Format::Text => print!("{}", output::domifaddr_text(&rows)),
                Format::Json => print_json(&rows)?,
            }
        }
        DomIfCommand::AttachDevice {
            ref domain,
            ref file,
            ref affect,
        }
        | DomIfCommand::DetachDevice {
            ref domain,
            ref file,
            ref affect,
        }
        | DomIfCommand::UpdateDevice {
            ref domain,
            ref file,
            ref affect,
        } => {
            let proxy = lookup(connection, manager, domain).await?;
            let xml = read_input(file)?;
            let done = match command {
                DomIfCommand::AttachDevice { .. } => {
                    proxy.attach_device(&xml, affect.flags()).await?;
                    "attached"
                }
                DomIfCommand::DetachDevice { .. } => {
                    proxy.detach_device(&xml, affect.flags()).await?;
                    "detached"
                }
                _ => {
                    proxy.update_device(&xml, affect.flags()).await?;
                    "updated"
                }
            };
            println!("Device {done} successfully");
        }
        DomIfCommand::AttachInterface {
            domain,
            kind,
            source,
            mac,
            target,
            affect,
        } => {
            let xml = interface_xml(&kind, source.as_deref(), mac.as_deref(), target.as_deref())?;
            let proxy = lookup(connection, manager, &domain).await?;
            proxy.attach_device(&xml, affect.flags()).await?;
            println!("Interface attached successfully");
        }
        DomIfCommand::DetachInterface {
            domain,
            kind,
            mac,
            affect,
        } => {
            let proxy = lookup(connection, manager, &domain).await?;
            let mac = match mac {
                Some(mac) => mac,
                None => {
                    // The only interface of that type, in what the change affects.
                    let def = definition(&proxy, affect.config && !affect.live).await?;
                    let macs: Vec<String> = def
                        .devices
                        .interfaces
                        .iter()
                        .filter(|i| i.source.type_str() == kind)
                        .filter_map(|i| i.mac.map(|m| m.to_string()))
                        .collect();
                    match &macs[..] {
                        [one] => one.clone(),
                        [] => {
                            return Err(Failure::new(
                                EXIT_FAILURE,
                                format!("domain '{domain}' has no interface of type '{kind}'"),
                            ));
                        }
                        _ => {
                            return Err(Failure::new(
                                EXIT_FAILURE,
                                format!(
                                    "domain '{domain}' has {} interfaces of type '{kind}'; name one with --mac",
                                    macs.len()
                                ),
                            ));
                        }
                    }
                }
            };
            let xml = format!("<interface type='{kind}'><mac address='{mac}'/></interface>");
            proxy.detach_device(&xml, affect.flags()).await?;
            println!("Interface detached successfully");
        }
        DomIfCommand::DomifSetlink {
            domain,
            interface,
            state,
            config,
        } => {
            let (proxy, mut iface) =
                interface_of(connection, manager, &domain, &interface, config).await?;
            iface.link_state = Some(match state {
                LinkStateArg::Up => LinkState::Up,
                LinkStateArg::Down => LinkState::Down,
            });
            let affect = if config {
                AffectFlags::CONFIG
            } else {
                AffectFlags::LIVE
            };
            proxy.update_device(&iface.to_xml(), affect).await?;
            println!("Device updated successfully");
        }
        DomIfCommand::Domiftune {
            domain,
            interface,
            inbound,
            outbound,
            affect,
        } => {
            let proxy = lookup(connection, manager, &domain).await?;
            let running = proxy.state().await? != "shutoff";
            // --current: the running domain if it runs, else the definition.
            let targets: Vec<u32> = match (affect.live, affect.config) {
                (false, false) if running => vec![AffectFlags::LIVE],
                (false, false) => vec![AffectFlags::CONFIG],
                (live, config) => [
                    live.then_some(AffectFlags::LIVE),
                    config.then_some(AffectFlags::CONFIG),
                ]
                .into_iter()
                .flatten()
                .collect(),
            };
            let showing = inbound.is_none() && outbound.is_none();
            if showing && targets.len() > 1 {
                return Err(Failure::new(
                    EXIT_FAILURE,
                    "show the limits of the running domain (--live) or of its definition (--config), not both",
                ));
            }
            if outbound.is_some_and(|RateArg(rate)| rate.is_some_and(|r| r.floor.is_some())) {
                return Err(Failure::new(
                    EXIT_FAILURE,
                    "--outbound takes AVERAGE[,PEAK[,BURST]]: a floor is inbound only",
                ));
            }
            for flag in targets {
                let def = definition(&proxy, flag == AffectFlags::CONFIG).await?;
                let mut iface = find_interface(def, &domain, &interface)?;
                let mut bandwidth = iface.bandwidth.unwrap_or_default();
                if showing {
                    let rows = bandwidth_rows(bandwidth);
                    return print_figures(format, rows, |key, value| format!("{key:<16}: {value}"));
                }
                if let Some(RateArg(rate)) = inbound {
                    bandwidth.inbound = rate;
                }
                if let Some(RateArg(rate)) = outbound {
                    bandwidth.outbound = rate;
                }
                iface.bandwidth = (bandwidth.inbound.is_some() || bandwidth.outbound.is_some())
                    .then_some(bandwidth);
                proxy.update_device(&iface.to_xml(), flag).await?;
            }
            println!("Interface tuned successfully");
        }
        DomIfCommand::DomifGetlink {
            domain,
            interface,
            config,
        } => {
            let (_, iface) = interface_of(connection, manager, &domain, &interface, config).await?;
            let state = match iface.link_state {
                Some(LinkState::Down) => "down",
                _ => "up",
            };
            match format {
                Format::Text => println!("{interface} {state}"),
                Format::Json => {
                    print_json(&serde_json::json!({ "interface": interface, "state": state }))?
                }
            }
        }
        DomIfCommand::Domifstat { domain, interface } => {
            let proxy = lookup(connection, manager, &domain).await?;
            let (rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop) =
                proxy.get_interface_stats(&interface).await?;
            let stats = [
                ("rx_bytes", rx_bytes),
                ("rx_packets", rx_packets),
                ("rx_errs", rx_errs),
                ("rx_drop", rx_drop),
                ("tx_bytes", tx_bytes),
                ("tx_packets", tx_packets),
                ("tx_errs", tx_errs),
                ("tx_drop", tx_drop),
            ];
            print_figures(format, stats.to_vec(), |key, value| {
                format!("{interface} {key} {value}")
            })?;
        }
    }
    Ok(())
}

/// Named figures: a line each as `line` writes it, or one JSON object.
fn print_figures(
    format: Format,
    figures: Vec<(&'static str, u64)>,
    line: impl Fn(&str, u64) -> String,
) -> Result<()> {
    match format {
        Format::Text => {
            for (key, value) in figures {
                println!("{}", line(key, value));
            }
        }
        Format::Json => print_json(
            &figures
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )?,
    }
    Ok(())
}

/// `domiftune`'s figures, as virsh names them (0 for none).
fn bandwidth_rows(bandwidth: lxvirt_domain::Bandwidth) -> Vec<(&'static str, u64)> {
    let (inbound, outbound) = (
        bandwidth.inbound.unwrap_or_default(),
        bandwidth.outbound.unwrap_or_default(),
    );
    vec![
        ("inbound.average", inbound.average.unwrap_or(0)),
        ("inbound.peak", inbound.peak.unwrap_or(0)),
        ("inbound.burst", inbound.burst.unwrap_or(0)),
        ("inbound.floor", inbound.floor.unwrap_or(0)),
        ("outbound.average", outbound.average.unwrap_or(0)),
        ("outbound.peak", outbound.peak.unwrap_or(0)),
        ("outbound.burst", outbound.burst.unwrap_or(0)),
    ]
}

/// The running domain's definition, or the persistent one with
/// `inactive`.
async fn definition(proxy: &DomainProxy<'_>, inactive: bool) -> Result<DomainDef> {
    let flags = if inactive { XmlFlags::INACTIVE } else { 0 };
    DomainDef::from_xml(&proxy.get_xml(flags).await?).map_err(|e| {
        Failure::new(
            EXIT_FAILURE,
            format!("the daemon sent XML this client cannot read: {e}"),
        )
    })
}

/// The domain, and its interface `wanted` names (its host-side name or its
/// MAC) as the running domain has it, or its definition with `inactive`.
async fn interface_of<'c>(
    connection: &'c zbus::Connection,
    manager: &ManagerProxy<'_>,
    domain: &str,
    wanted: &str,
    inactive: bool,
) -> Result<(DomainProxy<'c>, Interface)> {
    let proxy = lookup(connection, manager, domain).await?;
    let def = definition(&proxy, inactive).await?;
    Ok((proxy, find_interface(def, domain, wanted)?))
}

/// The interface of `def` (of `domain`) that `wanted` names: its host-side
/// name or its MAC.
fn find_interface(def: DomainDef, domain: &str, wanted: &str) -> Result<Interface> {
    let found = def.devices.interfaces.iter().find(|i| {
        i.target_dev.as_deref() == Some(wanted)
            || i.mac
                .is_some_and(|m| m.to_string().eq_ignore_ascii_case(wanted))
    });
    found.cloned().ok_or_else(|| {
        Failure::new(
            EXIT_FAILURE,
            format!(
                "domain '{domain}' has no interface '{wanted}'; name it by its host-side name or MAC (lxvirt domiflist {domain})"
            ),
        )
    })
}

fn interface_rows(def: &DomainDef) -> Vec<InterfaceRow> {
    let mut rows: Vec<InterfaceRow> = def
        .devices
        .interfaces
        .iter()
        .map(|i| {
            let source = match &i.source {
                InterfaceSource::Network { network, .. } => network.clone(),
                InterfaceSource::Bridge { bridge } => bridge.clone(),
                InterfaceSource::Ethernet { .. } => String::new(),
                InterfaceSource::Direct { dev, .. } => dev.clone(),
                InterfaceSource::Kept(_) => String::new(),
            };
            InterfaceRow {
                interface: i.target_dev.clone().unwrap_or_default(),
                kind: i.source.type_str().to_owned(),
                source,
                guest: i.guest_dev.clone().unwrap_or_default(),
                mac: i.mac.map(|m| m.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    for hostdev in &def.devices.hostdevs {
        if let lxvirt_domain::Hostdev::Net { interface, .. } = hostdev {
            rows.push(InterfaceRow {
                interface: interface.clone(),
                kind: "hostdev".into(),
                source: interface.clone(),
                guest: interface.clone(),
                mac: String::new(),
            });
        }
    }
    rows
}

/// The `<interface>` `attach-interface` asks for.
fn interface_xml(
    kind: &str,
    source: Option<&str>,
    mac: Option<&str>,
    target: Option<&str>,
) -> Result<String> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('\'', "&apos;")
            .replace('<', "&lt;")
    };
    let source = match (kind, source) {
        ("network", Some(s)) => format!("<source network='{}'/>", escape(s)),
        ("bridge", Some(s)) => format!("<source bridge='{}'/>", escape(s)),
        ("direct", Some(s)) => format!("<source dev='{}'/>", escape(s)),
        ("ethernet", None) => String::new(),
        ("network" | "bridge" | "direct", None) => {
            return Err(Failure::new(
                EXIT_FAILURE,
                format!(
                    "an interface of type '{kind}' needs a SOURCE (the network, bridge or host device)"
                ),
            ));
        }
        ("ethernet", Some(_)) => {
            return Err(Failure::new(
                EXIT_FAILURE,
                "an ethernet interface takes no SOURCE",
            ));
        }
        _ => {
            return Err(Failure::new(
                EXIT_FAILURE,
                format!("unknown interface type '{kind}': network, bridge, ethernet or direct"),
            ));
        }
    };
    let mut xml = format!("<interface type='{kind}'>{source}");
    if let Some(mac) = mac {
        xml.push_str(&format!("<mac address='{}'/>", escape(mac)));
    }
    if let Some(target) = target {
        xml.push_str(&format!("<target dev='{}'/>", escape(target)));
    }
    xml.push_str("</interface>");
    Ok(xml)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::interface_xml;

    #[test]
    fn attach_interface_builds_the_xml_virsh_would() {
        assert_eq!(
            interface_xml("network", Some("default"), Some("52:54:00:00:00:01"), None).unwrap(),
            "<interface type='network'><source network='default'/><mac address='52:54:00:00:00:01'/></interface>"
        );
        assert_eq!(
            interface_xml("ethernet", None, None, Some("web0")).unwrap(),
            "<interface type='ethernet'><target dev='web0'/></interface>"
        );
        assert!(
            interface_xml("bridge", None, None, None)
                .unwrap_err()
                .message
                .contains("needs a SOURCE")
        );
        assert!(
            interface_xml("vhostuser", Some("x"), None, None)
                .unwrap_err()
                .message
                .contains("unknown")
        );
    }
}
