//! Real containers through the real daemon: the whole lifecycle over D-Bus,
//! isolation seen from inside and from the host, restarts of the daemon,
//! errors. Needs root (CI runs as root); says so and returns otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lxvirt_tests::{TestBus, TestDaemon, busybox_root, root_or_skip, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};

/// A daemon on a private bus with a busybox root under a temp dir.
struct Env {
    bus: TestBus,
    dir: tempfile::TempDir,
    daemon: TestDaemon,
    connection: zbus::Connection,
}

impl Env {
    async fn new() -> Env {
        let bus = TestBus::start().unwrap();
        let dir = shared_tempdir().unwrap();
        busybox_root(&dir.path().join("rootfs"));
        let daemon = TestDaemon::start(&bus, dir.path()).await.unwrap();
        let connection = bus.connect().await.unwrap();
        Env {
            bus,
            dir,
            daemon,
            connection,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    async fn manager(&self) -> ManagerProxy<'static> {
        ManagerProxy::new(&self.connection).await.unwrap()
    }

    async fn domain(&self, path: zbus::OwnedObjectPath) -> DomainProxy<'static> {
        DomainProxy::builder(&self.connection)
            .path(path)
            .build()
            .await
            .unwrap()
    }

    /// A busybox container running `script` as init.
    fn xml(&self, name: &str, script: &str, extra: &str) -> String {
        format!(
            "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>{script}</initarg></os>\
             {extra}<devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             <console type='pty'/></devices></domain>",
            root = self.rootfs().display()
        )
    }

    async fn define(&self, name: &str, script: &str, extra: &str) -> DomainProxy<'static> {
        let path = self
            .manager()
            .await
            .define_xml(&self.xml(name, script, extra))
            .await
            .unwrap();
        self.domain(path).await
    }

    /// Runs a command inside; returns (exit code, stdout).
    async fn enter(&self, domain: &DomainProxy<'_>, argv: &[&str]) -> (i32, String) {
        lxvirt_tests::enter_capture(domain, argv).await.unwrap()
    }
}

impl Drop for Env {
    /// Containers outlive their daemon by design: a test that fails half
    /// way must not leave its containers running for the next run.
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        lxvirt_tests::kill_leftover_containers(&self.run_dir());
    }
}

fn error_name(error: &zbus::Error) -> String {
    match error {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => format!("other:{other}"),
    }
}

/// Waits until `f` holds, polling (for state the test cannot be told of).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the init of `domain` catches SIGTERM (its shell ran
/// `trap`): before that, PID 1 ignores it and a shutdown waits out its
/// grace period.
async fn handles_sigterm(domain: &DomainProxy<'_>) {
    let pid = domain.pid().await.unwrap();
    eventually("init catches SIGTERM", async || {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (nix::sys::signal::Signal::SIGTERM as u32 - 1)) != 0)
    })
    .await;
}

fn host_uid(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_container_is_isolated_and_limited() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let web = env
        .define("web", "sleep 1000", "<features><privnet/></features>")
        .await;
    web.start().await.unwrap();
    assert_eq!(web.state().await.unwrap(), "running");
    assert_eq!(web.state_reason().await.unwrap(), "booted");
    let pid = web.pid().await.unwrap();
    assert!(pid > 0);
    assert!(web.start_time().await.unwrap() > 0);

    // Init is PID 1 inside (busybox sh execs the last command of -c).
    let (code, out) = env.enter(&web, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "sleep\u{0}1000\u{0}");
    // libvirt's default capability policy: sys_module (16), sys_time (25),
    // mknod (27), audit_control (30) and mac_admin (33) are gone.
    let (_, out) = env.enter(&web, &["grep", "CapBnd", "/proc/1/status"]).await;
    let bounding = u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap();
    for cap in [16, 25, 27, 30, 33] {
        assert_eq!(bounding & (1 << cap), 0, "capability {cap} kept: {out}");
    }
    assert_ne!(bounding & (1 << 21), 0, "sys_admin dropped: {out}");
    // Init's environment as libvirt gives it, under lxvirt's names.
    let (_, out) = env.enter(&web, &["cat", "/proc/1/environ"]).await;
    let environ: Vec<&str> = out.split('\0').collect();
    for var in [
        "container=lxvirt",
        "LXVIRT_NAME=web",
        "TERM=linux",
        "HOME=/",
    ] {
        assert!(environ.contains(&var), "{var} missing from {environ:?}");
    }
    // The hostname is the domain's name.
    let (_, out) = env.enter(&web, &["hostname"]).await;
    assert_eq!(out.trim(), "web");
    // /proc shows only the container's processes: init and the shell
    // that lists them.
    let (_, out) = env.enter(&web, &["sh", "-c", "echo /proc/[0-9]*"]).await;
    assert_eq!(out.split_whitespace().count(), 2, "{out}");
    assert!(out.starts_with("/proc/1 "), "{out}");
    // /sys and /proc/sys are read-only; /proc/keys is masked.
    let (code, _) = env.enter(&web, &["touch", "/sys/kernel/x"]).await;
    assert_ne!(code, 0);
    let (code, _) = env
        .enter(&web, &["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"])
        .await;
    assert_ne!(code, 0);
    let (_, out) = env
        .enter(&web, &["sh", "-c", "cat /proc/keys | wc -c"])
        .await;
    assert_eq!(out.trim(), "0");
    // A private network namespace: only the loopback, and it is up.
    let (_, out) = env.enter(&web, &["ls", "/sys/class/net"]).await;
    assert_eq!(out.trim(), "lo");
    let (_, out) = env.enter(&web, &["cat", "/sys/class/net/lo/flags"]).await;
    let flags = u32::from_str_radix(out.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down: {out}");
    // The exit status of entered commands comes back.
    let (code, _) = env.enter(&web, &["sh", "-c", "exit 42"]).await;
    assert_eq!(code, 42);

    // The memory limit is in the cgroup, and init is in that cgroup.
    let limit = fs::read_to_string(
        env.daemon
            .cgroup_dir("memory", "web")
            .join("memory.limit_in_bytes"),
    )
    .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let procs =
        fs::read_to_string(env.daemon.cgroup_dir("memory", "web").join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    let stats = web.get_stats().await.unwrap();
    assert!(stats.contains_key("pids.current"), "{stats:?}");
    assert_eq!(
        u64::try_from(stats["memory.limit"].clone()).unwrap(),
        64 << 20
    );

    // Suspend freezes every process; resume thaws.
    web.suspend().await.unwrap();
    assert_eq!(web.state().await.unwrap(), "paused");
    let freezer = fs::read_to_string(
        env.daemon
            .cgroup_dir("freezer", "web")
            .join("freezer.state"),
    )
    .unwrap();
    assert_eq!(freezer.trim(), "FROZEN");
    let err = web.suspend().await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidState");
    web.resume().await.unwrap();
    assert_eq!(web.state().await.unwrap(), "running");
    assert_eq!(web.state_reason().await.unwrap(), "unpaused");

    // A suspended container can be destroyed (frozen tasks must be thawed to die).
    let frozen = env.define("frozen", "sleep 1000", "").await;
    frozen.start().await.unwrap();
    frozen.suspend().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), frozen.destroy())
        .await
        .expect("destroy of a paused domain hangs")
        .unwrap();
    assert_eq!(frozen.state().await.unwrap(), "shutoff");

    // Typed refusals by state.
    let err = web.start().await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidState");
    assert!(err.to_string().contains("already started"), "{err}");

    web.destroy().await.unwrap();
    assert_eq!(web.state().await.unwrap(), "shutoff");
    assert_eq!(web.state_reason().await.unwrap(), "destroyed");
    assert_eq!(web.pid().await.unwrap(), 0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!env.daemon.cgroup_dir("memory", "web").exists());
    let err = web.destroy().await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidState");
    let leftovers: Vec<_> = fs::read_dir(env.run_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("web.") && n != "web.log")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The manager's by-name methods change the named domain's state as its
/// object's methods do, with the same typed refusals.
#[tokio::test]
async fn the_manager_changes_a_domain_state_by_name() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let manager = env.manager().await;
    let web = env
        .define("web", "trap 'exit 0' TERM; sleep 1000 &amp; wait", "")
        .await;

    manager.start_domain("web").await.unwrap();
    assert_eq!(web.state().await.unwrap(), "running");
    let first = web.pid().await.unwrap();
    let err = manager.start_domain("web").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidState");
    manager.suspend_domain("web").await.unwrap();
    assert_eq!(web.state().await.unwrap(), "paused");
    manager.resume_domain("web").await.unwrap();
    assert_eq!(web.state().await.unwrap(), "running");
    manager.reset_domain("web").await.unwrap();
    let reset = web.pid().await.unwrap();
    assert_ne!(reset, first, "reset kept init");
    manager.reboot_domain("web", 5, "").await.unwrap();
    assert_eq!(web.state().await.unwrap(), "running");
    assert_ne!(web.pid().await.unwrap(), reset, "reboot kept init");
    handles_sigterm(&web).await;
    let err = manager
        .shutdown_domain("web", 5, "no-such-mode")
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidArgument");
    manager.shutdown_domain("web", 5, "signal").await.unwrap();
    assert_eq!(web.state().await.unwrap(), "shutoff");
    assert_eq!(web.state_reason().await.unwrap(), "shutdown");
    manager.start_domain("web").await.unwrap();
    manager.destroy_domain("web").await.unwrap();
    assert_eq!(web.state().await.unwrap(), "shutoff");
    assert_eq!(web.state_reason().await.unwrap(), "destroyed");
    let err = manager.destroy_domain("web").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidState");

    // A name no domain has, or a domain's UUID in place of its name.
    let err = manager.start_domain("nope").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchDomain");
    assert!(err.to_string().contains("'nope'"), "{err}");
    let uuid = web.uuid().await.unwrap();
    let err = manager.start_domain(&uuid).await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchDomain");
    assert_eq!(web.state().await.unwrap(), "shutoff");
}

/// A cgroup of the domain's name with processes in it (another instance
/// outside lxvirtd's control) refuses the start, whichever step finds it
/// (init and the mounter exist by then), and the start leaves nothing:
/// no process, mount or cgroup of its own; the stranger's is untouched.
#[tokio::test]
async fn a_populated_cgroup_of_the_same_name_refuses_the_start_and_nothing_is_left() {
    if !root_or_skip() {
        return;
    }
    use lxvirt_tests::leaks;
    let env = Env::new().await;
    let squatter = env.define("squatter", "sleep 1000", "").await;
    let stranger_dir = env.daemon.cgroup_dir("memory", "squatter");
    fs::create_dir_all(&stranger_dir).unwrap();
    let mut stranger = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    fs::write(stranger_dir.join("cgroup.procs"), stranger.id().to_string()).unwrap();

    let err = squatter.start().await.unwrap_err();
    assert!(err.to_string().contains("still has processes"), "{err}");
    assert_eq!(squatter.state().await.unwrap(), "shutoff");
    let run_dir = env.run_dir();
    leaks::settle("the failed start's processes ended", || {
        leaks::monitors_for(&run_dir).len() <= 1 && leaks::busy_monitors(&run_dir) == 0
    })
    .await;
    assert!(leaks::mounts_below(env.dir.path()).is_empty());
    assert_eq!(
        leaks::lxvirt_cgroups(env.dir.path(), "lxvirt-squatter"),
        vec![stranger_dir.clone()]
    );
    assert_eq!(
        fs::read_to_string(stranger_dir.join("cgroup.procs"))
            .unwrap()
            .trim(),
        stranger.id().to_string()
    );

    // Once the stranger is gone, the domain starts.
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    squatter.start().await.unwrap();
    assert_eq!(squatter.state().await.unwrap(), "running");
    squatter.destroy().await.unwrap();
}

/// A stopped container's v1 memory cgroup is renamed ("retired") and
/// removed once stops pause; one a daemon left (killed) is removed by the
/// next daemon's start.
#[tokio::test]
async fn retired_memory_cgroups_go_once_stops_pause_and_leftovers_at_start() {
    if !root_or_skip() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipped: no v1 memory hierarchy (cgroup2 removes memory cgroups at once)");
        return;
    }
    use lxvirt_tests::leaks;
    let mut env = Env::new().await;
    let web = env.define("web", "sleep 1000", "").await;
    for _ in 0..2 {
        web.start().await.unwrap();
        web.destroy().await.unwrap();
        assert!(!env.daemon.cgroup_dir("memory", "web").exists());
    }
    eventually("the retired memory cgroups removed", async || {
        leaks::lxvirt_cgroups(env.dir.path(), ".lxvirt-retired.").is_empty()
    })
    .await;

    let leftover = env
        .daemon
        .cgroup_dir("memory", "web")
        .with_file_name(".lxvirt-retired.1.2");
    let stranger = leftover.with_file_name("not-retired");
    fs::create_dir(&leftover).unwrap();
    fs::create_dir(&stranger).unwrap();
    env.daemon.kill().unwrap();
    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
    eventually("the leftover removed", async || !leftover.exists()).await;
    assert!(stranger.is_dir(), "a cgroup of another name stays");
    fs::remove_dir(&stranger).unwrap();
}

#[tokio::test]
async fn user_namespace_maps_root_and_owns_dev() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let idmap = "<idmap><uid start='0' target='200000' count='65536'/><gid start='0' target='200000' count='65536'/></idmap>";
    let mapped = env.define("mapped", "sleep 1000", idmap).await;
    mapped.start().await.unwrap();
    let pid = mapped.pid().await.unwrap();
    assert_eq!(host_uid(pid), 200000, "root inside is uid 200000 outside");
    let (code, out) = env.enter(&mapped, &["id", "-u"]).await;
    assert_eq!((code, out.trim()), (0, "0"));
    let (_, out) = env
        .enter(&mapped, &["stat", "-c", "%u", "/dev", "/dev/pts"])
        .await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), vec!["0", "0"]);
    // The entered command is in the user namespace too: same uid outside.
    let (_, out) = env
        .enter(&mapped, &["sh", "-c", "cat /proc/self/uid_map"])
        .await;
    assert!(out.contains("200000"), "{out}");
    mapped.destroy().await.unwrap();
}

/// The spare's early init, once there is one.
async fn spare_early_init(run_dir: &Path) -> u32 {
    let mut found = None;
    eventually("a spare monitor with an early init", async || {
        found = lxvirt_tests::leaks::spare_early_init(run_dir);
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// A spare monitor waits with an early init in the namespaces of the last
/// start (the usual ones at first: a user namespace with new PID, UTS, IPC
/// and network namespaces), which becomes the next container's init when
/// those are its namespaces; one that does not fit is gone once the start
/// is answered.
#[tokio::test]
async fn the_spares_early_init_becomes_the_next_containers_init() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let usual = env
        .define("usual", "sleep 1000", "<features><privnet/></features>")
        .await;
    let early = spare_early_init(&env.run_dir()).await;
    usual.start().await.unwrap();
    assert_eq!(usual.pid().await.unwrap(), early, "the early init runs it");

    // On the host's network: the next spare's early init does not fit.
    let host_net = env.define("host-net", "sleep 1000", "").await;
    let unfit = spare_early_init(&env.run_dir()).await;
    host_net.start().await.unwrap();
    assert_ne!(host_net.pid().await.unwrap(), unfit);
    eventually("the unfit early init gone", async || {
        !lxvirt_tests::leaks::is_early_init(unfit)
    })
    .await;
    // The spare after it guessed from that start.
    let again = env.define("host-net-2", "sleep 1000", "").await;
    let early = spare_early_init(&env.run_dir()).await;
    again.start().await.unwrap();
    assert_eq!(again.pid().await.unwrap(), early, "the guess was right");
    for domain in [&usual, &host_net, &again] {
        domain.destroy().await.unwrap();
    }
}

#[tokio::test]
async fn host_root_application_container() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let xml = "<domain type='lxc'><name>app</name><memory unit='MiB'>32</memory>\
        <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
        <devices><console type='pty'/></devices></domain>";
    let path = env.manager().await.define_xml(xml).await.unwrap();
    let app = env.domain(path).await;
    app.start().await.unwrap();
    // The host's binaries, the container's own pid namespace and hostname.
    let (code, out) = env
        .enter(&app, &["/bin/sh", "-c", "hostname; echo $$"])
        .await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"app"), "{out}");
    // A small pid: the container's own namespace (2 without a user
    // namespace, 3 with one: its mounter came and went).
    let pid: u32 = lines.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!((2..=3).contains(&pid), "{out}");
    // Root inside is an unprivileged host user: the host's files stay
    // read-only to it (the host root is never idmapped).
    let (code, _) = env
        .enter(&app, &["/bin/sh", "-c", "touch /etc/lxvirt-app-probe"])
        .await;
    assert_ne!(code, 0, "root inside wrote to the host's /etc");
    assert!(!Path::new("/etc/lxvirt-app-probe").exists());
    assert_ne!(host_uid(app.pid().await.unwrap()), 0);
    // No privilege through setuid binaries of the host: no_new_privs.
    let (_, out) = env
        .enter(&app, &["/bin/grep", "NoNewPrivs", "/proc/1/status"])
        .await;
    assert_eq!(out.split_whitespace().nth(1), Some("1"), "{out}");
    app.destroy().await.unwrap();
}

/// One transition, one `PropertiesChanged`, carrying every property that
/// changed (clients must not see a half-updated domain).
#[tokio::test]
async fn a_start_publishes_one_properties_changed() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let domain = env.define("props", "exec sleep 1000", "").await;
    let properties = zbus::fdo::PropertiesProxy::builder(&env.connection)
        .destination(lxvirtd::dbus::BUS_NAME)
        .path(domain.inner().path().to_owned())
        .build()
        .await
        .unwrap();
    let mut changes = properties.receive_properties_changed().await.unwrap();
    domain.start().await.unwrap();
    // The reply waits until the adapter has published the transition.
    let first = changes.next().await.unwrap();
    let args = first.args().unwrap();
    let mut names: Vec<&str> = args.changed_properties().keys().copied().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["HostIds", "Pid", "StartTime", "State", "StateReason"],
        "one signal with every changed property"
    );
    // Nothing else for this start: the next signal is the destroy's.
    domain.destroy().await.unwrap();
    let second = changes.next().await.unwrap();
    let args = second.args().unwrap();
    assert_eq!(
        args.changed_properties()
            .get("State")
            .map(|v| v.to_string()),
        Some("\"shutoff\"".to_owned())
    );
}

#[tokio::test]
async fn console_round_trip_over_dbus() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    // An interactive shell on the console; a second console as /dev/tty1.
    let shell = env.define("shell", "exec sh -i", "").await;
    let two = env.xml("shell", "exec sh -i", "").replace(
        "<console type='pty'/>",
        "<console type='pty'/><console type='pty'/>",
    );
    env.manager().await.define_xml(&two).await.unwrap();
    let mut state_changes = shell.receive_state_changed().await;
    let _ = state_changes.next().await; // the current value
    shell.start().await.unwrap();
    let change = state_changes.next().await.unwrap();
    assert_eq!(
        change.get().await.unwrap(),
        "running",
        "PropertiesChanged on State"
    );
    let (_, out) = env.enter(&shell, &["ls", "/dev/tty1"]).await;
    assert_eq!(out.trim(), "/dev/tty1");
    // The consoles are ptys of the container's own devpts instance, not
    // the host's: /dev/console is its /dev/pts/0, /dev/tty1 its /dev/pts/1.
    let (_, out) = env
        .enter(
            &shell,
            &[
                "stat",
                "-c",
                "%t:%T",
                "/dev/console",
                "/dev/pts/0",
                "/dev/tty1",
                "/dev/pts/1",
            ],
        )
        .await;
    let numbers: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(numbers.len(), 4, "{out}");
    assert_eq!(numbers[0], numbers[1], "{out}");
    assert_eq!(numbers[2], numbers[3], "{out}");
    let second: OwnedFd = shell.open_console("console1").await.unwrap().into();
    drop(second);
    let fd: OwnedFd = shell.open_console("console0").await.unwrap().into();
    let output = tokio::task::spawn_blocking(move || {
        let mut console = fs::File::from(fd);
        console.write_all(b"echo round-$((20+22))-trip\n").unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&seen).contains("round-42-trip") && Instant::now() < deadline
        {
            let n = console.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    })
    .await
    .unwrap();
    assert!(output.contains("round-42-trip"), "{output}");
    let err = shell.open_console("console7").await.unwrap_err();
    assert!(err.to_string().contains("no console 7; it has 2"), "{err}");
    shell.destroy().await.unwrap();
}

#[tokio::test]
async fn shutdown_reboot_and_lifecycle_actions() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    // sh as init ignores SIGTERM: shutdown kills it after the grace period.
    let stubborn = env.define("stubborn", "sleep 1000", "").await;
    let mut events = stubborn.receive_lifecycle().await.unwrap();
    stubborn.start().await.unwrap();
    let started = events.next().await.unwrap();
    assert_eq!(started.args().unwrap().event(), &"started");
    stubborn.shutdown(1, "").await.unwrap();
    assert_eq!(stubborn.state().await.unwrap(), "shutoff");
    assert_eq!(stubborn.state_reason().await.unwrap(), "shutdown");
    let stopped = events.next().await.unwrap();
    let args = stopped.args().unwrap();
    assert_eq!((args.event(), args.detail()), (&"stopped", &"shutdown"));

    // A polite init that handles SIGTERM exits at once.
    let polite = env
        .define(
            "polite",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
            "",
        )
        .await;
    polite.start().await.unwrap();
    handles_sigterm(&polite).await;
    let begin = Instant::now();
    polite.shutdown(30, "").await.unwrap();
    assert!(begin.elapsed() < Duration::from_secs(20));
    assert_eq!(polite.state_reason().await.unwrap(), "shutdown");

    // A host shutdown sends SIGTERM to every process: the monitor takes it
    // as a shutdown request for its container instead of dying.
    polite.start().await.unwrap();
    let status =
        lxvirtd::core::live::LiveStatus::load(&env.run_dir().join("polite.status")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(status.monitor_pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(status.monitor_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually(
        "SIGTERM to the monitor to shut the container down",
        async || polite.state().await.unwrap() == "shutoff",
    )
    .await;
    assert_eq!(polite.state_reason().await.unwrap(), "shutdown");

    // Reboot: a new init, running again, with the same live definition
    // even if the persistent one changed meanwhile.
    let rebooter = env.define("rebooter", "sleep 1000", "").await;
    rebooter.start().await.unwrap();
    let first = rebooter.pid().await.unwrap();
    let bigger = env.xml("rebooter", "sleep 1000", "").replace(
        "<memory unit='MiB'>64</memory>",
        "<memory unit='MiB'>128</memory>",
    );
    env.manager().await.define_xml(&bigger).await.unwrap();
    rebooter.reboot(1, "").await.unwrap();
    assert_eq!(rebooter.state().await.unwrap(), "running");
    assert_eq!(rebooter.state_reason().await.unwrap(), "rebooted");
    assert_ne!(rebooter.pid().await.unwrap(), first);
    let limit = |name: &str| {
        fs::read_to_string(
            env.daemon
                .cgroup_dir("memory", name)
                .join("memory.limit_in_bytes"),
        )
        .unwrap()
        .trim()
        .to_owned()
    };
    assert_eq!(limit("rebooter"), (64u64 << 20).to_string());
    assert!(
        rebooter
            .get_xml(0)
            .await
            .unwrap()
            .contains("<memory unit='KiB'>65536</memory>")
    );
    assert!(
        rebooter
            .get_xml(2)
            .await
            .unwrap()
            .contains("<memory unit='KiB'>131072</memory>")
    );

    // reset: killed and started again at once, the live definition kept;
    // a mode a container has no way to carry out is refused.
    let before_reset = rebooter.pid().await.unwrap();
    rebooter.reset().await.unwrap();
    assert_eq!(rebooter.state().await.unwrap(), "running");
    assert_eq!(rebooter.state_reason().await.unwrap(), "rebooted");
    assert_ne!(rebooter.pid().await.unwrap(), before_reset);
    assert_eq!(limit("rebooter"), (64u64 << 20).to_string());
    let refused = rebooter.shutdown(1, "acpi").await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("shutdown mode 'acpi' is not supported for containers"),
        "{refused}"
    );
    let refused = rebooter.shutdown(1, "halt").await.unwrap_err();
    assert!(
        refused.to_string().contains("unknown shutdown mode 'halt'"),
        "{refused}"
    );
    assert_eq!(rebooter.state().await.unwrap(), "running");

    // reboot(2) inside the PID namespace restarts it (on_reboot='restart').
    // The pid is read before: the restart may be over by the time the
    // entered `reboot` is reported gone.
    let before_reboot = rebooter.pid().await.unwrap();
    let (_, _) = env.enter(&rebooter, &["reboot", "-f"]).await;
    eventually("the container to come back after reboot(2)", async || {
        let pid = rebooter.pid().await.unwrap();
        pid != 0 && pid != before_reboot
    })
    .await;
    assert_eq!(rebooter.state().await.unwrap(), "running");
    rebooter.destroy().await.unwrap();
    // A fresh start takes the new persistent definition.
    rebooter.start().await.unwrap();
    assert_eq!(limit("rebooter"), (128u64 << 20).to_string());
    rebooter.destroy().await.unwrap();

    // init exiting on its own: shut off, reason shutdown (on_poweroff='destroy').
    let quick = env.define("quick", "exit 0", "").await;
    quick.start().await.unwrap();
    eventually("init to exit", async || {
        quick.state().await.unwrap() == "shutoff"
    })
    .await;
    assert_eq!(quick.state_reason().await.unwrap(), "shutdown");

    // A crash with on_crash='preserve' stays crashed until destroyed.
    let crashy = env
        .define("crashy", "sleep 1000", "<on_crash>preserve</on_crash>")
        .await;
    crashy.start().await.unwrap();
    let pid = crashy.pid().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the crash to be seen", async || {
        crashy.state().await.unwrap() == "crashed"
    })
    .await;
    assert_eq!(crashy.state_reason().await.unwrap(), "crashed");
    let err = crashy.start().await.unwrap_err();
    assert!(err.to_string().contains("destroy it first"), "{err}");
    crashy.destroy().await.unwrap();
    assert_eq!(crashy.state().await.unwrap(), "shutoff");
}

#[tokio::test]
async fn transient_domains_are_forgotten_when_they_stop() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let manager = env.manager().await;
    let path = manager
        .create_xml(&env.xml("fleeting", "sleep 1000", ""))
        .await
        .unwrap();
    let fleeting = env.domain(path).await;
    assert_eq!(fleeting.state().await.unwrap(), "running");
    assert!(!fleeting.persistent().await.unwrap());
    assert!(!env.dir.path().join("etc/domains/fleeting.xml").exists());
    fleeting.destroy().await.unwrap();
    let err = manager.lookup_by_name("fleeting").await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.NoSuchDomain");

    // One whose start fails is gone, its object too, when the error comes.
    let objects = zbus::fdo::ObjectManagerProxy::builder(&env.connection)
        .destination(lxvirtd::dbus::BUS_NAME)
        .path(lxvirtd::dbus::MANAGER_PATH)
        .build()
        .await
        .unwrap();
    for round in 0..5 {
        let err = manager
            .create_xml(
                &env.xml("stillborn", "x", "")
                    .replace("<init>/bin/sh</init>", "<init>/sbin/nonexistent</init>"),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/sbin/nonexistent"), "{err}");
        let listed = objects.get_managed_objects().await.unwrap();
        assert_eq!(listed.len(), 0, "round {round}: {:?}", listed.keys());
    }
}

/// The host ids of a running domain, from its D-Bus property and its live
/// XML, which must agree.
async fn host_ids(domain: &DomainProxy<'_>) -> (u32, u32) {
    let ids = domain.host_ids().await.unwrap();
    let live = domain.get_xml(0).await.unwrap();
    assert!(
        live.contains(&format!(
            "<lxvirt:userns mode='auto' target='{}' count='{}'/>",
            ids.0, ids.1
        )),
        "{ids:?}\n{live}"
    );
    ids
}

#[tokio::test]
async fn default_containers_get_their_own_host_ids() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::new().await;
    let a = env.define("a", "sleep 1000", "").await;
    let b = env.define("b", "sleep 1000", "").await;
    assert_eq!(a.user_namespace().await.unwrap(), "auto");
    assert_eq!(a.host_ids().await.unwrap(), (0, 0), "not running");
    a.start().await.unwrap();
    b.start().await.unwrap();
    let (a_ids, b_ids) = (host_ids(&a).await, host_ids(&b).await);
    assert_eq!((a_ids.1, b_ids.1), (65536, 65536));
    assert!(a_ids.0.abs_diff(b_ids.0) >= 65536, "{a_ids:?} {b_ids:?}");
    // Root inside is the block's first id outside.
    assert_eq!(host_uid(a.pid().await.unwrap()), a_ids.0);
    assert_eq!(host_uid(b.pid().await.unwrap()), b_ids.0);
    // The persistent definition does not carry the block.
    assert!(!a.get_xml(2).await.unwrap().contains("target="));
    // A persistent domain keeps its block from one start to the next.
    a.destroy().await.unwrap();
    a.start().await.unwrap();
    assert_eq!(host_ids(&a).await, a_ids);

    // A restarted daemon reserves the running blocks again, and knows the
    // block a stopped persistent domain keeps.
    a.destroy().await.unwrap();
    env.daemon.kill().unwrap();
    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
    let manager = env.manager().await;
    let b = env.domain(manager.lookup_by_name("b").await.unwrap()).await;
    assert_eq!(host_ids(&b).await, b_ids);
    let c = env.define("c", "sleep 1000", "").await;
    c.start().await.unwrap();
    let c_ids = host_ids(&c).await;
    assert!(
        c_ids.0 != a_ids.0 && c_ids.0 != b_ids.0,
        "{a_ids:?} {b_ids:?} {c_ids:?}"
    );
    // Undefining gives the block back.
    let a = env.domain(manager.lookup_by_name("a").await.unwrap()).await;
    a.undefine(0).await.unwrap();
    let d = env.define("d", "sleep 1000", "").await;
    d.start().await.unwrap();
    assert_eq!(host_ids(&d).await, a_ids, "the first free block");

    // Opting out: host root, no block.
    let root = env
        .define("root", "sleep 1000", "<lxvirt:userns mode='host'/>")
        .await;
    root.start().await.unwrap();
    assert_eq!(root.user_namespace().await.unwrap(), "host");
    assert_eq!(root.host_ids().await.unwrap(), (0, 0));
    assert_eq!(host_uid(root.pid().await.unwrap()), 0);
    let info = lxvirt_tests::lxvirt(&env.bus.address, &["dominfo", "b"]).unwrap();
    let info = String::from_utf8(info.stdout).unwrap();
    assert!(
        info.contains(&format!(
            "User namespace: auto (host ids {}-{})",
            b_ids.0,
            b_ids.0 + 65535
        )),
        "{info}"
    );
    for domain in [&b, &c, &d, &root] {
        domain.destroy().await.unwrap();
    }
}

#[tokio::test]
async fn containers_survive_a_killed_daemon() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::new().await;
    let keeper = env.define("keeper", "sleep 1000", "").await;
    keeper.start().await.unwrap();
    let ender = env.define("ender", "sleep 1000", "").await;
    ender.start().await.unwrap();
    let keeper_pid = keeper.pid().await.unwrap();
    let ender_pid = ender.pid().await.unwrap();
    let before = lxvirt_tests::lxvirt(&env.bus.address, &["list", "--all"])
        .unwrap()
        .stdout;

    env.daemon.kill().unwrap();
    // While no daemon runs, one container ends.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ender_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the monitor of 'ender' to finish", async || {
        !env.run_dir().join("ender.sock").exists()
    })
    .await;
    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();

    let manager = env.manager().await;
    let keeper = env
        .domain(manager.lookup_by_name("keeper").await.unwrap())
        .await;
    assert_eq!(keeper.state().await.unwrap(), "running");
    assert_eq!(keeper.state_reason().await.unwrap(), "reconnected");
    assert_eq!(keeper.pid().await.unwrap(), keeper_pid);
    let ender = env
        .domain(manager.lookup_by_name("ender").await.unwrap())
        .await;
    eventually("'ender' to show shut off", async || {
        ender.state().await.unwrap() == "shutoff"
    })
    .await;
    assert_eq!(ender.state_reason().await.unwrap(), "crashed");
    // The same listing, but for the one that ended.
    let after = String::from_utf8(
        lxvirt_tests::lxvirt(&env.bus.address, &["list", "--all"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    let before = String::from_utf8(before).unwrap();
    let words = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let mut expected = words(&before);
    for row in &mut expected {
        if row[0] == "ender" {
            row[1] = "shutoff".into();
        }
    }
    assert_eq!(
        expected,
        words(&after),
        "before:\n{before}\nafter:\n{after}"
    );
    // The reconnected container is fully manageable.
    let (_, out) = env.enter(&keeper, &["hostname"]).await;
    assert_eq!(out.trim(), "keeper");
    keeper.destroy().await.unwrap();
    assert!(!Path::new(&format!("/proc/{keeper_pid}")).exists());
}

#[tokio::test]
async fn failed_starts_say_why_and_leave_nothing() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    // An init that does not exist inside the container.
    let path = env
        .manager()
        .await
        .define_xml(
            &env.xml("noinit", "x", "")
                .replace("<init>/bin/sh</init>", "<init>/sbin/nonexistent</init>"),
        )
        .await
        .unwrap();
    let noinit = env.domain(path).await;
    let err = noinit.start().await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.Failed");
    assert!(err.to_string().contains("/sbin/nonexistent"), "{err}");
    assert_eq!(noinit.state().await.unwrap(), "shutoff");
    assert_eq!(noinit.state_reason().await.unwrap(), "failed");
    assert!(!env.daemon.cgroup_dir("memory", "noinit").exists());

    // A root directory that does not exist.
    let xml = env
        .xml("noroot", "sleep 1", "")
        .replace(&env.rootfs().display().to_string(), "/nonexistent/root");
    let path = env.manager().await.define_xml(&xml).await.unwrap();
    let noroot = env.domain(path).await;
    let err = noroot.start().await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/root"), "{err}");

    // A root without /proc: the container's id mapping cannot make it.
    let bare = env.dir.path().join("bare-root");
    lxvirt_tests::busybox_root(&bare);
    fs::remove_dir(bare.join("proc")).unwrap();
    let xml = env.xml("noproc", "sleep 1", "").replace(
        &env.rootfs().display().to_string(),
        &bare.display().to_string(),
    );
    let path = env.manager().await.define_xml(&xml).await.unwrap();
    let err = env.domain(path).await.start().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the root has no /proc (or a directory above it)"),
        "{err}"
    );

    // A network that is not defined: refused before anything starts.
    let xml = env.xml("net", "sleep 1", "").replace(
        "<console type='pty'/>",
        "<interface type='network'><source network='default'/></interface><console type='pty'/>",
    );
    let path = env.manager().await.define_xml(&xml).await.unwrap();
    let err = env.domain(path).await.start().await.unwrap_err();
    assert_eq!(error_name(&err), "org.lxvirt.lxvirt1.Error.InvalidState");
    assert!(
        err.to_string().contains("'default', which is not defined"),
        "{err}"
    );

    let leftovers: Vec<_> = fs::read_dir(env.run_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !lxvirt_tests::daemon_run_file(n))
        .filter(|n| !(n == "network" && empty_dir(&env.run_dir().join(n))))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn autostart_starts_marked_domains_once_per_boot() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::new().await;
    let auto = env.define("auto", "sleep 1000", "").await;
    auto.set_autostart(true).await.unwrap();
    env.daemon.stop().unwrap();
    // A new boot: the run directory is empty again.
    fs::remove_file(env.run_dir().join("autostarted")).unwrap();
    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
    let manager = env.manager().await;
    let auto = env
        .domain(manager.lookup_by_name("auto").await.unwrap())
        .await;
    eventually("autostart", async || {
        auto.state().await.unwrap() == "running"
    })
    .await;
    auto.destroy().await.unwrap();
    // A daemon restart in the same boot does not start it again.
    env.daemon.stop().unwrap();
    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
    let auto = env
        .domain(env.manager().await.lookup_by_name("auto").await.unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(auto.state().await.unwrap(), "shutoff");
}

/// The daemon's directory of network files, with no network active.
fn empty_dir(path: &std::path::Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// Without a user namespace the container's init mounts its root itself,
/// inside its cgroup: the device allow-list must name the root's device (a
/// block device given, or the loop device the monitor attaches for an
/// image file), and nothing more of its kind.
#[tokio::test]
async fn image_file_and_block_roots_mount_under_the_device_allow_list() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let image = env.dir.path().join("root.img");
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(env.rootfs())
        .arg(&image)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success(), "mkfs.ext4 -d failed");
    let copy = env.dir.path().join("block.img");
    fs::copy(&image, &copy).unwrap();
    let losetup = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(losetup.status.success(), "{losetup:?}");
    let block = String::from_utf8(losetup.stdout).unwrap().trim().to_owned();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(block.clone());

    for (name, filesystem) in [
        (
            "fileroot",
            format!(
                "<filesystem type='file'><driver type='loop' format='raw'/><source file='{}'/><target dir='/'/></filesystem>",
                image.display()
            ),
        ),
        (
            "blockroot",
            format!(
                "<filesystem type='block'><source dev='{block}'/><target dir='/'/></filesystem>"
            ),
        ),
    ] {
        let xml = format!(
            "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name>\
             <memory unit='MiB'>64</memory><os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
             <devices>{filesystem}<console type='pty'/></devices><lxvirt:userns mode='host'/></domain>"
        );
        let path = env.manager().await.define_xml(&xml).await.unwrap();
        let domain = env.domain(path).await;
        domain
            .start()
            .await
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        let (code, out) = env
            .enter(&domain, &["sh", "-c", "grep ' / ' /proc/mounts"])
            .await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(" / ext4 "), "{name}: {out}");
        domain.destroy().await.unwrap();
    }
}

/// `lxvirt shutdown-all` (lxvirt-guests.service's stop, at host shutdown):
/// every active domain asked at once, the ones still running at the time
/// limit destroyed; `--mode destroy` and `--mode keep`.
#[tokio::test]
async fn shutdown_all_stops_every_domain_within_the_time_limit() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new().await;
    let address = env.bus.address.clone();
    let cli = |args: &[&str]| {
        let out = lxvirt_tests::lxvirt(&address, args).unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let polite = "trap 'exit 0' TERM; sleep 1000 &amp; wait";
    let a = env.define("polite-a", polite, "").await;
    let b = env.define("polite-b", polite, "").await;
    // PID 1 without a handler ignores SIGTERM.
    let c = env.define("stubborn", "sleep 1000", "").await;
    let idle = env.define("idle", polite, "").await;
    for domain in [&a, &b, &c] {
        domain.start().await.unwrap();
    }
    handles_sigterm(&a).await;
    handles_sigterm(&b).await;
    let started = Instant::now();
    let (code, out) = cli(&["shutdown-all", "--timeout", "2"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "Domain 'polite-a' is shut down\nDomain 'polite-b' is shut down\nDomain 'stubborn' destroyed\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // (The stubborn one was killed when its grace ended: a shutdown still.)
    for (domain, reason) in [(&a, "shutdown"), (&b, "shutdown"), (&c, "shutdown")] {
        eventually("the domains shut off", async || {
            domain.state().await.unwrap() == "shutoff"
                && domain.state_reason().await.unwrap() == reason
        })
        .await;
    }
    // A domain that was not running is not touched.
    assert_eq!(idle.state_reason().await.unwrap(), "unknown");

    a.start().await.unwrap();
    let (code, out) = cli(&["shutdown-all", "--mode", "keep"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "Domain 'polite-a' left running\n")
    );
    assert_eq!(a.state().await.unwrap(), "running");
    let (code, out) = cli(&["-o", "json", "shutdown-all", "--mode", "destroy"]);
    assert_eq!(code, Some(0), "{out}");
    let outcomes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcomes[0]["name"], "polite-a");
    assert_eq!(outcomes[0]["outcome"], "destroyed");
    // (This proxy's cached properties follow the signals.)
    eventually("polite-a destroyed", async || {
        a.state_reason().await.unwrap() == "destroyed"
    })
    .await;
    // Nothing running: nothing to say.
    assert_eq!(cli(&["shutdown-all"]), (Some(0), String::new()));
    let (code, _) = cli(&["shutdown-all", "--mode", "suspend"]);
    assert_eq!(code, Some(2), "clap refuses an unknown mode");
}
