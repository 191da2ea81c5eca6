//! The QEMU driver tests' guest (tests/vm/mkguest) in a bare QEMU under
//! TCG, without lxvirt: it prints its marker, powers off when told to or
//! on the ACPI power button, reboots, reports the address DHCP gave it
//! and its disk's first line, and its panic reaches QEMU's pvpanic devices;
//! its qemu-ga answers lxvirtd's guest agent client.
//! Each test is one boot of ~2-3 s; cargo runs them side by side.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use lxvirt_tests::guest::{BOOT_TIMEOUT, BootedGuest, test_guest};
use lxvirtd::qemu::agent::{Agent, ExecCommand, ShutdownMode};
use lxvirtd::qemu::qmp::{EventKind, ShutdownCause};

/// After the marker, what the guest does next should take well under this.
const AFTER_MARKER: Duration = Duration::from_secs(20);

/// The guest shuts itself down: QEMU reports it and exits.
async fn powers_off(vm: &mut BootedGuest) {
    vm.wait_event(
        |k| matches!(k, EventKind::Shutdown { guest: true, .. }),
        AFTER_MARKER,
    )
    .await
    .unwrap();
    let status = vm.wait_exit(AFTER_MARKER).await.unwrap();
    assert!(status.success(), "qemu: {status}");
}

#[tokio::test]
async fn then_poweroff_makes_qemu_exit_by_itself() {
    let Some(guest) = test_guest() else { return };
    let mut vm = BootedGuest::boot(&guest, "lxvirt.marker=GUEST-OFF lxvirt.then=poweroff", &[])
        .await
        .unwrap();
    vm.wait_line("lxvirt-guest: up", BOOT_TIMEOUT)
        .await
        .unwrap();
    vm.wait_line("GUEST-OFF", BOOT_TIMEOUT).await.unwrap();
    let event = vm
        .wait_event(|k| matches!(k, EventKind::Shutdown { .. }), AFTER_MARKER)
        .await
        .unwrap();
    assert_eq!(
        event.kind(),
        EventKind::Shutdown {
            guest: true,
            reason: ShutdownCause::GuestShutdown
        }
    );
    let status = vm.wait_exit(AFTER_MARKER).await.unwrap();
    assert!(status.success(), "qemu: {status}");
}

#[tokio::test]
async fn the_power_button_powers_it_off() {
    let Some(guest) = test_guest() else { return };
    let mut vm = BootedGuest::boot(&guest, "lxvirt.marker=GUEST-BUTTON", &[])
        .await
        .unwrap();
    vm.wait_line("GUEST-BUTTON", BOOT_TIMEOUT).await.unwrap();
    // The guest watches the button before it prints the marker: pressing
    // it at once must work.
    vm.qmp().system_powerdown().await.unwrap();
    vm.wait_line("lxvirt-guest: power button", AFTER_MARKER)
        .await
        .unwrap();
    powers_off(&mut vm).await;
}

#[tokio::test]
async fn it_reports_its_dhcp_address_and_its_disk() {
    let Some(guest) = test_guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let mut content = b"lxvirt test disk\nsecond line\n".to_vec();
    content.resize(1 << 20, 0);
    std::fs::write(&disk, content).unwrap();
    // QEMU's user network hands out 10.0.2.15/24 by DHCP.
    let drive = format!("file={},format=raw,if=none,id=disk0", disk.display());
    let mut vm = BootedGuest::boot(
        &guest,
        "lxvirt.udhcpc=1 lxvirt.disk=vda lxvirt.marker=GUEST-DEVICES lxvirt.then=poweroff",
        &[
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=disk0",
        ],
    )
    .await
    .unwrap();
    vm.wait_line("GUEST-DEVICES", BOOT_TIMEOUT).await.unwrap();
    let transcript = vm.transcript();
    for line in [
        "lxvirt-guest: eth0 dhcp 10.0.2.15/24",
        "lxvirt-guest: vda lxvirt test disk",
    ] {
        assert!(
            transcript.lines().any(|l| l == line),
            "{line:?}:\n{transcript}"
        );
    }
    vm.wait_exit(AFTER_MARKER).await.unwrap();
}

#[tokio::test]
async fn then_reboot_runs_init_again() {
    let Some(guest) = test_guest() else { return };
    let mut vm = BootedGuest::boot(&guest, "lxvirt.marker=GUEST-REBOOT lxvirt.then=reboot", &[])
        .await
        .unwrap();
    vm.wait_line("GUEST-REBOOT", BOOT_TIMEOUT).await.unwrap();
    vm.wait_event(
        |k| matches!(k, EventKind::Reset { guest: true, .. }),
        AFTER_MARKER,
    )
    .await
    .unwrap();
    // A reboot shows as the marker again (QEMU may send several RESET
    // events for one reboot: count markers, not events).
    vm.wait_line("lxvirt-guest: up", BOOT_TIMEOUT)
        .await
        .unwrap();
    vm.wait_line("GUEST-REBOOT", BOOT_TIMEOUT).await.unwrap();
}

/// Boots with `then=panic` and `device`; QEMU must report the panic.
async fn panic_reaches(device: &str) {
    let Some(guest) = test_guest() else { return };
    // -no-shutdown makes QEMU pause rather than exit on the panic.
    let mut vm = BootedGuest::boot(
        &guest,
        "lxvirt.marker=GUEST-PANIC lxvirt.then=panic",
        &["-device", device, "-no-shutdown"],
    )
    .await
    .unwrap();
    vm.wait_line("GUEST-PANIC", BOOT_TIMEOUT).await.unwrap();
    let event = vm
        .wait_event(
            |k| matches!(k, EventKind::GuestPanicked { .. }),
            AFTER_MARKER,
        )
        .await
        .unwrap_or_else(|e| panic!("{device}: {e}; the console said:\n{}", vm.transcript()));
    assert_eq!(
        event.kind(),
        EventKind::GuestPanicked {
            action: "pause".to_owned()
        }
    );
}

#[tokio::test]
async fn a_panic_reaches_isa_pvpanic() {
    // The ISA device, an ACPI QEMU0001 node: pvpanic-mmio in the guest.
    panic_reaches("pvpanic").await;
}

#[tokio::test]
async fn a_panic_reaches_pci_pvpanic() {
    panic_reaches("pvpanic-pci").await;
}

/// The guest's qemu-ga (`lxvirt.agent=1`) on a virtio-serial port named
/// org.qemu.guest_agent.0 answers lxvirtd's client: ping, info, a command
/// with input and output, its interfaces, and a shutdown that powers the
/// guest off.
#[tokio::test]
async fn its_guest_agent_runs_commands_and_powers_it_off() {
    let Some(guest) = test_guest() else { return };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let chardev = format!("socket,id=qga,path={},server=on,wait=off", socket.display());
    let mut vm = BootedGuest::boot(
        &guest,
        "lxvirt.agent=1 lxvirt.ip=192.0.2.7/24 lxvirt.marker=GUEST-AGENT",
        &[
            "-device",
            "virtio-serial",
            "-chardev",
            &chardev,
            "-device",
            "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
        ],
    )
    .await
    .unwrap();
    vm.wait_line("lxvirt-guest: agent up", BOOT_TIMEOUT)
        .await
        .unwrap();
    vm.wait_line("GUEST-AGENT", BOOT_TIMEOUT).await.unwrap();
    let agent = Agent::new("guest", &socket);
    agent.ping().await.unwrap();
    let info = agent.info().await.unwrap();
    assert!(
        info.commands
            .iter()
            .any(|c| c.name == "guest-exec" && c.enabled),
        "{info:?}"
    );
    let pid = agent
        .exec(&ExecCommand {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "cat; echo oops >&2; exit 3".into(),
            ],
            env: vec!["PATH=/bin".into()],
            input: b"from the host\n".to_vec(),
            capture_output: true,
        })
        .await
        .unwrap();
    let status = loop {
        let status = agent.exec_status(pid).await.unwrap();
        if status.exited {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.exit_code, Some(3), "{status:?}");
    assert_eq!(status.stdout, b"from the host\n");
    assert_eq!(status.stderr, b"oops\n");
    let interfaces = agent.network_interfaces().await.unwrap();
    let eth0 = interfaces
        .iter()
        .find(|i| i.mac.as_deref() == Some("52:54:00:12:34:56"))
        .unwrap_or_else(|| panic!("{interfaces:?}"));
    assert!(
        eth0.addresses.contains(&("192.0.2.7".parse().unwrap(), 24)),
        "{eth0:?}"
    );
    agent.shutdown(ShutdownMode::Powerdown).await.unwrap();
    powers_off(&mut vm).await;
}
