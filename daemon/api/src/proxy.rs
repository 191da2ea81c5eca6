//! Client-side proxies of lxvirt's interfaces, for `lxvirt` and tests.
//!
//! Written by hand, for types a client wants (`ImageRecord`, object
//! paths, descriptors), and checked against the committed introspection
//! XML by `tests/proxy_contract.rs`: every method, property and signal of
//! the contract must have a member here with the same signature, and
//! every member here must be in the contract (the test reads the traits
//! at the top level and in inline modules).
//!
//! Methods that change something allow interactive authorization: where
//! polkit would ask the user (an agent runs in their session), it may.

use zbus::OwnedObjectPath;
use zbus::proxy;

#[proxy(
    interface = "org.lxvirt.lxvirt1.Manager",
    default_service = "org.lxvirt.lxvirt1",
    default_path = "/org/lxvirt/lxvirt1"
)]
pub trait Manager {
    #[zbus(allow_interactive_auth, name = "DefineXML")]
    fn define_xml(&self, xml: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_domains(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    fn list_domain_summaries(&self) -> zbus::Result<Vec<crate::DomainSummaryRecord>>;
    fn lookup_by_name(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "LookupByUUID")]
    fn lookup_by_uuid(&self, uuid: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(allow_interactive_auth)]
    fn start_domain(&self, name: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn shutdown_domain(&self, name: &str, grace_seconds: u32, mode: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn destroy_domain(&self, name: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn reboot_domain(&self, name: &str, grace_seconds: u32, mode: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn reset_domain(&self, name: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn suspend_domain(&self, name: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn resume_domain(&self, name: &str) -> zbus::Result<()>;
    fn get_capabilities(&self) -> zbus::Result<String>;
    #[zbus(allow_interactive_auth, name = "CreateXML")]
    fn create_xml(&self, xml: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(allow_interactive_auth, name = "NetworkDefineXML")]
    fn network_define_xml(&self, xml: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(allow_interactive_auth, name = "NetworkCreateXML")]
    fn network_create_xml(&self, xml: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_networks(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    fn network_lookup_by_name(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "NetworkLookupByUUID")]
    fn network_lookup_by_uuid(&self, uuid: &str) -> zbus::Result<OwnedObjectPath>;
    /// (name, outcome, error) per active domain; see the contract.
    #[zbus(allow_interactive_auth)]
    fn shutdown_all(
        &self,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    /// What `Apply` would change: documents are (origin, xml, autostart).
    fn plan_apply(
        &self,
        documents: &[(&str, &str, bool)],
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<Vec<crate::ApplyStepRecord>>;
    #[zbus(allow_interactive_auth)]
    fn apply(
        &self,
        documents: &[(&str, &str, bool)],
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<Vec<crate::ApplyStepRecord>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.lxvirt.lxvirt1.Images",
    default_service = "org.lxvirt.lxvirt1",
    default_path = "/org/lxvirt/lxvirt1"
)]
pub trait Images {
    #[zbus(allow_interactive_auth)]
    fn import_tarball(
        &self,
        tarball: zbus::Fd<'_>,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    #[zbus(allow_interactive_auth, name = "ImportOCI")]
    fn import_oci(
        &self,
        layout: &str,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn list_images(&self) -> zbus::Result<Vec<crate::ImageRecord>>;
    fn inspect(&self, reference: &str) -> zbus::Result<crate::ImageRecord>;
    #[zbus(allow_interactive_auth)]
    fn remove(&self, reference: &str) -> zbus::Result<Vec<String>>;
    #[zbus(allow_interactive_auth)]
    fn tag(&self, reference: &str, name: &str) -> zbus::Result<String>;
    #[zbus(allow_interactive_auth)]
    fn untag(&self, name: &str) -> zbus::Result<String>;
    fn export(
        &self,
        reference: &str,
        out: zbus::Fd<'_>,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<u64>;
    #[zbus(signal)]
    fn progress(&self, token: &str, phase: &str, done: u64, total: u64) -> zbus::Result<()>;
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
    #[zbus(property)]
    fn pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn start_time(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn security_label(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn user_namespace(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn host_ids(&self) -> zbus::Result<(u32, u32)>;
    #[zbus(name = "GetXML")]
    fn get_xml(&self, flags: u32) -> zbus::Result<String>;
    #[zbus(allow_interactive_auth)]
    fn start(&self) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn shutdown(&self, grace_seconds: u32, mode: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn destroy(&self) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn reboot(&self, grace_seconds: u32, mode: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn reset(&self) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn suspend(&self) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn resume(&self) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn open_console(&self, devname: &str) -> zbus::Result<zbus::OwnedFd>;
    #[zbus(allow_interactive_auth)]
    fn open_console_log(
        &self,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<zbus::OwnedFd>;
    #[allow(clippy::too_many_arguments)]
    #[zbus(allow_interactive_auth)]
    fn enter(
        &self,
        command: &[&str],
        env: &[&str],
        stdin: zbus::Fd<'_>,
        stdout: zbus::Fd<'_>,
        stderr: zbus::Fd<'_>,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<(u32, zbus::OwnedFd)>;
    /// (pid, the terminal's master, the exit pipe).
    #[zbus(allow_interactive_auth)]
    fn enter_terminal(
        &self,
        command: &[&str],
        env: &[&str],
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<(u32, zbus::OwnedFd, zbus::OwnedFd)>;
    fn get_stats(&self) -> zbus::Result<std::collections::HashMap<String, zbus::OwnedVariant>>;
    #[zbus(allow_interactive_auth)]
    fn send_process_signal(&self, pid: i64, signal: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn set_memory_parameters(
        &self,
        params: std::collections::HashMap<&str, zbus::Variant<'_>>,
        flags: u32,
    ) -> zbus::Result<()>;
    fn get_memory_parameters(
        &self,
        flags: u32,
    ) -> zbus::Result<std::collections::HashMap<String, zbus::OwnedVariant>>;
    #[zbus(allow_interactive_auth)]
    fn set_scheduler_parameters(
        &self,
        params: std::collections::HashMap<&str, zbus::Variant<'_>>,
        flags: u32,
    ) -> zbus::Result<()>;
    fn get_scheduler_parameters(
        &self,
        flags: u32,
    ) -> zbus::Result<std::collections::HashMap<String, zbus::OwnedVariant>>;
    #[zbus(allow_interactive_auth)]
    fn set_blkio_parameters(
        &self,
        params: std::collections::HashMap<&str, zbus::Variant<'_>>,
        flags: u32,
    ) -> zbus::Result<()>;
    fn get_blkio_parameters(
        &self,
        flags: u32,
    ) -> zbus::Result<std::collections::HashMap<String, zbus::OwnedVariant>>;
    #[zbus(allow_interactive_auth)]
    fn set_memory(&self, kib: u64, flags: u32) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn set_max_memory(&self, kib: u64, flags: u32) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn pin_emulator(&self, cpuset: &str, flags: u32) -> zbus::Result<()>;
    fn get_emulator_pin(&self, flags: u32) -> zbus::Result<String>;
    #[zbus(allow_interactive_auth)]
    fn set_pids_limit(&self, max: u64, flags: u32) -> zbus::Result<()>;
    fn get_pids_limit(&self, flags: u32) -> zbus::Result<u64>;
    #[zbus(allow_interactive_auth)]
    fn set_numa_parameters(
        &self,
        params: std::collections::HashMap<&str, zbus::Variant<'_>>,
        flags: u32,
    ) -> zbus::Result<()>;
    fn get_numa_parameters(
        &self,
        flags: u32,
    ) -> zbus::Result<std::collections::HashMap<String, zbus::OwnedVariant>>;
    #[zbus(allow_interactive_auth)]
    fn attach_device(&self, xml: &str, flags: u32) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn detach_device(&self, xml: &str, flags: u32) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn update_device(&self, xml: &str, flags: u32) -> zbus::Result<()>;
    /// (name, MAC, [(address, prefix)]) per interface; source 0 leases,
    /// 1 the container's own view.
    #[allow(clippy::type_complexity)]
    fn get_interface_addresses(
        &self,
        source: u32,
        flags: u32,
    ) -> zbus::Result<Vec<(String, String, Vec<(String, u8)>)>>;
    /// rx bytes, packets, errors, drops, then tx.
    #[allow(clippy::type_complexity)]
    fn get_interface_stats(
        &self,
        device: &str,
    ) -> zbus::Result<(u64, u64, u64, u64, u64, u64, u64, u64)>;
    #[zbus(allow_interactive_auth)]
    fn undefine(&self, flags: u32) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn commit(&self, name: &str, flags: u32) -> zbus::Result<String>;
    #[zbus(signal)]
    fn lifecycle(&self, event: &str, detail: &str) -> zbus::Result<()>;
}

pub use network::NetworkProxy;

/// The network proxy in a module of its own: its `Lifecycle` signal's
/// types would clash with the domain's.
pub mod network {
    use zbus::proxy;

    #[proxy(
        interface = "org.lxvirt.lxvirt1.Network",
        default_service = "org.lxvirt.lxvirt1"
    )]
    pub trait Network {
        #[zbus(property)]
        fn name(&self) -> zbus::Result<String>;
        #[zbus(property, name = "UUID")]
        fn uuid(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn active(&self) -> zbus::Result<bool>;
        #[zbus(property)]
        fn persistent(&self) -> zbus::Result<bool>;
        #[zbus(property)]
        fn autostart(&self) -> zbus::Result<bool>;
        #[zbus(property)]
        fn set_autostart(&self, enabled: bool) -> zbus::Result<()>;
        #[zbus(property)]
        fn bridge(&self) -> zbus::Result<String>;
        #[zbus(name = "GetXML")]
        fn get_xml(&self, flags: u32) -> zbus::Result<String>;
        #[zbus(allow_interactive_auth)]
        fn undefine(&self) -> zbus::Result<()>;
        #[zbus(allow_interactive_auth)]
        fn start(&self) -> zbus::Result<()>;
        #[zbus(allow_interactive_auth)]
        fn destroy(&self, flags: u32) -> zbus::Result<()>;
        /// (MAC, address, prefix, host name, client id, expiry).
        #[zbus(name = "GetDHCPLeases")]
        #[allow(clippy::type_complexity)]
        fn get_dhcp_leases(
            &self,
            mac: &str,
            flags: u32,
        ) -> zbus::Result<Vec<(String, String, u8, String, String, u64)>>;
        #[zbus(signal)]
        fn lifecycle(&self, event: &str, detail: &str) -> zbus::Result<()>;
    }
}
