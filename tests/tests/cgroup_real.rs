//! The cgroup layer against the real kernel: needs root and the host's
//! `/sys/fs/cgroup` (hybrid on the project's machines, pure v2 in the
//! nested VM). Each test works below its own partition
//! `lxvirt-test-<unique>` and removes it, even when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lxvirtd::cgroup::{
    CgroupError, CgroupSpec, Cgroups, ContainerCgroup, Controller, DeviceRule, Hierarchies,
};

/// The layer over this host's hierarchies, or `None` (printed) when the
/// test cannot run here.
fn host_cgroups() -> Option<Cgroups> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root");
        return None;
    }
    let cgroups = Cgroups::detect().unwrap();
    if cgroups.hierarchies().v1.is_empty() && cgroups.hierarchies().unified.is_none() {
        eprintln!("skipped: no cgroup hierarchy mounted");
        return None;
    }
    Some(cgroups)
}

/// The layer over this host's cgroup2 mount alone, as on a pure v2 host
/// (on a hybrid host the v1 hierarchies are left out), or `None`
/// (printed) when the test cannot run here.
fn unified_only_cgroups() -> Option<Cgroups> {
    let unified = host_cgroups()?.hierarchies().unified.clone();
    if unified.is_none() {
        eprintln!("skipped: no cgroup2 mount");
    }
    Some(Cgroups::new(Hierarchies {
        v1: Vec::new(),
        unified: Some(unified?),
    }))
}

/// A partition and container path no other test or run uses.
fn unique_path(test: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    PathBuf::from(format!(
        "lxvirt-test-{}-{nanos}-{test}/ct",
        std::process::id()
    ))
}

/// Kills the test's processes and removes its cgroup and partition from
/// every hierarchy when dropped, whether the test passed or not.
struct Cleanup {
    cgroups: Cgroups,
    path: PathBuf,
    children: Vec<Child>,
}

impl Cleanup {
    fn new(cgroups: &Cgroups, path: &Path) -> Cleanup {
        Cleanup {
            cgroups: cgroups.clone(),
            path: path.to_owned(),
            children: Vec::new(),
        }
    }

    fn spawn_sleep(&mut self) -> u32 {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let Ok(cg) = self.cgroups.open(&self.path) else {
            return;
        };
        let _ = cg.thaw();
        let _ = cg.kill_all();
        for _ in 0..100 {
            match cg.remove() {
                Err(CgroupError::Busy { .. }) => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        if let Some(partition) = self.path.parent() {
            for retired in self.cgroups.retired_in(partition) {
                let _ = self.cgroups.remove_retired(&retired);
            }
        }
        for dir in cg.paths() {
            if let Some(partition) = dir.parent() {
                let _ = fs::remove_dir(partition);
            }
        }
    }
}

/// The container's directory in the hierarchy handling `c`, and whether
/// that is cgroup2.
fn dir_for(cgroups: &Cgroups, cg: &ContainerCgroup, c: Controller) -> Option<(PathBuf, bool)> {
    let h = cgroups.hierarchies();
    if let Some(v1) = h.v1_hierarchy(c) {
        return Some((v1.mount.join(cg.path()), false));
    }
    if h.handled_by_v2(c) {
        let unified = h.unified.as_ref()?;
        return Some((unified.mount.join(cg.path()), true));
    }
    None
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn device(kind: char, major: u32, minor: u32, access: &str) -> DeviceRule {
    DeviceRule {
        kind,
        major: Some(major),
        minor: Some(minor),
        access: access.into(),
    }
}

/// The state letter of /proc/PID/stat (after the command in parentheses).
fn proc_state(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or("?")
        .to_owned()
}

#[test]
fn limits_processes_freeze_kill_and_remove_on_the_real_kernel() {
    let Some(cgroups) = host_cgroups() else {
        return;
    };
    eprintln!("cgroup layout: {}", cgroups.hierarchies().layout().name());
    let path = unique_path("life");
    let mut guard = Cleanup::new(&cgroups, &path);
    let spec = CgroupSpec {
        path: path.clone(),
        memory_limit: Some(64 << 20),
        cpu_shares: Some(512),
        pids_max: Some(50),
        devices: vec![device('c', 1, 3, "rwm"), device('c', 1, 5, "rwm")],
        ..CgroupSpec::default()
    };
    let cg = cgroups.create(&spec).unwrap();

    // The kernel's files read back what the spec asked.
    if let Some((dir, v2)) = dir_for(&cgroups, &cg, Controller::Memory) {
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        assert_eq!(read(&dir.join(file)), "67108864");
    }
    if let Some((dir, _)) = dir_for(&cgroups, &cg, Controller::Pids) {
        assert_eq!(read(&dir.join("pids.max")), "50");
    }
    if let Some((dir, v2)) = dir_for(&cgroups, &cg, Controller::Cpu) {
        if v2 {
            assert_eq!(read(&dir.join("cpu.weight")), "20");
        } else {
            assert_eq!(read(&dir.join("cpu.shares")), "512");
        }
    }
    assert!(cg.devices_enforced());
    if let Some((dir, false)) = dir_for(&cgroups, &cg, Controller::Devices) {
        let list = read(&dir.join("devices.list"));
        let mut lines: Vec<&str> = list.lines().collect();
        lines.sort();
        assert_eq!(lines, ["c 1:3 rwm", "c 1:5 rwm"]);
    } else {
        // cgroup2: a device program, which the test below checks.
        eprintln!("device allow-list enforced by a cgroup2 device program");
    }
    // Its directory in every hierarchy but a v1 cpuset one (unpinned, it
    // stays in the partition there): a process joins the files listed.
    let files = cg.procs_files();
    assert!(files.iter().all(|file| file.is_file()), "{files:?}");
    let own: Vec<PathBuf> = files
        .iter()
        .filter_map(|file| file.parent())
        .filter(|dir| dir.ends_with(cg.path()))
        .map(Path::to_path_buf)
        .collect();
    let cpuset_alone = cgroups
        .hierarchies()
        .v1
        .iter()
        .any(|h| h.known.iter().eq([Controller::Cpuset]));
    assert_eq!(
        own.len() + usize::from(cpuset_alone),
        files.len(),
        "{files:?}"
    );

    // The container's root owns its directories and delegation files.
    cg.chown(100_000, 100_000).unwrap();
    for dir in own {
        assert_eq!(fs::metadata(&dir).unwrap().uid(), 100_000);
        assert_eq!(
            fs::metadata(dir.join("cgroup.procs")).unwrap().uid(),
            100_000
        );
    }

    // A process moves in and is seen.
    let pid = guard.spawn_sleep();
    let pid_i32 = i32::try_from(pid).unwrap();
    cg.add_process(pid_i32).unwrap();
    assert_eq!(cg.procs().unwrap(), [pid_i32]);
    assert!(!cg.is_empty().unwrap());
    let self_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        self_cgroup.contains(&format!("{}\n", path.display())),
        "{self_cgroup}"
    );
    let stats = cg.stats();
    eprintln!("stats: {stats:?}");
    assert!(stats.memory_bytes.is_some());
    assert!(stats.cpu_time_ns.is_some());
    assert!(stats.pids.unwrap() >= 1);

    // Freeze and thaw.
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    eprintln!("frozen sleep: /proc/{pid}/stat state {}", proc_state(pid));
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    // Thawed: sleeping again, or running for a moment on its way back.
    let state = proc_state(pid);
    assert!(state == "S" || state == "R", "state {state} after thaw");

    // Kill everything, then remove.
    cg.kill_all().unwrap();
    let status = guard.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cg.is_empty().unwrap() {
        assert!(Instant::now() < deadline, "processes left after kill_all");
        std::thread::sleep(Duration::from_millis(1));
    }
    cg.remove().unwrap();
    for dir in cg.paths() {
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(dir.parent().unwrap().is_dir(), "the partition stays");
    }
    // Removing again is fine.
    cg.remove().unwrap();
}

#[test]
fn remove_of_a_cgroup_with_processes_is_busy() {
    let Some(cgroups) = host_cgroups() else {
        return;
    };
    let path = unique_path("busy");
    let mut guard = Cleanup::new(&cgroups, &path);
    let cg = cgroups
        .create(&CgroupSpec {
            path: path.clone(),
            ..CgroupSpec::default()
        })
        .unwrap();
    let pid = guard.spawn_sleep();
    cg.add_process(i32::try_from(pid).unwrap()).unwrap();
    let err = cg.remove().unwrap_err();
    assert!(matches!(err, CgroupError::Busy { .. }), "{err:?}");
}

#[test]
fn a_create_the_kernel_refuses_leaves_nothing_behind() {
    let Some(cgroups) = host_cgroups() else {
        return;
    };
    let path = unique_path("refused");
    let _guard = Cleanup::new(&cgroups, &path);
    // No host has CPU 4095; the kernel refuses it after every directory
    // is made and the memory limit is written.
    let spec = CgroupSpec {
        path: path.clone(),
        memory_limit: Some(64 << 20),
        cpuset_cpus: Some("4095".into()),
        ..CgroupSpec::default()
    };
    let err = match cgroups.create(&spec) {
        Ok(_) => panic!("cpuset.cpus 4095 was accepted"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, CgroupError::Refused { value, .. } if value == "4095"),
        "{err:?}"
    );
    assert!(err.to_string().contains("<vcpu cpuset>"), "{err}");
    let cg = cgroups.open(&path).unwrap();
    for dir in cg.paths() {
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            !dir.parent().unwrap().exists(),
            "{} left behind",
            dir.parent().unwrap().display()
        );
    }
}

/// The cgroup2 core (`cgroup.freeze`, `cgroup.events`, `cgroup.kill`)
/// alone, as on a pure v2 host: on a hybrid host the v1 hierarchies are
/// left out so the unified one does everything.
#[test]
fn cgroup2_core_freezes_kills_and_tracks_processes() {
    let Some(cgroups) = unified_only_cgroups() else {
        return;
    };
    let path = unique_path("v2core");
    let mut guard = Cleanup::new(&cgroups, &path);
    let cg = cgroups
        .create(&CgroupSpec {
            path: path.clone(),
            ..CgroupSpec::default()
        })
        .unwrap();
    // An empty allow-list: a device program denying every device.
    assert!(cg.devices_enforced());
    assert_eq!(cg.paths().len(), 1);
    let pid = guard.spawn_sleep();
    cg.add_process(i32::try_from(pid).unwrap()).unwrap();
    assert!(!cg.is_empty().unwrap());
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    eprintln!(
        "cgroup2-frozen sleep: /proc/{pid}/stat state {}",
        proc_state(pid)
    );
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    assert!(cg.stats().cpu_time_ns.is_some());
    cg.kill_all().unwrap();
    assert_eq!(guard.children[0].wait().unwrap().signal(), Some(9));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cg.is_empty().unwrap() {
        assert!(
            Instant::now() < deadline,
            "processes left after cgroup.kill"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    cg.remove().unwrap();
    assert!(!cg.paths()[0].exists());
}

/// Not a benchmark with a threshold: prints the cost of the three calls a
/// container start and stop make (`--nocapture` to see it).
#[test]
fn create_add_remove_timing() {
    let Some(cgroups) = host_cgroups() else {
        return;
    };
    const RUNS: usize = 20;
    let mut create = Vec::new();
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for i in 0..RUNS {
        let path = unique_path(&format!("timing{i}"));
        let mut guard = Cleanup::new(&cgroups, &path);
        let spec = CgroupSpec {
            path: path.clone(),
            memory_limit: Some(256 << 20),
            cpu_shares: Some(1024),
            pids_max: Some(1000),
            devices: vec![
                device('c', 1, 3, "rwm"),
                device('c', 1, 5, "rwm"),
                device('c', 1, 7, "rwm"),
                device('c', 1, 8, "rwm"),
                device('c', 1, 9, "rwm"),
                device('c', 5, 0, "rwm"),
                device('c', 5, 2, "rwm"),
            ],
            ..CgroupSpec::default()
        };
        let pid = i32::try_from(guard.spawn_sleep()).unwrap();
        let t = Instant::now();
        let cg = cgroups.create(&spec).unwrap();
        create.push(t.elapsed());
        let t = Instant::now();
        cg.add_process(pid).unwrap();
        add.push(t.elapsed());
        for child in &mut guard.children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        guard.children.clear();
        let t = Instant::now();
        cg.remove().unwrap();
        remove.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "cgroup timing, median of {RUNS} ({} hierarchies): create {:?}, add_process {:?}, remove {:?}",
        cgroups.open(Path::new("x")).unwrap().paths().len(),
        median(&mut create),
        median(&mut add),
        median(&mut remove),
    );
}

/// What a process in the device test's cgroup tries: write and read
/// /dev/null (allowed), read /dev/zero and make a /dev/null node (denied).
/// `$1` is the cgroup's `cgroup.procs`, `$2` a path for the node.
const DEVICE_PROBE: &str = r#"
echo $$ > "$1" || exit 90
echo x > /dev/null || exit 91
head -c 1 < /dev/null || exit 92
if head -c 1 /dev/zero > /dev/null; then exit 93; fi
if mknod "$2" c 1 3; then rm -f "$2"; exit 94; fi
exit 0
"#;

/// The cgroup2 device program on the real kernel, on the unified mount
/// alone (as on a pure v2 host; on the project's hybrid hosts the
/// controller-less `/sys/fs/cgroup/unified`): a cgroup whose allow-list
/// is only `c 1:3 rw` (/dev/null). A process that moves itself in opens
/// /dev/null for writing and reading, and is refused /dev/zero and a
/// mknod of /dev/null's numbers, with EPERM.
#[test]
fn cgroup2_device_program_allows_only_the_listed_devices() {
    let Some(cgroups) = unified_only_cgroups() else {
        return;
    };
    let path = unique_path("devices");
    let _guard = Cleanup::new(&cgroups, &path);
    let cg = cgroups
        .create(&CgroupSpec {
            path: path.clone(),
            devices: vec![device('c', 1, 3, "rw")],
            ..CgroupSpec::default()
        })
        .unwrap();
    assert!(cg.devices_enforced());
    // After a daemon restart, the kernel is asked.
    assert!(cgroups.open(&path).unwrap().devices_enforced());

    let procs = cg.paths()[0].join("cgroup.procs");
    let node = std::env::temp_dir().join(format!("lxvirt-test-{}-null", std::process::id()));
    let output = Command::new("sh")
        .args(["-c", DEVICE_PROBE, "sh"])
        .arg(&procs)
        .arg(&node)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("probe: {:?}, stderr:\n{stderr}", output.status);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // Both refusals are the device cgroup's EPERM.
    assert_eq!(
        stderr.matches("Operation not permitted").count(),
        2,
        "{stderr}"
    );
    assert!(!node.exists());
}

/// A v1 memory cgroup is renamed beside itself at a container's end (the
/// kernel allows it in v1 only) and removed later; on cgroup2 nothing is
/// retired.
#[test]
fn a_memory_cgroup_retires_by_rename_and_goes_later_on_the_real_kernel() {
    let Some(cgroups) = host_cgroups() else {
        return;
    };
    let path = unique_path("retire");
    let mut guard = Cleanup::new(&cgroups, &path);
    let cg = cgroups
        .create(&CgroupSpec {
            path: path.clone(),
            memory_limit: Some(64 << 20),
            ..CgroupSpec::default()
        })
        .unwrap();
    let pid = guard.spawn_sleep();
    cg.add_process(i32::try_from(pid).unwrap()).unwrap();
    cg.kill_all().unwrap();
    guard.children[0].wait().unwrap();
    guard.children.clear();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cg.is_empty().unwrap() {
        assert!(Instant::now() < deadline, "processes left after kill_all");
        std::thread::sleep(Duration::from_millis(1));
    }
    let retired = cg.remove_retiring_memory().unwrap();
    for dir in cg.paths() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let partition = path.parent().unwrap();
    let memory_v1 = cgroups.hierarchies().v1_hierarchy(Controller::Memory);
    let Some(memory_v1) = memory_v1 else {
        assert!(retired.is_empty(), "{retired:?}");
        return;
    };
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(
        retired[0].parent(),
        Some(memory_v1.mount.join(partition).as_path())
    );
    assert!(retired[0].is_dir());
    assert_eq!(cgroups.retired_in(partition), retired);
    cgroups.remove_retired(&retired[0]).unwrap();
    assert!(!retired[0].exists());
}
