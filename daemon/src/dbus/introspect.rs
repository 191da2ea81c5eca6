//! `Introspect` on the nodes above the domain and network objects: the
//! node's own interfaces and the names of its children, one level, as the
//! D-Bus specification describes and sd-bus and GDBus answer.
//!
//! zbus's default answer describes every descendant with all its
//! interfaces. With 6,000 domains that is a 25 MB reply built in a quarter
//! of a second under the object tree's lock, and more than the bus daemon
//! accepts in one message: it closes the daemon's connection (`busctl
//! tree` did that). Each of these nodes gets this implementation instead,
//! when the adapter starts and before the object manager, so no signal
//! tells of the exchange. The two collection nodes carry
//! `org.lxvirt.lxvirt1.Collection`, so that they outlive their last child
//! (zbus prunes a node left with only the standard interfaces, and would
//! make it again with its own `Introspect`).

use std::fmt::Write;

use zbus::object_server::Interface;
use zbus::{ObjectServer, interface};

use super::object_manager::{ObjectManager, Registry};
use super::{ImagesObject, MANAGER_PATH, ManagerObject};
use lxvirt_api::{DOMAIN_PATH_PREFIX, NETWORK_PATH_PREFIX};

/// `org.freedesktop.DBus.Peer`, which every node has (zbus's own type for it
/// is private).
const PEER_XML: &str = r#"  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping">
    </method>
    <method name="GetMachineId">
      <arg type="s" direction="out"/>
    </method>
  </interface>
"#;

const DOCTYPE: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
"#;

/// What a node above the objects is.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// `/`, `/org`, `/org/lxvirt`: one child on the way to the manager.
    Ancestor { child: &'static str },
    /// The manager's node, with the collections below it.
    Manager,
    /// The node holding the objects whose paths start with `prefix`.
    Collection { prefix: &'static str },
}

/// Where the flat introspection goes: every node from `/` to the
/// collections, with what it is.
fn nodes() -> Vec<(String, Node)> {
    let mut nodes = Vec::new();
    let mut path = String::new();
    let parts: Vec<&'static str> = MANAGER_PATH.split('/').filter(|p| !p.is_empty()).collect();
    for (depth, child) in parts.iter().enumerate() {
        let at = if depth == 0 {
            "/".to_owned()
        } else {
            path.clone()
        };
        nodes.push((at, Node::Ancestor { child }));
        path.push('/');
        path.push_str(child);
    }
    nodes.push((MANAGER_PATH.to_owned(), Node::Manager));
    for prefix in [DOMAIN_PATH_PREFIX, NETWORK_PATH_PREFIX] {
        nodes.push((
            collection_path(prefix).to_owned(),
            Node::Collection { prefix },
        ));
    }
    nodes
}

/// `/org/lxvirt/lxvirt1/domain` for `/org/lxvirt/lxvirt1/domain/_`.
fn collection_path(prefix: &'static str) -> &'static str {
    prefix.rsplit_once('/').map_or(prefix, |(parent, _)| parent)
}

/// The last element of a collection's path: `domain`, `network`.
fn collection_name(prefix: &'static str) -> &'static str {
    collection_path(prefix)
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// Replaces zbus's `Introspectable` on every node from `/` to the
/// collections; call before the object manager is exported.
pub(crate) async fn install(server: &ObjectServer, registry: &Registry) -> zbus::Result<()> {
    let introspectable = zbus::names::InterfaceName::from_static_str_unchecked(
        "org.freedesktop.DBus.Introspectable",
    );
    let nodes = nodes();
    // The collections first: that makes every node on their way.
    for (path, node) in &nodes {
        if let Node::Collection { prefix } = *node {
            let collection = Collection::new(collection_name(prefix));
            server.at(path.as_str(), collection).await?;
        }
    }
    for (path, node) in nodes {
        server
            .remove_named(path.as_str(), introspectable.clone())
            .await?;
        let flat = FlatIntrospectable {
            node,
            registry: registry.clone(),
        };
        server.at(path.as_str(), flat).await?;
    }
    Ok(())
}

/// `org.lxvirt.lxvirt1.Collection`: the node that holds the domain (or
/// network) objects.
pub(crate) struct Collection {
    kind: &'static str,
}

impl Collection {
    fn new(kind: &'static str) -> Self {
        Collection { kind }
    }
}

#[interface(name = "org.lxvirt.lxvirt1.Collection")]
impl Collection {
    /// What the objects below are: `domain` or `network`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn kind(&self) -> String {
        self.kind.to_owned()
    }
}

struct FlatIntrospectable {
    node: Node,
    registry: Registry,
}

#[interface(name = "org.freedesktop.DBus.Introspectable")]
impl FlatIntrospectable {
    /// The node's interfaces and its children's names.
    async fn introspect(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> zbus::fdo::Result<String> {
        let mut xml = String::with_capacity(8192);
        xml.push_str(DOCTYPE);
        xml.push_str("<node>\n");
        xml.push_str(PEER_XML);
        self.introspect_to_writer(&mut xml, 2);
        zbus::fdo::Properties.introspect_to_writer(&mut xml, 2);
        let children = match self.node {
            Node::Ancestor { child } => vec![child.to_owned()],
            Node::Manager => {
                write_interface::<ManagerObject>(server, &mut xml).await?;
                write_interface::<ImagesObject>(server, &mut xml).await?;
                write_interface::<ObjectManager>(server, &mut xml).await?;
                [DOMAIN_PATH_PREFIX, NETWORK_PATH_PREFIX]
                    .map(|prefix| collection_name(prefix).to_owned())
                    .to_vec()
            }
            Node::Collection { prefix } => {
                let at = collection_path(prefix);
                Collection::new(collection_name(prefix)).introspect_to_writer(&mut xml, 2);
                self.registry.children_of(at)
            }
        };
        for child in children {
            // Object path elements are [A-Za-z0-9_]: nothing to escape.
            let _ = writeln!(xml, "  <node name=\"{child}\"/>");
        }
        xml.push_str("</node>\n");
        Ok(xml)
    }
}

/// Writes the introspection of interface `I` at the manager's path.
async fn write_interface<I: Interface>(
    server: &ObjectServer,
    xml: &mut String,
) -> zbus::fdo::Result<()> {
    let interface = server.interface::<_, I>(MANAGER_PATH).await?;
    interface.get().await.introspect_to_writer(xml, 2);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_from_the_root_to_the_collections() {
        let paths: Vec<String> = nodes().into_iter().map(|(path, _)| path).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/org",
                "/org/lxvirt",
                "/org/lxvirt/lxvirt1",
                "/org/lxvirt/lxvirt1/domain",
                "/org/lxvirt/lxvirt1/network"
            ]
        );
        assert_eq!(collection_name(DOMAIN_PATH_PREFIX), "domain");
        assert_eq!(collection_name(NETWORK_PATH_PREFIX), "network");
    }
}
