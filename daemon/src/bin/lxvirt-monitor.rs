//! `lxvirt-monitor`: the per-container monitor, started by lxvirtd.
//!
//! Usage: `lxvirt-monitor RUN-DIR [--journal] [--early-clone=FLAGS]
//! [--mount-template=FD]`, the launch spec on stdin; a spare is asked to
//! clone an early init into the namespaces of FLAGS (hexadecimal clone
//! flags) while it waits; FD is an inherited descriptor of the daemon's
//! template mount namespace, which container roots are stacked on.
//! lxvirtd starts one ahead of need; it waits for a spec, writes one launch
//! report line to its stdout, then runs until the container's init is
//! gone. It logs to `RUN-DIR/NAME.log`, or with `--journal` to the systemd
//! journal (its stderr still goes to the file).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use lxvirtd::lxc::protocol::MonitorLog;

fn main() {
    if std::env::args_os().nth(1).is_none() {
        eprintln!(
            "usage: lxvirt-monitor RUN-DIR [--journal] < SPEC (started by lxvirtd, not by hand)"
        );
        std::process::exit(2);
    }
    // Only stdin, stdout, stderr and the template are meant for us.
    let template = lxvirtd::lxc::protocol::mount_template_from_args(std::env::args_os().skip(2));
    let mount_template = match lxvirtd::sys::process::close_from_keeping_mount_namespace(template) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("lxvirt-monitor: cannot close inherited descriptors: {e}");
            std::process::exit(1);
        }
    };
    // The report goes to the pipe on stdout; afterwards stdout is /dev/null
    // so that nothing blocks on a pipe the daemon no longer reads.
    let report = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("lxvirt-monitor: cannot use stdout: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let null = OwnedFd::from(null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    // The spec arrives on stdin; afterwards stdin is /dev/null too.
    let spec = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("lxvirt-monitor: cannot use stdin: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(OwnedFd::from(null));
    }
    let log = MonitorLog::from_args(std::env::args_os().skip(2));
    let early = lxvirtd::lxc::protocol::early_clone_from_args(std::env::args_os().skip(2));
    let code = lxvirtd::lxc::monitor::run(spec, report, log, early, mount_template);
    std::process::exit(code);
}
