//! `lxvirt-bench compare [N [RUNS]]`: one workload both ways in one run, a
//! container and a virtual machine, through the same daemon and CLI.
//!
//! The workload is busybox's shell as init writing a marker to its
//! console:
//! - the container: a busybox root directory, `/bin/sh` as init in a
//!   private network namespace; init writes the marker to its console
//!   every 10 ms for about a second and a half, then waits (SIGTERM ends
//!   it). A container's console keeps no log and drops its output while
//!   no client is attached, so the bench attaches with `OpenConsole` right
//!   after `lxvirt start` returns and takes the first marker it reads:
//!   the figure holds the attach, and up to 10 ms of the loop's period;
//! - the VM: Debian's kernel booted directly (PVH) with the test guest's
//!   initramfs (the same static busybox, `tests/vm/mkguest`), 1 vCPU,
//!   q35, under TCG; its `/init` prints the marker on the serial console
//!   once, which qemu logs to `RUN/qemu/NAME/serial0.log`, polled every
//!   2 ms.
//!
//! What is measured, the same way for both:
//! - start: from spawning `lxvirt start NAME` to the marker seen, and to
//!   the CLI's exit;
//! - stop: from spawning `lxvirt destroy NAME` or `lxvirt shutdown NAME`
//!   to the domain's `State` reading `shutoff` (polled every 2 ms);
//! - memory, with N VMs or 10 × N containers running and settled (a
//!   container is small beside the machine's noise): the `Pss` of every
//!   process in the instance's cgroup (and a container's monitor, which
//!   lives outside it), split for a VM into the guest's RAM and TCG's
//!   translated code; the cgroup's charge and its kernel part; and the
//!   drop of the host's `MemAvailable` per instance, which adds what the
//!   kernel spends on it outside any cgroup. `MemAvailable` is read before
//!   the instances start and again after they are destroyed, three times
//!   over; before − after is the noise of the figure (other work on the
//!   machine);
//! - idle CPU: each instance's `cpuacct.usage` over 5 s once settled;
//! - instances in 4 GiB: 4 GiB over the per-instance cost, counted both
//!   ways (MemAvailable drop; PSS plus the cgroup's kernel memory).
//!
//! Everything the bench makes is removed at the end, also when it fails
//! or is interrupted (SIGINT, SIGTERM): domains destroyed, then any qemu
//! or container left killed, the daemon and bus stopped, the temporary
//! directory removed.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lxvirt_tests::guest::{TestGuest, test_guest};
use lxvirt_tests::{DaemonEnv, busybox_root, lxvirt, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};
use zbus::proxy::CacheProperties;

use super::{median, monitor_pid, ms, pss_kib};

/// What both kinds write to their console once up.
const MARKER: &str = "LXVIRT-BENCH-READY";

/// Guest RAM of a VM, MiB (`LXVIRT_BENCH_VM_MIB` overrides): the guest
/// boots in 96 MiB and hangs in 64 under TCG here; 128 leaves a margin.
const VM_MIB: u32 = 128;

/// A container's memory limit, MiB: the same as the VM's RAM (a limit,
/// not an allocation).
const CONTAINER_MIB: u32 = 128;

/// How long one start may take to reach its marker (N VMs booting at once
/// under TCG share two cores).
const MARKER_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a stop may take to reach `shutoff`.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between the last marker and the memory readings: a
/// container's marker loop ends, a guest's boot settles.
const SETTLE: Duration = Duration::from_secs(3);

/// The window over which idle CPU is measured.
const CPU_WINDOW: Duration = Duration::from_secs(5);

/// Containers are started N × this many at once: each is small beside
/// the noise of MemAvailable on a shared machine, so more of them divide it.
const CONTAINERS_PER_VM: usize = 10;

/// How many times the N instances are started together and destroyed,
/// each time with MemAvailable read before, during and after.
const MEMORY_CYCLES: usize = 3;

/// The polling period of the console log and the state.
const POLL: Duration = Duration::from_millis(2);

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Container,
    Vm,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Container => "ct",
            Kind::Vm => "vm",
        }
    }
}

/// The daemon, the guest, the container root, and every domain defined,
/// destroyed on drop.
struct Bench {
    env: DaemonEnv,
    guest: TestGuest,
    rootfs: PathBuf,
    vm_mib: u32,
    defined: Vec<String>,
}

/// The figures of one kind.
#[derive(Debug, Default)]
struct Figures {
    marker_ms: Vec<f64>,
    start_returned_ms: Vec<f64>,
    destroy_ms: Vec<f64>,
    shutdown_ms: Vec<f64>,
    /// Per instance, KiB.
    pss_kib: Vec<f64>,
    /// Per instance, CPU % of one core.
    idle_cpu: Vec<f64>,
    /// Per instance: the part of PSS in the guest's RAM and in TCG's
    /// translated-code buffer (VMs), KiB.
    guest_ram_kib: Vec<f64>,
    code_buffer_kib: Vec<f64>,
    /// Per instance: the cgroup's charge (`memory.usage_in_bytes`) and its
    /// kernel part (`memory.kmem.usage_in_bytes`), KiB.
    cgroup_kib: Vec<f64>,
    kmem_kib: Vec<f64>,
    /// Per cycle, bytes per instance.
    available_drop: Vec<f64>,
    /// Per cycle, |before − after| per instance, bytes.
    available_noise: Vec<f64>,
}

pub async fn bench(instances: usize, runs: usize) -> Result<()> {
    ensure!(instances > 0 && runs > 0, "N and RUNS must be at least 1");
    let Some(guest) = test_guest() else {
        bail!("the comparison needs the test guest: run tests/vm/prepare guest as root");
    };
    let vm_mib = std::env::var("LXVIRT_BENCH_VM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(VM_MIB);
    let dir = shared_tempdir()?;
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let env = DaemonEnv::start_in(dir, &[]).await?;
    let mut bench = Bench {
        env,
        guest,
        rootfs,
        vm_mib,
        defined: Vec::new(),
    };
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = bench.run(instances, runs) => result,
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
    };
    let (container, vm) = result?;
    bench.report(instances, runs, &container, &vm);
    Ok(())
}

impl Bench {
    async fn run(&mut self, instances: usize, runs: usize) -> Result<(Figures, Figures)> {
        let mut container = Figures::default();
        let mut vm = Figures::default();
        let ct = self.define(Kind::Container, "ct").await?;
        let v = self.define(Kind::Vm, "vm").await?;
        // Warm-up: page cache (the 66 MB kernel), first-use costs.
        for (kind, name, domain) in [(Kind::Container, "ct", &ct), (Kind::Vm, "vm", &v)] {
            self.start_to_marker(kind, name, domain).await?;
            self.stop(name, domain, "destroy").await?;
        }
        // Interleaved, so that both kinds see the same machine.
        for run in 0..runs {
            for (kind, name, domain, figures) in [
                (Kind::Container, "ct", &ct, &mut container),
                (Kind::Vm, "vm", &v, &mut vm),
            ] {
                for how in ["destroy", "shutdown"] {
                    let (returned, marker) = self.start_to_marker(kind, name, domain).await?;
                    figures.start_returned_ms.push(returned);
                    figures.marker_ms.push(marker);
                    let stopped = self.stop(name, domain, how).await?;
                    if how == "destroy" {
                        figures.destroy_ms.push(stopped);
                    } else {
                        figures.shutdown_ms.push(stopped);
                    }
                }
            }
            eprintln!("lxvirt-bench compare: run {}/{runs} done", run + 1);
        }
        let containers = instances * CONTAINERS_PER_VM;
        self.memory(Kind::Container, containers, &mut container)
            .await?;
        eprintln!("lxvirt-bench compare: {containers} containers measured");
        self.memory(Kind::Vm, instances, &mut vm).await?;
        eprintln!("lxvirt-bench compare: {instances} VMs measured");
        // Every domain is shut off: nothing for the drop to destroy.
        self.defined.clear();
        Ok((container, vm))
    }

    fn xml(&self, kind: Kind, name: &str) -> String {
        match kind {
            // sh as init: SIGTERM (shutdown) ends it through the trap; the
            // marker loop runs ~1.5 s (the console drops output while no
            // client is attached), then init waits.
            Kind::Container => format!(
                "<domain type='lxc'><name>{name}</name><memory unit='MiB'>{CONTAINER_MIB}</memory>\
                 <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg>\
                 <initarg>trap 'exit 0' TERM; i=0; while [ $i -lt 150 ]; do echo {MARKER}; sleep 0.01; i=$((i+1)); done; sleep 100000 &amp; wait</initarg></os>\
                 <features><privnet/></features>\
                 <devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
                 <console type='pty'/></devices></domain>",
                root = self.rootfs.display()
            ),
            Kind::Vm => format!(
                "<domain type='qemu'><name>{name}</name><memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>\
                 <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{kernel}</kernel>\
                 <initrd>{initrd}</initrd><cmdline>{cmdline}</cmdline></os>\
                 <features><acpi/><apic/></features>\
                 <devices><console type='pty'/></devices></domain>",
                mib = self.vm_mib,
                kernel = self.guest.kernel.display(),
                initrd = self.guest.initrd.display(),
                cmdline = self.guest.cmdline(&format!("lxvirt.marker={MARKER}")),
            ),
        }
    }

    async fn define(&mut self, kind: Kind, name: &str) -> Result<DomainProxy<'static>> {
        let manager = ManagerProxy::new(&self.env.connection).await?;
        let path = manager.define_xml(&self.xml(kind, name)).await?;
        self.defined.push(name.to_owned());
        Ok(DomainProxy::builder(&self.env.connection)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    /// Runs the CLI; fails with its output when it fails.
    fn cli(&self, args: &[&str]) -> Result<()> {
        let out = lxvirt(&self.env.bus.address, args)?;
        if !out.status.success() {
            bail!(
                "lxvirt {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn serial_log(&self, name: &str) -> PathBuf {
        self.env
            .run_dir()
            .join("qemu")
            .join(name)
            .join("serial0.log")
    }

    /// `lxvirt start NAME`, then the marker; (CLI returned, marker seen)
    /// in ms from the spawn of the CLI.
    async fn start_to_marker(
        &self,
        kind: Kind,
        name: &str,
        domain: &DomainProxy<'_>,
    ) -> Result<(f64, f64)> {
        if kind == Kind::Vm {
            // qemu truncates it when it opens it; the last run's marker
            // must not be read before then.
            let _ = fs::remove_file(self.serial_log(name));
        }
        let begin = Instant::now();
        self.cli(&["start", name])?;
        let returned = ms(begin.elapsed());
        self.wait_marker(kind, name, domain).await?;
        Ok((returned, ms(begin.elapsed())))
    }

    async fn wait_marker(&self, kind: Kind, name: &str, domain: &DomainProxy<'_>) -> Result<()> {
        let deadline = Instant::now() + MARKER_TIMEOUT;
        match kind {
            Kind::Vm => {
                let log = self.serial_log(name);
                loop {
                    if fs::read_to_string(&log)
                        .is_ok_and(|text| text.lines().any(|l| l.trim_end() == MARKER))
                    {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{name}: no {MARKER} on the console within {MARKER_TIMEOUT:?}: {}",
                            fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            Kind::Container => {
                let fd: OwnedFd = domain.open_console("").await?.into();
                let mut console = fs::File::from(fd);
                set_nonblocking(&console)?;
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    match console.read(&mut buffer) {
                        Ok(0) => bail!("{name}: the console closed before {MARKER}"),
                        Ok(n) => {
                            seen.extend_from_slice(&buffer[..n]);
                            if String::from_utf8_lossy(&seen).contains(MARKER) {
                                return Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e).context(format!("{name}: reading the console")),
                    }
                    if Instant::now() > deadline {
                        bail!("{name}: no {MARKER} on the console within {MARKER_TIMEOUT:?}");
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// `lxvirt destroy|shutdown NAME` until `State` is `shutoff`; ms.
    async fn stop(&self, name: &str, domain: &DomainProxy<'_>, how: &str) -> Result<f64> {
        let begin = Instant::now();
        self.cli(&[how, name])?;
        wait_shutoff(name, domain).await?;
        Ok(ms(begin.elapsed()))
    }

    /// N instances of `kind` at once, [`MEMORY_CYCLES`] times: PSS and
    /// its parts, the cgroup's charge, idle CPU (first cycle), and the
    /// MemAvailable drop (every cycle).
    async fn memory(&mut self, kind: Kind, n: usize, figures: &mut Figures) -> Result<()> {
        let mut domains = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{}{i}", kind.prefix());
            let domain = self.define(kind, &name).await?;
            domains.push((name, domain));
        }
        for cycle in 0..MEMORY_CYCLES {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = mem_available().await?;
            // A container's marker is read as soon as it starts (its loop
            // ends after ~1.5 s); VMs boot side by side, each to its log.
            for (name, domain) in &domains {
                if kind == Kind::Vm {
                    let _ = fs::remove_file(self.serial_log(name));
                }
                self.cli(&["start", name])?;
                if kind == Kind::Container {
                    self.wait_marker(kind, name, domain).await?;
                }
            }
            for (name, domain) in &domains {
                if kind == Kind::Vm {
                    self.wait_marker(kind, name, domain).await?;
                }
            }
            tokio::time::sleep(SETTLE).await;
            let during = mem_available().await?;
            if cycle == 0 {
                self.instance_figures(kind, &domains, figures).await?;
            }
            for (name, domain) in &domains {
                self.cli(&["destroy", name])?;
                wait_shutoff(name, domain).await?;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = mem_available().await?;
            figures
                .available_drop
                .push(((before + after) / 2.0 - during) / n as f64);
            figures
                .available_noise
                .push((before - after).abs() / n as f64);
        }
        Ok(())
    }

    /// PSS and its parts, the cgroup's charge and idle CPU of each running
    /// instance.
    async fn instance_figures(
        &self,
        kind: Kind,
        domains: &[(String, DomainProxy<'static>)],
        figures: &mut Figures,
    ) -> Result<()> {
        // A v1 controller's hierarchy, or the unified one (cgroup v2).
        let cgroup = |controller: &str, name: &str| {
            let v1 = self.env.daemon.cgroup_dir(controller, name);
            if v1.exists() {
                v1
            } else {
                self.env.daemon.cgroup_dir("", name)
            }
        };
        let cpu_before = domains
            .iter()
            .map(|(name, _)| cpu_ns(&cgroup("cpuacct", name)))
            .collect::<Result<Vec<_>>>()?;
        let window = Instant::now();
        tokio::time::sleep(CPU_WINDOW).await;
        let cpu_after = domains
            .iter()
            .map(|(name, _)| cpu_ns(&cgroup("cpuacct", name)))
            .collect::<Result<Vec<_>>>()?;
        let seconds = window.elapsed().as_secs_f64();
        for (a, b) in cpu_after.iter().zip(&cpu_before) {
            figures
                .idle_cpu
                .push(a.saturating_sub(*b) as f64 / 1e9 / seconds * 100.0);
        }
        let guest_ram_kib = u64::from(self.vm_mib) * 1024;
        for (name, _) in domains {
            let mut pids = cgroup_pids(&cgroup("pids", name));
            if kind == Kind::Container {
                pids.push(monitor_pid(&self.env.run_dir(), name).context("no monitor pid")?);
            }
            pids.sort_unstable();
            pids.dedup();
            ensure!(!pids.is_empty(), "{name}: no process in its cgroup");
            let mut parts = PssParts::default();
            for pid in pids {
                parts.add(&pss_parts(pid, guest_ram_kib));
            }
            figures.pss_kib.push(parts.total as f64);
            figures.guest_ram_kib.push(parts.guest_ram as f64);
            figures.code_buffer_kib.push(parts.code_buffer as f64);
            let memory = cgroup("memory", name);
            if let Some(charge) = read_u64(&memory.join("memory.usage_in_bytes"))
                .or_else(|| read_u64(&memory.join("memory.current")))
            {
                figures.cgroup_kib.push(charge as f64 / 1024.0);
            }
            if let Some(kmem) = read_u64(&memory.join("memory.kmem.usage_in_bytes")) {
                figures.kmem_kib.push(kmem as f64 / 1024.0);
            }
        }
        Ok(())
    }

    fn report(&self, n: usize, runs: usize, container: &Figures, vm: &Figures) {
        println!(
            "lxvirt-bench compare: {runs} runs (each: start → marker, destroy; start → marker, shutdown); \
             memory with {} containers or {n} VMs at once",
            n * CONTAINERS_PER_VM
        );
        println!(
            "container: busybox sh as init, private netns, busybox root directory; \
             VM: Debian kernel {} + busybox initramfs, {} MiB, 1 vCPU, q35, TCG (no KVM)",
            self.guest.kernel.display(),
            self.vm_mib
        );
        println!();
        println!(
            "| measure | container: median (min–max) | VM: median (min–max) | VM / container |"
        );
        println!("| --- | --- | --- | --- |");
        let row = |label: &str, c: &[f64], v: &[f64], unit: &str| {
            let ratio = if c.is_empty() || v.is_empty() {
                "–".to_owned()
            } else {
                ratio(median(&mut v.to_vec()), median(&mut c.to_vec()))
            };
            println!(
                "| {label} | {} | {} | {ratio} |",
                spread(c, unit),
                spread(v, unit),
            );
        };
        row(
            "`lxvirt start` → marker read on the console",
            &container.marker_ms,
            &vm.marker_ms,
            "ms",
        );
        row(
            "`lxvirt start` → the CLI exits",
            &container.start_returned_ms,
            &vm.start_returned_ms,
            "ms",
        );
        row(
            "`lxvirt destroy` → state shutoff",
            &container.destroy_ms,
            &vm.destroy_ms,
            "ms",
        );
        row(
            "`lxvirt shutdown` → state shutoff",
            &container.shutdown_ms,
            &vm.shutdown_ms,
            "ms",
        );
        let mib = |v: &[f64]| v.iter().map(|k| k / 1024.0).collect::<Vec<_>>();
        row(
            "PSS of the instance's processes",
            &mib(&container.pss_kib),
            &mib(&vm.pss_kib),
            "MiB",
        );
        row(
            "… of it: the guest's RAM touched",
            &[],
            &mib(&vm.guest_ram_kib),
            "MiB",
        );
        row(
            "… of it: TCG's translated code",
            &[],
            &mib(&vm.code_buffer_kib),
            "MiB",
        );
        row(
            "cgroup charge (`memory.usage_in_bytes`; monitor not in it)",
            &mib(&container.cgroup_kib),
            &mib(&vm.cgroup_kib),
            "MiB",
        );
        row(
            "… of it: kernel memory (`memory.kmem.usage_in_bytes`)",
            &mib(&container.kmem_kib),
            &mib(&vm.kmem_kib),
            "MiB",
        );
        let mib_bytes = |v: &[f64]| v.iter().map(|b| b / MIB).collect::<Vec<_>>();
        row(
            &format!(
                "MemAvailable drop per instance, {} containers or {n} VMs running ({MEMORY_CYCLES} cycles)",
                n * CONTAINERS_PER_VM
            ),
            &mib_bytes(&container.available_drop),
            &mib_bytes(&vm.available_drop),
            "MiB",
        );
        row(
            "… its noise: MemAvailable before − after, per instance",
            &mib_bytes(&container.available_noise),
            &mib_bytes(&vm.available_noise),
            "MiB",
        );
        row(
            "idle CPU per instance (% of one core, 5 s)",
            &container.idle_cpu,
            &vm.idle_cpu,
            "%",
        );
        // Instances in 4 GiB, by each way of counting an instance's cost.
        let fit = |bytes: f64| (4.0 * 1024.0 * MIB / bytes).floor();
        let by_drop = |f: &Figures| fit(median(&mut f.available_drop.clone()));
        let by_pss = |f: &Figures| {
            let kmem = if f.kmem_kib.is_empty() {
                0.0
            } else {
                median(&mut f.kmem_kib.clone())
            };
            fit((median(&mut f.pss_kib.clone()) + kmem) * 1024.0)
        };
        println!(
            "| instances in 4 GiB, by the MemAvailable drop | {:.0} | {:.0} | 1/{:.0} |",
            by_drop(container),
            by_drop(vm),
            by_drop(container) / by_drop(vm).max(1.0)
        );
        println!(
            "| instances in 4 GiB, by PSS + cgroup kernel memory | {:.0} | {:.0} | 1/{:.0} |",
            by_pss(container),
            by_pss(vm),
            by_pss(container) / by_pss(vm).max(1.0)
        );
        println!();
        println!(
            "MemAvailable is read before the instances start, once they run (settled {SETTLE:?}), and after \
             they are destroyed; the drop is against the mean of before and after. Other work on the \
             machine moves it: the noise row is its size."
        );
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Through the daemon first, so that it cleans up as it does for
        // any stop; what is left is killed below and by DaemonEnv.
        for name in &self.defined {
            let _ = lxvirt(&self.env.bus.address, &["destroy", name]);
        }
        kill_leftover_qemus(&self.env.run_dir());
    }
}

/// Kills every qemu whose pidfile is under `RUN/qemu/*/qemu.pid`, and
/// waits for it to go.
fn kill_leftover_qemus(run_dir: &Path) {
    let Ok(entries) = fs::read_dir(run_dir.join("qemu")) else {
        return;
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        if let Ok(text) = fs::read_to_string(entry.path().join("qemu.pid"))
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid > 0
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            pids.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn wait_shutoff(name: &str, domain: &DomainProxy<'_>) -> Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let state = domain.state().await?;
        if state == "shutoff" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} is still {state} {STOP_TIMEOUT:?} after the stop");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn set_nonblocking(file: &fs::File) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The host's `MemAvailable`, bytes: the mean of 5 readings over 1 s.
pub(crate) async fn mem_available() -> Result<f64> {
    let mut sum = 0.0;
    for _ in 0..5 {
        let text = fs::read_to_string("/proc/meminfo")?;
        let kib: u64 = text
            .lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("no MemAvailable in /proc/meminfo")?;
        sum += kib as f64 * 1024.0;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(sum / 5.0)
}

/// CPU time of a cgroup, ns: `cpuacct.usage` (v1) or `usage_usec` of
/// `cpu.stat` (v2).
fn cpu_ns(dir: &Path) -> Result<u64> {
    if let Some(ns) = read_u64(&dir.join("cpuacct.usage")) {
        return Ok(ns);
    }
    let file = dir.join("cpu.stat");
    fs::read_to_string(&file)
        .with_context(|| format!("cannot read {} or cpuacct.usage", file.display()))?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
        .with_context(|| format!("no usage_usec in {}", file.display()))
}

/// Every pid in the cgroup at `dir` and below it.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&entry.path()));
            }
        }
    }
    pids
}

/// A process's PSS, and the parts of it in the guest's RAM (the anonymous
/// mapping of exactly its size) and in TCG's translated code (writable
/// and executable mappings), KiB.
#[derive(Debug, Default)]
struct PssParts {
    total: u64,
    guest_ram: u64,
    code_buffer: u64,
}

impl PssParts {
    fn add(&mut self, other: &PssParts) {
        self.total += other.total;
        self.guest_ram += other.guest_ram;
        self.code_buffer += other.code_buffer;
    }
}

fn pss_parts(pid: u32, guest_ram_kib: u64) -> PssParts {
    let mut parts = PssParts {
        total: pss_kib(pid).unwrap_or(0),
        ..PssParts::default()
    };
    let Ok(smaps) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return parts;
    };
    // Mapping headers ("start-end perms offset dev inode [path]") are
    // followed by "Key: value kB" lines; the header's size and perms
    // classify the Pss line below it.
    let mut current: Option<(u64, String, bool)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or_default().to_owned();
            let anonymous = fields.nth(2) == Some("0") && fields.next().is_none();
            current = Some(((end - start) / 1024, perms, anonymous));
        } else if first == "Pss:"
            && let Some((size_kib, perms, anonymous)) = &current
        {
            let pss: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if perms.starts_with("rwx") {
                parts.code_buffer += pss;
            } else if *anonymous && *size_kib == guest_ram_kib {
                parts.guest_ram += pss;
            }
        }
    }
    parts
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// "median (min–max) unit".
fn spread(v: &[f64], unit: &str) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let m = median(&mut v.to_vec());
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let digits = if m >= 100.0 { 0 } else { 1 };
    format!("{m:.digits$} {unit} ({min:.digits$}–{max:.digits$})")
}

fn ratio(vm: f64, container: f64) -> String {
    if container > 0.0 {
        format!("{:.1}×", vm / container)
    } else {
        "–".into()
    }
}
