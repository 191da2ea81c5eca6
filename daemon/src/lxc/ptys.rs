//! The kernel's pty limit, as container starts draw on it.
//!
//! Every console is a pty. Those of a container come from its own devpts
//! instance, but the kernel counts ptys of every instance together
//! (`kernel.pty.nr`) against `kernel.pty.max` (4,096 by default), and keeps
//! `kernel.pty.reserve` (1,024) of them for the host's own instance: the
//! containers' instances get ENOSPC past `max - reserve`, 3,072 consoles
//! on a default host. Before a start, lxvirtd makes sure its consoles fit:
//! near the limit it raises `kernel.pty.max` (doubling it, up to the
//! ceiling the administrator allows, `--pty-max-limit`), and past the
//! ceiling it refuses the start with a message naming both settings,
//! before anything of the container is made.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a container's consoles would not fit.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error(
        "domain '{domain}': no console pty left: {in_use} of the {usable} ptys containers may use are in use (kernel.pty.max {max} less kernel.pty.reserve {reserve}), and lxvirtd may not raise kernel.pty.max past {ceiling}; raise --pty-max-limit, or kernel.pty.max by hand (sysctl -w kernel.pty.max=N)"
    )]
    Exhausted {
        domain: String,
        in_use: u64,
        usable: u64,
        max: u64,
        reserve: u64,
        ceiling: u64,
    },
    #[error(
        "domain '{domain}': cannot raise kernel.pty.max from {from} to {to} for its consoles ({in_use} ptys in use); raise it by hand (sysctl -w kernel.pty.max=N)"
    )]
    Raise {
        domain: String,
        from: u64,
        to: u64,
        in_use: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The kernel's most ptys: `kernel.pty.max` cannot go higher.
pub const KERNEL_PTY_MAX: u64 = 1 << 20;

/// The pty limit of one host, as seen from `/proc/sys/kernel/pty`.
#[derive(Debug)]
pub struct PtyPool {
    dir: PathBuf,
    /// The most `kernel.pty.max` may be raised to.
    ceiling: u64,
    /// `max - reserve` below which no file needs reading: ptys in use are
    /// read only once the count could come near it.
    quiet_below: AtomicU64,
    /// Consoles asked for since `quiet_below` was last computed.
    asked: AtomicU64,
}

impl PtyPool {
    pub fn new(ceiling: u64) -> PtyPool {
        PtyPool::at("/proc/sys/kernel/pty".into(), ceiling)
    }

    /// A pool whose `nr`, `max` and `reserve` files are in `dir` (tests).
    pub fn at(dir: PathBuf, ceiling: u64) -> PtyPool {
        PtyPool {
            dir,
            ceiling: ceiling.min(KERNEL_PTY_MAX),
            quiet_below: AtomicU64::new(0),
            asked: AtomicU64::new(0),
        }
    }

    fn read(&self, name: &str) -> Result<u64, PtyError> {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| PtyError::Read {
            path: path.clone(),
            source,
        })?;
        text.trim().parse().map_err(|_| PtyError::Read {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
        })
    }

    /// Makes sure `consoles` more ptys fit for `domain`'s instance,
    /// raising `kernel.pty.max` when the containers' share comes near it.
    /// Cheap while far from the limit: the files are read again only
    /// after an eighth of the room left has been asked for.
    pub fn make_room(&self, domain: &str, consoles: u64) -> Result<(), PtyError> {
        let asked = self.asked.fetch_add(consoles, Ordering::Relaxed) + consoles;
        if asked < self.quiet_below.load(Ordering::Relaxed) {
            return Ok(());
        }
        let in_use = self.read("nr")?;
        let max = self.read("max")?;
        let reserve = self.read("reserve")?;
        let usable = max.saturating_sub(reserve);
        let wanted = in_use + consoles;
        // Raised at seven eighths: parallel starts do not all meet ENOSPC
        // while one of them raises it.
        let max = if wanted > usable - usable / 8 {
            let to = (max * 2)
                .max((wanted + reserve) * 2)
                .min(self.ceiling)
                .max(max);
            if wanted > to.saturating_sub(reserve) {
                return Err(PtyError::Exhausted {
                    domain: domain.to_owned(),
                    in_use,
                    usable,
                    max,
                    reserve,
                    ceiling: self.ceiling,
                });
            }
            if to > max {
                std::fs::write(self.dir.join("max"), to.to_string()).map_err(|source| {
                    PtyError::Raise {
                        domain: domain.to_owned(),
                        from: max,
                        to,
                        in_use,
                        source,
                    }
                })?;
                tracing::info!(
                    domain,
                    from = max,
                    to,
                    in_use,
                    "raised kernel.pty.max: every container console is a pty"
                );
            }
            to
        } else {
            max
        };
        let room = max.saturating_sub(reserve).saturating_sub(wanted);
        self.asked.store(0, Ordering::Relaxed);
        self.quiet_below.store(room / 8, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pool(nr: u64, max: u64, reserve: u64, ceiling: u64) -> (tempfile::TempDir, PtyPool) {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [("nr", nr), ("max", max), ("reserve", reserve)] {
            std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        let pool = PtyPool::at(dir.path().to_owned(), ceiling);
        (dir, pool)
    }

    fn max(dir: &tempfile::TempDir) -> u64 {
        std::fs::read_to_string(dir.path().join("max"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn far_from_the_limit_nothing_changes() {
        let (dir, pool) = pool(10, 4096, 1024, 65536);
        pool.make_room("web", 1).unwrap();
        assert_eq!(max(&dir), 4096);
    }

    #[test]
    fn near_the_containers_share_the_limit_doubles() {
        // 2,700 of 3,072 usable: past seven eighths.
        let (dir, pool) = pool(2700, 4096, 1024, 65536);
        pool.make_room("web", 1).unwrap();
        assert_eq!(max(&dir), 8192);
    }

    #[test]
    fn the_ceiling_bounds_the_raise_and_past_it_the_start_is_refused() {
        let (dir, pool) = pool(2700, 4096, 1024, 5000);
        pool.make_room("web", 1).unwrap();
        assert_eq!(max(&dir), 5000);
        // A daemon that starts at the ceiling, every pty but the reserve
        // in use.
        std::fs::write(dir.path().join("nr"), "3976\n").unwrap();
        let pool = PtyPool::at(dir.path().to_owned(), 5000);
        let error = pool.make_room("web", 1).unwrap_err().to_string();
        assert_eq!(max(&dir), 5000);
        assert!(
            error.starts_with("domain 'web': no console pty left: 3976 of the 3976 ptys containers may use are in use (kernel.pty.max 5000 less kernel.pty.reserve 1024)"),
            "{error}"
        );
        assert!(error.contains("--pty-max-limit"), "{error}");
    }

    #[test]
    fn a_limit_set_higher_by_hand_stays() {
        let (dir, pool) = pool(100, 200_000, 1024, 65536);
        pool.make_room("web", 1).unwrap();
        assert_eq!(max(&dir), 200_000);
    }

    #[test]
    fn the_files_are_read_again_once_an_eighth_of_the_room_was_asked_for() {
        let (dir, pool) = pool(10, 4096, 1024, 65536);
        pool.make_room("web", 1).unwrap();
        // The room was 3,061: nothing is read for the next 381 consoles,
        // even if the count jumped meanwhile (other users of ptys).
        std::fs::write(dir.path().join("nr"), "3000\n").unwrap();
        for _ in 0..381 {
            pool.make_room("web", 1).unwrap();
        }
        assert_eq!(max(&dir), 4096);
        pool.make_room("web", 1).unwrap();
        assert_eq!(max(&dir), 8192);
    }
}
