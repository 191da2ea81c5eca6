//! Live tuning through the CLI and a real daemon: `memtune` and
//! `schedinfo` change a running container's cgroup at once (read back from
//! the kernel's files), its live XML, and with --config its definition;
//! the change outlives a daemon restart; a value the definition cannot
//! take changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::Path;

use lxvirt_tests::{ContainerEnv, lxvirt_said};

fn run(env: &ContainerEnv, args: &[&str]) -> (bool, String) {
    lxvirt_said(&env.bus.address, args)
}

fn ok(env: &ContainerEnv, args: &[&str]) -> String {
    let (ok, out) = run(env, args);
    assert!(ok, "lxvirt {args:?}: {out}");
    out
}

/// The first of `files` below `dir` that exists, read (v1 or v2 names).
fn read_cgroup(dir: &Path, files: &[&str]) -> String {
    files
        .iter()
        .find_map(|f| fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_else(|| panic!("none of {files:?} in {}", dir.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn memtune_and_schedinfo_change_the_running_cgroup_and_the_definition() {
    let Some(mut env) = ContainerEnv::new().await else {
        return;
    };
    env.start(
        "tuned",
        "sleep 100000",
        "<memtune><hard_limit unit='MiB'>96</hard_limit></memtune>",
    )
    .await;
    let memory = env.daemon.cgroup_dir("memory", "tuned");
    let cpu = env.daemon.cgroup_dir("cpu", "tuned");
    let limit = || read_cgroup(&memory, &["memory.limit_in_bytes", "memory.max"]);
    assert_eq!(limit(), (96u64 << 20).to_string());

    // The running instance (the default while it runs) only.
    ok(&env, &["memtune", "tuned", "--hard-limit", "65536"]);
    assert_eq!(limit(), (64u64 << 20).to_string());
    let live = ok(&env, &["dumpxml", "tuned"]);
    assert!(
        live.contains("<hard_limit unit='KiB'>65536</hard_limit>"),
        "{live}"
    );
    let config = ok(&env, &["dumpxml", "--inactive", "tuned"]);
    assert!(
        config.contains("<hard_limit unit='KiB'>98304</hard_limit>"),
        "{config}"
    );
    let shown = ok(&env, &["memtune", "tuned"]);
    assert!(shown.contains("hard_limit     : 65536"), "{shown}");
    assert!(shown.contains("soft_limit     : unlimited"), "{shown}");

    // Both, the scheduler's shares.
    ok(
        &env,
        &[
            "schedinfo",
            "tuned",
            "--set",
            "cpu_shares=512",
            "--live",
            "--config",
        ],
    );
    assert_eq!(read_cgroup(&cpu, &["cpu.shares"]), "512");
    let config = ok(&env, &["dumpxml", "--inactive", "tuned"]);
    assert!(config.contains("<shares>512</shares>"), "{config}");
    let shown = ok(&env, &["schedinfo", "tuned"]);
    assert!(shown.contains("cpu_shares     : 512"), "{shown}");

    // A swap limit below the memory limit: refused, nothing changed.
    let (refused, out) = run(&env, &["memtune", "tuned", "--swap-hard-limit", "1024"]);
    assert!(!refused, "{out}");
    assert!(out.contains("swap"), "{out}");
    assert_eq!(limit(), (64u64 << 20).to_string());
    let (refused, out) = run(&env, &["schedinfo", "tuned", "--set", "cpu_shares=1"]);
    assert!(!refused && out.contains("<shares>"), "{out}");
    assert_eq!(read_cgroup(&cpu, &["cpu.shares"]), "512");
    let (refused, out) = run(&env, &["schedinfo", "tuned", "--set", "bogus=1"]);
    assert!(!refused && out.contains("unknown parameter"), "{out}");

    // The live values outlive the daemon.
    env.crash_and_restart().await.unwrap();
    let live = ok(&env, &["dumpxml", "tuned"]);
    assert!(
        live.contains("<hard_limit unit='KiB'>65536</hard_limit>"),
        "{live}"
    );
    assert_eq!(limit(), (64u64 << 20).to_string());

    // Stopped: --live is refused; the default is the definition.
    ok(&env, &["destroy", "tuned"]);
    let (refused, out) = run(
        &env,
        &["memtune", "tuned", "--hard-limit", "32768", "--live"],
    );
    assert!(!refused && out.contains("start it first"), "{out}");
    ok(&env, &["memtune", "tuned", "--hard-limit", "32768"]);
    let config = ok(&env, &["dumpxml", "--inactive", "tuned"]);
    assert!(
        config.contains("<hard_limit unit='KiB'>32768</hard_limit>"),
        "{config}"
    );
    ok(&env, &["start", "tuned"]);
    assert_eq!(limit(), (32u64 << 20).to_string());
    ok(&env, &["destroy", "tuned"]);
}

/// A loop device over a small file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(dir: &Path) -> Loop {
        let file = dir.join("disk.img");
        fs::write(&file, vec![0u8; 1 << 20]).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    fn major_minor(&self) -> String {
        use std::os::unix::fs::MetadataExt as _;
        let rdev = fs::metadata(&self.0).unwrap().rdev();
        format!(
            "{}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[tokio::test]
async fn blkiotune_throttles_a_running_container_per_device() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let disk = Loop::new(env.dir.path());
    env.start("io", "sleep 100000", "").await;
    let blkio = env.daemon.cgroup_dir("blkio", "io");
    let unified = env.daemon.cgroup_dir("unified", "io");
    // v1's throttle file, or cgroup2's io.max.
    let throttles = || {
        fs::read_to_string(blkio.join("blkio.throttle.read_bps_device"))
            .or_else(|_| fs::read_to_string(unified.join("io.max")))
            .unwrap_or_default()
    };
    let pair = format!("{},1048576", disk.0);
    ok(&env, &["blkiotune", "io", "--device-read-bytes-sec", &pair]);
    let numbers = disk.major_minor();
    let now = throttles();
    assert!(
        now.contains(&format!("{numbers} 1048576"))
            || now.contains(&format!("{numbers} rbps=1048576")),
        "{now}"
    );
    let shown = ok(&env, &["blkiotune", "io"]);
    assert!(shown.contains(&pair), "{shown}");
    let config = ok(&env, &["dumpxml", "--inactive", "io"]);
    assert!(!config.contains("<read_bytes_sec>"), "live only: {config}");

    // A limit cannot be taken off a running cgroup; the definition can.
    let off = format!("{},0", disk.0);
    let (refused, out) = run(&env, &["blkiotune", "io", "--device-read-bytes-sec", &off]);
    assert!(!refused && out.contains("cannot be removed"), "{out}");
    assert!(throttles().contains(&numbers), "{}", throttles());
    ok(
        &env,
        &[
            "blkiotune",
            "io",
            "--device-read-bytes-sec",
            &pair,
            "--config",
        ],
    );
    let config = ok(&env, &["dumpxml", "--inactive", "io"]);
    assert!(
        config.contains("<read_bytes_sec>1048576</read_bytes_sec>"),
        "{config}"
    );
    ok(
        &env,
        &[
            "blkiotune",
            "io",
            "--device-read-bytes-sec",
            &off,
            "--config",
        ],
    );
    let config = ok(&env, &["dumpxml", "--inactive", "io"]);
    assert!(!config.contains("<blkiotune>"), "{config}");
    let (refused, out) = run(&env, &["blkiotune", "io", "--device-weights", "/dev/null"]);
    assert!(!refused && out.contains("PATH,VALUE"), "{out}");
    ok(&env, &["destroy", "io"]);
}

#[tokio::test]
async fn numatune_moves_a_running_containers_memory_nodes_and_not_its_policy() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    env.start("numa", "sleep 100000", "").await;
    let cpuset = env.daemon.cgroup_dir("cpuset", "numa");
    let mems = || read_cgroup(&cpuset, &["cpuset.mems"]);
    // Unpinned, it has no cpuset cgroup of its own on v1 (it stays in the
    // partition); pinned while it runs, it gets one and moves in.
    let v1_cpuset_alone = lxvirtd::cgroup::Hierarchies::detect().is_ok_and(|h| {
        h.v1.iter()
            .any(|v| v.known.iter().eq([lxvirtd::cgroup::Controller::Cpuset]))
    });
    if v1_cpuset_alone {
        assert!(!cpuset.exists(), "{}", cpuset.display());
    }
    ok(&env, &["numatune", "numa", "--nodeset", "0"]);
    assert_eq!(mems(), "0");
    assert!(!read_cgroup(&cpuset, &["cgroup.procs"]).is_empty());
    let live = ok(&env, &["dumpxml", "numa"]);
    assert!(
        live.contains("<memory mode='strict' nodeset='0'/>"),
        "{live}"
    );
    let shown = ok(&env, &["numatune", "numa"]);
    assert!(shown.contains("numa_nodeset   : 0"), "{shown}");
    // A node this host lacks: the kernel refuses, nothing changes.
    let (refused, out) = run(&env, &["numatune", "numa", "--nodeset", "4095"]);
    assert!(!refused, "{out}");
    assert!(out.contains("<numatune><memory nodeset>"), "{out}");
    assert_eq!(mems(), "0");
    let live = ok(&env, &["dumpxml", "numa"]);
    assert!(live.contains("nodeset='0'"), "{live}");
    // The policy: the definition's only.
    let (refused, out) = run(&env, &["numatune", "numa", "--mode", "interleave"]);
    assert!(
        !refused && out.contains("cannot change from 'strict'"),
        "{out}"
    );
    ok(
        &env,
        &[
            "numatune",
            "numa",
            "--nodeset",
            "0",
            "--mode",
            "interleave",
            "--config",
        ],
    );
    let config = ok(&env, &["dumpxml", "--inactive", "numa"]);
    assert!(
        config.contains("<memory mode='interleave' nodeset='0'/>"),
        "{config}"
    );
    ok(&env, &["destroy", "numa"]);
}

#[tokio::test]
async fn setmem_setmaxmem_and_emulatorpin_change_a_running_container() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    env.start("mem", "sleep 100000", "").await;
    let memory = env.daemon.cgroup_dir("memory", "mem");
    let limit = || read_cgroup(&memory, &["memory.limit_in_bytes", "memory.max"]);
    assert_eq!(limit(), (64u64 << 20).to_string());

    // setmem: the running container's limit at once, and its live XML.
    ok(&env, &["setmem", "mem", "48M"]);
    assert_eq!(limit(), (48u64 << 20).to_string());
    let live = ok(&env, &["dumpxml", "mem"]);
    assert!(
        live.contains("<currentMemory unit='KiB'>49152</currentMemory>"),
        "{live}"
    );
    let config = ok(&env, &["dumpxml", "--inactive", "mem"]);
    assert!(
        config.contains("<currentMemory unit='KiB'>65536</currentMemory>"),
        "{config}"
    );
    // Above the maximum: refused, nothing changes.
    let (refused, out) = run(&env, &["setmem", "mem", "1G"]);
    assert!(!refused && out.contains("currentMemory"), "{out}");
    assert_eq!(limit(), (48u64 << 20).to_string());

    // setmaxmem: the definition only.
    let (refused, out) = run(&env, &["setmaxmem", "mem", "128M", "--live"]);
    assert!(
        !refused && out.contains("maximum memory cannot change"),
        "{out}"
    );
    ok(&env, &["setmaxmem", "mem", "128M", "--config"]);
    let config = ok(&env, &["dumpxml", "--inactive", "mem"]);
    assert!(
        config.contains("<memory unit='KiB'>131072</memory>"),
        "{config}"
    );
    assert_eq!(limit(), (48u64 << 20).to_string());

    // emulatorpin: cpuset.cpus at once; a CPU the host lacks is refused.
    let cpuset = env.daemon.cgroup_dir("cpuset", "mem");
    let cpus = || read_cgroup(&cpuset, &["cpuset.cpus"]);
    ok(&env, &["emulatorpin", "mem", "0"]);
    assert_eq!(cpus(), "0");
    assert_eq!(ok(&env, &["emulatorpin", "mem"]).trim(), "cpuset: 0");
    let (refused, out) = run(&env, &["emulatorpin", "mem", "4095"]);
    assert!(!refused, "{out}");
    assert_eq!(cpus(), "0");
    let live = ok(&env, &["dumpxml", "mem"]);
    assert!(live.contains("cpuset='0'"), "{live}");
    // Unpinning a running cgroup: refused (set a list instead), unchanged.
    let (unpinned, out) = run(&env, &["emulatorpin", "mem", "none"]);
    assert!(!unpinned && out.contains("cannot be removed"), "{out}");
    assert_eq!(cpus(), "0");
    ok(&env, &["emulatorpin", "mem", "none", "--config"]);
    assert_eq!(
        ok(&env, &["emulatorpin", "mem", "--config"]).trim(),
        "cpuset: (all)"
    );

    // pids-limit: pids.max at once, the live XML, the definition's too.
    let pids = env.daemon.cgroup_dir("pids", "mem");
    ok(&env, &["pids-limit", "mem", "50", "--live", "--config"]);
    assert_eq!(read_cgroup(&pids, &["pids.max"]), "50");
    assert_eq!(ok(&env, &["pids-limit", "mem"]).trim(), "pids_max: 50");
    let config = ok(&env, &["dumpxml", "--inactive", "mem"]);
    assert!(config.contains("<lxvirt:pids max='50'/>"), "{config}");
    let (refused, out) = run(&env, &["pids-limit", "mem", "0"]);
    assert!(!refused && out.contains("1 or more"), "{out}");
    // More than the kernel's pids: refused, nothing changed (the fuzzing
    // client once stored such a limit, which every later start failed on).
    let (refused, out) = run(&env, &["pids-limit", "mem", "4194305", "--config"]);
    assert!(!refused && out.contains("at most 4194304 pids"), "{out}");
    assert_eq!(ok(&env, &["pids-limit", "mem"]).trim(), "pids_max: 50");
    ok(&env, &["destroy", "mem"]);
}
