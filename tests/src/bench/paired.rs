//! Two builds side by side: this build's daemon and another's (an older
//! commit's, say), each on a private bus with the same container defined,
//! both running at once. Starts alternate between them (A B, then B A),
//! each after a pause, so that both meet the same machine; the figure is
//! the median of the paired differences, which the machine's drift (the
//! floor of one run moves by a millisecond between runs here) cancels
//! out of. A change worth less than a run-to-run spread shows here.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use lxvirt_tests::{RunTmpfs, TestBus, TestDaemon, busybox_root, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

use super::{median, ms, percentile};

/// One build's daemon, its bus and its container (dropped in this order:
/// the daemon before its run directory's tmpfs, that before the
/// directory).
struct Side {
    domain: DomainProxy<'static>,
    starts: Vec<f64>,
    _daemon: TestDaemon,
    _run: RunTmpfs,
    _dir: tempfile::TempDir,
    _bus: TestBus,
}

impl Side {
    async fn start(exe: &Path) -> Result<Side> {
        let bus = TestBus::start()?;
        let dir = shared_tempdir()?;
        let rootfs = dir.path().join("rootfs");
        busybox_root(&rootfs);
        let run = RunTmpfs::mount(dir.path())?;
        let daemon = TestDaemon::start_exe(exe, &bus, dir.path(), &[]).await?;
        let connection = bus.connect().await?;
        let manager = ManagerProxy::new(&connection).await?;
        // The default: a user namespace, a network namespace of its own.
        let xml = format!(
            "<domain type='lxc'><name>paired</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
             <features><privnet/></features>\
             <devices><filesystem type='mount'><source dir='{}'/><target dir='/'/></filesystem>\
             <console type='pty'/></devices></domain>",
            rootfs.display()
        );
        let path = manager.define_xml(&xml).await?;
        let domain = DomainProxy::builder(&connection).path(path).build().await?;
        Ok(Side {
            domain,
            starts: Vec::new(),
            _daemon: daemon,
            _run: run,
            _dir: dir,
            _bus: bus,
        })
    }

    async fn start_and_destroy(&mut self, pause: Duration) -> Result<f64> {
        tokio::time::sleep(pause).await;
        let begin = Instant::now();
        self.domain.start().await?;
        let took = ms(begin.elapsed());
        self.domain.destroy().await?;
        Ok(took)
    }
}

pub async fn bench(other: &Path, runs: usize, pause: Duration) -> Result<()> {
    let this = lxvirt_tests::binary("lxvirtd");
    let mut sides = [Side::start(&this).await?, Side::start(other).await?];
    // Warm-up: page cache, first-use costs.
    for side in &mut sides {
        for _ in 0..5 {
            side.start_and_destroy(Duration::ZERO).await?;
        }
    }
    for run in 0..runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let took = sides[i].start_and_destroy(pause).await?;
            sides[i].starts.push(took);
        }
    }
    let [a, b] = &sides;
    let mut diffs: Vec<f64> = a.starts.iter().zip(&b.starts).map(|(a, b)| a - b).collect();
    println!(
        "D-Bus Start after a {} ms pause, {runs} runs each, alternating",
        pause.as_millis()
    );
    println!();
    println!("| build | median | p10 | p90 |");
    println!("| --- | --- | --- | --- |");
    for (label, side) in [
        (this.display().to_string(), a),
        (other.display().to_string(), b),
    ] {
        let mut v = side.starts.clone();
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms |",
            median(&mut v),
            percentile(&mut v, 0.1),
            percentile(&mut v, 0.9)
        );
    }
    println!();
    println!(
        "this build minus the other, paired: median {:+.2} ms, p10 {:+.2} ms, p90 {:+.2} ms",
        median(&mut diffs),
        percentile(&mut diffs, 0.1),
        percentile(&mut diffs, 0.9)
    );
    Ok(())
}
