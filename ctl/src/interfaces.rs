//! `lxvirt domiflist`, `domifaddr`, `domifstat`: a domain's interfaces.

use lxvirt_api::XmlFlags;
use lxvirt_api::proxy::ManagerProxy;
use lxvirt_domain::{DomainDef, InterfaceSource};

use crate::cli::{AddressSourceArg, DomIfCommand, Format};
use crate::commands::{EXIT_FAILURE, Failure, Result, lookup, print_json};
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
            let flags = if inactive { XmlFlags::INACTIVE } else { 0 };
            let def = DomainDef::from_xml(&proxy.get_xml(flags).await?).map_err(|e| {
                Failure::new(
                    EXIT_FAILURE,
                    format!("the daemon sent XML this client cannot read: {e}"),
                )
            })?;
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
            match format {
                Format::Text => {
                    for (key, value) in stats {
                        println!("{interface} {key} {value}");
                    }
                }
                Format::Json => print_json(
                    &stats
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )?,
            }
        }
    }
    Ok(())
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
