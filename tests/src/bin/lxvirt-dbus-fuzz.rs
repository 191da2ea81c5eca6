//! `lxvirt-dbus-fuzz`: calls every method of lxvirtd's committed D-Bus
//! contract with generated arguments from several connections at once
//! (`lxvirt_tests::dbus_fuzz`), and prints what came back as JSON.
//!
//! ```text
//! lxvirt-dbus-fuzz --address ADDRESS --rootfs DIR --tarball FILE
//!                  [--calls N] [--workers N] [--seed N] [--unprivileged]
//!                  [--names a,b,c]
//! ```
//!
//! `tests/tests/dbus_fuzz.rs` runs it as root and as uid 65534 against a
//! test daemon; docs/reliability.md has the long run.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use lxvirt_tests::dbus_fuzz::{Inputs, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut address = None;
    let mut rootfs = None;
    let mut tarball = None;
    let mut calls = 1000;
    let mut workers = 4;
    let mut seed = 1;
    let mut unprivileged = false;
    let mut names = vec![
        "fz-0".to_owned(),
        "fz-1".into(),
        "fz-2".into(),
        "fz-3".into(),
    ];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--address" => address = Some(value()?),
            "--rootfs" => rootfs = Some(PathBuf::from(value()?)),
            "--tarball" => tarball = Some(PathBuf::from(value()?)),
            "--calls" => calls = value()?.parse()?,
            "--workers" => workers = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--names" => names = value()?.split(',').map(str::to_owned).collect(),
            "--unprivileged" => unprivileged = true,
            other => bail!("unknown argument {other}; see the source's header"),
        }
    }
    let inputs = Inputs {
        rootfs: rootfs.context("--rootfs is needed")?,
        tarball: tarball.context("--tarball is needed")?,
        names,
    };
    let address = address.context("--address is needed")?;
    let report = run(&address, inputs, calls, workers, seed, unprivileged).await?;
    println!("{}", report.to_json());
    Ok(())
}
