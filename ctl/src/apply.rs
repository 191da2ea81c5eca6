//! `lxvirt apply DIR`: bring the host in line with a directory of domain
//! and network documents (kept in git), through lxvirtd's `PlanApply` and
//! `Apply`.
//!
//! The directory: every `*.xml` file below it (hidden entries skipped),
//! its kind told by its root element. A document autostarts when the
//! `autostart` directory beside it has an entry of its file name, with or
//! without `.xml` (libvirt's layout: `autostart/web.xml`, often a link).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lxvirt_api::ApplyStepRecord;
use lxvirt_api::proxy::ManagerProxy;

use crate::cli::{ApplyArgs, Format};
use crate::commands::{
    EXIT_CHANGED, EXIT_FAILURE, EXIT_INVALID_XML, EXIT_OK, Failure, Result, print_json,
    problems_of, problems_of_each,
};

/// The directory's name for the marks of what autostarts.
const AUTOSTART_DIR: &str = "autostart";

/// One document read from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path below the directory.
    pub origin: String,
    pub xml: String,
    pub autostart: bool,
}

pub async fn apply(manager: &ManagerProxy<'_>, args: &ApplyArgs, format: Format) -> Result<u8> {
    let documents = read_dir(&args.dir)?;
    // Refused before the daemon is asked: every problem of every file.
    let problems: Vec<String> = documents
        .iter()
        .zip(problems_of_each(&documents, |d| {
            problems_of(d.xml.as_bytes())
        }))
        .flat_map(|(d, problems)| {
            problems
                .into_iter()
                .map(move |p| format!("{}:{p}", d.origin))
        })
        .collect();
    if !problems.is_empty() {
        return Err(Failure::new(
            EXIT_INVALID_XML,
            format!(
                "nothing was applied: {} invalid:\n{}",
                args.dir.display(),
                problems.join("\n")
            ),
        ));
    }
    let list: Vec<(&str, &str, bool)> = documents
        .iter()
        .map(|d| (d.origin.as_str(), d.xml.as_str(), d.autostart))
        .collect();
    let mut options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
    options.insert("prune", args.prune.into());
    options.insert("converge_state", args.converge_state.into());
    if let Some(timeout) = args.timeout {
        options.insert("shutdown_timeout", timeout.into());
    }
    if let Some(parallel) = args.parallel {
        options.insert("parallel", parallel.into());
    }
    let steps = if args.dry_run {
        manager.plan_apply(&list, options).await?
    } else {
        manager.apply(&list, options).await?
    };
    match format {
        Format::Json => print_json(&steps.iter().map(step_json).collect::<Vec<_>>())?,
        Format::Text => print!("{}", report(&steps, args, documents.len())),
    }
    Ok(exit_status(&steps))
}

/// 1 if a step failed; else 9 if something changed (or would); else 0.
fn exit_status(steps: &[ApplyStepRecord]) -> u8 {
    if steps.iter().any(|s| s.result == "failed") {
        EXIT_FAILURE
    } else if steps
        .iter()
        .any(|s| s.result == "done" || s.result == "planned")
    {
        EXIT_CHANGED
    } else {
        EXIT_OK
    }
}

fn step_json(step: &ApplyStepRecord) -> serde_json::Value {
    serde_json::json!({
        "kind": step.kind,
        "name": step.name,
        "action": step.action,
        "origin": step.origin,
        "result": step.result,
        "detail": step.detail,
    })
}

/// The text report: one line per step, the diffs of a dry run (or with
/// `--diff`), and a summary line.
fn report(steps: &[ApplyStepRecord], args: &ApplyArgs, documents: usize) -> String {
    let mut out = String::new();
    let dir = args.dir.display();
    if steps.is_empty() {
        out.push_str(&format!(
            "No change: the host is in line with {dir} ({documents} documents)\n"
        ));
        return out;
    }
    for step in steps {
        let origin = if step.origin.is_empty() {
            String::new()
        } else {
            format!(" ({})", step.origin)
        };
        let verdict = match step.result.as_str() {
            "planned" | "done" => String::new(),
            "failed" => format!(": failed: {}", step.detail),
            other => format!(": {other}"),
        };
        out.push_str(&format!(
            "{} {} '{}'{origin}{verdict}\n",
            step.action, step.kind, step.name
        ));
        let show_diff = args.dry_run || args.diff;
        if show_diff && step.result != "failed" && !step.detail.is_empty() {
            out.push_str(&step.detail);
            if !step.detail.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    let count = |result: &str| steps.iter().filter(|s| s.result == result).count();
    if args.dry_run {
        out.push_str(&format!(
            "Plan: {} changes to bring the host in line with {dir}; nothing was changed\n",
            steps.len()
        ));
    } else {
        let (failed, skipped) = (count("failed"), count("skipped"));
        let mut line = format!("Applied {} changes from {dir}", count("done"));
        if failed > 0 {
            line.push_str(&format!("; {failed} failed, {skipped} skipped"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Every document below `dir`, sorted by path.
pub fn read_dir(dir: &Path) -> Result<Vec<Found>> {
    let metadata = std::fs::metadata(dir)
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot read {}: {e}", dir.display())))?;
    if !metadata.is_dir() {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!(
                "{} is not a directory; give the directory that holds the documents",
                dir.display()
            ),
        ));
    }
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        // An empty directory with --prune would undefine everything: a
        // wrong path must not do that.
        return Err(Failure::new(
            EXIT_FAILURE,
            format!(
                "no *.xml documents below {}; nothing to apply",
                dir.display()
            ),
        ));
    }
    files
        .into_iter()
        .map(|path| {
            let origin = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            let xml = crate::commands::read_input(&path)?;
            Ok(Found {
                autostart: marked_autostart(&path),
                origin,
                xml,
            })
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let cannot = |e: std::io::Error| {
        Failure::new(
            EXIT_FAILURE,
            format!("cannot read the directory {}: {e}", dir.display()),
        )
    };
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows links, as git checkouts and /etc layouts have them.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if name != AUTOSTART_DIR {
                collect(&path, files)?;
            }
        } else if metadata.is_file() && name.ends_with(".xml") {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether `autostart/NAME.xml` or `autostart/NAME` sits beside `path`
/// (a link counts even when it points nowhere here).
fn marked_autostart(path: &Path) -> bool {
    let (Some(parent), Some(file), Some(stem)) =
        (path.parent(), path.file_name(), path.file_stem())
    else {
        return false;
    };
    let marks = parent.join(AUTOSTART_DIR);
    [marks.join(file), marks.join(stem)]
        .iter()
        .any(|mark| std::fs::symlink_metadata(mark).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, result: &str) -> ApplyStepRecord {
        ApplyStepRecord {
            kind: "domain".into(),
            name: "web".into(),
            action: action.into(),
            origin: "web.xml".into(),
            result: result.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn the_exit_status_says_whether_something_changed() {
        assert_eq!(exit_status(&[]), EXIT_OK);
        assert_eq!(exit_status(&[record("define", "planned")]), EXIT_CHANGED);
        assert_eq!(exit_status(&[record("define", "done")]), EXIT_CHANGED);
        let failed = [record("define", "done"), record("start", "failed")];
        assert_eq!(exit_status(&failed), EXIT_FAILURE);
    }

    #[test]
    fn documents_are_found_below_the_directory_with_their_autostart_marks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("net/autostart")).unwrap();
        std::fs::create_dir_all(root.join("autostart")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("web.xml"), "<domain/>").unwrap();
        std::fs::write(root.join("db.xml"), "<domain/>").unwrap();
        std::fs::write(root.join("README.md"), "not a document").unwrap();
        std::fs::write(root.join(".git/config.xml"), "<hidden/>").unwrap();
        std::fs::write(root.join("net/lan.xml"), "<network/>").unwrap();
        // libvirt's way: a link named after the file, pointing nowhere here.
        std::os::unix::fs::symlink("/etc/lxvirt/web.xml", root.join("autostart/web.xml")).unwrap();
        std::fs::write(root.join("net/autostart/lan"), "").unwrap();
        std::fs::write(root.join("autostart/stray.xml"), "<domain/>").unwrap();

        let found = read_dir(root).unwrap();
        let seen: Vec<(&str, bool)> = found
            .iter()
            .map(|f| (f.origin.as_str(), f.autostart))
            .collect();
        assert_eq!(
            seen,
            [("db.xml", false), ("net/lan.xml", true), ("web.xml", true)]
        );
    }

    #[test]
    fn an_empty_or_missing_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = read_dir(dir.path()).unwrap_err();
        assert!(
            empty.message.contains("no *.xml documents"),
            "{}",
            empty.message
        );
        let missing = read_dir(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing.message.contains("cannot read"),
            "{}",
            missing.message
        );
    }
}
