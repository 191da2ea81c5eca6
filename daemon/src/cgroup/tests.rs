//! Unit tests of the cgroup layer against a fake kernel: a temporary
//! directory laid out like `/sys/fs/cgroup`, whose `mkdir` fills a new
//! cgroup with the interface files its hierarchy has, and which records
//! every write.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::cgroup::limits::element;

/// One recorded operation, with paths relative to the fake root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
    /// The child directories of a directory listed.
    List(String),
    Write(String, String),
    Chown(String, u32, u32),
    Kill(i32),
    /// A device program attached to a cgroup2 directory.
    AttachDevices(String, Vec<bpf_devices::Insn>),
    ReplaceDevices(String, Vec<bpf_devices::Insn>),
}

type Template = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
struct Kernel {
    root: tempfile::TempDir,
    /// Interface files (name, content) a new cgroup gets, by mount point.
    templates: Vec<(PathBuf, Template)>,
    log: Mutex<Vec<Op>>,
    /// Writes to a file of this name fail with EIO.
    fail_write: Mutex<Option<&'static str>>,
    /// The v1 freezer stays FREEZING.
    stuck_freezer: Mutex<bool>,
    /// Attaching a device program fails with this errno.
    fail_attach: Mutex<Option<i32>>,
}

#[derive(Debug, Clone)]
struct FakeFs(Arc<Kernel>);

impl FakeFs {
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(self.0.root.path())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn record(&self, op: Op) {
        self.0.log.lock().unwrap().push(op);
    }

    fn log(&self) -> Vec<Op> {
        self.0.log.lock().unwrap().clone()
    }

    fn clear_log(&self) {
        self.0.log.lock().unwrap().clear();
    }

    /// The writes to files whose relative path ends with `suffix`.
    fn writes_to(&self, suffix: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|op| match op {
                Op::Write(path, value) if path.ends_with(suffix) => Some(value),
                _ => None,
            })
            .collect()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.0.root.path().join(relative)
    }

    fn put(&self, relative: &str, content: &str) {
        fs::write(self.path(relative), content).unwrap();
    }

    fn get(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative)).unwrap()
    }

    fn exists(&self, relative: &str) -> bool {
        self.path(relative).exists()
    }

    /// The device programs attached, by directory.
    fn device_programs(&self) -> Vec<(String, Vec<bpf_devices::Insn>)> {
        self.log()
            .into_iter()
            .filter_map(|op| match op {
                Op::AttachDevices(path, program) => Some((path, program)),
                _ => None,
            })
            .collect()
    }

    fn fail_writes_to(&self, name: &'static str) {
        *self.0.fail_write.lock().unwrap() = Some(name);
    }

    /// Removes `pid` from every cgroup.procs below `dir`.
    fn reap(dir: &Path, pid: i32) {
        let procs = dir.join("cgroup.procs");
        if let Ok(text) = fs::read_to_string(&procs) {
            let kept: String = text
                .lines()
                .filter(|l| l.trim() != pid.to_string())
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(&procs, kept).unwrap();
        }
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                FakeFs::reap(&entry.path(), pid);
            }
        }
    }
}

impl CgroupFs for FakeFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        self.record(Op::Mkdir(self.rel(path)));
        let template = self
            .0
            .templates
            .iter()
            .find(|(mount, _)| path.starts_with(mount))
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        for (name, content) in template {
            fs::write(path.join(name), content)?;
        }
        // v1 cpuset: a parent with cgroup.clone_children gives its values.
        let parent = path.parent().unwrap();
        if fs::read_to_string(parent.join("cgroup.clone_children")).is_ok_and(|v| v.trim() == "1") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                fs::copy(parent.join(file), path.join(file))?;
            }
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let procs = fs::read_to_string(path.join("cgroup.procs"))?;
        let has_children = fs::read_dir(path)?.any(|e| e.unwrap().file_type().unwrap().is_dir());
        if !procs.trim().is_empty() || has_children {
            return Err(io::Error::from_raw_os_error(nix::libc::EBUSY));
        }
        for entry in fs::read_dir(path)? {
            fs::remove_file(entry?.path())?;
        }
        fs::remove_dir(path)?;
        self.record(Op::Rmdir(self.rel(path)));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)?;
        self.record(Op::Rename(self.rel(from), self.rel(to)));
        Ok(())
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if *self.0.fail_write.lock().unwrap() == Some(name) {
            return Err(io::Error::from_raw_os_error(nix::libc::EIO));
        }
        if !path.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.record(Op::Write(self.rel(path), value.to_owned()));
        let dir = path.parent().unwrap();
        match name {
            "cgroup.procs" => {
                let mut procs = fs::read_to_string(path)?;
                procs.push_str(&format!("{value}\n"));
                fs::write(path, procs)
            }
            "freezer.state" if value == "FROZEN" && *self.0.stuck_freezer.lock().unwrap() => {
                fs::write(path, "FREEZING\n")
            }
            "cgroup.freeze" => {
                fs::write(path, value)?;
                let events = format!("populated 0\nfrozen {value}\n");
                fs::write(dir.join("cgroup.events"), events)
            }
            "cgroup.kill" => fs::write(dir.join("cgroup.procs"), ""),
            _ => fs::write(path, format!("{value}\n")),
        }
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.record(Op::List(self.rel(path)));
        HostFs.subdirs(path)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        // Recorded whether or not the file exists: a test sees failing calls.
        self.record(Op::Chown(self.rel(path), uid, gid));
        if !path.exists() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(())
    }

    fn kill(&self, pid: i32) -> nix::Result<()> {
        self.record(Op::Kill(pid));
        FakeFs::reap(self.0.root.path(), pid);
        Ok(())
    }

    fn attach_device_program(
        &self,
        dir: &Path,
        program: &[bpf_devices::Insn],
    ) -> Result<(), BpfError> {
        if !dir.is_dir() {
            return Err(BpfError::Open(io::ErrorKind::NotFound.into()));
        }
        if let Some(errno) = *self.0.fail_attach.lock().unwrap() {
            return Err(BpfError::Attach(io::Error::from_raw_os_error(errno)));
        }
        self.record(Op::AttachDevices(self.rel(dir), program.to_vec()));
        // A file standing for the attachment, gone with the directory.
        fs::write(dir.join(DEVICE_PROGRAM), "").map_err(BpfError::Attach)
    }

    fn replace_device_program(
        &self,
        dir: &Path,
        program: &[bpf_devices::Insn],
    ) -> Result<(), BpfError> {
        if !dir.join(DEVICE_PROGRAM).exists() {
            return Err(BpfError::Open(io::ErrorKind::NotFound.into()));
        }
        self.record(Op::ReplaceDevices(self.rel(dir), program.to_vec()));
        Ok(())
    }

    fn has_device_program(&self, dir: &Path) -> Result<bool, BpfError> {
        if !dir.is_dir() {
            return Err(BpfError::Open(io::ErrorKind::NotFound.into()));
        }
        Ok(dir.join(DEVICE_PROGRAM).exists())
    }
}

/// The fake kernel's mark of an attached device program.
const DEVICE_PROGRAM: &str = ".device-program";

/// Which hierarchies a fake host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// This project's CI machines: v1 controllers, an empty cgroup2 mount.
    Hybrid,
    /// v1 only, with cpu and cpuacct co-mounted and no freezer.
    V1NoFreezer,
    /// v1 controllers without devices, and an empty cgroup2 mount.
    HybridNoDevices,
    /// cgroup2 only, with every controller.
    V2,
}

const V1_COMMON: [(&str, &str); 4] = [
    ("cgroup.procs", ""),
    ("tasks", ""),
    ("notify_on_release", "0"),
    ("cgroup.clone_children", "0"),
];

fn v1_template(controller: &str) -> Template {
    let mut files: Template = V1_COMMON.to_vec();
    files.extend_from_slice(match controller {
        "cpu" => &[
            ("cpu.shares", "1024"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_time 777\n"),
        ][..],
        "cpuacct" => &[
            ("cpuacct.usage", "123456789\n"),
            ("cpuacct.stat", "user 12\nsystem 3\n"),
        ][..],
        "cpu,cpuacct" => &[
            ("cpu.shares", "1024"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_time 777\n"),
            ("cpuacct.usage", "123456789\n"),
            ("cpuacct.stat", "user 12\nsystem 3\n"),
        ][..],
        "cpuset" => &[
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("cpuset.sched_load_balance", "1"),
        ][..],
        "memory" => &[
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.soft_limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("memory.usage_in_bytes", "4096\n"),
            (
                "memory.stat",
                "cache 1\nrss 2\ntotal_cache 4096\ntotal_rss 8192\ntotal_shmem 0\ntotal_swap 512\n",
            ),
            ("memory.max_usage_in_bytes", "65536\n"),
        ][..],
        "devices" => &[
            ("devices.allow", ""),
            ("devices.deny", ""),
            ("devices.list", "a *:* rwm"),
        ][..],
        "freezer" => &[("freezer.state", "THAWED\n")][..],
        // A current kernel: BFQ weights only, no CFQ blkio.weight.
        "blkio" => &[
            ("blkio.bfq.weight", "100"),
            ("blkio.bfq.weight_device", ""),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_bps_device", ""),
            ("blkio.throttle.read_iops_device", ""),
            ("blkio.throttle.write_iops_device", ""),
            (
                "blkio.throttle.io_service_bytes",
                "8:0 Read 100\n8:0 Write 50\n8:0 Sync 0\n8:0 Total 150\n8:16 Read 1\n8:16 Write 2\nTotal 153\n",
            ),
            ("blkio.throttle.io_serviced", "8:0 Read 3\n8:0 Write 4\nTotal 7\n"),
        ][..],
        "pids" => &[("pids.max", "max"), ("pids.current", "3\n")][..],
        _ => &[][..],
    });
    files
}

fn v2_template(controllers: bool) -> Template {
    let mut files: Template = vec![
        ("cgroup.procs", ""),
        ("cgroup.threads", ""),
        ("cgroup.subtree_control", ""),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cgroup.freeze", "0"),
        ("cgroup.kill", ""),
        (
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_throttled 1\nthrottled_usec 4\n",
        ),
    ];
    if controllers {
        files.extend_from_slice(&[
            ("memory.max", "max"),
            ("memory.low", "0"),
            ("memory.swap.max", "max"),
            ("memory.current", "8192\n"),
            ("memory.stat", "anon 100\nfile 200\nkernel 50\nshmem 7\n"),
            ("memory.swap.current", "0\n"),
            (
                "io.stat",
                "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=5 wbytes=0 rios=1 wios=0\n",
            ),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("io.weight", "default 100"),
            ("io.max", ""),
            ("pids.max", "max"),
            ("pids.current", "1\n"),
        ]);
    }
    files
}

/// A fake host of the given kind: its mountinfo, its mount points with
/// root files, and the cgroup layer over it.
fn host(kind: Host) -> (Cgroups<FakeFs>, FakeFs) {
    let root = tempfile::tempdir().unwrap();
    let v1: &[&str] = match kind {
        Host::Hybrid => &[
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
        ],
        Host::HybridNoDevices => &["cpu", "cpuacct", "memory", "freezer", "pids"],
        Host::V1NoFreezer => &[
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "devices",
            "blkio",
            "pids",
        ],
        Host::V2 => &[],
    };
    let mut mountinfo =
        String::from("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n");
    let mut templates = Vec::new();
    for (i, controllers) in v1.iter().enumerate() {
        let mount = root.path().join("sys/fs/cgroup").join(controllers);
        fs::create_dir_all(&mount).unwrap();
        mountinfo.push_str(&format!(
            "{} 31 0:{} / /sys/fs/cgroup/{controllers} rw,relatime - cgroup cgroup rw,{controllers}\n",
            40 + i,
            40 + i
        ));
        let template = v1_template(controllers);
        for (name, content) in &template {
            fs::write(mount.join(name), content).unwrap();
        }
        templates.push((mount, template));
    }
    fs::write(
        root.path().join("sys/fs/cgroup/cpuset/cpuset.cpus"),
        "0-3\n",
    )
    .ok();
    fs::write(root.path().join("sys/fs/cgroup/cpuset/cpuset.mems"), "0\n").ok();
    // A named hierarchy, which the layer leaves alone.
    if kind != Host::V2 {
        mountinfo.push_str(
            "60 31 0:60 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n",
        );
        fs::create_dir_all(root.path().join("sys/fs/cgroup/systemd")).unwrap();
    }
    let unified = match kind {
        Host::Hybrid | Host::HybridNoDevices => Some(("sys/fs/cgroup/unified", "hugetlb\n", false)),
        Host::V1NoFreezer => None,
        Host::V2 => Some((
            "sys/fs/cgroup",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
            true,
        )),
    };
    if let Some((mount_point, controllers, with_controllers)) = unified {
        let mount = root.path().join(mount_point);
        fs::create_dir_all(&mount).unwrap();
        fs::write(mount.join("cgroup.controllers"), controllers).unwrap();
        fs::write(mount.join("cgroup.subtree_control"), "").unwrap();
        fs::write(mount.join("cgroup.procs"), "1\n").unwrap();
        mountinfo.push_str(&format!(
            "70 31 0:70 / /{mount_point} rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
        ));
        templates.push((mount, v2_template(with_controllers)));
    }
    let hierarchies = Hierarchies::from_mountinfo(&mountinfo, root.path());
    let fake = FakeFs(Arc::new(Kernel {
        root,
        templates,
        log: Mutex::new(Vec::new()),
        fail_write: Mutex::new(None),
        stuck_freezer: Mutex::new(false),
        fail_attach: Mutex::new(None),
    }));
    (Cgroups::with_fs(hierarchies, fake.clone()), fake)
}

fn spec(path: &str) -> CgroupSpec {
    CgroupSpec {
        path: path.into(),
        ..CgroupSpec::default()
    }
}

/// A spec pinned to memory node 0 (its CPUs are the partition's).
fn pinned(path: &str) -> CgroupSpec {
    CgroupSpec {
        cpuset_mems: Some("0".into()),
        ..spec(path)
    }
}

fn full_spec() -> CgroupSpec {
    CgroupSpec {
        path: "/machine/lxvirt-web".into(),
        memory_limit: Some(512 << 20),
        memory_soft_limit: Some(256 << 20),
        memory_swap_limit: Some(768 << 20),
        cpu_shares: Some(2048),
        cpu_period: Some(50_000),
        cpu_quota: Some(25_000),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        blkio_weight: Some(500),
        blkio_devices: vec![BlkioDeviceLimit {
            major: 8,
            minor: 0,
            weight: Some(300),
            read_bytes_sec: Some(1_000_000),
            write_bytes_sec: None,
            read_iops_sec: None,
            write_iops_sec: Some(200),
        }],
        pids_max: Some(100),
        delegated: None,
        devices: vec![
            DeviceRule {
                kind: 'c',
                major: Some(1),
                minor: Some(3),
                access: "rwm".into(),
            },
            DeviceRule {
                kind: 'c',
                major: Some(136),
                minor: None,
                access: "rw".into(),
            },
        ],
    }
}

// ---------------------------------------------------------------- detection

const HYBRID_MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn detects_the_hybrid_layout_of_this_projects_hosts() {
    let h = Hierarchies::parse(HYBRID_MOUNTINFO, Path::new("/"));
    assert_eq!(h.layout(), Layout::Hybrid);
    // name=systemd carries no controller and is skipped.
    assert_eq!(h.v1.len(), 8);
    assert_eq!(
        h.v1_hierarchy(Controller::Memory).unwrap().mount,
        Path::new("/sys/fs/cgroup/memory")
    );
    let unified = h.unified.as_ref().unwrap();
    assert_eq!(unified.mount, Path::new("/sys/fs/cgroup/unified"));
    assert!(unified.controllers.is_empty());
    assert!(h.v2_controllers().is_empty());
    assert_eq!(
        h.v1_controller_names(),
        [
            "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"
        ]
    );
}

#[test]
fn detects_pure_v1_with_co_mounted_controllers_and_bind_mounts() {
    let mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 31 0:30 / /mnt/memory\\040copy rw - cgroup cgroup rw,memory
35 31 0:31 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
";
    let h = Hierarchies::parse(mountinfo, Path::new("/"));
    assert_eq!(h.layout(), Layout::V1);
    assert_eq!(h.v1.len(), 3, "the bind mount of memory is not a hierarchy");
    let cpu = h.v1_hierarchy(Controller::Cpu).unwrap();
    assert_eq!(cpu.mount, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    assert!(cpu.known.contains(Controller::Cpuacct));
    assert_eq!(cpu.controllers, ["cpu", "cpuacct"]);
    // Hierarchies without a known controller get no container directory.
    assert!(h.v1[2].known.is_empty());
    let cgroups = Cgroups::new(h);
    assert_eq!(cgroups.open(Path::new("x")).unwrap().paths().len(), 2);
}

#[test]
fn detects_pure_v2_and_reads_the_root_controllers() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("sys/fs/cgroup")).unwrap();
    fs::write(
        root.path().join("sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
    let h = Hierarchies::from_mountinfo(mountinfo, root.path());
    assert_eq!(h.layout(), Layout::V2);
    let unified = h.unified.as_ref().unwrap();
    assert_eq!(unified.mount, root.path().join("sys/fs/cgroup"));
    assert_eq!(
        unified.controllers,
        ["cpuset", "cpu", "io", "memory", "pids"]
    );
    for c in [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Blkio,
    ] {
        assert!(h.handled_by_v2(c), "{c}");
    }
    assert!(!h.handled_by_v2(Controller::Devices));
    assert!(!h.handled_by_v2(Controller::Freezer));
}

#[test]
fn a_controller_on_v1_is_not_handled_by_v2() {
    let mut h = Hierarchies::parse(HYBRID_MOUNTINFO, Path::new("/"));
    h.unified.as_mut().unwrap().controllers = vec!["memory".into(), "hugetlb".into()];
    assert!(!h.handled_by_v2(Controller::Memory));
    h.v1.retain(|v| !v.known.contains(Controller::Memory));
    assert!(h.handled_by_v2(Controller::Memory));
}

#[test]
fn detects_no_cgroups() {
    let h = Hierarchies::parse("25 30 0:23 / /sys rw - sysfs sysfs rw\n", Path::new("/"));
    assert_eq!(h.layout(), Layout::None);
    assert!(matches!(
        Cgroups::new(h).create(&spec("x")),
        Err(CgroupError::NoHierarchy)
    ));
}

#[test]
fn mount_points_go_below_the_root_prefix() {
    let h = Hierarchies::parse(HYBRID_MOUNTINFO, Path::new("/tmp/fake"));
    assert_eq!(h.v1[0].mount, Path::new("/tmp/fake/sys/fs/cgroup/cpu"));
}

// ------------------------------------------------------------------ limits

#[test]
fn shares_map_to_weights_as_systemd_does() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(2048), 79);
    assert_eq!(shares_to_weight(262_144), 10_000);
    // Out of range values are clamped.
    assert_eq!(shares_to_weight(0), 1);
    assert_eq!(shares_to_weight(1 << 40), 10_000);
}

#[test]
fn hybrid_create_applies_every_limit_to_v1_files() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&full_spec()).unwrap();
    let leaf = |c: &str, file: &str| format!("sys/fs/cgroup/{c}/machine/lxvirt-web/{file}");

    assert_eq!(
        fake.get(&leaf("memory", "memory.limit_in_bytes")),
        "536870912\n"
    );
    assert_eq!(
        fake.get(&leaf("memory", "memory.soft_limit_in_bytes")),
        "268435456\n"
    );
    assert_eq!(
        fake.get(&leaf("memory", "memory.memsw.limit_in_bytes")),
        "805306368\n"
    );
    assert_eq!(fake.get(&leaf("cpu", "cpu.shares")), "2048\n");
    assert_eq!(fake.get(&leaf("cpu", "cpu.cfs_period_us")), "50000\n");
    assert_eq!(fake.get(&leaf("cpu", "cpu.cfs_quota_us")), "25000\n");
    assert_eq!(fake.get(&leaf("cpuset", "cpuset.cpus")), "0-1\n");
    assert_eq!(fake.get(&leaf("cpuset", "cpuset.mems")), "0\n");
    // No blkio.weight on this kernel: the BFQ files take the weights.
    assert_eq!(fake.get(&leaf("blkio", "blkio.bfq.weight")), "500\n");
    assert_eq!(
        fake.get(&leaf("blkio", "blkio.bfq.weight_device")),
        "8:0 300\n"
    );
    assert_eq!(
        fake.get(&leaf("blkio", "blkio.throttle.read_bps_device")),
        "8:0 1000000\n"
    );
    assert_eq!(
        fake.get(&leaf("blkio", "blkio.throttle.write_iops_device")),
        "8:0 200\n"
    );
    assert_eq!(
        fake.get(&leaf("blkio", "blkio.throttle.write_bps_device")),
        ""
    );
    assert_eq!(fake.get(&leaf("pids", "pids.max")), "100\n");
    assert_eq!(fake.writes_to("devices.deny"), ["a"]);
    assert_eq!(fake.writes_to("devices.allow"), ["c 1:3 rwm", "c 136:* rw"]);
    assert!(cg.devices_enforced());

    // The memory limit goes before memory+swap, which must not be below it.
    let memory: Vec<String> = fake
        .log()
        .into_iter()
        .filter_map(|op| match op {
            Op::Write(p, _) if p.contains("/memory/") => {
                Some(p.rsplit('/').next().unwrap().to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        memory,
        [
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.memsw.limit_in_bytes"
        ]
    );
    // Each file is written once.
    let writes: Vec<String> = fake
        .log()
        .into_iter()
        .filter_map(|op| match op {
            Op::Write(p, _) if !p.ends_with("devices.allow") => Some(p),
            _ => None,
        })
        .collect();
    let mut unique = writes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(writes.len(), unique.len(), "{writes:#?}");

    // One directory in every v1 hierarchy with a controller and in the
    // empty unified one; none in name=systemd; nothing to enable in v2.
    let paths = cg.paths();
    assert_eq!(paths.len(), 9);
    assert!(paths.contains(&fake.path("sys/fs/cgroup/unified/machine/lxvirt-web")));
    assert!(!fake.exists("sys/fs/cgroup/systemd/machine"));
    assert!(fake.writes_to("cgroup.subtree_control").is_empty());
    assert_eq!(cg.path(), Path::new("machine/lxvirt-web"));
}

#[test]
fn v1_cpuset_levels_inherit_the_parents_cpus_and_mems() {
    let (cgroups, fake) = host(Host::Hybrid);
    cgroups.create(&pinned("machine/a")).unwrap();
    for level in ["machine", "machine/a"] {
        let dir = format!("sys/fs/cgroup/cpuset/{level}");
        assert_eq!(fake.get(&format!("{dir}/cpuset.cpus")), "0-3\n");
        assert_eq!(fake.get(&format!("{dir}/cpuset.mems")), "0\n");
    }
    // The partition lxvirt made gives its values to new children itself;
    // the host's root is left alone.
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/cgroup.clone_children"),
        "1\n"
    );
    assert_eq!(fake.get("sys/fs/cgroup/cpuset/cgroup.clone_children"), "0");
    // So a second container's start writes none of the parent's values
    // (each write costs the kernel a walk of the siblings), and its own
    // cpus come from the spec.
    fake.clear_log();
    fake.put("sys/fs/cgroup/cpuset/machine/cpuset.cpus", "2-3\n");
    let mut b = spec("machine/b");
    b.cpuset_cpus = Some("3".into());
    cgroups.create(&b).unwrap();
    assert_eq!(fake.writes_to("machine/b/cpuset.cpus"), ["3"]);
    assert!(fake.writes_to("machine/b/cpuset.mems").is_empty());
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/b/cpuset.mems"),
        "0\n"
    );
    assert!(fake.writes_to("machine/cpuset.cpus").is_empty());
}

#[test]
fn a_partition_made_before_gets_clone_children_at_the_next_start() {
    let (cgroups, fake) = host(Host::Hybrid);
    fs::create_dir_all(fake.path("sys/fs/cgroup/cpuset/machine")).unwrap();
    fake.put("sys/fs/cgroup/cpuset/machine/cgroup.clone_children", "0");
    fake.put("sys/fs/cgroup/cpuset/machine/cpuset.cpus", "1\n");
    fake.put("sys/fs/cgroup/cpuset/machine/cpuset.mems", "0\n");
    cgroups.create(&pinned("machine/a")).unwrap();
    assert_eq!(fake.writes_to("machine/a/cpuset.cpus"), ["1"]);
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/cgroup.clone_children"),
        "1\n"
    );
    fake.clear_log();
    cgroups.create(&pinned("machine/b")).unwrap();
    assert!(fake.writes_to("machine/b/cpuset.cpus").is_empty());
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/b/cpuset.cpus"),
        "1\n"
    );
}

#[test]
fn a_partition_another_start_has_just_made_is_filled_before_the_leaf() {
    // Two first starts in a fresh partition: the other one made `machine`
    // (and set clone_children) but has not written its values yet, so our
    // leaf is born empty too; init could not join it (ENOSPC).
    let (cgroups, fake) = host(Host::Hybrid);
    fs::create_dir_all(fake.path("sys/fs/cgroup/cpuset/machine")).unwrap();
    fake.put("sys/fs/cgroup/cpuset/machine/cgroup.clone_children", "1\n");
    fake.put("sys/fs/cgroup/cpuset/machine/cpuset.cpus", "");
    fake.put("sys/fs/cgroup/cpuset/machine/cpuset.mems", "");
    fake.put("sys/fs/cgroup/cpuset/machine/cgroup.procs", "");
    cgroups.create(&pinned("machine/a")).unwrap();
    for level in ["machine", "machine/a"] {
        let dir = format!("sys/fs/cgroup/cpuset/{level}");
        assert_eq!(fake.get(&format!("{dir}/cpuset.cpus")), "0-3\n", "{level}");
        assert_eq!(fake.get(&format!("{dir}/cpuset.mems")), "0\n", "{level}");
    }
}

#[test]
fn v2_create_applies_every_limit_to_v2_files() {
    let (cgroups, fake) = host(Host::V2);
    let cg = cgroups.create(&full_spec()).unwrap();
    let leaf = |file: &str| format!("sys/fs/cgroup/machine/lxvirt-web/{file}");

    assert_eq!(fake.get(&leaf("memory.max")), "536870912\n");
    assert_eq!(fake.get(&leaf("memory.low")), "268435456\n");
    // cgroup2 limits swap alone: memory+swap minus memory.
    assert_eq!(fake.get(&leaf("memory.swap.max")), "268435456\n");
    assert_eq!(fake.get(&leaf("cpu.weight")), "79\n");
    assert_eq!(fake.get(&leaf("cpu.max")), "25000 50000\n");
    assert_eq!(fake.get(&leaf("cpuset.cpus")), "0-1\n");
    assert_eq!(fake.get(&leaf("cpuset.mems")), "0\n");
    assert_eq!(fake.writes_to("io.weight"), ["default 500", "8:0 300"]);
    assert_eq!(fake.writes_to("io.max"), ["8:0 rbps=1000000 wiops=200"]);
    assert_eq!(fake.get(&leaf("pids.max")), "100\n");
    // Controllers are enabled from the root down to the partition.
    let enable = "+cpu +cpuset +memory +io +pids";
    assert_eq!(
        fake.writes_to("sys/fs/cgroup/cgroup.subtree_control"),
        [enable]
    );
    assert_eq!(
        fake.writes_to("sys/fs/cgroup/machine/cgroup.subtree_control"),
        [enable]
    );
    assert!(
        fake.writes_to("lxvirt-web/cgroup.subtree_control")
            .is_empty()
    );
    // The device allow-list: a program on the container's directory.
    assert!(cg.devices_enforced());
    assert!(fake.writes_to("devices.allow").is_empty());
    let programs = fake.device_programs();
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0].0, "sys/fs/cgroup/machine/lxvirt-web");
    assert_eq!(programs[0].1, bpf_devices::compile(&full_spec().devices));
    assert_eq!(cg.paths(), [fake.path("sys/fs/cgroup/machine/lxvirt-web")]);
}

#[test]
fn v2_cpu_max_formats() {
    let cases = [
        (Some(100_000), Some(-1), "max 100000"),
        (None, Some(20_000), "20000 100000"),
        (Some(10_000), None, "max 10000"),
        (Some(10_000), Some(5_000), "5000 10000"),
    ];
    for (i, (period, quota, expected)) in cases.into_iter().enumerate() {
        let (cgroups, fake) = host(Host::V2);
        let mut s = spec(&format!("c{i}"));
        s.cpu_period = period;
        s.cpu_quota = quota;
        cgroups.create(&s).unwrap();
        assert_eq!(
            fake.writes_to("cpu.max"),
            [expected],
            "{period:?} {quota:?}"
        );
    }
}

#[test]
fn v1_unlimited_quota_is_minus_one() {
    let (cgroups, fake) = host(Host::Hybrid);
    let mut s = spec("c");
    s.cpu_quota = Some(-1);
    cgroups.create(&s).unwrap();
    assert_eq!(fake.writes_to("cpu.cfs_quota_us"), ["-1"]);
    assert!(fake.writes_to("cpu.cfs_period_us").is_empty());
}

#[test]
fn co_mounted_cpu_and_cpuacct_share_one_directory() {
    let (cgroups, fake) = host(Host::V1NoFreezer);
    let mut s = spec("c");
    s.cpu_shares = Some(512);
    let cg = cgroups.create(&s).unwrap();
    assert_eq!(fake.get("sys/fs/cgroup/cpu,cpuacct/c/cpu.shares"), "512\n");
    assert_eq!(cg.stats().cpu_time_ns, Some(123_456_789));
    assert_eq!(cg.paths().len(), 6);
}

// ------------------------------------------------------------------ errors

#[test]
fn a_missing_interface_file_names_the_element_and_the_fix_and_cleans_up() {
    let (cgroups, fake) = host(Host::Hybrid);
    fs::create_dir(fake.path("sys/fs/cgroup/memory/machine")).unwrap();
    let hierarchies = cgroups.hierarchies().clone();
    drop(cgroups);
    // As if booted without swapaccount=1.
    let mut kernel = Arc::try_unwrap(fake.0).unwrap();
    for (mount, template) in &mut kernel.templates {
        if mount.ends_with("memory") {
            template.retain(|(name, _)| *name != "memory.memsw.limit_in_bytes");
        }
    }
    let fake = FakeFs(Arc::new(kernel));
    let cgroups = Cgroups::with_fs(hierarchies, fake.clone());
    let err = cgroups.create(&full_spec()).unwrap_err();
    assert!(matches!(err, CgroupError::Unsupported { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot apply <memtune><swap_hard_limit>: memory.memsw.limit_in_bytes is missing (boot with swapaccount=1)"
    );
    assert_nothing_left(&fake);
    // The partition that existed before stays.
    assert!(fake.exists("sys/fs/cgroup/memory/machine"));
}

/// No container directory remains in any hierarchy, and every partition
/// directory created by the failed attempt is gone too.
fn assert_nothing_left(fake: &FakeFs) {
    let mut made = Vec::new();
    let mut removed = Vec::new();
    for op in fake.log() {
        match op {
            Op::Mkdir(p) => made.push(p),
            Op::Rmdir(p) => removed.push(p),
            _ => {}
        }
    }
    assert!(!made.is_empty());
    made.reverse();
    assert_eq!(made, removed, "removed deepest first, all of them");
    for p in made {
        assert!(!fake.exists(&p), "{p} left behind");
    }
}

#[test]
fn a_failing_write_removes_everything_created() {
    let (cgroups, fake) = host(Host::Hybrid);
    fake.fail_writes_to("pids.max");
    let err = cgroups.create(&full_spec()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::Refused { path, value, element, .. }
            if path.ends_with("pids/machine/lxvirt-web/pids.max") && value == "100" && *element == element::PIDS),
        "{err:?}"
    );
    assert_nothing_left(&fake);
    assert!(!fake.exists("sys/fs/cgroup/memory/machine"));
}

/// On cgroup2 a disk's weight is refused (EOPNOTSUPP) unless bfq or
/// io.cost runs for the disk: the error names the element and both ways.
#[test]
fn a_refused_device_weight_names_the_element_and_what_to_enable() {
    let (cgroups, fake) = host(Host::V2);
    fake.fail_writes_to("io.weight");
    let spec = CgroupSpec {
        blkio_weight: None,
        ..full_spec()
    };
    let err = cgroups.create(&spec).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("cannot apply <blkiotune><device>: writing '8:0 300' to ")
            && message.contains("bfq")
            && message.contains("io.cost.qos"),
        "{message}"
    );
    assert_nothing_left(&fake);
}

#[test]
fn an_existing_leaf_in_one_hierarchy_fails_and_removes_everything_created() {
    let (cgroups, fake) = host(Host::Hybrid);
    // A plain file where the freezer directory would go.
    fs::create_dir(fake.path("sys/fs/cgroup/freezer/machine")).unwrap();
    fake.put("sys/fs/cgroup/freezer/machine/lxvirt-web", "");
    let err = cgroups.create(&full_spec()).unwrap_err();
    assert!(matches!(err, CgroupError::Exists { .. }), "{err:?}");
    assert_nothing_left(&fake);
}

#[test]
fn an_absent_controller_fails_before_any_directory_is_made() {
    let (cgroups, fake) = host(Host::V1NoFreezer);
    let mut h = cgroups.hierarchies().clone();
    h.v1.retain(|v| !v.known.contains(Controller::Pids));
    let cgroups = Cgroups::with_fs(h, fake.clone());
    let mut s = spec("c");
    s.pids_max = Some(10);
    let err = cgroups.create(&s).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "cannot apply the task limit (pids.max): this host has no pids controller"
        ),
        "{err}"
    );
    assert!(fake.log().is_empty());
}

#[test]
fn the_hybrid_unified_hierarchy_does_not_handle_v1_controllers() {
    // memory offered by the unified root but bound to v1: v1 applies it.
    let (cgroups, fake) = host(Host::Hybrid);
    let mut h = cgroups.hierarchies().clone();
    h.unified.as_mut().unwrap().controllers = vec!["memory".into()];
    let cgroups = Cgroups::with_fs(h, fake.clone());
    let mut s = spec("c");
    s.memory_limit = Some(1 << 20);
    cgroups.create(&s).unwrap();
    assert_eq!(fake.writes_to("memory.limit_in_bytes"), ["1048576"]);
    assert!(fake.writes_to("cgroup.subtree_control").is_empty());
}

#[test]
fn an_existing_cgroup_is_refused_and_left_alone() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    fake.clear_log();
    let err = cgroups.create(&spec("machine/web")).unwrap_err();
    assert!(matches!(err, CgroupError::Exists { .. }), "{err:?}");
    assert!(err.to_string().contains("already exists"));
    assert!(fake.log().iter().all(|op| !matches!(op, Op::Rmdir(_))));
    assert!(cg.exists());
}

#[test]
fn inconsistent_memory_limits_are_refused() {
    let (cgroups, fake) = host(Host::Hybrid);
    let mut s = spec("c");
    s.memory_swap_limit = Some(100);
    let err = cgroups.create(&s).unwrap_err();
    assert!(err.to_string().contains("needs <hard_limit>"), "{err}");
    s.memory_limit = Some(200);
    let err = cgroups.create(&s).unwrap_err();
    assert!(
        err.to_string().contains("must not be below <hard_limit>"),
        "{err}"
    );
    assert!(fake.log().is_empty());
}

#[test]
fn bad_device_rules_are_refused() {
    let (cgroups, _) = host(Host::Hybrid);
    for (kind, access) in [('x', "r"), ('c', ""), ('b', "rx")] {
        let mut s = spec("c");
        s.devices = vec![DeviceRule {
            kind,
            major: None,
            minor: None,
            access: access.into(),
        }];
        let err = cgroups.create(&s).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidSpec { .. }), "{err:?}");
    }
    let mut s = spec("c");
    s.devices = vec![DeviceRule {
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".into(),
    }];
    let (cgroups, fake) = host(Host::Hybrid);
    cgroups.create(&s).unwrap();
    assert_eq!(fake.writes_to("devices.allow"), ["a"]);
}

#[test]
fn an_empty_device_list_denies_every_device() {
    let (cgroups, fake) = host(Host::Hybrid);
    cgroups.create(&spec("c")).unwrap();
    assert_eq!(fake.writes_to("devices.deny"), ["a"]);
    assert!(fake.writes_to("devices.allow").is_empty());
}

#[test]
fn paths_must_stay_below_the_root() {
    let (cgroups, _) = host(Host::Hybrid);
    for bad in ["", "/", "../etc", "machine/../../x"] {
        let err = cgroups.open(Path::new(bad)).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidPath { .. }), "{bad}");
    }
    let cg = cgroups.open(Path::new("/machine/./web")).unwrap();
    assert_eq!(cg.path(), Path::new("machine/web"));
}

// --------------------------------------------------------- the live cgroup

#[test]
fn processes_go_into_every_hierarchy_and_are_listed_with_sub_cgroups() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    cg.add_process(4242).unwrap();
    let files = cg.procs_files();
    assert_eq!(files.len(), 9);
    for path in &files {
        assert_eq!(fs::read_to_string(path).unwrap(), "4242\n", "{path:?}");
    }
    // Unpinned: the cpuset partition's, not a cgroup of its own.
    assert!(files.contains(&fake.path("sys/fs/cgroup/cpuset/machine/cgroup.procs")));
    // A sub-cgroup the container made itself.
    fake.put(
        "sys/fs/cgroup/unified/machine/web/cgroup.events",
        "populated 1\nfrozen 0\n",
    );
    fs::create_dir(fake.path("sys/fs/cgroup/unified/machine/web/init.scope")).unwrap();
    fake.put(
        "sys/fs/cgroup/unified/machine/web/init.scope/cgroup.procs",
        "77\n78\n",
    );
    assert_eq!(cg.procs().unwrap(), [4242, 77, 78]);
    assert!(!cg.is_empty().unwrap());
}

#[test]
fn a_gone_cgroup_has_no_processes() {
    let (cgroups, _) = host(Host::Hybrid);
    let cg = cgroups.open(Path::new("machine/none")).unwrap();
    assert!(!cg.exists());
    assert!(cg.procs().unwrap().is_empty());
    assert!(cg.is_empty().unwrap());
}

#[test]
fn chown_hands_over_the_directories_and_the_delegation_files_only() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    fake.clear_log();
    cg.chown(100_000, 100_000).unwrap();
    let chowned: Vec<String> = fake
        .log()
        .into_iter()
        .filter_map(|op| match op {
            Op::Chown(p, 100_000, 100_000) => Some(p),
            _ => None,
        })
        .collect();
    assert!(chowned.contains(&"sys/fs/cgroup/memory/machine/web".to_owned()));
    assert!(chowned.contains(&"sys/fs/cgroup/memory/machine/web/tasks".to_owned()));
    assert!(
        chowned.contains(&"sys/fs/cgroup/unified/machine/web/cgroup.subtree_control".to_owned())
    );
    assert!(chowned.iter().all(|p| !p.contains("limit")));
    assert!(chowned.iter().all(|p| !p.ends_with("machine")));
    // 7 v1 directories with procs and tasks (cpuset has none: the
    // container is not pinned), the unified one with 3 files: no call for
    // a file the version does not have, or a directory not made.
    assert!(chowned.iter().all(|p| !p.contains("/cpuset/")));
    assert_eq!(chowned.len(), 7 * 3 + 4, "{chowned:?}");
}

#[test]
fn v1_freezer_protocol() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    assert!(!cg.is_frozen().unwrap());
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    assert_eq!(fake.writes_to("freezer.state"), ["FROZEN"]);
    // The v1 freezer is preferred to cgroup.freeze.
    assert!(fake.writes_to("cgroup.freeze").is_empty());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    assert_eq!(fake.writes_to("freezer.state"), ["FROZEN", "THAWED"]);
}

#[test]
fn a_freeze_that_does_not_complete_times_out_and_thaws() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups
        .create(&spec("machine/web"))
        .unwrap()
        .with_freeze_timeout(Duration::from_millis(30));
    *fake.0.stuck_freezer.lock().unwrap() = true;
    let err = cg.freeze().unwrap_err();
    assert!(matches!(err, CgroupError::FreezeTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("within 30 ms"), "{err}");
    assert_eq!(fake.writes_to("freezer.state"), ["FROZEN", "THAWED"]);
}

#[test]
fn v2_freezer_protocol() {
    let (cgroups, fake) = host(Host::V2);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    assert_eq!(fake.writes_to("cgroup.freeze"), ["1"]);
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    assert_eq!(fake.writes_to("cgroup.freeze"), ["1", "0"]);
}

#[test]
fn no_freezer_is_a_clear_error() {
    let (cgroups, _) = host(Host::V1NoFreezer);
    let cg = cgroups.create(&spec("c")).unwrap();
    let err = cg.freeze().unwrap_err();
    assert!(matches!(err, CgroupError::NoFreezer));
    assert!(err.to_string().contains("no freezer controller"));
    assert!(matches!(cg.thaw(), Err(CgroupError::NoFreezer)));
    assert!(matches!(cg.is_frozen(), Err(CgroupError::NoFreezer)));

    // A cgroup2 without cgroup.freeze (before 5.2) has none either.
    let (cgroups, fake) = host(Host::V2);
    let cg = cgroups.create(&spec("c")).unwrap();
    fs::remove_file(fake.path("sys/fs/cgroup/c/cgroup.freeze")).unwrap();
    fake.put("sys/fs/cgroup/c/cgroup.events", "populated 0\n");
    assert!(matches!(cg.freeze(), Err(CgroupError::NoFreezer)));
    assert!(matches!(cg.is_frozen(), Err(CgroupError::NoFreezer)));
}

#[test]
fn kill_all_uses_cgroup_kill_where_it_exists() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    cg.add_process(4242).unwrap();
    fake.clear_log();
    cg.kill_all().unwrap();
    // Then a thaw: tasks frozen by the v1 freezer only die once thawed.
    assert_eq!(
        fake.log(),
        [
            Op::Write(
                "sys/fs/cgroup/unified/machine/web/cgroup.kill".into(),
                "1".into()
            ),
            Op::Write(
                "sys/fs/cgroup/freezer/machine/web/freezer.state".into(),
                "THAWED".into()
            )
        ]
    );
}

#[test]
fn kill_all_without_cgroup_kill_freezes_kills_and_thaws() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    cg.add_process(10).unwrap();
    fs::remove_file(fake.path("sys/fs/cgroup/unified/machine/web/cgroup.kill")).unwrap();
    fs::create_dir(fake.path("sys/fs/cgroup/unified/machine/web/sub")).unwrap();
    fake.put("sys/fs/cgroup/unified/machine/web/sub/cgroup.procs", "11\n");
    fake.clear_log();
    cg.kill_all().unwrap();
    let ops: Vec<Op> = fake
        .log()
        .into_iter()
        .filter(|op| {
            matches!(op, Op::Kill(_))
                || matches!(op, Op::Write(p, _) if p.ends_with("freezer.state"))
        })
        .collect();
    let state = |v: &str| {
        Op::Write(
            "sys/fs/cgroup/freezer/machine/web/freezer.state".into(),
            v.into(),
        )
    };
    assert_eq!(
        ops,
        [state("FROZEN"), Op::Kill(10), Op::Kill(11), state("THAWED")]
    );
    assert!(cg.procs().unwrap().is_empty());
}

#[test]
fn kill_all_without_any_freezer_kills_in_rounds() {
    let (cgroups, fake) = host(Host::V1NoFreezer);
    let cg = cgroups.create(&spec("c")).unwrap();
    cg.add_process(10).unwrap();
    cg.kill_all().unwrap();
    assert!(fake.log().contains(&Op::Kill(10)));
    assert!(cg.procs().unwrap().is_empty());
}

#[test]
fn remove_takes_sub_cgroups_keeps_the_partition_and_is_idempotent() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    fs::create_dir(fake.path("sys/fs/cgroup/unified/machine/web/init.scope")).unwrap();
    fake.put(
        "sys/fs/cgroup/unified/machine/web/init.scope/cgroup.procs",
        "",
    );
    cg.remove().unwrap();
    for path in cg.paths() {
        assert!(!path.exists(), "{}", path.display());
        assert!(path.parent().unwrap().exists());
    }
    cg.remove().unwrap();
}

#[test]
fn remove_lists_a_cgroup_only_when_its_rmdir_is_refused() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    let nested = fake.path("sys/fs/cgroup/memory/machine/web/payload");
    fs::create_dir(&nested).unwrap();
    fs::write(nested.join("cgroup.procs"), "").unwrap();
    cg.remove().unwrap();
    let listed: Vec<String> = fake
        .log()
        .into_iter()
        .filter_map(|op| match op {
            Op::List(dir) => Some(dir),
            _ => None,
        })
        .collect();
    assert_eq!(listed, ["sys/fs/cgroup/memory/machine/web"]);
    assert!(!nested.exists());
}

#[test]
fn remove_with_processes_left_in_a_sub_cgroup_is_busy_and_names_it() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    let nested = fake.path("sys/fs/cgroup/pids/machine/web/payload");
    fs::create_dir(&nested).unwrap();
    fs::write(nested.join("cgroup.procs"), "10\n").unwrap();
    let err = cg.remove().unwrap_err();
    assert!(
        matches!(&err, CgroupError::Busy { path } if path.ends_with("web/payload")),
        "{err:?}"
    );
}

#[test]
fn remove_with_processes_left_is_busy() {
    let (cgroups, _) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    cg.add_process(10).unwrap();
    let err = cg.remove().unwrap_err();
    assert!(matches!(err, CgroupError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("still has processes"));
}

#[test]
fn stats_on_v1() {
    let (cgroups, _) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    assert_eq!(
        cg.stats(),
        CgroupStats {
            memory_bytes: Some(4096),
            cpu_time_ns: Some(123_456_789),
            pids: Some(3),
            details: vec![
                ("memory.anon", 8192),
                ("memory.file", 4096),
                ("memory.shmem", 0),
                ("memory.swap", 512),
                ("memory.peak", 65536),
                ("cpu.user", 120_000_000),
                ("cpu.system", 30_000_000),
                ("cpu.throttled.periods", 2),
                ("cpu.throttled.time", 777),
                ("block.rd.bytes", 101),
                ("block.wr.bytes", 52),
                ("block.rd.reqs", 3),
                ("block.wr.reqs", 4),
            ],
        }
    );
}

#[test]
fn stats_on_v2() {
    let (cgroups, _) = host(Host::V2);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    assert_eq!(
        cg.stats(),
        CgroupStats {
            memory_bytes: Some(8192),
            cpu_time_ns: Some(2_500_000),
            pids: Some(1),
            details: vec![
                ("memory.anon", 100),
                ("memory.file", 200),
                ("memory.shmem", 7),
                ("memory.swap", 0),
                ("cpu.user", 2_000_000),
                ("cpu.system", 500_000),
                ("cpu.throttled.periods", 1),
                ("cpu.throttled.time", 4000),
                ("block.rd.bytes", 15),
                ("block.wr.bytes", 20),
                ("block.rd.reqs", 2),
                ("block.wr.reqs", 2),
            ],
        }
    );
}

#[test]
fn stats_of_a_gone_cgroup_are_empty() {
    let (cgroups, _) = host(Host::V2);
    let cg = cgroups.open(Path::new("gone")).unwrap();
    assert_eq!(cg.stats(), CgroupStats::default());
}

#[test]
fn open_finds_the_same_directories_as_create() {
    let (cgroups, _) = host(Host::Hybrid);
    let created = cgroups.create(&spec("machine/web")).unwrap();
    let opened = cgroups.open(Path::new("/machine/web")).unwrap();
    assert_eq!(created.paths(), opened.paths());
    assert!(opened.devices_enforced());
    assert!(opened.exists());
}

#[test]
fn hybrid_with_v1_devices_attaches_no_program() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&full_spec()).unwrap();
    assert!(cg.devices_enforced());
    assert!(fake.device_programs().is_empty());
    assert_eq!(fake.writes_to("devices.deny"), ["a"]);
}

#[test]
fn hybrid_without_v1_devices_attaches_the_program_to_the_unified_directory() {
    let (cgroups, fake) = host(Host::HybridNoDevices);
    let s = CgroupSpec {
        memory_limit: Some(1 << 30),
        pids_max: Some(100),
        devices: full_spec().devices,
        ..spec("machine/lxvirt-web")
    };
    let cg = cgroups.create(&s).unwrap();
    assert_eq!(fake.writes_to("pids.max"), ["100"]);
    assert!(cg.devices_enforced());
    assert!(fake.writes_to("devices.allow").is_empty());
    let programs = fake.device_programs();
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0].0, "sys/fs/cgroup/unified/machine/lxvirt-web");
    assert_eq!(programs[0].1, bpf_devices::compile(&full_spec().devices));
    // After everything else, before any process can move in.
    assert!(matches!(fake.log().last(), Some(Op::AttachDevices(..))));
}

#[test]
fn a_running_containers_device_list_changes_by_allow_and_deny_or_a_new_program() {
    let rule = |access: &str| DeviceRule {
        kind: 'b',
        major: Some(7),
        minor: Some(3),
        access: access.into(),
    };
    // v1: allow in the cgroup and the cgroups below it, deny in the cgroup.
    let (cgroups, fake) = host(Host::Hybrid);
    assert!(!cgroups.devices_by_program());
    cgroups.create(&full_spec()).unwrap();
    let path = full_spec().path;
    let below = fake
        .path("sys/fs/cgroup/devices")
        .join(path.strip_prefix("/").unwrap())
        .join("init.scope");
    std::fs::create_dir(&below).unwrap();
    std::fs::write(below.join("devices.allow"), "").unwrap();
    cgroups
        .change_devices(&path, &[rule("rwm")], &[], None)
        .unwrap();
    assert_eq!(
        fake.writes_to("devices.allow")
            .iter()
            .filter(|w| *w == "b 7:3 rwm")
            .count(),
        2
    );
    cgroups
        .change_devices(&path, &[], &[rule("w")], None)
        .unwrap();
    assert_eq!(fake.writes_to("devices.deny").last().unwrap(), "b 7:3 w");
    assert!(
        fake.log()
            .iter()
            .all(|op| !matches!(op, Op::ReplaceDevices(..)))
    );

    // cgroup2: the program is made anew from the whole list, which it needs.
    let (cgroups, fake) = host(Host::V2);
    assert!(cgroups.devices_by_program());
    cgroups.create(&spec("machine/web")).unwrap();
    let all = vec![rule("rwm")];
    cgroups
        .change_devices(Path::new("/machine/web"), &[rule("rwm")], &[], Some(&all))
        .unwrap();
    assert!(matches!(
        fake.log().last(),
        Some(Op::ReplaceDevices(dir, program))
            if dir == "sys/fs/cgroup/machine/web" && *program == bpf_devices::compile(&all)
    ));
    let unknown = cgroups
        .change_devices(Path::new("/machine/web"), &[rule("rwm")], &[], None)
        .unwrap_err();
    assert!(unknown.to_string().contains("file-backed"), "{unknown}");
}

#[test]
fn pure_v2_attaches_the_program_of_an_empty_list_too() {
    let (cgroups, fake) = host(Host::V2);
    cgroups.create(&spec("machine/web")).unwrap();
    let programs = fake.device_programs();
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0].1, bpf_devices::compile(&[]));
}

#[test]
fn a_kernel_refusing_the_device_program_fails_the_create_and_leaves_nothing() {
    for (errno, hint) in [
        (nix::libc::EPERM, "CAP_SYS_ADMIN"),
        (nix::libc::EINVAL, "CONFIG_CGROUP_BPF"),
    ] {
        let (cgroups, fake) = host(Host::V2);
        *fake.0.fail_attach.lock().unwrap() = Some(errno);
        let err = cgroups.create(&spec("machine/web")).unwrap_err();
        let CgroupError::DeviceProgram { path, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &fake.path("sys/fs/cgroup/machine/web"));
        let message = err.to_string();
        assert!(
            message.starts_with("cannot enforce the device allow-list on cgroup /")
                && message.contains("machine/web")
                && message.contains(hint),
            "{message}"
        );
        assert!(!fake.exists("sys/fs/cgroup/machine/web"));
        assert!(!fake.exists("sys/fs/cgroup/machine"));
    }
}

#[test]
fn open_asks_the_kernel_whether_cgroup2_enforces_the_devices() {
    let enforced = |cgroups: &Cgroups<FakeFs>, path: &str| {
        cgroups.open(Path::new(path)).unwrap().devices_enforced()
    };
    let (cgroups, fake) = host(Host::V2);
    cgroups.create(&spec("machine/web")).unwrap();
    assert!(enforced(&cgroups, "machine/web"));
    // A cgroup without a program (made by an older lxvirtd), and one that
    // is gone.
    fs::remove_file(fake.path("sys/fs/cgroup/machine/web").join(DEVICE_PROGRAM)).unwrap();
    assert!(!enforced(&cgroups, "machine/web"));
    assert!(!enforced(&cgroups, "machine/gone"));
    // With a v1 devices hierarchy, it decides: no question asked.
    let (cgroups, _) = host(Host::HybridNoDevices);
    assert!(!enforced(&cgroups, "machine/gone"));
    let (cgroups, _) = host(Host::Hybrid);
    assert!(enforced(&cgroups, "machine/gone"));
}

#[test]
fn a_v1_cpuset_cgroup_is_emptied_and_stops_balancing_before_its_removal() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&pinned("machine/web")).unwrap();
    fs::create_dir(fake.path("sys/fs/cgroup/cpuset/machine/web/payload")).unwrap();
    for file in ["cgroup.procs", "cpuset.cpus", "cpuset.sched_load_balance"] {
        fake.put(
            &format!("sys/fs/cgroup/cpuset/machine/web/payload/{file}"),
            "",
        );
    }
    fake.clear_log();
    cg.remove().unwrap();
    let log = fake.log();
    let at = |op: &Op| {
        log.iter()
            .position(|o| o == op)
            .unwrap_or_else(|| panic!("no {op:?}: {log:#?}"))
    };
    for dir in [
        "sys/fs/cgroup/cpuset/machine/web/payload",
        "sys/fs/cgroup/cpuset/machine/web",
    ] {
        // CPUs first (no scheduling-domain rebuild when balancing stops),
        // then the flag, then the directory; the child before its parent.
        let cpus = at(&Op::Write(format!("{dir}/cpuset.cpus"), "\n".into()));
        let balance = at(&Op::Write(
            format!("{dir}/cpuset.sched_load_balance"),
            "0".into(),
        ));
        let rmdir = at(&Op::Rmdir(dir.into()));
        assert!(cpus < balance && balance < rmdir, "{dir}: {log:#?}");
    }
    // The parent is tried first (its rmdir is refused while the child is
    // there) and retired again once its child is gone.
    let parent_cpus = Op::Write(
        "sys/fs/cgroup/cpuset/machine/web/cpuset.cpus".into(),
        "\n".into(),
    );
    let last_parent_cpus = log.iter().rposition(|o| *o == parent_cpus).unwrap();
    let child_rmdir = at(&Op::Rmdir(
        "sys/fs/cgroup/cpuset/machine/web/payload".into(),
    ));
    let parent_rmdir = at(&Op::Rmdir("sys/fs/cgroup/cpuset/machine/web".into()));
    assert!(
        child_rmdir < last_parent_cpus && last_parent_cpus < parent_rmdir,
        "{log:#?}"
    );
    // Nothing of the kind in the other hierarchies.
    assert!(!log.iter().any(|op| matches!(op, Op::Write(p, _) if p.contains("cpuset.") && !p.starts_with("sys/fs/cgroup/cpuset/"))));
}

#[test]
fn an_unpinned_container_stays_in_the_cpuset_partition() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    // Every other hierarchy has the container's directory; cpuset only
    // the partition, filled so that a process may join it.
    assert!(fake.exists("sys/fs/cgroup/memory/machine/web"));
    assert!(!fake.exists("sys/fs/cgroup/cpuset/machine/web"));
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/cpuset.cpus"),
        "0-3\n"
    );
    assert_eq!(fake.get("sys/fs/cgroup/cpuset/machine/cpuset.mems"), "0\n");
    cg.add_process(4242).unwrap();
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/cgroup.procs"),
        "4242\n"
    );
    // Opened later (a restarted daemon, `lxvirt enter`): the same.
    let opened = cgroups.open(Path::new("machine/web")).unwrap();
    opened.add_process(4243).unwrap();
    assert_eq!(
        fake.get("sys/fs/cgroup/cpuset/machine/cgroup.procs"),
        "4242\n4243\n"
    );
    assert!(
        opened
            .procs_files()
            .contains(&fake.path("sys/fs/cgroup/cpuset/machine/cgroup.procs"))
    );
    // Its removal leaves the partition and writes no cpuset file.
    for pid in [4242, 4243] {
        fake.kill(pid).unwrap();
    }
    fake.clear_log();
    cg.remove().unwrap();
    assert!(!fake.exists("sys/fs/cgroup/memory/machine/web"));
    assert!(fake.exists("sys/fs/cgroup/cpuset/machine"));
    assert!(
        fake.writes_to("cpuset.cpus").is_empty(),
        "{:#?}",
        fake.log()
    );
}

#[test]
fn pinning_a_running_container_makes_its_cpuset_cgroup_and_moves_it_in() {
    let (cgroups, fake) = host(Host::Hybrid);
    let old = spec("machine/web");
    let cg = cgroups.create(&old).unwrap();
    cg.add_process(4242).unwrap();
    let new = CgroupSpec {
        cpuset_cpus: Some("1".into()),
        ..old.clone()
    };
    cgroups.retune(&old, &new).unwrap();
    let leaf = |file: &str| fake.get(&format!("sys/fs/cgroup/cpuset/machine/web/{file}"));
    assert_eq!(leaf("cpuset.cpus"), "1\n");
    assert_eq!(leaf("cpuset.mems"), "0\n");
    assert_eq!(leaf("cgroup.procs"), "4242\n");
    // A process entering the container now joins the pinned cgroup.
    cgroups
        .open(Path::new("machine/web"))
        .unwrap()
        .add_process(77)
        .unwrap();
    assert_eq!(leaf("cgroup.procs"), "4242\n77\n");
    // And the cgroup made at the start removes it at the end.
    for pid in [4242, 77] {
        fake.kill(pid).unwrap();
    }
    cg.remove().unwrap();
    assert!(!fake.exists("sys/fs/cgroup/cpuset/machine/web"));
    assert!(!fake.exists("sys/fs/cgroup/memory/machine/web"));
}

#[test]
fn a_refused_pinning_of_a_running_container_leaves_it_where_it_was() {
    let (cgroups, fake) = host(Host::Hybrid);
    let old = spec("machine/web");
    let cg = cgroups.create(&old).unwrap();
    cg.add_process(4242).unwrap();
    fake.fail_writes_to("cpuset.cpus");
    let new = CgroupSpec {
        cpuset_cpus: Some("1".into()),
        ..old.clone()
    };
    let err = cgroups.retune(&old, &new).unwrap_err();
    assert!(err.to_string().contains("<vcpu cpuset>"), "{err}");
    assert!(!fake.exists("sys/fs/cgroup/cpuset/machine/web"));
    assert!(
        fake.get("sys/fs/cgroup/cpuset/machine/cgroup.procs")
            .contains("4242")
    );
}

/// In a scope systemd delegated, the container's cgroup goes below it and
/// nothing above it is written: the root and the slice are systemd's.
#[test]
fn v2_delegated_subtree_writes_nothing_above_it() {
    let (cgroups, fake) = host(Host::V2);
    let scope = "machine.slice/machine-lxvirt\\x2dweb.scope";
    for level in [
        "sys/fs/cgroup/machine.slice",
        &format!("sys/fs/cgroup/{scope}"),
    ] {
        fs::create_dir_all(fake.path(level)).unwrap();
        fake.put(&format!("{level}/cgroup.subtree_control"), "");
        fake.put(&format!("{level}/cgroup.procs"), "");
    }
    cgroups.enter_supervisor(Path::new(scope), 0).unwrap();
    // A VM's placeholder is moved there by pid.
    cgroups.enter_supervisor(Path::new(scope), 4242).unwrap();
    assert_eq!(
        fake.writes_to(&format!("{scope}/supervisor/cgroup.procs")),
        ["0", "4242"]
    );

    let spec = CgroupSpec {
        path: Path::new(scope).join(PAYLOAD),
        delegated: Some(scope.into()),
        pids_max: Some(100),
        ..CgroupSpec::default()
    };
    let cg = cgroups.create(&spec).unwrap();
    assert!(
        fake.writes_to("sys/fs/cgroup/cgroup.subtree_control")
            .is_empty()
    );
    assert!(
        fake.writes_to("machine.slice/cgroup.subtree_control")
            .is_empty()
    );
    assert_eq!(
        fake.writes_to(&format!("{scope}/cgroup.subtree_control")),
        ["+cpu +cpuset +memory +io +pids"]
    );
    assert_eq!(
        fake.get(&format!("sys/fs/cgroup/{scope}/payload/pids.max")),
        "100\n"
    );
    assert_eq!(
        cg.paths(),
        [fake.path(&format!("sys/fs/cgroup/{scope}/payload"))]
    );
}

/// A running domain's tuning writes only what changes; a refused value
/// puts back those written before it; a limit removed is refused first.
#[test]
fn retune_writes_the_changes_and_undoes_them_on_a_refusal() {
    let (cgroups, fake) = host(Host::V2);
    let mut old = spec("machine/web");
    old.memory_limit = Some(1 << 20);
    old.cpu_shares = Some(1024);
    old.pids_max = Some(100);
    cgroups.create(&old).unwrap();
    let mut new = old.clone();
    new.memory_limit = Some(2 << 20);
    cgroups.retune(&old, &new).unwrap();
    assert_eq!(fake.writes_to("memory.max"), ["1048576", "2097152"]);
    assert_eq!(
        fake.writes_to("cpu.weight").len(),
        1,
        "unchanged: not written"
    );

    let mut refused = new.clone();
    refused.memory_limit = Some(4 << 20);
    refused.cpu_shares = Some(512);
    fake.fail_writes_to("cpu.weight");
    let error = cgroups.retune(&new, &refused).unwrap_err();
    assert!(error.to_string().contains("<cputune><shares>"), "{error}");
    assert_eq!(
        fake.writes_to("memory.max"),
        ["1048576", "2097152", "4194304", "2097152"],
        "the memory limit written before the refusal is put back"
    );

    let mut removed = new.clone();
    removed.pids_max = None;
    let before = fake.log().len();
    let error = cgroups.retune(&new, &removed).unwrap_err();
    assert!(
        matches!(error, CgroupError::CannotRemove { element } if element.contains("pids.max")),
        "{error}"
    );
    assert_eq!(fake.log().len(), before, "nothing written");
}

#[test]
fn a_containers_end_retires_its_v1_memory_cgroup_and_removes_the_rest() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    fake.clear_log();
    let retired = cg.remove_retiring_memory().unwrap();
    assert_eq!(retired.len(), 1, "{retired:?}");
    let memory = fake.path("sys/fs/cgroup/memory/machine");
    assert_eq!(retired[0].parent(), Some(memory.as_path()));
    assert!(retired[0].is_dir());
    for path in cg.paths() {
        assert!(!path.exists(), "{}", path.display());
    }
    // The rename comes last: every other hierarchy's directory went first
    // (so no process is left in it).
    let log = fake.log();
    assert!(
        matches!(log.last(), Some(Op::Rename(from, _)) if from == "sys/fs/cgroup/memory/machine/web"),
        "{log:?}"
    );

    // The daemon finds it in the partition, and removes only retired ones.
    assert_eq!(cgroups.retired_in(Path::new("/machine")), retired);
    let other = cgroups.create(&spec("machine/db")).unwrap();
    let err = cgroups
        .remove_retired(&fake.path("sys/fs/cgroup/memory/machine/db"))
        .unwrap_err();
    assert!(matches!(err, CgroupError::NotRetired { .. }), "{err}");
    assert!(other.exists());
    cgroups.remove_retired(&retired[0]).unwrap();
    assert!(!retired[0].exists());
    assert!(cgroups.retired_in(Path::new("/machine")).is_empty());
    // Gone already: removed.
    cgroups.remove_retired(&retired[0]).unwrap();
}

#[test]
fn a_memory_cgroup_with_processes_left_is_not_retired() {
    let (cgroups, fake) = host(Host::Hybrid);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    fake.put("sys/fs/cgroup/pids/machine/web/cgroup.procs", "10\n");
    let err = cg.remove_retiring_memory().unwrap_err();
    assert!(matches!(err, CgroupError::Busy { .. }), "{err}");
    assert!(fake.path("sys/fs/cgroup/memory/machine/web").is_dir());
    assert!(cgroups.retired_in(Path::new("/machine")).is_empty());
}

#[test]
fn on_cgroup2_alone_nothing_is_retired() {
    let (cgroups, _fake) = host(Host::V2);
    let cg = cgroups.create(&spec("machine/web")).unwrap();
    assert!(cg.remove_retiring_memory().unwrap().is_empty());
    for path in cg.paths() {
        assert!(!path.exists(), "{}", path.display());
    }
}
