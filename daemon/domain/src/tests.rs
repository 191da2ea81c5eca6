//! Tests of the typed layer as a whole: examples, invalid documents,
//! semantic checks, hostile input and the round-trip property.

use std::path::Path;

use proptest::prelude::*;

use super::arb::arb_domain_def;
use super::test_support::{
    self, assert_fixed_point, check_round_trip, examples_dir, is_network_example, parse_mutated,
    xml_files,
};
use super::xml::{MAX_DOCUMENT_BYTES, Pos, XmlError};
use super::*;

#[test]
fn every_example_parses_and_is_a_fixed_point() {
    let files: Vec<_> = xml_files(&examples_dir())
        .into_iter()
        .filter(|p| !is_network_example(p))
        .collect();
    assert!(files.len() >= 7, "examples missing: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let def = DomainDef::from_xml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_fixed_point(&def);
        assert_eq!(DomainDef::from_bytes(text.as_bytes()).unwrap(), def);
    }
}

/// The line an invalid example's first comment names: `<!-- line N: … -->`.
fn expected_line(text: &str) -> u32 {
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("<!-- line ")
        .unwrap_or_else(|| panic!("first line must be '<!-- line N: …': {first}"));
    rest.split(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn every_invalid_example_fails_at_the_stated_line() {
    let files = xml_files(&examples_dir().join("invalid"));
    assert!(files.len() >= 4);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let err = Document::from_xml(&text)
            .err()
            .unwrap_or_else(|| panic!("{} parsed", path.display()));
        assert_eq!(
            err.pos().map(|p| p.line),
            Some(expected_line(&text)),
            "{}: {err}",
            path.display()
        );
    }
}

#[test]
fn everything_example_is_understood() {
    let text = std::fs::read_to_string(examples_dir().join("lxc-everything.xml")).unwrap();
    let d = DomainDef::from_xml(&text).unwrap();
    assert_eq!(d.domain_type, DomainType::Lxc);
    assert_eq!(d.name.as_str(), "everything");
    assert_eq!(d.memory, 256 << 20);
    assert_eq!(d.current_memory, 128 << 20);
    let mt = d.memtune.as_ref().unwrap();
    assert_eq!(mt.swap_hard_limit, Some(1 << 30));
    assert_eq!(d.vcpu.cpuset.as_ref().unwrap().to_string(), "0-1");
    assert_eq!(d.cputune.as_ref().unwrap().quota, Some(50000));
    assert_eq!(d.partition(), Path::new("/machine"));
    let os = d.exe_os().unwrap();
    assert_eq!(os.init, Path::new("/sbin/init"));
    assert_eq!(os.initargs.len(), 2);
    assert_eq!(os.initenv, vec![("APP_MODE".into(), "production".into())]);
    assert_eq!(os.inituser, Some(IdRef::Name("1000".into())));
    assert_eq!(os.initgroup, Some(IdRef::Id(1000)));
    let caps = d.features.capabilities.as_ref().unwrap();
    assert_eq!(caps.states.get(&Capability::SysAdmin), Some(&false));
    assert_eq!(caps.states.get(&Capability::Mknod), Some(&true));
    assert!(d.features.privnet);
    assert_eq!(d.on_crash, LifecycleAction::Preserve);
    assert_eq!(d.devices.filesystems.len(), 6);
    assert!(d.root_filesystem().is_some());
    assert_eq!(
        d.devices.filesystems[3].source,
        FsSource::Ram { usage: 64 << 20 }
    );
    assert_eq!(d.devices.interfaces.len(), 4);
    let web = &d.devices.interfaces[0];
    assert_eq!(web.mtu, Some(1500));
    assert_eq!(web.bandwidth.unwrap().inbound.unwrap().floor, Some(200));
    assert_eq!(d.devices.interfaces[1].vlan.as_ref().unwrap().tags.len(), 2);
    assert!(matches!(
        &d.devices.interfaces[2].source,
        InterfaceSource::Ethernet { ips, routes } if ips.len() == 1 && routes.len() == 1
    ));
    assert_eq!(d.devices.hostdevs.len(), 4);
    assert!(matches!(
        &d.devices.hostdevs[2],
        Hostdev::Net { ips, routes, .. } if ips.len() == 1 && routes.len() == 1
    ));
    assert_eq!(d.devices.consoles.len(), 2);
    let ns = d.lxc_namespace.as_ref().unwrap();
    assert_eq!(ns.sharenet.as_ref().unwrap().share_type, NsShareType::Netns);
    let md = d.metadata.as_ref().unwrap().as_str();
    assert!(md.contains("<app:owner>web team</app:owner>"));
    assert!(d.to_xml().contains(md), "metadata not kept verbatim");
    assert!(d.to_xml().starts_with(
        "<domain type='lxc' xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'>\n  <name>"
    ));
}

// ---- helpers for the semantic checks ----

const BASE: &str = "<domain type='lxc'>
  <name>t</name>
  <memory unit='MiB'>64</memory>
  <os>
    <type>exe</type>
    <init>/sbin/init</init>
  </os>
  <devices>
    <console type='pty'/>
  </devices>
</domain>
";

/// BASE with `extra` added at the end of the root element.
fn root(extra: &str) -> String {
    BASE.replace("</domain>", &format!("{extra}\n</domain>"))
}

/// BASE with `extra` added at the end of `<devices>`.
fn devices(extra: &str) -> String {
    BASE.replace("</devices>", &format!("{extra}\n  </devices>"))
}

/// BASE with `extra` added at the end of `<os>`.
fn os(extra: &str) -> String {
    BASE.replace("</os>", &format!("{extra}\n  </os>"))
}

fn ok(doc: &str) -> DomainDef {
    test_support::ok(doc)
}

fn fails(doc: &str, needle: &str) -> DomainError {
    test_support::fails::<DomainDef>(doc, needle)
}

#[test]
fn base_document_parses_with_defaults() {
    let d = ok(BASE);
    assert_eq!(d.current_memory, d.memory);
    assert_eq!(d.vcpu, Vcpu::default());
    assert_eq!(d.on_poweroff, LifecycleAction::Destroy);
    assert_eq!(d.on_reboot, LifecycleAction::Restart);
    assert_eq!(d.on_crash, LifecycleAction::Destroy);
    assert_eq!(d.clock.offset, ClockOffset::Utc);
    assert_eq!(d.partition, None);
    assert_eq!(d.partition(), Path::new(DEFAULT_PARTITION));
    assert_eq!(
        d.devices.consoles,
        vec![Console {
            chardev_type: ChardevType::Pty,
            kept: Vec::new(),
            target_type: ConsoleTargetType::Lxc,
            port: 0,
            address: None,
            alias: None,
        }]
    );
    assert_eq!(d.uuid.get_version_num(), 4);
    assert_ne!(ok(BASE).uuid, d.uuid, "uuids are generated afresh");
    assert_eq!(d.hostname(), "t");
    assert_fixed_point(&d);
}

#[test]
fn error_messages_name_position_element_and_fix() {
    let e = fails(
        &BASE.replace("    <init>/sbin/init</init>\n", ""),
        "<os>: missing <init>",
    );
    assert_eq!(
        e.to_string(),
        "4:3: <os>: missing <init>, which an 'exe' domain needs; add <init>/sbin/init</init>"
    );
    assert_eq!(e.pos(), Some(Pos { line: 4, column: 3 }));
    assert_eq!(e.element(), Some("os"));
}

#[test]
fn domain_type_and_name_are_checked() {
    fails(&BASE.replace(" type='lxc'", ""), "missing attribute 'type'");
    fails(
        &BASE.replace("type='lxc'", "type='xen'"),
        "domain type 'xen' is not known",
    );
    fails(&BASE.replace("  <name>t</name>\n", ""), "missing <name>");
    for bad in ["", ".", "..", "-x", ".x", "a/b", "a b", &"n".repeat(65)] {
        fails(
            &BASE.replace("<name>t</name>", &format!("<name>{bad}</name>")),
            "not a valid domain name",
        );
    }
    fails(
        &BASE
            .replace("<domain type='lxc'>", "<domian type='lxc'>")
            .replace("</domain>", "</domian>"),
        "root element",
    );
}

#[test]
fn uuids_are_checked() {
    let with = |u: &str| root(&format!("  <uuid>{u}</uuid>"));
    let d = ok(&with("6c0a3a522c4e4a8f9d0e2b7c1d9f4a11"));
    assert_eq!(d.uuid.to_string(), "6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11");
    fails(&with("6c0a3a52-2c4e-4a8f-9d0e"), "is not a UUID");
    fails(
        &with("{6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11}"),
        "is not a UUID",
    );
    fails(&with("00000000-0000-0000-0000-000000000000"), "nil UUID");
}

#[test]
fn memory_is_checked() {
    let mem = |m: &str| BASE.replace("<memory unit='MiB'>64</memory>", m);
    assert_eq!(ok(&mem("<memory>1000</memory>")).memory, 1000 * 1024);
    assert_eq!(ok(&mem("<memory unit='G'>2</memory>")).memory, 2 << 30);
    assert_eq!(ok(&mem("<memory unit='MB'>1</memory>")).memory, 1_000_448);
    assert!(
        ok(&mem("<memory unit='GiB'>1</memory>"))
            .to_xml()
            .contains("<memory unit='KiB'>1048576</memory>")
    );
    fails(&mem("<memory>0</memory>"), "memory is zero");
    fails(
        &mem("<memory unit='XiB'>1</memory>"),
        "unit 'XiB' is not known",
    );
    fails(&mem("<memory unit='EiB'>16</memory>"), "too large");
    fails(&mem("<memory>-1</memory>"), "not a whole number");
    fails(&mem("<memory>lots</memory>"), "not a whole number");
    fails(
        &root("  <currentMemory unit='MiB'>65</currentMemory>"),
        "more than <memory>",
    );
    assert_eq!(
        ok(&root("  <currentMemory unit='MiB'>32</currentMemory>")).current_memory,
        32 << 20
    );
    fails(
        &root(
            "  <memtune><hard_limit>2048</hard_limit><swap_hard_limit>1024</swap_hard_limit></memtune>",
        ),
        "below hard_limit",
    );
}

#[test]
fn cpu_tuning_is_checked() {
    fails(&root("  <vcpu>0</vcpu>"), "out of range");
    let d = ok(&root("  <vcpu placement='auto' cpuset='0-3,^2,5'>4</vcpu>"));
    assert_eq!(d.vcpu.placement, VcpuPlacement::Auto);
    assert!(
        d.to_xml()
            .contains("<vcpu placement='auto' cpuset='0-1,3,5'>4</vcpu>")
    );
    fails(&root("  <vcpu cpuset='3-1'>1</vcpu>"), "not a valid list");
    fails(
        &root("  <vcpu placement='dynamic'>1</vcpu>"),
        "placement 'dynamic'",
    );
    let tune = |inner: &str| root(&format!("  <cputune>{inner}</cputune>"));
    ok(&tune(
        "<shares>2</shares><period>1000</period><quota>-1</quota>",
    ));
    ok(&tune(
        "<shares>262144</shares><period>1000000</period><quota>1000</quota>",
    ));
    fails(&tune("<shares>1</shares>"), "out of range");
    fails(&tune("<shares>262145</shares>"), "out of range");
    fails(&tune("<period>999</period>"), "out of range");
    fails(&tune("<period>1000001</period>"), "out of range");
    fails(&tune("<quota>-2</quota>"), "use -1 for unlimited");
    fails(&tune("<quota>999</quota>"), "use -1 for unlimited");
    fails(
        &tune("<shares>1</shares><shares>2</shares>"),
        "more than once",
    );
    ok(&root(
        "  <numatune><memory mode='interleave' nodeset='0-1'/></numatune>",
    ));
    fails(
        &root("  <numatune><memory mode='strict'/></numatune>"),
        "nodeset",
    );
}

#[test]
fn blkiotune_is_checked() {
    let blk = |inner: &str| root(&format!("  <blkiotune>{inner}</blkiotune>"));
    ok(&blk("<weight>100</weight>"));
    ok(&blk("<weight>1000</weight>"));
    fails(&blk("<weight>99</weight>"), "out of range");
    fails(&blk("<weight>1001</weight>"), "out of range");
    fails(
        &blk("<device><path>/dev/sda</path><weight>50</weight></device>"),
        "out of range",
    );
    fails(
        &blk("<device><path>/dev/sda</path></device><device><path>/dev/sda</path></device>"),
        "more than once",
    );
    fails(
        &blk("<device><weight>500</weight></device>"),
        "missing <path>",
    );
}

#[test]
fn resource_partition_is_checked() {
    let d = ok(&root(
        "  <resource><partition>/machine/web</partition></resource>",
    ));
    assert_eq!(d.partition(), Path::new("/machine/web"));
    assert!(d.to_xml().contains("<partition>/machine/web</partition>"));
    fails(
        &root("  <resource><partition>machine</partition></resource>"),
        "absolute",
    );
    fails(&root("  <resource/>"), "missing <partition>");
}

#[test]
fn os_is_checked() {
    fails(
        &BASE.replace("<init>/sbin/init</init>", "<init>sbin/init</init>"),
        "absolute",
    );
    fails(
        &BASE.replace("<type>exe</type>", "<type>hvm</type>"),
        "cannot run OS type 'hvm'",
    );
    fails(
        &BASE.replace("    <type>exe</type>\n", ""),
        "missing <type>",
    );
    fails(
        &os("<initenv name='1BAD'>x</initenv>"),
        "environment variable name",
    );
    fails(
        &os("<initenv name='A-B'>x</initenv>"),
        "environment variable name",
    );
    fails(&os("<initenv>x</initenv>"), "missing attribute 'name'");
    fails(
        &os("<initenv name='A'>x</initenv><initenv name='A'>y</initenv>"),
        "more than once",
    );
    fails(&os("<inituser>+x</inituser>"), "+NUMBER");
    fails(
        &os("<inituser>-web</inituser>"),
        "not a valid user or group name",
    );
    fails(
        &os("<kernel>/boot/vmlinuz</kernel>"),
        "not supported in a lxc domain",
    );
    fails(
        &BASE.replace("<type>exe</type>", "<type machine='q35'>exe</type>"),
        "unknown attribute 'machine'",
    );
    let d = ok(&os(
        "<initarg> spaced  arg </initarg><initarg/><initenv name='E'>a &amp; b</initenv><inituser>+0</inituser><initgroup>wheel</initgroup><initdir>/srv/./app/</initdir>",
    ));
    let e = d.exe_os().unwrap();
    assert_eq!(e.initargs, vec![" spaced  arg ".to_owned(), String::new()]);
    assert_eq!(e.initenv, vec![("E".into(), "a & b".into())]);
    assert_eq!(e.inituser, Some(IdRef::Id(0)));
    assert_eq!(e.initgroup, Some(IdRef::Name("wheel".into())));
    assert_eq!(e.initdir.as_deref(), Some(Path::new("/srv/app")));
    assert_fixed_point(&d);
}

#[test]
fn idmap_is_checked() {
    let map = |inner: &str| root(&format!("  <idmap>{inner}</idmap>"));
    let uid0 = "<uid start='0' target='1000' count='10'/>";
    let gid0 = "<gid start='0' target='1000' count='10'/>";
    ok(&map(&format!("{uid0}{gid0}")));
    fails(&map(uid0), "missing <gid>");
    fails(&map(gid0), "missing <uid>");
    fails(
        &map(&format!("<uid start='1' target='1000' count='10'/>{gid0}")),
        "no <uid> mapping has start='0'",
    );
    fails(
        &map(&format!(
            "{uid0}<uid start='5' target='5000' count='10'/>{gid0}"
        )),
        "overlaps",
    );
    fails(
        &map(&format!("{uid0}<gid start='0' target='1000' count='0'/>")),
        "out of range",
    );
    fails(
        &map(&format!(
            "{uid0}<gid start='0' target='4294967290' count='10'/>"
        )),
        "past the largest id",
    );
    fails(
        &map(&format!("{uid0}<gid start='0' count='10'/>")),
        "missing attribute 'target'",
    );
    // Sorted by start on output.
    let d = ok(&map(&format!(
        "<uid start='100' target='5000' count='10'/>{uid0}{gid0}"
    )));
    assert_eq!(d.idmap.as_ref().unwrap().uid[0].start, 0);
}

#[test]
fn features_and_capabilities_are_checked() {
    let feat = |inner: &str| root(&format!("  <features>{inner}</features>"));
    let d = ok(&feat(
        "<capabilities policy='deny'><mknod state='on'/><chown state='off'/></capabilities>",
    ));
    let caps = d.features.capabilities.as_ref().unwrap();
    assert_eq!(caps.policy, CapsPolicy::Deny);
    // Kernel order on output.
    let xml = d.to_xml();
    assert!(xml.find("<chown").unwrap() < xml.find("<mknod").unwrap());
    fails(
        &feat("<capabilities><cap_chown state='on'/></capabilities>"),
        "unknown element <cap_chown>",
    );
    fails(
        &feat("<capabilities><chown/></capabilities>"),
        "missing attribute 'state'",
    );
    fails(
        &feat("<capabilities><chown state='yes'/></capabilities>"),
        "state 'yes'",
    );
    fails(
        &feat("<capabilities><chown state='on'/><chown state='off'/></capabilities>"),
        "more than once",
    );
    fails(&feat("<capabilities policy='some'/>"), "policy 'some'");
    fails(&feat("<acpi/>"), "not supported in a lxc domain");
    fails(&feat("<privnet>yes</privnet>"), "unexpected text");
    fails(&feat("<privnet/><privnet/>"), "more than once");
}

#[test]
fn clock_and_lifecycle_are_checked() {
    ok(&root(
        "  <clock offset='localtime'><timer name='rtc' present='no'/></clock>",
    ));
    fails(&root("  <clock offset='variable'/>"), "offset 'variable'");
    fails(
        &root("  <clock><timer name='kvmclock'/></clock>"),
        "not supported in an lxc domain",
    );
    fails(
        &root("  <clock><timer name='rtc'/><timer name='rtc'/></clock>"),
        "more than once",
    );
    fails(
        &root("  <clock><timer name='rtc' present='maybe'/></clock>"),
        "present 'maybe'",
    );
    ok(&root("  <on_crash>coredump-restart</on_crash>"));
    ok(&root("  <on_reboot>rename-restart</on_reboot>"));
    fails(
        &root("  <on_reboot>coredump-restart</on_reboot>"),
        "applies to <on_crash> only",
    );
    fails(
        &root("  <on_poweroff>explode</on_poweroff>"),
        "action 'explode'",
    );
}

#[test]
fn filesystems_are_checked() {
    let fs =
        |t: &str, inner: &str| devices(&format!("<filesystem type='{t}'>{inner}</filesystem>"));
    let d = ok(&fs(
        "mount",
        "<source dir='/srv//x/'/><target dir='/data/./y/'/>",
    ));
    let f = &d.devices.filesystems[0];
    assert_eq!(
        f.source,
        FsSource::Mount {
            dir: "/srv/x".into()
        }
    );
    assert_eq!(f.target, Path::new("/data/y"));
    fails(
        &fs("mount", "<source dir='/srv'/><target dir='data'/>"),
        "absolute",
    );
    fails(
        &fs("mount", "<source dir='/srv'/><target dir='/a/../etc'/>"),
        "'..'",
    );
    fails(&fs("mount", "<source dir='/srv'/>"), "missing <target>");
    fails(&fs("mount", "<target dir='/x'/>"), "missing <source>");
    fails(
        &fs("mount", "<source dev='/dev/sda'/><target dir='/x'/>"),
        "unknown attribute 'dev'",
    );
    fails(
        &fs("ram", "<source/><target dir='/tmp'/>"),
        "missing attribute 'usage'",
    );
    fails(
        &fs("ram", "<source usage='0'/><target dir='/tmp'/>"),
        "size zero",
    );
    fails(
        &fs("nfs", "<source dir='/x'/><target dir='/x'/>"),
        "filesystem type 'nfs'",
    );
    fails(
        &fs(
            "file",
            "<driver type='loop' format='qcow2'/><source file='/i'/><target dir='/x'/>",
        ),
        "loop driver cannot read 'qcow2'",
    );
    ok(&fs(
        "file",
        "<driver type='nbd' format='qcow2'/><source file='/i'/><target dir='/x'/>",
    ));
    fails(
        &fs(
            "mount",
            "<driver type='loop'/><source dir='/i'/><target dir='/x'/>",
        ),
        "takes no <driver>",
    );
    let two = |a: &str, b: &str| {
        devices(&format!(
            "<filesystem><source dir='/a'/><target dir='{a}'/></filesystem>\
             <filesystem><source dir='/b'/><target dir='{b}'/></filesystem>"
        ))
    };
    fails(&two("/", "/"), "more than one filesystem has target '/'");
    fails(
        &two("/x", "/x/"),
        "filesystem target '/x' appears more than once",
    );
    fails(
        &devices(
            "<filesystem accessmode='mapped'><source dir='/a'/><target dir='/x'/></filesystem>",
        ),
        "accessmode 'mapped'",
    );
    // type defaults to mount, ram sizes are written in KiB.
    let d = ok(&devices(
        "<filesystem><source dir='/a'/><target dir='/'/></filesystem>\
         <filesystem type='ram'><source usage='1' units='GiB'/><target dir='/tmp'/></filesystem>",
    ));
    assert!(d.root_filesystem().is_some());
    assert!(d.to_xml().contains("<source usage='1048576' units='KiB'/>"));
}

#[test]
fn volume_filesystems_name_an_image_for_the_root() {
    let fs = |inner: &str| devices(&format!("<filesystem type='volume'>{inner}</filesystem>"));
    let d = ok(&fs(
        "<source pool='images' volume='busybox'/><target dir='/'/>",
    ));
    assert_eq!(d.root_image(), Some("busybox"));
    assert_eq!(
        d.devices.filesystems[0].source,
        FsSource::Volume {
            pool: "images".into(),
            volume: "busybox".into()
        }
    );
    assert!(
        d.to_xml()
            .contains("<filesystem type='volume'>\n      <source pool='images' volume='busybox'/>")
    );
    assert_fixed_point(&d);
    let e = fails(
        &fs("<source pool='default' volume='busybox'/><target dir='/'/>"),
        "pool 'default' is not known",
    );
    assert!(e.to_string().contains("pool='images'"), "{e}");
    fails(
        &fs("<source volume='busybox'/><target dir='/'/>"),
        "missing attribute 'pool'",
    );
    fails(
        &fs("<source pool='images'/><target dir='/'/>"),
        "missing attribute 'volume'",
    );
    fails(
        &fs("<source pool='images' volume='../etc'/><target dir='/'/>"),
        "volume '../etc' is not an image name or id",
    );
    let e = fails(
        &fs("<source pool='images' volume='busybox'/><target dir='/srv'/>"),
        "must be the root filesystem",
    );
    assert!(e.to_string().contains("image 'busybox'"), "{e}");
    fails(
        &fs("<source pool='images' volume='busybox'/><target dir='/'/><readonly/>"),
        "remove <readonly/>",
    );
    fails(
        &fs("<source pool='images' volume='busybox' dir='/x'/><target dir='/'/>"),
        "unknown attribute 'dir'",
    );
    // A domain on a host directory has no image.
    assert_eq!(ok(BASE).root_image(), None);
}

#[test]
fn disks_are_checked() {
    ok(&devices(
        "<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='sdb'/></disk>",
    ));
    fails(
        &devices("<disk type='file'><source file='/i'/><target dev='vdb'/></disk>"),
        "disk type 'file' is not supported in a lxc domain",
    );
    fails(
        &devices("<disk type='block' device='cdrom'><target dev='hdc'/></disk>"),
        "device 'cdrom'",
    );
    fails(
        &devices("<disk type='block'><source dev='/dev/sdb'/><target dev='sd b'/></disk>"),
        "not a disk device name",
    );
    fails(
        &devices(
            "<disk type='block'><source dev='/dev/sdb'/><target dev='sdb'/></disk>\
             <disk type='block'><source dev='/dev/sdc'/><target dev='sdb'/></disk>",
        ),
        "disk target 'sdb' appears more than once",
    );
    fails(
        &devices("<disk type='block'><target dev='sdb'/></disk>"),
        "missing <source>",
    );
}

#[test]
fn interfaces_are_checked() {
    let net = |inner: &str| {
        devices(&format!(
            "<interface type='network'><source network='default'/>{inner}</interface>"
        ))
    };
    let d = ok(&net(
        "<mac address='52:54:00:AA:BB:CC'/><ip address='fd00::1' prefix='64'/><route address='::' prefix='0' gateway='fd00::fe'/>",
    ));
    let i = &d.devices.interfaces[0];
    assert_eq!(i.mac.unwrap().to_string(), "52:54:00:aa:bb:cc");
    fails(&net("<mac address='01:00:5e:00:00:01'/>"), "multicast");
    fails(&net("<mac address='52:54:00'/>"), "not a MAC address");
    fails(&net("<ip address='10.0.0.300'/>"), "not an IP address");
    fails(&net("<ip address='10.0.0.3' prefix='33'/>"), "out of range");
    fails(&net("<ip address='fd00::3' prefix='129'/>"), "out of range");
    fails(
        &net("<ip address='10.0.0.3' family='ipv6'/>"),
        "does not match",
    );
    fails(
        &net("<ip address='10.0.0.3' peer='fd00::1'/>"),
        "same family",
    );
    fails(
        &net("<route address='10.0.0.0' prefix='8'/>"),
        "missing attribute 'gateway'",
    );
    fails(
        &net("<route address='10.0.0.0' gateway='fd00::1'/>"),
        "same family",
    );
    fails(&net("<guest dev='a/b'/>"), "contains '/'");
    fails(
        &net("<target dev='averyveryverylongname'/>"),
        "longer than 15",
    );
    fails(
        &net("<target dev='vnet0' managed='no'/>"),
        "unknown attribute 'managed'",
    );
    fails(
        &net("<model type='virtio'/>"),
        "not supported in a lxc domain",
    );
    fails(&devices("<interface type='network'/>"), "missing <source>");
    fails(
        &devices("<interface type='user'/>"),
        "interface type 'user'",
    );
    fails(
        &devices("<interface type='ethernet'><source dev='x'/></interface>"),
        "unknown attribute 'dev'",
    );
    fails(
        &devices("<interface type='direct'><source dev='eth0' mode='tap'/></interface>"),
        "mode 'tap'",
    );
    let d = ok(&devices(
        "<interface type='direct'><source dev='eth0'/></interface>",
    ));
    assert!(d.to_xml().contains("<source dev='eth0' mode='vepa'/>"));
    // Routes name networks: no host bits after the prefix; without a
    // prefix, libvirt's natural one (the IPv4 class, /0 for 0.0.0.0).
    ok(&net(
        "<route address='192.168.124.0' prefix='24' gateway='10.0.0.1'/>",
    ));
    ok(&net("<route address='0.0.0.0' gateway='10.0.0.1'/>"));
    fails(
        &net("<route address='192.168.124.1' prefix='24' gateway='10.0.0.1'/>"),
        "not a network address; write the network's address, 192.168.124.0",
    );
    ok(&net("<route address='10.0.0.0' gateway='10.0.0.1'/>"));
    fails(
        &net("<route address='10.9.0.0' gateway='10.0.0.1'/>"),
        "without prefix= it is the address's class",
    );
    // Names and addresses are unique among the interfaces.
    let two = |a: &str, b: &str| {
        devices(&format!(
            "<interface type='bridge'><source bridge='br0'/>{a}</interface>\n<interface type='bridge'><source bridge='br0'/>{b}</interface>"
        ))
    };
    ok(&two("<guest dev='eth0'/>", "<guest dev='eth1'/>"));
    let e = fails(
        &two("<guest dev='eth0'/>", "<guest dev='eth0'/>"),
        "another interface already has guest dev 'eth0'",
    );
    assert_eq!(e.pos().map(|p| p.line), Some(11));
    fails(
        &two("<target dev='v0'/>", "<target dev='v0'/>"),
        "already has target dev 'v0'",
    );
    fails(
        &two(
            "<mac address='52:54:00:00:00:01'/>",
            "<mac address='52:54:00:00:00:01'/>",
        ),
        "already has MAC address 52:54:00:00:00:01",
    );
}

#[test]
fn interface_mtu_link_bandwidth_and_vlan_are_checked() {
    let iface = |kind: &str, source: &str, inner: &str| {
        devices(&format!(
            "<interface type='{kind}'>{source}{inner}</interface>"
        ))
    };
    let net = |inner: &str| iface("network", "<source network='default'/>", inner);
    let bridge = |inner: &str| iface("bridge", "<source bridge='br0'/>", inner);

    let d = ok(&net("<mtu size='9000'/><link state='down'/>\
         <bandwidth><inbound average='1000' peak='5000' burst='1024' floor='200'/><outbound average='128'/></bandwidth>\
         <vlan trunk='yes'><tag id='42' nativeMode='untagged'/><tag id='47'/></vlan>"));
    let i = &d.devices.interfaces[0];
    assert_eq!(i.mtu, Some(9000));
    assert_eq!(i.link_state, Some(LinkState::Down));
    let bw = i.bandwidth.unwrap();
    assert_eq!(bw.inbound.unwrap().floor, Some(200));
    assert_eq!(bw.outbound.unwrap().average, Some(128));
    let vlan = i.vlan.as_ref().unwrap();
    assert!(vlan.trunk);
    assert_eq!(vlan.tags[0].native_mode, Some(NativeMode::Untagged));
    assert_fixed_point(&d);

    // MTU
    fails(&bridge("<mtu size='67'/>"), "MTU 67 is out of range");
    fails(&bridge("<mtu size='65536'/>"), "out of range");
    fails(&bridge("<mtu/>"), "missing attribute 'size'");
    // link
    fails(
        &bridge("<link state='sideways'/>"),
        "link state 'sideways' is not known",
    );
    // bandwidth
    fails(
        &bridge("<bandwidth><inbound average='0'/></bandwidth>"),
        "average 0 is out of range",
    );
    fails(
        &bridge("<bandwidth><outbound peak='10'/></bandwidth>"),
        "missing attribute 'average'",
    );
    fails(
        &bridge("<bandwidth><inbound average='10' peak='5'/></bandwidth>"),
        "peak is below average",
    );
    fails(
        &bridge("<bandwidth><inbound floor='10'/></bandwidth>"),
        "connect the interface with type='network'",
    );
    fails(
        &net("<bandwidth><outbound average='1' floor='10'/></bandwidth>"),
        "unknown attribute 'floor'",
    );
    ok(&net("<bandwidth><inbound floor='10'/></bandwidth>"));
    // An empty <bandwidth> shapes nothing and is dropped.
    assert_eq!(
        ok(&bridge("<bandwidth/>")).devices.interfaces[0].bandwidth,
        None
    );
    fails(
        &iface(
            "direct",
            "<source dev='eth0'/>",
            "<bandwidth><inbound average='1'/></bandwidth>",
        ),
        "cannot be shaped",
    );
    // vlan
    let v = ok(&bridge("<vlan><tag id='0'/><tag id='4095'/></vlan>"));
    assert!(v.devices.interfaces[0].vlan.as_ref().unwrap().trunk);
    assert!(v.to_xml().contains("<vlan trunk='yes'>"));
    let single = ok(&bridge("<vlan trunk='no'><tag id='7'/></vlan>"));
    assert!(!single.devices.interfaces[0].vlan.as_ref().unwrap().trunk);
    assert!(single.to_xml().contains("<vlan>\n"));
    fails(
        &bridge("<vlan><tag id='4096'/></vlan>"),
        "VLAN id 4096 is out of range",
    );
    fails(&bridge("<vlan/>"), "missing <tag>");
    fails(
        &bridge("<vlan><tag id='5'/><tag id='5'/></vlan>"),
        "<tag id='5'> appears more than once",
    );
    fails(
        &bridge("<vlan trunk='no'><tag id='5'/><tag id='6'/></vlan>"),
        "trunk='no' with more than one tag",
    );
    fails(
        &bridge("<vlan trunk='no'><tag id='5' nativeMode='tagged'/></vlan>"),
        "trunk='no' with a native VLAN",
    );
    fails(
        &bridge(
            "<vlan><tag id='5' nativeMode='tagged'/><tag id='6' nativeMode='untagged'/></vlan>",
        ),
        "a second native VLAN",
    );
    fails(
        &iface("ethernet", "", "<vlan><tag id='5'/></vlan>"),
        "no switch port to tag",
    );
}

#[test]
fn ethernet_host_side_and_portgroups_are_kept() {
    let d = ok(&devices(
        "<interface type='ethernet'>\
           <source><ip address='192.168.122.1' prefix='32' peer='192.168.122.12'/>\
           <route address='192.168.124.0' prefix='24' gateway='192.168.122.12'/></source>\
           <ip address='192.168.122.12' prefix='32' peer='192.168.122.1'/>\
         </interface>\
         <interface type='network'><source network='default' portgroup='web'/></interface>",
    ));
    let InterfaceSource::Ethernet { ips, routes } = &d.devices.interfaces[0].source else {
        panic!("not ethernet");
    };
    assert_eq!(ips[0].peer, Some("192.168.122.12".parse().unwrap()));
    assert_eq!(routes[0].prefix, Some(24));
    assert_eq!(d.devices.interfaces[0].ips.len(), 1);
    assert_eq!(
        d.devices.interfaces[1].source,
        InterfaceSource::Network {
            network: "default".into(),
            portgroup: Some("web".into())
        }
    );
    assert_fixed_point(&d);
    // An empty <source/> says nothing: no host-side addresses.
    let empty = ok(&devices("<interface type='ethernet'><source/></interface>"));
    assert!(!empty.to_xml().contains("<source"));
    fails(
        &devices("<interface type='ethernet'><source><guest dev='x'/></source></interface>"),
        "unknown element <guest>",
    );
    fails(
        &devices(
            "<interface type='network'><source network='default' portgroup='a b'/></interface>",
        ),
        "portgroup 'a b'",
    );
}

#[test]
fn hostdevs_are_checked() {
    let usb = |inner: &str| {
        devices(&format!(
            "<hostdev mode='subsystem' type='usb'><source>{inner}</source></hostdev>"
        ))
    };
    let d = ok(&usb("<vendor id='0x1d6B'/><product id='2'/>"));
    assert!(d.to_xml().contains("<vendor id='0x1d6b'/>\n"));
    assert!(d.to_xml().contains("<product id='0x0002'/>\n"));
    ok(&usb("<address bus='0x1' device='3'/>"));
    fails(&usb(""), "missing the USB device");
    fails(
        &usb("<vendor id='0x1d6b'/>"),
        "missing <vendor> or <product>",
    );
    fails(
        &usb("<vendor id='0x10000'/><product id='1'/>"),
        "not a number up to 0xffff",
    );
    fails(
        &devices("<hostdev mode='subsystem' type='pci'><source/></hostdev>"),
        "mode 'subsystem' type 'pci'",
    );
    fails(
        &devices(
            "<hostdev mode='capabilities' type='storage'><source><char>/dev/x</char></source></hostdev>",
        ),
        "unknown element <char>",
    );
    fails(
        &devices(
            "<hostdev mode='capabilities' type='net'><source><interface>a b</interface></source></hostdev>",
        ),
        "interface name contains",
    );
    // Found by the network_xml fuzz target: the schema refused it.
    fails(
        &devices(
            "<hostdev mode='capabilities' type='net'><source><interface>l(x</interface></source></hostdev>",
        ),
        "use letters, digits and '_.@+-'",
    );
    let net = |inner: &str| {
        devices(&format!(
            "<hostdev mode='capabilities' type='net'><source><interface>eth4</interface></source>{inner}</hostdev>"
        ))
    };
    let d = ok(&net(
        "<ip address='10.1.0.5' prefix='24'/><ip address='fd00:1::5' prefix='64'/><route address='0.0.0.0' gateway='10.1.0.1'/>",
    ));
    let Hostdev::Net { ips, routes, .. } = &d.devices.hostdevs[0] else {
        panic!("not a net hostdev");
    };
    assert_eq!((ips.len(), routes.len()), (2, 1));
    assert_fixed_point(&d);
    fails(&net("<ip address='10.1.0.5' prefix='33'/>"), "out of range");
    fails(
        &net("<route address='10.0.0.0' prefix='8' gateway='fd00::1'/>"),
        "same family",
    );
    fails(
        &devices(
            "<hostdev mode='capabilities' type='misc'><source><char>/dev/x</char></source><ip address='10.0.0.1'/></hostdev>",
        ),
        "only a <hostdev type='net'> takes <ip> and <route>",
    );
    fails(
        &devices(
            "<hostdev mode='capabilities' type='net'><source><interface>eth4</interface></source></hostdev>\n<hostdev mode='capabilities' type='net'><source><interface>eth4</interface></source></hostdev>",
        ),
        "of host interface 'eth4' appears more than once",
    );
}

#[test]
fn consoles_get_ports_in_order() {
    let d = ok(&devices(
        "<console type='pty'><target type='lxc' port='0'/></console>\
         <console type='pty'><target port='1'/></console>",
    )
    .replace("    <console type='pty'/>\n", ""));
    let ports: Vec<u32> = d.devices.consoles.iter().map(|c| c.port).collect();
    assert_eq!(ports, vec![0, 1]);
    let d = ok(&devices("<console><target port='0'/></console><console/>"));
    let ports: Vec<u32> = d.devices.consoles.iter().map(|c| c.port).collect();
    assert_eq!(ports, vec![1, 0, 2]);
    fails(
        &devices(
            "<console type='pty'><target port='0'/></console><console><target port='0'/></console>",
        ),
        "port 0 appears more than once",
    );
    fails(&devices("<console type='file'/>"), "console type 'file'");
    fails(
        &devices("<console><target type='serial'/></console>"),
        "does not fit a lxc domain",
    );
    fails(
        &devices("<serial type='pty'/>"),
        "not supported in a lxc domain",
    );
}

#[test]
fn seclabels_are_checked() {
    let sec = |s: &str| root(&format!("  {s}"));
    let d = ok(&sec("<seclabel/>"));
    let s = d.seclabel.as_ref().unwrap();
    assert_eq!(s.label_type, SecLabelType::Dynamic);
    assert!(s.relabel);
    assert!(
        d.to_xml()
            .contains("<seclabel type='dynamic' relabel='yes'/>")
    );
    fails(
        &sec("<seclabel type='dynamic' relabel='no'/>"),
        "must relabel",
    );
    fails(
        &sec("<seclabel type='dynamic' model='none'/>"),
        "needs a security model",
    );
    fails(
        &sec("<seclabel type='static' model='selinux'/>"),
        "missing <label>",
    );
    let d = ok(&sec(
        "<seclabel type='static'><label>u:r:t:s0</label></seclabel>",
    ));
    assert!(!d.seclabel.as_ref().unwrap().relabel);
    fails(
        &sec("<seclabel type='none' relabel='yes'/>"),
        "cannot relabel",
    );
    fails(
        &sec("<seclabel type='none'><label>u:r:t:s0</label></seclabel>"),
        "takes no labels",
    );
    fails(&sec("<seclabel model='apparmor'/>"), "model 'apparmor'");
    fails(&sec("<seclabel type='sometimes'/>"), "type 'sometimes'");
    fails(
        &sec("<seclabel><baselabel>not a label</baselabel></seclabel>"),
        "not a security context",
    );
    fails(
        &sec(
            "<seclabel type='static'><baselabel>u:r:t</baselabel><label>u:r:t:s0</label></seclabel>",
        ),
        "dynamic labels only",
    );
    fails(&sec("<seclabel/><seclabel/>"), "more than once");
}

#[test]
fn live_labels_stay_out_of_the_persistent_definition() {
    let doc = root(
        "  <seclabel type='dynamic' model='selinux' relabel='yes'>\
         <label>system_u:system_r:svirt_lxc_net_t:s0:c1,c2</label>\
         <imagelabel>system_u:object_r:svirt_sandbox_file_t:s0:c1,c2</imagelabel>\
         </seclabel>",
    );
    let d = ok(&doc);
    let s = d.seclabel.as_ref().unwrap();
    assert_eq!(s.label, None);
    assert_eq!(
        s.live.label.as_deref(),
        Some("system_u:system_r:svirt_lxc_net_t:s0:c1,c2")
    );
    assert!(!d.to_xml().contains("<label>"));
    assert!(!d.to_xml().contains("imagelabel"));
    let live = d.to_live_xml();
    assert!(live.contains("<label>system_u:system_r:svirt_lxc_net_t:s0:c1,c2</label>"));
    assert!(live.contains("<imagelabel>"));
    assert_eq!(DomainDef::from_xml(&live).unwrap(), d);
    assert_fixed_point(&d);

    let mut d = d.persistent();
    assert!(d.seclabel.as_ref().unwrap().live.is_empty());
    d.set_live_labels(Some("a:b:c:s0:c3,c4".into()), Some("a:b:d:s0:c3,c4".into()));
    assert_eq!(DomainDef::from_xml(&d.to_live_xml()).unwrap(), d);
    d.clear_live_labels();
    assert!(!d.to_live_xml().contains("c3,c4"));
}

#[test]
fn lxc_namespace_is_checked() {
    const NS: &str = "xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'";
    let with = |inner: &str| {
        root(&format!("  <lxc:namespace>{inner}</lxc:namespace>"))
            .replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>"))
    };
    let d = ok(&with("<lxc:shareuts type='name' value='other'/>"));
    assert!(d.to_xml().starts_with(&format!("<domain type='lxc' {NS}>")));
    fails(
        &with("<lxc:shareipc type='netns' value='red'/>"),
        "applies to lxc:sharenet only",
    );
    fails(
        &with("<lxc:sharepid type='pid' value='1'/>"),
        "unknown element <lxc:sharepid>",
    );
    fails(
        &with("<lxc:sharenet type='pid' value='0'/>"),
        "not a process id",
    );
    fails(
        &with("<lxc:sharenet type='pid' value='x'/>"),
        "not a process id",
    );
    fails(
        &with("<lxc:sharenet type='name' value='a/b'/>"),
        "not a domain name",
    );
    fails(
        &with("<lxc:sharenet type='name' value='a'/><lxc:sharenet type='name' value='b'/>"),
        "more than once",
    );
    fails(
        &with("<shareuts type='name' value='a'/>"),
        "unknown element <shareuts>",
    );
    fails(
        &root(&format!("  <lxc:other {NS}/>")),
        "in namespace 'http://libvirt.org/schemas/domain/lxc/1.0'",
    );
    // No xmlns:lxc on output without <lxc:namespace>.
    let d = ok(&BASE.replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>")));
    assert!(!d.to_xml().contains("xmlns"));
}

#[test]
fn lxvirt_seccomp_is_checked() {
    const NS: &str = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
    let with = |element: &str| {
        root(&format!("  {element}"))
            .replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>"))
    };
    let d = ok(&with(
        "<lxvirt:seccomp mount='allow'><lxvirt:deny syscall='uname'/><lxvirt:deny syscall=' keyctl '/></lxvirt:seccomp>",
    ));
    let s = d.seccomp.as_ref().unwrap();
    assert_eq!(
        (s.mode, s.mount, s.deny.clone()),
        (
            SeccompMode::Default,
            SeccompMount::Allow,
            vec!["uname".to_owned(), "keyctl".to_owned()]
        )
    );
    let xml = d.to_xml();
    assert!(
        xml.starts_with(&format!("<domain type='lxc' {NS}>")),
        "{xml}"
    );
    assert!(
        xml.contains("<lxvirt:seccomp mode='default' mount='allow'>"),
        "{xml}"
    );
    assert_fixed_point(&d);
    let d = ok(&with("<lxvirt:seccomp/>"));
    assert!(d.to_xml().contains("<lxvirt:seccomp mode='default'/>"));
    assert_fixed_point(&d);
    let d = ok(&with("<lxvirt:seccomp mode='off'/>"));
    assert_eq!(d.seccomp.as_ref().unwrap().mode, SeccompMode::Off);

    let e = fails(
        &with(
            "<lxvirt:seccomp><lxvirt:deny syscall='uname'/><lxvirt:deny syscall='frob'/><lxvirt:deny syscall='SYS_read'/></lxvirt:seccomp>",
        ),
        "unknown syscall 'frob', 'SYS_read' on",
    );
    assert!(e.to_string().contains("<lxvirt:seccomp>"), "{e}");
    fails(
        &with(
            "<lxvirt:seccomp><lxvirt:deny syscall='uname'/><lxvirt:deny syscall='uname'/></lxvirt:seccomp>",
        ),
        "more than once",
    );
    fails(
        &with("<lxvirt:seccomp mode='off'><lxvirt:deny syscall='uname'/></lxvirt:seccomp>"),
        "mode='off' turns the filter off",
    );
    fails(
        &with("<lxvirt:seccomp mode='strict'/>"),
        "mode 'strict' is not known",
    );
    fails(
        &with("<lxvirt:seccomp><lxvirt:deny/></lxvirt:seccomp>"),
        "missing",
    );
    fails(
        &with("<lxvirt:seccomp><lxvirt:allow syscall='uname'/></lxvirt:seccomp>"),
        "unknown element <lxvirt:allow>",
    );
    fails(
        &with("<lxvirt:seccomp/><lxvirt:seccomp/>"),
        "more than once",
    );
    fails(
        &with("<lxvirt:other/>"),
        "in namespace 'https://lxvirt.org/schemas/domain/1'",
    );
    let many: String = (0..=MAX_SECCOMP_DENY)
        .map(|i| format!("<lxvirt:deny syscall='x{i}'/>"))
        .collect();
    fails(
        &with(&format!("<lxvirt:seccomp>{many}</lxvirt:seccomp>")),
        "more than 512",
    );
    // Containers only.
    let kvm = format!(
        "<domain type='kvm' {NS}><name>v</name><memory>1024</memory><os><type>hvm</type></os><lxvirt:seccomp/></domain>"
    );
    fails(&kvm, "lxc");
    // No xmlns:lxvirt on output without the element.
    let d = ok(&BASE.replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>")));
    assert!(!d.to_xml().contains("xmlns"));
}

#[test]
fn unknown_and_foreign_content_is_refused() {
    let e = fails(&root("  <bootloader/>"), "unknown element <bootloader>");
    assert!(matches!(e, DomainError::UnknownElement { .. }));
    assert_eq!(e.pos().unwrap().line, 11);
    let e = fails(
        &BASE.replace("<name>", "<name lang='en'>"),
        "unknown attribute 'lang'",
    );
    assert!(matches!(e, DomainError::UnknownAttribute { .. }));
    fails(
        &BASE
            .replace("<domain type='lxc'>", "<domain type='lxc' xmlns:x='urn:x'>")
            .replace("</domain>", "<x:extra/></domain>"),
        "elements of other namespaces belong inside <metadata>",
    );
    fails(
        &BASE.replace(
            "<domain type='lxc'>",
            "<domain type='lxc' xmlns:x='urn:x' x:a='1'>",
        ),
        "unknown attribute 'x:a'",
    );
    fails(&root("  stray text"), "unexpected text 'stray text'");
    fails(
        &BASE.replace("<name>t</name>", "<name>t<b/></name>"),
        "unknown element <b>",
    );
    fails(
        &root("  <title>a</title><title>b</title>"),
        "more than once",
    );
    fails(&root("  <title>two\nlines</title>"), "more than one line");
    fails(
        &root("  <description>bell &#7;</description>"),
        "control character",
    );
}

/// Element texts read as keywords lose white space at their ends as the
/// schema's tokens do, ASCII only: a vertical tab or a no-break space is
/// part of the value, which the parser and the schema then both refuse
/// (the parser trimmed Unicode white space and read `exe<no-break
/// space>` as `exe`).
#[test]
fn keyword_texts_keep_non_ascii_white_space() {
    use crate::{DocumentKind, schema::validate_str};
    let both_refuse = |doc: &str, needle: &str| {
        fails(doc, needle);
        assert!(validate_str(DocumentKind::Domain, doc).is_err(), "{doc}");
    };
    both_refuse(
        &BASE.replace("<type>exe</type>", "<type>exe\u{a0}</type>"),
        "'exe\u{a0}'",
    );
    both_refuse(
        &BASE.replace("<type>exe</type>", "<type>\u{b}exe</type>"),
        "'\u{b}exe'",
    );
    both_refuse(&root("<on_crash>destroy\u{b}</on_crash>"), "on_crash");
    let d = ok(&root("<on_crash>\n  restart\t</on_crash>"));
    assert_eq!(d.on_crash, LifecycleAction::Restart);
    assert!(
        validate_str(
            DocumentKind::Domain,
            &root("<on_crash>\n  restart\t</on_crash>")
        )
        .is_ok()
    );
}

#[test]
fn metadata_is_kept_verbatim_and_must_stand_alone() {
    let content = "<a:x xmlns:a='urn:a' a:k=\"v\">1 &amp; 2<!-- c --></a:x>";
    let d = ok(&root(&format!("  <metadata>{content}</metadata>")));
    assert_eq!(d.metadata.as_ref().unwrap().as_str(), content);
    assert!(
        d.to_xml()
            .contains(&format!("<metadata>{content}</metadata>"))
    );
    assert_fixed_point(&d);
    // After a byte order mark too (the domain_xml fuzzer's find).
    let with_bom = ok(&format!(
        "\u{feff}{}",
        root(&format!("  <metadata>{content}</metadata>"))
    ));
    assert_eq!(with_bom.metadata, d.metadata);
    assert_fixed_point(&with_bom);
    assert_eq!(ok(&root("  <metadata>  </metadata>")).metadata, None);
    fails(
        &root("  <metadata><plain/></metadata>"),
        "is in no namespace",
    );
    fails(&root("  <metadata>text</metadata>"), "unexpected text");
    fails(
        &BASE
            .replace("<domain type='lxc'>", "<domain type='lxc' xmlns:a='urn:a'>")
            .replace("</domain>", "<metadata><a:x/></metadata></domain>"),
        "prefix 'a' is declared outside <metadata>",
    );
}

// ---- kvm ----

const KVM: &str = "<domain type='kvm'>
  <name>vm</name>
  <memory unit='GiB'>1</memory>
  <os>
    <type>hvm</type>
  </os>
</domain>
";

#[test]
fn kvm_domains_are_stored_and_checked() {
    let d = ok(KVM);
    assert_eq!(d.domain_type, DomainType::Kvm);
    assert_eq!(d.domain_type.as_str(), "kvm");
    assert!(d.exe_os().is_none());
    assert_fixed_point(&d);
    assert_eq!(
        ok(&KVM.replace("'kvm'", "'qemu'")).domain_type,
        DomainType::Qemu
    );
    let kroot = |extra: &str| KVM.replace("</domain>", &format!("{extra}\n</domain>"));
    let kdev = |extra: &str| kroot(&format!("<devices>{extra}</devices>"));
    fails(&KVM.replace("hvm", "exe"), "cannot run OS type 'exe'");
    fails(
        &KVM.replace(
            "<type>hvm</type>",
            "<type>hvm</type><init>/sbin/init</init>",
        ),
        "applies to lxc domains only",
    );
    fails(
        &KVM.replace("<type>hvm</type>", "<type>hvm</type><boot dev='floppy'/>"),
        "boot device 'floppy'",
    );
    fails(
        &KVM.replace(
            "<type>hvm</type>",
            "<type>hvm</type><boot dev='hd'/><boot dev='hd'/>",
        ),
        "more than once",
    );
    // A VM's <idmap> is kept (libvirt's test documents carry one), by
    // its own vocabulary.
    fails(&kroot("<idmap><uidd/></idmap>"), "uidd");
    // A VM's <cputune> is kept (see vm_tests.rs), by its own vocabulary.
    fails(&kroot("<cputune><weight/></cputune>"), "weight");
    fails(
        &kroot("<features><privnet/></features>"),
        "not supported in a kvm domain",
    );
    // A VM's <filesystem> and <hostdev> are kept, not typed.
    fails(&kdev("<filesystem><dir/></filesystem>"), "dir");
    fails(
        &kdev("<hostdev mode='capabilities'/>"),
        "mode 'capabilities'",
    );
    fails(
        &kdev("<console><target type='lxc'/></console>"),
        "does not fit a kvm domain",
    );
    fails(
        &kdev("<disk type='file'><target dev='vda'/></disk>"),
        "missing <source>",
    );
    fails(
        &kdev("<disk type='tape'><target dev='vda'/></disk>"),
        "disk type 'tape'",
    );
    fails(
        &kdev("<interface type='network'><source network='n'/><guest dev='e'/></interface>"),
        "not supported in a kvm domain",
    );
    fails(
        &kdev(
            "<disk type='file'><driver name='qemu' type='vhd'/><source file='/i'/><target dev='vda'/></disk>",
        ),
        "type 'vhd'",
    );
    fails(
        &kroot("<lxc:namespace xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'/>"),
        "not supported in a kvm domain",
    );
    let d = ok(&kdev(
        "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>\
         <serial/><console><target type='virtio'/></console>",
    ));
    assert_eq!(d.devices.disks[0].source, DiskSource::File(None));
    assert_eq!(
        d.devices.serials,
        vec![Serial {
            chardev_type: ChardevType::Pty,
            kept: Vec::new(),
            port: 0,
            target_type: None,
            model: None,
            address: None,
            alias: None,
        }]
    );
    assert_fixed_point(&d);
}

// ---- hostile input ----

#[test]
fn hostile_input_is_refused_without_panicking() {
    let cases: Vec<Vec<u8>> = vec![
        b"<!DOCTYPE domain [<!ENTITY x 'y'>]><domain type='lxc'/>".to_vec(),
        b"<domain type='lxc'><name>&x;</name></domain>".to_vec(),
        b"<domain type='lxc'><name>\xff</name></domain>".to_vec(),
        format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000)).into_bytes(),
        root(&format!(
            "<metadata><m:x xmlns:m='u'>{}</m:x></metadata>",
            "<m:y>".repeat(100)
        ))
        .into_bytes(),
        format!(
            "<domain type='lxc'>{}</domain>",
            "x".repeat(MAX_DOCUMENT_BYTES)
        )
        .into_bytes(),
        Vec::new(),
        b"\0\0\0".to_vec(),
        b"<domain".to_vec(),
        b"<?xml version='1.0' encoding='UTF-16'?><domain/>".to_vec(),
    ];
    for c in &cases {
        assert!(DomainDef::from_bytes(c).is_err());
    }
    assert!(matches!(
        DomainDef::from_bytes(&cases[0]),
        Err(DomainError::Xml(XmlError::Doctype { .. }))
    ));
    assert!(matches!(
        DomainDef::from_bytes(&cases[2]),
        Err(DomainError::Xml(XmlError::InvalidUtf8 { .. }))
    ));
    // 10 MB of attributes: refused by size before any parsing.
    let mut attrs = String::from("<domain type='lxc'");
    let mut i = 0;
    while attrs.len() < 10_000_000 {
        attrs.push_str(&format!(" a{i}='{i}'"));
        i += 1;
    }
    attrs.push_str("/>");
    assert!(matches!(
        DomainDef::from_xml(&attrs),
        Err(DomainError::Xml(XmlError::TooLarge { .. }))
    ));
    // Many attributes on one element (under the raw layer's cap): refused as unknown.
    let mut attrs = String::from("<domain type='lxc'><name");
    for i in 0..200 {
        attrs.push_str(&format!(" a{i}='{i}'"));
    }
    attrs.push_str(">x</name></domain>");
    assert!(matches!(
        DomainDef::from_xml(&attrs),
        Err(DomainError::UnknownAttribute { .. })
    ));
}

/// A start tag flooded with attributes up to the size limit is refused
/// at the attribute cap instead of being worked through.
#[test]
fn attribute_flood_near_the_size_limit_is_refused() {
    let mut attrs = String::from("<domain type='lxc'><name");
    let mut i = 0;
    while attrs.len() < MAX_DOCUMENT_BYTES - 100 {
        attrs.push_str(&format!(" a{i}='{i}'"));
        i += 1;
    }
    attrs.push_str(">x</name></domain>");
    let err = DomainDef::from_xml(&attrs).unwrap_err();
    assert!(
        matches!(err, DomainError::Xml(XmlError::TooManyAttributes { .. })),
        "{err}"
    );
}

#[test]
fn every_truncation_of_a_valid_document_is_handled() {
    let text = std::fs::read_to_string(examples_dir().join("lxc-everything.xml")).unwrap();
    for end in (0..text.len()).step_by(7) {
        if let Some(prefix) = text.get(..end) {
            let _ = DomainDef::from_xml(prefix);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_definitions_round_trip(def in arb_domain_def()) {
        check_round_trip(&def)?;
    }

    #[test]
    fn generated_interfaces_round_trip_alone(def in arb_domain_def()) {
        for iface in &def.devices.interfaces {
            let back = DeviceDef::from_xml(def.domain_type, &iface.to_xml());
            prop_assert_eq!(back.ok(), Some(DeviceDef::Interface(iface.clone())));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = DomainDef::from_xml(&s);
        let _ = DomainDef::from_xml(&format!("<domain type='lxc'>{s}</domain>"));
    }

    #[test]
    fn mutated_documents_never_panic(
        def in arb_domain_def(),
        at in any::<prop::sample::Index>(),
        insert in "[<>&'\"/=a-z ]{0,3}",
    ) {
        parse_mutated::<DomainDef>(&def.to_xml(), at, &insert);
    }
}

#[test]
fn many_repeated_elements_are_handled_in_linear_time() {
    // One element a line: the raw layer's column computation is linear in
    // the line length, so single-line documents are slower there.
    let n = 12_000;
    let many = |item: &dyn Fn(usize) -> String| (0..n).map(|i| item(i) + "\n").collect::<String>();
    let docs = [
        devices(&many(&|_| "<console/>".to_owned())),
        devices(&many(&|i| {
            format!("<filesystem><source dir='/a'/><target dir='/t{i}'/></filesystem>")
        })),
        devices(&many(&|i| {
            format!("<disk type='block'><source dev='/d'/><target dev='vd{i}'/></disk>")
        })),
        os(&many(&|i| format!("<initenv name='E{i}'>v</initenv>"))),
        root(&format!(
            "<blkiotune>{}</blkiotune>",
            many(&|i| format!("<device><path>/dev/d{i}</path></device>"))
        )),
    ];
    for doc in docs {
        assert!(doc.len() < MAX_DOCUMENT_BYTES);
        let start = std::time::Instant::now();
        let d = DomainDef::from_xml(&doc);
        assert!(d.is_ok() || matches!(d, Err(DomainError::Invalid { .. })));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(3),
            "took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn lxvirt_userns_is_checked() {
    const NS: &str = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
    let with = |element: &str| {
        root(&format!("  {element}"))
            .replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>"))
    };
    let d = ok(&with("<lxvirt:userns mode='host'/>"));
    assert_eq!(
        d.userns,
        Some(Userns {
            mode: UsernsMode::Host,
            allocated: None
        })
    );
    assert!(d.to_xml().contains("<lxvirt:userns mode='host'/>"));
    assert_fixed_point(&d);

    // A live definition shows the block; the persistent one drops it.
    let d = ok(&with(
        "<lxvirt:userns mode='auto' target='1065536' count='65536'/>",
    ));
    assert_eq!(d.userns.unwrap().allocated, Some((1_065_536, 65536)));
    let live = d.to_live_xml();
    assert!(
        live.contains("<lxvirt:userns mode='auto' target='1065536' count='65536'/>"),
        "{live}"
    );
    assert_eq!(ok(&live), d, "the live XML round-trips");
    assert!(d.to_xml().contains("<lxvirt:userns mode='auto'/>"));
    assert_eq!(d.persistent().userns.unwrap().allocated, None);

    fails(&with("<lxvirt:userns/>"), "add mode='auto'");
    fails(
        &with("<lxvirt:userns mode='root'/>"),
        "mode 'root' is not known",
    );
    fails(
        &with("<lxvirt:userns mode='host' target='1' count='65536'/>"),
        "give both with mode='auto'",
    );
    fails(
        &with("<lxvirt:userns mode='auto' target='1'/>"),
        "give both with mode='auto'",
    );
    fails(
        &with("<lxvirt:userns mode='auto' target='x' count='65536'/>"),
        "not a whole number",
    );
    fails(
        &with("<lxvirt:userns mode='auto'/><lxvirt:userns mode='host'/>"),
        "more than once",
    );
    let e = fails(
        &with(
            "<lxvirt:userns mode='auto'/><idmap><uid start='0' target='100000' count='65536'/><gid start='0' target='100000' count='65536'/></idmap>",
        ),
        "both say how the container's ids map",
    );
    assert!(e.to_string().contains("remove one"), "{e}");
}

#[test]
fn lxvirt_pids_is_bounded_by_the_kernel() {
    const NS: &str = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
    let with = |element: &str| {
        root(&format!("  {element}"))
            .replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>"))
    };
    assert_eq!(
        ok(&with("<lxvirt:pids max='4194304'/>")).pids_max,
        Some(MAX_PIDS)
    );
    let e = fails(&with("<lxvirt:pids max='4194305'/>"), "max");
    assert!(e.to_string().contains("4194304"), "{e}");
    fails(&with("<lxvirt:pids max='0'/>"), "max");
}

#[test]
fn lxvirt_api_access_is_checked() {
    const NS: &str = "xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'";
    let with = |element: &str| {
        root(&format!("  {element}"))
            .replace("<domain type='lxc'>", &format!("<domain type='lxc' {NS}>"))
    };
    assert_eq!(ok(&root("")).api_access, None);
    for access in ApiAccess::ALL {
        let element = format!("<lxvirt:api access='{access}'/>");
        let d = ok(&with(&element));
        assert_eq!(d.api_access, Some(*access));
        assert!(d.to_xml().contains(&element), "{}", d.to_xml());
        assert_fixed_point(&d);
    }
    fails(&with("<lxvirt:api/>"), "add access='read'");
    fails(
        &with("<lxvirt:api access='all'/>"),
        "access 'all' is not known",
    );
    fails(&with("<lxvirt:api access='read' extra='1'/>"), "extra");
    fails(
        &with("<lxvirt:api access='read'/><lxvirt:api access='manage'/>"),
        "more than once",
    );
}

/// Every interface of the examples, formatted alone, reads back as itself.
#[test]
fn an_interface_alone_round_trips() {
    let mut seen = 0;
    for path in xml_files(&examples_dir()) {
        if is_network_example(&path) {
            continue;
        }
        let def = DomainDef::from_xml(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for iface in &def.devices.interfaces {
            let xml = iface.to_xml();
            let back = DeviceDef::from_xml(def.domain_type, &xml)
                .unwrap_or_else(|e| panic!("{}: {xml}: {e}", path.display()));
            assert_eq!(back, DeviceDef::Interface(iface.clone()), "{xml}");
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} interfaces in the examples");
}

#[test]
fn devices_parse_one_by_one_and_other_elements_are_refused() {
    let device = DeviceDef::from_xml(
        DomainType::Lxc,
        "<interface type='network'><source network='default'/><mac address='52:54:00:01:02:03'/></interface>",
    )
    .unwrap();
    let DeviceDef::Interface(iface) = device else {
        panic!("{device:?}")
    };
    assert_eq!(iface.mac.unwrap().to_string(), "52:54:00:01:02:03");
    let disk = DeviceDef::from_xml(
        DomainType::Lxc,
        "<disk type='block' device='disk'><source dev='/dev/loop7'/><target dev='sdz'/><readonly/></disk>",
    )
    .unwrap();
    assert!(
        matches!(&disk, DeviceDef::Disk(d) if d.target_dev == "sdz" && d.readonly),
        "{disk:?}"
    );
    let fs = DeviceDef::from_xml(
        DomainType::Lxc,
        "<filesystem type='mount'><source dir='/srv'/><target dir='/mnt/srv'/></filesystem>",
    )
    .unwrap();
    assert_eq!(fs.element(), "filesystem");
    let hostdev = DeviceDef::from_xml(
        DomainType::Lxc,
        "<hostdev mode='capabilities' type='misc'><source><char>/dev/net/tun</char></source></hostdev>",
    )
    .unwrap();
    assert!(matches!(hostdev, DeviceDef::Hostdev(Hostdev::Misc { .. })));

    let root = DeviceDef::from_xml(
        DomainType::Lxc,
        "<filesystem type='mount'><source dir='/srv'/><target dir='/'/></filesystem>",
    )
    .unwrap_err();
    assert!(root.to_string().contains("root filesystem"), "{root}");
    let vm_fs = DeviceDef::from_xml(
        DomainType::Kvm,
        "<filesystem type='mount'><source dir='/srv'/><target dir='/mnt'/></filesystem>",
    )
    .unwrap_err();
    assert!(vm_fs.to_string().contains("lxc"), "{vm_fs}");
    let refused = DeviceDef::from_xml(DomainType::Lxc, "<console type='pty'/>").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("<interface>, <disk>, <filesystem> or <hostdev>"),
        "{refused}"
    );
    let bad = DeviceDef::from_xml(DomainType::Lxc, "<interface type='bogus'/>").unwrap_err();
    assert!(bad.to_string().contains("bogus"), "{bad}");
}
