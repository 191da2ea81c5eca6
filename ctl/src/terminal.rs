//! `lxvirt console`: relay a terminal to a console channel; `lxvirt enter
//! -t` and `lxvirt shell`: relay it to an entered command's terminal.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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

/// How often the window size is compared with the command's (instead of
/// a SIGWINCH handler: nothing to install, and a resize shows within it).
const WINDOW_CHECK: Duration = Duration::from_millis(200);

/// End of input, for a command reading a terminal in canonical mode.
const EOT: u8 = 0x04;

/// Relays this terminal (raw, so that Ctrl-C, Ctrl-Z and the rest reach
/// the command's terminal and its job control) to `master`, the entered
/// command's terminal, keeping its window size in step, until the command's
/// side has closed.
pub fn relay(master: OwnedFd) -> std::io::Result<()> {
    let raw = RawMode::enter().map_err(std::io::Error::from)?;
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut size = None;
    let mut buffer = [0u8; 4096];
    loop {
        sync_window_size(&master, &mut size);
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(WINDOW_CHECK).unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let master_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stdin_ready = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty());
        if master_ready {
            match nix::unistd::read(&master, &mut buffer) {
                // EIO: every process holding the terminal has gone.
                Ok(0) | Err(nix::errno::Errno::EIO) => break,
                Ok(n) => write_all(std::io::stdout().as_fd(), &buffer[..n])?,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin.as_fd(), &mut buffer)? {
                0 => {
                    // Piped input ended: end of input for the command too.
                    stdin_open = false;
                    write_all(master.as_fd(), &[EOT])?;
                }
                n => write_all(master.as_fd(), &buffer[..n])?,
            }
        }
    }
    drop(raw);
    Ok(())
}

/// Gives the command's terminal this terminal's size when it changed.
fn sync_window_size(master: &OwnedFd, last: &mut Option<(u16, u16)>) {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which is
    // valid and exclusively ours for the call.
    let got =
        unsafe { nix::libc::ioctl(nix::libc::STDIN_FILENO, nix::libc::TIOCGWINSZ, &mut size) };
    if got != 0 || last.is_some_and(|l| l == (size.ws_row, size.ws_col)) {
        return;
    }
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, valid for
    // the call; it acts only on the terminal we hold.
    if unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) } == 0 {
        *last = Some((size.ws_row, size.ws_col));
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = nix::unistd::write(fd, data)?;
        data = &data[n..];
    }
    Ok(())
}
