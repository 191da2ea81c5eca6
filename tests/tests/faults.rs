//! Faults injected on a running host: the bus daemon killed and restarted,
//! a container's monitor killed with SIGKILL, the configuration and state
//! directories full (ENOSPC, on small tmpfs mounts), the run directory full
//! at a start. Containers keep running or are cleaned up, nothing is torn,
//! the daemon keeps serving or exits so that its service manager restarts
//! it. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lxvirt_tests::leaks::{alive, busy_monitors, lxvirt_cgroups, mounts_below, parent_of, settle};
use lxvirt_tests::{ContainerEnv, DaemonEnv, TestDaemon, busybox_root, root_or_skip};
use lxvirtd::dbus::proxy::{DomainProxy, ImagesProxy};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use zbus::Variant as Value;

async fn domain_named(env: &DaemonEnv, name: &str) -> DomainProxy<'static> {
    let manager = env.manager().await.unwrap();
    env.domain(manager.lookup_by_name(name).await.unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_bus_going_away_ends_the_daemon_and_its_successor_finds_everything() {
    let Some(mut env) = ContainerEnv::new().await else {
        return;
    };
    let one = env.start("bus-one", "sleep 1000", "").await;
    let two = env.start("bus-two", "sleep 1000", "").await;
    two.suspend().await.unwrap();
    let pids = [one.pid().await.unwrap(), two.pid().await.unwrap()];

    env.bus.restart().unwrap();
    // lxvirtd exits with a failure, so that systemd's Restart=on-failure
    // starts it again (it cannot re-own its name on a new bus by itself
    // without losing the clients' view of it anyway).
    let status = env.daemon.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(!status.success(), "lxvirtd exited cleanly: {status}");
    for pid in pids {
        assert!(alive(pid), "container init {pid} died with the bus");
    }

    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
    env.connection = env.bus.connect().await.unwrap();
    let one = domain_named(&env, "bus-one").await;
    let two = domain_named(&env, "bus-two").await;
    assert_eq!(one.state().await.unwrap(), "running");
    assert_eq!(one.pid().await.unwrap(), pids[0]);
    assert_eq!(two.state().await.unwrap(), "paused");
    assert_eq!(two.pid().await.unwrap(), pids[1]);
    two.resume().await.unwrap();
    one.destroy().await.unwrap();
    two.destroy().await.unwrap();
}

#[tokio::test]
async fn a_killed_monitor_takes_its_container_down_and_on_crash_applies() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let run_dir = env.run_dir();
    let mounts = mounts_below(env.dir.path());

    // on_crash='destroy' (the default): shut off, reason crashed.
    let gone = env.start("mon-gone", "sleep 1000", "").await;
    // on_crash='restart': running again, a new init.
    let back = env
        .start("mon-back", "sleep 1000", "<on_crash>restart</on_crash>")
        .await;
    let gone_init = gone.pid().await.unwrap();
    let back_init = back.pid().await.unwrap();
    for init in [gone_init, back_init] {
        let monitor = parent_of(init);
        assert_ne!(monitor, 1, "init {init} has its monitor as parent");
        kill(Pid::from_raw(monitor as i32), Signal::SIGKILL).unwrap();
    }

    let mut state = String::new();
    for _ in 0..500 {
        state = gone.state().await.unwrap();
        if state == "shutoff" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "shutoff");
    assert_eq!(gone.state_reason().await.unwrap(), "crashed");
    settle("the orphaned init to be killed", || !alive(gone_init)).await;

    let mut restarted = 0;
    for _ in 0..500 {
        if back.state().await.unwrap() == "running" {
            restarted = back.pid().await.unwrap();
            if restarted != back_init {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        restarted != 0 && restarted != back_init,
        "on_crash='restart' did not start it again"
    );
    assert!(!alive(back_init), "the old init still runs");
    back.destroy().await.unwrap();

    // Nothing of either is left.
    settle("every monitor to finish", || busy_monitors(&run_dir) == 0).await;
    assert_eq!(
        mounts_below(env.dir.path()),
        mounts,
        "mounts leaked on the host"
    );
    settle("the cgroups to go", || {
        lxvirt_cgroups(env.dir.path(), "lxvirt-mon-").is_empty()
    })
    .await;
    for name in ["mon-gone", "mon-back"] {
        for leftover in [format!("{name}.status"), format!("{name}.sock")] {
            assert!(!run_dir.join(&leftover).exists(), "{leftover} left");
        }
    }
}

/// A tmpfs of `size` over `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap();
        SmallFs(dir.to_owned())
    }

    /// Fills it up but for `spare` bytes; returns the filler's path.
    fn fill(&self, spare: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        let chunk = vec![0x5a_u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        drop(file);
        let size = fs::metadata(&filler).unwrap().len();
        // Give back `spare` bytes (tmpfs frees whole pages).
        fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(size.saturating_sub(spare))
            .unwrap();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every file below `dir`, relative, but the filler.
fn files_below(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            let relative = path.strip_prefix(dir).unwrap().display().to_string();
            if relative != "filler" {
                found.insert(relative);
            }
        }
    }
    found
}

fn sleeper(name: &str, root: &Path) -> String {
    lxvirt_tests::sleeper_xml(name, root)
}

#[tokio::test]
async fn a_full_disk_fails_define_and_import_cleanly_and_the_daemon_keeps_serving() {
    if !root_or_skip() {
        return;
    }
    let dir = lxvirt_tests::shared_tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let config = SmallFs::mount(&dir.path().join("etc"), "1m");
    let state = SmallFs::mount(&dir.path().join("lib"), "8m");
    let env = DaemonEnv::start_in(dir, &[]).await.unwrap();
    let manager = env.manager().await.unwrap();
    let kept_path = manager
        .define_xml(&sleeper("disk-kept", &rootfs))
        .await
        .unwrap();
    let kept = env.domain(kept_path).await.unwrap();
    let kept_xml = kept.get_xml(0).await.unwrap();

    // The configuration directory full: the define fails, names the
    // cause, leaves no file, and changes nothing else.
    let config_files = files_below(&config.0);
    let filler = config.fill(0);
    let error = manager
        .define_xml(&sleeper("disk-new", &rootfs))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.to_lowercase().contains("no space left on"), "{error}");
    assert!(
        error.contains("disk-new"),
        "the error names the domain: {error}"
    );
    println!("a define on a full disk: {error}");
    assert_eq!(files_below(&config.0), config_files, "a define left a file");
    assert!(manager.lookup_by_name("disk-new").await.is_err());
    // A change of an existing definition fails the same way, and the old
    // one stays whole.
    let changed = kept_xml.replacen("</uuid>", "</uuid><description>changed</description>", 1);
    assert_ne!(changed, kept_xml);
    assert!(manager.define_xml(&changed).await.is_err());
    assert_eq!(kept.get_xml(0).await.unwrap(), kept_xml);
    // Still serving: a start needs no space in the configuration.
    kept.start().await.unwrap();
    assert_eq!(kept.state().await.unwrap(), "running");
    fs::remove_file(filler).unwrap();
    manager
        .define_xml(&sleeper("disk-new", &rootfs))
        .await
        .expect("a define once there is space again");

    // The image store full: an import bigger than the space fails, and
    // no image, layer or scratch file of it stays.
    let images = ImagesProxy::new(&env.connection).await.unwrap();
    let big_root = env.dir.path().join("big");
    busybox_root(&big_root);
    let blob = lxvirt_tests::incompressible_bytes(16 << 20, 0x2545_f491_4f6c_dd1d);
    fs::write(big_root.join("blob"), blob).unwrap();
    let tarball = env.dir.path().join("big.tar");
    lxvirtd::storage::pack_dir(
        &big_root,
        lxvirtd::storage::Compression::None,
        &mut fs::File::create(&tarball).unwrap(),
    )
    .unwrap();
    let store_files = files_below(&state.0);
    let file = fs::File::open(&tarball).unwrap();
    let error = images
        .import_tarball(
            zbus::Fd::from(&file),
            HashMap::from([("name", Value::from("too-big"))]),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.to_lowercase().contains("no space left on"), "{error}");
    println!("an import on a full disk: {error}");
    assert!(images.list_images().await.unwrap().is_empty());
    assert_eq!(files_below(&state.0), store_files, "an import left files");

    assert_eq!(kept.state().await.unwrap(), "running");
    kept.destroy().await.unwrap();
    drop(env);
    drop((config, state));
}

/// A start whose live status cannot be written (the run directory full)
/// fails and is undone: a container nobody recorded would run on where a
/// restarted daemon could not find it.
#[tokio::test]
async fn a_start_that_cannot_be_recorded_fails_and_leaves_nothing_running() {
    if !root_or_skip() {
        return;
    }
    let dir = lxvirt_tests::shared_tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let run = SmallFs::mount(&dir.path().join("run"), "4m");
    let env = DaemonEnv::start_in(dir, &[]).await.unwrap();
    let manager = env.manager().await.unwrap();
    let path = manager
        .define_xml(&sleeper("unrecorded", &rootfs))
        .await
        .unwrap();
    let domain = env.domain(path).await.unwrap();
    let filler = run.fill(0);
    let error = domain.start().await.unwrap_err().to_string();
    println!("a start with a full run directory: {error}");
    assert!(
        error.contains("'unrecorded'") && error.contains("cannot be recorded"),
        "{error}"
    );
    assert!(error.to_lowercase().contains("no space left on"), "{error}");
    assert_eq!(domain.state().await.unwrap(), "shutoff");
    settle("the unrecorded container still runs", || {
        lxvirt_cgroups(env.dir.path(), "lxvirt-unrecorded").is_empty()
            && busy_monitors(&env.run_dir()) == 0
    })
    .await;
    fs::remove_file(filler).unwrap();
    domain.start().await.expect("a start once there is space");
    assert_eq!(domain.state().await.unwrap(), "running");
    domain.destroy().await.unwrap();
    drop(env);
    drop(run);
}
