//! lxvirtd killed with SIGKILL at random moments while several clients
//! define, start, destroy, undefine, commit and import at once; after each
//! restart, what the daemon answered is there, nothing else is half there,
//! and no container runs unmanaged. At the end, with everything stopped
//! and undefined, nothing is left behind. Needs root.
//!
//! `LXVIRT_KILL_ROUNDS` rounds (6 by default: CI's smoke; the reliability
//! figure is `LXVIRT_KILL_ROUNDS=500`), from `LXVIRT_STORM_SEED` (printed,
//! so a failing run can be replayed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lxvirt_tests::leaks::{busy_monitors, lxvirt_cgroups, mounts_below};
use lxvirt_tests::{DaemonEnv, Rng, TestDaemon, busybox_root, root_or_skip, shared_tempdir};
use lxvirtd::dbus::proxy::{DomainProxy, ImagesProxy, ManagerProxy};
use lxvirtd::storage::{Compression, pack_dir};
use zbus::Variant as Value;

const CLIENTS: usize = 4;
const DOMAINS_PER_CLIENT: usize = 3;
const BASE_IMAGE: &str = "storm-base";

/// A definition as the configuration directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Def {
    Absent,
    /// Present, with the marker of the define that wrote it.
    Present(String),
}

/// What a client knows of one of its domains: the last answered outcome,
/// and the outcomes of calls the kill left unanswered.
#[derive(Debug)]
struct Slot {
    name: String,
    image_root: bool,
    known: Def,
    maybe: Vec<Def>,
}

/// What the clients were told of images, and what they asked unanswered.
#[derive(Debug, Default)]
struct ImageLedger {
    known: BTreeSet<String>,
    maybe: BTreeSet<String>,
}

/// Calls answered (with success or a typed refusal), by method; and lost.
#[derive(Debug, Default)]
struct Tally(BTreeMap<&'static str, (u64, u64)>);

impl Tally {
    fn count<T>(&mut self, method: &'static str, outcome: &Outcome<T>) {
        let entry = self.0.entry(method).or_default();
        match outcome {
            Outcome::Answered(_) => entry.0 += 1,
            Outcome::Refused => entry.1 += 1,
            Outcome::Lost => {}
        }
    }

    fn add(&mut self, other: Tally) {
        for (method, (ok, refused)) in other.0 {
            let entry = self.0.entry(method).or_default();
            entry.0 += ok;
            entry.1 += refused;
        }
    }
}

/// How a call ended.
enum Outcome<T> {
    Answered(T),
    /// A typed refusal (`org.lxvirt.lxvirt1.Error.*`): nothing changed.
    Refused,
    /// No answer: the daemon is gone; the effect may or may not be there.
    Lost,
}

fn outcome<T>(result: zbus::Result<T>) -> Outcome<T> {
    match result {
        Ok(value) => Outcome::Answered(value),
        Err(zbus::Error::MethodError(name, _, _))
            if name.starts_with("org.lxvirt.lxvirt1.Error.") =>
        {
            Outcome::Refused
        }
        Err(_) => Outcome::Lost,
    }
}

struct Storm {
    env: DaemonEnv,
    rootfs: PathBuf,
    tarball: PathBuf,
}

impl Storm {
    fn xml(&self, slot: &Slot, marker: &str) -> String {
        let root = if slot.image_root {
            format!(
                "<filesystem type='volume'><source pool='images' volume='{BASE_IMAGE}'/><target dir='/'/></filesystem>"
            )
        } else {
            format!(
                "<filesystem type='mount'><source dir='{}'/><target dir='/'/></filesystem>",
                self.rootfs.display()
            )
        };
        format!(
            "<domain type='lxc'><name>{name}</name><description>{marker}</description>\
             <memory unit='MiB'>32</memory>\
             <os><type>exe</type><init>/bin/sleep</init><initarg>100000</initarg></os>\
             <devices>{root}<console type='pty'/></devices></domain>",
            name = slot.name
        )
    }

    fn config_file(&self, name: &str) -> PathBuf {
        self.env
            .daemon
            .config_dir()
            .join("domains")
            .join(format!("{name}.xml"))
    }

    fn storage(&self) -> PathBuf {
        self.env.dir.path().join("lib/storage")
    }
}

/// One client's storm: random calls on its own domains until a call is
/// lost (the daemon was killed).
async fn client(
    storm: Arc<Storm>,
    connection: zbus::Connection,
    mut slots: Vec<Slot>,
    seed: u64,
    round: usize,
    id: usize,
) -> (Vec<Slot>, ImageLedger, Tally) {
    let mut rng = Rng::new(seed);
    let mut images = ImageLedger::default();
    let mut tally = Tally::default();
    let manager = ManagerProxy::new(&connection).await.unwrap();
    let image_proxy = ImagesProxy::new(&connection).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for step in 0.. {
        assert!(
            Instant::now() < deadline,
            "round {round}: the daemon was not killed"
        );
        let slot = rng.below(slots.len());
        let marker = format!("round {round} client {id} step {step}");
        let op = rng.below(8);
        let lost = match op {
            0 | 1 => {
                let xml = storm.xml(&slots[slot], &marker);
                let result = outcome(manager.define_xml(&xml).await);
                tally.count("DefineXML", &result);
                match result {
                    Outcome::Answered(_) => {
                        slots[slot].known = Def::Present(marker);
                        slots[slot].maybe.clear();
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Lost => {
                        slots[slot].maybe.push(Def::Present(marker));
                        true
                    }
                }
            }
            5 => match outcome(manager.lookup_by_name(&slots[slot].name).await) {
                Outcome::Answered(path) => {
                    let domain = domain(&connection, path).await;
                    let result = outcome(domain.undefine(0).await);
                    tally.count("Undefine", &result);
                    match result {
                        Outcome::Answered(()) => {
                            slots[slot].known = Def::Absent;
                            slots[slot].maybe.clear();
                            false
                        }
                        Outcome::Refused => false,
                        Outcome::Lost => {
                            slots[slot].maybe.push(Def::Absent);
                            true
                        }
                    }
                }
                Outcome::Refused => false,
                Outcome::Lost => true,
            },
            6 => {
                // An import of the small tarball under a name of its own.
                let name = format!("storm-i{id}-r{round}-{step}");
                let file = fs::File::open(&storm.tarball).unwrap();
                let options = HashMap::from([("name", Value::from(name.as_str()))]);
                let result = outcome(
                    image_proxy
                        .import_tarball(zbus::Fd::from(&file), options)
                        .await,
                );
                tally.count("ImportTarball", &result);
                match result {
                    Outcome::Answered(_) => {
                        images.known.insert(name);
                        false
                    }
                    Outcome::Refused => false,
                    Outcome::Lost => {
                        images.maybe.insert(name);
                        true
                    }
                }
            }
            _ => match outcome(manager.lookup_by_name(&slots[slot].name).await) {
                Outcome::Answered(path) => {
                    let domain = domain(&connection, path).await;
                    let (method, result) = match op {
                        2 | 3 => ("Start", domain.start().await),
                        4 => ("Destroy", domain.destroy().await),
                        _ if slots[slot].image_root => {
                            let name = format!("storm-c{id}-r{round}-{step}");
                            let result = outcome(domain.commit(&name, 0).await);
                            tally.count("Commit", &result);
                            match result {
                                Outcome::Answered(_) => images.known.insert(name),
                                Outcome::Refused => false,
                                Outcome::Lost => {
                                    images.maybe.insert(name);
                                    break;
                                }
                            };
                            continue;
                        }
                        _ => ("Destroy", domain.destroy().await),
                    };
                    let result = outcome(result);
                    tally.count(method, &result);
                    matches!(result, Outcome::Lost)
                }
                Outcome::Refused => false,
                Outcome::Lost => true,
            },
        };
        if lost {
            break;
        }
    }
    (slots, images, tally)
}

async fn domain(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> DomainProxy<'static> {
    DomainProxy::builder(connection)
        .path(path)
        .build()
        .await
        .unwrap()
}

/// The marker in a definition file's `<description>`.
fn marker_of(xml: &str) -> Option<String> {
    let start = xml.find("<description>")? + "<description>".len();
    let end = xml[start..].find("</description>")? + start;
    Some(xml[start..end].to_owned())
}

/// Checks the daemon's state against what the clients were told, after a
/// restart; returns the definitions found (the next round's knowledge).
async fn check_round(storm: &Storm, round: usize, slots: &mut [Slot], images: &mut ImageLedger) {
    let manager = storm.env.manager().await.unwrap();
    let connection = &storm.env.connection;

    // Definitions: what was answered is there, intact; what was not is
    // wholly there or absent.
    for slot in slots.iter_mut() {
        let file = storm.config_file(&slot.name);
        let found = match fs::read_to_string(&file) {
            Ok(xml) => Def::Present(
                marker_of(&xml)
                    .unwrap_or_else(|| panic!("round {round}: {} is torn:\n{xml}", file.display())),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Def::Absent,
            Err(e) => panic!("{}: {e}", file.display()),
        };
        assert!(
            found == slot.known || slot.maybe.contains(&found),
            "round {round}: {} is {found:?}; answered {:?}, unanswered {:?}",
            slot.name,
            slot.known,
            slot.maybe
        );
        if let Def::Present(marker) = &found {
            let path = manager
                .lookup_by_name(&slot.name)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "round {round}: the daemon does not know {} defined on disk: {e}",
                        slot.name
                    )
                });
            let xml = domain(connection, path).await.get_xml(2).await.unwrap();
            assert_eq!(marker_of(&xml).as_deref(), Some(marker.as_str()));
        }
        slot.known = found;
        slot.maybe.clear();
    }
    let domains_dir = storm.env.daemon.config_dir().join("domains");
    for entry in fs::read_dir(&domains_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".xml") && !name.starts_with('.'),
            "round {round}: {name} left in {}",
            domains_dir.display()
        );
    }

    // Images: every answered one listed; every listed one whole.
    let image_proxy = ImagesProxy::new(connection).await.unwrap();
    let listed = image_proxy.list_images().await.unwrap();
    let mut names = BTreeSet::new();
    for image in &listed {
        let layer = storm.storage().join("images").join(&image.id).join("layer");
        assert!(
            layer.is_dir(),
            "round {round}: image {} listed without its layer",
            image.id
        );
        names.extend(image.names.iter().cloned());
    }
    for name in &images.known {
        assert!(
            names.contains(name),
            "round {round}: answered image {name} is gone"
        );
    }
    for name in &names {
        assert!(
            name == BASE_IMAGE || images.known.contains(name) || images.maybe.contains(name),
            "round {round}: image {name} was never asked for"
        );
    }
    images.known = names.into_iter().filter(|n| n != BASE_IMAGE).collect();
    images.maybe.clear();

    // Containers: every one that runs is managed (a monitor busy with a
    // container for each running or paused domain, and no cgroup else).
    let mut active = BTreeMap::new();
    for summary in manager.list_domain_summaries().await.unwrap() {
        if summary.state == "running" || summary.state == "paused" {
            assert!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(summary.pid as i32), None)
                    .is_ok(),
                "round {round}: {} is {} with pid {}, which is gone",
                summary.name,
                summary.state,
                summary.pid
            );
            active.insert(summary.name.clone(), summary.pid);
        }
    }
    let run_dir = storm.env.run_dir();
    let settled = Instant::now() + Duration::from_secs(10);
    loop {
        let busy = busy_monitors(&run_dir);
        let cgroups: BTreeSet<String> = lxvirt_cgroups(storm.env.dir.path(), "lxvirt-")
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let expected: BTreeSet<String> = active.keys().map(|n| format!("lxvirt-{n}")).collect();
        if busy == active.len() && cgroups == expected {
            break;
        }
        assert!(
            Instant::now() < settled,
            "round {round}: {busy} busy monitors and cgroups {cgroups:?} for active domains {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn killed_daemons_lose_nothing_answered_and_leave_nothing_behind() {
    if !root_or_skip() {
        return;
    }
    let rounds: usize = std::env::var("LXVIRT_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("LXVIRT_STORM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("kill storm: {rounds} rounds, LXVIRT_STORM_SEED={seed}");
    let mut rng = Rng::new(seed);

    let dir = shared_tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    let tarball = dir.path().join("small.tar");
    pack_dir(
        &rootfs,
        Compression::None,
        &mut fs::File::create(&tarball).unwrap(),
    )
    .unwrap();
    let env = DaemonEnv::start_in(dir, &[]).await.unwrap();
    let mounts = mounts_below(env.dir.path());
    {
        let images = ImagesProxy::new(&env.connection).await.unwrap();
        let file = fs::File::open(&tarball).unwrap();
        images
            .import_tarball(
                zbus::Fd::from(&file),
                HashMap::from([("name", Value::from(BASE_IMAGE))]),
            )
            .await
            .unwrap();
    }
    let mut storm = Arc::new(Storm {
        env,
        rootfs,
        tarball,
    });

    let mut slots: Vec<Vec<Slot>> = (0..CLIENTS)
        .map(|c| {
            (0..DOMAINS_PER_CLIENT)
                .map(|k| Slot {
                    name: format!("storm-{c}-{k}"),
                    image_root: k == 0,
                    known: Def::Absent,
                    maybe: Vec::new(),
                })
                .collect()
        })
        .collect();
    let mut images = ImageLedger::default();
    let mut kills_at = Vec::new();
    let mut tally = Tally::default();

    for round in 0..rounds {
        let mut tasks = Vec::new();
        for (id, client_slots) in slots.drain(..).enumerate() {
            let connection = storm.env.bus.connect().await.unwrap();
            tasks.push(tokio::spawn(client(
                Arc::clone(&storm),
                connection,
                client_slots,
                rng.next_u64(),
                round,
                id,
            )));
        }
        let delay = Duration::from_millis(rng.below(250) as u64);
        kills_at.push(delay);
        tokio::time::sleep(delay).await;
        // The clients hold the storm too: killed through its pid.
        let pid = storm.env.daemon.pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        for task in tasks {
            let (client_slots, client_images, client_tally) = task.await.unwrap();
            tally.add(client_tally);
            slots.push(client_slots);
            images.known.extend(client_images.known);
            images.maybe.extend(client_images.maybe);
        }
        let storm_mut = Arc::get_mut(&mut storm).expect("the clients are done");
        let _ = storm_mut.env.daemon.wait_exit(Duration::from_secs(5));
        storm_mut.env.daemon = TestDaemon::start(&storm_mut.env.bus, storm_mut.env.dir.path())
            .await
            .unwrap();
        let mut all: Vec<Slot> = slots.drain(..).flatten().collect();
        check_round(&storm, round, &mut all, &mut images).await;
        let mut by_client: Vec<Vec<Slot>> = (0..CLIENTS).map(|_| Vec::new()).collect();
        for (i, slot) in all.into_iter().enumerate() {
            by_client[i / DOMAINS_PER_CLIENT].push(slot);
        }
        slots = by_client;
    }
    println!(
        "kill storm: {rounds} kills survived, at {:?} ms into a storm of {CLIENTS} clients",
        kills_at.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    for (method, (answered, refused)) in &tally.0 {
        println!("kill storm: {method}: {answered} done, {refused} refused (typed)");
    }
    let done: u64 = tally.0.values().map(|(ok, _)| ok).sum();
    assert!(
        done > rounds as u64,
        "the storm hardly did anything: {tally:?}"
    );

    // Everything stopped and undefined: nothing is left.
    let manager = storm.env.manager().await.unwrap();
    for path in manager.list_domains().await.unwrap() {
        let domain = domain(&storm.env.connection, path).await;
        let _ = domain.destroy().await;
        let _ = domain.undefine(0).await;
    }
    assert!(manager.list_domains().await.unwrap().is_empty());
    let run_dir = storm.env.run_dir();
    let settled = Instant::now() + Duration::from_secs(10);
    while busy_monitors(&run_dir) > 0 || !lxvirt_cgroups(storm.env.dir.path(), "lxvirt-").is_empty()
    {
        assert!(Instant::now() < settled, "containers left after the storm");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mounts_below(storm.env.dir.path()), mounts, "mounts left");
    let layers = storm.storage().join("containers");
    let left: Vec<_> = fs::read_dir(&layers)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "writable layers left: {left:?}");
    let statuses: Vec<_> = fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "status" || e == "sock"))
        .collect();
    assert!(statuses.is_empty(), "run files left: {statuses:?}");
    id_blocks_released(storm.env.dir.path());
}

/// With every domain undefined, no id block stays reserved.
fn id_blocks_released(root: &Path) {
    let dir = root.join("lib/userns");
    let left: Vec<_> = fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "id blocks left in {}: {left:?}",
        dir.display()
    );
}
