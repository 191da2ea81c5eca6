//! `lxvirt-bench density N [CLIENTS]`: N running containers on one host,
//! beside the kernel's floor measured in the same run, and what a user
//! meets with them running.
//!
//! - The floor: N bare sleepers, each `unshare` of the namespaces a default
//!   container has (user with root mapped, PID, mount, UTS, IPC, network,
//!   cgroup) around `sleep`, started one after another; their cost is the
//!   drop of the host's `MemAvailable` per instance. They are gone before
//!   lxvirt's part starts.
//! - lxvirt: N busybox `sleep` containers (`<privnet/>`, the default user
//!   namespace; the daemon's run directory on a tmpfs, as `/run` is) defined, then started by CLIENTS concurrent D-Bus clients
//!   (each its own connection, taking the next name from a shared list):
//!   the time to start all, each start's latency, the `MemAvailable` drop
//!   per container, the monitors' PSS, the daemon's RSS; `lxvirt list`
//!   through the CLI and `GetManagedObjects` with N running; one more
//!   container's start and destroy with N running against none running;
//!   the daemon killed with SIGKILL and started again until every
//!   container is found running; every container destroyed by the same
//!   clients; the time until the kernel's count of memory cgroups stops
//!   falling (it frees them in the background, after the destroys have
//!   returned); then the daemon started again with N definitions, until
//!   it owns its bus name.
//!
//! `lxvirt-bench throughput [N]`: starts per second of N containers with
//! 1, 4, 16 and 64 concurrent clients (each batch destroyed after).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lxvirt_tests::{RunTmpfs, TestBus, TestDaemon, busybox_root, shared_tempdir, sleeper_xml};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

use super::{median, ms, percentile, pss_kib, rss_kib};

/// Time for memory figures to settle after a batch starts.
const SETTLE: Duration = Duration::from_secs(3);
/// The filesystems a container mounts of its own (proc, sysfs, the /dev
/// tmpfs, devpts; its IPC namespace's mqueue is the kernel's, mounted or
/// not): each superblock costs the kernel shrinker state in every memory
/// cgroup of the host, so their number is part of the per-container cost;
/// more fails the run (the CI's density smoke too).
const SUPERBLOCKS_BUDGET: usize = 4;

/// The floor: `count` namespaced sleepers; (seconds to start them all,
/// bytes of MemAvailable per sleeper).
async fn floor(count: usize) -> Result<(f64, f64)> {
    let before = super::compare::mem_available().await?;
    let begin = Instant::now();
    let mut sleepers: Vec<Child> = Vec::with_capacity(count);
    for _ in 0..count {
        let child = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--cgroup",
                "--fork",
                "--kill-child",
                "sleep",
                "100000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => sleepers.push(child),
            Err(error) => {
                stop_all(&mut sleepers);
                return Err(error).context("cannot run unshare");
            }
        }
    }
    let started = begin.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let during = super::compare::mem_available().await?;
    let alive = sleepers
        .iter_mut()
        .filter_map(|c| c.try_wait().ok())
        .filter(Option::is_none)
        .count();
    stop_all(&mut sleepers);
    if alive != count {
        bail!("only {alive} of {count} unshare sleepers stayed up");
    }
    Ok((started, (before - during) / count as f64))
}

fn stop_all(sleepers: &mut [Child]) {
    for child in sleepers.iter_mut() {
        let _ = child.kill();
    }
    for child in sleepers.iter_mut() {
        let _ = child.wait();
    }
}

/// Runs `work` for every name with `clients` concurrent clients, each on a
/// connection of its own; the latency of each call, ms.
async fn with_clients<F, Fut>(
    bus: &TestBus,
    names: &[String],
    clients: usize,
    work: F,
) -> Result<Vec<f64>>
where
    F: Fn(DomainProxy<'static>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = zbus::Result<()>> + Send,
{
    let names = Arc::new(names.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let connection = bus.connect().await?;
        let (names, next, work) = (names.clone(), next.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            let manager = ManagerProxy::new(&connection).await?;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let path = manager.lookup_by_name(name).await?;
                let domain = DomainProxy::builder(&connection)
                    .path(path)
                    .cache_properties(zbus::proxy::CacheProperties::No)
                    .build()
                    .await?;
                let begin = Instant::now();
                work(domain)
                    .await
                    .with_context(|| format!("domain {name}"))?;
                latencies.push(ms(begin.elapsed()));
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// How many domains are running, from one `GetManagedObjects`.
async fn count_running(connection: &zbus::Connection) -> Result<usize> {
    let objects = object_manager(connection)
        .await?
        .get_managed_objects()
        .await?;
    Ok(objects
        .values()
        .filter_map(|interfaces| interfaces.get("org.lxvirt.lxvirt1.Domain"))
        .filter_map(|properties| properties.get("State"))
        .filter(|state| state.to_string() == "\"running\"")
        .count())
}

async fn object_manager(
    connection: &zbus::Connection,
) -> Result<zbus::fdo::ObjectManagerProxy<'static>> {
    Ok(zbus::fdo::ObjectManagerProxy::builder(connection)
        .destination(lxvirtd::dbus::BUS_NAME)
        .path("/org/lxvirt/lxvirt1")
        .build()
        .await?)
}

/// Median wall time of `runs` calls of the CLI's `list`, ms.
fn cli_list(address: &str, runs: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let begin = Instant::now();
        let out = lxvirt_tests::lxvirt(address, &["list", "--all"])?;
        times.push(ms(begin.elapsed()));
        if !out.status.success() {
            bail!("lxvirt list: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(median(&mut times))
}

/// `GetManagedObjects` timings, ms (medians): the reply as it arrives,
/// and decoded into zbus's maps of variants as a generic client does.
pub struct ManagedObjectsTimes {
    pub objects: usize,
    pub reply_bytes: usize,
    pub raw_ms: f64,
    pub decoded_ms: f64,
}

pub async fn managed_objects(
    connection: &zbus::Connection,
    runs: usize,
) -> Result<ManagedObjectsTimes> {
    let proxy = object_manager(connection).await?;
    let (mut raw, mut decoded) = (Vec::new(), Vec::new());
    let (mut objects, mut reply_bytes) = (0, 0);
    for _ in 0..runs {
        let begin = Instant::now();
        let reply = connection
            .call_method(
                Some(lxvirtd::dbus::BUS_NAME),
                lxvirtd::dbus::MANAGER_PATH,
                Some("org.freedesktop.DBus.ObjectManager"),
                "GetManagedObjects",
                &(),
            )
            .await?;
        raw.push(ms(begin.elapsed()));
        reply_bytes = reply.data().len();
        let begin = Instant::now();
        objects = proxy.get_managed_objects().await?.len();
        decoded.push(ms(begin.elapsed()));
    }
    Ok(ManagedObjectsTimes {
        objects,
        reply_bytes,
        raw_ms: median(&mut raw),
        decoded_ms: median(&mut decoded),
    })
}

/// One start and destroy of `domain`: each one's time, ms.
pub async fn timed_cycle(domain: &DomainProxy<'_>) -> Result<(f64, f64)> {
    let begin = Instant::now();
    domain.start().await?;
    let start = ms(begin.elapsed());
    let begin = Instant::now();
    domain.destroy().await?;
    Ok((start, ms(begin.elapsed())))
}

/// Start and destroy latency of one more container, ms (medians of `runs`).
async fn one_more(domain: &DomainProxy<'_>, runs: usize) -> Result<(f64, f64)> {
    let (mut starts, mut destroys) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (start, destroy) = timed_cycle(domain).await?;
        starts.push(start);
        destroys.push(destroy);
    }
    Ok((median(&mut starts), median(&mut destroys)))
}

pub async fn bench(count: usize, clients: usize) -> Result<()> {
    println!(
        "density: {count} containers (busybox sleep, <privnet/>, the default user namespace), {clients} clients"
    );
    let (floor_s, floor_bytes) = floor(count).await?;
    println!(
        "floor: {count} unshare sleepers started in {floor_s:.1} s, {:.0} KB each",
        floor_bytes / 1000.0
    );

    let bus = TestBus::start()?;
    let dir = shared_tempdir()?;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    // Dropped after the daemon, before the directory.
    let _run = RunTmpfs::mount(dir.path())?;
    let mut daemon = TestDaemon::start(&bus, dir.path()).await?;
    let connection = bus.connect().await?;
    let manager = ManagerProxy::new(&connection).await?;
    let names: Vec<String> = (0..count).map(|i| format!("d{i:05}")).collect();
    let begin = Instant::now();
    for name in &names {
        manager.define_xml(&sleeper_xml(name, &rootfs)).await?;
    }
    let define_s = begin.elapsed().as_secs_f64();
    let probe_path = manager.define_xml(&sleeper_xml("probe", &rootfs)).await?;
    let probe = DomainProxy::builder(&connection)
        .path(probe_path)
        .build()
        .await?;
    let (empty_start, empty_destroy) = one_more(&probe, 10).await?;

    let before = super::compare::mem_available().await?;
    let begin = Instant::now();
    let mut starts = with_clients(&bus, &names, clients, |d| async move { d.start().await })
        .await
        .context("starting")?;
    let start_s = begin.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let during = super::compare::mem_available().await?;
    let running = count_running(&connection).await?;
    if running != count {
        bail!("{running} of {count} containers run");
    }
    let per_container = (before - during) / count as f64;
    let run_dir = dir.path().join("run");
    let mut monitor_pss: Vec<f64> = names
        .iter()
        .step_by((count / 20).max(1))
        .filter_map(|n| super::monitor_pid(&run_dir, n))
        .filter_map(pss_kib)
        .map(|k| k as f64)
        .collect();
    let superblocks =
        lxvirtd::core::live::LiveStatus::load(&run_dir.join(format!("{}.status", names[0])))
            .map(|status| own_superblocks(status.init_pid))
            .context("reading a container's mounts")??;
    if superblocks > SUPERBLOCKS_BUDGET {
        bail!(
            "a container mounts {superblocks} filesystems of its own, more than the {SUPERBLOCKS_BUDGET} budgeted"
        );
    }
    let daemon_pid = daemon_pid(&daemon)?;
    let daemon_rss = rss_kib(daemon_pid).unwrap_or(0) as f64 / 1024.0;
    // And once the daemon has returned what the burst of starts left in
    // its allocator (it does every 10 s): what `ps` shows on a quiet host.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let daemon_rss_settled = rss_kib(daemon_pid).unwrap_or(0) as f64 / 1024.0;
    let mib =
        |field| lxvirt_tests::leaks::status_kib(daemon_pid, field).unwrap_or(0) as f64 / 1024.0;
    let (daemon_anon, daemon_file) = (mib("RssAnon"), mib("RssFile"));
    let list_ms = cli_list(&bus.address, 5)?;
    let gmo = managed_objects(&connection, 5).await?;
    let (full_start, full_destroy) = one_more(&probe, 10).await?;

    // kill -9, then until every container is found running again.
    let begin = Instant::now();
    daemon.kill()?;
    daemon = TestDaemon::start(&bus, dir.path()).await?;
    let connection = bus.connect().await?;
    let ready_s = begin.elapsed().as_secs_f64();
    let found = count_running(&connection).await?;
    let found_s = begin.elapsed().as_secs_f64();
    if found != count {
        bail!("after the daemon's restart {found} of {count} containers were found running");
    }

    let begin = Instant::now();
    let mut destroys = with_clients(&bus, &names, clients, |d| async move { d.destroy().await })
        .await
        .context("destroying")?;
    let destroy_s = begin.elapsed().as_secs_f64();
    let left = count_running(&connection).await?;
    if left != 0 {
        bail!("{left} containers still run after every destroy");
    }
    for partition in TestDaemon::partition_dirs(dir.path())? {
        let cgroups = std::fs::read_dir(&partition)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("lxvirt-"))
            .count();
        if cgroups != 0 {
            bail!(
                "{cgroups} container cgroups left in {} after every destroy",
                partition.display()
            );
        }
    }

    // The kernel takes a removed memory cgroup offline and frees it in
    // the background (one holding charged pages stays until they are
    // reclaimed); with thousands just removed that work would compete
    // with what follows. Until the count stops falling for a second.
    let begin = Instant::now();
    let mut last = (memory_cgroups(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) && begin.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = memory_cgroups();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let settle_s = last.1.duration_since(begin).as_secs_f64();

    // A daemon start with every definition to load.
    daemon.stop()?;
    let begin = Instant::now();
    daemon = TestDaemon::start(&bus, dir.path()).await?;
    let load_s = begin.elapsed().as_secs_f64();
    drop(daemon);

    println!();
    println!("| figure | floor | lxvirt |");
    println!("| --- | --- | --- |");
    println!(
        "| start all, {clients} clients | {floor_s:.1} s ({:.2} ms each, one after another) | {start_s:.1} s ({:.2} ms each; a start's latency p50 {:.1} ms, p90 {:.1} ms) |",
        floor_s * 1000.0 / count as f64,
        start_s * 1000.0 / count as f64,
        percentile(&mut starts, 0.5),
        percentile(&mut starts, 0.9),
    );
    println!(
        "| memory per instance (MemAvailable drop) | {:.0} KB | {:.0} KB |",
        floor_bytes / 1000.0,
        per_container / 1000.0
    );
    println!("| filesystems of its own (superblocks) | – | {superblocks} |");
    println!(
        "| monitor PSS (median of {}) | – | {:.0} KiB |",
        monitor_pss.len(),
        median(&mut monitor_pss)
    );
    println!(
        "| daemon RSS, after the starts / 11 s later (of which anonymous / file-backed) | – | {daemon_rss:.1} / {daemon_rss_settled:.1} MiB ({daemon_anon:.1} / {daemon_file:.1}) |"
    );
    println!("| `lxvirt list --all` (CLI, median of 5) | – | {list_ms:.1} ms |");
    println!(
        "| GetManagedObjects ({} objects, {:.1} MB; median of 5): reply received / decoded into maps of variants | – | {:.1} / {:.1} ms |",
        gmo.objects,
        gmo.reply_bytes as f64 / 1e6,
        gmo.raw_ms,
        gmo.decoded_ms
    );
    println!(
        "| one more start / destroy, none running | – | {empty_start:.2} / {empty_destroy:.2} ms |"
    );
    println!(
        "| one more start / destroy, {count} running | – | {full_start:.2} / {full_destroy:.2} ms |"
    );
    println!(
        "| kill -9 → bus name again / every container found running | – | {ready_s:.2} s / {found_s:.2} s |"
    );
    println!(
        "| destroy all, {clients} clients | – | {destroy_s:.1} s (p50 {:.1} ms) |",
        percentile(&mut destroys, 0.5)
    );
    println!(
        "| then until the kernel's count of memory cgroups stops falling (/proc/cgroups) | – | {settle_s:.1} s |"
    );
    println!("| define all (one client) | – | {define_s:.1} s |");
    println!(
        "| daemon start with {} definitions, to its bus name | – | {load_s:.2} s |",
        count + 1
    );
    Ok(())
}

/// The memory cgroups the kernel holds, dying ones too (`num_cgroups` of
/// `/proc/cgroups`); `None` without a memory controller.
fn memory_cgroups() -> Option<u64> {
    let table = std::fs::read_to_string("/proc/cgroups").ok()?;
    table.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == "memory").then(|| fields.nth(1)?.parse().ok())?
    })
}

/// How many filesystems the process `pid` sees that the host's mount
/// namespace has none of (by device number).
fn own_superblocks(pid: i32) -> Result<usize> {
    let devices = |mountinfo: &str| -> std::collections::HashSet<String> {
        mountinfo
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2).map(str::to_owned))
            .collect()
    };
    let host = devices(&std::fs::read_to_string("/proc/self/mountinfo")?);
    let inside = devices(
        &std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .with_context(|| format!("the mounts of pid {pid}"))?,
    );
    Ok(inside.difference(&host).count())
}

fn daemon_pid(daemon: &TestDaemon) -> Result<u32> {
    daemon.pid().context("the daemon is not running")
}

/// Starts per second of `count` containers with 1, 4, 16 and 64 clients.
pub async fn throughput(count: usize) -> Result<()> {
    let bus = TestBus::start()?;
    let dir = shared_tempdir()?;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    // Dropped after the daemon, before the directory.
    let _run = RunTmpfs::mount(dir.path())?;
    let _daemon = TestDaemon::start(&bus, dir.path()).await?;
    let connection = bus.connect().await?;
    let manager = ManagerProxy::new(&connection).await?;
    let names: Vec<String> = (0..count).map(|i| format!("t{i:05}")).collect();
    for name in &names {
        manager.define_xml(&sleeper_xml(name, &rootfs)).await?;
    }
    println!("throughput: {count} containers started, then destroyed, by C concurrent clients");
    println!();
    println!("| clients | starts/s | start p50 / p90 | destroys/s | destroy p50 / p90 |");
    println!("| --- | --- | --- | --- | --- |");
    for clients in [1, 4, 16, 64] {
        let begin = Instant::now();
        let mut starts =
            with_clients(&bus, &names, clients, |d| async move { d.start().await }).await?;
        let start_s = begin.elapsed().as_secs_f64();
        let begin = Instant::now();
        let mut destroys =
            with_clients(&bus, &names, clients, |d| async move { d.destroy().await }).await?;
        let destroy_s = begin.elapsed().as_secs_f64();
        println!(
            "| {clients} | {:.0} | {:.1} / {:.1} ms | {:.0} | {:.1} / {:.1} ms |",
            count as f64 / start_s,
            percentile(&mut starts, 0.5),
            percentile(&mut starts, 0.9),
            count as f64 / destroy_s,
            percentile(&mut destroys, 0.5),
            percentile(&mut destroys, 0.9),
        );
    }
    Ok(())
}
