//! `lxvirt apply DIR` through the CLI and a real daemon, on a directory
//! laid out as a git checkout would be: the plan of a dry run changes
//! nothing, an apply defines and sets autostart, a second run changes
//! nothing (exit status 0) and a reformatted file is no change, an edit is
//! an update shown as a diff, `--converge-state` starts and stops real
//! containers, `--prune` undefines what is gone, and one invalid file
//! refuses the whole run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::Path;

use lxvirt_tests::{ContainerEnv, lxvirt};

/// Exit status, stdout, stderr.
fn apply(env: &ContainerEnv, args: &[&str]) -> (i32, String, String) {
    let out = lxvirt(&env.bus.address, args).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lxvirt list --all` as (name, state) pairs.
fn domains(env: &ContainerEnv) -> Vec<(String, String)> {
    let out = lxvirt(&env.bus.address, &["-o", "json", "list", "--all"]).unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap().to_owned();
            (field("name"), field("state"))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const NETWORK: &str = "<network>\n  <name>apply-lan</name>\n  <bridge name='lxvtap0'/>\n  <ip address='10.231.7.1' prefix='24'/>\n</network>\n";

#[tokio::test]
async fn apply_brings_the_host_in_line_with_a_directory() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    let repo = env.dir.path().join("repo");
    fs::create_dir_all(repo.join("autostart")).unwrap();
    fs::create_dir_all(repo.join("networks")).unwrap();
    fs::create_dir_all(repo.join(".git")).unwrap();
    fs::write(repo.join(".git/HEAD.xml"), "not read").unwrap();
    let web = env.busybox_xml("web", "sleep 100000", "");
    fs::write(repo.join("web.xml"), &web).unwrap();
    fs::write(
        repo.join("db.xml"),
        env.busybox_xml("db", "sleep 100000", ""),
    )
    .unwrap();
    fs::write(repo.join("networks/lan.xml"), NETWORK).unwrap();
    // libvirt's layout: a link named after the file marks autostart.
    std::os::unix::fs::symlink("../web.xml", repo.join("autostart/web.xml")).unwrap();
    let dir = repo.to_str().unwrap();

    // The plan: every change as a diff, nothing changed, exit status 9.
    let (code, out, err) = apply(&env, &["apply", "--dry-run", dir]);
    assert_eq!(code, 9, "{out}{err}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with([' ', '+', '-', '@']))
        .collect();
    assert_eq!(
        lines,
        [
            "define network 'apply-lan' (networks/lan.xml)",
            "define domain 'db' (db.xml)",
            "define domain 'web' (web.xml)",
            "autostart domain 'web' (web.xml)",
            &format!("Plan: 4 changes to bring the host in line with {dir}; nothing was changed"),
        ]
    );
    assert!(out.contains("+++ domain web\n"), "{out}");
    assert!(out.contains("+  <name>web</name>\n"), "{out}");
    assert!(domains(&env).is_empty(), "a dry run defines nothing");

    // Applied; a second run changes nothing.
    let (code, out, err) = apply(&env, &["apply", dir]);
    assert_eq!(code, 9, "{out}{err}");
    assert!(
        out.ends_with(&format!("Applied 4 changes from {dir}\n")),
        "{out}"
    );
    assert_eq!(
        domains(&env),
        pairs(&[("db", "shutoff"), ("web", "shutoff")])
    );
    let (_, info, _) = apply(&env, &["-o", "json", "dominfo", "web"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["autostart"], true, "{info}");
    let (code, out, err) = apply(&env, &["apply", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("No change: the host is in line with {dir} (3 documents)\n")
    );

    // Reformatted: no change. Edited: an update, shown as a diff.
    fs::write(repo.join("web.xml"), web.replace("><", ">\n    <")).unwrap();
    assert_eq!(apply(&env, &["apply", dir]).0, 0);
    let db = env.busybox_xml("db", "sleep 100000", "").replace(
        "<memory unit='MiB'>64</memory>",
        "<memory unit='MiB'>80</memory>",
    );
    fs::write(repo.join("db.xml"), db).unwrap();
    let (code, out, err) = apply(&env, &["apply", "-n", dir]);
    assert_eq!(code, 9, "{out}{err}");
    assert!(
        out.starts_with("update domain 'db' (db.xml)\n--- domain db\n+++ domain db\n"),
        "{out}"
    );
    assert!(
        out.contains("-  <memory unit='KiB'>65536</memory>\n"),
        "{out}"
    );
    assert!(
        out.contains("+  <memory unit='KiB'>81920</memory>\n"),
        "{out}"
    );
    let (code, json, _) = apply(&env, &["-o", "json", "apply", dir]);
    assert_eq!(code, 9);
    let steps: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(steps.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(steps[0]["action"], "update");
    assert_eq!(steps[0]["result"], "done");
    let (_, xml, _) = apply(&env, &["dumpxml", "--inactive", "db"]);
    assert!(xml.contains("<memory unit='KiB'>81920</memory>"), "{xml}");

    // --converge-state: web (autostart) starts, and stops once unmarked.
    let (code, out, err) = apply(&env, &["apply", "--converge-state", dir]);
    assert_eq!(code, 9, "{out}{err}");
    assert_eq!(
        out.lines().next(),
        Some("start domain 'web' (web.xml)"),
        "{out}"
    );
    assert_eq!(
        domains(&env),
        pairs(&[("db", "shutoff"), ("web", "running")])
    );
    assert_eq!(apply(&env, &["apply", "--converge-state", dir]).0, 0);
    fs::remove_file(repo.join("autostart/web.xml")).unwrap();
    let (code, out, err) = apply(&env, &["apply", "--converge-state", "--timeout", "2", dir]);
    assert_eq!(code, 9, "{out}{err}");
    assert!(
        out.starts_with("stop domain 'web' (web.xml)\nno-autostart domain 'web' (web.xml)\n"),
        "{out}"
    );
    assert_eq!(
        domains(&env),
        pairs(&[("db", "shutoff"), ("web", "shutoff")])
    );

    // A file gone: kept without --prune, undefined with it.
    fs::remove_file(repo.join("db.xml")).unwrap();
    assert_eq!(apply(&env, &["apply", dir]).0, 0);
    let (code, out, err) = apply(&env, &["apply", "--prune", dir]);
    assert_eq!(code, 9, "{out}{err}");
    assert!(out.starts_with("undefine domain 'db'\n"), "{out}");
    assert_eq!(domains(&env), pairs(&[("web", "shutoff")]));

    refuse_an_invalid_directory(&env, &repo);
}

/// One invalid file, or a document the daemon would refuse: the whole
/// run is refused, naming the file, and nothing changes.
fn refuse_an_invalid_directory(env: &ContainerEnv, repo: &Path) {
    let dir = repo.to_str().unwrap();
    let before = domains(env);
    fs::write(repo.join("new.xml"), env.busybox_xml("new", "sleep 1", "")).unwrap();
    fs::write(
        repo.join("bad.xml"),
        "<domain type='lxc'><name>bad</name></domain>",
    )
    .unwrap();
    let (code, out, err) = apply(env, &["apply", "--prune", dir]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(err.contains("bad.xml:"), "{err}");
    assert_eq!(domains(env), before);

    // Valid for the schema, refused by the daemon: two documents, one name.
    fs::write(repo.join("bad.xml"), env.busybox_xml("new", "sleep 2", "")).unwrap();
    let (code, out, err) = apply(env, &["apply", dir]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains("new.xml: domain 'new' is also defined by bad.xml"),
        "{err}"
    );
    assert_eq!(domains(env), before);

    fs::remove_file(repo.join("bad.xml")).unwrap();
    fs::remove_dir_all(repo.join("networks")).unwrap();
    fs::remove_file(repo.join("new.xml")).unwrap();
    // An empty directory would prune everything: refused.
    let empty = repo.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let (code, _, err) = apply(env, &["apply", "--prune", empty.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no *.xml documents"), "{err}");
    assert_eq!(domains(env), before);
}
