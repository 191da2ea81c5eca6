//! The container escape suite: lxvirt's own probe (`tests/probes/escape.c`,
//! compiled here with `cc -static`) runs as root inside default containers
//! of the real daemon and tries the known ways out — global sysctl and
//! sysfs writes, remounts, fresh procfs/sysfs/cgroup mounts, cgroup
//! `release_agent` and the root cgroup, host disk nodes, module loading and
//! clock setting, host keys and kernel memory, host processes and network,
//! a nested user namespace, a chroot breakout, unmounting the root. Every
//! attempt must fail, except the known gaps listed below, which must get
//! through exactly as listed; and the host must be unchanged afterwards.
//! Needs root and a static C toolchain; says so and returns otherwise
//! (fails under CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use lxvirt_tests::{ContainerEnv, wait_for_file};
use lxvirtd::sys::mountinfo;

const PROBE: &str = include_str!("../probes/escape.c");

/// The three ways the suite runs the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// A child of init in a default system container on a busybox root.
    System,
    /// Init of a default application container on the host's root.
    Application,
    /// `lxvirt enter` into a running default system container.
    Enter,
    /// The same, from a terminal (as `lxvirt enter` from a shell passes
    /// the shell's terminal in).
    EnterFromTerminal,
}

/// An attempt that gets through with the current defaults.
struct Gap {
    cases: &'static [Case],
    attempt: &'static str,
    why: &'static str,
}

const ALL: &[Case] = &[
    Case::System,
    Case::Application,
    Case::Enter,
    Case::EnterFromTerminal,
];

/// The known gaps of the current defaults. The suite fails when one of
/// them no longer gets through, so that this list shrinks as the defaults
/// close them: remove an entry when its attempt starts failing.
const KNOWN_GAPS: &[Gap] = &[Gap {
    cases: ALL,
    attempt: "host_net_interfaces",
    why: "without <privnet/> (or an <interface>) a container shares the host's network \
              namespace, as in libvirt; a user namespace does not change that",
}];

/// Attempts the probe must report (a probe that stops early is a failure
/// too, but this also catches a renamed attempt).
const ATTEMPTS: &[&str] = &[
    "sysctl_core_pattern",
    "sysctl_drop_caches",
    "sysrq_trigger",
    "sys_uevent_helper",
    "sys_mm_write",
    "proc_kcore",
    "proc_keys",
    "keyctl_session_keyring",
    "keyctl_user_keyring",
    "proc_kallsyms",
    "proc_timer_list",
    "proc_sched_debug",
    "sys_firmware",
    "init_module",
    "finit_module",
    "delete_module",
    "clock_settime",
    "settimeofday",
    "adjtimex_set",
    "iopl",
    "ioperm",
    "swapon",
    "acct",
    "reboot_cad_off",
    "kexec_load",
    "bpf",
    "perf_event_open_system_wide",
    "open_by_handle_at",
    "mknod_host_disk",
    "open_host_disk",
    "mknod_dev_mem",
    "open_dev_mem",
    "mknod_dev_kmem",
    "open_dev_kmem",
    "mknod_dev_port",
    "open_dev_port",
    "see_host_pid",
    "signal_host_pid",
    "proc1_root",
    "host_net_interfaces",
    "chroot_breakout",
    "tiocsti_stdin",
    "userns_unshare",
    "cgroup_write_own_limits",
    "cgroup_visible_release_agent",
    "cgroup_visible_notify_on_release",
    "cgroup_visible_move_root",
    "remount_proc_sys_rw",
    "remount_sys_rw",
    "mount_procfs",
    "mount_sysfs",
    "mount_sysfs_write",
    "umount_mask",
    "umount_root",
    "open_tree_proc_without_masks",
    "cgroup1_mount_memory",
    "cgroup1_memory_release_agent",
    "cgroup1_mount_net_cls",
    "cgroup1_net_cls_release_agent",
    "cgroup1_mount_named",
    "cgroup1_named_release_agent",
    "cgroup2_mount",
    "cgroup2_move_root",
];

/// The probe's report: attempt → (verdict, detail).
fn parse(report: &str) -> BTreeMap<String, (String, String)> {
    assert!(
        report.lines().any(|l| l == "done"),
        "the probe did not finish:\n{report}"
    );
    let mut attempts = BTreeMap::new();
    for line in report
        .lines()
        .filter(|l| *l != "done" && !l.starts_with("probe "))
    {
        let mut words = line.splitn(3, ' ');
        let name = words.next().unwrap_or_default().to_owned();
        let verdict = words.next().unwrap_or_default().to_owned();
        let detail = words.next().unwrap_or_default().to_owned();
        let previous = attempts.insert(name.clone(), (verdict, detail));
        assert!(previous.is_none(), "{name} reported twice:\n{report}");
    }
    for name in ATTEMPTS {
        assert!(attempts.contains_key(*name), "no {name} in:\n{report}");
    }
    attempts
}

/// Every attempt failed but the known gaps of `case`, which all got through.
/// With `LXVIRT_ESCAPE_REPORTS` set (`tests/compare-escapes` sets it), the
/// report is kept there as `lxvirt-CASE.report` too.
fn check(case: Case, report: &str) {
    if let Some(dir) = std::env::var_os("LXVIRT_ESCAPE_REPORTS") {
        let name = format!("lxvirt-{case:?}.report").to_lowercase();
        fs::write(Path::new(&dir).join(name), report).unwrap();
    }
    let attempts = parse(report);
    let escaped: BTreeSet<&str> = attempts
        .iter()
        .filter(|(_, (verdict, _))| verdict == "ok")
        .map(|(name, _)| name.as_str())
        .collect();
    let gaps: BTreeMap<&str, &str> = KNOWN_GAPS
        .iter()
        .filter(|g| g.cases.contains(&case))
        .map(|g| (g.attempt, g.why))
        .collect();
    let unexpected: Vec<_> = escaped.iter().filter(|a| !gaps.contains_key(*a)).collect();
    let closed: Vec<_> = gaps.iter().filter(|(a, _)| !escaped.contains(*a)).collect();
    assert!(
        unexpected.is_empty() && closed.is_empty(),
        "{case:?}: escapes not in KNOWN_GAPS: {unexpected:?}; known gaps now closed, remove \
         them from KNOWN_GAPS: {closed:#?}\nreport:\n{report}"
    );
}

/// What the probe could change on the host, read from the host.
#[derive(Debug, PartialEq)]
struct HostState {
    files: BTreeMap<PathBuf, String>,
    mounts: BTreeSet<String>,
}

impl HostState {
    /// The sysctls and sysfs files the probe writes, every cgroup v1
    /// `release_agent`, and the host's kernel filesystem mounts (proc,
    /// sysfs, cgroup) and any mount of the probe's.
    fn read() -> HostState {
        let mut paths: Vec<PathBuf> = [
            "/proc/sys/kernel/core_pattern",
            "/proc/sys/kernel/ctrl-alt-del",
            "/sys/kernel/mm/ksm/run",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                paths.push(h.path().join("release_agent"));
                paths.push(h.path().join("notify_on_release"));
            }
        }
        let files = paths
            .into_iter()
            .filter_map(|p| fs::read_to_string(&p).ok().map(|v| (p, v)))
            .collect();
        let mounts = mountinfo::read(Path::new("/proc/self/mountinfo"))
            .unwrap()
            .into_iter()
            .filter_map(|m| {
                let point = m.mount_point.display().to_string();
                let kernel = matches!(m.fstype.as_str(), "proc" | "sysfs" | "cgroup" | "cgroup2");
                (kernel || point.contains("lxvirt-escape")).then(|| format!("{} {point}", m.fstype))
            })
            .collect();
        HostState { files, mounts }
    }

    /// Puts back a changed value, then fails: the host must never see one.
    fn assert_unchanged_since(&self) {
        let now = HostState::read();
        for (path, value) in &self.files {
            if now.files.get(path) != Some(value) {
                let _ = fs::write(path, value);
            }
        }
        assert_eq!(
            &now, self,
            "the probe changed the host (restored where possible)"
        );
    }
}

/// The probe's arguments: the host's root disk, a host process and the
/// host's network namespace.
fn probe_args() -> Vec<String> {
    let dev = nix::sys::stat::stat("/").unwrap().st_dev;
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let uevent =
        fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).unwrap_or_default();
    let disk_path = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map_or_else(
            || format!("/dev/block/{major}:{minor}"),
            |n| format!("/dev/{n}"),
        );
    vec![
        "--disk".into(),
        format!("{major}:{minor}"),
        "--disk-path".into(),
        disk_path,
        "--host-pid".into(),
        std::process::id().to_string(),
        "--host-netns".into(),
        fs::read_link("/proc/self/ns/net")
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ]
}

/// The shell command (escaped for XML text) that runs the probe.
fn shell_command(probe: &Path, report: &Path) -> String {
    let args: Vec<String> = probe_args().iter().map(|a| format!("'{a}'")).collect();
    // Not on init's console: that terminal is the container's own, and
    // pushing input into it (tiocsti_stdin) reaches nothing of the host.
    format!(
        "{} {} &lt; /dev/null &gt; {}; exec sleep 1000",
        probe.display(),
        args.join(" "),
        report.display()
    )
}

/// How many mounts of the container's mount namespace its mount table
/// does not show (`NS_MNT_GET_INFO`, Linux 6.12): one when its root is
/// stacked on the daemon's template (lxc/mount_template.rs), the
/// template's tmpfs; none when it was pivoted into.
fn mounts_below_the_root(pid: impl std::fmt::Display) -> usize {
    /// `struct mnt_ns_info`.
    #[repr(C)]
    #[derive(Default)]
    struct MntNsInfo {
        size: u32,
        nr_mounts: u32,
        mnt_ns_id: u64,
    }
    /// `_IOR(0xb7, 10, struct mnt_ns_info)`.
    const NS_MNT_GET_INFO: nix::libc::c_ulong = 0x8010_b70a;
    let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    let mut info = MntNsInfo {
        size: 16,
        ..MntNsInfo::default()
    };
    // SAFETY: the ioctl fills at most `size` bytes of `info`, a properly
    // laid out `struct mnt_ns_info` that outlives the call.
    let rc = unsafe {
        nix::libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&ns),
            NS_MNT_GET_INFO,
            &mut info as *mut MntNsInfo,
        )
    };
    assert_eq!(
        rc,
        0,
        "NS_MNT_GET_INFO: {}",
        std::io::Error::last_os_error()
    );
    let table = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    info.nr_mounts as usize - table.lines().count()
}

/// Runs the probe as a child of init in a busybox container with `extra`
/// in its definition; returns its report once the host is found unchanged.
async fn probe_in_busybox(env: &ContainerEnv, name: &str, extra: &str) -> String {
    let host = HostState::read();
    let script = shell_command(Path::new("/probe"), Path::new("/tmp/escape.report"));
    let domain = env.start(name, &script, extra).await;
    let pid = domain.pid().await.unwrap();
    // The mounter of a container with a user namespace stacks its root
    // on the template; init of one without pivots.
    let on_template = !extra.contains("<lxvirt:userns mode='host'/>");
    assert_eq!(mounts_below_the_root(pid), usize::from(on_template));
    let report = wait_for_file(
        &PathBuf::from(format!("/proc/{pid}/root/tmp/escape.report")),
        "\ndone\n",
    )
    .await
    .unwrap();
    domain.destroy().await.unwrap();
    host.assert_unchanged_since();
    report
}

#[tokio::test]
async fn a_default_system_container_does_not_escape() {
    let Some(env) = ContainerEnv::with_probe(PROBE).await else {
        return;
    };
    check(Case::System, &probe_in_busybox(&env, "system", "").await);
}

#[tokio::test]
async fn a_default_application_container_does_not_escape() {
    let Some(env) = ContainerEnv::with_probe(PROBE).await else {
        return;
    };
    let host = HostState::read();
    // Root inside is an unprivileged host user: it may write where anyone
    // may, and nowhere else on the host.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let reports = env.dir.path().join("reports");
    fs::create_dir(&reports).unwrap();
    fs::set_permissions(&reports, fs::Permissions::from_mode(0o1777)).unwrap();
    let report = reports.join("application.report");
    let script = shell_command(&env.rootfs().join("probe"), &report);
    // No <filesystem> for /: the container runs on the host's root.
    let xml = format!(
        "<domain type='lxc'><name>application</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>{script}</initarg></os>\
         <devices><console type='pty'/></devices></domain>"
    );
    let domain = env.define_and_start(&xml).await;
    let text = wait_for_file(&report, "\ndone\n").await.unwrap();
    domain.destroy().await.unwrap();
    host.assert_unchanged_since();
    check(Case::Application, &text);
}

/// Runs the probe through `lxvirt enter` (the D-Bus call it makes) into a
/// running default container, with `stdin`; returns its report once the
/// host is found unchanged.
async fn probe_through_enter(env: &ContainerEnv, name: &str, stdin: BorrowedFd<'_>) -> String {
    let host = HostState::read();
    let domain = env.start(name, "exec sleep 1000", "").await;
    let args = probe_args();
    let mut argv = vec!["/probe"];
    argv.extend(args.iter().map(String::as_str));
    let (code, report) = lxvirt_tests::enter_capture_with_stdin(&domain, &argv, stdin)
        .await
        .unwrap();
    assert_eq!(code, 0, "{report}");
    domain.destroy().await.unwrap();
    host.assert_unchanged_since();
    report
}

#[tokio::test]
async fn enter_does_not_escape() {
    let Some(env) = ContainerEnv::with_probe(PROBE).await else {
        return;
    };
    let devnull = fs::File::open("/dev/null").unwrap();
    let report = probe_through_enter(&env, "entered", devnull.as_fd()).await;
    check(Case::Enter, &report);
}

#[tokio::test]
async fn enter_from_a_terminal_does_not_escape() {
    let Some(env) = ContainerEnv::with_probe(PROBE).await else {
        return;
    };
    let pty = nix::pty::openpty(None, None).unwrap();
    let report = probe_through_enter(&env, "terminal", pty.slave.as_fd()).await;
    // What the probe pushed is there to read on the terminal, as the
    // caller's shell would read it.
    let injected = report.lines().any(|l| l.starts_with("tiocsti_stdin ok"));
    let mut termios = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    termios
        .local_flags
        .remove(nix::sys::termios::LocalFlags::ICANON);
    termios.control_chars[nix::sys::termios::SpecialCharacterIndices::VMIN as usize] = 0;
    termios.control_chars[nix::sys::termios::SpecialCharacterIndices::VTIME as usize] = 0;
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &termios).unwrap();
    let mut buffer = [0u8; 16];
    let read = nix::unistd::read(&pty.slave, &mut buffer).unwrap_or(0);
    assert_eq!(&buffer[..read], if injected { &b" "[..] } else { &b""[..] });
    check(Case::EnterFromTerminal, &report);
}

/// The control: without a user namespace, with the filter off and every
/// capability kept (libvirt's `policy='allow'`), the same probe must see
/// the escapes the defaults close, or the suite above would pass for a
/// probe that sees nothing.
#[tokio::test]
async fn the_probe_sees_escapes_when_confinement_is_off() {
    let Some(env) = ContainerEnv::with_probe(PROBE).await else {
        return;
    };
    let report = probe_in_busybox(
        &env,
        "unconfined",
        "<features><capabilities policy='allow'/></features><lxvirt:seccomp mode='off'/>\
         <lxvirt:userns mode='host'/>",
    )
    .await;
    let attempts = parse(&report);
    for attempt in [
        "remount_proc_sys_rw",
        "mount_procfs",
        "mount_sysfs",
        "umount_mask",
        "umount_root",
        "open_tree_proc_without_masks",
        "settimeofday",
        "keyctl_user_keyring",
        "bpf",
        "perf_event_open_system_wide",
        // The host's root directory, by a guessed handle ("shocker").
        "open_by_handle_at",
    ] {
        assert_eq!(attempts[attempt].0, "ok", "{attempt}:\n{report}");
    }
}
