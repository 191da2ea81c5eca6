//! `lxvirt-bench soak [CYCLES [RESIDENT]]`: CYCLES start/destroy cycles
//! (default 10,000) of 8 containers by 4 clients, with RESIDENT containers
//! (default 50) running throughout and 2 readers listing and reading stats
//! the whole time. Samples the daemon's RSS and descriptor count every
//! 5 % of the run and prints them with their slope, the calls made and
//! refused, and what is left at the end (nothing, or it fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lxvirt_tests::leaks::{busy_monitors, fd_count, lxvirt_cgroups, rss_kib};
use lxvirt_tests::{TestBus, TestDaemon, busybox_root, shared_tempdir, sleeper_xml};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

const CYCLERS: usize = 8;
const CLIENTS: usize = 4;
const READERS: usize = 2;

/// A call's outcome: an error lxvirt types is a refusal; any other fails
/// the run.
fn typed(result: zbus::Result<()>, refused: &AtomicU64) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(zbus::Error::MethodError(name, _, _))
            if name.starts_with("org.lxvirt.lxvirt1.Error.") =>
        {
            refused.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(other) => bail!("an untyped error: {other}"),
    }
}

/// Least-squares slope of `y` against `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

pub async fn bench(cycles: u64, resident: usize) -> Result<()> {
    println!(
        "soak: {cycles} start/destroy cycles of {CYCLERS} containers by {CLIENTS} clients, \
         {resident} containers running, {READERS} readers listing and reading stats"
    );
    let bus = TestBus::start()?;
    let dir = shared_tempdir()?;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let daemon = TestDaemon::start(&bus, dir.path()).await?;
    let daemon_pid = daemon.pid().context("the daemon is not running")?;
    let connection = bus.connect().await?;
    let manager = ManagerProxy::new(&connection).await?;
    let mut residents = Vec::new();
    for i in 0..resident {
        let path = manager
            .define_xml(&sleeper_xml(&format!("r{i:03}"), &rootfs))
            .await?;
        let domain = DomainProxy::builder(&connection).path(path).build().await?;
        domain.start().await?;
        residents.push(domain);
    }
    let mut cyclers = Vec::new();
    for i in 0..CYCLERS {
        cyclers.push(
            manager
                .define_xml(&sleeper_xml(&format!("c{i}"), &rootfs))
                .await?,
        );
    }

    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let connection = bus.connect().await?;
        let (stop, reads, refused) = (Arc::clone(&stop), Arc::clone(&reads), Arc::clone(&refused));
        let paths: Vec<_> = residents
            .iter()
            .map(|d| d.inner().path().to_owned())
            .collect();
        readers.push(tokio::spawn(async move {
            let manager = ManagerProxy::new(&connection).await?;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                manager.list_domain_summaries().await?;
                if !paths.is_empty() {
                    let domain = DomainProxy::builder(&connection)
                        .path(paths[i % paths.len()].clone())
                        .build()
                        .await?;
                    typed(domain.get_stats().await.map(drop), &refused)?;
                    i += 1;
                }
                reads.fetch_add(2, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }

    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut sample = |cycle: u64| -> Result<()> {
        let rss = rss_kib(daemon_pid).context("the daemon's VmRSS")? as f64;
        let fds = fd_count(daemon_pid) as f64;
        samples.push((cycle as f64, rss, fds));
        Ok(())
    };
    sample(0)?;
    let begin = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let connection = bus.connect().await?;
        let mine: Vec<_> = cyclers
            .iter()
            .skip(client)
            .step_by(CLIENTS)
            .cloned()
            .collect();
        let (done, refused) = (Arc::clone(&done), Arc::clone(&refused));
        clients.push(tokio::spawn(async move {
            let mut domains = Vec::new();
            for path in mine {
                domains.push(DomainProxy::builder(&connection).path(path).build().await?);
            }
            let mut i = 0;
            while done.fetch_add(1, Ordering::Relaxed) < cycles {
                let domain = &domains[i % domains.len()];
                typed(domain.start().await, &refused)?;
                typed(domain.destroy().await, &refused)?;
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let step = (cycles / 20).max(1);
    let mut next = step;
    while clients.iter().any(|c| !c.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = done.load(Ordering::Relaxed).min(cycles);
        if now >= next {
            sample(now)?;
            next += step;
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    for client in clients {
        client.await??;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await??;
    }
    sample(cycles)?;

    println!();
    println!("| cycles | daemon RSS | daemon descriptors |");
    println!("| --- | --- | --- |");
    for (cycle, rss, fds) in &samples {
        println!("| {cycle:.0} | {:.1} MiB | {fds:.0} |", rss / 1024.0);
    }
    let rss_slope = slope(&samples.iter().map(|(c, r, _)| (*c, *r)).collect::<Vec<_>>()) * 1000.0;
    let fd_slope = slope(&samples.iter().map(|(c, _, f)| (*c, *f)).collect::<Vec<_>>()) * 1000.0;
    println!();
    println!(
        "{cycles} cycles in {elapsed:.0} s ({:.0} cycles/s), {} reads, {} typed refusals, no other error",
        cycles as f64 / elapsed,
        reads.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    // The first half includes the warm-up (allocator arenas, caches);
    // the second shows whether anything keeps growing.
    let half = &samples[samples.len() / 2..];
    let late_rss = slope(&half.iter().map(|(c, r, _)| (*c, *r)).collect::<Vec<_>>()) * 1000.0;
    let late_fds = slope(&half.iter().map(|(c, _, f)| (*c, *f)).collect::<Vec<_>>()) * 1000.0;
    println!(
        "slope per 1,000 cycles: daemon RSS {rss_slope:+.1} KiB over the run, {late_rss:+.1} KiB over its second half; \
         descriptors {fd_slope:+.2}, {late_fds:+.2}"
    );

    for domain in &residents {
        domain.destroy().await?;
    }
    let run_dir = dir.path().join("run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while busy_monitors(&run_dir) > 0 || !lxvirt_cgroups(dir.path(), "lxvirt-").is_empty() {
        if Instant::now() > deadline {
            bail!("containers left after the soak");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("left behind: no container, monitor or cgroup");
    drop(daemon);
    Ok(())
}
