//! Virtual networks with real packets: a NAT network's bridge, its
//! nftables table and dnsmasq, containers that take DHCP leases, resolve
//! each other's names and reach a stand-in "outside" host through NAT;
//! an isolated network that reaches nothing; a daemon killed meanwhile.
//! Needs root.
//!
//! Packets only go between namespaces the tests make: the "outside" host
//! is a network namespace of the test's own, joined to the host by a veth
//! the test made and named in `<forward dev>`; addresses are in
//! 10.251.0.0/16 and nothing is routed to the host's uplink (a network's
//! rules only forward to its `<forward dev>`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::net::{IpAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use lxvirt_tests::ContainerEnv;
use lxvirt_tests::net::{
    HostDevices, define, env, env_with, eventually, host_link_exists, inside, ip, xml,
};
use lxvirtd::dbus::proxy::{DomainProxy, NetworkProxy};

/// A network namespace standing in for the world outside, joined to the
/// host by the veth `host_end` (10.251.N.1 on the host, .2 inside).
struct Outside {
    netns: String,
    _devices: HostDevices,
}

impl Outside {
    fn new(tag: &str, host_end: &str, subnet: u8) -> Outside {
        let netns = format!("lxvt-{tag}-{}", std::process::id());
        let _ = ip(&["netns", "del", &netns]);
        assert!(ip(&["netns", "add", &netns]).0);
        let mut devices = HostDevices::new();
        let peer = format!("{host_end}p");
        devices.add(
            host_end,
            &["type", "veth", "peer", "name", &peer, "netns", &netns],
        );
        let host_address = format!("10.251.{subnet}.1/24");
        assert!(ip(&["addr", "add", &host_address, "dev", host_end]).0);
        let inside_address = format!("10.251.{subnet}.2/24");
        for args in [
            vec!["addr", "add", inside_address.as_str(), "dev", peer.as_str()],
            vec!["link", "set", peer.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", netns.as_str()];
            all.extend(args);
            let out = ip(&all);
            assert!(out.0, "ip {all:?}: {}", out.1);
        }
        Outside {
            netns,
            _devices: devices,
        }
    }

    /// The outside routes `subnet` back through the host (as an upstream
    /// router of a routed network must).
    fn route(&self, subnet: &str, via: &str) {
        let out = ip(&["-n", &self.netns, "route", "add", subnet, "via", via]);
        assert!(out.0, "{}", out.1);
    }

    /// A TCP server at `address:port` inside; sends back the address each
    /// client connected from (as the outside sees it) on the channel.
    fn serve(&self, address: &str, port: u16) -> mpsc::Receiver<IpAddr> {
        let path = format!("/run/netns/{}", self.netns);
        let address = address.to_owned();
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let netns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let listener = TcpListener::bind((address.as_str(), port)).unwrap();
            ready_tx.send(()).unwrap();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let peer = stream.peer_addr().unwrap().ip();
                let _ = std::io::Write::write_all(&mut stream, b"hello from outside\n");
                if tx.send(peer).is_err() {
                    return;
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        rx
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// A udhcpc script: the lease's address and default route on the
/// interface (busybox ships none; Debian's looks for it in /etc).
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n\
case \"$1\" in\n\
  bound|renew)\n\
    ip addr flush dev \"$interface\"\n\
    ip addr add \"$ip/$mask\" dev \"$interface\"\n\
    [ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\n\
    ;;\n\
esac\n\
exit 0\n";

fn install_udhcpc_script(env: &ContainerEnv) {
    let dir = env.rootfs().join("usr/share/udhcpc");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("default.script");
    std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Asks for a lease on eth0; returns the address it got.
async fn dhcp(env: &ContainerEnv, domain: &DomainProxy<'_>) -> String {
    let (_, said) = env
        .enter(
            domain,
            &[
                "sh",
                "-c",
                "udhcpc -i eth0 -n -q -t 10 -T 1 -s /usr/share/udhcpc/default.script 2>&1",
            ],
        )
        .await;
    let out = inside(
        env,
        domain,
        &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
    )
    .await;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address on eth0: {out}; udhcpc said: {said}"))
        .to_owned()
}

async fn network(env: &ContainerEnv, xml: &str) -> NetworkProxy<'static> {
    let manager = env.manager().await.unwrap();
    let path = manager.network_define_xml(xml).await.unwrap();
    NetworkProxy::builder(&env.connection)
        .path(path)
        .build()
        .await
        .unwrap()
}

/// Whether the network's table exists in the `inet` family and in the
/// `bridge` one (its port filter), which come and go together.
fn nft_table_exists(name: &str) -> bool {
    let exists = |family: &str| {
        Command::new("nft")
            .args(["list", "table", family, name])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let (inet, bridge) = (exists("inet"), exists("bridge"));
    assert_eq!(inet, bridge, "table {name}: inet {inet}, bridge {bridge}");
    inet
}

/// The network's port filter as nft lists it.
fn port_filter(network: &str) -> serde_json::Value {
    let out = Command::new("nft")
        .args([
            "-j",
            "list",
            "table",
            "bridge",
            &format!("lxvirt-{network}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Packets dropped by the rules of `chain` that look `set` up.
fn drops(network: &str, chain: &str, set: &str) -> u64 {
    let listed = port_filter(network);
    listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| {
            rule["chain"] == chain && rule["expr"].to_string().contains(&format!("\"@{set}\""))
        })
        .flat_map(|rule| rule["expr"].as_array().unwrap().iter())
        .filter_map(|expr| expr["counter"]["packets"].as_u64())
        .sum()
}

/// The elements of one set of the port filter, as JSON text.
fn elements(network: &str, set: &str) -> Vec<String> {
    let listed = port_filter(network);
    listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item.get("set"))
        .filter(|s| s["name"] == set)
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.to_string())
        .collect()
}

/// The address lxvirt assigned to the port of `mac` (its record,
/// `RUN/network/NAME.ports/MAC`).
fn pinned(env: &ContainerEnv, network: &str, mac: &str) -> String {
    let path = env
        .run_dir()
        .join(format!("network/{network}.ports/{}", mac.replace(':', "-")));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["pinned"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing pinned: {text}"))
        .to_owned()
}

fn on_network(network: &str) -> String {
    format!("<interface type='network'><source network='{network}'/></interface>")
}

#[tokio::test]
async fn a_nat_network_serves_dhcp_and_dns_and_masquerades_to_the_outside() {
    let Some(env) = env().await else { return };
    install_udhcpc_script(&env);
    let outside = Outside::new("nat", "lxvtout1", 201);
    let server = outside.serve("10.251.201.2", 7070);
    let net = network(
        &env,
        "<network><name>lxvtnat</name><bridge name='lxvtbr61'/>\
         <forward mode='nat' dev='lxvtout1'/>\
         <ip address='10.251.61.1' prefix='24'><dhcp><range start='10.251.61.100' end='10.251.61.150'/></dhcp></ip>\
         </network>",
    )
    .await;
    net.start().await.unwrap();
    assert!(net.active().await.unwrap());
    assert!(host_link_exists("lxvtbr61"));
    assert!(nft_table_exists("lxvirt-lxvtnat"));

    let a = define(&env, &xml(&env, "vneta", &on_network("lxvtnat"))).await;
    let b = define(&env, &xml(&env, "vnetb", &on_network("lxvtnat"))).await;
    a.start().await.unwrap();
    b.start().await.unwrap();
    let address_a = dhcp(&env, &a).await;
    let address_b = dhcp(&env, &b).await;
    for address in [&address_a, &address_b] {
        assert!(address.starts_with("10.251.61."), "{address}");
    }
    assert_ne!(address_a, address_b);

    // It sees its own interface and loopback, none of the host's.
    let links = inside(&env, &a, &["ip", "-o", "link"]).await;
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .collect();
    assert_eq!(names, ["lo", "eth0"], "{links}");

    // The siblings reach and resolve each other through the network's DNS.
    inside(&env, &a, &["ping", "-c", "1", "-W", "2", &address_b]).await;
    let answer = inside(&env, &a, &["nslookup", "vnetb", "10.251.61.1"]).await;
    assert!(answer.contains(&address_b), "{answer}");

    // The outside host sees the host's address on its side: masquerade.
    let reply = inside(&env, &a, &["nc", "-w", "3", "10.251.201.2", "7070"]).await;
    assert!(reply.contains("hello from outside"), "{reply}");
    let seen = server.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.to_string(), "10.251.201.1");

    // The leases name both containers.
    let leases = net.get_dhcp_leases("", 0).await.unwrap();
    let mut names: Vec<&str> = leases.iter().map(|l| l.3.as_str()).collect();
    names.sort();
    assert_eq!(names, ["vneta", "vnetb"], "{leases:?}");
    assert!(leases.iter().all(|l| l.2 == 24), "{leases:?}");

    // The live XML names the host end; the persistent one does not.
    let host_end = host_end(&a).await;
    assert!(
        host_end.starts_with("lxv") && host_link_exists(&host_end),
        "{host_end}"
    );
    assert!(!a.get_xml(2).await.unwrap().contains("<target dev="));

    // What virsh users read: domiflist, domifaddr (leases and the
    // container's view), domifstat.
    let cli = |args: &[&str]| {
        let out = lxvirt_tests::lxvirt(&env.bus.address, args).unwrap();
        assert!(out.status.success(), "lxvirt {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let list = cli(&["domiflist", "vneta"]);
    assert!(
        list.contains(&host_end) && list.contains("network") && list.contains("lxvtnat"),
        "{list}"
    );
    let by_lease = cli(&["domifaddr", "vneta"]);
    assert!(
        by_lease.contains(&format!("{address_a}/24")) && by_lease.contains(&host_end),
        "{by_lease}"
    );
    let inside_view = cli(&["domifaddr", "vneta", "--source", "agent"]);
    assert!(
        inside_view.contains("eth0") && inside_view.contains(&format!("{address_a}/24")),
        "{inside_view}"
    );
    let stats = cli(&["domifstat", "vneta", "eth0"]);
    let rx_packets: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("eth0 rx_packets "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rx_packets > 0, "{stats}");
    let by_host_end = cli(&["domifstat", "vneta", &host_end]);
    assert!(by_host_end.contains("tx_bytes"), "{by_host_end}");
    let unknown = lxvirt_tests::lxvirt(&env.bus.address, &["domifstat", "vneta", "nope0"]).unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no interface 'nope0'"),
        "{unknown:?}"
    );

    // Destroy is refused while they run, and names them.
    let refused = net.destroy(0).await.unwrap_err().to_string();
    assert!(refused.contains("vneta, vnetb"), "{refused}");
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    let pid_file = env.run_dir().join("network/lxvtnat.pid");
    let dnsmasq: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    net.destroy(0).await.unwrap();
    assert!(!net.active().await.unwrap());
    assert!(!host_link_exists("lxvtbr61"));
    assert!(!nft_table_exists("lxvirt-lxvtnat"));
    eventually("dnsmasq to exit", || {
        !std::path::Path::new(&format!("/proc/{dnsmasq}")).exists()
    })
    .await;
}

#[tokio::test]
async fn an_isolated_network_reaches_nothing_outside_and_no_other_network() {
    let Some(env) = env().await else { return };
    let outside = Outside::new("iso", "lxvtout2", 202);
    let _server = outside.serve("10.251.202.2", 7071);
    outside.route("10.251.63.0/24", "10.251.202.1");
    let isolated = network(
        &env,
        "<network><name>lxvtiso</name><bridge name='lxvtbr62'/>\
         <ip address='10.251.62.1' prefix='24'/></network>",
    )
    .await;
    let routed = network(
        &env,
        "<network><name>lxvtrt</name><bridge name='lxvtbr63'/><forward mode='route' dev='lxvtout2'/>\
         <ip address='10.251.63.1' prefix='24'/></network>",
    )
    .await;
    let isolated2 = network(
        &env,
        "<network><name>lxvtiso2</name><bridge name='lxvtbr70'/>\
         <ip address='10.251.70.1' prefix='24'/></network>",
    )
    .await;
    isolated.start().await.unwrap();
    isolated2.start().await.unwrap();
    routed.start().await.unwrap();
    let interface = |network: &str, address: &str| {
        format!(
            "<interface type='network'><source network='{network}'/>\
             <ip address='{address}' prefix='24'/><route address='0.0.0.0' prefix='0' gateway='{}.1'/></interface>",
            address.rsplit_once('.').unwrap().0
        )
    };
    let alone = define(
        &env,
        &xml(&env, "viso", &interface("lxvtiso", "10.251.62.2")),
    )
    .await;
    let other = define(&env, &xml(&env, "vrt", &interface("lxvtrt", "10.251.63.2"))).await;
    let alone2 = define(
        &env,
        &xml(&env, "viso2", &interface("lxvtiso2", "10.251.70.2")),
    )
    .await;
    alone.start().await.unwrap();
    other.start().await.unwrap();
    alone2.start().await.unwrap();
    // Two isolated networks: neither container reaches the other.
    for (from, to) in [(&alone, "10.251.70.2"), (&alone2, "10.251.62.2")] {
        let (code, out) = env.enter(from, &["ping", "-c", "1", "-W", "1", to]).await;
        assert_ne!(code, 0, "an isolated container reached {to}: {out}");
    }
    inside(
        &env,
        &alone2,
        &["ping", "-c", "1", "-W", "2", "10.251.70.1"],
    )
    .await;
    // Its own bridge answers…
    inside(&env, &alone, &["ping", "-c", "1", "-W", "2", "10.251.62.1"]).await;
    // …but nothing is forwarded: not the outside, not the other network.
    for target in ["10.251.202.2", "10.251.63.2"] {
        let (code, out) = env
            .enter(&alone, &["ping", "-c", "1", "-W", "1", target])
            .await;
        assert_ne!(code, 0, "the isolated container reached {target}: {out}");
        let (code, out) = env
            .enter(&other, &["ping", "-c", "1", "-W", "1", "10.251.62.2"])
            .await;
        assert_ne!(
            code, 0,
            "the routed container reached the isolated one: {out}"
        );
    }
    // The routed network reaches the outside from its own address.
    inside(
        &env,
        &other,
        &["ping", "-c", "1", "-W", "2", "10.251.202.2"],
    )
    .await;
    alone.destroy().await.unwrap();
    alone2.destroy().await.unwrap();
    other.destroy().await.unwrap();
    isolated.destroy(0).await.unwrap();
    isolated2.destroy(0).await.unwrap();
    routed.destroy(0).await.unwrap();
}

#[tokio::test]
async fn a_subnet_the_host_routes_elsewhere_is_refused_naming_the_route() {
    let Some(env) = env().await else { return };
    let _outside = Outside::new("ovl", "lxvtout3", 203);
    let clash = network(
        &env,
        "<network><name>lxvtovl</name><bridge name='lxvtbr64'/>\
         <ip address='10.251.203.129' prefix='25'/></network>",
    )
    .await;
    let error = clash.start().await.unwrap_err().to_string();
    assert!(
        error.contains("10.251.203.128/25")
            && error.contains("10.251.203.0/24")
            && error.contains("lxvtout3"),
        "{error}"
    );
    assert!(!clash.active().await.unwrap());
    assert!(!host_link_exists("lxvtbr64"), "nothing left behind");
    assert!(!nft_table_exists("lxvirt-lxvtovl"));
}

#[tokio::test]
async fn a_killed_daemon_leaves_the_network_serving_and_takes_it_over() {
    let Some(mut env) = env().await else { return };
    install_udhcpc_script(&env);
    let net = network(
        &env,
        "<network><name>lxvtkill</name><bridge name='lxvtbr65'/>\
         <ip address='10.251.65.1' prefix='24'><dhcp><range start='10.251.65.100' end='10.251.65.150'/></dhcp></ip>\
         </network>",
    )
    .await;
    net.start().await.unwrap();
    let a = define(&env, &xml(&env, "vkilla", &on_network("lxvtkill"))).await;
    let b = define(&env, &xml(&env, "vkillb", &on_network("lxvtkill"))).await;
    a.start().await.unwrap();
    b.start().await.unwrap();
    let first_a = dhcp(&env, &a).await;
    let address_b = dhcp(&env, &b).await;
    let pid_file = env.run_dir().join("network/lxvtkill.pid");
    let dnsmasq = std::fs::read_to_string(&pid_file).unwrap();

    // Traffic between the two goes on while no daemon runs: a ping from
    // inside, started before the kill, loses nothing (the new daemon
    // replaces the port filter with the recorded ports in it).
    let pinger = {
        let a = a.clone();
        let address_b = address_b.clone();
        tokio::spawn(async move {
            lxvirt_tests::enter_capture(
                &a,
                &["ping", "-c", "20", "-i", "0.1", "-W", "1", &address_b],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.crash_and_restart().await.unwrap();
    let (code, out) = pinger.await.unwrap().unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0% packet loss"), "{out}");

    let manager = env.manager().await.unwrap();
    let path = manager.network_lookup_by_name("lxvtkill").await.unwrap();
    let net = NetworkProxy::builder(&env.connection)
        .path(path)
        .build()
        .await
        .unwrap();
    assert!(net.active().await.unwrap());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        dnsmasq,
        "the same dnsmasq serves"
    );
    // It still gives leases after the restart, the same address as
    // before (the assignments are rebuilt from the port records).
    let a = env
        .domain(manager.lookup_by_name("vkilla").await.unwrap())
        .await
        .unwrap();
    let address_a = dhcp(&env, &a).await;
    assert_eq!(address_a, first_a);
    inside(&env, &a, &["ping", "-c", "1", "-W", "2", &address_b]).await;
    let refused = net.destroy(0).await.unwrap_err().to_string();
    assert!(refused.contains("vkilla, vkillb"), "{refused}");
    net.destroy(1).await.unwrap();
    assert!(!host_link_exists("lxvtbr65"));
}

/// The host-side name the live XML gives the first interface.
async fn host_end(domain: &DomainProxy<'_>) -> String {
    let live = domain.get_xml(0).await.unwrap();
    live.split("<target dev='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no <target dev> in the live XML: {live}"))
        .to_owned()
}

fn dnsmasq_of(env: &ContainerEnv, network: &str) -> Option<i32> {
    std::fs::read_to_string(env.run_dir().join(format!("network/{network}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn process_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn cycles_and_a_daemon_kill_leave_no_link_rule_or_dnsmasq_behind() {
    let Some(mut env) = env().await else { return };
    let net = network(
        &env,
        "<network><name>lxvtcyc</name><bridge name='lxvtbr66'/><forward mode='nat'/>\
         <ip address='10.251.66.1' prefix='24'><dhcp><range start='10.251.66.100' end='10.251.66.199'/></dhcp></ip>\
         </network>",
    )
    .await;
    // Networks themselves: each start makes a bridge, a table and a
    // dnsmasq; each destroy takes all three away.
    let mut servers = Vec::new();
    for _ in 0..10 {
        net.start().await.unwrap();
        servers.extend(dnsmasq_of(&env, "lxvtcyc"));
        net.destroy(0).await.unwrap();
        assert!(!host_link_exists("lxvtbr66"));
        assert!(!nft_table_exists("lxvirt-lxvtcyc"));
    }
    assert_eq!(servers.len(), 10);
    eventually("every dnsmasq to exit", || {
        servers.iter().all(|pid| !process_exists(*pid))
    })
    .await;

    // A container on it, started and destroyed 300 times.
    net.start().await.unwrap();
    let cycler = define(&env, &xml(&env, "vcycle", &on_network("lxvtcyc"))).await;
    let mut ends = Vec::new();
    for _ in 0..300 {
        cycler.start().await.unwrap();
        ends.push(host_end(&cycler).await);
        cycler.destroy().await.unwrap();
    }
    let left: Vec<&String> = ends.iter().filter(|n| host_link_exists(n)).collect();
    assert!(
        left.is_empty(),
        "{} of 300 host ends left: {left:?}",
        left.len()
    );

    // The daemon is killed with a container on the network; the new one
    // takes both over, and destroying them leaves nothing.
    cycler.start().await.unwrap();
    let end = host_end(&cycler).await;
    let server = dnsmasq_of(&env, "lxvtcyc").unwrap();
    env.crash_and_restart().await.unwrap();
    let manager = env.manager().await.unwrap();
    let cycler = env
        .domain(manager.lookup_by_name("vcycle").await.unwrap())
        .await
        .unwrap();
    assert_eq!(cycler.state().await.unwrap(), "running");
    cycler.destroy().await.unwrap();
    let path = manager.network_lookup_by_name("lxvtcyc").await.unwrap();
    let net = NetworkProxy::builder(&env.connection)
        .path(path)
        .build()
        .await
        .unwrap();
    net.destroy(0).await.unwrap();
    assert!(!host_link_exists(&end));
    assert!(!host_link_exists("lxvtbr66"));
    assert!(!nft_table_exists("lxvirt-lxvtcyc"));
    eventually("dnsmasq to exit", || !process_exists(server)).await;
}

#[tokio::test]
async fn an_autostart_network_comes_up_before_the_autostart_domains_on_it() {
    let Some(mut env) = env().await else { return };
    let net = network(
        &env,
        "<network><name>lxvtauto</name><bridge name='lxvtbr67'/>\
         <ip address='10.251.67.1' prefix='24'/></network>",
    )
    .await;
    net.set_autostart(true).await.unwrap();
    let domain = define(
        &env,
        &xml(
            &env,
            "vauto",
            "<interface type='network'><source network='lxvtauto'/><ip address='10.251.67.2' prefix='24'/></interface>",
        ),
    )
    .await;
    domain.set_autostart(true).await.unwrap();
    // A new boot: the daemon starts on an empty run directory.
    std::fs::remove_file(env.run_dir().join("autostarted")).ok();
    env.crash_and_restart().await.unwrap();
    let manager = env.manager().await.unwrap();
    let domain = env
        .domain(manager.lookup_by_name("vauto").await.unwrap())
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..200 {
        state = domain.state().await.unwrap();
        if state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state, "running");
    inside(
        &env,
        &domain,
        &["ping", "-c", "1", "-W", "2", "10.251.67.1"],
    )
    .await;
    domain.destroy().await.unwrap();
    let path = manager.network_lookup_by_name("lxvtauto").await.unwrap();
    NetworkProxy::builder(&env.connection)
        .path(path)
        .build()
        .await
        .unwrap()
        .destroy(0)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_default_network_of_a_fresh_host_serves_containers_out_of_the_box() {
    let Some(env) = env_with(&["--default-network=true"]).await else {
        return;
    };
    install_udhcpc_script(&env);
    let manager = env.manager().await.unwrap();
    let path = manager.network_lookup_by_name("default").await.unwrap();
    let net = NetworkProxy::builder(&env.connection)
        .path(path)
        .build()
        .await
        .unwrap();
    assert!(net.autostart().await.unwrap());
    let mut active = false;
    for _ in 0..200 {
        active = net.active().await.unwrap();
        if active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(active, "the default network never came up");
    let definition = net.get_xml(0).await.unwrap();
    let prefix = definition
        .split(" address='")
        .nth(1)
        .and_then(|rest| rest.split_once("1'"))
        .map(|(p, _)| p.to_owned())
        .unwrap_or_else(|| panic!("{definition}"));
    assert!(prefix.starts_with("192.168."), "{definition}");

    let outside = Outside::new("dflt", "lxvtout4", 204);
    let server = outside.serve("10.251.204.2", 7074);
    let a = define(&env, &xml(&env, "vdefa", &on_network("default"))).await;
    let b = define(&env, &xml(&env, "vdefb", &on_network("default"))).await;
    a.start().await.unwrap();
    b.start().await.unwrap();
    let address_a = dhcp(&env, &a).await;
    let address_b = dhcp(&env, &b).await;
    assert!(address_a.starts_with(&prefix) && address_b.starts_with(&prefix));
    let gateway = format!("{prefix}1");
    let answer = inside(&env, &a, &["nslookup", "vdefb", &gateway]).await;
    assert!(answer.contains(&address_b), "{answer}");
    let reply = inside(&env, &a, &["nc", "-w", "3", "10.251.204.2", "7074"]).await;
    assert!(reply.contains("hello from outside"), "{reply}");
    assert_eq!(
        server
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .to_string(),
        "10.251.204.1"
    );
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    net.destroy(0).await.unwrap();
}

#[tokio::test]
async fn an_interface_is_plugged_into_and_out_of_a_running_container() {
    let Some(env) = env().await else { return };
    let net = network(
        &env,
        "<network><name>lxvthot</name><bridge name='lxvtbr68'/>\
         <ip address='10.251.68.1' prefix='24'/></network>",
    )
    .await;
    net.start().await.unwrap();
    let xml = env.busybox_xml("vhot", "sleep 1000", "<features><privnet/></features>");
    let domain = define(&env, &xml).await;
    domain.start().await.unwrap();
    let (code, _) = env
        .enter(&domain, &["ping", "-c", "1", "-W", "1", "10.251.68.1"])
        .await;
    assert_ne!(code, 0, "no interface yet");

    // Live: the running container gets it, up and addressed, at once.
    domain
        .attach_device(
            "<interface type='network'><source network='lxvthot'/><mac address='52:54:00:68:00:05'/>\
             <ip address='10.251.68.5' prefix='24'/></interface>",
            1,
        )
        .await
        .unwrap();
    // Up to three echoes: on a loaded machine the first one may go while
    // the neighbour entry is being resolved (seen once in CI). All three
    // lost once (in a run of the whole file): what the container and the
    // host had is printed with the failure.
    let (code, out) = env
        .enter(&domain, &["ping", "-c", "3", "-W", "2", "10.251.68.1"])
        .await;
    if code != 0 {
        let (_, addresses) = env.enter(&domain, &["ip", "addr"]).await;
        let ports = Command::new("ip")
            .args(["-d", "link", "show", "master", "lxvtbr68"])
            .output()
            .unwrap();
        panic!(
            "no echo from the network's address: {out}\ninside: {addresses}\n\
             the bridge's ports: {}\nthe port filter: {}",
            String::from_utf8_lossy(&ports.stdout),
            port_filter("lxvthot")
        );
    }
    let live = domain.get_xml(0).await.unwrap();
    assert!(
        live.contains("52:54:00:68:00:05") && live.contains("<guest dev='eth0'/>"),
        "{live}"
    );
    assert!(
        !domain
            .get_xml(2)
            .await
            .unwrap()
            .contains("52:54:00:68:00:05")
    );
    let end = host_end(&domain).await;
    assert!(host_link_exists(&end));

    // The CLI: a second one, then both out again.
    let cli = |args: &[&str]| {
        let out = lxvirt_tests::lxvirt(&env.bus.address, args).unwrap();
        assert!(out.status.success(), "lxvirt {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&[
        "attach-interface",
        "vhot",
        "network",
        "lxvthot",
        "--mac",
        "52:54:00:68:00:06",
        "--live",
    ]);
    let links = inside(&env, &domain, &["ip", "-o", "link"]).await;
    assert!(links.contains("eth1"), "{links}");
    let list = cli(&["domiflist", "vhot"]);
    assert!(list.contains("52:54:00:68:00:06"), "{list}");
    let ambiguous =
        lxvirt_tests::lxvirt(&env.bus.address, &["detach-interface", "vhot", "network"]).unwrap();
    assert!(!ambiguous.status.success());
    assert!(
        String::from_utf8_lossy(&ambiguous.stderr).contains("name one with --mac"),
        "{ambiguous:?}"
    );
    cli(&[
        "detach-interface",
        "vhot",
        "network",
        "--mac",
        "52:54:00:68:00:06",
    ]);
    cli(&["detach-interface", "vhot", "network"]);
    let links = inside(&env, &domain, &["ip", "-o", "link"]).await;
    assert!(
        !links.contains("eth0") && !links.contains("eth1"),
        "{links}"
    );
    eventually("the host end to go", || !host_link_exists(&end)).await;
    assert!(!domain.get_xml(0).await.unwrap().contains("<interface"));
    eventually("the detached ports to leave the filter", || {
        elements("lxvthot", "allowed-mac").is_empty()
    })
    .await;

    // Config: kept in the definition, there at the next start.
    domain
        .attach_device(
            "<interface type='network'><source network='lxvthot'/><ip address='10.251.68.7' prefix='24'/></interface>",
            2,
        )
        .await
        .unwrap();
    assert!(!domain.get_xml(0).await.unwrap().contains("10.251.68.7"));
    domain.destroy().await.unwrap();
    domain.start().await.unwrap();
    inside(
        &env,
        &domain,
        &["ping", "-c", "1", "-W", "2", "10.251.68.1"],
    )
    .await;
    domain.destroy().await.unwrap();
    net.destroy(0).await.unwrap();
}

/// `ip -batch -` of `lines`; panics on failure.
fn ip_batch(lines: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch failed");
}

#[tokio::test]
async fn a_network_goes_past_the_ports_one_bridge_can_hold() {
    let Some(env) = env().await else { return };
    let net = network(
        &env,
        "<network><name>lxvtfull</name><bridge name='lxvtbr69'/>\
         <ip address='10.251.69.1' prefix='24'/></network>",
    )
    .await;
    net.start().await.unwrap();
    // The bridge filled by hand to lxvirt's limit per bridge (the kernel's
    // is 1,024) with veths of the test's own.
    let filler: String = (0..lxvirtd::net::virtual_network::PORTS_PER_BRIDGE)
        .map(|i| format!("link add lxvtf{i} type veth peer name lxvtg{i}\nlink set lxvtf{i} master lxvtbr69\n"))
        .collect();
    struct Filler;
    impl Drop for Filler {
        fn drop(&mut self) {
            let lines: String = (0..lxvirtd::net::virtual_network::PORTS_PER_BRIDGE)
                .map(|i| format!("link del lxvtf{i}\n"))
                .collect();
            let _ = Command::new("ip")
                .args(["-force", "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map(|mut c| {
                    use std::io::Write;
                    let _ = c.stdin.take().map(|mut s| s.write_all(lines.as_bytes()));
                    let _ = c.wait();
                });
        }
    }
    let _filler = Filler;
    ip_batch(&filler);

    let domain = define(
        &env,
        &xml(
            &env,
            "vfull",
            "<interface type='network'><source network='lxvtfull'/><ip address='10.251.69.2' prefix='24'/></interface>",
        ),
    )
    .await;
    domain.start().await.unwrap();
    // Its port is on a second-level bridge chained to the network's, and
    // it reaches the network's address through it.
    let end = host_end(&domain).await;
    let (_, master) = ip(&["-o", "link", "show", "dev", &end]);
    let second = master
        .split(" master ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{master}"))
        .to_owned();
    assert!(second.starts_with("lxvs"), "{master}");
    inside(
        &env,
        &domain,
        &["ping", "-c", "1", "-W", "2", "10.251.69.1"],
    )
    .await;
    domain.destroy().await.unwrap();
    net.destroy(0).await.unwrap();
    assert!(
        !host_link_exists(&second),
        "the second-level bridge goes with the network"
    );
}

/// A network namespace of the test's own, joined to the host by the veth
/// `host_end` (up, attached to nothing), with `address` on the far end.
struct Stranger {
    netns: String,
    _devices: HostDevices,
}

impl Stranger {
    fn new(host_end: &str, address: &str) -> Stranger {
        let netns = format!("lxvt-{host_end}-{}", std::process::id());
        let _ = ip(&["netns", "del", &netns]);
        assert!(ip(&["netns", "add", &netns]).0);
        let mut devices = HostDevices::new();
        devices.add(
            host_end,
            &["type", "veth", "peer", "name", "eth0", "netns", &netns],
        );
        for args in [
            vec!["addr", "add", address, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let mut all = vec!["-n", netns.as_str()];
            all.extend(args);
            let out = ip(&all);
            assert!(out.0, "ip {all:?}: {}", out.1);
        }
        Stranger {
            netns,
            _devices: devices,
        }
    }

    /// Whether a ping from inside gets an answer.
    fn pings(&self, target: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                target,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// Runs a shell script inside: (exit code, output).
async fn sh(env: &ContainerEnv, domain: &DomainProxy<'_>, script: &str) -> (i32, String) {
    env.enter(domain, &["sh", "-c", &format!("{script} 2>&1")])
        .await
}

/// Runs a shell script inside; panics with its output unless it succeeds.
async fn sh_ok(env: &ContainerEnv, domain: &DomainProxy<'_>, script: &str) {
    let (code, out) = sh(env, domain, script).await;
    assert_eq!(code, 0, "{script}: {out}");
}

#[tokio::test]
async fn a_container_cannot_take_another_ports_mac_or_address() {
    let Some(env) = env().await else { return };
    install_udhcpc_script(&env);
    let net = network(
        &env,
        "<network><name>lxvtspf</name><bridge name='lxvtbr69'/>\
         <ip address='10.251.69.1' prefix='24'><dhcp><range start='10.251.69.100' end='10.251.69.150'/></dhcp></ip>\
         </network>",
    )
    .await;
    net.start().await.unwrap();
    assert!(nft_table_exists("lxvirt-lxvtspf"));
    let port = |mac: &str| {
        format!(
            "<interface type='network'><source network='lxvtspf'/><mac address='{mac}'/></interface>"
        )
    };
    let (mac_a, mac_b) = ("52:54:00:69:00:0a", "52:54:00:69:00:0b");
    let a = define(&env, &xml(&env, "vspfa", &port(mac_a))).await;
    let b = define(&env, &xml(&env, "vspfb", &port(mac_b))).await;
    a.start().await.unwrap();
    b.start().await.unwrap();

    // lxvirt assigned each the lowest free address, and DHCP hands out
    // exactly that one.
    let pinned_a = pinned(&env, "lxvtspf", mac_a);
    let pinned_b = pinned(&env, "lxvtspf", mac_b);
    assert_eq!(
        [pinned_a.as_str(), pinned_b.as_str()],
        ["10.251.69.100", "10.251.69.101"]
    );
    let address_a = dhcp(&env, &a).await;
    let address_b = dhcp(&env, &b).await;
    assert_eq!([&address_a, &address_b], [&pinned_a, &pinned_b]);
    sh_ok(&env, &a, &format!("ping -c 1 -W 2 {address_b}")).await;
    sh_ok(&env, &b, "ping -c 1 -W 2 10.251.69.1").await;

    // A device on the bridge in the network's port group that lxvirt
    // did not plug passes nothing: the filter goes by the group, so a
    // port is held from its first frame, before its elements are in.
    let end_a = host_end(&a).await;
    let shown = ip(&["-o", "link", "show", "dev", &end_a]).1;
    let group = shown
        .split_whitespace()
        .skip_while(|w| *w != "group")
        .nth(1)
        .unwrap_or_else(|| panic!("no group: {shown}"))
        .to_owned();
    assert!(group.parse::<u32>().is_ok_and(|g| g >= 1 << 30), "{shown}");
    let stranger = Stranger::new("lxvtspfx", "10.251.69.200/24");
    for args in [
        vec!["link", "set", "lxvtspfx", "group", group.as_str()],
        vec!["link", "set", "lxvtspfx", "master", "lxvtbr69"],
    ] {
        let out = ip(&args);
        assert!(out.0, "ip {args:?}: {}", out.1);
    }
    assert!(
        !stranger.pings("10.251.69.1"),
        "a stranger in the port group passed"
    );
    // Out of the group it is an ordinary bridge port, not filtered.
    assert!(ip(&["link", "set", "lxvtspfx", "group", "default"]).0);
    // (Its failed neighbour entry for the bridge may take a moment.)
    eventually("the stranger out of the group to reach the bridge", || {
        stranger.pings("10.251.69.1")
    })
    .await;
    drop(stranger);

    // Another MAC on A's eth0: nothing it sends passes.
    let before = drops("lxvtspf", "port", "allowed-mac");
    sh_ok(&env, &a, "ip link set eth0 address 52:54:00:69:00:0c").await;
    let (code, out) = sh(&env, &a, &format!("ping -c 1 -W 1 {address_b}")).await;
    assert_ne!(code, 0, "A reached B from another MAC: {out}");
    let after = drops("lxvtspf", "port", "allowed-mac");
    assert!(after > before, "{before} → {after}");
    sh_ok(&env, &a, &format!("ip link set eth0 address {mac_a}")).await;

    // B's address as a second one on A: neither IPv4 nor ARP from it
    // passes, and the host goes on knowing B's address by B's MAC. (An
    // echo from B's address gets no answer either way, as the host sends
    // it to B: the counters tell.) A's entry for the bridge is made fresh
    // first, so that the echo leaves without an ARP request before it.
    sh_ok(&env, &a, &format!("ip addr add {address_b}/32 dev eth0")).await;
    sh_ok(&env, &a, "ping -c 1 -W 2 10.251.69.1").await;
    let before = drops("lxvtspf", "ipv4-from-port", "checked-ipv4");
    let (code, out) = sh(
        &env,
        &a,
        &format!("ping -c 1 -W 1 -I {address_b} 10.251.69.1"),
    )
    .await;
    assert_ne!(code, 0, "the bridge answered A as B: {out}");
    let after = drops("lxvtspf", "ipv4-from-port", "checked-ipv4");
    assert!(after > before, "{before} → {after}");
    // The host's entry for B ages past the neighbour lock time (1 s), so a
    // gratuitous ARP that got through would put A's MAC in it.
    sh_ok(&env, &b, "ping -c 1 -W 2 10.251.69.1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = drops("lxvtspf", "arp-from-port", "checked-ipv4");
    let (_, out) = sh(
        &env,
        &a,
        &format!("arping -U -c 2 -w 1 -I eth0 {address_b}"),
    )
    .await;
    let after = drops("lxvtspf", "arp-from-port", "checked-ipv4");
    assert!(
        after > before,
        "no gratuitous ARP dropped ({before} → {after}): {out}"
    );
    let neighbour = ip(&["neigh", "show", &address_b, "dev", "lxvtbr69"]).1;
    assert!(
        neighbour.contains(mac_b),
        "B's address now names: {neighbour}"
    );
    sh_ok(&env, &b, "ping -c 1 -W 2 10.251.69.1").await;

    // A as it was: all fine again.
    sh_ok(&env, &a, &format!("ip addr del {address_b}/32 dev eth0")).await;
    sh_ok(&env, &a, &format!("ping -c 1 -W 2 {address_b}")).await;
    sh_ok(&env, &a, "ping -c 1 -W 2 10.251.69.1").await;

    // Ports leave the filter with their domains; the tables go with the
    // network, and nothing of it is left in the ruleset.
    assert!(
        elements("lxvtspf", "allowed-mac")
            .iter()
            .any(|e| e.contains(&end_a))
    );
    a.destroy().await.unwrap();
    b.destroy().await.unwrap();
    eventually("the ports' elements to go", || {
        elements("lxvtspf", "allowed-mac").is_empty()
            && elements("lxvtspf", "allowed-ipv4").is_empty()
            && elements("lxvtspf", "held-ipv4").is_empty()
    })
    .await;
    net.destroy(0).await.unwrap();
    assert!(!nft_table_exists("lxvirt-lxvtspf"));
    let ruleset = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(!ruleset.contains("lxvirt-lxvtspf"), "{ruleset}");
}

#[tokio::test]
async fn a_dnsmasq_that_dies_is_started_again() {
    let Some(env) = env().await else { return };
    install_udhcpc_script(&env);
    let net = network(
        &env,
        "<network><name>lxvtdns</name><bridge name='lxvtbr71'/>\
         <ip address='10.251.71.1' prefix='24'><dhcp><range start='10.251.71.100' end='10.251.71.150'/></dhcp></ip>\
         </network>",
    )
    .await;
    net.start().await.unwrap();
    let first = dnsmasq_of(&env, "lxvtdns").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("a new dnsmasq", || {
        dnsmasq_of(&env, "lxvtdns").is_some_and(|pid| pid != first && process_exists(pid))
    })
    .await;
    // It serves: a container gets a lease from it.
    let domain = define(&env, &xml(&env, "vdns", &on_network("lxvtdns"))).await;
    domain.start().await.unwrap();
    let address = dhcp(&env, &domain).await;
    assert!(address.starts_with("10.251.71."), "{address}");
    domain.destroy().await.unwrap();
    net.destroy(0).await.unwrap();
}

/// The IPv6 addresses of link `dev` as `ip -6 -o addr` prints them, from
/// inside a container or (with `None`) on the host.
async fn ipv6_addresses(env: &ContainerEnv, domain: Option<&DomainProxy<'_>>, dev: &str) -> String {
    match domain {
        Some(domain) => {
            sh(env, domain, &format!("ip -6 -o addr show dev {dev}"))
                .await
                .1
        }
        None => ip(&["-6", "-o", "addr", "show", "dev", dev]).1,
    }
}

/// A port on a network without IPv6 keeps quiet: no link-local address
/// inside (its autoconfiguration would multicast to every other port of
/// the network) unless its interface has an IPv6 address of its own, and
/// no host end of a bridge port has one; a network with IPv6 gives its
/// ports their link-local addresses.
#[tokio::test]
async fn ports_of_a_network_without_ipv6_send_no_ipv6_autoconfiguration() {
    let Some(env) = env().await else { return };
    let four = network(
        &env,
        "<network><name>lxvtfour</name><bridge name='lxvtbr74'/>\
         <ip address='10.251.74.1' prefix='24'/></network>",
    )
    .await;
    let six = network(
        &env,
        "<network><name>lxvtsix</name><bridge name='lxvtbr76'/>\
         <ip address='10.251.76.1' prefix='24'/><ip family='ipv6' address='fd00:251:76::1' prefix='64'/></network>",
    )
    .await;
    four.start().await.unwrap();
    six.start().await.unwrap();
    let quiet = define(&env, &xml(&env, "vquiet", &on_network("lxvtfour"))).await;
    let own = define(
        &env,
        &xml(
            &env,
            "vown",
            "<interface type='network'><source network='lxvtfour'/>\
             <ip address='fd00:251:74::2' prefix='64'/></interface>",
        ),
    )
    .await;
    let dual = define(&env, &xml(&env, "vdual", &on_network("lxvtsix"))).await;
    for domain in [&quiet, &own, &dual] {
        domain.start().await.unwrap();
    }
    // Link-local addresses come once the link has a carrier; give the
    // kernel a moment to make them where it will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inside = ipv6_addresses(&env, Some(&quiet), "eth0").await;
    assert!(!inside.contains("fe80"), "{inside}");
    let inside = ipv6_addresses(&env, Some(&own), "eth0").await;
    assert!(
        inside.contains("fe80") && inside.contains("fd00:251:74::2"),
        "{inside}"
    );
    let inside = ipv6_addresses(&env, Some(&dual), "eth0").await;
    assert!(inside.contains("fe80"), "{inside}");
    for domain in [&quiet, &own, &dual] {
        let end = host_end(domain).await;
        let host = ipv6_addresses(&env, None, &end).await;
        assert!(!host.contains("fe80"), "host end {end}: {host}");
    }
    for domain in [&quiet, &own, &dual] {
        domain.destroy().await.unwrap();
    }
    four.destroy(0).await.unwrap();
    six.destroy(0).await.unwrap();
}
