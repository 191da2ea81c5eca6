//! CPU and NUMA node lists such as `0-3,^2,5`.
//!
//! A list is a comma-separated sequence of single ids (`5`), inclusive ranges
//! (`0-3`) and exclusions (`^2`, which remove an id added earlier). The
//! result must not be empty. Canonical form joins consecutive ids into
//! ranges in ascending order: `0-1,3,5`.

use std::collections::BTreeSet;
use std::fmt;

/// Ids at or above this are refused (the kernel's largest `NR_CPUS`).
pub const MAX_ID: u32 = 8192;

/// A non-empty set of CPU (or NUMA node) ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    /// Parses a list; the error is a short description of what is wrong.
    pub fn parse(text: &str) -> Result<CpuSet, String> {
        let mut set = BTreeSet::new();
        let text = text.trim();
        if text.is_empty() {
            return Err("the list is empty".into());
        }
        for item in text.split(',') {
            let item = item.trim();
            if let Some(excluded) = item.strip_prefix('^') {
                set.remove(&parse_id(excluded)?);
            } else if let Some((a, b)) = item.split_once('-') {
                let (a, b) = (parse_id(a)?, parse_id(b)?);
                if a > b {
                    return Err(format!("range '{item}' runs backwards"));
                }
                set.extend(a..=b);
            } else {
                set.insert(parse_id(item)?);
            }
        }
        if set.is_empty() {
            return Err("the list selects no id once exclusions are applied".into());
        }
        Ok(CpuSet(set))
    }

    /// Builds a set from ids; `None` when empty or an id is out of range.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Option<CpuSet> {
        let set: BTreeSet<u32> = ids.into_iter().collect();
        if set.is_empty() || set.iter().any(|&i| i >= MAX_ID) {
            return None;
        }
        Some(CpuSet(set))
    }

    /// Ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an empty set cannot be built.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_id(text: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{t}' is not a number"));
    }
    match t.parse::<u32>() {
        Ok(n) if n < MAX_ID => Ok(n),
        _ => Err(format!("id {t} is too large (the limit is {})", MAX_ID - 1)),
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_exclusions_and_formats_canonically() {
        let s = CpuSet::parse("0-3,^2,5").unwrap();
        assert_eq!(s.ids().collect::<Vec<_>>(), vec![0, 1, 3, 5]);
        assert_eq!(s.to_string(), "0-1,3,5");
        assert_eq!(CpuSet::parse("7,6,5,1").unwrap().to_string(), "1,5-7");
        assert_eq!(CpuSet::parse(" 0 , 2-2 ").unwrap().to_string(), "0,2");
        assert_eq!(CpuSet::parse("8191").unwrap().to_string(), "8191");
    }

    #[test]
    fn refuses_malformed_lists() {
        for bad in [
            "", "a", "1-", "-1", "3-1", "1,,2", "^1", "0,^0", "8192", "1-99999", "+1", "0x1",
        ] {
            assert!(CpuSet::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for text in ["0", "0-1", "0,2,4-9,11", "1-3,^2,9"] {
            let s = CpuSet::parse(text).unwrap();
            assert_eq!(CpuSet::parse(&s.to_string()).unwrap(), s);
        }
    }
}
