//! Many clients at once against a real daemon (issue 12, part 3): every
//! request is answered, refusals are typed, nothing is lost, one domain's
//! requests are taken one at a time, and the end state is what the
//! answers said.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use lxvirt_tests::{ContainerEnv, sleeper_xml};
use lxvirtd::dbus::proxy::{DomainProxy, ManagerProxy};
use zbus::fdo::ObjectManagerProxy;

const CLIENTS: usize = 64;
const DOMAINS: usize = 8;
const OPS_PER_CLIENT: usize = 12;

/// What a call came back with: `Ok`, or the typed error's name.
fn outcome<T>(result: zbus::Result<T>) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(zbus::Error::MethodError(name, detail, _)) => {
            Err(format!("{name}: {}", detail.unwrap_or_default()))
        }
        Err(other) => Err(format!("untyped: {other}")),
    }
}

/// A small deterministic generator: the same interleaving of requests at
/// every run, whatever order the daemon answers them in.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_get_answers_and_typed_refusals() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let manager = env.manager().await.unwrap();
    let mut paths = Vec::new();
    for i in 0..DOMAINS {
        paths.push(
            manager
                .define_xml(&sleeper_xml(&format!("busy{i}"), &env.rootfs()))
                .await
                .unwrap(),
        );
    }

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let connection = env.bus.connect().await.unwrap();
        let paths = paths.clone();
        clients.push(tokio::spawn(async move {
            let manager = ManagerProxy::new(&connection).await.unwrap();
            let objects = ObjectManagerProxy::builder(&connection)
                .destination("org.lxvirt.lxvirt1")
                .path("/org/lxvirt/lxvirt1")
                .build()
                .await
                .unwrap();
            let mut random = Lcg(client as u64 + 1);
            let mut outcomes = Vec::new();
            for _ in 0..OPS_PER_CLIENT {
                let path = paths[random.next(paths.len())].clone();
                let domain = DomainProxy::builder(&connection)
                    .path(path)
                    .build()
                    .await
                    .unwrap();
                let (op, result) = match random.next(6) {
                    0 | 1 => ("start", outcome(domain.start().await)),
                    2 => ("destroy", outcome(domain.destroy().await)),
                    3 => ("shutdown", outcome(domain.shutdown(1, "").await)),
                    4 => (
                        "list",
                        outcome(manager.list_domain_summaries().await.map(|l| {
                            assert_eq!(l.len(), DOMAINS);
                        })),
                    ),
                    _ => (
                        "objects",
                        outcome(
                            objects
                                .get_managed_objects()
                                .await
                                .map_err(zbus::Error::from)
                                .map(|o| assert!(o.len() >= DOMAINS)),
                        ),
                    ),
                };
                outcomes.push((op, result));
            }
            outcomes
        }));
    }
    // Nothing lost: every client has every answer well within the time.
    let all = tokio::time::timeout(Duration::from_secs(180), futures_join(clients))
        .await
        .expect("every request of every client is answered");
    let (mut answered, mut refused) = (0, 0);
    for (op, result) in all.iter().flatten() {
        answered += 1;
        if let Err(error) = result {
            refused += 1;
            // Typed, and only what the interleaving can cause: a start of
            // a running domain, a stop of a stopped one.
            assert!(
                error.starts_with("org.lxvirt.lxvirt1.Error.InvalidState: "),
                "{op}: {error}"
            );
            assert!(
                matches!(*op, "start" | "destroy" | "shutdown"),
                "{op}: {error}"
            );
        }
    }
    assert_eq!(answered, CLIENTS * OPS_PER_CLIENT);
    assert!(refused > 0, "the interleaving should cause refusals");

    // The end state is what the daemon says it is.
    for path in &paths {
        let domain = env.domain(path.clone()).await.unwrap();
        let state = domain.state().await.unwrap();
        let pid = domain.pid().await.unwrap();
        match state.as_str() {
            "running" => assert!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "running with init {pid} gone"
            ),
            "shutoff" => assert_eq!(pid, 0),
            other => panic!("unexpected state {other}"),
        }
        if state == "running" {
            domain.destroy().await.unwrap();
        }
    }
}

/// Requests to one domain are taken one at a time against the state the
/// one before left: a start and a destroy sent together, without waiting
/// for the first answer, end as one of the two orders would have ended,
/// never as a mix. (Which order is not promised for calls a client has in
/// flight at once: the D-Bus dispatcher handles each call in a task of its
/// own, as libvirt's worker threads do; a client that waits for each
/// answer gets its order.)
#[tokio::test]
async fn a_domains_requests_are_taken_one_at_a_time() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let manager = env.manager().await.unwrap();
    let path = manager
        .define_xml(&sleeper_xml("serial", &env.rootfs()))
        .await
        .unwrap();
    let domain = env.domain(path).await.unwrap();
    for _ in 0..10 {
        // Both on the wire before either is answered.
        let (started, destroyed) = tokio::join!(domain.start(), domain.destroy());
        let state = domain.state().await.unwrap();
        match (outcome(started), outcome(destroyed)) {
            // Start, then destroy: done, or refused while the start ran.
            (Ok(()), Ok(())) => assert_eq!(state, "shutoff"),
            (Ok(()), Err(error)) if error.contains("another operation (start) is in progress") => {
                assert_eq!(state, "running")
            }
            // Destroy first, of a domain not running, then the start.
            (Ok(()), Err(error)) if error.contains("it is shutoff") => {
                assert_eq!(state, "running")
            }
            other => panic!("no order of the two gives {other:?} (state {state})"),
        }
        if state == "running" {
            domain.destroy().await.unwrap();
        }
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
