//! The MCS allocator: one level (`s0:cX,cY`) per running domain.
//!
//! Dynamic labels get two distinct random categories `cX < cY` from the
//! daemon's range that no other running domain holds. Static labels are
//! recorded too, so that no dynamic label is ever given their level;
//! domains with static labels may share a level on purpose (to share
//! files), a dynamic level is never shared.

use std::collections::{BTreeSet, HashMap};

use rand::Rng;

use super::SecurityError;
use super::detect::CategoryRange;

/// Who holds a level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Dynamic(String),
    /// Static labels, by domain name.
    Static(BTreeSet<String>),
}

impl Holder {
    fn first(&self) -> &str {
        match self {
            Holder::Dynamic(domain) => domain,
            Holder::Static(domains) => domains.iter().next().map_or("", String::as_str),
        }
    }
}

/// Random tries before the allocator looks at every pair in turn.
const RANDOM_TRIES: usize = 64;

#[derive(Debug, Clone)]
pub struct McsAllocator {
    range: CategoryRange,
    levels: HashMap<String, Holder>,
    /// Each domain's level.
    domains: HashMap<String, String>,
}

impl McsAllocator {
    pub fn new(range: CategoryRange) -> McsAllocator {
        McsAllocator {
            range,
            levels: HashMap::new(),
            domains: HashMap::new(),
        }
    }

    pub fn range(&self) -> &CategoryRange {
        &self.range
    }

    /// The level a domain holds.
    pub fn level_of(&self, domain: &str) -> Option<&str> {
        self.domains.get(domain).map(String::as_str)
    }

    /// How many levels are held.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    fn level(&self, a: u16, b: u16) -> String {
        format!("{}:c{a},c{b}", self.range.sensitivity)
    }

    /// A fresh level for `domain`, reserved for it (replacing any it held).
    pub fn allocate(&mut self, domain: &str, rng: &mut impl Rng) -> Result<String, SecurityError> {
        self.release(domain);
        let cats = &self.range.categories;
        let n = cats.len();
        let mut chosen = None;
        for _ in 0..RANDOM_TRIES {
            let i = rng.random_range(0..n);
            let j = rng.random_range(0..n);
            if i == j {
                continue;
            }
            let level = self.level(cats[i.min(j)], cats[i.max(j)]);
            if !self.levels.contains_key(&level) {
                chosen = Some(level);
                break;
            }
        }
        if chosen.is_none() {
            // Nearly full: take the first free pair after a random start.
            let start = rng.random_range(0..n);
            chosen = (0..n)
                .map(|k| (start + k) % n)
                .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                .map(|(i, j)| self.level(cats[i], cats[j]))
                .find(|level| !self.levels.contains_key(level));
        }
        let level = chosen.ok_or_else(|| SecurityError::Exhausted {
            domain: domain.to_owned(),
            range: self.range.categories_text(),
        })?;
        self.levels
            .insert(level.clone(), Holder::Dynamic(domain.to_owned()));
        self.domains.insert(domain.to_owned(), level.clone());
        Ok(level)
    }

    /// Records that `domain` runs with `level` (a daemon restart, or a
    /// static label). A dynamic level held by anyone else, or a static one
    /// held by a dynamic label, is an error naming both domains.
    pub fn reserve(
        &mut self,
        domain: &str,
        level: &str,
        dynamic: bool,
    ) -> Result<(), SecurityError> {
        if self.domains.get(domain).is_some_and(|l| l == level) {
            return Ok(());
        }
        if let Some(holder) = self.levels.get(level) {
            let conflict = match holder {
                Holder::Dynamic(other) => other != domain,
                Holder::Static(_) => dynamic,
            };
            if conflict {
                return Err(SecurityError::LevelTaken {
                    domain: domain.to_owned(),
                    level: level.to_owned(),
                    other: holder.first().to_owned(),
                });
            }
        }
        self.release(domain);
        match self.levels.get_mut(level) {
            Some(Holder::Static(domains)) => {
                domains.insert(domain.to_owned());
            }
            _ => {
                let holder = if dynamic {
                    Holder::Dynamic(domain.to_owned())
                } else {
                    Holder::Static(BTreeSet::from([domain.to_owned()]))
                };
                self.levels.insert(level.to_owned(), holder);
            }
        }
        self.domains.insert(domain.to_owned(), level.to_owned());
        Ok(())
    }

    /// Frees `domain`'s level; nothing when it holds none.
    pub fn release(&mut self, domain: &str) {
        let Some(level) = self.domains.remove(domain) else {
            return;
        };
        let now_free = match self.levels.get_mut(&level) {
            Some(Holder::Static(domains)) => {
                domains.remove(domain);
                domains.is_empty()
            }
            Some(Holder::Dynamic(_)) => true,
            None => false,
        };
        if now_free {
            self.levels.remove(&level);
        }
    }
}

/// The level (`s0:c1,c2`) of a context `user:role:type:level`.
pub fn level_of_context(context: &str) -> Option<&str> {
    context.splitn(4, ':').nth(3).filter(|l| !l.is_empty())
}

/// `context` with its level replaced by `level`.
pub fn with_level(context: &str, level: &str) -> String {
    let base: Vec<&str> = context.splitn(4, ':').take(3).collect();
    format!("{}:{level}", base.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn small() -> CategoryRange {
        CategoryRange::from_context("u:r:t:s0-s0:c0.c7").unwrap()
    }

    fn cats(level: &str) -> (u16, u16) {
        let (_, pair) = level.split_once(':').unwrap();
        let (a, b) = pair.split_once(',').unwrap();
        (a[1..].parse().unwrap(), b[1..].parse().unwrap())
    }

    #[test]
    fn pairs_are_ordered_distinct_and_in_range() {
        let range = CategoryRange::from_context("u:r:t:s0-s0:c100.c107").unwrap();
        let mut mcs = McsAllocator::new(range);
        let mut rng = StdRng::seed_from_u64(1);
        // All 28 pairs of 8 categories, then none is left.
        let mut seen = BTreeSet::new();
        for i in 0..28 {
            let level = mcs.allocate(&format!("d{i}"), &mut rng).unwrap();
            assert!(level.starts_with("s0:c"), "{level}");
            let (a, b) = cats(&level);
            assert!(a < b && (100..=107).contains(&a) && (100..=107).contains(&b));
            assert!(seen.insert(level));
        }
        let err = mcs.allocate("late", &mut rng).unwrap_err();
        assert!(err.to_string().contains("late"), "{err}");
        mcs.release("d3");
        let level = mcs.allocate("late", &mut rng).unwrap();
        assert!(!mcs.domains.iter().any(|(d, l)| d != "late" && *l == level));
    }

    #[test]
    fn a_new_allocation_replaces_the_old_one() {
        let mut mcs = McsAllocator::new(small());
        let mut rng = StdRng::seed_from_u64(2);
        mcs.allocate("web", &mut rng).unwrap();
        mcs.allocate("web", &mut rng).unwrap();
        assert_eq!(mcs.len(), 1);
        mcs.release("web");
        assert!(mcs.is_empty());
        mcs.release("web");
    }

    #[test]
    fn reserved_levels_are_never_allocated() {
        let mut mcs = McsAllocator::new(small());
        let mut rng = StdRng::seed_from_u64(3);
        // 27 of the 28 pairs taken by static and restored labels.
        let mut k = 0;
        for a in 0..8u16 {
            for b in a + 1..8 {
                if (a, b) == (5, 6) {
                    continue;
                }
                mcs.reserve(&format!("r{k}"), &format!("s0:c{a},c{b}"), k % 2 == 0)
                    .unwrap();
                k += 1;
            }
        }
        assert_eq!(mcs.allocate("new", &mut rng).unwrap(), "s0:c5,c6");
    }

    #[test]
    fn duplicates_name_both_domains() {
        let mut mcs = McsAllocator::new(small());
        mcs.reserve("web", "s0:c1,c2", true).unwrap();
        // Reserving again for the same domain is fine.
        mcs.reserve("web", "s0:c1,c2", true).unwrap();
        let err = mcs.reserve("db", "s0:c1,c2", true).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("'db'") && message.contains("'web'"),
            "{message}"
        );
        // A static label cannot take a dynamic domain's level either.
        assert!(mcs.reserve("st", "s0:c1,c2", false).is_err());
        // Static labels may share a level; a dynamic one may not join.
        mcs.reserve("s1", "s0:c3,c4", false).unwrap();
        mcs.reserve("s2", "s0:c3,c4", false).unwrap();
        let err = mcs.reserve("dyn", "s0:c3,c4", true).unwrap_err();
        assert!(err.to_string().contains("'s1'"), "{err}");
        mcs.release("s1");
        assert!(mcs.reserve("dyn", "s0:c3,c4", true).is_err());
        mcs.release("s2");
        mcs.reserve("dyn", "s0:c3,c4", true).unwrap();
    }

    #[test]
    fn context_levels() {
        assert_eq!(level_of_context("u:r:t:s0:c1,c2"), Some("s0:c1,c2"));
        assert_eq!(
            level_of_context("u:r:t:s0-s0:c0.c1023"),
            Some("s0-s0:c0.c1023")
        );
        assert_eq!(level_of_context("u:r:t"), None);
        assert_eq!(with_level("u:r:t:s0", "s0:c1,c2"), "u:r:t:s0:c1,c2");
        assert_eq!(with_level("u:r:t", "s0:c1,c2"), "u:r:t:s0:c1,c2");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

        /// 10,000 allocations interleaved with releases never give two
        /// running domains the same level.
        #[test]
        fn no_duplicates_over_ten_thousand_allocations(
            seed in any::<u64>(),
            steps in proptest::collection::vec((any::<u8>(), proptest::option::of(any::<u8>())), 10_000),
            narrow in any::<bool>(),
        ) {
            let range = if narrow {
                // 496 pairs for up to 256 running domains.
                CategoryRange::from_context("u:r:t:s0-s0:c0.c31").unwrap()
            } else {
                CategoryRange::unconstrained()
            };
            let mut mcs = McsAllocator::new(range.clone());
            let mut rng = StdRng::seed_from_u64(seed);
            let mut running: HashMap<String, String> = HashMap::new();
            for (allocate, release) in steps {
                let name = format!("d{allocate}");
                running.remove(&name);
                let level = mcs.allocate(&name, &mut rng).unwrap();
                let (a, b) = cats(&level);
                prop_assert!(a < b);
                prop_assert!(range.categories.contains(&a) && range.categories.contains(&b));
                prop_assert!(!running.values().any(|l| *l == level), "{} given twice", level);
                running.insert(name, level);
                if let Some(release) = release {
                    let name = format!("d{release}");
                    running.remove(&name);
                    mcs.release(&name);
                }
                prop_assert_eq!(mcs.len(), running.len());
            }
        }
    }
}
