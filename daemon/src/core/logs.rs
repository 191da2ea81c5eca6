//! `logs`: a domain's console output as its driver keeps it (a container's
//! monitor writes a rotated file, qemu a copy of the first serial port),
//! streamed to the caller through a pipe: what is kept so far, then, when
//! following, what comes until the domain stops or the reader goes.
//!
//! The daemon reads the files, so a client needs no access to them; a
//! follower polls its file (a cheap fstat and read), as `tail -f` does
//! where it cannot watch, and survives the file's rotation.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use uuid::Uuid;

use super::ManagerHandle;
use super::types::{CoreError, Lookup};

/// How often a follower looks for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Every this many looks, it checks that the domain still runs.
const STATE_CHECK_EVERY: u32 = 10;

/// What the caller wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Go on with new output until the domain stops.
    pub follow: bool,
    /// Only the last this many lines of what is kept so far.
    pub tail: Option<usize>,
}

/// The files that keep a domain's console output, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    pub domain: String,
    pub files: Vec<PathBuf>,
}

/// The read end of a pipe that yields the log as `options` say; the
/// stream runs in a task of its own.
pub async fn open(
    handle: &ManagerHandle,
    uuid: Uuid,
    options: LogOptions,
) -> Result<OwnedFd, CoreError> {
    let source = handle.console_log(uuid).await?;
    if source.files.is_empty() {
        return Err(CoreError::NoConsoleLog {
            domain: source.domain,
        });
    }
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| CoreError::LogPipe {
            domain: source.domain.clone(),
            source: std::io::Error::from(errno),
        })?;
    let writer = pipe::Sender::from_owned_fd(write).map_err(|source_error| CoreError::LogPipe {
        domain: source.domain.clone(),
        source: source_error,
    })?;
    let handle = handle.clone();
    tokio::spawn(async move {
        stream(&handle, uuid, source.files, options, writer).await;
    });
    Ok(read)
}

async fn stream(
    handle: &ManagerHandle,
    uuid: Uuid,
    files: Vec<PathBuf>,
    options: LogOptions,
    mut writer: pipe::Sender,
) {
    let mut history = Vec::new();
    let mut current = None;
    let last = files.len().saturating_sub(1);
    for (index, path) in files.iter().enumerate() {
        let Ok(mut file) = tokio::fs::File::open(path).await else {
            continue;
        };
        if file.read_to_end(&mut history).await.is_err() {
            continue;
        }
        if index == last {
            current = Some(file);
        }
    }
    let shown = match options.tail {
        Some(lines) => last_lines(&history, lines),
        None => &history[..],
    };
    if writer.write_all(shown).await.is_err() || !options.follow {
        return;
    }
    drop(history);
    let Some(path) = files.last() else {
        return;
    };
    let mut looks = 0u32;
    let mut buffer = Vec::new();
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        looks = looks.wrapping_add(1);
        // The domain's state first: what it wrote before it stopped is
        // read below, then the stream ends.
        let stopped = looks.is_multiple_of(STATE_CHECK_EVERY) && !is_active(handle, uuid).await;
        if let Some(file) = &mut current {
            buffer.clear();
            if file.read_to_end(&mut buffer).await.is_ok()
                && !buffer.is_empty()
                && writer.write_all(&buffer).await.is_err()
            {
                return;
            }
        }
        // Rotated (or made at the start): read the new file from its start.
        if let Ok(on_disk) = tokio::fs::metadata(path).await {
            let ours = match &current {
                Some(file) => file.metadata().await.ok().map(|m| m.ino()),
                None => None,
            };
            if ours != Some(on_disk.ino()) {
                current = tokio::fs::File::open(path).await.ok();
                continue;
            }
        }
        if stopped || reader_gone(&writer) {
            return;
        }
    }
}

async fn is_active(handle: &ManagerHandle, uuid: Uuid) -> bool {
    handle
        .lookup(Lookup::Uuid(uuid))
        .await
        .is_ok_and(|summary| summary.state.is_active())
}

/// Whether the pipe's reader has closed it (then a write would fail).
fn reader_gone(writer: &pipe::Sender) -> bool {
    let mut fds = [PollFd::new(writer.as_fd(), PollFlags::POLLOUT)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// The last `lines` lines of `text` (a last line without its newline
/// counts).
fn last_lines(text: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1);
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }
}
