//! `lxvirt net-*`: virtual networks over D-Bus.

use std::collections::HashMap;

use lxvirt_api::NETWORK_INTERFACE;
use lxvirt_api::proxy::{ManagerProxy, NetworkProxy};

use crate::cli::{Format, NetCommand};
use crate::commands::{Props, Result, by_name_or_uuid, managed, print_json, read_input};
use crate::output::{self, NetworkRow};

/// Runs a network command.
pub async fn run(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    format: Format,
    command: NetCommand,
) -> Result<()> {
    match command {
        NetCommand::Define { file } => {
            let xml = read_input(&file)?;
            let path = manager.network_define_xml(&xml).await?;
            let name = network(connection, path).await?.name().await?;
            println!("Network '{name}' defined from {}", file.display());
        }
        NetCommand::Create { file } => {
            let xml = read_input(&file)?;
            let path = manager.network_create_xml(&xml).await?;
            let name = network(connection, path).await?.name().await?;
            println!("Network '{name}' created from {}", file.display());
        }
        NetCommand::Start { network } => {
            let proxy = lookup(connection, manager, &network).await?;
            proxy.start().await?;
            println!("Network '{}' started", proxy.name().await?);
        }
        NetCommand::Destroy { network, force } => {
            let proxy = lookup(connection, manager, &network).await?;
            let name = proxy.name().await?;
            proxy.destroy(u32::from(force)).await?;
            println!("Network '{name}' destroyed");
        }
        NetCommand::DhcpLeases { network, mac } => {
            let proxy = lookup(connection, manager, &network).await?;
            let leases = proxy
                .get_dhcp_leases(mac.as_deref().unwrap_or_default(), 0)
                .await?;
            let rows: Vec<output::LeaseRow> = leases
                .into_iter()
                .map(
                    |(mac, ip, prefix, hostname, client_id, expiry)| output::LeaseRow {
                        mac,
                        address: format!("{ip}/{prefix}"),
                        hostname,
                        client_id,
                        expiry,
                    },
                )
                .collect();
            match format {
                Format::Text => print!("{}", output::leases_text(&rows)),
                Format::Json => print_json(&rows)?,
            }
        }
        NetCommand::Undefine { network } => {
            let proxy = lookup(connection, manager, &network).await?;
            // Read the name first: the object is gone after the call.
            let name = proxy.name().await?;
            proxy.undefine().await?;
            println!("Network '{name}' has been undefined");
        }
        NetCommand::List { all } => {
            let mut rows = managed(connection, NETWORK_INTERFACE, row_from_properties).await?;
            rows.retain(|r| all || r.is_active());
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            match format {
                Format::Text => print!("{}", output::net_list_text(&rows)),
                Format::Json => print_json(&rows)?,
            }
        }
        NetCommand::Info { network } => {
            let proxy = lookup(connection, manager, &network).await?;
            let row = NetworkRow {
                name: proxy.name().await?,
                uuid: proxy.uuid().await?,
                state: state(proxy.active().await?),
                persistent: proxy.persistent().await?,
                autostart: proxy.autostart().await?,
                bridge: proxy.bridge().await?,
            };
            match format {
                Format::Text => print!("{}", output::net_info_text(&row)),
                Format::Json => print_json(&row)?,
            }
        }
        NetCommand::Dumpxml { network } => {
            let proxy = lookup(connection, manager, &network).await?;
            print!("{}", proxy.get_xml(0).await?);
        }
        NetCommand::Autostart { network, disable } => {
            let proxy = lookup(connection, manager, &network).await?;
            proxy.set_autostart(!disable).await?;
            let name = proxy.name().await?;
            if disable {
                println!("Network '{name}' unmarked as autostarted");
            } else {
                println!("Network '{name}' marked as autostarted");
            }
        }
    }
    Ok(())
}

/// Finds a network by name, or by uuid when no network has that name.
async fn lookup(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    name_or_uuid: &str,
) -> Result<NetworkProxy<'static>> {
    let path = by_name_or_uuid(
        name_or_uuid,
        manager.network_lookup_by_name(name_or_uuid),
        || manager.network_lookup_by_uuid(name_or_uuid),
    )
    .await?;
    network(connection, path).await
}

async fn network(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> Result<NetworkProxy<'static>> {
    Ok(NetworkProxy::builder(connection).path(path).build().await?)
}

fn state(active: bool) -> String {
    if active { "active" } else { "inactive" }.to_owned()
}

fn row_from_properties(props: &HashMap<String, zbus::OwnedVariant>) -> NetworkRow {
    let props = Props(props);
    NetworkRow {
        name: props.string("Name"),
        uuid: props.string("UUID"),
        state: state(props.boolean("Active")),
        persistent: props.boolean("Persistent"),
        autostart: props.boolean("Autostart"),
        bridge: props.string("Bridge"),
    }
}
