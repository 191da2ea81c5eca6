//! A storm of define, start, destroy, undefine, commit and import calls
//! from several clients, and the ledger of what the daemon answered. Two
//! harnesses cut it short and check what is left: `tests/kill_storm.rs`
//! kills lxvirtd; `lxvirt-crash-storm` (in the nested VM of `tests/vm/crash`)
//! cuts the power. The ledger can be kept in a journal outside the machine
//! under test, so that it outlives the cut.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lxvirtd::dbus::proxy::{DomainProxy, ImagesProxy, ManagerProxy};
use zbus::Variant as Value;

use crate::Rng;

pub const CLIENTS: usize = 4;
pub const DOMAINS_PER_CLIENT: usize = 3;
/// The image every client's first domain starts from; imported before the
/// storm.
pub const BASE_IMAGE: &str = "storm-base";

/// A definition as the configuration directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Def {
    Absent,
    /// Present, with the marker of the define that wrote it.
    Present(String),
}

/// What the clients know of one domain: the last answered outcome, and the
/// outcomes of calls asked but not answered.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    pub image_root: bool,
    pub known: Def,
    pub maybe: Vec<Def>,
}

/// What the clients were told of images, and what they asked unanswered.
#[derive(Debug, Default)]
pub struct ImageLedger {
    pub known: BTreeSet<String>,
    pub maybe: BTreeSet<String>,
}

/// Every client's slots, nothing defined yet: client `c` owns `storm-c-k`.
pub fn fresh_slots() -> Vec<Slot> {
    (0..CLIENTS * DOMAINS_PER_CLIENT)
        .map(|i| Slot {
            name: format!(
                "storm-{}-{}",
                i / DOMAINS_PER_CLIENT,
                i % DOMAINS_PER_CLIENT
            ),
            image_root: i % DOMAINS_PER_CLIENT == 0,
            known: Def::Absent,
            maybe: Vec::new(),
        })
        .collect()
}

/// `slots` dealt to the clients (as [`fresh_slots`] names them).
pub fn by_client(slots: Vec<Slot>) -> Vec<Vec<Slot>> {
    let mut clients: Vec<Vec<Slot>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    for (i, slot) in slots.into_iter().enumerate() {
        clients[i / DOMAINS_PER_CLIENT].push(slot);
    }
    clients
}

/// Calls answered (with success or a typed refusal), by method.
#[derive(Debug, Default)]
pub struct Tally(pub BTreeMap<&'static str, (u64, u64)>);

impl Tally {
    fn count<T>(&mut self, method: &'static str, outcome: &Outcome<T>) {
        let entry = self.0.entry(method).or_default();
        match outcome {
            Outcome::Answered(_) => entry.0 += 1,
            Outcome::Refused => entry.1 += 1,
            Outcome::Lost => {}
        }
    }

    pub fn add(&mut self, other: Tally) {
        for (method, (ok, refused)) in other.0 {
            let entry = self.0.entry(method).or_default();
            entry.0 += ok;
            entry.1 += refused;
        }
    }

    /// Calls that succeeded.
    pub fn done(&self) -> u64 {
        self.0.values().map(|(ok, _)| ok).sum()
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

/// A change the storm asks for, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// A define of a slot's domain; its marker.
    Define(String, String),
    Undefine(String),
    /// An import or commit making an image of this name.
    Image(String),
}

/// Where a change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// About to be called: the effect may be there after a cut.
    Ask,
    /// Answered with success: it must be there.
    Done,
    /// Refused: nothing changed.
    Refused,
}

impl Phase {
    fn word(self) -> &'static str {
        match self {
            Phase::Ask => "ask",
            Phase::Done => "ok",
            Phase::Refused => "no",
        }
    }
}

/// An append-only record of the changes asked and answered, one line each,
/// written before a call and after its answer: kept where a cut does not
/// reach (in the VM, on the host's share, whose writes reach the host before
/// they return), it tells the check what the daemon owes.
#[derive(Debug)]
pub struct Journal(Mutex<fs::File>);

impl Journal {
    pub fn create(path: &Path) -> std::io::Result<Journal> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Journal(Mutex::new(file)))
    }

    fn record(&self, phase: Phase, change: &Change) {
        let line = match change {
            Change::Define(slot, marker) => format!("{} define {slot} {marker}\n", phase.word()),
            Change::Undefine(slot) => format!("{} undefine {slot}\n", phase.word()),
            Change::Image(name) => format!("{} image {name}\n", phase.word()),
        };
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: a cut leaves whole lines, or a last one
        // without its newline, which `replay` ignores.
        file.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write the journal: {e}"));
    }

    /// An image the storm's set-up asked for and was answered.
    pub fn image_done(&self, name: &str) {
        let change = Change::Image(name.to_owned());
        self.record(Phase::Ask, &change);
        self.record(Phase::Done, &change);
    }
}

/// Applies a journal's lines to the ledger, in order. A last line without
/// its newline was cut while written: its call was never made.
pub fn replay(journal: &str, slots: &mut [Slot], images: &mut ImageLedger) -> Result<(), String> {
    let complete = journal.rfind('\n').map_or("", |end| &journal[..end]);
    for line in complete.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(phase), Some(kind), Some(rest)) = (words.next(), words.next(), words.next())
        else {
            return Err(format!("journal line '{line}' is not 'PHASE KIND NAME …'"));
        };
        let phase = match phase {
            "ask" => Phase::Ask,
            "ok" => Phase::Done,
            "no" => Phase::Refused,
            _ => return Err(format!("journal line '{line}': unknown phase")),
        };
        if kind == "image" {
            let name = rest.to_owned();
            match phase {
                Phase::Ask => {
                    images.maybe.insert(name);
                }
                Phase::Done => {
                    images.maybe.remove(&name);
                    images.known.insert(name);
                }
                Phase::Refused => {
                    images.maybe.remove(&name);
                }
            }
            continue;
        }
        let (name, def) = match kind {
            "define" => {
                let (name, marker) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("journal line '{line}' has no marker"))?;
                (name, Def::Present(marker.to_owned()))
            }
            "undefine" => (rest, Def::Absent),
            _ => return Err(format!("journal line '{line}': unknown change")),
        };
        let slot = slots
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("journal line '{line}': no domain {name} in the storm"))?;
        match phase {
            Phase::Ask => slot.maybe.push(def),
            Phase::Done => {
                slot.known = def;
                slot.maybe.clear();
            }
            Phase::Refused => slot.maybe.retain(|d| *d != def),
        }
    }
    Ok(())
}

/// The files a storm works with: the daemon's root (as `TestDaemon` lays
/// it out), a busybox root and a small tarball of it.
#[derive(Debug)]
pub struct Storm {
    pub root: PathBuf,
    pub rootfs: PathBuf,
    pub tarball: PathBuf,
    pub journal: Option<Journal>,
    /// How long a client goes on before it gives up waiting for the cut.
    pub patience: Duration,
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

    pub fn domains_dir(&self) -> PathBuf {
        self.root.join("etc/domains")
    }

    pub fn storage(&self) -> PathBuf {
        self.root.join("lib/storage")
    }

    fn record(&self, phase: Phase, change: &Change) {
        if let Some(journal) = &self.journal {
            journal.record(phase, change);
        }
    }

    /// A call that changes what must outlive a cut, journaled around it;
    /// returns whether it was lost.
    async fn change<T>(
        &self,
        change: Change,
        call: impl std::future::Future<Output = zbus::Result<T>>,
        method: &'static str,
        tally: &mut Tally,
    ) -> Outcome<T> {
        self.record(Phase::Ask, &change);
        let result = outcome(call.await);
        tally.count(method, &result);
        match result {
            Outcome::Answered(_) => self.record(Phase::Done, &change),
            Outcome::Refused => self.record(Phase::Refused, &change),
            Outcome::Lost => {}
        }
        result
    }
}

/// One client's storm: random calls on its own domains until a call is
/// lost (the daemon was killed, or the power cut). Panics when nothing has
/// cut it within the storm's patience.
pub async fn client(
    storm: &Storm,
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
    let deadline = Instant::now() + storm.patience;
    for step in 0.. {
        assert!(
            Instant::now() < deadline,
            "round {round}: nothing cut the storm within {:?}",
            storm.patience
        );
        let slot = rng.below(slots.len());
        let marker = format!("round {round} client {id} step {step}");
        let op = rng.below(8);
        let lost = match op {
            0 | 1 => {
                let xml = storm.xml(&slots[slot], &marker);
                let change = Change::Define(slots[slot].name.clone(), marker.clone());
                match storm
                    .change(change, manager.define_xml(&xml), "DefineXML", &mut tally)
                    .await
                {
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
                    let change = Change::Undefine(slots[slot].name.clone());
                    match storm
                        .change(change, domain.undefine(0), "Undefine", &mut tally)
                        .await
                    {
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
                let call = image_proxy.import_tarball(zbus::Fd::from(&file), options);
                let result = storm
                    .change(
                        Change::Image(name.clone()),
                        call,
                        "ImportTarball",
                        &mut tally,
                    )
                    .await;
                images_outcome(&mut images, name, &result)
            }
            _ => match outcome(manager.lookup_by_name(&slots[slot].name).await) {
                Outcome::Answered(path) => {
                    let domain = domain(&connection, path).await;
                    let (method, result) = match op {
                        2 | 3 => ("Start", domain.start().await),
                        4 => ("Destroy", domain.destroy().await),
                        _ if slots[slot].image_root => {
                            let name = format!("storm-c{id}-r{round}-{step}");
                            let call = domain.commit(&name, 0);
                            let result = storm
                                .change(Change::Image(name.clone()), call, "Commit", &mut tally)
                                .await;
                            if images_outcome(&mut images, name, &result) {
                                break;
                            }
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

/// Notes an import's or commit's outcome; returns whether it was lost.
fn images_outcome<T>(images: &mut ImageLedger, name: String, result: &Outcome<T>) -> bool {
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

pub async fn domain(
    connection: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> DomainProxy<'static> {
    DomainProxy::builder(connection)
        .path(path)
        .build()
        .await
        .unwrap()
}

/// The marker in a definition's `<description>`.
pub fn marker_of(xml: &str) -> Option<String> {
    let start = xml.find("<description>")? + "<description>".len();
    let end = xml[start..].find("</description>")? + start;
    Some(xml[start..end].to_owned())
}

/// Checks definitions and images against the ledger, after the daemon came
/// back: what was answered is there and intact, what was not is wholly
/// there or absent, no temporary file is left, every listed image has its
/// layer and its parents. The ledger becomes what was found.
pub async fn check_definitions_and_images(
    storm: &Storm,
    connection: &zbus::Connection,
    round: usize,
    slots: &mut [Slot],
    images: &mut ImageLedger,
) {
    let manager = ManagerProxy::new(connection).await.unwrap();
    for slot in slots.iter_mut() {
        let file = storm.domains_dir().join(format!("{}.xml", slot.name));
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
    let domains_dir = storm.domains_dir();
    for entry in fs::read_dir(&domains_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".xml") && !name.starts_with('.'),
            "round {round}: {name} left in {}",
            domains_dir.display()
        );
    }

    // Unfinished store work is cleared when the daemon opens the store.
    for dir in ["images", "containers"] {
        let dir = storm.storage().join(dir);
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "round {round}: {name} left in {}",
                dir.display()
            );
        }
    }

    // Images: every answered one listed; every listed one whole, down to
    // its base.
    let image_proxy = ImagesProxy::new(connection).await.unwrap();
    let listed = image_proxy.list_images().await.unwrap();
    let mut names = BTreeSet::new();
    let images_dir = storm.storage().join("images");
    for image in &listed {
        let mut id = image.id.clone();
        loop {
            let dir = images_dir.join(&id);
            assert!(
                dir.join("layer").is_dir(),
                "round {round}: image {} refers to layer {id}, which is missing",
                image.id
            );
            let meta: lxvirtd::storage::ImageMeta =
                lxvirtd::persist::read_versioned(&dir.join("meta.json"))
                    .unwrap_or_else(|e| panic!("round {round}: image {id}: {e}"));
            match meta.parent {
                Some(parent) => id = parent.to_string(),
                None => break,
            }
        }
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
            images.known.contains(name) || images.maybe.contains(name),
            "round {round}: image {name} was never asked for"
        );
    }
    images.known = names;
    images.maybe.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_replays_into_what_is_owed() {
        let mut slots = fresh_slots();
        let mut images = ImageLedger::default();
        let journal = "ask define storm-0-0 round 0 client 0 step 0\n\
                       ok define storm-0-0 round 0 client 0 step 0\n\
                       ask define storm-1-1 round 0 client 1 step 0\n\
                       no define storm-1-1 round 0 client 1 step 0\n\
                       ask undefine storm-0-0\n\
                       ask image a\nok image a\nask image b\n\
                       ask define storm-2-0 cut while writ";
        replay(journal, &mut slots, &mut images).unwrap();
        let slot = |name: &str| slots.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            slot("storm-0-0").known,
            Def::Present("round 0 client 0 step 0".into())
        );
        assert_eq!(slot("storm-0-0").maybe, vec![Def::Absent]);
        assert_eq!(slot("storm-1-1").known, Def::Absent);
        assert!(slot("storm-1-1").maybe.is_empty());
        // The torn last line: its call was never made.
        assert!(slot("storm-2-0").maybe.is_empty());
        assert_eq!(images.known, BTreeSet::from(["a".to_owned()]));
        assert_eq!(images.maybe, BTreeSet::from(["b".to_owned()]));
    }

    #[test]
    fn a_journal_naming_no_storm_domain_is_refused() {
        let mut slots = fresh_slots();
        let mut images = ImageLedger::default();
        let error = replay("ok undefine other\n", &mut slots, &mut images).unwrap_err();
        assert!(error.contains("no domain other"), "{error}");
        assert!(replay("bogus\n", &mut slots, &mut images).is_err());
    }
}
