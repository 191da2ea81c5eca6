//! `enter` for a VM: the command runs in the guest through the guest
//! agent's `guest-exec` ([`super::agent`]).
//!
//! guest-exec is not a terminal session: it takes the command's whole
//! stdin with the request and hands back its whole output once it ended.
//! So the driver reads the caller's stdin to its end first (when it is
//! not a terminal: a terminal gives no input, the command gets none),
//! at most [`MAX_INPUT`]; starts the command; and a task asks
//! `guest-exec-status` until it ended (every 10 ms at first, backing off
//! to 200 ms), then writes its stdout and stderr to the caller's and the
//! exit line ([`EnterExit`], the LXC driver's format) to the exit pipe.
//! The pid reported is the command's pid in the guest.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::agent::{Agent, AgentError, ExecCommand, ExecStatus};
use super::instance::QemuError;
use crate::driver::EnterExit;

/// The most of stdin a command gets: guest-exec carries it in base64 in
/// one JSON request, which qemu-ga reads whole.
pub(super) const MAX_INPUT: usize = 1 << 20;

/// The first wait before asking whether the command ended, and the
/// longest, between which each wait doubles.
const FIRST_POLL: Duration = Duration::from_millis(10);
const LAST_POLL: Duration = Duration::from_millis(200);

/// Agent failures in a row after which the command's end is given up.
const GIVE_UP_AFTER: u32 = 3;

/// Starts `argv` in the guest with `stdio`; its guest pid and the read
/// end of its exit pipe.
pub(super) async fn enter(
    domain: &str,
    agent: Arc<Agent>,
    argv: Vec<String>,
    env: Vec<String>,
    stdio: [OwnedFd; 3],
) -> Result<(i32, OwnedFd), QemuError> {
    let [stdin, stdout, stderr] = stdio;
    let input = tokio::task::spawn_blocking(move || read_input(stdin.as_fd()))
        .await
        .map_err(|source| QemuError::Task {
            domain: domain.to_owned(),
            source,
        })?
        .map_err(|source| QemuError::Input {
            domain: domain.to_owned(),
            source,
        })?
        .ok_or_else(|| QemuError::InputTooLarge {
            domain: domain.to_owned(),
        })?;
    let command = ExecCommand {
        argv,
        env,
        input,
        capture_output: true,
    };
    let pid = agent.exec(&command).await?;
    let (exit_read, exit_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| QemuError::Input {
            domain: domain.to_owned(),
            source: errno.into(),
        })?;
    tracing::debug!(domain = %domain, pid, "command started through the guest agent");
    let output = Output {
        stdout,
        stderr,
        exit: exit_write,
    };
    tokio::spawn(wait_for(domain.to_owned(), agent, pid, output));
    Ok((i32::try_from(pid).unwrap_or(0), exit_read))
}

/// Where a command's results go: the caller's stdout and stderr, and the
/// exit pipe.
struct Output {
    stdout: OwnedFd,
    stderr: OwnedFd,
    exit: OwnedFd,
}

/// Asks the agent until command `pid` ended, then hands its results on.
/// When the agent cannot say (the VM stopped, qemu-ga went away), the
/// caller's stderr says so and the exit pipe closes without a line.
async fn wait_for(domain: String, agent: Arc<Agent>, pid: i64, output: Output) {
    let mut delay = FIRST_POLL;
    let mut failures = 0;
    let status = loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LAST_POLL);
        match agent.exec_status(pid).await {
            Ok(status) if status.exited => break Ok(status),
            Ok(_) => failures = 0,
            Err(error) => {
                failures += 1;
                // A closed channel or an unknown pid will not get better.
                let lasting = matches!(
                    error,
                    AgentError::Connect { .. } | AgentError::Command { .. }
                );
                if lasting || failures >= GIVE_UP_AFTER {
                    break Err(error);
                }
            }
        }
    };
    if let Err(error) = &status {
        tracing::debug!(domain = %domain, pid, error = %crate::error_chain::error_chain(error), "the end of a command run through the guest agent is unknown");
    }
    let _ = tokio::task::spawn_blocking(move || deliver(status, &output)).await;
}

/// Writes what the command printed and how it ended.
fn deliver(status: Result<ExecStatus, AgentError>, output: &Output) {
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            let line = format!(
                "lxvirt enter: the command's end is unknown: {}\n",
                crate::error_chain::error_chain(&error)
            );
            let _ = write_all(output.stderr.as_fd(), line.as_bytes());
            return;
        }
    };
    let _ = write_all(output.stdout.as_fd(), &status.stdout);
    let _ = write_all(output.stderr.as_fd(), &status.stderr);
    if status.stdout_truncated || status.stderr_truncated {
        let note =
            "lxvirt enter: the guest agent kept only the first 16 MiB of the command's output\n";
        let _ = write_all(output.stderr.as_fd(), note.as_bytes());
    }
    let exit = exit_of(&status);
    let _ = write_all(output.exit.as_fd(), &exit.line());
}

/// How the command ended, as the LXC driver reports it.
fn exit_of(status: &ExecStatus) -> EnterExit {
    match (status.signal, status.exit_code) {
        (Some(signal), _) => EnterExit::Signaled { signal },
        (None, Some(code)) => EnterExit::Exited { code },
        // qemu-ga says exited without a status only if it could not wait.
        (None, None) => EnterExit::Signaled { signal: 9 },
    }
}

/// The caller's stdin up to its end, or nothing for a terminal; `None`
/// when it holds more than [`MAX_INPUT`].
fn read_input(fd: BorrowedFd<'_>) -> std::io::Result<Option<Vec<u8>>> {
    let stat = nix::sys::stat::fstat(fd)?;
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    // A terminal gives no input. One that may not even be asked (SELinux
    // refuses the ioctl) is taken for a terminal too: reading it would
    // wait for an end that never comes.
    if kind == nix::sys::stat::SFlag::S_IFCHR && nix::unistd::isatty(fd).unwrap_or(true) {
        return Ok(Some(Vec::new()));
    }
    let mut input = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match nix::unistd::read(fd, &mut buffer) {
            Ok(0) => return Ok(Some(input)),
            Ok(n) => {
                input.extend_from_slice(&buffer[..n]);
                if input.len() > MAX_INPUT {
                    return Ok(None);
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait(fd, PollFlags::POLLIN),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Writes all of `data` to `fd`, waiting when it is a full non-blocking
/// pipe.
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait(fd, PollFlags::POLLOUT),
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Blocks until `fd` is ready for `events` (a descriptor the caller set
/// non-blocking).
fn wait(fd: BorrowedFd<'_>, events: PollFlags) {
    let _ = poll(&mut [PollFd::new(fd, events)], PollTimeout::NONE);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    #[test]
    fn the_exit_line_is_the_lxc_drivers() {
        let status = |exit_code, signal| ExecStatus {
            exited: true,
            exit_code,
            signal,
            ..ExecStatus::default()
        };
        let line = |s: &ExecStatus| String::from_utf8(exit_of(s).line()).unwrap();
        assert_eq!(line(&status(Some(0), None)), "{\"exited\":{\"code\":0}}\n");
        assert_eq!(line(&status(Some(3), None)), "{\"exited\":{\"code\":3}}\n");
        assert_eq!(
            line(&status(None, Some(15))),
            "{\"signaled\":{\"signal\":15}}\n"
        );
    }

    /// A pipe is read to its end, and refused past the cap; /dev/null is
    /// empty input.
    #[test]
    fn stdin_is_read_to_its_end_within_the_cap() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || write_all(write.as_fd(), b"some input").unwrap());
        assert_eq!(read_input(read.as_fd()).unwrap().unwrap(), b"some input");
        writer.join().unwrap();

        let (read, write) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            // Past the cap; the reader stops and closes its end.
            let _ = write_all(write.as_fd(), &vec![b'x'; MAX_INPUT + 70_000]);
        });
        assert!(read_input(read.as_fd()).unwrap().is_none());
        drop(read);
        writer.join().unwrap();

        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(read_input(null.as_fd()).unwrap().unwrap(), b"");
    }
}
