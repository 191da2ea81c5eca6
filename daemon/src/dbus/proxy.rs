//! Client-side proxies of lxvirt's interfaces, for `lxvirt` and tests.
//! A test checks them against the committed introspection XML.

use zbus::OwnedObjectPath;
use zbus::proxy;

#[proxy(
    interface = "org.lxvirt.lxvirt1.Manager",
    default_service = "org.lxvirt.lxvirt1",
    default_path = "/org/lxvirt/lxvirt1"
)]
pub trait Manager {
    #[zbus(name = "DefineXML")]
    fn define_xml(&self, xml: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_domains(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    fn lookup_by_name(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "LookupByUUID")]
    fn lookup_by_uuid(&self, uuid: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_capabilities(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.lxvirt.lxvirt1.Domain",
    default_service = "org.lxvirt.lxvirt1"
)]
pub trait Domain {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> zbus::Result<String>;
    #[zbus(property, name = "Type")]
    fn type_(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn persistent(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn autostart(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn set_autostart(&self, enabled: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state_reason(&self) -> zbus::Result<String>;
    #[zbus(name = "GetXML")]
    fn get_xml(&self, flags: u32) -> zbus::Result<String>;
    fn start(&self) -> zbus::Result<()>;
    fn undefine(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn lifecycle(&self, event: &str, detail: &str) -> zbus::Result<()>;
}
