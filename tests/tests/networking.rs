//! Container networking with real packets: `<interface>` of type bridge,
//! ethernet and direct with their MTU, link state, host-side addresses,
//! bandwidth limits and VLANs, and `<hostdev type='net'>`, through the
//! real daemon. Needs root.
//!
//! Packets only go between namespaces the tests make (and the host ends
//! in the host's): the test bridges, veths and ifb devices are the tests'
//! own (named `lxvt…`, removed by a guard even when a test fails), their
//! addresses in 10.251.0.0/16, and nothing is routed to the host's
//! uplink. The kernel these run on has no dummy driver: an ifb device is
//! the stand-alone virtual device, and a veth end (its peer up) the
//! macvlan's lower device. It has no bridge VLAN filtering either: that
//! test says it skips, and the VM suite (`tests/vm/guest/net-suite`, a
//! Debian kernel) runs it. Bandwidth is measured with the host's iperf3,
//! its `/usr` mounted into the busybox root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

use lxvirt_tests::ContainerEnv;
use lxvirtd::dbus::proxy::DomainProxy;
use std::time::{Duration, Instant};

use lxvirt_tests::net::{
    DomainIfbs, HostDevices, bridge_ports, define, env, eventually, host_link_exists, inside, ip,
    set_up, xml,
};

#[tokio::test]
async fn containers_on_a_host_bridge_ping_each_other() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    // No address on the bridge: the containers talk only to each other.
    devices.add("lxvtbr1", &["type", "bridge"]);
    let a = define(
        &env,
        &xml(
            &env,
            "neta",
            "<interface type='bridge'><source bridge='lxvtbr1'/><mac address='52:54:00:fb:01:02'/>\
             <target dev='lxvtc1a'/><guest dev='net0'/>\
             <ip address='10.251.1.2' prefix='24'/><ip address='fd00:251:1::2' prefix='64'/>\
             <route address='10.251.9.0' prefix='24' gateway='10.251.1.1'/></interface>",
        ),
    )
    .await;
    // One container without a user namespace: the same plumbing.
    let b = define(
        &env,
        &env.busybox_xml("netb", "sleep 1000", "<lxvirt:userns mode='host'/>")
            .replace(
                "<console type='pty'/>",
                "<interface type='bridge'><source bridge='lxvtbr1'/><ip address='10.251.1.3' prefix='24'/></interface>\
                 <console type='pty'/>",
            ),
    )
    .await;
    a.start().await.unwrap();
    b.start().await.unwrap();

    let ports = bridge_ports("lxvtbr1");
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(
        ports.contains(&"lxvtc1a".to_owned()),
        "<target dev>: {ports:?}"
    );
    let generated = ports.iter().find(|p| *p != "lxvtc1a").unwrap().clone();
    assert!(
        generated.starts_with("lxv") && generated.len() == 11,
        "{generated}"
    );

    inside(&env, &a, &["ping", "-c", "1", "-W", "5", "10.251.1.3"]).await;
    inside(&env, &b, &["ping", "-c", "1", "-W", "5", "10.251.1.2"]).await;
    // <guest dev>, <mac>, both addresses and the route inside.
    let link = inside(&env, &a, &["ip", "-o", "link", "show", "net0"]).await;
    assert!(
        link.contains("52:54:00:fb:01:02") && link.contains("UP"),
        "{link}"
    );
    let addresses = inside(&env, &a, &["ip", "-o", "addr", "show", "dev", "net0"]).await;
    assert!(addresses.contains("10.251.1.2/24"), "{addresses}");
    assert!(addresses.contains("fd00:251:1::2/64"), "{addresses}");
    let routes = inside(&env, &a, &["ip", "route"]).await;
    assert!(
        routes.contains("10.251.9.0/24 via 10.251.1.1 dev net0"),
        "{routes}"
    );
    // The default name is eth0, the first free ethN.
    inside(&env, &b, &["ip", "link", "show", "eth0"]).await;

    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    assert_eq!(bridge_ports("lxvtbr1"), Vec::<String>::new());
    assert!(!host_link_exists("lxvtc1a") && !host_link_exists(&generated));
}

#[tokio::test]
async fn an_ethernet_interface_reaches_its_host_end() {
    let Some(env) = env().await else { return };
    let eth = define(
        &env,
        &xml(
            &env,
            "neteth",
            "<interface type='ethernet'><target dev='lxvtc2'/><ip address='10.251.2.2' prefix='24'/></interface>",
        ),
    )
    .await;
    eth.start().await.unwrap();
    // The host end is the test's now: an address of its own on it.
    let mut devices = HostDevices::new();
    devices.adopt("lxvtc2");
    let (ok, out) = ip(&["addr", "add", "10.251.2.1/24", "dev", "lxvtc2"]);
    assert!(ok, "{out}");
    assert!(ip(&["-o", "link", "show", "lxvtc2"]).1.contains("UP"));
    inside(&env, &eth, &["ping", "-c", "1", "-W", "5", "10.251.2.1"]).await;
    eth.destroy().await.unwrap();
    assert!(!host_link_exists("lxvtc2"));
}

#[tokio::test]
async fn macvlan_containers_on_one_device_ping_each_other() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtm3a", &["type", "veth", "peer", "name", "lxvtm3b"]);
    set_up("lxvtm3b");
    let direct = |address: &str| {
        format!(
            "<interface type='direct'><source dev='lxvtm3a' mode='bridge'/><ip address='{address}' prefix='24'/></interface>"
        )
    };
    let a = define(&env, &xml(&env, "netmva", &direct("10.251.3.2"))).await;
    let b = define(&env, &xml(&env, "netmvb", &direct("10.251.3.3"))).await;
    a.start().await.unwrap();
    b.start().await.unwrap();
    inside(&env, &a, &["ping", "-c", "1", "-W", "5", "10.251.3.3"]).await;
    let link = inside(&env, &b, &["ip", "-o", "link", "show", "eth0"]).await;
    assert!(link.contains("UP"), "{link}");
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
}

#[tokio::test]
async fn a_host_interface_moves_in_and_back() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtifb4", &["type", "ifb"]);
    // ifb has no settable MAC: its own is what must show inside.
    let (_, host_view) = ip(&["-o", "link", "show", "lxvtifb4"]);
    let mac = host_view
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_owned();
    let hostdev = "<hostdev mode='capabilities' type='net'><source><interface>lxvtifb4</interface></source></hostdev>";
    let dev = define(&env, &xml(&env, "nethostdev", hostdev)).await;
    dev.start().await.unwrap();
    assert!(!host_link_exists("lxvtifb4"), "moved into the container");
    let link = inside(&env, &dev, &["ip", "-o", "link", "show", "lxvtifb4"]).await;
    assert!(link.contains(&mac), "{mac}: {link}");
    // The container owns it: it configures and even renames it.
    inside(
        &env,
        &dev,
        &["ip", "addr", "add", "10.251.4.2/24", "dev", "lxvtifb4"],
    )
    .await;
    inside(
        &env,
        &dev,
        &["ip", "link", "set", "lxvtifb4", "name", "moved0"],
    )
    .await;
    let addresses = inside(&env, &dev, &["ip", "-o", "addr", "show", "dev", "moved0"]).await;
    assert!(addresses.contains("10.251.4.2/24"), "{addresses}");
    dev.destroy().await.unwrap();
    let link = ip(&["-o", "link", "show", "lxvtifb4"]);
    assert!(link.0, "back on the host under its own name: {}", link.1);
    assert!(link.1.contains(&mac), "{}", link.1);

    // When init exits by itself, too.
    let quick = define(
        &env,
        &env.busybox_xml("nethostquick", "sleep 0.3", "").replace(
            "<console type='pty'/>",
            &format!("{hostdev}<console type='pty'/>"),
        ),
    )
    .await;
    quick.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while quick.state().await.unwrap() != "shutoff" {
        assert!(Instant::now() < deadline, "init did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(host_link_exists("lxvtifb4"), "back after init's exit");
}

#[tokio::test]
async fn a_bad_source_refuses_the_start_clearly_and_leaves_nothing() {
    let Some(env) = env().await else { return };
    let bad = define(
        &env,
        &xml(
            &env,
            "netbad",
            "<interface type='ethernet'><target dev='lxvtc5e'/></interface>\
             <interface type='bridge'><source bridge='lxvtnobr5'/><target dev='lxvtc5b'/></interface>",
        ),
    )
    .await;
    let err = bad.start().await.unwrap_err().to_string();
    assert!(
        err.contains("domain 'netbad'")
            && err.contains("<interface type='bridge'> #2 (bridge 'lxvtnobr5')")
            && err
                .contains("bridge 'lxvtnobr5' does not exist; create it or change <source bridge>"),
        "{err}"
    );
    assert_eq!(bad.state().await.unwrap(), "shutoff");
    assert!(
        !host_link_exists("lxvtc5e"),
        "the first interface was undone"
    );
    assert!(!host_link_exists("lxvtc5b"));

    let network = define(
        &env,
        &xml(
            &env,
            "netvirt",
            "<interface type='network'><source network='default'/></interface>",
        ),
    )
    .await;
    let err = network.start().await.unwrap_err().to_string();
    assert!(
        err.contains("InvalidState")
            && err.contains("interface #1 uses network 'default', which is not defined"),
        "{err}"
    );
}

#[tokio::test]
async fn killing_the_monitor_leaves_no_veth() {
    let Some(env) = env().await else { return };
    let victim = define(
        &env,
        &xml(
            &env,
            "netkill",
            "<interface type='ethernet'><target dev='lxvtc6'/><ip address='10.251.6.2' prefix='24'/></interface>",
        ),
    )
    .await;
    victim.start().await.unwrap();
    assert!(host_link_exists("lxvtc6"));
    let status =
        lxvirtd::core::live::LiveStatus::load(&env.run_dir().join("netkill.status")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(status.monitor_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The daemon kills what is left of the container; its network
    // namespace goes with its last process, and the veth pair with it.
    eventually("the veth to go with the namespace", || {
        !host_link_exists("lxvtc6")
    })
    .await;
}

#[tokio::test]
async fn fifty_cycles_leave_no_links() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtbr7", &["type", "bridge"]);
    let cycler = define(
        &env,
        &xml(
            &env,
            "netcycle",
            "<interface type='bridge'><source bridge='lxvtbr7'/><ip address='10.251.7.2' prefix='24'/></interface>\
             <interface type='ethernet'><target dev='lxvtc7e'/><ip address='10.251.8.2' prefix='24'/></interface>",
        ),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..50 {
        cycler.start().await.unwrap();
        let ports = bridge_ports("lxvtbr7");
        assert_eq!(ports.len(), 1, "{ports:?}");
        seen.extend(ports);
        assert!(host_link_exists("lxvtc7e"));
        cycler.destroy().await.unwrap();
        assert_eq!(bridge_ports("lxvtbr7"), Vec::<String>::new());
        assert!(!host_link_exists("lxvtc7e"));
    }
    let left: Vec<&String> = seen.iter().filter(|n| host_link_exists(n)).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The flags of a link as `ip -o link show` prints them (`<…,UP,…>`).
fn link_flags(line: &str) -> Vec<String> {
    line.split('<')
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The MTU in an `ip -o link show` line.
fn link_mtu(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

#[tokio::test]
async fn mtu_and_link_state_reach_both_ends() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtbr10", &["type", "bridge"]);
    devices.add("lxvtm10a", &["type", "veth", "peer", "name", "lxvtm10b"]);
    set_up("lxvtm10b");
    let domain = define(
        &env,
        &xml(
            &env,
            "netmtu",
            "<interface type='ethernet'><target dev='lxvtc10'/><guest dev='down0'/>\
             <ip address='10.251.10.2' prefix='24'/><link state='down'/><mtu size='1400'/></interface>\
             <interface type='bridge'><source bridge='lxvtbr10'/><target dev='lxvtc10b'/><guest dev='jumbo0'/>\
             <link state='up'/><mtu size='9000'/></interface>\
             <interface type='direct'><source dev='lxvtm10a' mode='bridge'/><guest dev='mv0'/><mtu size='1400'/></interface>",
        ),
    )
    .await;
    domain.start().await.unwrap();

    // Inside: the MTUs as the kernel has them; down0 left down.
    for (name, mtu) in [("down0", "1400"), ("jumbo0", "9000"), ("mv0", "1400")] {
        let path = format!("/sys/class/net/{name}/mtu");
        let seen = inside(&env, &domain, &["cat", &path]).await;
        assert_eq!(seen.trim(), mtu, "{name}");
    }
    let down = inside(&env, &domain, &["ip", "-o", "link", "show", "down0"]).await;
    assert!(!link_flags(&down).contains(&"UP".into()), "{down}");
    let addresses = inside(&env, &domain, &["ip", "-o", "addr", "show", "dev", "down0"]).await;
    assert!(
        addresses.contains("10.251.10.2/24"),
        "addressed all the same: {addresses}"
    );
    let jumbo = inside(&env, &domain, &["ip", "-o", "link", "show", "jumbo0"]).await;
    assert!(link_flags(&jumbo).contains(&"UP".into()), "{jumbo}");
    let mv = inside(&env, &domain, &["ip", "-o", "link", "show", "mv0"]).await;
    assert!(link_flags(&mv).contains(&"UP".into()), "{mv}");

    // The host ends: the same MTUs, the down link's end down too.
    let (_, host_end) = ip(&["-o", "link", "show", "lxvtc10"]);
    assert_eq!(link_mtu(&host_end), Some(1400), "{host_end}");
    assert!(!link_flags(&host_end).contains(&"UP".into()), "{host_end}");
    let (_, host_end) = ip(&["-o", "link", "show", "lxvtc10b"]);
    assert_eq!(link_mtu(&host_end), Some(9000), "{host_end}");
    assert!(link_flags(&host_end).contains(&"UP".into()), "{host_end}");

    // Live changes of <link state> (virsh domif-setlink): both ends of a
    // veth follow, a macvlan's parent does not; anything else is refused
    // naming it, and changes nothing.
    const LIVE: u32 = 1;
    let up = |name: &str| {
        let name = name.to_owned();
        let (env, domain) = (&env, &domain);
        async move {
            let line = inside(env, domain, &["ip", "-o", "link", "show", &name]).await;
            link_flags(&line).contains(&"UP".into())
        }
    };
    let host_up =
        |name: &str| link_flags(&ip(&["-o", "link", "show", name]).1).contains(&"UP".into());
    domain
        .update_device(
            "<interface type='ethernet'><target dev='lxvtc10'/><guest dev='down0'/>\
             <ip address='10.251.10.2' prefix='24'/><link state='up'/><mtu size='1400'/></interface>",
            LIVE,
        )
        .await
        .unwrap();
    assert!(up("down0").await && host_up("lxvtc10"));
    domain
        .update_device(
            "<interface type='bridge'><source bridge='lxvtbr10'/><target dev='lxvtc10b'/><guest dev='jumbo0'/>\
             <link state='down'/><mtu size='9000'/></interface>",
            LIVE,
        )
        .await
        .unwrap();
    assert!(!up("jumbo0").await && !host_up("lxvtc10b"));
    let live = domain.get_xml(0).await.unwrap();
    assert!(live.contains("<link state='down'/>"), "{live}");
    let mv_xml = "<interface type='direct'><source dev='lxvtm10a' mode='bridge'/>\
                  <guest dev='mv0'/><mtu size='1400'/></interface>";
    domain
        .update_device(
            &mv_xml.replace(
                "<mtu size='1400'/>",
                "<mtu size='1400'/><link state='down'/>",
            ),
            LIVE,
        )
        .await
        .unwrap();
    assert!(!up("mv0").await && host_up("lxvtm10a"));
    let error = domain
        .update_device(
            &mv_xml.replace("<mtu size='1400'/>", "<mtu size='1300'/>"),
            LIVE,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("only <link state>") && error.contains("<mtu>"),
        "{error}"
    );
    let seen = inside(&env, &domain, &["cat", "/sys/class/net/mv0/mtu"]).await;
    assert_eq!(seen.trim(), "1400");
    // A macvlan leaves nothing on the host to shape: the parser says so.
    let error = domain
        .update_device(
            &mv_xml.replace(
                "<mtu size='1400'/>",
                "<mtu size='1400'/><link state='down'/><bandwidth><inbound average='100'/></bandwidth>",
            ),
            LIVE,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("InvalidXml") && error.contains("'direct' interface cannot be shaped"),
        "{error}"
    );
    // The same through the CLI (virsh's domif-setlink and domif-getlink);
    // the definition keeps its own state.
    let cli = |args: &[&str]| lxvirt_tests::lxvirt_said(&env.bus.address, args);
    let (ok, said) = cli(&["domif-setlink", "netmtu", "lxvtc10", "down"]);
    assert!(ok, "{said}");
    assert!(!up("down0").await && !host_up("lxvtc10"));
    let (ok, said) = cli(&["domif-getlink", "netmtu", "lxvtc10"]);
    assert!(ok && said.trim() == "lxvtc10 down", "{said}");
    let (ok, said) = cli(&["domif-setlink", "netmtu", "lxvtc10b", "up"]);
    assert!(ok, "{said}");
    assert!(up("jumbo0").await && host_up("lxvtc10b"));
    let (ok, said) = cli(&["domif-getlink", "netmtu", "lxvtc10b", "--config"]);
    assert!(ok && said.trim() == "lxvtc10b up", "{said}");
    let (ok, said) = cli(&["domif-setlink", "netmtu", "nosuch", "up"]);
    assert!(!ok && said.contains("no interface 'nosuch'"), "{said}");
    domain.destroy().await.unwrap();
    assert!(!host_link_exists("lxvtc10") && !host_link_exists("lxvtc10b"));
}

#[tokio::test]
async fn an_ethernet_host_end_gets_its_address_and_routes() {
    let Some(env) = env().await else { return };
    // libvirt's point-to-point pair: each side the other's peer; the host
    // routes a further subnet through the container.
    let domain = define(
        &env,
        &xml(
            &env,
            "nethostside",
            "<interface type='ethernet'><source><ip address='10.251.11.1' prefix='32' peer='10.251.11.2'/>\
             <route address='10.251.12.0' prefix='24' gateway='10.251.11.2'/></source>\
             <target dev='lxvtc11'/><ip address='10.251.11.2' prefix='32' peer='10.251.11.1'/>\
             <ip address='10.251.12.1' prefix='24'/></interface>",
        ),
    )
    .await;
    domain.start().await.unwrap();
    let (_, addresses) = ip(&["-o", "addr", "show", "dev", "lxvtc11"]);
    assert!(
        addresses.contains("inet 10.251.11.1 peer 10.251.11.2/32"),
        "{addresses}"
    );
    let (_, routes) = ip(&["route", "show", "10.251.12.0/24"]);
    assert!(
        routes.contains("10.251.12.0/24 via 10.251.11.2 dev lxvtc11"),
        "{routes}"
    );
    // Across the pair both ways, the host's way through its route.
    inside(
        &env,
        &domain,
        &["ping", "-c", "1", "-W", "5", "10.251.11.1"],
    )
    .await;
    let out = Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "5", "10.251.12.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    domain.destroy().await.unwrap();
    assert!(!host_link_exists("lxvtc11"));
    let (_, routes) = ip(&["route", "show", "10.251.12.0/24"]);
    assert_eq!(routes.trim(), "", "the route went with the host end");
}

#[tokio::test]
async fn a_host_interface_gets_its_addresses_and_routes_inside() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtifb12", &["type", "ifb"]);
    let domain = define(
        &env,
        &xml(
            &env,
            "nethostdevip",
            "<hostdev mode='capabilities' type='net'><source><interface>lxvtifb12</interface></source>\
             <ip address='10.251.13.2' prefix='24'/><route address='192.168.213.0' gateway='10.251.13.1'/></hostdev>",
        ),
    )
    .await;
    domain.start().await.unwrap();
    let link = inside(&env, &domain, &["ip", "-o", "link", "show", "lxvtifb12"]).await;
    assert!(link_flags(&link).contains(&"UP".into()), "{link}");
    let addresses = inside(
        &env,
        &domain,
        &["ip", "-o", "addr", "show", "dev", "lxvtifb12"],
    )
    .await;
    assert!(addresses.contains("10.251.13.2/24"), "{addresses}");
    let routes = inside(&env, &domain, &["ip", "route"]).await;
    assert!(
        routes.contains("192.168.213.0/24 via 10.251.13.1 dev lxvtifb12"),
        "{routes}"
    );
    domain.destroy().await.unwrap();
    // Back on the host without what the container had on it.
    let (back, link) = ip(&["-o", "link", "show", "lxvtifb12"]);
    assert!(back, "{link}");
    let (_, addresses) = ip(&["-o", "addr", "show", "dev", "lxvtifb12"]);
    assert!(!addresses.contains("10.251.13.2"), "{addresses}");
    let (_, routes) = ip(&["route", "show", "192.168.213.0/24"]);
    assert_eq!(routes.trim(), "");
    let qdiscs = tc(&["qdisc", "show", "dev", "lxvtifb12"]);
    assert!(
        !qdiscs.contains("tbf") && !qdiscs.contains("ingress"),
        "{qdiscs}"
    );
}

/// `tc ARGS…` on the host: its output.
fn tc(args: &[&str]) -> String {
    let out = Command::new("tc").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `name` a bridge that filters VLANs; false (after saying why)
/// when the kernel has no VLAN filtering, unless `LXVIRT_VLAN_TESTS` is
/// set (the VM suite, whose kernel has it).
fn vlan_filtering_bridge(devices: &mut HostDevices, name: &str) -> bool {
    let _ = ip(&["link", "del", name]);
    let (ok, out) = ip(&["link", "add", name, "type", "bridge", "vlan_filtering", "1"]);
    if !ok && out.contains("Operation not supported") {
        assert!(
            std::env::var_os("LXVIRT_VLAN_TESTS").is_none(),
            "LXVIRT_VLAN_TESTS is set but this kernel has no bridge VLAN filtering"
        );
        println!(
            "skipped: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); tests/vm/run tests/vm/guest/net-suite runs this test"
        );
        return false;
    }
    assert!(ok, "{out}");
    devices.adopt(name);
    set_up(name);
    true
}

#[tokio::test]
async fn vlans_on_a_filtering_bridge_keep_containers_apart() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    // A bridge that does not filter: the start is refused, saying how.
    devices.add("lxvtbr15", &["type", "bridge"]);
    let plain = define(
        &env,
        &xml(
            &env,
            "netvlanplain",
            "<interface type='bridge'><source bridge='lxvtbr15'/><target dev='lxvtc15'/><vlan><tag id='10'/></vlan></interface>",
        ),
    )
    .await;
    let err = plain.start().await.unwrap_err().to_string();
    assert!(
        err.contains("domain 'netvlanplain'")
            && err.contains("<interface type='bridge'> #1 (bridge 'lxvtbr15')")
            && err.contains("bridge 'lxvtbr15' does not filter VLANs")
            && err.contains("ip link set lxvtbr15 type bridge vlan_filtering 1"),
        "{err}"
    );
    assert!(!host_link_exists("lxvtc15"));

    if !vlan_filtering_bridge(&mut devices, "lxvtbr14") {
        return;
    }
    let on_vlan = |tag: &str, address: &str, host_end: &str| {
        format!(
            "<interface type='bridge'><source bridge='lxvtbr14'/><target dev='{host_end}'/>\
             <ip address='{address}' prefix='24'/><vlan><tag id='{tag}'/></vlan></interface>"
        )
    };
    let a = define(
        &env,
        &xml(&env, "netvlana", &on_vlan("10", "10.251.14.2", "lxvtc14a")),
    )
    .await;
    let b = define(
        &env,
        &xml(&env, "netvlanb", &on_vlan("10", "10.251.14.3", "lxvtc14b")),
    )
    .await;
    let c = define(
        &env,
        &xml(&env, "netvlanc", &on_vlan("20", "10.251.14.4", "lxvtc14c")),
    )
    .await;
    for domain in [&a, &b, &c] {
        domain.start().await.unwrap();
    }
    // Access ports: each in its VLAN only, untagged, as its PVID.
    let out = Command::new("bridge")
        .args(["-j", "vlan", "show", "dev", "lxvtc14a"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown[0]["vlans"],
        serde_json::json!([{"vlan": 10, "flags": ["PVID", "Egress Untagged"]}]),
        "{shown}"
    );
    inside(&env, &a, &["ping", "-c", "1", "-W", "5", "10.251.14.3"]).await;
    inside(&env, &b, &["ping", "-c", "1", "-W", "5", "10.251.14.2"]).await;
    for (from, to) in [(&a, "10.251.14.4"), (&c, "10.251.14.3")] {
        let (code, out) = env.enter(from, &["ping", "-c", "1", "-W", "1", to]).await;
        assert_ne!(code, 0, "VLAN 20 is another network: {out}");
    }
    for domain in [&a, &b, &c] {
        domain.destroy().await.unwrap();
    }
    assert_eq!(bridge_ports("lxvtbr14"), Vec::<String>::new());
}

/// Makes the host's `/usr` (iperf3 and its libraries) visible in the
/// busybox root: the merged-/usr links, and a read-only mount to add to
/// a domain's devices.
fn with_host_usr(env: &ContainerEnv) -> &'static str {
    let root = env.rootfs();
    let _ = std::fs::create_dir_all(root.join("usr"));
    let _ = std::os::unix::fs::symlink("usr/lib", root.join("lib"));
    let _ = std::os::unix::fs::symlink("usr/lib64", root.join("lib64"));
    assert!(
        std::path::Path::new("/usr/bin/iperf3").exists(),
        "/usr/bin/iperf3 is missing: install iperf3 (.ci/install-deps does)"
    );
    "<filesystem type='mount'><source dir='/usr'/><target dir='/usr'/><readonly/></filesystem>"
}

/// Bytes a second that arrived in an iperf3 run from `client` to the
/// server at `server` (`reverse`: from the server to `client`), over 3 s.
/// (Not with `--omit`: iperf3's receiver total then counts the bytes of
/// the omitted second over the shorter time.)
async fn iperf3(env: &ContainerEnv, client: &DomainProxy<'_>, server: &str, reverse: bool) -> f64 {
    let mut argv = vec!["/usr/bin/iperf3", "-c", server, "-t", "3", "-J"];
    if reverse {
        argv.push("-R");
    }
    // The server may still be starting, or not yet listening again
    // after the previous run.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = env.enter(client, &argv).await;
        let received = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|report| report["end"]["sum_received"]["bits_per_second"].as_f64());
        match received {
            Some(bits) if code == 0 => return bits / 8.0,
            _ => assert!(Instant::now() < deadline, "{argv:?}: {out}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bandwidth_limits_hold_both_ways() {
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtbr16", &["type", "bridge"]);
    let usr = with_host_usr(&env);
    // Different rates each way, so that a swapped direction shows.
    let limited = define(
        &env,
        &xml(
            &env,
            "netbwa",
            &format!(
                "{usr}<interface type='bridge'><source bridge='lxvtbr16'/><target dev='lxvtc16'/>\
                 <ip address='10.251.16.2' prefix='24'/>\
                 <bandwidth><inbound average='2048'/><outbound average='1024'/></bandwidth></interface>"
            ),
        ),
    )
    .await;
    let server = define(
        &env,
        &env.busybox_xml("netbwb", "/usr/bin/iperf3 -s", "").replace(
            "<console type='pty'/>",
            &format!(
                "{usr}<interface type='bridge'><source bridge='lxvtbr16'/>\
                 <ip address='10.251.16.3' prefix='24'/></interface><console type='pty'/>"
            ),
        ),
    )
    .await;
    limited.start().await.unwrap();
    server.start().await.unwrap();
    let qdiscs = tc(&["qdisc", "show", "dev", "lxvtc16"]);
    assert!(
        qdiscs.contains("qdisc tbf 1: root") && qdiscs.contains("qdisc ingress ffff:"),
        "{qdiscs}"
    );
    let ifbs = DomainIfbs::of(&limited.uuid().await.unwrap());
    let names = ifbs.list();
    assert!(
        names.len() == 1 && names[0].starts_with("lxvq"),
        "one ifb for the outbound limit: {names:?}"
    );
    let qdiscs = tc(&["qdisc", "show", "dev", &names[0]]);
    assert!(qdiscs.contains("qdisc tbf 1: root"), "{qdiscs}");

    // kB/s of 1000 bytes; the kernel counts whole frames, iperf3 the
    // payload (about 95 % of a frame). The limit must hold (at most 15 %
    // over, the bucket's burst included); below it a loaded host may fall
    // short, but not to half, which a swapped direction or a wrong unit
    // would give.
    for (reverse, limit) in [(false, 1_024_000.0), (true, 2_048_000.0)] {
        let rate = iperf3(&env, &limited, "10.251.16.3", reverse).await;
        let direction = if reverse { "inbound" } else { "outbound" };
        println!("{direction}: {rate:.0} bytes/s against a limit of {limit:.0}");
        assert!(
            rate <= limit * 1.15 && rate >= limit * 0.65,
            "{direction}: {rate:.0} bytes/s, limit {limit:.0}"
        );
    }
    limited.destroy().await.unwrap();
    server.destroy().await.unwrap();
    assert!(!host_link_exists("lxvtc16"));
    assert_eq!(ifbs.list(), Vec::<String>::new(), "the ifb went too");
}

/// The rate (bytes a second) of the tbf root qdisc of host link `dev`,
/// or `None` without one.
fn tbf_rate(dev: &str) -> Option<u64> {
    let text = tc(&["-j", "qdisc", "show", "dev", dev]);
    let qdiscs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    qdiscs
        .iter()
        .find(|q| q["kind"] == "tbf" && q["root"] == true)
        .and_then(|q| q["options"]["rate"].as_u64())
}

fn has_ingress(dev: &str) -> bool {
    tc(&["qdisc", "show", "dev", dev]).contains("qdisc ingress ffff:")
}

#[tokio::test]
async fn bandwidth_changes_live_and_on_hot_plugged_interfaces() {
    const LIVE: u32 = 1;
    let Some(env) = env().await else { return };
    let mut devices = HostDevices::new();
    devices.add("lxvtbr18", &["type", "bridge"]);
    let domain = define(
        &env,
        &xml(
            &env,
            "netbwlive",
            "<interface type='bridge'><source bridge='lxvtbr18'/><target dev='lxvtc18'/></interface>",
        ),
    )
    .await;
    domain.start().await.unwrap();
    let ifbs = DomainIfbs::of(&domain.uuid().await.unwrap());
    assert_eq!(tbf_rate("lxvtc18"), None);
    let cli = |args: &[&str]| lxvirt_tests::lxvirt_said(&env.bus.address, args);

    // Both directions at once, through the CLI (virsh's domiftune).
    let (ok, said) = cli(&[
        "domiftune",
        "netbwlive",
        "lxvtc18",
        "--inbound",
        "2048",
        "--outbound",
        "1024,2048,32",
    ]);
    assert!(ok, "{said}");
    assert_eq!(tbf_rate("lxvtc18"), Some(2_048_000));
    let names = ifbs.list();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(tbf_rate(&names[0]), Some(1_024_000));
    assert!(has_ingress("lxvtc18"));
    let (ok, said) = cli(&["domiftune", "netbwlive", "lxvtc18"]);
    assert!(ok, "{said}");
    for line in [
        "inbound.average : 2048",
        "outbound.average: 1024",
        "outbound.peak   : 2048",
        "outbound.burst  : 32",
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    // The definition is not touched without --config, and says so.
    let (ok, said) = cli(&["domiftune", "netbwlive", "lxvtc18", "--config"]);
    assert!(ok && said.contains("inbound.average : 0"), "{said}");

    // A new outbound rate: the same ifb, a new bucket; inbound as it was.
    let (ok, said) = cli(&["domiftune", "netbwlive", "lxvtc18", "--outbound", "4096"]);
    assert!(ok, "{said}");
    assert_eq!(ifbs.list(), names);
    assert_eq!(tbf_rate(&names[0]), Some(4_096_000));
    assert_eq!(tbf_rate("lxvtc18"), Some(2_048_000));
    // Ending outbound takes the redirect and the ifb away.
    let (ok, said) = cli(&["domiftune", "netbwlive", "lxvtc18", "--outbound", "0"]);
    assert!(ok, "{said}");
    assert_eq!(ifbs.list(), Vec::<String>::new());
    assert!(!has_ingress("lxvtc18"));
    assert_eq!(tbf_rate("lxvtc18"), Some(2_048_000));
    let live = domain.get_xml(0).await.unwrap();
    assert!(
        live.contains("<inbound average='2048'/>") && !live.contains("<outbound"),
        "{live}"
    );
    assert!(!domain.get_xml(2).await.unwrap().contains("<bandwidth>"));
    // --config changes the definition alone; --live --config both.
    let (ok, said) = cli(&[
        "domiftune",
        "netbwlive",
        "lxvtc18",
        "--inbound",
        "300",
        "--config",
    ]);
    assert!(ok, "{said}");
    assert_eq!(tbf_rate("lxvtc18"), Some(2_048_000));
    let config = domain.get_xml(2).await.unwrap();
    assert!(config.contains("<inbound average='300'/>"), "{config}");
    let (ok, said) = cli(&[
        "domiftune",
        "netbwlive",
        "lxvtc18",
        "--inbound",
        "400",
        "--live",
        "--config",
    ]);
    assert!(ok, "{said}");
    assert_eq!(tbf_rate("lxvtc18"), Some(400_000));
    let config = domain.get_xml(2).await.unwrap();
    assert!(config.contains("<inbound average='400'/>"), "{config}");
    // Bad input is refused before anything changes.
    let (ok, said) = cli(&["domiftune", "netbwlive", "lxvtc18", "--inbound", "0,5"]);
    assert!(
        !ok && said.contains("an average of 0 ends the limit"),
        "{said}"
    );
    let (ok, said) = cli(&["domiftune", "netbwlive", "lxvtc99", "--inbound", "5"]);
    assert!(!ok && said.contains("has no interface 'lxvtc99'"), "{said}");

    // A hot-plugged interface with <bandwidth>: shaped as at a start; its
    // ifb goes when it is detached.
    let shaped = "<interface type='bridge'><source bridge='lxvtbr18'/><mac address='52:54:00:fb:18:02'/>\
                  <target dev='lxvtc18b'/><bandwidth><inbound average='512'/><outbound average='256'/></bandwidth></interface>";
    domain.attach_device(shaped, LIVE).await.unwrap();
    assert_eq!(tbf_rate("lxvtc18b"), Some(512_000));
    let plugged = ifbs.list();
    assert_eq!(plugged.len(), 1, "{plugged:?}");
    assert_eq!(tbf_rate(&plugged[0]), Some(256_000));
    domain.detach_device(shaped, LIVE).await.unwrap();
    assert!(!host_link_exists("lxvtc18b"));
    assert_eq!(ifbs.list(), Vec::<String>::new(), "detached with its ifb");
    // Plugged in again and left there: the container's end takes it.
    domain.attach_device(shaped, LIVE).await.unwrap();
    assert_eq!(ifbs.list().len(), 1);
    domain.destroy().await.unwrap();
    assert!(!host_link_exists("lxvtc18"));
    // The monitor deletes the veths it made before it exits; a hot-plugged
    // one goes with the container's network namespace, which the kernel
    // tears down in the background.
    eventually("the hot-plugged veth's end", || {
        !host_link_exists("lxvtc18b")
    })
    .await;
    assert_eq!(ifbs.list(), Vec::<String>::new(), "the end took the ifb");
}

#[tokio::test]
async fn the_ifb_of_a_killed_monitor_is_deleted_when_the_daemon_finds_it_gone() {
    let Some(env) = env().await else { return };
    let domain = define(
        &env,
        &xml(
            &env,
            "netbwkill",
            "<interface type='ethernet'><target dev='lxvtc17'/>\
             <bandwidth><outbound average='1000'/></bandwidth></interface>",
        ),
    )
    .await;
    domain.start().await.unwrap();
    let ifbs = DomainIfbs::of(&domain.uuid().await.unwrap());
    let names = ifbs.list();
    assert_eq!(names.len(), 1, "{names:?}");
    let status =
        lxvirtd::core::live::LiveStatus::load(&env.run_dir().join("netbwkill.status")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(status.monitor_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the veth to go with the namespace", || {
        !host_link_exists("lxvtc17")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while domain.state().await.unwrap() != "shutoff" {
        assert!(Instant::now() < deadline, "the domain did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The ifb lived in the host's namespace: the daemon deletes it once it
    // finds the monitor gone.
    assert_eq!(ifbs.list(), Vec::<String>::new(), "left behind");
    domain.start().await.unwrap();
    assert_eq!(ifbs.list(), names, "made again under its name");
    domain.destroy().await.unwrap();
    assert_eq!(ifbs.list(), Vec::<String>::new());
}
