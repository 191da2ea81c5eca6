//! Id ranges for containers' user namespaces.
//!
//! A domain that runs unprivileged (`<lxvirt:userns mode='auto'/>`, the
//! default) gets a block of [`BLOCK`] host ids from the daemon's
//! subordinate range: root inside is the block's first id on the host.
//! Blocks never overlap. A persistent domain keeps its block while it is
//! defined (its writable image layer holds files in those ids), recorded in
//! a versioned file of its own written atomically; a transient domain's block is
//! held only while it runs. After a daemon restart the blocks of running
//! containers are reserved again from their live definitions, before
//! anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::persist::{self, Durability, PersistError, Versioned};

/// Ids per container: a full 16-bit range, what a Debian userland expects
/// (nobody is 65534).
pub const BLOCK: u32 = 65536;

/// The host ids lxvirt hands out: `start:count`, at least one [`BLOCK`];
/// the ids after the last whole block are not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

impl IdRange {
    /// The default: a billion ids from 1,000,000 (above the ranges Debian's
    /// `adduser` hands to users in /etc/subuid), 15,258 containers.
    pub const DEFAULT: IdRange = IdRange {
        start: 1_000_000,
        count: 1_000_000_000,
    };

    fn blocks(&self) -> u32 {
        self.count / BLOCK
    }

    fn block_start(&self, block: u32) -> u32 {
        self.start + block * BLOCK
    }

    /// The block starting at `start`, if it is one of this range's.
    fn block_of(&self, start: u32) -> Option<u32> {
        let offset = start.checked_sub(self.start)?;
        (offset % BLOCK == 0 && offset / BLOCK < self.blocks()).then_some(offset / BLOCK)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.count)
    }
}

impl FromStr for IdRange {
    type Err = String;

    fn from_str(s: &str) -> Result<IdRange, String> {
        let usage = "use START:COUNT, such as 1000000:1000000000";
        let (start, count) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}' is not an id range; {usage}"))?;
        let start: u32 = start
            .parse()
            .map_err(|_| format!("'{start}' is not a host id; {usage}"))?;
        let count: u32 = count
            .parse()
            .map_err(|_| format!("'{count}' is not an id count; {usage}"))?;
        if start == 0 {
            return Err(format!(
                "the id range must not start at 0 (host root); {usage}"
            ));
        }
        if count < BLOCK {
            return Err(format!(
                "the id count {count} is less than {BLOCK}, one container's ids"
            ));
        }
        if start.checked_add(count - 1).is_none() {
            return Err(format!("{start}:{count} goes past the last host id"));
        }
        Ok(IdRange { start, count })
    }
}

/// Why a container cannot have its ids.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "domain '{domain}': every id block of the range {range} is taken; undefine domains or widen the daemon's --userns-range"
    )]
    Exhausted { domain: String, range: IdRange },
    #[error(
        "domain '{domain}': its running container uses host ids {start}..{end}, which overlap domain '{other}'s; stop one of them"
    )]
    Overlap {
        domain: String,
        other: String,
        start: u32,
        end: u64,
    },
    #[error("cannot use the id ranges state")]
    State(#[source] PersistError),
    #[error("cannot use the id ranges state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One domain's block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Assignment {
    name: String,
    /// First host id of the block.
    start: u32,
    /// Kept while the domain is defined (else only while it runs).
    persistent: bool,
}

/// A persistent domain's block, in a file of its own (`UUID.json` in the
/// state directory): a domain's first start writes one small file, not a
/// table of every domain.
#[derive(Debug, Serialize, Deserialize)]
struct BlockFile {
    name: String,
    start: u32,
}

impl Versioned for BlockFile {
    const VERSION: u32 = 1;
}

/// The record of a persistent domain's new block, to write durably before
/// the block is used.
#[derive(Debug)]
pub struct BlockRecord {
    path: PathBuf,
    block: BlockFile,
}

impl BlockRecord {
    /// The file it goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes it (atomically, `fsync`ed).
    pub fn write(&self) -> Result<(), UsernsError> {
        persist::write_versioned(&self.path, &self.block, 0o600, Durability::Durable)
            .map_err(UsernsError::State)
    }
}

/// The single table of earlier versions (`userns.json` beside the
/// directory), split into the directory when found.
#[derive(Debug, Serialize, Deserialize)]
struct LegacyTable {
    ranges: BTreeMap<Uuid, BlockFile>,
}

impl Versioned for LegacyTable {
    const VERSION: u32 = 1;
}

/// Fuzzing: this module's state files read from `bytes`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_state_files(bytes: &[u8]) {
    crate::persist::fuzz_round_trip::<BlockFile>(bytes);
    crate::persist::fuzz_round_trip::<LegacyTable>(bytes);
}

/// What loading the state found that the daemon should log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Recorded blocks outside the configured range, dropped: (domain,
    /// first host id).
    pub dropped: Vec<(String, u32)>,
}

/// The blocks handed out; owned by the manager task. Every operation costs
/// O(log N) in the number of domains (6,000 containers start as fast as
/// ten).
#[derive(Debug)]
pub struct IdRanges {
    range: IdRange,
    /// The directory of persistent blocks; `None`: nothing persisted
    /// (tests).
    state: Option<PathBuf>,
    by_domain: BTreeMap<Uuid, Assignment>,
    /// First host id → owner, of every block handed out or reserved, in
    /// the range or not; the blocks never overlap.
    by_start: BTreeMap<u32, Uuid>,
    /// Every block of the range below this one overlaps a held block.
    free_from: u32,
}

impl IdRanges {
    /// The allocator over `range`, with the persistent blocks recorded in
    /// the directory `state` (created if missing).
    pub fn open(
        range: IdRange,
        state: Option<&Path>,
    ) -> Result<(IdRanges, LoadReport), UsernsError> {
        let mut ranges = IdRanges {
            range,
            state: state.map(Path::to_owned),
            by_domain: BTreeMap::new(),
            by_start: BTreeMap::new(),
            free_from: 0,
        };
        let mut report = LoadReport::default();
        let Some(dir) = state else {
            return Ok((ranges, report));
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| UsernsError::StateDir {
                path: dir.to_owned(),
                source,
            })?;
        let legacy = dir.with_extension("json");
        if let Some(table) = persist::read_versioned_if_present::<LegacyTable>(&legacy)
            .map_err(UsernsError::State)?
        {
            for (uuid, block) in &table.ranges {
                ranges.write_block(uuid, &block.name, block.start)?;
            }
            persist::remove_durable(&legacy).map_err(|source| UsernsError::StateDir {
                path: legacy.clone(),
                source,
            })?;
        }
        let dir_error = |source| UsernsError::StateDir {
            path: dir.to_owned(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(dir_error)? {
            let path = entry.map_err(dir_error)?.path();
            // A temporary file of a write a killed daemon never finished:
            // the block file beside it (or none) is what holds.
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(persist::TEMP_PREFIX))
            {
                std::fs::remove_file(&path).map_err(dir_error)?;
                continue;
            }
            // Anything else that is not a block file is left alone.
            let Some(uuid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<Uuid>().ok())
            else {
                continue;
            };
            let block: BlockFile = persist::read_versioned(&path).map_err(UsernsError::State)?;
            let fits =
                range.block_of(block.start).is_some() && ranges.overlapping(block.start).is_none();
            if fits {
                ranges.hold(uuid, block.name, block.start, true);
            } else {
                // Forgotten, as the daemon logs: a new block at its next
                // start.
                persist::remove_durable(&path).map_err(dir_error)?;
                report.dropped.push((block.name, block.start));
            }
        }
        report.dropped.sort();
        Ok((ranges, report))
    }

    pub fn range(&self) -> IdRange {
        self.range
    }

    /// The first host id of `uuid`'s block, if it has one.
    pub fn assigned(&self, uuid: &Uuid) -> Option<u32> {
        self.by_domain.get(uuid).map(|a| a.start)
    }

    /// The block of `uuid` (its own if it has one), for a start. A
    /// persistent domain keeps it until [`release`](Self::release).
    pub fn assign(&mut self, uuid: Uuid, name: &str, persistent: bool) -> Result<u32, UsernsError> {
        let (start, record) = self.assign_unrecorded(uuid, name, persistent)?;
        if let Some(record) = record
            && let Err(error) = record.write()
        {
            self.unrecorded(&uuid);
            return Err(error);
        }
        Ok(start)
    }

    /// [`assign`](Self::assign), the new block of a persistent domain held
    /// in memory only: the caller writes its record (an `fsync` or two, off
    /// the task that owns the ranges) before the block is used, and calls
    /// [`unrecorded`](Self::unrecorded) if that fails or does not happen.
    pub fn assign_unrecorded(
        &mut self,
        uuid: Uuid,
        name: &str,
        persistent: bool,
    ) -> Result<(u32, Option<BlockRecord>), UsernsError> {
        if let Some(existing) = self.by_domain.get(&uuid) {
            return Ok((existing.start, None));
        }
        let block = (self.free_from..self.range.blocks())
            .find(|b| self.overlapping(self.range.block_start(*b)).is_none())
            .ok_or_else(|| UsernsError::Exhausted {
                domain: name.to_owned(),
                range: self.range,
            })?;
        let start = self.range.block_start(block);
        let record = persistent
            .then(|| self.block_path(&uuid))
            .flatten()
            .map(|path| BlockRecord {
                path,
                block: BlockFile {
                    name: name.to_owned(),
                    start,
                },
            });
        self.hold(uuid, name.to_owned(), start, persistent);
        self.free_from = block + 1;
        Ok((start, record))
    }

    /// Drops the hold of a block [`assign_unrecorded`](Self::assign_unrecorded)
    /// gave, whose record was not written: the next start assigns again.
    pub fn unrecorded(&mut self, uuid: &Uuid) {
        self.forget(uuid);
    }

    /// Reserve the block a running container uses (from its live
    /// definition, after a daemon restart). Its ids may lie outside the
    /// configured range (a range changed since): then they are only checked
    /// against the other reservations.
    pub fn reserve(
        &mut self,
        uuid: Uuid,
        name: &str,
        start: u32,
        persistent: bool,
    ) -> Result<(), UsernsError> {
        if self.by_domain.get(&uuid).is_some_and(|a| a.start == start) {
            return Ok(());
        }
        if let Some(other) = self.overlapping(start).filter(|other| **other != uuid) {
            return Err(UsernsError::Overlap {
                domain: name.to_owned(),
                other: self.by_domain[other].name.clone(),
                start,
                end: u64::from(start) + u64::from(BLOCK) - 1,
            });
        }
        self.forget(&uuid);
        self.hold(uuid, name.to_owned(), start, persistent);
        Ok(())
    }

    /// Every domain holding a block: (uuid, name).
    pub fn holders(&self) -> Vec<(Uuid, String)> {
        self.by_domain
            .iter()
            .map(|(uuid, a)| (*uuid, a.name.clone()))
            .collect()
    }

    /// Give `uuid`'s block back (undefine; a transient domain's stop).
    pub fn release(&mut self, uuid: &Uuid) -> Result<(), UsernsError> {
        let persisted = self.by_domain.get(uuid).is_some_and(|a| a.persistent);
        self.forget(uuid);
        if persisted {
            self.remove_block(uuid)
        } else {
            Ok(())
        }
    }

    /// A transient domain became persistent or the other way round.
    pub fn set_persistent(&mut self, uuid: &Uuid, persistent: bool) -> Result<(), UsernsError> {
        let Some(a) = self
            .by_domain
            .get(uuid)
            .filter(|a| a.persistent != persistent)
        else {
            return Ok(());
        };
        if persistent {
            let (name, start) = (a.name.clone(), a.start);
            self.write_block(uuid, &name, start)?;
        } else {
            self.remove_block(uuid)?;
        }
        if let Some(a) = self.by_domain.get_mut(uuid) {
            a.persistent = persistent;
        }
        Ok(())
    }

    /// The holder of a block overlapping the one starting at `start`.
    fn overlapping(&self, start: u32) -> Option<&Uuid> {
        let end = u64::from(start) + u64::from(BLOCK);
        // Held blocks never overlap: only the last one starting before
        // `end` can reach into this one.
        let (held, owner) = self
            .by_start
            .range(..=u32::try_from(end - 1).unwrap_or(u32::MAX))
            .next_back()?;
        (u64::from(*held) + u64::from(BLOCK) > u64::from(start)).then_some(owner)
    }

    fn hold(&mut self, uuid: Uuid, name: String, start: u32, persistent: bool) {
        self.by_start.insert(start, uuid);
        self.by_domain.insert(
            uuid,
            Assignment {
                name,
                start,
                persistent,
            },
        );
    }

    fn forget(&mut self, uuid: &Uuid) {
        let Some(a) = self.by_domain.remove(uuid) else {
            return;
        };
        self.by_start.remove(&a.start);
        // The blocks it overlapped may be free again.
        let first = a.start.saturating_sub(self.range.start) / BLOCK;
        self.free_from = self.free_from.min(first);
    }

    fn block_path(&self, uuid: &Uuid) -> Option<PathBuf> {
        self.state
            .as_ref()
            .map(|dir| dir.join(format!("{uuid}.json")))
    }

    fn write_block(&self, uuid: &Uuid, name: &str, start: u32) -> Result<(), UsernsError> {
        let Some(path) = self.block_path(uuid) else {
            return Ok(());
        };
        BlockRecord {
            path,
            block: BlockFile {
                name: name.to_owned(),
                start,
            },
        }
        .write()
    }

    fn remove_block(&self, uuid: &Uuid) -> Result<(), UsernsError> {
        let Some(path) = self.block_path(uuid) else {
            return Ok(());
        };
        match persist::remove_durable(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(UsernsError::StateDir { path, source }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn small() -> IdRange {
        IdRange {
            start: 100_000,
            count: 3 * BLOCK,
        }
    }

    #[test]
    fn ranges_parse_with_reasons() {
        assert_eq!(
            "1000000:1000000000".parse::<IdRange>(),
            Ok(IdRange::DEFAULT)
        );
        for (bad, why) in [
            ("100000", "START:COUNT"),
            ("0:65536", "host root"),
            ("100000:1000", "less than 65536"),
            ("100000:0", "less than 65536"),
            ("4294901760:131072", "past the last"),
            ("x:65536", "not a host id"),
        ] {
            let err = bad.parse::<IdRange>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn blocks_are_distinct_sticky_and_run_out_clearly() {
        let (mut r, _) = IdRanges::open(small(), None).unwrap();
        assert_eq!(r.assign(uuid(1), "a", true).unwrap(), 100_000);
        assert_eq!(r.assign(uuid(2), "b", false).unwrap(), 165_536);
        // The same domain keeps its block.
        assert_eq!(r.assign(uuid(1), "a", true).unwrap(), 100_000);
        assert_eq!(r.assign(uuid(3), "c", true).unwrap(), 231_072);
        let err = r.assign(uuid(4), "d", true).unwrap_err();
        assert!(err.to_string().contains("domain 'd'"), "{err}");
        assert!(err.to_string().contains("--userns-range"), "{err}");
        // A released block is handed out again.
        r.release(&uuid(2)).unwrap();
        assert_eq!(r.assign(uuid(4), "d", true).unwrap(), 165_536);
    }

    /// A new persistent block is held at once and written only by its
    /// record; a block whose record was not written goes back.
    #[test]
    fn an_unrecorded_block_is_held_until_written_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("userns");
        let (mut r, _) = IdRanges::open(small(), Some(&state)).unwrap();
        let (start, record) = r.assign_unrecorded(uuid(1), "a", true).unwrap();
        let record = record.expect("a persistent block has a record");
        assert_eq!(record.path(), state.join(format!("{}.json", uuid(1))));
        assert!(!record.path().exists());
        // Held: another domain gets the next block, the same one its own.
        assert_eq!(r.assign(uuid(2), "b", false).unwrap(), 165_536);
        assert_eq!(r.assign_unrecorded(uuid(1), "a", true).unwrap().0, start);
        assert!(r.assign_unrecorded(uuid(1), "a", true).unwrap().1.is_none());
        record.write().unwrap();
        let (reopened, _) = IdRanges::open(small(), Some(&state)).unwrap();
        assert_eq!(reopened.assigned(&uuid(1)), Some(start));
        // Not written: dropped, and handed out again.
        let (third, record) = r.assign_unrecorded(uuid(3), "c", true).unwrap();
        assert!(record.is_some());
        r.unrecorded(&uuid(3));
        assert_eq!(r.assigned(&uuid(3)), None);
        assert_eq!(r.assign(uuid(4), "d", false).unwrap(), third);
        // A transient domain's block has no record.
        r.release(&uuid(2)).unwrap();
        let (_, record) = r.assign_unrecorded(uuid(5), "e", false).unwrap();
        assert!(record.is_none());
    }

    #[test]
    fn persistent_blocks_survive_a_restart_and_transient_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("userns");
        {
            let (mut r, _) = IdRanges::open(small(), Some(&state)).unwrap();
            r.assign(uuid(1), "kept", true).unwrap();
            r.assign(uuid(2), "transient", false).unwrap();
            r.assign(uuid(3), "gone", true).unwrap();
            r.release(&uuid(3)).unwrap();
            // One file per persistent domain, nothing else.
            let mut files: Vec<_> = std::fs::read_dir(&state)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            files.sort();
            assert_eq!(files, [format!("{}.json", uuid(1))]);
        }
        // A write a killed daemon never finished leaves a temporary file:
        // removed, and the block beside it holds.
        let leftover = state.join(format!(".tmp-{}.json-4242", uuid(1)));
        std::fs::write(&leftover, b"{\"half").unwrap();
        let (mut r, report) = IdRanges::open(small(), Some(&state)).unwrap();
        assert!(!leftover.exists());
        assert_eq!(report, LoadReport::default());
        assert_eq!(r.holders(), [(uuid(1), "kept".to_owned())]);
        assert_eq!(r.assigned(&uuid(1)), Some(100_000));
        assert_eq!(r.assigned(&uuid(2)), None);
        assert_eq!(r.assigned(&uuid(3)), None);
        // A running transient container is reserved from its live XML.
        r.reserve(uuid(2), "transient", 165_536, false).unwrap();
        assert_eq!(r.assign(uuid(5), "new", true).unwrap(), 231_072);

        // A narrower range drops what no longer fits, and says so.
        let narrow = IdRange {
            start: 165_536,
            count: BLOCK,
        };
        let (r, report) = IdRanges::open(narrow, Some(&state)).unwrap();
        assert_eq!(r.assigned(&uuid(1)), None);
        assert_eq!(
            report.dropped,
            vec![("kept".to_string(), 100_000), ("new".to_string(), 231_072)]
        );
    }

    #[test]
    fn overlapping_reservations_name_both_domains() {
        let (mut r, _) = IdRanges::open(small(), None).unwrap();
        r.reserve(uuid(1), "web", 100_000, true).unwrap();
        let err = r.reserve(uuid(2), "db", 100_000 + 100, true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("'db'") && text.contains("'web'"), "{text}");
        // Outside the configured range: only checked against the others.
        r.reserve(uuid(3), "old", 5_000_000, true).unwrap();
        assert_eq!(r.assign(uuid(4), "next", true).unwrap(), 165_536);
    }

    #[test]
    fn bad_state_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("userns");
        std::fs::create_dir(&state).unwrap();
        let file = state.join(format!("{}.json", uuid(1)));
        std::fs::write(&file, b"{").unwrap();
        let err = IdRanges::open(small(), Some(&state)).unwrap_err();
        let text = crate::error_chain::error_chain(&err);
        assert!(
            text.starts_with("cannot use the id ranges state: ")
                && text.contains(&file.display().to_string()),
            "{text}"
        );
        std::fs::write(&file, br#"{"version":9,"name":"a","start":100000}"#).unwrap();
        let err = IdRanges::open(small(), Some(&state)).unwrap_err();
        assert!(
            matches!(
                err,
                UsernsError::State(PersistError::Newer { found: 9, .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn the_single_table_of_earlier_versions_is_split_into_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("userns");
        let legacy = dir.path().join("userns.json");
        std::fs::write(
            &legacy,
            format!(
                r#"{{"version":1,"ranges":{{"{}":{{"name":"web","start":165536,"persistent":true}},"{}":{{"name":"db","start":100000,"persistent":true}}}}}}"#,
                uuid(1),
                uuid(2)
            ),
        )
        .unwrap();
        let (mut r, report) = IdRanges::open(small(), Some(&state)).unwrap();
        assert_eq!(report, LoadReport::default());
        assert_eq!(r.assigned(&uuid(1)), Some(165_536));
        assert_eq!(r.assigned(&uuid(2)), Some(100_000));
        assert!(!legacy.exists());
        assert!(state.join(format!("{}.json", uuid(1))).exists());
        assert_eq!(r.assign(uuid(3), "new", true).unwrap(), 231_072);
        // And the files alone hold it at the next start.
        drop(r);
        let (r, _) = IdRanges::open(small(), Some(&state)).unwrap();
        assert_eq!(r.assigned(&uuid(1)), Some(165_536));
        assert_eq!(r.assigned(&uuid(3)), Some(231_072));
    }

    #[test]
    fn a_reservation_off_the_block_grid_keeps_the_blocks_it_overlaps() {
        let (mut r, _) = IdRanges::open(small(), None).unwrap();
        // A running container of an earlier --userns-range, across the
        // first two blocks of this one.
        r.reserve(uuid(1), "old", 100_000 + BLOCK / 2, false)
            .unwrap();
        assert_eq!(r.assign(uuid(2), "next", true).unwrap(), 231_072);
        r.release(&uuid(1)).unwrap();
        assert_eq!(r.assign(uuid(3), "again", true).unwrap(), 100_000);
        assert_eq!(r.assign(uuid(4), "more", true).unwrap(), 165_536);
    }

    proptest! {
        /// Whatever the order of assignments and releases, no two domains
        /// hold overlapping ids and every block lies in the range.
        #[test]
        fn blocks_never_overlap(ops in proptest::collection::vec((0u128..12, any::<bool>()), 1..200)) {
            let range = IdRange { start: 100_000, count: 8 * BLOCK };
            let (mut r, _) = IdRanges::open(range, None).unwrap();
            for (domain, assign) in ops {
                if assign {
                    let had = r.assigned(&uuid(domain));
                    // The lowest free block, as a full scan finds it.
                    let lowest = (0..range.blocks())
                        .map(|b| range.block_start(b))
                        .find(|s| !r.by_start.contains_key(s));
                    let got = r.assign(uuid(domain), "d", domain % 2 == 0).ok();
                    prop_assert_eq!(got, had.or(lowest));
                } else {
                    r.release(&uuid(domain)).unwrap();
                }
                let mut starts: Vec<u32> = r.by_domain.values().map(|a| a.start).collect();
                starts.sort_unstable();
                for pair in starts.windows(2) {
                    prop_assert!(pair[1] - pair[0] >= BLOCK);
                }
                for start in starts {
                    prop_assert!(range.block_of(start).is_some());
                }
            }
        }
    }
}
