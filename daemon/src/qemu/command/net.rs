//! `<interface>`: a NIC on a tap device the driver opened and attached
//! (to the network's or the named bridge, or nothing for `ethernet`), so
//! qemu needs no privilege to reach the host's network.
//!
//! qemu takes the tap as `-netdev tap,fd=N` (no vhost: the in-kernel
//! virtio back end needs a `/dev/vhost-net` descriptor the driver does not
//! pass yet). What lives on the host side of the tap, `<bandwidth>`,
//! `<vlan>` and the tap's own MTU, is the driver's. Ids: the netdev is
//! `hostnet{N}`, the device its `<alias>` or `net{N}`.

use super::{Args, Ctx};
use crate::domain::{InterfaceSource, LinkState, NicModel};
use crate::qemu::command::CommandError;

/// The model of an interface without `<model type=>`: virtio. libvirt
/// leaves it to the hypervisor (qemu's own default is rtl8139, an
/// emulated card that is slow); virt-install and virt-manager pick virtio
/// for every guest that has its driver, which every current one does.
const DEFAULT_MODEL: NicModel = NicModel::Virtio;

pub(super) fn interfaces(args: &mut Args, ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    for (index, interface) in ctx.def.devices.interfaces.iter().enumerate() {
        let kind = interface.source.type_str();
        let what = format!("<interface type='{kind}'> (number {index})");
        match &interface.source {
            InterfaceSource::Network { .. } | InterfaceSource::Bridge { .. } => {}
            InterfaceSource::Ethernet { .. } if interface.target_dev.is_some() => {}
            InterfaceSource::Ethernet { .. } => {
                return Err(ctx.refuse(
                    format!("{what} without <target dev>"),
                    "an ethernet interface names its tap device with <target dev='…'/>",
                ));
            }
            InterfaceSource::Direct { .. } => {
                return Err(ctx.refuse(what, "the QEMU driver does not run macvtap interfaces yet"));
            }
        }
        if interface.link_state == Some(LinkState::Down) {
            return Err(ctx.refuse(
                format!("{what} with <link state='down'>"),
                "qemu starts every link up",
            ));
        }
        let Some(fd) = ctx.settings.tap_fds.get(index).copied().flatten() else {
            return Err(ctx.refuse(what, "the driver opened no tap device for it"));
        };
        let model = interface.model.unwrap_or(DEFAULT_MODEL);
        let netdev = format!("hostnet{index}");
        let id = ctx.id(interface.alias.as_deref(), format!("net{index}"), &what)?;
        args.push2("-netdev", format!("tap,id={netdev},fd={fd}"));
        let mut device = format!(
            "{},netdev={netdev},id={id}",
            match model {
                NicModel::Virtio => "virtio-net-pci",
                NicModel::E1000 => "e1000",
                NicModel::E1000e => "e1000e",
                NicModel::Rtl8139 => "rtl8139",
            }
        );
        if let Some(mac) = &interface.mac {
            device.push_str(&format!(",mac={mac}"));
        }
        // Emulated cards learn nothing of the MTU; the tap's is the
        // driver's, and the guest's the guest's.
        if let (Some(mtu), NicModel::Virtio) = (interface.mtu, model) {
            device.push_str(&format!(",host_mtu={mtu}"));
        }
        if let Some(order) = interface.boot_order {
            device.push_str(&format!(",bootindex={order}"));
        }
        args.push2("-device", device);
    }
    Ok(())
}
