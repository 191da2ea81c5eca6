//! The QEMU driver end to end: `type='qemu'` domains boot Debian's kernel
//! with the test guest (tests/vm/mkguest) under TCG through the real
//! lxvirtd and CLI, and are managed with the commands that manage
//! containers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lxvirt_tests::guest::{TestGuest, test_guest};
use lxvirt_tests::net::DomainIfbs;
use lxvirt_tests::{TestBus, TestDaemon, lxvirt, root_or_skip};
use serde_json::Value;

/// How long a boot under TCG may take to reach its marker (~2 s here).
const BOOT: Duration = Duration::from_secs(90);

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    bus: TestBus,
    daemon: TestDaemon,
    guest: TestGuest,
}

/// What a failing test left (VMs, their containers' peers, networks) goes
/// with it: a VM outlives its daemon by design.
impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        lxvirt_tests::kill_leftover_containers(&self.root.join("run"));
        lxvirt_tests::remove_leftover_networks(&self.root.join("run"));
    }
}

impl Env {
    async fn new() -> Option<Env> {
        if !root_or_skip() {
            return None;
        }
        let guest = test_guest()?;
        let tmp = lxvirt_tests::shared_tempdir().unwrap();
        let root = tmp.path().to_owned();
        let bus = TestBus::start().unwrap();
        let daemon = TestDaemon::start(&bus, &root).await.unwrap();
        Some(Env {
            _tmp: tmp,
            root,
            bus,
            daemon,
            guest,
        })
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        lxvirt(&self.bus.address, args).unwrap()
    }

    /// Runs the CLI and insists it succeeds; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lxvirt {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI and insists it fails; its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "lxvirt {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn info(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["-o", "json", "dominfo", name])).unwrap()
    }

    fn state(&self, name: &str) -> (String, String) {
        let info = self.info(name);
        (
            info["state"].as_str().unwrap_or_default().to_owned(),
            info["state_reason"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Waits until `name` is in `state`; its reason.
    fn wait_state(&self, name: &str, state: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (now, reason) = self.state(name);
            if now == state {
                return reason;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is still {now} ({reason}) after {within:?}; console: {}",
                self.console_log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn guest_dir(&self, name: &str) -> PathBuf {
        self.root.join("run/qemu").join(name)
    }

    fn console_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.guest_dir(name).join("serial0.log")).unwrap_or_default()
    }

    /// Waits until the console shows `word` on a line of its own, `count`
    /// times.
    fn wait_console(&self, name: &str, word: &str, count: usize) {
        let deadline = Instant::now() + BOOT;
        loop {
            let log = self.console_log(name);
            if log.lines().filter(|l| l.trim_end() == word).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no '{word}' (x{count}) on the console after {BOOT:?}: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Defines a VM booting the test guest with `cmdline` added.
    fn define(&self, name: &str, cmdline: &str, root_extra: &str, devices: &str) -> PathBuf {
        let xml = vm_xml(&self.guest, name, cmdline, root_extra, devices);
        let path = self.root.join(format!("{name}.xml"));
        std::fs::write(&path, xml).unwrap();
        self.ok(&["define", path.to_str().unwrap()]);
        path
    }

    /// Defines a VM booting the test guest, with `from` changed to `to`
    /// in its XML.
    fn define_changed(&self, name: &str, from: &str, to: &str) {
        let xml = vm_xml(&self.guest, name, "", "", "");
        assert!(xml.contains(from), "{from}");
        let path = self.root.join(format!("{name}.xml"));
        std::fs::write(&path, xml.replace(from, to)).unwrap();
        self.ok(&["define", path.to_str().unwrap()]);
    }

    /// The qemu of a running domain.
    fn qemu_pid(&self, name: &str) -> i32 {
        self.info(name)["pid"]
            .as_i64()
            .expect("a running domain's pid") as i32
    }

    /// Nothing of a stopped VM is left: no qemu, cgroup or socket.
    fn assert_clean(&self, name: &str, pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "qemu {pid} is still there"
        );
        assert!(!self.daemon.cgroup_dir("pids", name).exists());
        assert!(!self.guest_dir(name).join("qmp.sock").exists());
        assert!(
            !self
                .root
                .join("run/qemu")
                .join(format!("{name}.exit"))
                .exists()
        );
    }
}

fn vm_xml(guest: &TestGuest, name: &str, cmdline: &str, root_extra: &str, devices: &str) -> String {
    format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>192</memory>\n  <vcpu>1</vcpu>\n  \
         <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n    <kernel>{kernel}</kernel>\n    \
         <initrd>{initrd}</initrd>\n    <cmdline>{base} {cmdline}</cmdline>\n  </os>\n  \
         <features><acpi/><apic/></features>\n  {root_extra}\n  \
         <devices>\n    <console type='pty'/>\n    {devices}\n  </devices>\n</domain>\n",
        kernel = guest.kernel.display(),
        initrd = guest.initrd.display(),
        base = guest.cmdline_base,
    )
}

fn status_uid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A VM boots to its marker and the container commands manage it: it runs
/// as a uid of its own in its cgroup, suspends and resumes, shows its
/// statistics, and the power button (shutdown) powers it off with nothing
/// left behind.
#[tokio::test]
async fn a_vm_boots_to_its_marker_and_shuts_down_on_the_power_button() {
    let Some(env) = Env::new().await else { return };
    env.define(
        "vm1",
        "lxvirt.marker=READY-vm1",
        "<memtune><hard_limit unit='MiB'>768</hard_limit></memtune>",
        "",
    );
    env.ok(&["start", "vm1"]);
    let pid = env.qemu_pid("vm1");
    env.wait_console("vm1", "READY-vm1", 1);
    // `logs` shows the serial port's output, as qemu keeps it.
    let logs = env.ok(&["logs", "--tail", "50", "vm1"]);
    assert!(logs.contains("READY-vm1"), "{logs}");

    // Its own uid: the first of the host ids allocated to it.
    let info = env.info("vm1");
    let first_id = info["host_ids"][0].as_u64().expect("host ids") as u32;
    assert_eq!(status_uid(pid), first_id);
    assert!(first_id >= 1_000_000, "{info}");
    let procs =
        std::fs::read_to_string(env.daemon.cgroup_dir("pids", "vm1").join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
    assert!(
        info["stats"]["cpu.time"].as_u64().unwrap_or(0) > 0,
        "{info}"
    );
    // <memtune><hard_limit> bounds its qemu (not <memory>, the guest's).
    assert_eq!(
        info["stats"]["memory.limit"].as_u64(),
        Some(768 << 20),
        "{info}"
    );
    let limit = env
        .daemon
        .cgroup_dir("memory", "vm1")
        .join("memory.limit_in_bytes");
    if limit.exists() {
        assert_eq!(
            std::fs::read_to_string(limit).unwrap().trim(),
            (768u64 << 20).to_string()
        );
    }

    env.ok(&["suspend", "vm1"]);
    assert_eq!(env.state("vm1").0, "paused");
    env.ok(&["resume", "vm1"]);
    assert_eq!(env.state("vm1").0, "running");

    env.ok(&["shutdown", "vm1"]);
    let reason = env.wait_state("vm1", "shutoff", Duration::from_secs(60));
    assert_eq!(reason, "shutdown");
    assert!(
        env.console_log("vm1")
            .contains("lxvirt-guest: power button"),
        "the guest did not see the power button: {}",
        env.console_log("vm1")
    );
    env.assert_clean("vm1", pid);
}

/// lxvirtd killed with -9 leaves the VM running; the next lxvirtd finds it
/// and can stop it.
#[tokio::test]
async fn a_vm_outlives_a_killed_daemon_and_is_managed_again() {
    let Some(mut env) = Env::new().await else {
        return;
    };
    env.define("vm2", "lxvirt.marker=READY-vm2", "", "");
    env.ok(&["start", "vm2"]);
    let pid = env.qemu_pid("vm2");
    env.daemon.kill().unwrap();
    env.daemon = TestDaemon::start(&env.bus, &env.root).await.unwrap();
    assert_eq!(env.state("vm2").0, "running");
    assert_eq!(env.qemu_pid("vm2"), pid);
    // The events still reach the new daemon: the guest runs on to its
    // marker, and pauses on request.
    env.wait_console("vm2", "READY-vm2", 1);
    env.ok(&["suspend", "vm2"]);
    assert_eq!(env.state("vm2").0, "paused");
    env.ok(&["destroy", "vm2"]);
    assert_eq!(
        env.wait_state("vm2", "shutoff", Duration::from_secs(20)),
        "destroyed"
    );
    env.assert_clean("vm2", pid);
}

/// A VM whose start the daemon never recorded — killed after qemu's
/// launch, before the live status was written; here the status file is
/// removed to stand for that — does not run on unmanaged: the next daemon
/// ends it at start-up and releases its cgroup and files, and the domain
/// starts again.
#[tokio::test]
async fn a_vm_the_daemon_never_recorded_is_ended_by_the_next_one() {
    let Some(mut env) = Env::new().await else {
        return;
    };
    env.define("vm3", "lxvirt.marker=READY-vm3", "", "");
    env.ok(&["start", "vm3"]);
    let pid = env.qemu_pid("vm3");
    env.daemon.kill().unwrap();
    std::fs::remove_file(env.root.join("run/vm3.status")).unwrap();
    env.daemon = TestDaemon::start(&env.bus, &env.root).await.unwrap();
    assert_eq!(env.state("vm3").0, "shutoff");
    env.assert_clean("vm3", pid);
    env.ok(&["start", "vm3"]);
    let pid = env.qemu_pid("vm3");
    env.ok(&["destroy", "vm3"]);
    env.wait_state("vm3", "shutoff", Duration::from_secs(20));
    env.assert_clean("vm3", pid);
}

/// qemu ended by a signal from the host: SIGTERM (what systemd sends when
/// `machinectl terminate` stops the VM's scope) is a shutdown, qemu's
/// `SHUTDOWN` event says `host-signal`; SIGKILL leaves no word and is a
/// crash. Nothing is left either way.
#[tokio::test]
async fn qemu_ended_by_a_host_signal_is_shut_down_or_crashed() {
    let Some(env) = Env::new().await else { return };
    for (name, signal, reason) in [("term", "-TERM", "shutdown"), ("kill", "-KILL", "crashed")] {
        env.define(name, &format!("lxvirt.marker=READY-{name}"), "", "");
        env.ok(&["start", name]);
        let pid = env.qemu_pid(name);
        env.wait_console(name, &format!("READY-{name}"), 1);
        let killed = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let got = env.wait_state(name, "shutoff", Duration::from_secs(30));
        assert_eq!(got, reason, "{name}");
        env.assert_clean(name, pid);
    }
}

/// What the guest does by itself decides the state, with `on_*` applied:
/// a power-off, a reboot with on_reboot='destroy', a panic reported by
/// pvpanic with on_crash='destroy'.
#[tokio::test]
async fn the_guest_powering_off_rebooting_or_panicking_applies_on_actions() {
    let Some(env) = Env::new().await else { return };
    let cases = [
        ("off", "lxvirt.then=poweroff", "", "", "shutdown"),
        (
            "boot",
            "lxvirt.then=reboot",
            "<on_reboot>destroy</on_reboot>",
            "",
            "shutdown",
        ),
        (
            "panic",
            "lxvirt.then=panic",
            "<on_crash>destroy</on_crash>",
            "<panic model='isa'/>",
            "crashed",
        ),
    ];
    for (name, cmdline, root_extra, devices, _) in &cases {
        env.define(
            name,
            &format!("lxvirt.marker=READY-{name} {cmdline}"),
            root_extra,
            devices,
        );
        env.ok(&["start", name]);
    }
    for (name, _, _, _, reason) in &cases {
        let got = env.wait_state(name, "shutoff", BOOT);
        assert_eq!(&got, reason, "{name}: {}", env.console_log(name));
        assert!(env.console_log(name).contains(&format!("READY-{name}")));
    }
}

/// Bad input is refused with the element named, and nothing is started.
#[tokio::test]
async fn bad_vm_definitions_are_refused_and_leave_nothing() {
    let Some(env) = Env::new().await else { return };
    // A kernel that is not there.
    let kernel = env.guest.kernel.to_str().unwrap();
    env.define_changed("nokernel", kernel, "/nonexistent/vmlinuz");
    let error = env.refused(&["start", "nokernel"]);
    assert!(
        error.contains("<os><kernel>") && error.contains("/nonexistent/vmlinuz"),
        "{error}"
    );
    assert_eq!(env.state("nokernel").0, "shutoff");

    // More memory than the host has.
    env.define_changed(
        "huge",
        "<memory unit='MiB'>192</memory>",
        "<memory unit='TiB'>64</memory>",
    );
    let error = env.refused(&["start", "huge"]);
    assert!(
        error.contains("<memory>") && error.contains("lower it"),
        "{error}"
    );

    // A machine type qemu does not have: named, nothing is left.
    env.define_changed("machine", "machine='q35'", "machine='pc-q35-0.1'");
    let error = env.refused(&["start", "machine"]);
    assert!(error.contains("no machine type 'pc-q35-0.1'"), "{error}");
    assert!(!env.daemon.cgroup_dir("pids", "machine").exists());

    // An emulator that is not there.
    env.define_changed(
        "noemu",
        "<devices>",
        "<devices><emulator>/nonexistent/qemu-system-x86_64</emulator>",
    );
    let error = env.refused(&["start", "noemu"]);
    assert!(
        error.contains("/nonexistent/qemu-system-x86_64 is not installed"),
        "{error}"
    );

    // type='kvm' where KVM cannot run a stock guest (this machine kind).
    if let Some(why) = kvm_unusable_here() {
        env.define_changed("kvm", "<domain type='qemu'>", "<domain type='kvm'>");
        let error = env.refused(&["start", "kvm"]);
        assert!(error.contains("KVM is not usable"), "{error} ({why})");
    }
    let qemus = std::process::Command::new("pgrep")
        .args(["-f", &format!("{}/run/qemu", env.root.display())])
        .output()
        .unwrap();
    assert!(qemus.stdout.is_empty(), "a qemu was left running");
}

/// Why this host's KVM cannot boot a stock guest, as lxvirtd probes it.
fn kvm_unusable_here() -> Option<String> {
    lxvirtd::qemu::host::kvm_unavailable(&lxvirtd::host::HostPaths::default())
}

/// Disks: a root-owned raw image and a transient one are given to the
/// VM's uid while it runs (the transient one through a qcow2 overlay) and
/// given back when it stops; the guest reads them; a second VM writing the
/// same image is refused, naming the first.
#[tokio::test]
async fn disks_are_given_to_the_vm_and_back() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Some(env) = Env::new().await else { return };
    let image = env.root.join("data.raw");
    let base = env.root.join("base.raw");
    for (path, text) in [(&image, "data-disk-line"), (&base, "base-disk-line")] {
        let mut bytes = format!("{text}\n").into_bytes();
        bytes.resize(1 << 20, 0);
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let disk = |file: &Path, dev: &str, extra: &str| {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='{dev}' bus='virtio'/>{extra}</disk>",
            file.display()
        )
    };
    let devices = format!(
        "{}{}<memballoon model='virtio'/>",
        disk(&image, "vda", ""),
        disk(&base, "vdb", "<transient/>")
    );
    env.define(
        "disks",
        "lxvirt.disk=vda lxvirt.marker=READY-disks",
        "<currentMemory unit='MiB'>160</currentMemory>",
        &devices,
    );
    env.ok(&["start", "disks"]);
    env.wait_console("disks", "READY-disks", 1);
    assert!(
        env.console_log("disks")
            .contains("lxvirt-guest: vda data-disk-line"),
        "{}",
        env.console_log("disks")
    );
    let uid = env.info("disks")["host_ids"][0].as_u64().unwrap() as u32;
    assert_eq!(std::fs::metadata(&image).unwrap().uid(), uid);
    // The base of the transient disk is only read: given too (others
    // cannot read it), its overlay in the VM's directory.
    assert_eq!(std::fs::metadata(&base).unwrap().uid(), uid);
    assert!(env.guest_dir("disks").join("transient-1.qcow2").exists());
    // qemu's counters: the guest read vda; its balloon leaves it
    // <currentMemory> of its 192 MiB.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats: Value =
            serde_json::from_str(&env.ok(&["-o", "json", "domstats", "disks"])).unwrap();
        if stats["balloon.current"].as_u64() == Some(160 << 20) || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        stats["block.vda.rd.bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert_eq!(
        stats["balloon.current"].as_u64(),
        Some(160 << 20),
        "{stats}"
    );

    // Another VM writing the same image is refused, naming the holder.
    env.define("other", "", "", &disk(&image, "vda", ""));
    let error = env.refused(&["start", "other"]);
    assert!(
        error.contains("written by running domain 'disks'"),
        "{error}"
    );

    let pid = env.qemu_pid("disks");
    env.ok(&["destroy", "disks"]);
    env.assert_clean("disks", pid);
    for path in [&image, &base] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
    }
    assert!(!env.guest_dir("disks").join("transient-1.qcow2").exists());
    // Free again: the other VM starts.
    env.ok(&["start", "other"]);
    env.ok(&["destroy", "other"]);
}

/// A VM and a container on one lxvirt network exchange packets: the VM's
/// tap is a port of the network's bridge (filtered like the container's
/// veth), the guest gets its address from the network's DHCP, the
/// container pings it. The tap is shaped by `<bandwidth>` as a
/// container's veth is (its own bucket, an ifb with the other), and the
/// traffic passes both. The tap goes with the VM, the ifb with the VM's
/// end, by destroy or by kill -9 of qemu.
#[tokio::test]
async fn a_vm_and_a_container_on_one_network_exchange_packets() {
    let Some(env) = Env::new().await else { return };
    let network = env.root.join("net.xml");
    std::fs::write(
        &network,
        "<network><name>lxvtvmnet</name><bridge name='lxvtbr77'/>\
         <ip address='10.251.77.1' prefix='24'><dhcp><range start='10.251.77.100' end='10.251.77.120'/></dhcp></ip></network>",
    )
    .unwrap();
    env.ok(&["net-define", network.to_str().unwrap()]);
    env.ok(&["net-start", "lxvtvmnet"]);

    let rootfs = env.root.join("croot");
    lxvirt_tests::busybox_root(&rootfs);
    let container = env.root.join("c.xml");
    std::fs::write(
        &container,
        format!(
            "<domain type='lxc'><name>cnet</name><memory unit='MiB'>32</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>1000000</initarg></os>\
             <devices><filesystem type='mount'><source dir='{}'/><target dir='/'/></filesystem>\
             <interface type='network'><source network='lxvtvmnet'/><ip address='10.251.77.2' prefix='24'/></interface>\
             <console type='pty'/></devices></domain>",
            rootfs.display()
        ),
    )
    .unwrap();
    env.ok(&["create", container.to_str().unwrap()]);

    env.define(
        "vmnet",
        "lxvirt.udhcpc=1 lxvirt.agent=1 lxvirt.marker=READY-vmnet",
        "",
        &format!(
            "{AGENT_CHANNEL}<interface type='network'><source network='lxvtvmnet'/><model type='virtio'/>\
             <bandwidth><inbound average='1000'/><outbound average='500' burst='32'/></bandwidth></interface>"
        ),
    );
    let ifbs = DomainIfbs::of(env.info("vmnet")["uuid"].as_str().unwrap());
    env.ok(&["start", "vmnet"]);
    env.wait_console("vmnet", "READY-vmnet", 1);
    let console = env.console_log("vmnet");
    let address = console
        .lines()
        .find_map(|l| l.strip_prefix("lxvirt-guest: eth0 dhcp "))
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("the guest got no lease: {console}"))
        .to_owned();
    assert!(address.starts_with("10.251.77."), "{address}");
    let live = env.ok(&["dumpxml", "vmnet"]);
    let tap = live
        .split("<interface")
        .nth(1)
        .and_then(|i| i.split("<target dev='").nth(1))
        .and_then(|t| t.split('\'').next())
        .unwrap_or_else(|| panic!("no tap in the live XML: {live}"))
        .to_owned();
    assert!(
        Path::new("/sys/class/net")
            .join(&tap)
            .join("brport")
            .exists(),
        "{tap}"
    );
    let ping = |count: &str| {
        env.run(&[
            "enter",
            "cnet",
            "--",
            "/bin/busybox",
            "ping",
            "-c",
            count,
            "-W",
            "2",
            &address,
        ])
    };
    let out = String::from_utf8_lossy(&ping("2").stdout).into_owned();
    assert!(out.contains(" 0% packet loss"), "{out}");
    let stats: Value = serde_json::from_str(&env.ok(&["-o", "json", "domstats", "vmnet"])).unwrap();
    assert!(
        stats[format!("net.{tap}.rx.packets")].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
    // The pings went to the guest through the tap's bucket, the replies
    // through the ifb's.
    let ifb = match ifbs.list().as_slice() {
        [ifb] => ifb.clone(),
        other => panic!("one ifb expected for the shaped tap: {other:?}"),
    };
    let tap_tbf = tbf_of(&tap);
    assert_eq!(tap_tbf["options"]["rate"], 1_000_000, "{tap_tbf}");
    assert!(tap_tbf["packets"].as_u64().unwrap_or(0) >= 2, "{tap_tbf}");
    let ifb_tbf = tbf_of(&ifb);
    assert_eq!(ifb_tbf["options"]["rate"], 500_000, "{ifb_tbf}");
    assert_eq!(ifb_tbf["options"]["burst"], 32 * 1024, "{ifb_tbf}");
    assert!(ifb_tbf["packets"].as_u64().unwrap_or(0) >= 2, "{ifb_tbf}");
    // Live: a new inbound rate replaces the tap's bucket alone; an ended
    // outbound limit takes the ifb, a new one makes it again.
    env.ok(&["domiftune", "vmnet", &tap, "--inbound", "2000", "--live"]);
    assert_eq!(tbf_of(&tap)["options"]["rate"], 2_000_000);
    assert_eq!(ifbs.list(), std::slice::from_ref(&ifb));
    env.ok(&["domiftune", "vmnet", &tap, "--outbound", "0", "--live"]);
    assert_eq!(ifbs.list(), Vec::<String>::new());
    env.ok(&["domiftune", "vmnet", &tap, "--outbound", "700", "--live"]);
    assert_eq!(ifbs.list(), std::slice::from_ref(&ifb));
    assert_eq!(tbf_of(&ifb)["options"]["rate"], 700_000);
    let live = env.ok(&["dumpxml", "vmnet"]);
    assert!(live.contains("<outbound average='700'/>"), "{live}");
    // The link down: the guest loses its carrier (qemu's set_link, seen
    // through the guest agent), the tap goes down; nothing passes. Up
    // again, the pings do.
    let carrier = || {
        env.ok(&[
            "enter",
            "vmnet",
            "--",
            "/bin/cat",
            "/sys/class/net/eth0/carrier",
        ])
    };
    assert_eq!(carrier().trim(), "1");
    env.ok(&["domif-setlink", "vmnet", &tap, "down"]);
    assert_eq!(carrier().trim(), "0");
    let down = ping("1");
    assert!(!down.status.success(), "a ping passed a link that is down");
    let operstate =
        std::fs::read_to_string(Path::new("/sys/class/net").join(&tap).join("operstate"));
    assert_eq!(operstate.unwrap_or_default().trim(), "down");
    env.ok(&["domif-setlink", "vmnet", &tap, "up"]);
    assert_eq!(carrier().trim(), "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping("1").status.success() {
        assert!(
            Instant::now() < deadline,
            "no ping passes after the link came up"
        );
    }

    let pid = env.qemu_pid("vmnet");
    env.ok(&["destroy", "vmnet"]);
    env.assert_clean("vmnet", pid);
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "the tap {tap} is left"
    );
    assert_eq!(ifbs.list(), Vec::<String>::new(), "destroy took the ifb");
    // Started with <link state='down'> (set over QMP before the guest
    // runs); then qemu killed: the daemon deletes the ifb as it collects
    // the end.
    let mac = live
        .split("<mac address='")
        .nth(1)
        .and_then(|m| m.split('\'').next())
        .unwrap()
        .to_owned();
    env.ok(&["domif-setlink", "vmnet", &mac, "down", "--config"]);
    env.ok(&["start", "vmnet"]);
    assert_eq!(ifbs.list().len(), 1);
    let live = env.ok(&["dumpxml", "vmnet"]);
    assert!(live.contains("<link state='down'/>"), "{live}");
    env.wait_console("vmnet", "READY-vmnet", 1);
    assert_eq!(carrier().trim(), "0", "started with its link down");
    let pid = env.qemu_pid("vmnet");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_state("vmnet", "shutoff", Duration::from_secs(30));
    assert_eq!(ifbs.list(), Vec::<String>::new(), "the end took the ifb");
    env.ok(&["destroy", "cnet"]);
    env.ok(&["net-destroy", "lxvtvmnet"]);
}

/// The serial console over D-Bus (`OpenConsole`) shows the guest as it
/// runs: a guest that reboots itself is reset in place by qemu
/// (`on_reboot='restart'`) and prints its marker again, the domain
/// running throughout with the same qemu; `lxvirt reboot` powers it off
/// through ACPI and starts it in a new qemu.
#[tokio::test]
async fn the_console_shows_a_guest_rebooting_and_reboot_restarts_it() {
    use std::os::fd::{AsFd as _, OwnedFd};
    let Some(env) = Env::new().await else { return };
    env.define(
        "loop",
        "lxvirt.marker=READY-loop lxvirt.then=reboot",
        "",
        "",
    );
    env.ok(&["start", "loop"]);
    let pid = env.qemu_pid("loop");
    env.wait_console("loop", "READY-loop", 1);
    let connection = env.bus.connect().await.unwrap();
    let manager = lxvirtd::dbus::proxy::ManagerProxy::new(&connection)
        .await
        .unwrap();
    let path = manager.lookup_by_name("loop").await.unwrap();
    let domain = lxvirtd::dbus::proxy::DomainProxy::builder(&connection)
        .path(path)
        .build()
        .await
        .unwrap();
    let console: OwnedFd = domain.open_console("console0").await.unwrap().into();
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let deadline = Instant::now() + BOOT;
        while !String::from_utf8_lossy(&seen).contains("READY-loop") && Instant::now() < deadline {
            let mut fds = [nix::poll::PollFd::new(
                console.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)).unwrap_or(0) == 0 {
                continue;
            }
            let mut buffer = [0u8; 4096];
            match nix::unistd::read(&console, &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    })
    .await
    .unwrap();
    assert!(seen.contains("READY-loop"), "the console showed: {seen}");
    // It rebooted inside the same qemu.
    assert_eq!(env.state("loop").0, "running");
    assert_eq!(env.qemu_pid("loop"), pid);
    env.ok(&["destroy", "loop"]);

    env.define("again", "lxvirt.marker=READY-again", "", "");
    env.ok(&["start", "again"]);
    env.wait_console("again", "READY-again", 1);
    let first = env.qemu_pid("again");
    env.ok(&["reboot", "again"]);
    let reason = env.wait_state("again", "running", Duration::from_secs(60));
    let second = env.qemu_pid("again");
    assert_ne!(first, second, "reboot kept the same qemu");
    assert_eq!(reason, "rebooted");
    env.wait_console("again", "READY-again", 1);
    env.ok(&["destroy", "again"]);
    env.assert_clean("again", second);

    // reset: the machine restarts inside the same qemu, even when the
    // guest's own reboot would power it off (on_reboot='destroy' runs
    // qemu with -no-reboot, which makes every reset a shutdown).
    env.define(
        "button",
        "lxvirt.marker=READY-button",
        "<on_reboot>destroy</on_reboot>",
        "",
    );
    env.ok(&["start", "button"]);
    env.wait_console("button", "READY-button", 1);
    let pid = env.qemu_pid("button");
    env.ok(&["reset", "button"]);
    env.wait_console("button", "READY-button", 2);
    assert_eq!(env.state("button").0, "running");
    assert_eq!(env.qemu_pid("button"), pid, "reset replaced qemu");
    // A mode a VM has no way to carry out is refused, and nothing changes.
    let refused = env.refused(&["shutdown", "button", "--mode", "signal"]);
    assert!(
        refused.contains("shutdown mode 'signal' is not supported for virtual machines"),
        "{refused}"
    );
    assert_eq!(env.state("button").0, "running");
    env.ok(&["shutdown", "button", "--mode", "acpi", "--grace", "60"]);
    assert_eq!(env.state("button"), ("shutoff".into(), "shutdown".into()));
    env.assert_clean("button", pid);
}

/// 100 starts and stops of a VM with a transient disk and an interface on
/// a network leave no qemu, tap, cgroup, socket or overlay behind, and
/// give its disk back each time.
#[tokio::test]
async fn a_hundred_cycles_leave_nothing_behind() {
    use std::os::unix::fs::MetadataExt as _;
    let Some(env) = Env::new().await else { return };
    let network = env.root.join("net.xml");
    std::fs::write(
        &network,
        "<network><name>lxvtcyc</name><bridge name='lxvtbr78'/>\
         <ip address='10.251.78.1' prefix='24'/></network>",
    )
    .unwrap();
    env.ok(&["net-define", network.to_str().unwrap()]);
    env.ok(&["net-start", "lxvtcyc"]);
    let image = env.root.join("cycle.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    // Firmware with nothing to boot: the cycles measure lxvirt, not a boot.
    let xml = format!(
        "<domain type='qemu'><name>cycle</name><memory unit='MiB'>64</memory>\
         <os><type machine='q35'>hvm</type><boot dev='hd'/></os><devices>\
         <disk type='file' device='disk'><driver type='raw'/><source file='{}'/>\
         <target dev='vda' bus='virtio'/><transient/></disk>\
         <interface type='network'><source network='lxvtcyc'/></interface>\
         <console type='pty'/></devices></domain>",
        image.display()
    );
    let path = env.root.join("cycle.xml");
    std::fs::write(&path, xml).unwrap();
    env.ok(&["define", path.to_str().unwrap()]);
    let taps = || -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("tun_flags").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("lxv"))
            .collect()
    };
    // The cycles' own taps, named in the live XML: other tests of this
    // binary run beside this one with taps of their own.
    let mut cycle_taps = std::collections::BTreeSet::new();
    let began = Instant::now();
    let mut last = 0;
    for _ in 0..100 {
        env.ok(&["start", "cycle"]);
        last = env.qemu_pid("cycle");
        if cycle_taps.is_empty() {
            let live =
                lxvirtd::domain::DomainDef::from_xml(&env.ok(&["dumpxml", "cycle"])).unwrap();
            let name = live.devices.interfaces[0]
                .target_dev
                .clone()
                .expect("the live XML names the tap");
            assert!(taps().contains(&name), "{name} is not a tap");
            cycle_taps.insert(name);
        }
        env.ok(&["destroy", "cycle"]);
    }
    println!("100 start/destroy cycles in {:?}", began.elapsed());
    env.assert_clean("cycle", last);
    let left: Vec<String> = taps()
        .into_iter()
        .filter(|t| cycle_taps.contains(t))
        .collect();
    assert!(left.is_empty(), "taps left behind: {left:?}");
    assert_eq!(std::fs::metadata(&image).unwrap().uid(), 0);
    let left: Vec<_> = std::fs::read_dir(env.guest_dir("cycle"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "serial0.log")
        .collect();
    assert!(left.is_empty(), "left in the VM's directory: {left:?}");
    env.ok(&["net-destroy", "lxvtcyc"]);
}

/// The guest agent's channel, as libvirt's documents write it.
const AGENT_CHANNEL: &str =
    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>";

impl Env {
    /// Runs the CLI with `input` on its stdin (a pipe).
    fn run_with_input(&self, args: &[&str], input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new(lxvirt_tests::binary("lxvirt"))
            .arg(format!("--connect={}", self.bus.address))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// A VM with the guest agent's channel whose guest runs qemu-ga
/// (`lxvirt.agent=1`): `lxvirt enter` runs commands in the guest through
/// guest-exec (output, exit status, stdin from a pipe), `--cwd` is
/// refused by name, and `domifaddr --source agent` shows the address the
/// guest set on eth0, without `lo`.
#[tokio::test]
async fn enter_and_addresses_go_through_the_guest_agent() {
    let Some(env) = Env::new().await else { return };
    env.define(
        "vmga",
        "lxvirt.agent=1 lxvirt.ip=192.0.2.9/24 lxvirt.marker=READY-vmga",
        "",
        &format!(
            "{AGENT_CHANNEL}<interface type='ethernet'><mac address='52:54:00:aa:bb:09'/><model type='virtio'/></interface>"
        ),
    );
    env.ok(&["start", "vmga"]);
    env.wait_console("vmga", "READY-vmga", 1);
    assert!(
        env.console_log("vmga").contains("lxvirt-guest: agent up"),
        "{}",
        env.console_log("vmga")
    );

    let out = env.ok(&["enter", "vmga", "--", "/bin/echo", "hi"]);
    assert_eq!(out, "hi\n");

    let failed = env.run(&[
        "enter",
        "vmga",
        "--",
        "/bin/sh",
        "-c",
        "echo oops >&2; exit 7",
    ]);
    assert_eq!(failed.status.code(), Some(7), "{failed:?}");
    assert_eq!(String::from_utf8_lossy(&failed.stderr), "oops\n");

    let piped = env.run_with_input(&["enter", "vmga", "--", "cat"], b"through stdin\n");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "through stdin\n");

    let error = env.refused(&["enter", "vmga", "--cwd", "/tmp", "--", "/bin/pwd"]);
    assert!(error.contains("'cwd' is not supported"), "{error}");

    let addresses: Value =
        serde_json::from_str(&env.ok(&["-o", "json", "domifaddr", "vmga", "--source", "agent"]))
            .unwrap();
    let text = addresses.to_string();
    assert!(text.contains("192.0.2.9"), "{text}");
    assert!(text.contains("52:54:00:aa:bb:09"), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");

    // shutdown --mode agent: the guest agent powers it off, not the
    // power button.
    let pid = env.qemu_pid("vmga");
    env.ok(&["shutdown", "vmga", "--mode", "agent", "--grace", "120"]);
    assert_eq!(env.state("vmga"), ("shutoff".into(), "shutdown".into()));
    let console = env.console_log("vmga");
    assert!(
        console.contains("lxvirt-guest: agent shutdown poweroff"),
        "{console}"
    );
    assert!(!console.contains("power button"), "{console}");
    env.assert_clean("vmga", pid);
    assert!(!env.guest_dir("vmga").join("agent.sock").exists());
}

/// Without the channel, enter and the agent's addresses are refused with
/// what to add; with the channel but no qemu-ga in the guest, they fail
/// after the agent's timeout with a question about qemu-ga, not a hang.
#[tokio::test]
async fn without_a_running_guest_agent_enter_is_refused_clearly() {
    let Some(env) = Env::new().await else { return };
    env.define("vmnoga", "lxvirt.marker=READY-vmnoga", "", "");
    env.define(
        "vmsilent",
        "lxvirt.marker=READY-vmsilent",
        "",
        AGENT_CHANNEL,
    );
    env.ok(&["start", "vmnoga"]);
    env.ok(&["start", "vmsilent"]);

    let error = env.refused(&["enter", "vmnoga", "--", "/bin/echo", "hi"]);
    assert!(
        error.contains("has no guest agent channel")
            && error.contains("name='org.qemu.guest_agent.0'"),
        "{error}"
    );
    let error = env.refused(&["domifaddr", "vmnoga", "--source", "agent"]);
    assert!(error.contains("has no guest agent channel"), "{error}");
    // Nor can it be shut down through one; it keeps running.
    let error = env.refused(&["shutdown", "vmnoga", "--mode", "agent"]);
    assert!(error.contains("has no guest agent channel"), "{error}");
    assert_eq!(env.state("vmnoga").0, "running");

    env.wait_console("vmsilent", "READY-vmsilent", 1);
    let asked = Instant::now();
    let error = env.refused(&["enter", "vmsilent", "--", "/bin/echo", "hi"]);
    assert!(
        error.contains("does not answer") && error.contains("is qemu-ga running in the guest?"),
        "{error}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "{:?}",
        asked.elapsed()
    );
    let error = env.refused(&["domifaddr", "vmsilent", "--source", "agent"]);
    assert!(
        error.contains("is qemu-ga running in the guest?"),
        "{error}"
    );

    env.ok(&["destroy", "vmnoga"]);
    env.ok(&["destroy", "vmsilent"]);
}

/// The tbf qdisc of `dev`, with its counters (`tc -s -j`).
fn tbf_of(dev: &str) -> Value {
    let out = std::process::Command::new("tc")
        .args(["-s", "-j", "qdisc", "show", "dev", dev])
        .output()
        .unwrap();
    let qdiscs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    qdiscs
        .into_iter()
        .find(|q| q["kind"] == "tbf")
        .unwrap_or_else(|| panic!("no tbf on {dev}: {}", String::from_utf8_lossy(&out.stdout)))
}
