//! Id ranges for containers' user namespaces.
//!
//! A domain that runs unprivileged (`<lxvirt:userns mode='auto'/>`, the
//! default) gets a block of [`BLOCK`] host ids from the daemon's
//! subordinate range: root inside is the block's first id on the host.
//! Blocks never overlap. A persistent domain keeps its block while it is
//! defined (its writable image layer holds files in those ids), recorded in
//! a versioned state file written atomically; a transient domain's block is
//! held only while it runs. After a daemon restart the blocks of running
//! containers are reserved again from their live definitions, before
//! anything starts.

use std::collections::BTreeMap;
use std::fmt;
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
}

/// One domain's block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Assignment {
    name: String,
    /// First host id of the block.
    start: u32,
    /// Kept while the domain is defined (else only while it runs).
    persistent: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    /// Persistent domains' blocks, by uuid.
    ranges: BTreeMap<Uuid, Assignment>,
}

impl Versioned for StateFile {
    const VERSION: u32 = 1;
}

/// What loading the state found that the daemon should log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Recorded blocks outside the configured range, dropped: (domain,
    /// first host id).
    pub dropped: Vec<(String, u32)>,
}

/// The blocks handed out; owned by the manager task.
#[derive(Debug)]
pub struct IdRanges {
    range: IdRange,
    /// `None`: nothing persisted (tests).
    state: Option<PathBuf>,
    by_domain: BTreeMap<Uuid, Assignment>,
    /// Block index → owner.
    by_block: BTreeMap<u32, Uuid>,
}

impl IdRanges {
    /// The allocator over `range`, with the persistent blocks recorded in
    /// `state` (created when first needed).
    pub fn open(
        range: IdRange,
        state: Option<&Path>,
    ) -> Result<(IdRanges, LoadReport), UsernsError> {
        let mut ranges = IdRanges {
            range,
            state: state.map(Path::to_owned),
            by_domain: BTreeMap::new(),
            by_block: BTreeMap::new(),
        };
        let mut report = LoadReport::default();
        let Some(path) = state else {
            return Ok((ranges, report));
        };
        let Some(file) =
            persist::read_versioned_if_present::<StateFile>(path).map_err(UsernsError::State)?
        else {
            return Ok((ranges, report));
        };
        for (uuid, assignment) in file.ranges {
            match range.block_of(assignment.start) {
                Some(block) if !ranges.by_block.contains_key(&block) => {
                    ranges.by_block.insert(block, uuid);
                    ranges.by_domain.insert(uuid, assignment);
                }
                _ => report.dropped.push((assignment.name, assignment.start)),
            }
        }
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
        if let Some(existing) = self.by_domain.get(&uuid) {
            return Ok(existing.start);
        }
        let block = (0..self.range.blocks())
            .find(|b| !self.by_block.contains_key(b))
            .ok_or_else(|| UsernsError::Exhausted {
                domain: name.to_owned(),
                range: self.range,
            })?;
        let start = self.range.block_start(block);
        self.by_block.insert(block, uuid);
        self.by_domain.insert(
            uuid,
            Assignment {
                name: name.to_owned(),
                start,
                persistent,
            },
        );
        if persistent && let Err(e) = self.save() {
            self.forget(&uuid);
            return Err(e);
        }
        Ok(start)
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
        let end = u64::from(start) + u64::from(BLOCK);
        if let Some((other, _)) = self.by_domain.iter().find(|(other, a)| {
            **other != uuid
                && u64::from(a.start) < end
                && u64::from(start) < u64::from(a.start) + u64::from(BLOCK)
        }) {
            return Err(UsernsError::Overlap {
                domain: name.to_owned(),
                other: self.by_domain[other].name.clone(),
                start,
                end: end - 1,
            });
        }
        self.forget(&uuid);
        if let Some(block) = self.range.block_of(start) {
            self.by_block.insert(block, uuid);
        }
        self.by_domain.insert(
            uuid,
            Assignment {
                name: name.to_owned(),
                start,
                persistent,
            },
        );
        Ok(())
    }

    /// Give `uuid`'s block back (undefine; a transient domain's stop).
    pub fn release(&mut self, uuid: &Uuid) -> Result<(), UsernsError> {
        let persisted = self.by_domain.get(uuid).is_some_and(|a| a.persistent);
        self.forget(uuid);
        if persisted { self.save() } else { Ok(()) }
    }

    /// A transient domain became persistent or the other way round.
    pub fn set_persistent(&mut self, uuid: &Uuid, persistent: bool) -> Result<(), UsernsError> {
        match self.by_domain.get_mut(uuid) {
            Some(a) if a.persistent != persistent => {
                a.persistent = persistent;
                self.save()
            }
            _ => Ok(()),
        }
    }

    fn forget(&mut self, uuid: &Uuid) {
        if let Some(a) = self.by_domain.remove(uuid)
            && let Some(block) = self.range.block_of(a.start)
            && self.by_block.get(&block) == Some(uuid)
        {
            self.by_block.remove(&block);
        }
    }

    fn save(&self) -> Result<(), UsernsError> {
        let Some(path) = &self.state else {
            return Ok(());
        };
        let file = StateFile {
            ranges: self
                .by_domain
                .iter()
                .filter(|(_, a)| a.persistent)
                .map(|(u, a)| (*u, a.clone()))
                .collect(),
        };
        persist::write_versioned(path, &file, 0o600, Durability::Durable)
            .map_err(UsernsError::State)
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

    #[test]
    fn persistent_blocks_survive_a_restart_and_transient_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("userns.json");
        {
            let (mut r, _) = IdRanges::open(small(), Some(&state)).unwrap();
            r.assign(uuid(1), "kept", true).unwrap();
            r.assign(uuid(2), "transient", false).unwrap();
            r.assign(uuid(3), "gone", true).unwrap();
            r.release(&uuid(3)).unwrap();
        }
        let (mut r, report) = IdRanges::open(small(), Some(&state)).unwrap();
        assert_eq!(report, LoadReport::default());
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
        let state = dir.path().join("userns.json");
        std::fs::write(&state, b"{").unwrap();
        let err = IdRanges::open(small(), Some(&state)).unwrap_err();
        let text = crate::error_chain::error_chain(&err);
        assert!(
            text.starts_with("cannot use the id ranges state: ") && text.contains("userns.json"),
            "{text}"
        );
        std::fs::write(&state, br#"{"version":9,"ranges":{}}"#).unwrap();
        let err = IdRanges::open(small(), Some(&state)).unwrap_err();
        assert!(
            matches!(
                err,
                UsernsError::State(PersistError::Newer { found: 9, .. })
            ),
            "{err}"
        );
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
                    let _ = r.assign(uuid(domain), "d", domain % 2 == 0);
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
