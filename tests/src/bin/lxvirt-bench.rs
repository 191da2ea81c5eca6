//! `lxvirt-bench`: start and destroy latency of real containers through the
//! real daemon, the monitor's memory, and the kernel's floor beside them.
//! Run it with `tests/bench` (release build, as root).
//!
//! Every figure is wall time of a complete call as a D-Bus client sees it:
//! `Start()` returns once init has been executed, `Destroy()` once the
//! container is gone and cleaned up. The daemon's run directory is on a
//! tmpfs, as `/run` is on a host (`RunTmpfs`).
//!
//! A third mode adds one `<interface type='bridge'>` on a bridge the bench
//! makes (`lxvtbench0`, no address, removed at the end), so the cost of an
//! interface shows beside the default; a fourth, the default again, starts
//! right after it is destroyed (while the kernel tears its network
//! namespace down).
//!
//! `lxvirt-bench networks [RUNS]` measures virtual networks (see
//! `networks`).
//!
//! `lxvirt-bench compare [N [RUNS]]` runs one workload as a container and
//! as a VM under TCG and compares start, stop, memory and density (see
//! `compare`).
//!
//! `lxvirt-bench density [N [CLIENTS]]` holds N containers and measures
//! what grows with them beside the kernel's floor; `lxvirt-bench
//! throughput [N]` starts per second with 1 to 64 clients (see `density`).
//!
//! `lxvirt-bench gmo ADDRESS [RUNS]` times `GetManagedObjects` against a
//! daemon already running on the bus at ADDRESS.
//!
//! `lxvirt-bench loop ADDRESS NAME [RUNS [PAUSE-MS]]` starts and destroys
//! the domain NAME of a daemon already running on the bus at ADDRESS,
//! pausing PAUSE-MS (default 0) before each start, and prints every
//! start's and destroy's time: a steady load to trace (`perf`) against.
//!
//! `lxvirt-bench soak [CYCLES [RESIDENT]]` cycles containers for a long
//! while beside resident ones and readers, and prints the daemon's RSS and
//! descriptor slope (see `soak`).
//!
//! `lxvirt-bench paired OTHER-LXVIRTD [RUNS [PAUSE-MS]]` compares this
//! build's D-Bus start with another build's (its `lxvirtd`; the monitor
//! beside it), both running at once, starts alternating, each after a
//! pause (see `paired`).
//!
//! `lxvirt-bench images [RUNS]` measures the image store instead: start
//! from a 1 GiB image against a 1 MiB one, commit time against the size of
//! the change, import throughput.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lxvirt_tests::leaks::rss_kib;
use lxvirt_tests::{RunTmpfs, TestBus, TestDaemon, busybox_root, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

/// The bench's own bridge, removed on drop (also when the bench fails).
struct BenchBridge;

const BENCH_BRIDGE: &str = "lxvtbench0";

impl BenchBridge {
    fn create() -> Result<BenchBridge> {
        let _ = Command::new("ip")
            .args(["link", "del", BENCH_BRIDGE])
            .status();
        for args in [
            &["link", "add", BENCH_BRIDGE, "type", "bridge"][..],
            &["link", "set", BENCH_BRIDGE, "up"][..],
        ] {
            let status = Command::new("ip").args(args).status()?;
            if !status.success() {
                bail!("ip {}: {status}", args.join(" "));
            }
        }
        Ok(BenchBridge)
    }
}

impl Drop for BenchBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", BENCH_BRIDGE])
            .status();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `command` as every timed command runs, the floor and the CLI
/// alike: nothing on stdin, stdout to /dev/null (a terminal's reader is
/// not the bench's to wake), stderr kept for the failure's message.
/// Returns the milliseconds from spawn to reaped.
fn timed(command: &mut Command) -> Result<f64> {
    let begin = Instant::now();
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    let elapsed = ms(begin.elapsed());
    if !out.status.success() {
        bail!(
            "{:?} {:?}: {}: {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

/// `unshare` of the same namespaces running /bin/true: the kernel's floor;
/// with `userns`, in a user namespace too (root mapped).
fn floor(runs: usize, userns: bool) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(timed(
            Command::new("unshare")
                .args(if userns {
                    &["--user", "--map-root-user"][..]
                } else {
                    &[][..]
                })
                .args(lxvirt_tests::UNSHARE_FLOOR),
        )?);
    }
    Ok(times)
}

/// `lxvirt-bench loop`: RUNS starts and destroys of `name` on a running
/// daemon, each start after `pause`; every time printed, then the medians.
async fn start_loop(address: &str, name: &str, runs: usize, pause: Duration) -> Result<()> {
    let connection = zbus::connection::Builder::address(address).build().await?;
    let manager = ManagerProxy::new(&connection).await?;
    let path = manager.lookup_by_name(name).await?;
    let domain = DomainProxy::builder(&connection).path(path).build().await?;
    let (mut starts, mut destroys) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        tokio::time::sleep(pause).await;
        let (start, destroy) = density::timed_cycle(&domain).await?;
        println!("start {start:.3} ms, destroy {destroy:.3} ms");
        starts.push(start);
        destroys.push(destroy);
    }
    println!(
        "{name}: {runs} runs after {} ms each: start median {:.3} ms, destroy median {:.3} ms",
        pause.as_millis(),
        median(&mut starts),
        median(&mut destroys)
    );
    Ok(())
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Refuses to go on without root, saying why it needs it.
fn need_root(why: &str) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("lxvirt-bench needs root ({why})");
    }
    Ok(())
}

fn monitor_pid(run_dir: &Path, name: &str) -> Option<u32> {
    let status =
        lxvirtd::core::live::LiveStatus::load(&run_dir.join(format!("{name}.status"))).ok()?;
    u32::try_from(status.monitor_pid).ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("networks-ports") {
        need_root("it starts real containers")?;
        let count = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
        return networks::ports(count).await;
    }
    if args.get(1).map(String::as_str) == Some("gmo") {
        let address = args
            .get(2)
            .context("usage: lxvirt-bench gmo BUS-ADDRESS [RUNS]")?;
        let runs = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
        let connection = zbus::connection::Builder::address(address.as_str())
            .build()
            .await?;
        let t = density::managed_objects(&connection, runs).await?;
        println!(
            "GetManagedObjects: {} objects, {} bytes; reply received {:.1} ms, decoded {:.1} ms (medians of {runs})",
            t.objects, t.reply_bytes, t.raw_ms, t.decoded_ms
        );
        return Ok(());
    }
    if args.get(1).map(String::as_str) == Some("loop") {
        let (Some(address), Some(name)) = (args.get(2), args.get(3)) else {
            bail!("usage: lxvirt-bench loop BUS-ADDRESS NAME [RUNS [PAUSE-MS]]");
        };
        let runs = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(100);
        let pause = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
        return start_loop(address, name, runs, Duration::from_millis(pause)).await;
    }
    if let Some(mode @ ("density" | "throughput")) = args.get(1).map(String::as_str) {
        need_root("it starts real containers")?;
        let count: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500);
        if mode == "throughput" {
            return density::throughput(count).await;
        }
        let clients = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
        return density::bench(count, clients).await;
    }
    if args.get(1).map(String::as_str) == Some("mntns") {
        need_root("it makes mount namespaces")?;
        let runs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
        let idle = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        return mntns::bench(runs, idle);
    }
    if args.get(1).map(String::as_str) == Some("soak") {
        need_root("it starts real containers")?;
        let cycles = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
        let resident = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
        return soak::bench(cycles, resident).await;
    }
    if args.get(1).map(String::as_str) == Some("compare") {
        need_root("it starts real containers and VMs")?;
        let instances = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
        let runs = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
        return compare::bench(instances, runs).await;
    }
    if args.get(1).map(String::as_str) == Some("networks") {
        need_root("it starts real containers")?;
        let runs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
        return networks::bench(runs).await;
    }
    if args.get(1).map(String::as_str) == Some("paired") {
        need_root("it starts real containers")?;
        let other = args
            .get(2)
            .context("usage: lxvirt-bench paired OTHER-LXVIRTD [RUNS [PAUSE-MS]]")?;
        let runs = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
        let pause = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(100);
        return paired::bench(Path::new(other), runs, Duration::from_millis(pause)).await;
    }
    if args.get(1).map(String::as_str) == Some("images") {
        need_root("it starts real containers")?;
        let runs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
        return images::bench(runs).await;
    }
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let resident: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    need_root("it starts real containers")?;

    let bus = TestBus::start()?;
    let dir = shared_tempdir()?;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    // Dropped after the daemon, before the directory.
    let _run = RunTmpfs::mount(dir.path())?;
    let run_dir = dir.path().join("run");
    let _daemon = TestDaemon::start(&bus, dir.path()).await?;
    let connection = bus.connect().await?;
    let manager = ManagerProxy::new(&connection).await?;
    let _bridge = BenchBridge::create()?;
    let xml_in = |name: &str, userns: &str, devices: &str| {
        format!(
            "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
             <features><privnet/></features>{userns}\
             <devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             {devices}<console type='pty'/></devices></domain>",
            root = rootfs.display()
        )
    };
    let xml = |name: &str| xml_in(name, "", "");
    let interface = format!(
        "<interface type='bridge'><source bridge='{BENCH_BRIDGE}'/><ip address='10.251.200.2' prefix='24'/>\
         <route address='10.251.201.0' prefix='24' gateway='10.251.200.1'/></interface>"
    );
    // The default (a user namespace with allocated ids, an idmapped root,
    // the mounter) and host root (libvirt's semantics).
    let mut modes = Vec::new();
    for (name, userns, devices) in [
        ("bench", "", ""),
        ("bench-host", "<lxvirt:userns mode='host'/>", ""),
        ("bench-net", "", interface.as_str()),
        // The default again, right after the one with an interface: the
        // kernel tears that one's network namespace down asynchronously,
        // and this start meets it.
        ("bench-next", "", ""),
    ] {
        let path = manager.define_xml(&xml_in(name, userns, devices)).await?;
        let domain = DomainProxy::builder(&connection).path(path).build().await?;
        // Warm-up: page cache, first-use costs.
        for _ in 0..5 {
            domain.start().await?;
            domain.destroy().await?;
        }
        modes.push(domain);
    }
    let floor_ms = floor(runs, false)?;
    let userns_floor_ms = floor(runs, true)?;
    // LXVIRT_BENCH_SETTLE_MS: a pause after each destroy, so that the
    // kernel's asynchronous teardown of one container's network namespace
    // does not land on the next start (back to back by default).
    let settle = std::env::var("LXVIRT_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); modes.len()];
    for _ in 0..runs {
        // Interleaved, so that every mode sees the same machine.
        for (domain, (start, destroy)) in modes.iter().zip(times.iter_mut()) {
            let begin = Instant::now();
            domain.start().await?;
            start.push(ms(begin.elapsed()));
            let begin = Instant::now();
            domain.destroy().await?;
            destroy.push(ms(begin.elapsed()));
            if let Some(settle) = settle {
                tokio::time::sleep(settle).await;
            }
        }
    }
    let (mut start_ms, mut destroy_ms) = times.remove(0);
    let (mut host_start_ms, mut host_destroy_ms) = times.remove(0);
    let (mut net_start_ms, mut net_destroy_ms) = times.remove(0);
    let (mut next_start_ms, _) = times.remove(0);
    let private_socket = run_dir.join("private");
    let user = as_a_user_meets_it(&bus.address, &private_socket, &modes[0], "bench", runs).await?;

    // Many containers at once: the monitor's memory.
    let mut names = Vec::new();
    for i in 0..resident {
        let name = format!("resident{i}");
        let path = manager.define_xml(&xml(&name)).await?;
        DomainProxy::builder(&connection)
            .path(path)
            .build()
            .await?
            .start()
            .await?;
        names.push(name);
    }
    let mut pss: Vec<f64> = Vec::new();
    let mut rss: Vec<f64> = Vec::new();
    for name in &names {
        let pid = monitor_pid(&run_dir, name).context("no monitor pid")?;
        pss.push(pss_kib(pid).context("no smaps_rollup")? as f64);
        rss.push(rss_kib(pid).context("no VmRSS")? as f64);
    }
    for name in &names {
        let path = manager.lookup_by_name(name).await?;
        DomainProxy::builder(&connection)
            .path(path)
            .build()
            .await?
            .destroy()
            .await?;
    }

    let floor_median = median(&mut floor_ms.clone());
    println!(
        "lxvirt-bench: {runs} runs, {resident} resident containers, busybox root, private netns"
    );
    println!();
    println!("| measure | median | p90 | ratio to floor |");
    println!("| --- | --- | --- | --- |");
    let row = |label: &str, v: &mut Vec<f64>| {
        let m = median(v);
        let p90 = percentile(v, 0.9);
        println!(
            "| {label} | {m:.2} ms | {p90:.2} ms | {:.2}× |",
            m / floor_median
        );
    };
    row(
        "floor: unshare --pid --mount --uts --ipc --net --fork --mount-proc /bin/true",
        &mut floor_ms.clone(),
    );
    row(
        "floor with a user namespace: unshare --user --map-root-user … /bin/true",
        &mut userns_floor_ms.clone(),
    );
    row(
        "lxvirt start, default: user namespace (D-Bus Start → init running)",
        &mut start_ms,
    );
    row(
        "lxvirt destroy, default (D-Bus Destroy → cleaned up)",
        &mut destroy_ms,
    );
    row(
        "lxvirt start, <lxvirt:userns mode='host'/>",
        &mut host_start_ms,
    );
    row(
        "lxvirt destroy, <lxvirt:userns mode='host'/>",
        &mut host_destroy_ms,
    );
    row(
        "lxvirt start, default + one <interface type='bridge'> (address, route)",
        &mut net_start_ms,
    );
    row(
        "lxvirt destroy, default + one <interface type='bridge'>",
        &mut net_destroy_ms,
    );
    row(
        "lxvirt start, default, right after that destroy",
        &mut next_start_ms,
    );
    println!();
    println!(
        "one bridge interface adds {:.2} ms to a start (median against median)",
        median(&mut net_start_ms.clone()) - median(&mut start_ms.clone())
    );
    println!();
    println!(
        "monitor per container: PSS median {:.0} KiB ({:.2} MiB), max {:.0} KiB; RSS median {:.0} KiB",
        median(&mut pss.clone()),
        median(&mut pss.clone()) / 1024.0,
        percentile(&mut pss, 1.0),
        median(&mut rss)
    );
    println!();
    user.print();
    Ok(())
}

/// How long the host stays idle before each after-idle measure
/// (`LXVIRT_BENCH_IDLE_MS`, default 2000).
fn idle_pause() -> Duration {
    std::env::var("LXVIRT_BENCH_IDLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis)
}

/// Start and destroy as a user meets them: through the `lxvirt` CLI (a
/// process per command, its own bus connection or lxvirtd's private
/// socket) and through D-Bus, back to back and after the host has been
/// idle, each beside the `unshare` floor measured the same way (the floor
/// is a process too).
struct UserFigures {
    idle: Duration,
    idle_floor: Vec<f64>,
    idle_dbus_start: Vec<f64>,
    idle_dbus_destroy: Vec<f64>,
    idle_cli_start: Vec<f64>,
    idle_cli_destroy: Vec<f64>,
    idle_private_start: Vec<f64>,
    floor: Vec<f64>,
    cli_start: Vec<f64>,
    cli_destroy: Vec<f64>,
    private_start: Vec<f64>,
    private_destroy: Vec<f64>,
}

/// Times one `lxvirt` command, which must succeed, spawned as the floor
/// is ([`timed`]).
fn timed_cli(address: &str, args: &[&str]) -> Result<f64> {
    timed(lxvirt_tests::lxvirt_command(address).args(args))
}

async fn as_a_user_meets_it(
    address: &str,
    private_socket: &Path,
    domain: &DomainProxy<'_>,
    name: &str,
    runs: usize,
) -> Result<UserFigures> {
    let idle = idle_pause();
    // Each round idles three times: a few rounds say enough.
    let rounds = runs.clamp(1, 10);
    let mut f = UserFigures {
        idle,
        idle_floor: Vec::new(),
        idle_dbus_start: Vec::new(),
        idle_dbus_destroy: Vec::new(),
        idle_cli_start: Vec::new(),
        idle_cli_destroy: Vec::new(),
        idle_private_start: Vec::new(),
        floor: Vec::new(),
        cli_start: Vec::new(),
        cli_destroy: Vec::new(),
        private_start: Vec::new(),
        private_destroy: Vec::new(),
    };
    // The same commands on lxvirtd's private socket (root's, no bus hops).
    let socket = format!("--socket={}", private_socket.display());
    for _ in 0..rounds {
        tokio::time::sleep(idle).await;
        f.idle_floor.extend(floor(1, false)?);
        tokio::time::sleep(idle).await;
        let begin = Instant::now();
        domain.start().await?;
        f.idle_dbus_start.push(ms(begin.elapsed()));
        let begin = Instant::now();
        domain.destroy().await?;
        f.idle_dbus_destroy.push(ms(begin.elapsed()));
        tokio::time::sleep(idle).await;
        f.idle_cli_start.push(timed_cli(address, &["start", name])?);
        f.idle_cli_destroy
            .push(timed_cli(address, &["destroy", name])?);
        tokio::time::sleep(idle).await;
        f.idle_private_start
            .push(timed_cli(address, &[&socket, "start", name])?);
        timed_cli(address, &[&socket, "destroy", name])?;
    }
    for _ in 0..runs {
        f.floor.extend(floor(1, false)?);
        f.cli_start.push(timed_cli(address, &["start", name])?);
        f.cli_destroy.push(timed_cli(address, &["destroy", name])?);
        f.private_start
            .push(timed_cli(address, &[&socket, "start", name])?);
        f.private_destroy
            .push(timed_cli(address, &[&socket, "destroy", name])?);
    }
    Ok(f)
}

impl UserFigures {
    fn print(&self) {
        println!(
            "as a user meets it: the lxvirt CLI and D-Bus, back to back and after {} ms idle (default mode)",
            self.idle.as_millis()
        );
        println!();
        println!("| measure | median | p90 | ratio to the floor measured the same way |");
        println!("| --- | --- | --- | --- |");
        let row = |label: &str, v: &[f64], floor: &[f64]| {
            let (mut v, mut floor) = (v.to_vec(), floor.to_vec());
            let m = median(&mut v);
            println!(
                "| {label} | {m:.2} ms | {:.2} ms | {:.2}× |",
                percentile(&mut v, 0.9),
                m / median(&mut floor)
            );
        };
        row(
            "floor (unshare … /bin/true), back to back",
            &self.floor,
            &self.floor,
        );
        row("`lxvirt start`, back to back", &self.cli_start, &self.floor);
        row(
            "`lxvirt destroy`, back to back",
            &self.cli_destroy,
            &self.floor,
        );
        row(
            "`lxvirt --socket start` (private socket), back to back",
            &self.private_start,
            &self.floor,
        );
        row(
            "`lxvirt --socket destroy`, back to back",
            &self.private_destroy,
            &self.floor,
        );
        row("floor after idle", &self.idle_floor, &self.idle_floor);
        row(
            "D-Bus Start after idle",
            &self.idle_dbus_start,
            &self.idle_floor,
        );
        row(
            "D-Bus Destroy, after that start",
            &self.idle_dbus_destroy,
            &self.idle_floor,
        );
        row(
            "`lxvirt start` after idle",
            &self.idle_cli_start,
            &self.idle_floor,
        );
        row(
            "`lxvirt destroy`, after that start",
            &self.idle_cli_destroy,
            &self.idle_floor,
        );
        row(
            "`lxvirt --socket start` (private socket) after idle",
            &self.idle_private_start,
            &self.idle_floor,
        );
    }
}

#[path = "../bench/networks.rs"]
mod networks;

#[path = "../bench/compare.rs"]
mod compare;

#[path = "../bench/density.rs"]
mod density;
#[path = "../bench/mntns.rs"]
mod mntns;
#[path = "../bench/paired.rs"]
mod paired;
#[path = "../bench/soak.rs"]
mod soak;

/// The image store's figures.
mod images {
    use std::collections::HashMap;
    use std::fs;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use anyhow::Result;
    use lxvirt_tests::{DaemonEnv, busybox_root};
    use lxvirtd::dbus::proxy::{DomainProxy, ImagesProxy};
    use lxvirtd::storage::{Compression, pack_dir};
    use zbus::Variant;

    use super::{median, ms, percentile};

    const MIB: usize = 1 << 20;

    /// Writes `mib` files of 1 MiB of incompressible bytes under `dir`.
    fn fill(dir: &Path, mib: usize, seed: u64) -> Result<()> {
        fs::create_dir_all(dir)?;
        let mut state = seed | 1;
        let mut block = vec![0u8; MIB];
        for i in 0..mib {
            for chunk in block.chunks_mut(8) {
                // xorshift64: cheap bytes no compressor shrinks
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            fs::File::create(dir.join(format!("f{i:04}")))?.write_all(&block)?;
        }
        Ok(())
    }

    /// A busybox root with `mib` MiB of data in /data, packed as a plain
    /// tarball; the tree is removed again.
    fn tarball(base: &Path, name: &str, mib: usize) -> Result<PathBuf> {
        let root = base.join(name);
        busybox_root(&root);
        fill(&root.join("data/blob"), mib, mib as u64)?;
        let path = base.join(format!("{name}.tar"));
        pack_dir(&root, Compression::None, &mut fs::File::create(&path)?)?;
        fs::remove_dir_all(&root)?;
        Ok(path)
    }

    fn xml(name: &str, image: &str) -> String {
        format!(
            "<domain type='lxc'><name>{name}</name><memory unit='MiB'>256</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
             <features><privnet/></features>\
             <devices><filesystem type='volume'><source pool='images' volume='{image}'/>\
             <target dir='/'/></filesystem><console type='pty'/></devices></domain>"
        )
    }

    async fn define(env: &DaemonEnv, name: &str, image: &str) -> Result<DomainProxy<'static>> {
        let path = env.manager().await?.define_xml(&xml(name, image)).await?;
        env.domain(path).await
    }

    pub async fn bench(runs: usize) -> Result<()> {
        let env = DaemonEnv::start(&[]).await?;
        let images = ImagesProxy::new(&env.connection).await?;

        // Import: throughput of the uncompressed tar, D-Bus round trip.
        let mut imports = Vec::new();
        for (name, mib) in [("small", 1), ("large", 1024)] {
            let tar = tarball(env.dir.path(), name, mib)?;
            let bytes = fs::metadata(&tar)?.len();
            let file = fs::File::open(&tar)?;
            let begin = Instant::now();
            images
                .import_tarball(
                    zbus::Fd::from(&file),
                    HashMap::from([("name", Variant::from(name))]),
                )
                .await?;
            let seconds = begin.elapsed().as_secs_f64();
            fs::remove_file(&tar)?;
            imports.push((name, bytes, seconds));
        }

        // Start from each image: the writable layer exists after the
        // first start, as for any domain started again.
        let small = define(&env, "on-small", "small").await?;
        let large = define(&env, "on-large", "large").await?;
        for domain in [&small, &large] {
            for _ in 0..3 {
                domain.start().await?;
                domain.destroy().await?;
            }
        }
        let (mut small_ms, mut large_ms) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (domain, times) in [(&small, &mut small_ms), (&large, &mut large_ms)] {
                let begin = Instant::now();
                domain.start().await?;
                times.push(ms(begin.elapsed()));
                domain.destroy().await?;
            }
        }
        // And the very first start, which makes the writable layer.
        let fresh = define(&env, "fresh-large", "large").await?;
        let begin = Instant::now();
        fresh.start().await?;
        let first_ms = ms(begin.elapsed());
        fresh.destroy().await?;

        // Commit against the size of the change, written in the container.
        let mut commits = Vec::new();
        for mib in [1usize, 10, 100] {
            let name = format!("writer{mib}");
            let writer = define(&env, &name, "small").await?;
            writer.start().await?;
            let script = format!(
                "for i in $(/bin/busybox seq {mib}); do \
                 /bin/busybox dd if=/data/blob/f0000 of=/root/c$i bs=1048576 count=1 2>/dev/null; done"
            );
            let (code, _) =
                lxvirt_tests::enter_capture(&writer, &["/bin/sh", "-c", &script]).await?;
            anyhow::ensure!(code == 0, "writing {mib} MiB in the container failed");
            writer.destroy().await?;
            let begin = Instant::now();
            writer.commit(&format!("{name}-img"), 0).await?;
            commits.push((mib, ms(begin.elapsed())));
        }
        let layer = env.dir.path().join("lib/storage");
        let fs_type = fs_type(&layer).unwrap_or_else(|| "?".into());

        println!("lxvirt-bench images: {runs} starts of each, overlay backend, store on {fs_type}");
        println!();
        println!("| import (plain tar, D-Bus ImportTarball) | tar size | time | throughput |");
        println!("| --- | --- | --- | --- |");
        for (name, bytes, seconds) in &imports {
            println!(
                "| {name} | {:.1} MB | {seconds:.2} s | {:.0} MB/s |",
                *bytes as f64 / 1e6,
                *bytes as f64 / 1e6 / seconds
            );
        }
        println!();
        let s = median(&mut small_ms.clone());
        let l = median(&mut large_ms.clone());
        println!("| start (D-Bus Start, layer exists) | median | p90 |");
        println!("| --- | --- | --- |");
        println!(
            "| image of 1 MiB + busybox | {s:.2} ms | {:.2} ms |",
            percentile(&mut small_ms, 0.9)
        );
        println!(
            "| image of 1 GiB + busybox | {l:.2} ms | {:.2} ms |",
            percentile(&mut large_ms, 0.9)
        );
        println!();
        println!(
            "start ratio 1 GiB / 1 MiB: {:.2}×; first start on 1 GiB (makes the layer): {first_ms:.2} ms",
            l / s
        );
        println!();
        println!("| change written in the container | commit (D-Bus Commit) |");
        println!("| --- | --- |");
        for (mib, t) in &commits {
            println!("| {mib} MiB ({mib} files) | {t:.1} ms |");
        }
        Ok(())
    }

    /// The file system type of the mount holding `path`.
    fn fs_type(path: &Path) -> Option<String> {
        let path = fs::canonicalize(path).ok()?;
        let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
        mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
                path.starts_with(dir).then(|| (dir.len(), kind.to_owned()))
            })
            .max()
            .map(|(_, kind)| kind)
    }
}
