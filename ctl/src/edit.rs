//! `lxvirt edit`: the persistent XML in the user's editor, defined again
//! when it changed, as `virsh edit` does. An edit that is refused is never
//! thrown away silently: the user edits again, or the file is kept.

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lxvirt_api::XmlFlags;
use lxvirt_api::proxy::ManagerProxy;

use crate::commands::{
    EXIT_FAILURE, EXIT_INVALID_STATE, EXIT_OK, Failure, Result, domain_name, lookup,
};

pub async fn edit(
    connection: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    given: &str,
) -> Result<u8> {
    let proxy = lookup(connection, manager, given).await?;
    let name = proxy.name().await?;
    if !proxy.persistent().await? {
        return Err(Failure::new(
            EXIT_INVALID_STATE,
            format!(
                "domain '{name}' is transient: it has no persistent definition to edit \
                 (lxvirt dumpxml {name} > FILE, then lxvirt define FILE makes it persistent)"
            ),
        ));
    }
    let original = proxy.get_xml(XmlFlags::INACTIVE).await?;
    let file = scratch_file(&name, &original)?;
    loop {
        run_editor(&file)?;
        let edited = fs::read_to_string(&file).map_err(|e| {
            Failure::new(
                EXIT_FAILURE,
                format!("cannot read the edited file {}: {e}", file.display()),
            )
        })?;
        if edited == original {
            println!("Domain '{name}' XML configuration not changed.");
            let _ = fs::remove_file(&file);
            return Ok(EXIT_OK);
        }
        match manager.define_xml(&edited).await {
            Ok(path) => {
                let defined = domain_name(connection, path).await.unwrap_or(name);
                println!("Domain '{defined}' XML configuration edited.");
                let _ = fs::remove_file(&file);
                return Ok(EXIT_OK);
            }
            Err(error) => {
                let failure = Failure::from(error);
                if std::io::stdin().is_terminal() {
                    eprintln!("lxvirt: error: {}", failure.message);
                    if ask_to_edit_again()? {
                        continue;
                    }
                }
                return Err(Failure::new(
                    failure.exit_code,
                    format!(
                        "{}\nthe definition of '{name}' is unchanged; your edit is kept in {}",
                        failure.message,
                        file.display()
                    ),
                ));
            }
        }
    }
}

/// A new file only this user can read, holding `xml`.
fn scratch_file(name: &str, xml: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir();
    let mut last_error = None;
    for attempt in 0..100u32 {
        let path = dir.join(format!(
            "lxvirt-edit-{name}-{}-{attempt}.xml",
            std::process::id()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(xml.as_bytes()).map_err(|e| {
                    Failure::new(
                        EXIT_FAILURE,
                        format!("cannot write {}: {e}", path.display()),
                    )
                })?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                last_error = Some(e);
                break;
            }
        }
    }
    Err(Failure::new(
        EXIT_FAILURE,
        format!(
            "cannot create a file to edit in {}: {}",
            dir.display(),
            last_error.map_or_else(String::new, |e| e.to_string())
        ),
    ))
}

/// `$VISUAL`, else `$EDITOR`, else vi, through the shell so that an editor
/// given with arguments (`code --wait`) works.
fn run_editor(file: &Path) -> Result<()> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file)
        .status()
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot run {editor}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(
            EXIT_FAILURE,
            format!(
                "the editor ({editor}) failed ({status}); nothing was defined, the file is kept in {}",
                file.display()
            ),
        ));
    }
    Ok(())
}

/// virsh's question, with its two useful answers.
fn ask_to_edit_again() -> Result<bool> {
    let stdin = std::io::stdin();
    loop {
        eprint!("Failed. Try again? [y,n,?]: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer).unwrap_or(0) == 0 {
            return Ok(false);
        }
        match answer.trim() {
            "y" | "Y" | "yes" => return Ok(true),
            "n" | "N" | "no" => return Ok(false),
            _ => eprintln!(
                "y - yes, start the editor again\n\
                 n - no, leave the definition as it was (your edit is kept in a file)\n\
                 ? - print this help"
            ),
        }
    }
}
