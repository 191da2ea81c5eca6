//! `apply`: bring the host in line with a set of documents, as
//! configuration management wants it (the documents live in git; a run
//! after a run that changed something changes nothing).
//!
//! The manager plans from one snapshot of its state ([`ManagerHandle::plan`]):
//! every document is parsed and checked as `define` would check it, and
//! the run is refused whole if any is wrong, before anything changes. A
//! formatting change is no change: the canonical forms are compared, with
//! what `define` fills in (uuid, MACs, a bridge) taken from the object the
//! document updates. The steps then go through the manager's usual
//! commands, so each one has its transitions and events; starts and stops
//! of one phase run side by side.

use std::time::Duration;

use futures_util::StreamExt;

use super::types::{CoreError, Lookup, Seq, UndefineFlags};
use super::{ManagerHandle, State};
use crate::domain::DocumentKind;
use crate::driver::ShutdownMode;
use crate::error_chain::error_chain;

/// One document to bring the host in line with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where it comes from (a file name), for messages.
    pub origin: String,
    pub xml: String,
    /// Whether the domain or network should start with the host.
    pub autostart: bool,
}

/// How far a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Undefine the persistent domains and networks no document names.
    pub prune: bool,
    /// Start what should autostart and is not running, stop what should
    /// not and is (and what `prune` undefines).
    pub converge_state: bool,
    /// How long a stop waits for the instance before killing it.
    pub shutdown_timeout: Duration,
    /// At most this many starts or stops at a time.
    pub parallel: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            prune: false,
            converge_state: false,
            shutdown_timeout: Duration::from_secs(60),
            parallel: 8,
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new definition (or a transient object made persistent).
    Define,
    /// A changed definition; a running instance keeps the one it runs with
    /// until it restarts.
    Update,
    Undefine,
    Autostart(bool),
    Start,
    Stop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Define => "define",
            Action::Update => "update",
            Action::Undefine => "undefine",
            Action::Autostart(true) => "autostart",
            Action::Autostart(false) => "no-autostart",
            Action::Start => "start",
            Action::Stop => "stop",
        }
    }

    /// Starts and stops take time and go side by side within a phase.
    fn runs_in_parallel(self) -> bool {
        matches!(self, Action::Start | Action::Stop)
    }
}

/// One change of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: DocumentKind,
    pub name: String,
    pub action: Action,
    /// The document's origin; empty for an object no document names.
    pub origin: String,
    /// For a define or update: a unified diff from the stored definition
    /// to the new one, both canonical.
    pub diff: String,
    /// For a define or update: the document, as `define` takes it.
    pub xml: Option<String>,
}

/// How a step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// A dry run: it would be done.
    Planned,
    Done,
    Failed(String),
    /// Not tried: an earlier step failed.
    Skipped,
}

impl StepResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepResult::Planned => "planned",
            StepResult::Done => "done",
            StepResult::Failed(_) => "failed",
            StepResult::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub step: Step,
    pub result: StepResult,
}

/// The plan as outcomes of a dry run.
pub fn planned(steps: Vec<Step>) -> Vec<Outcome> {
    steps
        .into_iter()
        .map(|step| Outcome {
            step,
            result: StepResult::Planned,
        })
        .collect()
}

/// Plans and carries out the steps in order. A failed step ends the run:
/// the steps after its phase are skipped (the others of a parallel phase
/// finish). Returns every step's outcome and the last event it caused.
pub async fn apply(
    handle: &ManagerHandle,
    sources: Vec<Source>,
    options: ApplyOptions,
) -> Result<(Vec<Outcome>, Option<Seq>), CoreError> {
    let steps = handle.plan(sources, options).await?;
    let mut outcomes = Vec::with_capacity(steps.len());
    let mut last_seq = None;
    let mut failed = false;
    let mut steps = steps.into_iter().peekable();
    while let Some(first) = steps.next() {
        let (kind, action) = (first.kind, first.action);
        let mut phase = vec![first];
        if action.runs_in_parallel() {
            while let Some(next) = steps.next_if(|s| s.kind == kind && s.action == action) {
                phase.push(next);
            }
        }
        if failed {
            outcomes.extend(phase.into_iter().map(|step| Outcome {
                step,
                result: StepResult::Skipped,
            }));
            continue;
        }
        let done: Vec<(Step, Result<Seq, CoreError>)> = futures_util::stream::iter(phase)
            .map(|step| async {
                let result = execute(handle, &step, &options).await;
                (step, result)
            })
            .buffered(options.parallel.max(1))
            .collect()
            .await;
        for (step, result) in done {
            let result = match result {
                Ok(seq) => {
                    last_seq = last_seq.max(Some(seq));
                    StepResult::Done
                }
                Err(error) => {
                    tracing::warn!(kind = %step.kind, name = %step.name, action = step.action.as_str(), error = %error_chain(&error), "apply: step failed");
                    failed = true;
                    StepResult::Failed(error_chain(&error))
                }
            };
            outcomes.push(Outcome { step, result });
        }
    }
    Ok((outcomes, last_seq))
}

async fn execute(
    handle: &ManagerHandle,
    step: &Step,
    options: &ApplyOptions,
) -> Result<Seq, CoreError> {
    let xml = || step.xml.clone().unwrap_or_default();
    match step.kind {
        DocumentKind::Domain => {
            let domain = || handle.lookup(Lookup::Name(step.name.clone()));
            match step.action {
                Action::Define | Action::Update => {
                    handle.define_xml(xml()).await.map(|(_, seq)| seq)
                }
                Action::Undefine => {
                    let uuid = domain().await?.uuid;
                    handle.undefine(uuid, UndefineFlags(0)).await
                }
                Action::Autostart(enabled) => {
                    let uuid = domain().await?.uuid;
                    handle.set_autostart(uuid, enabled).await
                }
                Action::Start => handle.start(domain().await?.uuid).await,
                Action::Stop => {
                    let domain = domain().await?;
                    if domain.state == State::Running {
                        let grace = options.shutdown_timeout;
                        (handle.shutdown(domain.uuid, grace, ShutdownMode::Default)).await
                    } else {
                        // A paused domain cannot act on a request.
                        handle.destroy(domain.uuid).await
                    }
                }
            }
        }
        DocumentKind::Network => {
            let network = || handle.network_lookup(Lookup::Name(step.name.clone()));
            match step.action {
                Action::Define | Action::Update => {
                    handle.network_define_xml(xml()).await.map(|(_, seq)| seq)
                }
                Action::Undefine => handle.network_undefine(network().await?.uuid).await,
                Action::Autostart(enabled) => {
                    let uuid = network().await?.uuid;
                    handle.network_set_autostart(uuid, enabled).await
                }
                Action::Start => handle.network_start(network().await?.uuid).await,
                Action::Stop => handle.network_destroy(network().await?.uuid, false).await,
            }
        }
    }
}

/// A unified diff from `old` to `new` (either may be empty), labelled
/// with the object it describes.
pub fn diff(label: &str, old: &str, new: &str) -> String {
    let old_label = if old.is_empty() { "/dev/null" } else { label };
    let new_label = if new.is_empty() { "/dev/null" } else { label };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_the_changed_lines_with_context() {
        let old = "<domain>\n  <name>a</name>\n  <memory>1024</memory>\n</domain>\n";
        let new = "<domain>\n  <name>a</name>\n  <memory>2048</memory>\n</domain>\n";
        let diff = diff("domain a", old, new);
        assert!(diff.starts_with("--- domain a\n+++ domain a\n"), "{diff}");
        assert!(diff.contains("-  <memory>1024</memory>\n+  <memory>2048</memory>\n"));
        assert!(diff.contains(" <domain>\n"), "context kept: {diff}");
    }

    #[test]
    fn a_new_definition_is_all_added() {
        let diff = diff("network n", "", "<network>\n</network>\n");
        assert!(diff.starts_with("--- /dev/null\n+++ network n\n"), "{diff}");
        assert!(diff.contains("+<network>\n+</network>\n"), "{diff}");
        assert!(super::diff("x", "same\n", "same\n").is_empty());
    }

    #[test]
    fn actions_have_their_names() {
        let names: Vec<_> = [
            Action::Define,
            Action::Update,
            Action::Undefine,
            Action::Autostart(true),
            Action::Autostart(false),
            Action::Start,
            Action::Stop,
        ]
        .iter()
        .map(|a| a.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "define",
                "update",
                "undefine",
                "autostart",
                "no-autostart",
                "start",
                "stop"
            ]
        );
    }
}
