//! `lxvirt-bench networks [RUNS]`: what virtual networks cost, each beside
//! its floor made by hand with `ip`:
//! - a container start with one `type='network'` interface against one
//!   without, and a veth pair plus bridge port made by hand;
//! - a network's start (bridge, nftables table, dnsmasq) and destroy;
//! - TCP throughput (iperf3, 10 s) container → container over the
//!   network's bridge and container → host, against two namespaces on a
//!   bridge made by hand.
//!
//! Addresses are in 10.251.210.0/24 (the network) and 10.251.211.0/24
//! (the hand-made path); no packet leaves namespaces the bench made.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lxvirt_tests::{DaemonEnv, busybox_root, enter_capture};
use lxvirtd::dbus::proxy::{DomainProxy, NetworkProxy};

use super::{median, ms, percentile};
use lxvirtd::net::virtual_network::PORTS_PER_BRIDGE;

/// The pause after each destroy, ms.
const SETTLE_MS: u64 = 100;

/// iperf3 runs per path; the median is shown.
const THROUGHPUT_RUNS: usize = 5;

/// Seconds per iperf3 run: one 3-second stream swung by ±15 % from run to
/// run on this machine.
const THROUGHPUT_SECONDS: &str = "10";

const NETWORK: &str = "<network><name>lxvtbench</name><bridge name='lxvtbrb0'/><forward mode='nat'/>\
     <ip address='10.251.210.1' prefix='24'><dhcp><range start='10.251.210.100' end='10.251.210.199'/></dhcp></ip>\
     </network>";

/// `ip ARGS…`, failing on failure.
fn ip(args: &[&str]) -> Result<()> {
    let status = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("ip {}: {status}", args.join(" "));
    }
    Ok(())
}

/// The hand-made path: namespaces `lxvtbA`/`lxvtbB` and a bridge
/// `lxvtbrh0`, each namespace on it through a veth; removed on drop.
struct HandMade;

impl HandMade {
    fn create() -> Result<HandMade> {
        let made = HandMade;
        ip(&["link", "add", "lxvtbrh0", "type", "bridge"])?;
        ip(&["addr", "add", "10.251.211.1/24", "dev", "lxvtbrh0"])?;
        ip(&["link", "set", "lxvtbrh0", "up"])?;
        for (ns, host, address) in [
            ("lxvtbA", "lxvtbha", "10.251.211.2/24"),
            ("lxvtbB", "lxvtbhb", "10.251.211.3/24"),
        ] {
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", host, "master", "lxvtbrh0", "up"])?;
            ip(&["-n", ns, "addr", "add", address, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(made)
    }
}

impl Drop for HandMade {
    fn drop(&mut self) {
        for args in [
            &["netns", "del", "lxvtbA"][..],
            &["netns", "del", "lxvtbB"][..],
            &["link", "del", "lxvtbrh0"][..],
        ] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}

/// A veth pair with one end in a namespace and the other a bridge port,
/// made and removed by hand with `ip`: the floor of an interface.
fn hand_made_port(runs: usize) -> Result<Vec<f64>> {
    ip(&["netns", "add", "lxvtbP"])?;
    let mut times = Vec::with_capacity(runs);
    let result = (|| {
        for _ in 0..runs {
            let begin = Instant::now();
            ip(&[
                "link", "add", "lxvtbp0", "type", "veth", "peer", "name", "eth0", "netns", "lxvtbP",
            ])?;
            ip(&["link", "set", "lxvtbp0", "master", "lxvtbrb0", "up"])?;
            ip(&[
                "-n",
                "lxvtbP",
                "addr",
                "add",
                "10.251.210.250/24",
                "dev",
                "eth0",
            ])?;
            ip(&["-n", "lxvtbP", "link", "set", "eth0", "up"])?;
            times.push(ms(begin.elapsed()));
            ip(&["link", "del", "lxvtbp0"])?;
        }
        Ok(())
    })();
    let _ = Command::new("ip").args(["netns", "del", "lxvtbP"]).status();
    result.map(|()| times)
}

/// Most of the kernel's part of the floor: the veth pair with its peer
/// made in the namespace, on the bridge and up, in one `ip` run timed from
/// spawn to exit, less the median run of an `ip` that does nothing.
fn kernel_port(runs: usize) -> Result<Vec<f64>> {
    ip(&["netns", "add", "lxvtbK"])?;
    let timed = |args: &[&str]| -> Result<f64> {
        let begin = Instant::now();
        ip(args)?;
        Ok(ms(begin.elapsed()))
    };
    let mut times = Vec::with_capacity(runs);
    let result = (|| {
        let mut idle = Vec::with_capacity(runs);
        for _ in 0..runs {
            idle.push(timed(&["-batch", "/dev/null"])?);
            times.push(timed(&[
                "link", "add", "lxvtbk0", "master", "lxvtbrb0", "up", "type", "veth", "peer",
                "name", "eth0", "netns", "lxvtbK",
            ])?);
            ip(&["link", "del", "lxvtbk0"])?;
        }
        let spawn = median(&mut idle);
        for t in &mut times {
            *t = (*t - spawn).max(0.0);
        }
        Ok(())
    })();
    let _ = Command::new("ip").args(["netns", "del", "lxvtbK"]).status();
    result.map(|()| times)
}

/// iperf3 for 3 s from `client` (a command prefix) to `server`; Gbit/s
/// received.
fn iperf3(client: &[&str], server: &str) -> Result<f64> {
    let mut argv: Vec<&str> = client.to_vec();
    argv.extend([
        "/usr/bin/iperf3",
        "-c",
        server,
        "-t",
        THROUGHPUT_SECONDS,
        "-J",
    ]);
    let out = Command::new(argv[0]).args(&argv[1..]).output()?;
    gbits(&String::from_utf8_lossy(&out.stdout))
}

fn gbits(json: &str) -> Result<f64> {
    let value: serde_json::Value = serde_json::from_str(json).context("iperf3 gave no JSON")?;
    value["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("no throughput in iperf3's answer: {json}"))
}

/// `iperf3 -s` in the background (`-1`: one test), with a command prefix.
fn iperf3_server(prefix: &[&str], bind: &str) -> Result<std::process::Child> {
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend(["/usr/bin/iperf3", "-s", "-1", "-B", bind]);
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(child)
}

pub async fn bench(runs: usize) -> Result<()> {
    let env = DaemonEnv::start(&[]).await?;
    let rootfs = env.dir.path().join("rootfs");
    busybox_root(&rootfs);
    let manager = env.manager().await?;
    let network = NetworkProxy::builder(&env.connection)
        .path(manager.network_define_xml(NETWORK).await?)
        .build()
        .await?;

    // A network's start and destroy.
    let mut net_start = Vec::new();
    let mut net_destroy = Vec::new();
    for _ in 0..runs.min(30) {
        let begin = Instant::now();
        network.start().await?;
        net_start.push(ms(begin.elapsed()));
        let begin = Instant::now();
        network.destroy(0).await?;
        net_destroy.push(ms(begin.elapsed()));
    }
    network.start().await?;

    let busybox = |name: &str, devices: &str| {
        format!(
            "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os><features><privnet/></features>\
             <devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             {devices}<console type='pty'/></devices></domain>",
            root = rootfs.display()
        )
    };
    let port = "<interface type='network'><source network='lxvtbench'/><ip address='10.251.210.2' prefix='24'/></interface>";
    // The same veth on the same bridge, without the network's side (no
    // port record, DHCP host, filter elements): what is lxvirt's own in
    // a network port shows as the difference.
    let bridge_port = "<interface type='bridge'><source bridge='lxvtbrb0'/><ip address='10.251.210.3' prefix='24'/></interface>";
    let mut domains = Vec::new();
    // Those without an interface after the ones with take the teardown of
    // their namespace (a veth's deletion waits for RCU) on themselves, so
    // that each with an interface starts after one without, as the first
    // does: they compare as equals back to back.
    for (name, devices) in [
        ("bench-plain", ""),
        ("bench-port", port),
        ("bench-next", ""),
        ("bench-bridge", bridge_port),
        ("bench-next2", ""),
    ] {
        let domain = env
            .domain(manager.define_xml(&busybox(name, devices)).await?)
            .await?;
        for _ in 0..5 {
            domain.start().await?;
            domain.destroy().await?;
        }
        domains.push(domain);
    }
    // A pause after each destroy: the kernel tears a network namespace
    // down asynchronously (a veth with it), and the next start would pay
    // for the previous container's teardown instead of its own.
    // LXVIRT_BENCH_SETTLE_MS overrides it (0: back to back).
    let settle_ms = std::env::var("LXVIRT_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SETTLE_MS);
    let settle = std::time::Duration::from_millis(settle_ms);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); domains.len()];
    for _ in 0..runs {
        for (domain, starts) in domains.iter().zip(times.iter_mut()) {
            let begin = Instant::now();
            domain.start().await?;
            starts.push(ms(begin.elapsed()));
            domain.destroy().await?;
            tokio::time::sleep(settle).await;
        }
    }
    let mut by_hand = hand_made_port(runs)?;
    let mut kernel = kernel_port(runs)?;

    // Throughput: containers on the host's root (iperf3 is there).
    let on_host_root = |name: &str, address: &str| {
        format!(
            "<domain type='lxc'><name>{name}</name><memory unit='MiB'>256</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
             <devices><interface type='network'><source network='lxvtbench'/><ip address='{address}' prefix='24'/></interface>\
             <console type='pty'/></devices></domain>"
        )
    };
    let server = env
        .domain(
            manager
                .define_xml(&on_host_root("bench-srv", "10.251.210.10"))
                .await?,
        )
        .await?;
    let client = env
        .domain(
            manager
                .define_xml(&on_host_root("bench-cli", "10.251.210.11"))
                .await?,
        )
        .await?;
    server.start().await?;
    client.start().await?;
    let hand = HandMade::create()?;
    // Interleaved, so that both paths see the same machine.
    let (mut pair, mut host, mut hand_pair, mut hand_host) = (vec![], vec![], vec![], vec![]);
    // LXVIRT_BENCH_THROUGHPUT_RUNS: more rounds on a noisy machine.
    let throughput_runs = std::env::var("LXVIRT_BENCH_THROUGHPUT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(THROUGHPUT_RUNS);
    for _ in 0..throughput_runs {
        pair.push(container_iperf3(&server, &client, "10.251.210.10").await?);
        let mut host_server = iperf3_server(&[], "10.251.210.1")?;
        host.push(container_client(&client, "10.251.210.1").await?);
        let _ = host_server.wait();
        let mut srv = iperf3_server(&["ip", "netns", "exec", "lxvtbA"], "10.251.211.2")?;
        hand_pair.push(iperf3(&["ip", "netns", "exec", "lxvtbB"], "10.251.211.2")?);
        let _ = srv.wait();
        let mut srv = iperf3_server(&[], "10.251.211.1")?;
        hand_host.push(iperf3(&["ip", "netns", "exec", "lxvtbB"], "10.251.211.1")?);
        let _ = srv.wait();
    }
    drop(hand);
    server.destroy().await?;
    client.destroy().await?;
    network.destroy(0).await?;
    // Run by run: each pair of runs saw the same moment of the machine.
    let ratios = |ours: &[f64], theirs: &[f64]| -> String {
        ours.iter()
            .zip(theirs)
            .map(|(a, b)| format!("{:.0} %", 100.0 * a / b))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pair_ratios = ratios(&pair, &hand_pair);
    let host_ratios = ratios(&host, &hand_host);
    let container_to_container = median(&mut pair);
    let container_to_host = median(&mut host);
    let hand_pair = median(&mut hand_pair);
    let hand_host = median(&mut hand_host);

    let [plain, with_port, next, with_bridge, _] = &mut times[..] else {
        bail!("five modes");
    };
    // Each round's starts ran within a few tens of milliseconds of each
    // other: the median of their differences is less moved by a machine
    // whose speed drifts than the difference of the medians.
    let paired = |with: &[f64]| {
        let mut differences: Vec<f64> = with.iter().zip(plain.iter()).map(|(w, p)| w - p).collect();
        median(&mut differences)
    };
    let (paired_port, paired_bridge) = (paired(with_port), paired(with_bridge));
    println!(
        "lxvirt-bench networks: {runs} runs (network start: {} runs), {settle_ms} ms after each destroy; throughput: median of {throughput_runs}",
        net_start.len()
    );
    println!();
    println!("| measure | median | p90 |");
    println!("| --- | --- | --- |");
    let row = |label: &str, v: &mut Vec<f64>| {
        println!(
            "| {label} | {:.2} ms | {:.2} ms |",
            median(v),
            percentile(v, 0.9)
        );
    };
    row("lxvirt start, no interface (private netns)", plain);
    row(
        "lxvirt start, one <interface type='network'> (address)",
        with_port,
    );
    row(
        "lxvirt start, no interface, right after that one's destroy",
        next,
    );
    row(
        "lxvirt start, one <interface type='bridge'> on the same bridge (address)",
        with_bridge,
    );
    row(
        "floor: veth pair + bridge port + address by hand (4 × ip)",
        &mut by_hand,
    );
    row(
        "kernel: veth pair, peer in the namespace, on the bridge, up (one ip, less ip's own run)",
        &mut kernel,
    );
    row(
        "network start: bridge, nftables table, dnsmasq (Start → serving)",
        &mut net_start,
    );
    row("network destroy", &mut net_destroy);
    println!();
    println!(
        "one type='network' interface adds {:.2} ms to a start, one type='bridge' {:.2} ms (median against median)",
        median(&mut with_port.clone()) - median(&mut plain.clone()),
        median(&mut with_bridge.clone()) - median(&mut plain.clone())
    );
    println!(
        "round by round (the median of each round's difference): one type='network' interface adds {paired_port:.2} ms, one type='bridge' {paired_bridge:.2} ms"
    );
    println!();
    println!(
        "| TCP throughput, iperf3 {THROUGHPUT_SECONDS} s, median | lxvirt | by hand | ratio |"
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| container → container over the bridge | {container_to_container:.2} Gbit/s | {hand_pair:.2} Gbit/s | {:.0} % |",
        100.0 * container_to_container / hand_pair
    );
    println!(
        "| container → host (the bridge's address) | {container_to_host:.2} Gbit/s | {hand_host:.2} Gbit/s | {:.0} % |",
        100.0 * container_to_host / hand_host
    );
    println!();
    println!("run by run: container → container {pair_ratios}; container → host {host_ratios}");
    Ok(())
}

/// iperf3 server inside `server`, client inside `client`.
async fn container_iperf3(
    server: &DomainProxy<'static>,
    client: &DomainProxy<'_>,
    address: &str,
) -> Result<f64> {
    let serving = {
        let server = server.clone();
        let address = address.to_owned();
        tokio::spawn(async move {
            enter_capture(&server, &["/usr/bin/iperf3", "-s", "-1", "-B", &address]).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let gbit = container_client(client, address).await;
    let _ = serving.await;
    gbit
}

async fn container_client(client: &DomainProxy<'_>, address: &str) -> Result<f64> {
    let (code, out) = enter_capture(
        client,
        &[
            "/usr/bin/iperf3",
            "-c",
            address,
            "-t",
            THROUGHPUT_SECONDS,
            "-J",
        ],
    )
    .await?;
    if code != 0 {
        bail!("iperf3 inside failed ({code}): {out}");
    }
    gbits(&out)
}

/// `lxvirt-bench networks-ports [COUNT]`: COUNT containers (1,000 by
/// default) with one `type='network'` interface each on one network, past
/// the 1,024 ports a Linux bridge holds: start and destroy times as the
/// network fills, the second-level bridges it took, and a ping from the
/// last container to the network's address.
pub async fn ports(count: usize) -> Result<()> {
    let env = DaemonEnv::start(&[]).await?;
    let rootfs = env.dir.path().join("rootfs");
    busybox_root(&rootfs);
    let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin/ping"));
    let manager = env.manager().await?;
    let network = NetworkProxy::builder(&env.connection)
        .path(
            manager
                .network_define_xml(
                    "<network><name>lxvtmany</name><bridge name='lxvtbrm0'/>\
                     <ip address='10.251.128.1' prefix='17'/></network>",
                )
                .await?,
        )
        .build()
        .await?;
    network.start().await?;
    let mut domains = Vec::with_capacity(count);
    let mut starts = Vec::with_capacity(count);
    let begin_all = Instant::now();
    for i in 0..count {
        let address = format!("10.251.{}.{}", 128 + i / 250, 2 + i % 250);
        let xml = format!(
            "<domain type='lxc'><name>many{i}</name><memory unit='MiB'>16</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>100000</initarg></os>\
             <devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             <interface type='network'><source network='lxvtmany'/><ip address='{address}' prefix='17'/></interface>\
             <console type='pty'/></devices></domain>",
            root = rootfs.display()
        );
        let domain = env.domain(manager.define_xml(&xml).await?).await?;
        let begin = Instant::now();
        domain.start().await?;
        starts.push(ms(begin.elapsed()));
        domains.push(domain);
    }
    let start_all = begin_all.elapsed();
    let seconds: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lxvs"))
        .collect();
    // One ping each (its first: ARP included) from the first, from the
    // last on the network's bridge, and from up to 20 past it (on
    // second-level bridges) with the last.
    let mut askers: Vec<usize> = vec![0, count.min(PORTS_PER_BRIDGE) - 1];
    askers.extend((PORTS_PER_BRIDGE..count).take(20));
    askers.push(count - 1);
    askers.dedup();
    let mut silent = Vec::new();
    let mut last_out = String::new();
    for &i in &askers {
        let (code, out) =
            enter_capture(&domains[i], &["ping", "-c", "1", "-W", "2", "10.251.128.1"]).await?;
        if code != 0 {
            silent.push(i);
            last_out = out;
        }
    }
    if !silent.is_empty() {
        // What the host sees of it, before it is gone.
        println!("no answer to the pings of containers {silent:?}: {last_out}");
        for args in [
            &["nft", "list", "table", "bridge", "lxvirt-lxvtmany"][..],
            &["ip", "-s", "link", "show", "master", "lxvtbrm0"][..],
            &["ip", "neigh", "show", "dev", "lxvtbrm0"][..],
        ] {
            let out = Command::new(args[0]).args(&args[1..]).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().collect();
            println!("$ {}: {} lines", args.join(" "), lines.len());
            for line in lines.iter().rev().take(40).rev() {
                println!("  {line}");
            }
        }
    }
    let mut destroys = Vec::with_capacity(count);
    let begin_all = Instant::now();
    for domain in &domains {
        let begin = Instant::now();
        domain.destroy().await?;
        destroys.push(ms(begin.elapsed()));
    }
    let destroy_all = begin_all.elapsed();
    network.destroy(0).await?;
    let head = count.min(100);
    println!(
        "lxvirt-bench networks-ports: {count} containers on one network, started one after another"
    );
    println!();
    println!("| measure | median | p90 |");
    println!("| --- | --- | --- |");
    let row = |label: &str, v: &mut [f64]| {
        println!(
            "| {label} | {:.2} ms | {:.2} ms |",
            median(v),
            percentile(v, 0.9)
        );
    };
    row(
        &format!("start, first {head}"),
        &mut starts[..head].to_vec(),
    );
    row(
        &format!("start, last {head}"),
        &mut starts[count - head..].to_vec(),
    );
    row(
        &format!("destroy, first {head}"),
        &mut destroys[..head].to_vec(),
    );
    row(
        &format!("destroy, last {head}"),
        &mut destroys[count - head..].to_vec(),
    );
    println!();
    println!(
        "all started in {:.1} s, all destroyed in {:.1} s; second-level bridges: {} ({}); first pings to the network's address answered: {} of {} (containers {askers:?})",
        start_all.as_secs_f64(),
        destroy_all.as_secs_f64(),
        seconds.len(),
        seconds.join(", "),
        askers.len() - silent.len(),
        askers.len(),
    );
    if !silent.is_empty() {
        bail!("containers {silent:?} cannot reach the network: {last_out}");
    }
    Ok(())
}
