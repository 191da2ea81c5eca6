//! `lxvirt console`: relay a terminal to a console channel.

use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};

/// Ctrl-]: detaches, as virsh console does.
const ESCAPE: u8 = 0x1d;

/// Puts the terminal back as it was, also on early return.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> nix::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Relays stdin to the console and the console to stdout until Ctrl-] or
/// the console closes. When stdin is not a terminal and ends, the output
/// is drained until it has been quiet for a moment, so scripts can pipe
/// input in and read the answer.
pub fn attach(name: &str, console: OwnedFd) -> std::io::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Connected to domain '{name}'\r\nEscape character is ^]\r");
    }
    let raw = RawMode::enter().map_err(std::io::Error::from)?;
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buffer = [0u8; 4096];
    loop {
        let timeout = if stdin_open {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(Duration::from_millis(300)).unwrap_or(PollTimeout::ZERO)
        };
        let mut fds = vec![PollFd::new(console.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let console_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stdin_ready = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty());
        if console_ready {
            let n = nix::unistd::read(&console, &mut buffer)?;
            if n == 0 {
                break;
            }
            write_all(std::io::stdout().as_fd(), &buffer[..n])?;
        }
        if stdin_ready {
            let n = nix::unistd::read(stdin.as_fd(), &mut buffer)?;
            if n == 0 {
                stdin_open = false;
                continue;
            }
            let data = &buffer[..n];
            if interactive && let Some(at) = data.iter().position(|&b| b == ESCAPE) {
                write_all(console.as_fd(), &data[..at])?;
                break;
            }
            write_all(console.as_fd(), data)?;
        }
    }
    drop(raw);
    if interactive {
        eprintln!();
    }
    Ok(())
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = nix::unistd::write(fd, data)?;
        data = &data[n..];
    }
    Ok(())
}
