//! The test guest of the QEMU driver tests: Debian's kernel and a busybox
//! initramfs built by `tests/vm/mkguest` (through `tests/vm/prepare
//! guest`), whose behaviour the kernel command line drives (a marker on
//! the console, power off on the ACPI power button, `lxvirt.then=poweroff|
//! reboot|panic`, an address). `tests/vm/mkguest`'s header is the
//! reference; `docs/testing.md` says how to rebuild it.
//!
//! [`test_guest`] finds the prepared files; [`BootedGuest`] boots them in
//! a bare `qemu-system-x86_64` under TCG (no lxvirt), reads the serial
//! console line by line and talks QMP, for tests of the guest itself and
//! of what QEMU reports about it.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lxvirtd::qemu::qmp::{Event, EventKind, Events, Qmp, QmpError};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Where `tests/vm/prepare` leaves its work (`$LXVIRT_VM_WORK`, as in
/// `tests/vm/lib.sh`).
pub fn vm_work_dir() -> PathBuf {
    std::env::var_os("LXVIRT_VM_WORK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/lxvirt-vm"))
}

/// The prepared test guest.
#[derive(Debug, Clone)]
pub struct TestGuest {
    /// Debian's kernel, uncompressed (an ELF QEMU boots through PVH: less
    /// than half the boot time of the xz-compressed vmlinuz under TCG).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The command line every boot starts with (`console=ttyS0 quiet …`).
    pub cmdline_base: String,
}

impl TestGuest {
    /// The base command line followed by `extra` (`lxvirt.marker=…`).
    pub fn cmdline(&self, extra: &str) -> String {
        format!("{} {}", self.cmdline_base, extra)
    }
}

/// The test guest, or `None` when it is not prepared or there is no
/// `qemu-system-x86_64`: the test prints why and skips. Under CI (`CI`
/// set) that is a failure instead: `tests/run-all` prepares the guest.
pub fn test_guest() -> Option<TestGuest> {
    match find_test_guest() {
        Ok(guest) => Some(guest),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{why}, and CI must run the guest tests: run tests/vm/prepare as root")
        }
        Err(why) => {
            println!("skipped: {why} (tests/vm/prepare builds the guest)");
            None
        }
    }
}

fn find_test_guest() -> Result<TestGuest, String> {
    let work = vm_work_dir();
    let kernel = work.join("guest-vmlinux");
    let initrd = work.join("guest-initrd.cpio.gz");
    for file in [&kernel, &initrd] {
        if !file.is_file() {
            return Err(format!("no test guest: {} is missing", file.display()));
        }
    }
    let cmdline_file = work.join("guest.cmdline");
    let cmdline_base = std::fs::read_to_string(&cmdline_file)
        .map_err(|e| format!("no test guest: cannot read {}: {e}", cmdline_file.display()))?
        .trim()
        .to_owned();
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !qemu.is_ok_and(|s| s.success()) {
        return Err("qemu-system-x86_64 does not run (package qemu-system-x86)".to_owned());
    }
    Ok(TestGuest {
        kernel,
        initrd,
        cmdline_base,
    })
}

/// The test guest running in a bare QEMU under TCG: serial console on
/// QEMU's stdout, QMP on a socket in a temporary directory. QEMU is killed
/// when this is dropped.
#[derive(Debug)]
pub struct BootedGuest {
    child: Child,
    console: Lines<BufReader<ChildStdout>>,
    qmp: Qmp,
    events: Events,
    /// Every console line read so far (for failure messages).
    transcript: Vec<String>,
    _dir: tempfile::TempDir,
}

/// How long a boot may take to print its marker: ~2 s on an idle 2-core
/// machine, far more when the other tests load it.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

impl BootedGuest {
    /// Boots `guest` with the base command line and `append`, on a q35
    /// machine with 256 MiB and `extra` QEMU arguments (devices,
    /// `-no-shutdown`, …).
    pub async fn boot(guest: &TestGuest, append: &str, extra: &[&str]) -> Result<BootedGuest> {
        let dir = tempfile::Builder::new().prefix("lxvirt-guest-").tempdir()?;
        let socket = dir.path().join("qmp.sock");
        let log = std::fs::File::create(dir.path().join("qemu.log"))?;
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-machine", "q35,accel=tcg", "-m", "256"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio"])
            .arg("-kernel")
            .arg(&guest.kernel)
            .arg("-initrd")
            .arg(&guest.initrd)
            .arg("-append")
            .arg(guest.cmdline(append))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start qemu-system-x86_64")?;
        let stdout = child.stdout.take().context("qemu's stdout is not piped")?;
        // QEMU makes the socket as it starts; it serves one client.
        let connected = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match Qmp::connect(&socket).await {
                    Ok(connected) => return Ok(connected),
                    Err(QmpError::Connect { .. }) => {
                        if let Some(status) = child.try_wait()? {
                            let log = std::fs::read_to_string(dir.path().join("qemu.log"))
                                .unwrap_or_default();
                            bail!("qemu-system-x86_64 exited ({status}) before its QMP socket was there: {log}");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        })
        .await
        .context("qemu's QMP socket did not answer within 20 s")??;
        let (qmp, events) = connected;
        Ok(BootedGuest {
            child,
            console: BufReader::new(stdout).lines(),
            qmp,
            events,
            transcript: Vec::new(),
            _dir: dir,
        })
    }

    /// Reads the console until a line that is exactly `line` (the serial
    /// port's `\r` aside); fails when QEMU closes it first or after
    /// `timeout`.
    pub async fn wait_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let found = tokio::time::timeout(timeout, async {
            while let Some(read) = self.console.next_line().await? {
                let read = read.trim_end_matches('\r').to_owned();
                let done = read == line;
                self.transcript.push(read);
                if done {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match found {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => bail!(
                "the console closed before {line:?}; it said:\n{}",
                self.transcript()
            ),
            Ok(Err(error)) => Err(error).context("cannot read the console"),
            Err(_) => bail!(
                "no {line:?} on the console within {timeout:?}; it said:\n{}",
                self.transcript()
            ),
        }
    }

    /// The console lines read so far, one a line.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// The temporary directory of this boot (QMP socket, QEMU's log), for
    /// sockets of the test's own devices.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The next QMP event that `wanted` accepts, skipping others.
    pub async fn wait_event(
        &mut self,
        wanted: impl Fn(&EventKind) -> bool,
        timeout: Duration,
    ) -> Result<Event> {
        let events = &mut self.events;
        let found = tokio::time::timeout(timeout, async {
            while let Some(event) = events.recv().await {
                if wanted(&event.kind()) {
                    return Some(event);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(event)) => Ok(event),
            Ok(None) => bail!("QMP closed before the event the test waits for"),
            Err(_) => bail!("no such QMP event within {timeout:?}"),
        }
    }

    /// Waits for QEMU to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("qemu did not exit within {timeout:?}"))?
            .context("cannot wait for qemu")
    }
}
