//! Harness for lxvirt's integration tests: a real `dbus-daemon` configured
//! like a system bus with lxvirt's own policy file, and the real `lxvirtd`
//! and `lxvirt` binaries from the workspace's target directory.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod dbus_fuzz;
pub mod guest;
pub mod leaks;
pub mod net;
pub mod storm;

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A workspace binary (`lxvirtd`, `lxvirt`), built by `cargo build` before
/// the tests run (the README's test command does that).
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, other binaries (the
    // bench) in target/<profile>: the workspace's binaries are in the latter.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

/// Whether `name` in a daemon's run directory is the daemon's own (its
/// instance lock, its autostart mark, its private socket) or a log: what
/// stays there with no domain running.
pub fn daemon_run_file(name: &str) -> bool {
    name.ends_with(".log") || ["lxvirtd.lock", "autostarted", "private"].contains(&name)
}

/// The bus policy file lxvirt installs.
pub fn bus_policy_file() -> PathBuf {
    repo_root().join("daemon/data/org.lxvirt.lxvirt1.conf")
}

/// A world-traversable temporary directory (so that tests can drop to
/// an unprivileged uid and still reach sockets and files in it).
pub fn shared_tempdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("lxvirt-test-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// The daemon's run directory (`DIR/run`) on a tmpfs, as `/run` is on a
/// host: every start and stop makes and removes files there (the
/// monitor's socket, the live status, the exit record), and on the disk
/// file system of a temporary directory its journal would be measured
/// too (0.4–1.6 ms of a destroy on this machine's ext4). Unmounted,
/// lazily, on drop: drop it after the daemon, before the directory.
#[derive(Debug)]
pub struct RunTmpfs(PathBuf);

impl RunTmpfs {
    pub fn mount(dir: &Path) -> Result<Self> {
        let run = dir.join("run");
        fs::create_dir_all(&run)?;
        nix::mount::mount(
            Some("tmpfs"),
            &run,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .with_context(|| format!("mounting a tmpfs on {}", run.display()))?;
        Ok(Self(run))
    }
}

impl Drop for RunTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A private `dbus-daemon` with system-bus defaults (deny by default) and
/// lxvirt's policy file included.
#[derive(Debug)]
pub struct TestBus {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
    _policy_dir: Option<tempfile::TempDir>,
}

impl TestBus {
    pub fn start() -> Result<TestBus> {
        Self::start_with_policy(&bus_policy_file())
    }

    /// A bus whose policy lets anyone call anything, as a misconfigured or
    /// private bus would: lxvirtd's own caller check is all that is left.
    pub fn start_open() -> Result<TestBus> {
        let dir = shared_tempdir()?;
        let policy = dir.path().join("open.conf");
        fs::write(
            &policy,
            "<busconfig><policy context=\"default\"><allow own=\"*\"/><allow send_destination=\"*\"/></policy></busconfig>",
        )?;
        let mut bus = Self::start_with_policy(&policy)?;
        bus._policy_dir = Some(dir);
        Ok(bus)
    }

    fn start_with_policy(policy: &Path) -> Result<TestBus> {
        let dir = shared_tempdir()?;
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        fs::write(&config, bus_config(&socket, policy))?;
        let (child, address) = Self::spawn(dir.path())?;
        Ok(TestBus {
            child,
            address,
            _dir: dir,
            _policy_dir: None,
        })
    }

    /// Runs dbus-daemon with the configuration in `dir`; returns it and
    /// the address it printed.
    fn spawn(dir: &Path) -> Result<(Child, String)> {
        // Its complaints (no group 'lxvirt' here, fd limits) go to a file.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dbus.log"))?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .arg("--nofork")
            .arg("--print-address=1")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot run dbus-daemon; install the dbus-daemon package")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().to_owned();
        if address.is_empty() {
            let _ = child.kill();
            bail!("dbus-daemon printed no address");
        }
        Ok((child, address))
    }

    /// Kills the bus (as a crash or `systemctl restart dbus` would) and
    /// starts a new one on the same socket; every connection is lost.
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(self._dir.path().join("bus"));
        let (child, address) = Self::spawn(self._dir.path())?;
        self.child = child;
        self.address = address;
        Ok(())
    }

    pub async fn connect(&self) -> Result<zbus::Connection> {
        Ok(zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await?)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration like Debian's system bus: method calls are denied unless
/// a policy allows them; lxvirt's policy file is included.
fn bus_config(socket: &Path, policy: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
        socket = socket.display(),
        policy = policy.display()
    )
}

/// The real `lxvirtd` binary on a test bus, with its directories in a
/// temporary tree.
#[derive(Debug)]
pub struct TestDaemon {
    child: Option<Child>,
    pub bus_address: String,
    pub root: PathBuf,
}

/// Test daemons alive per root. A test that restarts its daemon
/// (`env.daemon = TestDaemon::start(..)`) drops the old one after the new
/// one started: only the last one of a root may remove the partition, or it
/// would pull it from under the new daemon's first container.
static DAEMONS_PER_ROOT: std::sync::Mutex<std::collections::BTreeMap<PathBuf, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

impl TestDaemon {
    /// Starts `lxvirtd` with config, run and state directories under `root`
    /// and waits until it owns its bus name.
    pub async fn start(bus: &TestBus, root: &Path) -> Result<TestDaemon> {
        Self::start_with(bus, root, &[]).await
    }

    /// As [`TestDaemon::start`], with more command-line arguments.
    pub async fn start_with(bus: &TestBus, root: &Path, extra: &[&str]) -> Result<TestDaemon> {
        Self::start_exe(&binary("lxvirtd"), bus, root, extra).await
    }

    /// Starts the `lxvirtd` at `exe` (another build: its monitor is the
    /// one beside it).
    pub async fn start_exe(
        exe: &Path,
        bus: &TestBus,
        root: &Path,
        extra: &[&str],
    ) -> Result<TestDaemon> {
        let child = Command::new(exe)
            .args(Self::args(&bus.address, root))
            .args(extra)
            .env(
                "LXVIRTD_LOG",
                std::env::var("LXVIRTD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .context("cannot run lxvirtd")?;
        *DAEMONS_PER_ROOT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(root.to_owned())
            .or_default() += 1;
        let mut daemon = TestDaemon {
            child: Some(child),
            bus_address: bus.address.clone(),
            root: root.to_owned(),
        };
        daemon.wait_ready(bus).await?;
        Ok(daemon)
    }

    /// The command-line arguments for a daemon rooted at `root`.
    pub fn args(address: &str, root: &Path) -> Vec<String> {
        vec![
            format!("--bus-address={address}"),
            format!("--config-dir={}", root.join("etc").display()),
            format!("--run-dir={}", root.join("run").display()),
            format!("--state-dir={}", root.join("lib").display()),
            format!("--default-partition={}", Self::partition_of(root).display()),
            // Test daemons share the host's network namespace: a default
            // network each would clash. The test of it asks for one.
            "--default-network=false".into(),
        ]
    }

    /// The cgroup partition of a test daemon rooted at `root`: its own, so
    /// that test suites running side by side never share a cgroup path.
    pub fn partition_of(root: &Path) -> PathBuf {
        let tag = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lxvirt-test".into());
        PathBuf::from("/").join(tag)
    }

    /// The container's cgroup directory in one hierarchy (`memory`, …).
    pub fn cgroup_dir(&self, controller: &str, name: &str) -> PathBuf {
        let partition = Self::partition_of(&self.root);
        let relative = partition.strip_prefix("/").unwrap_or(&partition);
        PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(relative)
            .join(format!("lxvirt-{name}"))
    }

    /// The partition's directory in every mounted cgroup hierarchy: each
    /// v1 controller's and the cgroup2 one, whether cgroup2 is mounted
    /// beside them (hybrid) or at `/sys/fs/cgroup` itself (pure v2, where
    /// the entries of `/sys/fs/cgroup` are cgroups, not hierarchies).
    pub fn partition_dirs(root: &Path) -> Result<Vec<PathBuf>> {
        let partition = Self::partition_of(root);
        let relative = partition.strip_prefix("/").unwrap_or(&partition);
        let hierarchies = lxvirtd::cgroup::Hierarchies::detect()?;
        Ok(hierarchies
            .v1
            .iter()
            .map(|h| &h.mount)
            .chain(hierarchies.unified.iter().map(|h| &h.mount))
            .map(|mount| mount.join(relative))
            .collect())
    }

    /// Removes the daemon's (empty) partition from every hierarchy, with
    /// the memory cgroups of ended containers a killed daemon left retired.
    pub fn remove_partition(root: &Path) {
        for dir in Self::partition_dirs(root).unwrap_or_default() {
            for retired in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if lxvirtd::cgroup::retired::is_retired(&retired.path()) {
                    let _ = fs::remove_dir(retired.path());
                }
            }
            let _ = fs::remove_dir(dir);
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    async fn wait_ready(&mut self, bus: &TestBus) -> Result<()> {
        let connection = bus.connect().await?;
        let dbus = zbus::fdo::DBusProxy::new(&connection).await?;
        let name = zbus::names::BusName::try_from(lxvirtd::dbus::BUS_NAME)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if dbus.name_has_owner(name.clone()).await? {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("lxvirtd exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("lxvirtd did not take its bus name within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("daemon already stopped")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(child.wait()?)
    }

    /// Waits up to `timeout` for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("daemon already stopped")?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("lxvirtd still runs after {timeout:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("daemon already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let last = {
            let mut daemons = DAEMONS_PER_ROOT.lock().unwrap_or_else(|e| e.into_inner());
            let count = daemons.entry(self.root.clone()).or_default();
            *count = count.saturating_sub(1);
            let last = *count == 0;
            if last {
                daemons.remove(&self.root);
            }
            last
        };
        // Fails (and is left) while containers still run in it.
        if last {
            Self::remove_partition(&self.root);
        }
    }
}

/// A busybox container (`rootfs` from [`busybox_root`]) whose init sleeps,
/// with a network namespace of its own and the default user namespace:
/// the container the density benchmark and the concurrency tests run by
/// the thousand.
pub fn sleeper_xml(name: &str, rootfs: &Path) -> String {
    format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sleep</init><initarg>100000</initarg></os>\
         <features><privnet/></features>\
         <devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
         <console type='pty'/></devices></domain>",
        root = rootfs.display()
    )
}

/// Runs `lxvirt` on the bus at `address`: whether it succeeded, and its
/// stdout and stderr together (what a user reads).
pub fn lxvirt_said(address: &str, args: &[&str]) -> (bool, String) {
    let out = lxvirt(address, args).unwrap_or_else(|e| panic!("lxvirt {args:?}: {e:#}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs the `lxvirt` CLI against `address`.
pub fn lxvirt(address: &str, args: &[&str]) -> Result<Output> {
    Ok(lxvirt_command(address)
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

/// The `lxvirt` CLI, told to use the bus at `address`; the caller adds
/// the command and how it runs.
pub fn lxvirt_command(address: &str) -> Command {
    let mut command = Command::new(binary("lxvirt"));
    command.arg(format!("--connect={address}"));
    command
}

/// `unshare`'s arguments for the kernel's floor a start is compared with:
/// the namespaces of a container (no user namespace), `/proc` mounted,
/// `/bin/true` run in them.
pub const UNSHARE_FLOOR: [&str; 8] = [
    "--pid",
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--fork",
    "--mount-proc",
    "/bin/true",
];

/// Runs a command as uid/gid 65534 (nobody) with no supplementary groups.
pub fn as_nobody(program: &Path, args: &[&str]) -> Result<Output> {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run setpriv (util-linux)")
}

/// The example domain documents shipped in `xml-schemas/examples`.
pub fn example_files() -> Vec<PathBuf> {
    examples(false)
}

/// The example network documents shipped in `xml-schemas/examples`
/// (`network-*.xml`).
pub fn network_example_files() -> Vec<PathBuf> {
    examples(true)
}

fn examples(networks: bool) -> Vec<PathBuf> {
    let is_network = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("network-"))
    };
    let mut files: Vec<PathBuf> = fs::read_dir(repo_root().join("xml-schemas/examples"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "xml"))
                .filter(|p| is_network(p) == networks)
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The introspection XML of `path` on the lxvirt service.
pub async fn introspect(connection: &zbus::Connection, path: &str) -> Result<String> {
    let proxy = zbus::fdo::IntrospectableProxy::builder(connection)
        .destination(lxvirtd::dbus::BUS_NAME)
        .path(path)
        .build()
        .await?;
    Ok(proxy.introspect().await?)
}

/// Each `<interface>` of an introspection document, normalised to one line
/// per element (comments and whitespace dropped), keyed by interface name.
/// Introspection XML without its DOCTYPE: the project's parser refuses
/// DTDs by design.
pub fn without_doctype(xml: &str) -> String {
    xml.lines()
        .filter(|l| {
            !l.trim_start().starts_with("<!DOCTYPE") && !l.trim_start().starts_with("\"http")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn interfaces_of(xml: &str) -> std::collections::BTreeMap<String, String> {
    use lxvirtd::domain::xml::{Element, parse_str};
    fn flatten(element: &Element, depth: usize, out: &mut String) {
        out.push_str(&" ".repeat(depth));
        out.push_str(&element.name);
        for attr in &element.attributes {
            out.push_str(&format!(" {}={:?}", attr.qname, attr.value));
        }
        out.push('\n');
        for child in element.elements() {
            flatten(child, depth + 1, out);
        }
    }
    let mut map = std::collections::BTreeMap::new();
    let Ok(root) = parse_str(&without_doctype(xml)) else {
        return map;
    };
    for interface in root.elements_named("interface") {
        let mut text = String::new();
        flatten(interface, 0, &mut text);
        map.insert(interface.attr("name").unwrap_or_default().to_owned(), text);
    }
    map
}

/// Applets linked into the busybox test root.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "hostname", "cat", "ls", "id", "mount", "sleep", "ps", "readlink", "echo", "touch",
    "grep", "wc", "test", "true", "stat", "tr", "cut", "reboot", "poweroff", "kill", "trap", "yes",
    "head", "tty", "stty",
];

/// Whether the test runs as root; prints why it skips otherwise. Under CI
/// (`CI` set) a missing privilege is a failure, not a skip.
pub fn root_or_skip() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        true
    } else if std::env::var_os("CI").is_some() {
        panic!("this test needs root, and CI must run it: run the suite as root");
    } else {
        println!("skipped: needs root");
        false
    }
}

/// A small xorshift generator: what a harness does is reproducible from
/// its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is avoided).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `len` bytes no compression shrinks (xorshift from `seed`, not zero),
/// to fill files and archives.
pub fn incompressible_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A root filesystem from Debian's busybox-static (`/bin/busybox`).
pub fn busybox_root(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    fs::copy("/bin/busybox", bin.join("busybox"))
        .unwrap_or_else(|e| panic!("/bin/busybox (install busybox-static): {e}"));
    for applet in BUSYBOX_APPLETS {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("{}: {e}", etc.display()));
    let _ = fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    );
    let _ = fs::write(etc.join("group"), "root:x:0:\ntty:x:5:\nuser:x:1000:\n");
    // Mount points exist in the image: a container in a user namespace
    // cannot create them in a root owned by unmapped host root.
    for d in ["proc", "sys", "dev", "tmp", "root", "scratch", "data"] {
        let _ = fs::create_dir_all(dir.join(d));
    }
}

/// A busybox root in `dir/rootfs` ([`busybox_root`]) and an uncompressed
/// tarball of it in `dir/small.tar`, to import as an image.
pub fn busybox_root_and_tarball(dir: &Path) -> (PathBuf, PathBuf) {
    let rootfs = dir.join("rootfs");
    busybox_root(&rootfs);
    let tarball = dir.join("small.tar");
    let mut file =
        fs::File::create(&tarball).unwrap_or_else(|e| panic!("{}: {e}", tarball.display()));
    lxvirtd::storage::pack_dir(&rootfs, lxvirtd::storage::Compression::None, &mut file)
        .unwrap_or_else(|e| panic!("{}: {e}", tarball.display()));
    (rootfs, tarball)
}

/// Runs a command inside a running domain through `Domain.Enter`, with
/// stdin from /dev/null and stdout captured; returns (exit code, stdout).
/// The exit code is -1 when the command was killed.
pub async fn enter_capture(
    domain: &lxvirtd::dbus::proxy::DomainProxy<'_>,
    argv: &[&str],
) -> Result<(i32, String)> {
    let devnull = fs::File::open("/dev/null")?;
    enter_capture_with_stdin(domain, argv, std::os::fd::AsFd::as_fd(&devnull)).await
}

/// `enter_capture` with `stdin` as the command's standard input (a
/// terminal, say).
pub async fn enter_capture_with_stdin(
    domain: &lxvirtd::dbus::proxy::DomainProxy<'_>,
    argv: &[&str],
    stdin: std::os::fd::BorrowedFd<'_>,
) -> Result<(i32, String)> {
    use std::io::Read;
    let (out_read, out_write) = nix::unistd::pipe()?;
    let stderr = std::io::stderr();
    let (_pid, exit) = domain
        .enter(
            argv,
            &["PATH=/bin"],
            zbus::Fd::from(stdin),
            zbus::Fd::from(&out_write),
            zbus::Fd::from(&stderr),
            std::collections::HashMap::new(),
        )
        .await?;
    drop(out_write);
    let exit: std::os::fd::OwnedFd = exit.into();
    tokio::task::spawn_blocking(move || -> Result<(i32, String)> {
        let mut status = String::new();
        fs::File::from(exit).read_to_string(&mut status)?;
        let mut output = String::new();
        fs::File::from(out_read).read_to_string(&mut output)?;
        let status: serde_json::Value = serde_json::from_str(status.trim())?;
        let code = status
            .pointer("/exited/code")
            .and_then(serde_json::Value::as_i64)
            .map_or(-1, |c| c as i32);
        Ok((code, output))
    })
    .await?
}

/// Kills the containers a test left running under the daemon whose run
/// directory is `run_dir` (containers outlive their daemon by design), and
/// waits for their monitors to clean up. Kill the daemon first, so that it
/// cannot restart what is killed here.
pub fn kill_leftover_containers(run_dir: &Path) {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return;
    };
    let mut monitors = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "status")
            && let Ok(status) = lxvirtd::core::live::LiveStatus::load(&path)
        {
            // A paused container's processes die only once thawed: its
            // whole cgroup is killed (and thawed) first.
            if let Ok(cgroups) = lxvirtd::cgroup::Cgroups::detect()
                && let Ok(cgroup) = cgroups.open(&status.cgroup_path)
            {
                let _ = cgroup.kill_all();
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(status.init_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            monitors.push(status.monitor_pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while monitors
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes down the networks a test left active under the daemon whose run
/// directory is `run_dir` (networks outlive their daemon by design): their
/// dnsmasq, bridge and nftables tables.
pub fn remove_leftover_networks(run_dir: &Path) {
    let dir = run_dir.join("network");
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "status") {
            continue;
        }
        let Ok(status) = lxvirtd::core::live::NetworkStatus::load(&path) else {
            continue;
        };
        if let Some((pid, start)) = status.dnsmasq
            && lxvirtd::sys::process::start_time(nix::unistd::Pid::from_raw(pid)) == Some(start)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(def) = lxvirtd::domain::NetworkDef::from_xml(&status.live_xml)
            && let Some(bridge) = def.bridge.name
        {
            let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        }
        let table = format!("lxvirt-{}", status.name);
        for family in ["inet", "bridge"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &table])
                .output();
        }
    }
}

/// Compiles a small C program with `cc -static` (probes that run inside a
/// busybox root, where there is no libc). Returns false, after saying why,
/// when the toolchain is missing; under CI that is a failure instead.
pub fn build_static_probe(source: &str, output: &Path) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("probe.c");
    fs::write(&file, source)?;
    let built = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(output)
        .arg(&file)
        .status();
    if built.is_ok_and(|s| s.success()) {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        bail!("CI needs cc and a static libc (gcc and libc6-dev) to build the test probes");
    }
    println!("skipped: needs cc -static (gcc and libc6-dev)");
    Ok(false)
}

/// Waits until the file at `path` (typically `/proc/PID/root/...`, a file
/// a container writes) contains `marker`, and returns its text.
pub async fn wait_for_file(path: &Path, marker: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.contains(marker)
        {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("no '{marker}' in {} within 15 s", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real daemon on a private bus, rooted in a temporary directory, with a
/// client connection. Dropping it kills the daemon and the containers it
/// left running: containers outlive their daemon by design, and a test
/// that fails half way must not leave them running for the next run.
#[derive(Debug)]
pub struct DaemonEnv {
    pub bus: TestBus,
    pub dir: tempfile::TempDir,
    pub daemon: TestDaemon,
    pub connection: zbus::Connection,
}

impl DaemonEnv {
    /// Starts it in a new temporary directory with `extra` daemon arguments.
    pub async fn start(extra: &[&str]) -> Result<DaemonEnv> {
        Self::start_in(shared_tempdir()?, extra).await
    }

    /// Starts it rooted in `dir` (prepared by the caller).
    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Result<DaemonEnv> {
        let bus = TestBus::start()?;
        let daemon = TestDaemon::start_with(&bus, dir.path(), extra).await?;
        let connection = bus.connect().await?;
        Ok(DaemonEnv {
            bus,
            dir,
            daemon,
            connection,
        })
    }

    /// Kills the daemon (as a crash would) and starts it again.
    pub async fn crash_and_restart(&mut self) -> Result<()> {
        self.daemon.kill()?;
        self.daemon = TestDaemon::start(&self.bus, self.dir.path()).await?;
        Ok(())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub async fn manager(&self) -> Result<lxvirtd::dbus::proxy::ManagerProxy<'static>> {
        Ok(lxvirtd::dbus::proxy::ManagerProxy::new(&self.connection).await?)
    }

    pub async fn domain(
        &self,
        path: zbus::OwnedObjectPath,
    ) -> Result<lxvirtd::dbus::proxy::DomainProxy<'static>> {
        Ok(lxvirtd::dbus::proxy::DomainProxy::builder(&self.connection)
            .path(path)
            .build()
            .await?)
    }
}

impl Drop for DaemonEnv {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        kill_leftover_containers(&self.run_dir());
        remove_leftover_networks(&self.run_dir());
    }
}

/// A [`DaemonEnv`] with a busybox root (with the probe a suite compiled
/// into it).
#[derive(Debug)]
pub struct ContainerEnv {
    env: DaemonEnv,
}

impl std::ops::Deref for ContainerEnv {
    type Target = DaemonEnv;
    fn deref(&self) -> &DaemonEnv {
        &self.env
    }
}

impl std::ops::DerefMut for ContainerEnv {
    fn deref_mut(&mut self) -> &mut DaemonEnv {
        &mut self.env
    }
}

impl ContainerEnv {
    /// `None` (skipped, or failed under CI) without root or without a
    /// static C toolchain; the probe `source` is compiled to `/probe` of
    /// the busybox root.
    pub async fn with_probe(source: &str) -> Option<ContainerEnv> {
        let env = Self::new().await?;
        match build_static_probe(source, &env.rootfs().join("probe")) {
            Ok(true) => Some(env),
            Ok(false) => None,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// `None` (skipped, or failed under CI) without root.
    pub async fn new() -> Option<ContainerEnv> {
        Self::with_daemon_args(&[]).await
    }

    /// As [`ContainerEnv::new`], the daemon given `extra` arguments.
    pub async fn with_daemon_args(extra: &[&str]) -> Option<ContainerEnv> {
        if !root_or_skip() {
            return None;
        }
        let dir = shared_tempdir().unwrap_or_else(|e| panic!("{e:#}"));
        let rootfs = dir.path().join("rootfs");
        busybox_root(&rootfs);
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
            .unwrap_or_else(|e| panic!("{e}"));
        let env = DaemonEnv::start_in(dir, extra)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        Some(ContainerEnv { env })
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// A busybox domain running `script` as init, with `extra` in
    /// `<domain>` before `<devices>` (lxvirt's XML namespace declared).
    pub fn busybox_xml(&self, name: &str, script: &str, extra: &str) -> String {
        format!(
            "<domain type='lxc' xmlns:lxvirt='https://lxvirt.org/schemas/domain/1'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>{script}</initarg></os>\
             {extra}<devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>\
             <console type='pty'/></devices></domain>",
            root = self.rootfs().display()
        )
    }

    /// Defines and starts `xml`.
    pub async fn define_and_start(&self, xml: &str) -> lxvirtd::dbus::proxy::DomainProxy<'static> {
        let manager = self.manager().await.unwrap_or_else(|e| panic!("{e}"));
        let path = manager
            .define_xml(xml)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let domain = self.domain(path).await.unwrap_or_else(|e| panic!("{e}"));
        domain.start().await.unwrap_or_else(|e| panic!("{e}"));
        domain
    }

    /// Defines and starts a busybox container (see `busybox_xml`).
    pub async fn start(
        &self,
        name: &str,
        script: &str,
        extra: &str,
    ) -> lxvirtd::dbus::proxy::DomainProxy<'static> {
        self.define_and_start(&self.busybox_xml(name, script, extra))
            .await
    }

    /// Runs a command inside; returns (exit code, stdout).
    pub async fn enter(
        &self,
        domain: &lxvirtd::dbus::proxy::DomainProxy<'_>,
        argv: &[&str],
    ) -> (i32, String) {
        enter_capture(domain, argv)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Builds an OCI layout with two layers: the busybox root plus a few files,
/// and a top layer that deletes /etc/gone (whiteout), makes /opt/dir opaque
/// and adds files. Its index also names the config as a manifest
/// (`not-a-manifest`), so an import must give the reference `1.0`.
#[allow(clippy::unwrap_used)] // a fixture: a panic is the test's failure report
pub fn oci_fixture(dir: &Path) -> PathBuf {
    use lxvirtd::storage::{Compression, pack_dir, sha256_hex};
    let base = dir.join("layer0");
    busybox_root(&base);
    fs::write(base.join("etc/gone"), "deleted by the top layer\n").unwrap();
    fs::create_dir_all(base.join("opt/dir")).unwrap();
    fs::write(base.join("opt/dir/lower1"), "hidden\n").unwrap();
    fs::write(base.join("opt/dir/lower2"), "hidden\n").unwrap();
    fs::write(base.join("opt/kept"), "kept\n").unwrap();
    let top = dir.join("layer1");
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::create_dir_all(top.join("opt/dir")).unwrap();
    fs::write(top.join("etc/.wh.gone"), "").unwrap();
    fs::write(top.join("opt/dir/.wh..wh..opq"), "").unwrap();
    fs::write(top.join("opt/dir/upper"), "from the top\n").unwrap();
    fs::write(top.join("etc/motd"), "welcome\n").unwrap();

    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = sha256_hex(bytes);
        fs::write(blobs.join(&digest), bytes).unwrap();
        (format!("sha256:{digest}"), bytes.len())
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (layer, c, media) in [
        (
            &base,
            Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            &top,
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    ] {
        let mut plain = Vec::new();
        diff_ids.push(format!(
            "sha256:{}",
            pack_dir(layer, Compression::None, &mut plain)
                .unwrap()
                .diff_id
        ));
        let mut packed = Vec::new();
        pack_dir(layer, c, &mut packed).unwrap();
        let (digest, size) = blob(&packed);
        layers.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (config_digest, config_size) = blob(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers});
    let (manifest_digest, manifest_size) = blob(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
         "annotations": {"org.opencontainers.image.ref.name": "1.0"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": config_digest, "size": config_size,
         "annotations": {"org.opencontainers.image.ref.name": "not-a-manifest"}}]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}
