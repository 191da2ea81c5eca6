//! `<interface>`: a NIC on a tap device the driver opened and attached
//! (to the network's or the named bridge, or nothing for `ethernet`), so
//! qemu needs no privilege to reach the host's network.
//!
//! qemu takes the tap as `-netdev tap,fd=N` (no vhost: the in-kernel
//! virtio back end needs a `/dev/vhost-net` descriptor the driver does not
//! pass yet). What lives on the host side of the tap, `<bandwidth>`,
//! `<vlan>` and the tap's own MTU, is the driver's. Ids: the netdev is
//! `hostnet{N}`, the device its `<alias>` or `net{N}`. qemu starts every
//! link up: the driver sets `<link state='down'>` over QMP before the
//! guest runs.

use super::{Args, Ctx};
use crate::domain::{InterfaceSource, NicModel};
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
            InterfaceSource::Kept(_) => {
                return Err(ctx.refuse(what, "lxvirt keeps it but does not run it"));
            }
        }
        let Some(fd) = ctx.settings.tap_fds.get(index).copied().flatten() else {
            return Err(ctx.refuse(what, "the driver opened no tap device for it"));
        };
        let model = interface.model.unwrap_or(DEFAULT_MODEL);
        let device_name = match model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::VirtioTransitional => "virtio-net-pci-transitional",
            NicModel::VirtioNonTransitional => "virtio-net-pci-non-transitional",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::UsbNet => {
                return Err(ctx.refuse(
                    format!("{what} with <model type='usb-net'>"),
                    "the QEMU driver puts network cards on PCI only; use virtio or e1000e",
                ));
            }
        };
        let netdev = format!("hostnet{index}");
        let id = ctx.id(interface.alias.as_deref(), format!("net{index}"), &what)?;
        args.push2("-netdev", format!("tap,id={netdev},fd={fd}"));
        let mut device = format!("{device_name},netdev={netdev},id={id}");
        if let Some(mac) = &interface.mac {
            device.push_str(&format!(",mac={mac}"));
        }
        // Emulated cards learn nothing of the MTU; the tap's is the
        // driver's, and the guest's the guest's.
        if let (Some(mtu), true) = (interface.mtu, device_name.starts_with("virtio")) {
            device.push_str(&format!(",host_mtu={mtu}"));
        }
        if let Some(order) = interface.boot_order {
            device.push_str(&format!(",bootindex={order}"));
        }
        args.push2("-device", device);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{line_with, refusal, settings, values, with_devices};
    use super::super::{Accel, Settings};

    fn taps(n: usize) -> Settings {
        let mut s = settings(Accel::Kvm);
        s.tap_fds = (0..n).map(|i| Some(20 + i as i32)).collect();
        s
    }

    #[test]
    fn interfaces_are_nics_on_the_driver_s_taps() {
        let def = with_devices(
            "q35",
            "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>\
               <mtu size='1400'/><boot order='1'/></interface>\
             <interface type='bridge'><source bridge='br0'/><model type='e1000'/><mtu size='1400'/>\
               <alias name='ua-lan'/></interface>\
             <interface type='ethernet'><target dev='tap7'/><model type='rtl8139'/></interface>",
        );
        let args = line_with(&def, &taps(3));
        assert_eq!(
            values(&args, "-netdev"),
            [
                "tap,id=hostnet0,fd=20",
                "tap,id=hostnet1,fd=21",
                "tap,id=hostnet2,fd=22"
            ]
        );
        assert_eq!(
            values(&args, "-device"),
            [
                // virtio by default; only virtio learns the MTU.
                "virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:00:00:01,host_mtu=1400,bootindex=1",
                "e1000,netdev=hostnet1,id=ua-lan",
                "rtl8139,netdev=hostnet2,id=net2",
            ]
        );
    }

    #[test]
    fn interfaces_without_a_tap_or_of_other_types_are_refused() {
        let bridge = "<interface type='bridge'><source bridge='br0'/></interface>";
        let error = refusal(&with_devices("q35", bridge), &taps(0));
        assert!(
            error.contains("<interface type='bridge'> (number 0) cannot run yet (the driver opened no tap device for it)"),
            "{error}"
        );
        for (xml, expected) in [
            (
                "<interface type='direct'><source dev='eth0' mode='bridge'/></interface>",
                "<interface type='direct'> (number 0) cannot run yet",
            ),
            (
                "<interface type='ethernet'/>",
                "<interface type='ethernet'> (number 0) without <target dev>",
            ),
        ] {
            let error = refusal(&with_devices("q35", xml), &taps(1));
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
