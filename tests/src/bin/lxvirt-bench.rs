//! `lxvirt-bench`: start and destroy latency of real containers through the
//! real daemon, the monitor's memory, and the kernel's floor beside them.
//! Run it with `tests/bench` (release build, as root).
//!
//! Every figure is wall time of a complete call as a D-Bus client sees it:
//! `Start()` returns once init has been executed, `Destroy()` once the
//! container is gone and cleaned up.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lxvirt_tests::{TestBus, TestDaemon, busybox_root, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

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

/// `unshare` of the same namespaces running /bin/true: the kernel's floor.
fn floor(runs: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let begin = Instant::now();
        let status = Command::new("unshare")
            .args([
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--fork",
                "--mount-proc",
                "/bin/true",
            ])
            .stdin(Stdio::null())
            .status()
            .context("cannot run unshare")?;
        times.push(ms(begin.elapsed()));
        if !status.success() {
            bail!("unshare failed: {status}");
        }
    }
    Ok(times)
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

fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn monitor_pid(run_dir: &Path, name: &str) -> Option<u32> {
    let status =
        lxvirtd::core::live::LiveStatus::load(&run_dir.join(format!("{name}.status"))).ok()?;
    u32::try_from(status.monitor_pid).ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let resident: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    if !nix::unistd::Uid::effective().is_root() {
        bail!("lxvirt-bench needs root (it starts real containers)");
    }

    let bus = TestBus::start()?;
    let dir = shared_tempdir()?;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let run_dir = dir.path().join("run");
    let _daemon = TestDaemon::start(&bus, dir.path()).await?;
    let connection = bus.connect().await?;
    let manager = ManagerProxy::new(&connection).await?;
    let xml = |name: &str| {
        format!(
            "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
             <features><privnet/></features>\
             <devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             <console type='pty'/></devices></domain>",
            root = rootfs.display()
        )
    };
    let path = manager.define_xml(&xml("bench")).await?;
    let bench = DomainProxy::builder(&connection).path(path).build().await?;

    // Warm-up: page cache, first-use costs.
    for _ in 0..5 {
        bench.start().await?;
        bench.destroy().await?;
    }
    let floor_ms = floor(runs)?;
    let mut start_ms = Vec::with_capacity(runs);
    let mut destroy_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let begin = Instant::now();
        bench.start().await?;
        start_ms.push(ms(begin.elapsed()));
        let begin = Instant::now();
        bench.destroy().await?;
        destroy_ms.push(ms(begin.elapsed()));
    }

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
    row("lxvirt start (D-Bus Start → init running)", &mut start_ms);
    row(
        "lxvirt destroy (D-Bus Destroy → cleaned up)",
        &mut destroy_ms,
    );
    println!();
    println!(
        "monitor per container: PSS median {:.0} KiB ({:.2} MiB), max {:.0} KiB; RSS median {:.0} KiB",
        median(&mut pss.clone()),
        median(&mut pss.clone()) / 1024.0,
        percentile(&mut pss, 1.0),
        median(&mut rss)
    );
    Ok(())
}
