//! One boot of the crash-consistency series (`tests/vm/crash`, in the
//! nested VM): checks what the last power cut left, then storms until the
//! next one.
//!
//! usage: lxvirt-crash-storm ROOT SHARE ROUND SEED [--check-only]
//!
//! ROOT is the daemon's root on the disk that outlives the cuts (`etc/`,
//! `lib/`, and `run/`, which the guest makes a tmpfs); SHARE a directory on
//! the host, where writes land before they return: `journal.N`, the changes
//! round N asked and was answered, and `ledger`, what the last check found.
//! From round 1 on, it starts lxvirtd on the disk and checks it against the
//! ledger and the last round's journal (what was answered is there and
//! intact, the rest wholly there or absent, the image store whole, every
//! domain starts). Then, unless `--check-only`, it imports the base image
//! (round 0), starts the clients, prints `lxvirt-vm: power may be cut` and
//! storms until the host cuts the power. Exit status 1 when a check fails
//! or the storm stops by itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lxvirt_tests::storm::{
    BASE_IMAGE, Def, ImageLedger, Journal, Slot, Storm, by_client, check_definitions_and_images,
    client, domain, fresh_slots, replay,
};
use lxvirt_tests::{Rng, TestBus, TestDaemon, busybox_root_and_tarball};
use lxvirtd::dbus::proxy::{ImagesProxy, ManagerProxy};
use zbus::Variant as Value;

/// What the host watches the console for before it cuts.
const CUT_MARK: &str = "lxvirt-vm: power may be cut";

struct Args {
    root: PathBuf,
    share: PathBuf,
    round: usize,
    seed: u64,
    check_only: bool,
}

fn parse_args() -> Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, share, round, seed, rest @ ..] = args.as_slice() else {
        bail!("usage: lxvirt-crash-storm ROOT SHARE ROUND SEED [--check-only]");
    };
    Ok(Args {
        root: root.into(),
        share: share.into(),
        round: round.parse().context("ROUND")?,
        seed: seed.parse().context("SEED")?,
        check_only: rest.iter().any(|a| a == "--check-only"),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lxvirt-crash-storm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args = parse_args()?;
    let journal_path = |round: usize| args.share.join(format!("journal.{round}"));
    let (mut slots, mut images) = read_ledger(&args.share.join("ledger"))?;
    let storm = Storm {
        root: args.root.clone(),
        rootfs: args.root.join("rootfs"),
        tarball: args.root.join("small.tar"),
        journal: None,
        patience: Duration::from_secs(600),
    };
    if args.round == 0 {
        prepare_sources(&args.root);
    }
    let bus = TestBus::start()?;
    let started = Instant::now();
    let daemon = TestDaemon::start(&bus, &args.root)
        .await
        .context("lxvirtd did not start on the disk the cut left")?;
    let ready = started.elapsed();
    let connection = bus.connect().await?;

    if args.round > 0 {
        let journal =
            fs::read_to_string(journal_path(args.round - 1)).context("the last round's journal")?;
        replay(&journal, &mut slots, &mut images).map_err(anyhow::Error::msg)?;
        let asked = journal.lines().filter(|l| l.starts_with("ask ")).count();
        let answered = journal.lines().filter(|l| l.starts_with("ok ")).count();
        let unanswered = slots.iter().filter(|s| !s.maybe.is_empty()).count() + images.maybe.len();
        check_definitions_and_images(&storm, &connection, args.round, &mut slots, &mut images)
            .await;
        let started = start_every_domain(&connection, args.round).await?;
        write_ledger(&args.share.join("ledger"), &slots, &images)?;
        let defined = slots.iter().filter(|s| s.known != Def::Absent).count();
        println!(
            "crash check {}: lxvirtd ready in {} ms; round {} asked {asked} changes, \
             {answered} answered, {unanswered} cut unanswered; found {defined} definitions, \
             {} images; {started} domains started and destroyed",
            args.round,
            ready.as_millis(),
            args.round - 1,
            images.known.len(),
        );
    }
    if args.check_only {
        return Ok(());
    }

    let storm = Arc::new(Storm {
        journal: Some(Journal::create(&journal_path(args.round))?),
        ..storm
    });
    if args.round == 0 {
        let images_proxy = ImagesProxy::new(&connection).await?;
        let file = fs::File::open(&storm.tarball)?;
        images_proxy
            .import_tarball(
                zbus::Fd::from(&file),
                [("name", Value::from(BASE_IMAGE))].into(),
            )
            .await
            .context("the base image")?;
        if let Some(journal) = &storm.journal {
            journal.image_done(BASE_IMAGE);
        }
    }
    let mut rng = Rng::new(args.seed);
    let mut tasks = Vec::new();
    for (id, client_slots) in by_client(slots).into_iter().enumerate() {
        let connection = bus.connect().await?;
        let storm = Arc::clone(&storm);
        let seed = rng.next_u64();
        let round = args.round;
        tasks.push(tokio::spawn(async move {
            client(&storm, connection, client_slots, seed, round, id).await
        }));
    }
    println!("{CUT_MARK}");
    std::io::stdout().flush()?;
    let (first, _, _) = futures_util::future::select_all(tasks).await;
    drop(daemon);
    match first {
        Ok(_) => bail!(
            "round {}: a storm client lost its daemon before the cut",
            args.round
        ),
        Err(e) => bail!("round {}: a storm client failed: {e}", args.round),
    }
}

/// The busybox root and its tarball (`rootfs/`, `small.tar`), on the
/// disk, made durable.
fn prepare_sources(root: &Path) {
    busybox_root_and_tarball(root);
    nix::unistd::sync();
}

/// Every defined domain starts and is destroyed again: what the cut left
/// is usable, not only listed. Returns how many.
async fn start_every_domain(connection: &zbus::Connection, round: usize) -> Result<usize> {
    let manager = ManagerProxy::new(connection).await?;
    let summaries = manager.list_domain_summaries().await?;
    for summary in &summaries {
        if summary.state != "shutoff" {
            bail!(
                "round {round}: {} is {} after a power cut (pid {})",
                summary.name,
                summary.state,
                summary.pid
            );
        }
    }
    for path in manager.list_domains().await? {
        let domain = domain(connection, path.clone()).await;
        let name = domain.name().await?;
        domain
            .start()
            .await
            .with_context(|| format!("round {round}: {name} does not start after the cut"))?;
        domain
            .destroy()
            .await
            .with_context(|| format!("round {round}: {name} does not stop"))?;
    }
    Ok(summaries.len())
}

/// The ledger: each domain's marker (or null: not defined) and the images
/// known, as the last check found them. None yet: nothing defined.
fn read_ledger(path: &Path) -> Result<(Vec<Slot>, ImageLedger)> {
    let mut slots = fresh_slots();
    let mut images = ImageLedger::default();
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((slots, images)),
        Err(e) => return Err(e).context("the ledger"),
    };
    let ledger: serde_json::Value = serde_json::from_str(&text).context("the ledger")?;
    for slot in &mut slots {
        if let Some(marker) = ledger["domains"][&slot.name].as_str() {
            slot.known = Def::Present(marker.to_owned());
        }
    }
    for name in ledger["images"].as_array().into_iter().flatten() {
        images.known.extend(name.as_str().map(str::to_owned));
    }
    Ok((slots, images))
}

fn write_ledger(path: &Path, slots: &[Slot], images: &ImageLedger) -> Result<()> {
    let domains: serde_json::Map<String, serde_json::Value> = slots
        .iter()
        .map(|s| {
            let marker = match &s.known {
                Def::Present(marker) => serde_json::Value::from(marker.as_str()),
                Def::Absent => serde_json::Value::Null,
            };
            (s.name.clone(), marker)
        })
        .collect();
    let ledger = serde_json::json!({ "domains": domains, "images": images.known });
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&ledger)?)?;
    fs::rename(&tmp, path)?;
    Ok(())
}
