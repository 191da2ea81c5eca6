//! Tests of the network document: semantic checks with their messages,
//! defaults, hostile input and the round-trip property.

use std::net::IpAddr;

use proptest::prelude::*;

use super::arb::arb_network_def;
use super::network::*;
use super::test_support::{
    self, assert_fixed_point, check_round_trip, examples_dir, is_network_example, parse_mutated,
    xml_files,
};
use super::{Document, DocumentKind, DomainError, MacAddr};

const BASE: &str = "<network>
  <name>n</name>
  <bridge name='lxvirtbr1'/>
  <ip address='10.213.0.1' prefix='24'/>
</network>
";

/// BASE with `extra` added at the end of the root element.
fn root(extra: &str) -> String {
    BASE.replace("</network>", &format!("{extra}\n</network>"))
}

/// A network whose only `<ip>` is `ip_attrs` with `inner` inside.
fn ip(ip_attrs: &str, inner: &str) -> String {
    format!("<network>\n  <name>n</name>\n  <ip {ip_attrs}>\n{inner}\n  </ip>\n</network>\n")
}

/// The default IPv4 `<ip>` with `inner` inside `<dhcp>`.
fn dhcp(inner: &str) -> String {
    ip(
        "address='10.213.0.1' prefix='24'",
        &format!("<dhcp>{inner}</dhcp>"),
    )
}

fn ok(doc: &str) -> NetworkDef {
    test_support::ok(doc)
}

fn fails(doc: &str, needle: &str) -> DomainError {
    test_support::fails::<NetworkDef>(doc, needle)
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_network_example_parses_and_is_a_fixed_point() {
    let files: Vec<_> = xml_files(&examples_dir())
        .into_iter()
        .filter(|p| is_network_example(p))
        .collect();
    assert!(files.len() >= 4, "network examples missing: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let def = NetworkDef::from_xml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_fixed_point(&def);
        let again = NetworkDef::from_bytes(text.as_bytes()).unwrap();
        assert_eq!(
            NetworkDef {
                uuid: def.uuid,
                ..again
            },
            def,
            "the same but for a generated UUID"
        );
    }
}

#[test]
fn default_example_is_understood() {
    let text = std::fs::read_to_string(examples_dir().join("network-default.xml")).unwrap();
    let n = ok(&text);
    assert_eq!(n.name(), "default");
    assert_eq!(n.forward_mode(), Some(ForwardMode::Nat));
    assert_eq!(n.bridge.name.as_deref(), Some("lxvirtbr0"));
    assert_eq!(n.ips[0].subnet().to_string(), "10.213.0.0/24");
    let dhcp = n.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(dhcp.hosts.len(), 2);
    assert_eq!(n.dns.hosts[0].hostnames, ["web", "www"]);
}

#[test]
fn documents_are_told_apart_by_their_root() {
    let network = Document::from_xml(BASE).unwrap();
    assert_eq!(network.kind(), DocumentKind::Network);
    let Document::Network(n) = &network else {
        panic!("not a network: {network:?}");
    };
    assert_eq!(network.to_xml(), n.to_xml());
    let domain = Document::from_xml(
        "<domain type='lxc'><name>d</name><memory>1024</memory><os><type>exe</type><init>/sbin/init</init></os></domain>",
    )
    .unwrap();
    assert_eq!(domain.kind(), DocumentKind::Domain);
    let err = Document::from_xml("<container/>").unwrap_err();
    assert!(
        err.to_string()
            .contains("lxvirt reads <domain> and <network> documents"),
        "{err}"
    );
    // A namespaced root is no lxvirt document either.
    assert!(Document::from_xml("<x:network xmlns:x='urn:x'/>").is_err());
}

#[test]
fn minimal_network_gets_defaults() {
    let n = ok("<network><name>iso</name></network>");
    assert_eq!(n.name(), "iso");
    assert!(n.forward.is_none(), "no <forward> is an isolated network");
    assert_eq!(n.bridge, Bridge::default());
    assert!(n.bridge.stp);
    assert!(n.dns.enable);
    assert!(!n.uuid.is_nil());
    let xml = n.to_xml();
    assert!(xml.contains("<bridge stp='on' delay='0'/>"), "{xml}");
    assert!(!xml.contains("<dns"), "{xml}");
    assert_fixed_point(&n);
    // A UUID is generated once: kept by the round trip, new on each parse.
    assert_ne!(ok("<network><name>iso</name></network>").uuid, n.uuid);
}

#[test]
fn a_full_network_is_understood_and_formatted_canonically() {
    let doc = "<network>
  <ip address='10.213.0.1' netmask='255.255.255.0'>
    <dhcp>
      <host mac='52:54:00:00:00:0A' name='web' ip='10.213.0.10'/>
      <range start='10.213.0.100' end='10.213.0.199'/>
    </dhcp>
  </ip>
  <dns>
    <host ip='10.213.0.10'><hostname>web</hostname><hostname>www</hostname></host>
    <forwarder addr='192.0.2.53' domain='example.org'/>
  </dns>
  <domain name='lxvirt.test' localOnly='yes'/>
  <mtu size='9000'/>
  <mac address='52:54:00:aa:00:01'/>
  <bridge name='lxvirtbr0' stp='off' delay='2'/>
  <forward dev='eth0'>
    <interface dev='eth0'/>
    <nat>
      <port start='1024' end='65535'/>
      <address start='203.0.113.10' end='203.0.113.20'/>
    </nat>
  </forward>
  <uuid>6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11</uuid>
  <name>default</name>
</network>";
    let n = ok(doc);
    let f = n.forward.as_ref().unwrap();
    assert_eq!(f.mode, ForwardMode::Nat, "nat is the default mode");
    assert_eq!(f.dev.as_deref(), Some("eth0"));
    assert_eq!(
        f.nat.ports,
        Some(PortRange {
            start: 1024,
            end: 65535
        })
    );
    assert_eq!(n.bridge.delay, 2);
    assert!(!n.bridge.stp);
    assert_eq!(n.mtu, Some(9000));
    assert!(n.domain.as_ref().unwrap().local_only);
    assert_eq!(n.ips[0].prefix, 24);
    let d = n.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(
        d.hosts[0].mac,
        Some(MacAddr::parse("52:54:00:00:00:0a").unwrap())
    );
    assert_eq!(d.ranges[0].end, addr("10.213.0.199"));
    assert_eq!(n.dns.hosts[0].hostnames, ["web", "www"]);
    assert_eq!(
        n.to_xml(),
        "<network>
  <name>default</name>
  <uuid>6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11</uuid>
  <forward mode='nat' dev='eth0'>
    <nat>
      <address start='203.0.113.10' end='203.0.113.20'/>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='lxvirtbr0' stp='off' delay='2'/>
  <mac address='52:54:00:aa:00:01'/>
  <mtu size='9000'/>
  <domain name='lxvirt.test' localOnly='yes'/>
  <dns>
    <forwarder addr='192.0.2.53' domain='example.org'/>
    <host ip='10.213.0.10'>
      <hostname>web</hostname>
      <hostname>www</hostname>
    </host>
  </dns>
  <ip family='ipv4' address='10.213.0.1' prefix='24'>
    <dhcp>
      <range start='10.213.0.100' end='10.213.0.199'/>
      <host mac='52:54:00:00:00:0a' name='web' ip='10.213.0.10'/>
    </dhcp>
  </ip>
</network>
"
    );
    assert_fixed_point(&n);
}

#[test]
fn root_name_and_uuid_are_checked() {
    fails(
        "<domain type='lxc'/>",
        "a network document starts with <network>",
    );
    fails(
        "<network ipv6='yes'><name>n</name></network>",
        "unknown attribute 'ipv6'",
    );
    fails("<network/>", "missing <name>; add <name>default</name>");
    let e = fails(
        "<network>\n<name>.x</name></network>",
        "'.x' is not a valid network name",
    );
    assert_eq!(e.pos().map(|p| p.line), Some(2));
    fails(&root("<uuid>nope</uuid>"), "'nope' is not a UUID");
    fails(
        &root("<uuid>00000000-0000-0000-0000-000000000000</uuid>"),
        "the nil UUID is not a network UUID",
    );
    fails(
        &root("<portgroup name='x'/>"),
        "unknown element <portgroup>",
    );
    fails(&root("<name>m</name>"), "<name> appears more than once");
}

#[test]
fn forward_is_checked() {
    for mode in ["nat", "route", "open"] {
        let n = ok(&root(&format!("<forward mode='{mode}'/>")));
        assert_eq!(n.forward_mode().unwrap().as_str(), mode);
    }
    fails(
        &root("<forward mode='bridge'/>"),
        "forward mode 'bridge' is not a network mode in lxvirt",
    );
    fails(
        &root("<forward mode='teleport'/>"),
        "use one of 'nat', 'route', 'open'",
    );
    fails(&root("<forward dev='a/b'/>"), "dev 'a/b'");
    fails(
        &root("<forward mode='route' dev='eth0'><interface dev='eth1'/></forward>"),
        "dev 'eth1' is not the forward dev 'eth0'",
    );
    fails(
        &root("<forward mode='route'><interface dev='eth0'/><interface dev='eth1'/></forward>"),
        "a second <interface>",
    );
    let n = ok(&root(
        "<forward mode='route'><interface dev='eth1'/></forward>",
    ));
    assert_eq!(n.forward.unwrap().dev.as_deref(), Some("eth1"));
    fails(
        &root("<forward mode='open' dev='eth0'/>"),
        "forward mode 'open' adds no rules",
    );
    fails(
        &root("<forward mode='route'><nat/></forward>"),
        "<nat> has no effect in forward mode 'route'",
    );
    // NAT ranges
    let nat = |inner: &str| root(&format!("<forward mode='nat'><nat>{inner}</nat></forward>"));
    assert!(ok(&nat("")).forward.unwrap().nat.is_empty());
    fails(
        &nat("<port start='0' end='10'/>"),
        "start 0 is out of range",
    );
    fails(
        &nat("<port start='100' end='10'/>"),
        "end 10 comes before start 100",
    );
    fails(&nat("<port start='100'/>"), "missing attribute 'end'");
    fails(&nat("<port start='1' end='65536'/>"), "out of range");
    fails(
        &nat("<address start='10.0.0.9' end='10.0.0.1'/>"),
        "end 10.0.0.1 comes before start 10.0.0.9",
    );
    fails(
        &nat("<address start='fd00::1' end='fd00::2'/>"),
        "masquerading uses IPv4 addresses",
    );
    fails(
        &nat(
            "<address start='10.0.0.1' end='10.0.0.2'/><address start='10.0.0.3' end='10.0.0.4'/>",
        ),
        "<address> appears more than once",
    );
}

#[test]
fn bridge_mac_mtu_and_domain_are_checked() {
    let bridge = |attrs: &str| format!("<network><name>n</name><bridge {attrs}/></network>");
    fails(
        &bridge("name='averyveryverylongname'"),
        "longer than 15 bytes",
    );
    fails(&bridge("stp='yes'"), "use one of 'on', 'off'");
    fails(&bridge("delay='31'"), "delay 31 is out of range");
    fails(
        &bridge("macTableManager='libvirt'"),
        "unknown attribute 'macTableManager'",
    );
    assert_eq!(ok(&bridge("delay='30'")).bridge.delay, 30);
    fails(&root("<mac address='01:00:5e:00:00:01'/>"), "multicast");
    fails(&root("<mtu size='67'/>"), "MTU 67 is out of range");
    fails(&root("<domain name='-bad.example'/>"), "is not a DNS name");
    fails(&root("<domain/>"), "missing attribute 'name'");
    fails(
        &root("<domain name='a.b' localOnly='maybe'/>"),
        "use one of 'yes', 'no'",
    );
    // Keywords lose white space as the schema's tokens do: ASCII only
    // (fuzz/regressions/network_xml: a vertical tab after 'yes').
    assert!(
        ok(&root("<domain name='a.b' localOnly=' yes\t'/>"))
            .domain
            .unwrap()
            .local_only
    );
    fails(
        &root("<domain name='a.b' localOnly='yes\u{b}'/>"),
        "localOnly 'yes\\u{b}' is not known",
    );
}

#[test]
fn dns_is_checked() {
    let dns = |inner: &str| root(&format!("<dns>{inner}</dns>"));
    let off = ok(&root("<dns enable='no'/>"));
    assert!(!off.dns.enable);
    assert!(off.to_xml().contains("<dns enable='no'/>"));
    // An enabled, empty <dns> is the default and is not written.
    assert!(ok(&dns("")).dns.is_default());
    fails(
        &root("<dns enable='no'><forwarder addr='192.0.2.53'/></dns>"),
        "DNS is disabled (enable='no'), so <forwarder> has no effect",
    );
    fails(&dns("<forwarder/>"), "missing attribute 'addr' or 'domain'");
    fails(
        &dns("<forwarder addr='nope'/>"),
        "addr 'nope' is not an IP address",
    );
    fails(&dns("<forwarder domain='a..b'/>"), "is not a DNS name");
    fails(
        &dns("<forwarder addr='192.0.2.53'/><forwarder addr='192.0.2.53'/>"),
        "this <forwarder> appears more than once",
    );
    fails(&dns("<host ip='10.213.0.5'/>"), "missing <hostname>");
    fails(
        &dns("<host><hostname>a</hostname></host>"),
        "missing attribute 'ip'",
    );
    fails(
        &dns("<host ip='10.213.0.5'><hostname>a b</hostname></host>"),
        "host name 'a b' is not a DNS name",
    );
    fails(
        &dns("<host ip='10.213.0.5'><hostname>a</hostname><hostname>a</hostname></host>"),
        "<hostname>a</hostname> appears more than once",
    );
    fails(
        &dns(
            "<host ip='10.213.0.5'><hostname>a</hostname></host><host ip='10.213.0.5'><hostname>b</hostname></host>",
        ),
        "another <host> already has ip 10.213.0.5",
    );
    fails(&dns("<txt name='x' value='y'/>"), "unknown element <txt>");
}

#[test]
fn ip_addresses_and_subnets_are_checked() {
    let one = |attrs: &str| format!("<network><name>n</name><ip {attrs}/></network>");
    assert_eq!(
        ok(&one("address='10.213.0.1' netmask='255.255.240.0'")).ips[0].prefix,
        20
    );
    assert_eq!(
        ok(&one("address='fd00::1' prefix='64' family='ipv6'")).ips[0].prefix,
        64
    );
    fails(
        &one("address='10.213.0.1'"),
        "missing attribute 'prefix' (or 'netmask'); add prefix='24'",
    );
    fails(&one("address='fd00::1'"), "add prefix='64'");
    fails(
        &one("address='10.213.0.1' prefix='24' netmask='255.255.255.0'"),
        "both prefix= and netmask=",
    );
    fails(
        &one("address='10.213.0.1' netmask='255.0.255.0'"),
        "not a run of ones followed by zeros",
    );
    fails(
        &one("address='10.213.0.1' netmask='0.0.0.0'"),
        "not a run of ones",
    );
    fails(
        &one("address='fd00::1' netmask='255.255.255.0'"),
        "netmask= is for IPv4 addresses",
    );
    fails(
        &one("address='10.213.0.1' prefix='0'"),
        "prefix 0 is out of range",
    );
    fails(&one("address='10.213.0.1' prefix='33'"), "out of range");
    fails(&one("address='fd00::1' prefix='129'"), "out of range");
    fails(
        &one("address='10.213.0.1' prefix='24' family='ipv6'"),
        "does not match",
    );
    fails(
        &one("address='10.213.0.0' prefix='24'"),
        "10.213.0.0 is the network or broadcast address of 10.213.0.0/24; give the bridge a host address of the subnet, such as 10.213.0.1",
    );
    fails(&one("address='10.213.0.255' prefix='24'"), "broadcast");
    // A /31 and a /32 have no network or broadcast address.
    ok(&one("address='10.213.0.0' prefix='31'"));
    ok(&one("address='10.213.0.7' prefix='32'"));
    let e = fails(
        "<network><name>n</name>\n<ip address='10.213.0.1' prefix='24'/>\n<ip address='10.213.0.129' prefix='25'/></network>",
        "subnet 10.213.0.128/25 overlaps 10.213.0.0/24 of another <ip>",
    );
    assert_eq!(e.pos().map(|p| p.line), Some(3));
    let n = ok(
        "<network><name>n</name><ip address='10.213.0.1' prefix='24'/><ip address='10.214.0.1' prefix='24'/>\
         <ip address='fd00:213::1' prefix='64'/></network>",
    );
    assert_eq!(n.ips.len(), 3);
    assert_eq!(n.ips[2].subnet().to_string(), "fd00:213::/64");
}

#[test]
fn dhcp_is_checked() {
    let d = ok(&dhcp(
        "<range start='10.213.0.2' end='10.213.0.99'/><range start='10.213.0.100' end='10.213.0.254'/>\
         <host name='db' ip='10.213.0.20'/>",
    ));
    let dh = d.ips[0].dhcp.as_ref().unwrap();
    assert_eq!(dh.ranges.len(), 2);
    assert_eq!(dh.hosts[0].mac, None);
    // An empty <dhcp> serves nothing and is dropped.
    assert!(ok(&dhcp("")).ips[0].dhcp.is_none());

    let range = |s: &str, e: &str| dhcp(&format!("<range start='{s}' end='{e}'/>"));
    fails(
        &range("10.213.1.2", "10.213.1.9"),
        "start 10.213.1.2 is outside the subnet 10.213.0.0/24",
    );
    fails(
        &range("10.213.0.0", "10.213.0.9"),
        "start 10.213.0.0 is the network or broadcast address",
    );
    fails(
        &range("10.213.0.2", "10.213.0.255"),
        "end 10.213.0.255 is the network or broadcast address",
    );
    fails(
        &range("10.213.0.1", "10.213.0.9"),
        "start 10.213.0.1 is the bridge's own address",
    );
    fails(
        &range("10.213.0.9", "10.213.0.2"),
        "end 10.213.0.2 comes before start 10.213.0.9",
    );
    fails(&range("fd00::2", "fd00::9"), "outside the subnet");
    let bridge_inside = ip(
        "address='10.213.0.50' prefix='24'",
        "<dhcp><range start='10.213.0.2' end='10.213.0.99'/></dhcp>",
    );
    fails(
        &bridge_inside,
        "contains the bridge's own address 10.213.0.50",
    );
    fails(
        &dhcp(
            "<range start='10.213.0.2' end='10.213.0.99'/><range start='10.213.0.50' end='10.213.0.150'/>",
        ),
        "the range 10.213.0.50-10.213.0.150 overlaps 10.213.0.2-10.213.0.99",
    );
    fails(
        &dhcp(
            "<range start='10.213.0.20' end='10.213.0.30'/><range start='10.213.0.2' end='10.213.0.99'/>",
        ),
        "overlaps",
    );

    let host = |attrs: &str| dhcp(&format!("<host {attrs}/>"));
    fails(
        &host("ip='10.213.0.5'"),
        "missing attribute 'mac' or 'name'",
    );
    fails(&host("mac='52:54:00:00:00:01'"), "missing attribute 'ip'");
    fails(
        &host("mac='01:00:5e:00:00:01' ip='10.213.0.5'"),
        "multicast",
    );
    fails(
        &host("name='a_b' ip='10.213.0.5'"),
        "name 'a_b' is not a DNS name",
    );
    fails(
        &host("name='a' ip='10.213.9.5'"),
        "ip 10.213.9.5 is outside the subnet",
    );
    fails(
        &host("name='a' ip='10.213.0.1'"),
        "the bridge's own address",
    );
    let two = |a: &str, b: &str| dhcp(&format!("<host {a}/><host {b}/>"));
    fails(
        &two(
            "mac='52:54:00:00:00:01' ip='10.213.0.5'",
            "mac='52:54:00:00:00:01' ip='10.213.0.6'",
        ),
        "another <host> already has mac 52:54:00:00:00:01",
    );
    fails(
        &two("name='a' ip='10.213.0.5'", "name='a' ip='10.213.0.6'"),
        "already has name 'a'",
    );
    fails(
        &two("name='a' ip='10.213.0.5'", "name='b' ip='10.213.0.5'"),
        "already has ip 10.213.0.5",
    );

    // DHCPv6: hosts by name, never by MAC.
    let v6 = |inner: &str| {
        ip(
            "address='fd00:213::1' prefix='64'",
            &format!("<dhcp>{inner}</dhcp>"),
        )
    };
    ok(&v6(
        "<range start='fd00:213::100' end='fd00:213::1ff'/><host name='web' ip='fd00:213::10'/>",
    ));
    fails(
        &v6("<host mac='52:54:00:00:00:01' name='web' ip='fd00:213::10'/>"),
        "DHCPv6 clients are not known by MAC address",
    );
    fails(&v6("<host ip='fd00:213::10'/>"), "missing attribute 'name'");

    // One DHCP service per family.
    let e = fails(
        "<network><name>n</name>\n<ip address='10.213.0.1' prefix='24'><dhcp><host name='a' ip='10.213.0.5'/></dhcp></ip>\n\
         <ip address='10.214.0.1' prefix='24'>\n<dhcp><host name='a' ip='10.214.0.5'/></dhcp></ip></network>",
        "a second IPv4 <ip> with <dhcp> (the first is on line 2)",
    );
    assert_eq!(e.pos().map(|p| p.line), Some(4));
    ok(
        "<network><name>n</name><ip address='10.213.0.1' prefix='24'><dhcp><host name='a' ip='10.213.0.5'/></dhcp></ip>\
        <ip address='fd00::1' prefix='64'><dhcp><host name='a' ip='fd00::5'/></dhcp></ip></network>",
    );
}

#[test]
fn hostile_input_is_refused_without_panicking() {
    for doc in [
        "",
        "<network>",
        "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.3'>",
        "<!DOCTYPE network [<!ENTITY x 'y'>]><network/>",
        "<network><name>&x;</name></network>",
    ] {
        assert!(NetworkDef::from_xml(doc).is_err(), "{doc:?} accepted");
    }
    // Many hosts: quadratic checks must stay cheap.
    let hosts: String = (0..2000)
        .map(|i| {
            format!(
                "<host name='h{i}' ip='10.1.{}.{}'/>\n",
                i / 250,
                1 + i % 250
            )
        })
        .collect();
    let doc = format!(
        "<network><name>n</name><ip address='10.0.0.1' prefix='8'><dhcp>\n{hosts}</dhcp></ip></network>"
    );
    let n = ok(&doc);
    assert_eq!(n.ips[0].dhcp.as_ref().unwrap().hosts.len(), 2000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_networks_round_trip(def in arb_network_def()) {
        check_round_trip(&def)?;
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = NetworkDef::from_xml(&s);
        let _ = NetworkDef::from_xml(&format!("<network>{s}</network>"));
    }

    #[test]
    fn mutated_networks_never_panic(
        def in arb_network_def(),
        at in any::<prop::sample::Index>(),
        insert in "[<>&'\"/=a-z0-9. ]{0,3}",
    ) {
        parse_mutated::<NetworkDef>(&def.to_xml(), at, &insert);
    }
}
