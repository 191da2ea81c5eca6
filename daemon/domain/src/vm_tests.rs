//! Virtual machine documents: libvirt's x86 vocabulary, typed and kept.

use std::collections::BTreeSet;

use crate::test_support::{self, examples_dir};
use crate::xml::{self, Element};
use crate::*;

fn ok(doc: &str) -> DomainDef {
    test_support::ok(doc)
}

fn fails(doc: &str, needle: &str) -> DomainError {
    test_support::fails::<DomainDef>(doc, needle)
}

fn export() -> String {
    std::fs::read_to_string(examples_dir().join("kvm-libvirt-export.xml")).unwrap()
}

/// A kvm domain with `devices` inside `<devices>`.
fn vm_with(root: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'><name>vm</name><memory unit='GiB'>1</memory>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os>{root}\
         <devices>{devices}</devices></domain>"
    )
}

/// An lxc domain with `os`, `root` and `devices` additions.
fn lxc_with(os: &str, root: &str, devices: &str) -> String {
    format!(
        "<domain type='lxc'><name>c</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/sbin/init</init>{os}</os>{root}\
         <devices><console type='pty'/>{devices}</devices></domain>"
    )
}

/// Every element path with each of its attribute names, outside
/// `<metadata>` (kept verbatim, checked elsewhere).
fn shape(el: &Element, path: &str, out: &mut BTreeSet<String>) {
    let here = format!("{path}/{}", el.name);
    out.insert(here.clone());
    for a in &el.attributes {
        // <domain id=> is a run's, ignored on define by design.
        let run_id = here == "/domain" && a.name == "id";
        if !a.qname.starts_with("xmlns") && !run_id {
            out.insert(format!("{here}@{}", a.name));
        }
    }
    if el.name == "metadata" {
        return;
    }
    for c in el.elements() {
        shape(c, &here, out);
    }
}

/// Defines `text`, checks that formatting is a fixed point and that no
/// element or attribute is lost on the way.
fn round_trip_keeps_everything(text: &str) -> DomainDef {
    let def = ok(text);
    let once = def.to_xml();
    let twice = DomainDef::from_xml(&once).unwrap().to_xml();
    assert_eq!(once, twice, "formatting is not a fixed point");
    assert_eq!(DomainDef::from_xml(&once).unwrap(), def);

    let mut before = BTreeSet::new();
    shape(&xml::parse_str(text).unwrap(), "", &mut before);
    let mut after = BTreeSet::new();
    shape(&xml::parse_str(&once).unwrap(), "", &mut after);
    let lost: Vec<&String> = before.difference(&after).collect();
    assert!(lost.is_empty(), "lost on format: {lost:?}\n{once}");
    def
}

#[test]
fn vm_examples_keep_everything() {
    let mut seen = 0;
    for file in test_support::xml_files(&examples_dir()) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("kvm-") || name.starts_with("qemu-") {
            round_trip_keeps_everything(&std::fs::read_to_string(&file).unwrap());
            seen += 1;
        }
    }
    assert!(seen >= 4, "VM examples missing");
}

#[test]
fn libvirt_export_defines_and_keeps_everything() {
    let text = export();
    let def = round_trip_keeps_everything(&text);

    // Typed where the QEMU driver will act on it.
    let Os::Hvm(os) = &def.os else {
        panic!("not hvm")
    };
    assert_eq!(os.firmware, Some(Firmware::Efi));
    assert_eq!(def.vcpu.current, Some(2));
    assert_eq!(def.partition(), std::path::Path::new("/machine"));
    let vda = &def.devices.disks[0];
    let drv = vda.driver.clone().unwrap();
    assert_eq!(drv.cache, Some(DiskCache::None));
    assert_eq!(drv.io, Some(DiskIo::Native));
    assert_eq!(drv.discard, Some(DiskDiscard::Unmap));
    assert_eq!(def.devices.interfaces[0].model, Some(NicModel::Virtio));
    assert_eq!(
        def.devices.serials[0].target_type,
        Some(SerialTargetType::IsaSerial)
    );
    assert_eq!(def.clock.timers[0].tickpolicy, Some(TickPolicy::Catchup));
    let loader = os.loader.as_ref().unwrap();
    assert_eq!(loader.loader_type, Some(LoaderType::Pflash));
    assert_eq!(loader.secure, Some(true));
    assert_eq!(
        os.nvram.as_ref().unwrap().template.as_deref(),
        Some(std::path::Path::new(
            "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd"
        ))
    );
    assert_eq!(os.bootmenu.unwrap().timeout, Some(3000));
    assert_eq!(os.smbios, Some(SmbiosMode::Emulate));
    assert_eq!(def.features.smm, Some(true));
    assert_eq!(def.features.vmport, Some(false));
    assert_eq!(def.features.ioapic, Some(IoapicDriver::Kvm));
    let cpu = def.cpu.as_ref().unwrap();
    assert_eq!(cpu.mode, Some(CpuMode::HostPassthrough));
    assert_eq!(cpu.topology.unwrap().threads, Some(2));
    assert_eq!(
        cpu.features,
        vec![CpuFeature {
            policy: Some(CpuFeaturePolicy::Disable),
            name: "vmx".into()
        }]
    );
    assert_eq!(def.pm.unwrap().suspend_to_mem, Some(false));
    assert_eq!(vda.boot_order, Some(1));
    assert_eq!(
        vda.address,
        Some(DeviceAddress {
            address_type: Some(AddressType::Pci),
            domain: Some(0),
            bus: Some(4),
            slot: Some(0),
            function: Some(0),
            ..DeviceAddress::default()
        })
    );
    let vdb = &def.devices.disks[2];
    assert!(vdb.shareable);
    assert_eq!(vdb.serial.as_deref(), Some("shared-0001"));
    let balloon = def.devices.memballoon.as_ref().unwrap();
    assert_eq!(balloon.model, MemballoonModel::Virtio);
    assert_eq!(balloon.stats_period, Some(5));
    assert_eq!(def.devices.controllers.len(), 8);
    let port = &def.devices.controllers[2];
    assert_eq!(port.model.as_deref(), Some("pcie-root-port"));
    assert_eq!(port.target.unwrap().port, Some(0x10));
    assert_eq!(def.devices.inputs.len(), 3);
    assert_eq!(
        def.devices.graphics[0].listens[0].listen_type,
        Some(ListenType::Address)
    );
    assert_eq!(def.devices.graphics[0].port, Some(-1));
    assert_eq!(def.devices.sounds[0].model, SoundModel::Ich9);
    assert_eq!(def.devices.audios[0].audio_type, AudioType::None);
    assert_eq!(
        def.devices.channels[0].target_name.as_deref(),
        Some("org.qemu.guest_agent.0")
    );
    let rng = &def.devices.rngs[0];
    assert_eq!(
        rng.backend_path.as_deref(),
        Some(std::path::Path::new("/dev/urandom"))
    );
    assert_eq!(
        def.devices.videos[0].model.as_ref().unwrap().model_type,
        VideoModelType::Virtio
    );
    assert_eq!(def.devices.watchdogs[0].action, Some(WatchdogAction::Reset));
    assert_eq!(def.devices.panics[0].model, Some(PanicModel::Pvpanic));
    // Kept, and found again by name.
    let backing = vda.backing_store.as_ref().unwrap();
    assert_eq!(
        backing.source,
        Some(DiskSource::File(Some(
            "/var/lib/libvirt/images/fedora-40-base.qcow2".into()
        )))
    );
    assert_eq!(backing.format, Some(ImageFormat::Qcow2));
    // The chain ends with an empty <backingStore/>.
    assert_eq!(backing.backing.as_deref(), Some(&BackingStore::default()));
}

#[test]
fn unsupported_for_vm_names_kept_elements_but_not_hints() {
    let def = ok(&export());
    let list = def.unsupported_for_vm();
    assert_eq!(list, vec!["<os><firmware>".to_owned()]);
    let def = ok(&vm_with(
        "<memoryBacking><hugepages/></memoryBacking>",
        "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/><alias name='tpm0'/></tpm>",
    ));
    assert_eq!(
        def.unsupported_for_vm(),
        vec![
            "<memoryBacking>".to_owned(),
            "<devices><tpm model='tpm-crb'>".to_owned()
        ]
    );
    // Typed elements are the driver's to run, not listed.
    for typed in [
        "<cpu", "<pm", "<loader", "<nvram", "<smm", "<ioapic", "<vmport",
    ] {
        assert!(!list.iter().any(|s| s.contains(typed)), "{typed}: {list:?}");
    }
    assert!(
        !list
            .iter()
            .any(|s| s.contains("<address") || s.contains("<alias")),
        "{list:?}"
    );
    // A plain VM has nothing kept.
    assert!(ok(&vm_with("", "")).unsupported_for_vm().is_empty());
}

#[test]
fn bad_values_are_refused_naming_the_element() {
    fails(
        &vm_with(
            "",
            "<disk type='file'><source file='/i'/><target dev='vda' bus='floppy'/></disk>",
        ),
        "bus 'floppy'",
    );
    let e = fails(&vm_with("", "<sound model='ich10'/>"), "model 'ich10'");
    assert!(e.to_string().contains("<sound>"), "{e}");
    for device in [
        "<video><model type='virtio'/><address type='pci' slot='0x20'/></video>",
        "<disk type='file'><source file='/i'/><target dev='vda'/><address type='pci' slot='0x20'/></disk>",
    ] {
        let e = fails(&vm_with("", device), "slot '0x20'");
        assert!(e.to_string().contains("<address>"), "{e}");
    }
    // A misspelled attribute or child inside a kept element.
    fails(
        &vm_with("", "<memballoon modle='virtio'/>"),
        "unknown attribute 'modle'",
    );
    fails(
        &vm_with("", "<controller type='usb'><adress/></controller>"),
        "adress",
    );
    fails(&vm_with("", "<controller type='floppy'/>"), "type 'floppy'");
    fails(
        &vm_with(
            "",
            "<rng model='virtio'><backend model='random'>urandom</backend></rng>",
        ),
        "<backend>",
    );
    fails(&vm_with("<cpu mode='host'/>", ""), "mode 'host'");
    fails(
        &vm_with(
            "",
            "<serial type='pty'><target type='isa-serial'><model name='16550'/></target></serial>",
        ),
        "serial model '16550'",
    );
    fails(
        &vm_with(
            "",
            "<disk type='file'><driver cache='fast'/><source file='/i'/><target dev='vda'/></disk>",
        ),
        "cache 'fast'",
    );
    fails(&vm_with("<vcpu current='3'>2</vcpu>", ""), "out of range");
    fails(&vm_with("<pm><suspend-to-ram/></pm>", ""), "suspend-to-ram");
    fails(
        &vm_with("<cpu><topology sockets='0'/></cpu>", ""),
        "sockets 0 is out of range",
    );
    fails(
        &vm_with("<cpu><feature name='vmx'/><feature name='vmx'/></cpu>", ""),
        "more than once",
    );
    fails(&vm_with("<cpu/><cpu/>", ""), "more than once");
    fails(
        &vm_with(
            "",
            "<disk type='file'><source file='/i'/><target dev='vda'/>\
             <backingStore><source file='/b'/></backingStore></disk>",
        ),
        "attribute 'type'",
    );
    fails(
        &vm_with(
            "",
            "<disk type='file'><source file='/i'/><target dev='vda'/>\
             <backingStore type='block'><source file='/b'/></backingStore></disk>",
        ),
        "<source dev=",
    );
    fails(
        &vm_with("", "<graphics type='vnc' port='70000'/>"),
        "port '70000' is not a port",
    );
    fails(&vm_with("", "<controller index='0'/>"), "attribute 'type'");
    fails(
        &vm_with("", "<audio id='1' type='none'/><audio id='1' type='none'/>"),
        "more than once",
    );
    fails(
        &vm_with("", "<memballoon model='none'/><memballoon model='none'/>"),
        "more than once",
    );
    fails(
        &vm_with("", "<input type='tablet' bus='pci'/>"),
        "bus 'pci'",
    );
    fails(
        &vm_with("", "<video><model type='std'/></video>"),
        "type 'std'",
    );
    fails(
        &vm_with("", "<watchdog model='i6300esb' action='explode'/>"),
        "action 'explode'",
    );
    let disk = |order: u32, dev: &str| {
        format!(
            "<disk type='file'><source file='/i'/><target dev='{dev}'/><boot order='{order}'/></disk>"
        )
    };
    fails(
        &vm_with("", &format!("{}{}", disk(1, "vda"), disk(1, "vdb"))),
        "more than once",
    );
    fails(&vm_with("", &disk(0, "vda")), "order 0 is out of range");
    fails(
        &vm_with("", &disk(1, "vda")).replace("hvm</type>", "hvm</type><boot dev='hd'/>"),
        "both set the boot order",
    );
    fails(
        &vm_with("", "").replace("<type arch", "<loader type='flash'/><type arch"),
        "type 'flash'",
    );
    fails(
        &vm_with("", "").replace("<type arch", "<bootmenu timeout='70000'/><type arch"),
        "timeout 70000 is out of range",
    );
    fails(
        &vm_with("<features><ioapic/></features>", ""),
        "attribute 'driver'",
    );
}

#[test]
fn lxc_domains_refuse_vm_only_elements() {
    let need = "not supported in a lxc domain";
    fails(&lxc_with("", "<cpu mode='host-passthrough'/>", ""), "<cpu>");
    fails(&lxc_with("", "<pm/>", ""), need);
    fails(&lxc_with("<loader>/fw</loader>", "", ""), need);
    fails(
        &lxc_with("", "<features><vmport state='off'/></features>", ""),
        need,
    );
    fails(&lxc_with("", "", "<controller type='usb'/>"), need);
    fails(&lxc_with("", "", "<memballoon model='none'/>"), need);
    fails(&lxc_with("", "<vcpu current='1'>2</vcpu>", ""), "current");
    fails(
        &lxc_with(
            "",
            "<clock><timer name='rtc' tickpolicy='catchup'/></clock>",
            "",
        ),
        "tickpolicy",
    );
}

#[test]
fn kept_elements_are_canonical() {
    // Attributes come back in the table's order, text trimmed.
    let def = ok(&vm_with(
        "",
        "<rng model='virtio'><rate period='1000' bytes='10'/><backend model='random'>\n /dev/urandom \n</backend></rng>",
    ));
    let xml = def.to_xml();
    assert!(xml.contains("<rate bytes='10' period='1000'/>"), "{xml}");
    assert!(
        xml.contains("<backend model='random'>/dev/urandom</backend>"),
        "{xml}"
    );
}

#[test]
fn serial_ports_and_consoles_take_an_address_and_alias() {
    let def = ok(&vm_with(
        "",
        "<serial type='pty'><alias name='ua-serial'/><target type='usb-serial' port='1'>\
         <model name='usb-serial'/></target><address type='usb' bus='0' port='4'/></serial>",
    ));
    let serial = &def.devices.serials[0];
    assert_eq!(serial.alias.as_deref(), Some("ua-serial"));
    assert_eq!(
        serial.address.as_ref().and_then(|a| a.port.as_deref()),
        Some("4")
    );
    let xml = def.to_xml();
    assert_eq!(DomainDef::from_xml(&xml).unwrap(), def);
    fails(
        &lxc_with("", "", "<serial type='pty'><alias name='s'/></serial>"),
        "not supported in a lxc domain",
    );
    let def = ok(&vm_with(
        "",
        "<console type='pty'><target type='virtio' port='1'/><alias name='ua-con'/>\
         <address type='virtio-serial' controller='0' bus='0' port='2'/></console>",
    ));
    assert_eq!(def.devices.consoles[0].alias.as_deref(), Some("ua-con"));
    assert_eq!(DomainDef::from_xml(&def.to_xml()).unwrap(), def);
    let lxc = lxc_with("", "", "").replace(
        "<console type='pty'/>",
        "<console type='pty'><alias name='c'/></console>",
    );
    fails(&lxc, "not supported in a lxc domain");
}

/// A VM's live definition records the host ids its qemu runs as; no
/// other user namespace mode applies to a VM.
#[test]
fn a_vm_takes_lxvirt_userns_auto_only() {
    let ns = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
    let with = |userns: &str| {
        vm_with(userns, "").replace("<domain type='kvm'>", &format!("<domain type='kvm' {ns}>"))
    };
    let live = ok(&with(
        "<lxvirt:userns mode='auto' target='1065536' count='65536'/>",
    ));
    assert_eq!(
        live.userns.and_then(|u| u.allocated),
        Some((1_065_536, 65_536))
    );
    assert!(live.to_live_xml().contains("target='1065536'"));
    fails(
        &with("<lxvirt:userns mode='host'/>"),
        "always runs as host ids lxvirt allocates",
    );
}

/// `<memtune>`, `<numatune>` and `<blkiotune>` have the same shape for
/// VMs as for containers in libvirt, and lxvirt takes them for both (the
/// QEMU driver applies them to the VM's cgroup).
#[test]
fn a_vm_takes_memtune_numatune_and_blkiotune() {
    let doc = vm_with(
        "<memtune><hard_limit unit='MiB'>1536</hard_limit><soft_limit unit='MiB'>1024</soft_limit></memtune>\
         <numatune><memory mode='strict' nodeset='0'/></numatune>\
         <blkiotune><weight>500</weight></blkiotune>",
        "",
    );
    let def = ok(&doc);
    assert_eq!(
        def.memtune.as_ref().and_then(|m| m.hard_limit),
        Some(1536 << 20)
    );
    assert!(def.numatune.is_some());
    assert_eq!(def.blkiotune.as_ref().and_then(|b| b.weight), Some(500));
    let again = ok(&def.to_xml());
    assert_eq!(again, def);
    let text = def.to_xml();
    for element in ["<memtune>", "<numatune>", "<blkiotune>"] {
        assert!(text.contains(element), "{element}: {text}");
    }
}

/// Every document in the directory `LXVIRT_CORPUS` (libvirt's own test
/// documents, which are not in this repository) that defines must round
/// trip without losing an element or attribute. Run by hand:
/// `LXVIRT_CORPUS=/tmp/libvirt-corpus cargo test -p lxvirt-domain corpus -- --ignored`.
#[test]
#[ignore = "needs LXVIRT_CORPUS"]
fn corpus_keeps_everything() {
    let dir = std::path::PathBuf::from(std::env::var_os("LXVIRT_CORPUS").unwrap());
    let mut failed = Vec::new();
    for file in test_support::xml_files(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        if DomainDef::from_xml(&text).is_err() {
            continue;
        }
        let result = std::panic::catch_unwind(|| round_trip_keeps_everything(&text));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .map(|s| s.lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", file.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A backing chain of plain files and block devices is typed; one with a
/// network image (or slices, a data store, …) anywhere is kept whole.
#[test]
fn backing_chains_are_typed_or_kept_whole() {
    let disk = |inner: &str| {
        let def = round_trip_keeps_everything(&vm_with(
            "",
            &format!(
                "<disk type='file'><driver type='qcow2'/><source file='/i.qcow2'/>\
                 <backingStore type='file'><format type='qcow2'/><source file='/b.qcow2'/>\
                 {inner}</backingStore><target dev='vda'/></disk>"
            ),
        ));
        def.devices.disks[0].clone()
    };
    let plain = disk("<backingStore type='block'><source dev='/dev/b'/></backingStore>");
    assert!(plain.backing_store.is_some() && plain.kept.is_empty());
    let network = disk(
        "<backingStore type='network'><source protocol='nbd' name='b'>\
         <host name='h'/></source></backingStore>",
    );
    assert_eq!(network.backing_store, None);
    assert_eq!(network.kept[0].name, "backingStore");
}

/// `<numatune><memnode>` binds a VM's guest NUMA cell; containers have
/// none, and a `<numatune>` names at least one placement.
#[test]
fn memnodes_are_a_vms() {
    let def = round_trip_keeps_everything(&vm_with(
        "<numatune><memnode cellid='0' mode='preferred' nodeset='3'/></numatune>",
        "",
    ));
    let numatune = def.numatune.unwrap();
    assert_eq!(numatune.memory, None);
    assert_eq!(numatune.memnodes[0].mode, NumaMode::Preferred);
    fails(
        &vm_with(
            "<numatune><memnode cellid='0' nodeset='0'/><memnode cellid='0' nodeset='1'/></numatune>",
            "",
        ),
        "more than once",
    );
    fails(&vm_with("<numatune/>", ""), "<memory>");
    fails(
        &lxc_with(
            "",
            "<numatune><memnode cellid='0' nodeset='0'/></numatune>",
            "",
        ),
        "not supported in a lxc domain",
    );
}

/// An `<nvram>` path is typed; one with a type and a `<source>` (libvirt's
/// newer form, which may be a network image) is kept as written.
#[test]
fn nvram_is_typed_or_kept() {
    let doc = |nvram: &str| {
        format!(
            "<domain type='kvm'><name>vm</name><memory unit='GiB'>1</memory>\
             <os><type arch='x86_64' machine='q35'>hvm</type>{nvram}</os></domain>"
        )
    };
    let os = |nvram: &str| {
        let Os::Hvm(os) = round_trip_keeps_everything(&doc(nvram)).os else {
            panic!("not hvm")
        };
        os
    };
    let typed = os("<nvram template='/t.fd'>/v.fd</nvram>");
    assert!(typed.nvram.is_some() && typed.kept.is_empty());
    let kept = os("<nvram type='file'><source file='/v.fd'/></nvram>");
    assert_eq!(kept.nvram, None);
    assert_eq!(kept.kept[0].name, "nvram");
    fails(&doc("<nvram><target/></nvram>"), "target");
}

/// A VM's serial ports and consoles take libvirt's other chardev types,
/// kept with their `<source>`, `<protocol>` and `<log>`; a container's
/// console stays a pty.
#[test]
fn chardev_types_are_kept_for_vms() {
    let def = round_trip_keeps_everything(&vm_with(
        "",
        "<serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/>\
         <protocol type='telnet'/><log file='/var/log/s.log' append='on'/>\
         <target port='0'/></serial>\
         <console type='spiceport'><source channel='org.qemu.console.serial.0'/>\
         <target type='serial' port='0'/></console>",
    ));
    assert_eq!(def.devices.serials[0].chardev_type, ChardevType::Tcp);
    assert_eq!(def.devices.serials[0].kept.len(), 3);
    assert_eq!(def.devices.consoles[0].chardev_type, ChardevType::Spiceport);
    fails(&vm_with("", "<serial type='telepathy'/>"), "telepathy");
    fails(
        &lxc_with("", "", "<console type='file'/>"),
        "use type='pty'",
    );
}
