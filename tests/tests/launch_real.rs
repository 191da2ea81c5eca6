//! Privileged end-to-end tests of the container launch path: real
//! containers from a busybox root directory (and the host root), launched
//! in-process with `lxvirtd::lxc::launch::launch`, their console read from
//! a pty master. They need root; without it they say so and return.
//!
//! `launch` must run in a single-threaded process, as the monitor is: its
//! fork-like clone copies the calling thread only, and a lock another
//! thread holds (the allocator's, the test harness's output) would stay
//! locked in the child. So each test forks a single-threaded "monitor"
//! (glibc's fork resets the allocator's locks) which launches the
//! container, reads its console, reaps it and reports back over a pipe.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use lxvirtd::cgroup::CgroupSpec;
use lxvirtd::lxc::launch::{EarlyInit, LaunchContext, LaunchError, Launched, USUAL_FLAGS, launch};
use lxvirtd::lxc::spec::{
    ContainerSpec, IdMapping, InitSpec, MountSource, MountSpec, Namespaces, NsChoice, RootFs,
    SPEC_VERSION,
};
use lxvirtd::sys::linux::exit_now;
use lxvirtd::sys::process::{nice_of, set_nice};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::ForkResult;
use nix::unistd::Pid;

static LOCK: Mutex<()> = Mutex::new(());

use lxvirt_tests::{busybox_root, root_or_skip};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = lxvirt_tests::shared_tempdir().unwrap();
        busybox_root(&dir.path().join("rootfs"));
        fs::create_dir_all(dir.path().join("run")).unwrap();
        let host = dir.path().join("hostdata");
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join("hello"), "from the host\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            version: SPEC_VERSION,
            name: name.into(),
            // (the tests crate does not depend on uuid itself)
            uuid: serde_json::from_str("\"00000000-0000-0000-0000-000000000000\"").unwrap(),
            hostname: format!("{name}-host"),
            namespaces: Namespaces {
                net: NsChoice::New,
                ipc: NsChoice::New,
                uts: NsChoice::New,
                user: None,
            },
            root: RootFs::Dir {
                path: self.path("rootfs"),
                readonly: false,
            },
            mounts: vec![
                MountSpec {
                    source: MountSource::Tmpfs { size: 1 << 20 },
                    target: "/scratch".into(),
                    readonly: false,
                },
                MountSpec {
                    source: MountSource::HostDir(self.path("hostdata")),
                    target: "/data".into(),
                    readonly: true,
                },
            ],
            devices: vec![],
            init: InitSpec {
                path: "/bin/sh".into(),
                args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec![
                    "PATH=/bin:/sbin".into(),
                    "TERM=linux".into(),
                    "container=lxvirt".into(),
                    "HOME=/".into(),
                ],
                cwd: "/".into(),
                user: None,
                group: None,
            },
            // Keep the usual container set: everything but sys_module (16),
            // sys_time (25), mknod (27), audit_control (30), mac_admin (33).
            capabilities: (0..=40u8)
                .filter(|c| ![16, 25, 27, 30, 33].contains(c))
                .collect(),
            no_new_privs: false,
            masked_paths: [
                "/proc/kcore",
                "/proc/keys",
                "/proc/timer_list",
                "/proc/sched_debug",
                "/proc/acpi",
                "/sys/firmware",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            readonly_paths: [
                "/proc/sys",
                "/proc/sysrq-trigger",
                "/proc/irq",
                "/proc/bus",
                "/proc/fs",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            consoles: 1,
            cgroup: CgroupSpec::default(),
            security: None,
            seccomp: None,
            run_dir: self.path("run"),
            interfaces: vec![],
            host_interfaces: vec![],
            loop_devices: vec![],
            console_log: None,
        }
    }

    /// Lines of the host's mountinfo that mention this fixture.
    fn host_mounts(&self) -> Vec<String> {
        let here = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&here))
            .map(str::to_string)
            .collect()
    }
}

/// Run `f` in a forked, single-threaded copy of this process, the way the
/// monitor runs `launch`, and return what it returned (`Err` on a panic).
fn in_monitor(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs `f` (which launches, reads and waits),
    // writes to the pipe and leaves with `_exit`; glibc's fork makes the
    // allocator usable in the child, and the child touches no lock another
    // thread of the test harness could hold.
    match unsafe { nix::unistd::fork() }.unwrap() {
        ForkResult::Child => {
            drop(read_end);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("the monitor side panicked".into()));
            let encoded = match result {
                Ok(text) => format!("O{text}"),
                Err(text) => format!("E{text}"),
            };
            let mut file = fs::File::from(write_end);
            let code = i32::from(file.write_all(encoded.as_bytes()).is_err());
            drop(file);
            exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut text = String::new();
            fs::File::from(read_end).read_to_string(&mut text).unwrap();
            assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            match text.split_at_checked(1) {
                Some(("O", rest)) => Ok(rest.to_string()),
                Some((_, rest)) => Err(rest.to_string()),
                None => Err("the monitor side reported nothing".into()),
            }
        }
    }
}

fn start(spec: &ContainerSpec) -> Result<Launched, LaunchError> {
    start_with(spec, None)
}

/// `start`, with an init cloned ahead of the spec.
/// The host pid of the last launch's mounter (0: none), in this process.
static LAST_MOUNTER: AtomicI32 = AtomicI32::new(0);

fn start_with(spec: &ContainerSpec, early: Option<EarlyInit>) -> Result<Launched, LaunchError> {
    start_on(spec, early, None)
}

/// `start_with`, the root stacked on a template mount namespace when one
/// is given (user namespace only: the mounter does it).
fn start_on(
    spec: &ContainerSpec,
    early: Option<EarlyInit>,
    mount_template: Option<BorrowedFd<'_>>,
) -> Result<Launched, LaunchError> {
    let mut placed = None;
    let mut place = |pid: Pid| {
        placed = Some(pid);
        Ok(())
    };
    let mut launched = launch(LaunchContext {
        spec,
        place_in_cgroup: &mut place,
        early,
        mount_template,
    });
    if let Ok(l) = &mut launched {
        // As the monitor does once it reported the start: init's exit
        // would wait for it.
        let mounter = l.mounter.take();
        LAST_MOUNTER.store(
            mounter.as_ref().map_or(0, |m| m.pid().as_raw()),
            Ordering::Relaxed,
        );
        drop(mounter);
    }
    if let Ok(l) = &launched {
        assert_eq!(placed, Some(l.pid), "place_in_cgroup got init's pid");
        assert_eq!(
            l.consoles.len(),
            spec.consoles as usize,
            "a master per console"
        );
    }
    launched
}

/// The master of console 0 (made blocking, for `read_console`).
fn console(launched: &mut Launched) -> OwnedFd {
    let master = launched.consoles.remove(0);
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    master
}

/// Everything init writes to its console until the last slave closes.
fn read_console(master: OwnedFd) -> String {
    let mut out = Vec::new();
    let mut file = fs::File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // EIO: every slave fd is closed.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

/// Run a container to completion (in a forked monitor): its console
/// output, then a line `exit=STATUS`.
fn run(spec: &ContainerSpec) -> String {
    run_on(spec, None)
}

/// `run`, the root stacked on `mount_template`'s root if given.
fn run_on(spec: &ContainerSpec, mount_template: Option<BorrowedFd<'_>>) -> String {
    in_monitor(|| {
        let mut launched =
            start_on(spec, None, mount_template).map_err(|e| format!("launch failed: {e}"))?;
        let output = read_console(console(&mut launched));
        let status = waitpid(launched.pid, None).map_err(|e| e.to_string())?;
        Ok(format!("{output}\nexit={}\n", exit_text(status)))
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn exit_text(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => code.to_string(),
        other => format!("{other:?}"),
    }
}

/// Masked directories are one empty, read-only directory of the
/// container's `/dev` tmpfs (every superblock costs the kernel state in
/// every memory cgroup of the host), which nothing can write to.
fn masks_cost_no_superblock(out: &str) {
    let devs: Vec<&str> = line_after(out, "maskdevs=").split_whitespace().collect();
    assert!(
        devs.len() == 3 && devs.iter().all(|d| *d == devs[2]),
        "/proc/acpi, /sys/firmware and /dev on one superblock: {out}"
    );
    assert_eq!(line_after(out, "maskwrite="), "no", "{out}");
}

fn line_after<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no '{key}' in output:\n{output}"))
}

const CHECKS: &str = r#"
echo "pid=$$"
echo "hostname=$(hostname)"
echo "procs=$(ls /proc | grep -c '^[0-9]')"
touch /sys/x 2>/dev/null && echo "sys=rw" || echo "sys=ro"
(echo lxvirt > /proc/sys/kernel/domainname) 2>/dev/null && echo "procsys=rw" || echo "procsys=ro"
test -e /proc/kcore && ! test -c /proc/kcore && echo "kcore=visible" || echo "kcore=hidden"
test -c /proc/keys && echo "keys=masked" || echo "keys=visible"
echo "acpi=$(ls -A /proc/acpi | wc -l)"
echo "firmware=$(ls -A /sys/firmware | wc -l)"
echo "maskdevs=$(stat -c %d /proc/acpi) $(stat -c %d /sys/firmware) $(stat -c %d /dev)"
mkdir /proc/acpi/x 2>/dev/null && echo "maskwrite=yes" || echo "maskwrite=no"
echo "dev=$(ls /dev | grep -v '^tty[0-9]' | tr '\n' ' ')"
echo "devpts=$(ls -d /dev/pts/ptmx)"
test -t 0 && test -t 1 && echo "console=tty" || echo "console=notty"
test -c /dev/console && echo "consolenode=char"
touch /data/x 2>/dev/null && echo "data=rw" || echo "data=ro"
echo "hello=$(cat /data/hello)"
echo hi > /scratch/f && echo "scratch=$(cat /scratch/f)"
echo "uid=$(id -u)"
"#;

#[test]
fn busybox_container_without_user_namespace() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let spec = fx.spec("bb", CHECKS);
    let out = run(&spec);
    assert_eq!(line_after(&out, "exit="), "0", "{out}");
    assert_eq!(line_after(&out, "pid="), "1", "{out}");
    assert_eq!(line_after(&out, "hostname="), "bb-host");
    let procs: u32 = line_after(&out, "procs=").parse().unwrap();
    assert!(procs <= 4, "only the container's processes in /proc: {out}");
    assert_eq!(line_after(&out, "sys="), "ro");
    assert_eq!(line_after(&out, "procsys="), "ro");
    assert_eq!(line_after(&out, "kcore="), "hidden");
    assert_eq!(line_after(&out, "keys="), "masked");
    assert_eq!(line_after(&out, "acpi="), "0");
    assert_eq!(line_after(&out, "firmware="), "0");
    masks_cost_no_superblock(&out);
    let dev: Vec<&str> = line_after(&out, "dev=").split_whitespace().collect();
    for node in [
        "console", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
        "stdout", "tty", "urandom", "zero",
    ] {
        assert!(dev.contains(&node), "/dev has {node}: {dev:?}");
    }
    assert_eq!(line_after(&out, "devpts="), "/dev/pts/ptmx");
    assert_eq!(line_after(&out, "console="), "tty");
    assert_eq!(line_after(&out, "consolenode="), "char");
    assert_eq!(line_after(&out, "data="), "ro");
    assert_eq!(line_after(&out, "hello="), "from the host");
    assert_eq!(line_after(&out, "scratch="), "hi");
    assert_eq!(line_after(&out, "uid="), "0");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

#[test]
fn missing_init_is_reported_and_nothing_stays() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.spec("missing", "");
    spec.init.path = "/nonexistent".into();
    spec.init.args = vec!["/nonexistent".into()];
    let out = in_monitor(|| {
        let err = match start(&spec) {
            Ok(_) => return Err("init /nonexistent was started".into()),
            Err(err) => err,
        };
        let path = err.setup_error().and_then(|e| e.path.clone());
        // launch reaped its child: nothing is left to wait for.
        let reaped = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG));
        Ok(format!(
            "message={err}\npath={}\nreaped={}\n",
            path.map(|p| p.display().to_string()).unwrap_or_default(),
            reaped == Err(nix::errno::Errno::ECHILD)
        ))
    })
    .unwrap();
    let message = line_after(&out, "message=");
    assert!(
        message.contains("cannot execute init /nonexistent inside the container")
            && message.contains("No such file or directory (ENOENT)")
            && message.contains("check <init>"),
        "{message}"
    );
    assert_eq!(line_after(&out, "path="), "/nonexistent");
    assert_eq!(line_after(&out, "reaped="), "true");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());

    // A failing mount names its target.
    let mut spec = fx.spec("badmount", "true");
    spec.mounts.push(MountSpec {
        source: MountSource::HostDir(fx.path("does-not-exist")),
        target: "/nothere".into(),
        readonly: false,
    });
    let err = in_monitor(|| match start(&spec) {
        Ok(_) => Ok("started".into()),
        Err(e) => Err(e.to_string()),
    })
    .expect_err("the bind source is missing");
    assert!(err.contains("/nothere"), "{err}");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

#[test]
fn user_namespace_maps_root() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let script = format!(
        "{CHECKS}\necho \"uidmap=$(cat /proc/self/uid_map | tr -s ' ')\"\necho \"gidmap=$(cat /proc/self/gid_map | tr -s ' ')\"\ntouch /scratch/owned && echo \"owner=$(stat -c %u:%g /scratch/owned)\"\necho \"devowner=$(stat -c %u /dev)\"\necho \"ptsowner=$(stat -c %u /dev/pts)\"\nsleep 1\n"
    );
    let mut spec = fx.spec("userns", &script);
    spec.namespaces.user = Some(IdMapping {
        uid: vec![(0, 100000, 65536)],
        gid: vec![(0, 100000, 65536)],
        idmapped_root: false,
    });
    // Cloned at the launch, and ahead of the spec, as a spare monitor does.
    for early in [false, true] {
        let out = in_monitor(|| userns_run(&spec, early)).unwrap_or_else(|e| panic!("{e}"));
        let how = if early {
            "an early init"
        } else {
            "a fresh clone"
        };
        assert_eq!(line_after(&out, "early="), early.to_string(), "{how}");
        assert_eq!(
            line_after(&out, "early_mounter="),
            early.to_string(),
            "{how}"
        );
        assert_eq!(
            line_after(&out, "hostuid="),
            "100000 100000 100000 100000",
            "root inside is uid 100000 on the host ({how})"
        );
        assert_eq!(line_after(&out, "nice="), "0", "{how}");
        assert_eq!(line_after(&out, "exit="), "0", "{how}: {out}");
        assert_eq!(line_after(&out, "pid="), "1");
        assert_eq!(line_after(&out, "uid="), "0");
        assert_eq!(line_after(&out, "uidmap=").trim(), "0 100000 65536");
        assert_eq!(line_after(&out, "gidmap=").trim(), "0 100000 65536");
        assert_eq!(line_after(&out, "owner="), "0:0");
        assert_eq!(line_after(&out, "devowner="), "0");
        assert_eq!(line_after(&out, "ptsowner="), "0");
        assert_eq!(line_after(&out, "hostname="), "userns-host");
        assert_eq!(line_after(&out, "sys="), "ro");
        assert_eq!(line_after(&out, "procsys="), "ro");
        assert_eq!(line_after(&out, "kcore="), "hidden");
        assert_eq!(line_after(&out, "keys="), "masked");
        assert_eq!(line_after(&out, "firmware="), "0");
        masks_cost_no_superblock(&out);
        assert_eq!(line_after(&out, "console="), "tty");
        assert_eq!(line_after(&out, "data="), "ro");
        assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
    }
}

/// Runs `spec` in the monitor, its init cloned ahead of the spec at a
/// lower priority (as a spare's is) when `early`: its output, the host's
/// view of init's ids and priority, and whether the early init ran it.
fn userns_run(spec: &ContainerSpec, early: bool) -> Result<String, String> {
    let early = early
        .then(|| {
            set_nice(0, 5).map_err(|e| e.to_string())?;
            let early = EarlyInit::clone(USUAL_FLAGS, None).map_err(|e| e.to_string())?;
            set_nice(0, 0).map_err(|e| e.to_string())?;
            Ok::<_, String>(early)
        })
        .transpose()?;
    let early_pid = early.as_ref().and_then(EarlyInit::pid);
    let early_mounter = early.as_ref().and_then(EarlyInit::mounter_pid);
    {
        let mut launched = start_with(spec, early).map_err(|e| format!("launch failed: {e}"))?;
        let mounter = Some(Pid::from_raw(LAST_MOUNTER.load(Ordering::Relaxed)));
        // Read on the host while init runs (or is a zombie, still ours).
        let status = fs::read_to_string(format!("/proc/{}/status", launched.pid))
            .map_err(|e| e.to_string())?;
        let host_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let nice = nice_of(launched.pid.as_raw()).map_err(|e| e.to_string())?;
        let output = read_console(console(&mut launched));
        let st = waitpid(launched.pid, None).map_err(|e| e.to_string())?;
        Ok(format!(
            "hostuid={host_uid}\nnice={nice}\nearly={}\nearly_mounter={}\n{output}\nexit={}\n",
            early_pid == Some(launched.pid),
            early_mounter.is_some() && early_mounter == mounter,
            exit_text(st)
        ))
    }
}

/// An early init in namespaces the spec does not ask for is not used; it
/// goes with the monitor's word, leaving no process; one given a spec whose
/// init is missing reports it as a fresh clone does.
#[test]
fn early_init_unused_or_failing_leaves_nothing() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let spec = fx.spec("unfit", "echo ran");
    let out = in_monitor(|| {
        let early = EarlyInit::clone(USUAL_FLAGS, None).map_err(|e| e.to_string())?;
        let early_pid = early.pid().ok_or("no pid")?;
        if early.fits(&spec) {
            return Err("an early init with a user namespace fits a spec without one".into());
        }
        drop(early);
        let gone = fs::metadata(format!("/proc/{early_pid}")).is_err();
        let output = run_launched(start(&spec).map_err(|e| e.to_string())?)?;
        Ok(format!("gone={gone}\n{output}"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line_after(&out, "gone="), "true", "{out}");
    assert!(out.contains("ran"), "{out}");

    let mut spec = fx.spec("missing-early", "");
    spec.init.path = "/nonexistent".into();
    spec.init.args = vec!["/nonexistent".into()];
    spec.namespaces.user = Some(IdMapping {
        uid: vec![(0, 100000, 65536)],
        gid: vec![(0, 100000, 65536)],
        idmapped_root: false,
    });
    let out = in_monitor(|| {
        let early = EarlyInit::clone(USUAL_FLAGS, None).map_err(|e| e.to_string())?;
        if !early.fits(&spec) {
            return Err("the early init does not fit".into());
        }
        let err = match start_with(&spec, Some(early)) {
            Ok(_) => return Err("init /nonexistent was started".into()),
            Err(err) => err,
        };
        let reaped = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG));
        Ok(format!(
            "message={err}\nreaped={}\n",
            reaped == Err(nix::errno::Errno::ECHILD)
        ))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        line_after(&out, "message=").contains("cannot execute init /nonexistent"),
        "{out}"
    );
    assert_eq!(line_after(&out, "reaped="), "true", "{out}");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

/// An early init comes with its mounter, cloned while the spare waits: in
/// init's PID and network namespaces but not its user namespace (it
/// mounts as host root), in a mount namespace of its own, named as an
/// early process. Both go when the early init is dropped unused.
#[test]
fn early_init_comes_with_its_mounter() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let ns = |pid: Pid, kind: &str| {
        fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .map(|link| link.display().to_string())
            .unwrap_or_else(|e| format!("unreadable: {e}"))
    };
    let out = in_monitor(|| {
        let early = EarlyInit::clone(USUAL_FLAGS, None).map_err(|e| e.to_string())?;
        let init = early.pid().ok_or("no pid")?;
        let mounter = early.mounter_pid().ok_or("no early mounter")?;
        let comm = || fs::read_to_string(format!("/proc/{mounter}/comm")).unwrap_or_default();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while comm().trim() != "lxvirt-early-mt" && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let own = Pid::this();
        let out = format!(
            "comm={}\npid={}\nnet={}\nuser={}\nmnt={}\n",
            comm().trim(),
            ns(mounter, "pid") == ns(init, "pid"),
            ns(mounter, "net") == ns(init, "net"),
            ns(mounter, "user") == ns(own, "user"),
            ns(mounter, "mnt") != ns(own, "mnt"),
        );
        drop(early);
        let gone = [init, mounter]
            .iter()
            .all(|pid| fs::metadata(format!("/proc/{pid}")).is_err());
        Ok(format!("{out}gone={gone}\n"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line_after(&out, "comm="), "lxvirt-early-mt", "{out}");
    for (key, what) in [
        ("pid=", "init's PID namespace"),
        ("net=", "init's network namespace"),
        ("user=", "the host's user namespace"),
        ("mnt=", "a mount namespace of its own"),
    ] {
        assert_eq!(line_after(&out, key), "true", "{what}: {out}");
    }
    assert_eq!(line_after(&out, "gone="), "true", "{out}");
}

/// An early init in a network namespace of its own brings the loopback up
/// while it waits for its spec (off the start's path).
#[test]
fn early_init_brings_the_loopback_up_before_its_spec() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    // The kernel gives a loopback 127.0.0.1 (a local route) when it goes up.
    let loopback_up = |pid: Pid| {
        fs::read_to_string(format!("/proc/{pid}/net/fib_trie"))
            .map(|t| t.contains("127.0.0.1"))
            .unwrap_or(false)
    };
    let out = in_monitor(|| {
        let early = EarlyInit::clone(USUAL_FLAGS, None).map_err(|e| e.to_string())?;
        let pid = early.pid().ok_or("no pid")?;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !loopback_up(pid) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let up = loopback_up(pid);
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|e| e.to_string())?;
        Ok(format!("up={up}\ncomm={}\n", comm.trim()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line_after(&out, "up="), "true", "{out}");
    assert_eq!(line_after(&out, "comm="), "lxvirt-early", "{out}");
}

/// A launched container's console output until it ends, and its exit.
fn run_launched(mut launched: Launched) -> Result<String, String> {
    let output = read_console(console(&mut launched));
    let status = waitpid(launched.pid, None).map_err(|e| e.to_string())?;
    Ok(format!("{output}\nexit={}\n", exit_text(status)))
}

/// What root inside tries against the locked mounts.
const LOCKED_CHECKS: &str = r#"
echo "binowner=$(stat -c %u:%g /bin/busybox)"
touch /made-inside && echo "madeinside=yes"
umount /proc/kcore 2>/dev/null && echo "umountmask=ok" || echo "umountmask=denied"
umount -l /proc/sys 2>/dev/null && echo "umountro=ok" || echo "umountro=denied"
mount -o remount,rw /proc/sys 2>/dev/null && echo "remountprocsys=ok" || echo "remountprocsys=denied"
mount -o remount,rw /sys 2>/dev/null && echo "remountsys=ok" || echo "remountsys=denied"
mkdir -p /tmp/p /tmp/s
mount -t proc proc /tmp/p 2>/dev/null && echo "freshproc=ok" || echo "freshproc=denied"
mount -t sysfs sysfs /tmp/s 2>/dev/null && echo "freshsys=ok" || echo "freshsys=denied"
mount -t tmpfs tmpfs /tmp/p 2>/dev/null && echo "tmpfs=ok" || echo "tmpfs=denied"
hostname renamed 2>/dev/null && echo "sethostname=$(hostname)" || echo "sethostname=denied"
"#;

/// What root inside tries against the template its root is stacked on.
const TEMPLATE_CHECKS: &str = r#"
echo "root=$(ls -A / | tr '\n' ' ')"
echo "dotdot=$(ls -A /.. | tr '\n' ' ')"
umount -l / 2>/dev/null && echo "umountroot=ok" || echo "umountroot=denied"
unshare -U -r true 2>/dev/null && echo "nesteduserns=ok" || echo "nesteduserns=denied"
"#;

/// The daemon's default: an allocated range, the root stacked on the
/// template mount namespace; and the same without the template.
#[test]
fn allocated_range_shows_the_root_idmapped_and_locks_the_masks() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let template = lxvirtd::lxc::mount_template::make(&fx.path("run")).unwrap();
    let mut spec = fx.spec(
        "locked",
        &format!("{CHECKS}{LOCKED_CHECKS}{TEMPLATE_CHECKS}"),
    );
    spec.namespaces.user = Some(IdMapping {
        uid: vec![(0, 200000, 65536)],
        gid: vec![(0, 200000, 65536)],
        idmapped_root: true,
    });
    let out = run_on(&spec, Some(template.as_fd()));
    assert_locked_on_an_idmapped_root(&fx, &out);
    drop(template);

    // Pivoted into instead.
    let _ = fs::remove_file(fx.path("rootfs/made-inside"));
    let out = run(&spec);
    assert_locked_on_an_idmapped_root(&fx, &out);
}

fn assert_locked_on_an_idmapped_root(fx: &Fixture, out: &str) {
    assert_eq!(line_after(out, "exit="), "0", "{out}");
    assert_eq!(line_after(out, "uid="), "0", "{out}");
    // The image belongs to host root and was not chowned: the idmapped
    // mount shows it as root's inside, and what root inside writes is
    // host root's on disk.
    assert_eq!(line_after(out, "binowner="), "0:0", "{out}");
    assert_eq!(line_after(out, "madeinside="), "yes", "{out}");
    let made = fs::metadata(fx.path("rootfs/made-inside")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((made.uid(), made.gid()), (0, 0));
    let bin = fs::symlink_metadata(fx.path("rootfs/bin/busybox")).unwrap();
    assert_eq!(bin.uid(), 0, "the image was not chowned");
    // Root inside has CAP_SYS_ADMIN in its user namespace, yet the masks
    // and read-only mounts made from outside are locked.
    for key in [
        "umountmask=",
        "umountro=",
        "remountprocsys=",
        "remountsys=",
        "freshproc=",
        "freshsys=",
    ] {
        assert_eq!(line_after(out, key), "denied", "{key}\n{out}");
    }
    assert_eq!(line_after(out, "procsys="), "ro");
    assert_eq!(line_after(out, "kcore="), "hidden");
    // What a user namespace owns stays root's to change.
    assert_eq!(line_after(out, "tmpfs="), "ok", "{out}");
    assert_eq!(line_after(out, "sethostname="), "renamed", "{out}");
    assert_eq!(line_after(out, "scratch="), "hi", "{out}");
    // Nothing below the root shows (with a template: its empty tmpfs):
    // `..` of the root is the root, the root cannot be unmounted; and a
    // nested user namespace may be made (the root counts as the
    // namespace's, not as a chroot).
    assert_eq!(
        line_after(out, "dotdot="),
        line_after(out, "root="),
        "{out}"
    );
    assert!(line_after(out, "root=").contains("bin "), "{out}");
    assert_eq!(line_after(out, "umountroot="), "denied", "{out}");
    assert_eq!(line_after(out, "nesteduserns="), "ok", "{out}");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

#[test]
fn host_root_runs_the_hosts_binaries() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.spec("hostroot", "echo ok; echo \"pid=$$\"");
    spec.root = RootFs::Host;
    spec.mounts.clear();
    let out = run(&spec);
    assert_eq!(line_after(&out, "exit="), "0", "{out}");
    assert!(out.lines().any(|l| l == "ok"), "{out}");
    assert_eq!(line_after(&out, "pid="), "1");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

#[test]
fn init_user_from_the_containers_passwd() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.spec("user", "echo \"ids=$(id -u):$(id -g)\"");
    spec.init.user = Some(lxvirtd::lxc::spec::IdSpec::Name("user".into()));
    spec.no_new_privs = true;
    let out = run(&spec);
    assert_eq!(line_after(&out, "exit="), "0", "{out}");
    assert_eq!(line_after(&out, "ids="), "1000:1000");
}

#[test]
fn sleeping_init_can_be_killed_from_the_host() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.spec("sleeper", "");
    spec.init.path = "/bin/sleep".into();
    spec.init.args = vec!["sleep".into(), "30".into()];
    let out = in_monitor(|| {
        let launched = start(&spec).map_err(|e| e.to_string())?;
        let cmdline = fs::read(format!("/proc/{}/cmdline", launched.pid)).unwrap_or_default();
        let _ = kill(launched.pid, Signal::SIGKILL);
        let st = waitpid(launched.pid, None).map_err(|e| e.to_string())?;
        Ok(format!(
            "cmdline={}\nexit={}\n",
            String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
            exit_text(st)
        ))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line_after(&out, "cmdline="), "sleep 30");
    assert!(line_after(&out, "exit=").contains("SIGKILL"), "{out}");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Start latency: `launch()` until init has been executed, and until a
/// `/bin/true` init has exited, against `unshare ... /bin/true` measured
/// the same way. Prints figures; asserts nothing about time.
/// `cargo test -p lxvirt-tests --test launch_real -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn launch_latency() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    const RUNS: usize = 50;
    let fx = Fixture::new();
    let mut spec = fx.spec("bench", "");
    spec.mounts.clear();
    spec.init.path = "/bin/true".into();
    spec.init.args = vec!["true".into()];
    // As host root, and in a user namespace with an idmapped root (the
    // mounter's path).
    let mut mapped = spec.clone();
    mapped.namespaces.user = Some(IdMapping {
        uid: vec![(0, 200000, 65536)],
        gid: vec![(0, 200000, 65536)],
        idmapped_root: true,
    });
    let measure = |spec: &ContainerSpec| -> (f64, f64) {
        let figures = in_monitor(|| {
            let mut exec = Vec::new();
            let mut total = Vec::new();
            for _ in 0..RUNS {
                let t0 = Instant::now();
                let launched = start(spec).map_err(|e| e.to_string())?;
                exec.push(t0.elapsed().as_secs_f64() * 1e3);
                waitpid(launched.pid, None).map_err(|e| e.to_string())?;
                total.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok(format!("{} {}", median(exec), median(total)))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let (e, t) = figures.split_once(' ').unwrap();
        (e.parse().unwrap(), t.parse().unwrap())
    };
    let (e, t) = measure(&spec);
    let (ue, ut) = measure(&mapped);
    let mut floor = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let st = Command::new("unshare")
            .args(lxvirt_tests::UNSHARE_FLOOR)
            .status()
            .unwrap();
        assert!(st.success());
        floor.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let f = median(floor);
    println!(
        "launch() to init exec'd: median {e:.2} ms; to init exited: {t:.2} ms; unshare floor: {f:.2} ms; ratio {:.2}x",
        t / f
    );
    println!(
        "with a user namespace: to init exec'd: median {ue:.2} ms; to init exited: {ut:.2} ms; ratio {:.2}x",
        ut / f
    );
}

/// Loop devices whose backing file is `image`.
fn loops_backed_by(image: &Path) -> Vec<String> {
    let image = image.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| {
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            (backing.trim() == image).then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn image_file_root_on_a_loop_device() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let image = fx.path("root.img");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(fx.path("rootfs"))
        .arg(&image)
        .arg("16M")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        println!("skipped: needs mkfs.ext4 (e2fsprogs)");
        return;
    }
    let mut spec = fx.spec(
        "image",
        "touch /x 2>/dev/null && echo root=rw || echo root=ro\necho \"fs=$(grep ' / ' /proc/mounts | cut -d' ' -f3)\"\necho scratch > /scratch/f && cat /scratch/f",
    );
    spec.root = RootFs::File {
        path: image.clone(),
        readonly: true,
    };
    spec.mounts.truncate(1);
    let out = run(&spec);
    assert_eq!(line_after(&out, "exit="), "0", "{out}");
    assert_eq!(line_after(&out, "root="), "ro");
    assert_eq!(line_after(&out, "fs="), "ext4");
    assert!(out.lines().any(|l| l == "scratch"), "{out}");
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
    // The loop device detaches itself once the container's mount namespace
    // is gone; the kernel may finish that just after init is reaped.
    let mut left = loops_backed_by(&image);
    for _ in 0..200 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        left = loops_backed_by(&image);
    }
    assert!(left.is_empty(), "loop devices left attached: {left:?}");

    // A failed start detaches it too.
    spec.init.path = "/nonexistent".into();
    let err = in_monitor(|| match start(&spec) {
        Ok(_) => Ok("started".into()),
        Err(e) => Err(e.to_string()),
    })
    .expect_err("init does not exist");
    assert!(err.contains("/nonexistent"), "{err}");
    for _ in 0..200 {
        if loops_backed_by(&image).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(loops_backed_by(&image).is_empty());
}

#[test]
fn shared_network_namespace_of_another_container() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let mut first = fx.spec("first", "");
    first.init.path = "/bin/sleep".into();
    first.init.args = vec!["sleep".into(), "30".into()];
    first.mounts.clear();
    let out = in_monitor(|| {
        let a = start(&first).map_err(|e| e.to_string())?;
        let a_net = fs::read_link(format!("/proc/{}/ns/net", a.pid)).map_err(|e| e.to_string())?;
        let own_net = fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
        let mut second = fx.spec("second", "echo \"net=$(readlink /proc/self/ns/net)\"");
        second.mounts.clear();
        second.namespaces.net = NsChoice::Pid(a.pid.as_raw());
        let result = start(&second);
        let after = fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
        let text = match result {
            Ok(mut b) => {
                let output = read_console(console(&mut b));
                let _ = waitpid(b.pid, None);
                output
            }
            Err(e) => format!("error={e}"),
        };
        let _ = kill(a.pid, Signal::SIGKILL);
        let _ = waitpid(a.pid, None);
        Ok(format!(
            "{text}\nfirst={}\nmonitor_before={}\nmonitor_after={}\n",
            a_net.display(),
            own_net.display(),
            after.display()
        ))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        line_after(&out, "net="),
        line_after(&out, "first="),
        "{out}"
    );
    assert_ne!(
        line_after(&out, "first="),
        line_after(&out, "monitor_before=")
    );
    assert_eq!(
        line_after(&out, "monitor_before="),
        line_after(&out, "monitor_after="),
        "the monitor is back in its own network namespace"
    );
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}

#[test]
fn mount_targets_cannot_escape_the_root_through_symlinks() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let fx = Fixture::new();
    let rootfs = fx.path("rootfs");
    let probe = format!("lxvirt-probe-{}", std::process::id());
    // An absolute and a relative symlink that point outside the root when
    // followed on the host.
    symlink("/tmp", rootfs.join("abs")).unwrap();
    symlink("../../../../../../../../tmp", rootfs.join("rel")).unwrap();
    let mut spec = fx.spec("escape", "ls -d /tmp/* && echo done");
    spec.mounts = ["abs", "rel"]
        .iter()
        .map(|link| MountSpec {
            source: MountSource::Tmpfs { size: 4096 },
            target: PathBuf::from(format!("/{link}/{probe}-{link}")),
            readonly: false,
        })
        .collect();
    let out = run(&spec);
    assert_eq!(line_after(&out, "exit="), "0", "{out}");
    for link in ["abs", "rel"] {
        let name = format!("{probe}-{link}");
        assert!(
            !Path::new("/tmp").join(&name).exists(),
            "{name} was created on the host"
        );
        assert!(rootfs.join("tmp").join(&name).is_dir(), "{name} is inside");
        assert!(out.contains(&format!("/tmp/{name}")), "{out}");
    }
    assert!(fx.host_mounts().is_empty(), "{:?}", fx.host_mounts());
}
