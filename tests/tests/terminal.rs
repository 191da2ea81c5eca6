//! `lxvirt enter -t` and `lxvirt shell` driven through a pty, as a person
//! at a terminal would: the shell inside has a terminal of the container's
//! own devpts (`tty` names it), the window size follows the outer
//! terminal's, Ctrl-C and Ctrl-Z reach the foreground job (job control),
//! and the exit status comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lxvirt_tests::{ContainerEnv, binary};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{Winsize, openpty};

/// The outer terminal: `lxvirt` runs on its slave, the test types on its
/// master and reads the screen from it.
struct Screen {
    master: OwnedFd,
    seen: String,
}

impl Screen {
    fn spawn(address: &str, args: &[&str], size: (u16, u16)) -> (Screen, Child) {
        let winsize = Winsize {
            ws_row: size.0,
            ws_col: size.1,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&winsize), None).unwrap();
        let slave = pty.slave;
        let child = Command::new(binary("lxvirt"))
            .arg(format!("--connect={address}"))
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let screen = Screen {
            master: pty.master,
            seen: String::new(),
        };
        (screen, child)
    }

    fn send(&self, keys: &str) {
        nix::unistd::write(&self.master, keys.as_bytes()).unwrap();
    }

    /// Reads the screen until `text` shows after what was seen before;
    /// returns what came up to and including it.
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(at) = self.seen.find(text) {
                let upto = at + text.len();
                let shown: String = self.seen.drain(..upto).collect();
                return shown;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {text:?} on the screen; it shows {:?}",
                self.seen
            );
            self.read_some();
        }
    }

    /// Reads what the screen shows within 100 ms.
    fn read_some(&mut self) {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(1)) {
            return;
        }
        let mut buffer = [0u8; 4096];
        match nix::unistd::read(&self.master, &mut buffer) {
            Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            // EIO: lxvirt has exited and closed the terminal.
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EIO) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("cannot read the screen ({e}); it showed {:?}", self.seen),
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize through the pointer, valid
        // for the call, on the pty master the test owns.
        let set =
            unsafe { nix::libc::ioctl(self.master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
        assert_eq!(set, 0);
    }
}

/// Waits for `lxvirt` to exit, reading the screen meanwhile.
fn wait_exit(child: &mut Child, screen: &mut Screen) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "lxvirt did not exit; the screen shows {:?}",
            screen.seen
        );
        screen.read_some();
    }
}

#[tokio::test]
async fn enter_t_gives_an_interactive_shell_with_job_control_and_the_window_size() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    env.start("term", "sleep 100000", "").await;
    let address = env.bus.address.clone();
    let (mut screen, mut child) = Screen::spawn(
        &address,
        &["enter", "-t", "term", "--", "/bin/sh"],
        (33, 111),
    );
    // The markers are split in what is typed, so that the echo of the
    // command line does not match them.
    screen.send("tty; stty size; echo MA''RK-1\n");
    let shown = screen.expect("MARK-1");
    assert!(
        shown.contains("/dev/pts/"),
        "a terminal of its devpts: {shown:?}"
    );
    assert!(!shown.contains("not a tty"), "{shown:?}");
    assert!(shown.contains("33 111"), "the window size: {shown:?}");

    // A resize of the outer terminal reaches the inner one.
    screen.resize(40, 120);
    std::thread::sleep(Duration::from_millis(600));
    screen.send("stty size; echo MA''RK-2\n");
    let shown = screen.expect("MARK-2");
    assert!(shown.contains("40 120"), "{shown:?}");

    // Ctrl-C interrupts the foreground job.
    screen.send("sleep 60\n");
    std::thread::sleep(Duration::from_millis(500));
    screen.send("\x03");
    screen.send("echo MA''RK-3\n");
    screen.expect("MARK-3");

    // Ctrl-Z stops it (job control), and the shell can kill it.
    screen.send("sleep 60\n");
    std::thread::sleep(Duration::from_millis(500));
    screen.send("\x1a");
    let shown = screen.expect("Stopped");
    assert!(shown.contains("sleep 60"), "{shown:?}");
    screen.send("kill -9 %1\n");
    // `jobs` reports it gone (a shell with a stopped job refuses to exit).
    screen.send("sleep 0.3; jobs; echo MA''RK-4\n");
    let shown = screen.expect("MARK-4");
    assert!(shown.contains("Killed"), "{shown:?}");

    // Its exit status is lxvirt's.
    screen.send("exit 7\n");
    assert_eq!(wait_exit(&mut child, &mut screen), 7);

    // `lxvirt shell`: a login shell on a terminal too.
    let (mut screen, mut child) = Screen::spawn(&address, &["shell", "term"], (24, 80));
    screen.send("tty; echo SH''ELL-OK\n");
    let shown = screen.expect("SHELL-OK");
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    screen.send("exit\n");
    assert_eq!(wait_exit(&mut child, &mut screen), 0);
}
