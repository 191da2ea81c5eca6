//! `lxvirt image …` and `lxvirt commit`: the image store over D-Bus, with
//! progress on stderr (a bar on a terminal, a line per tenth otherwise).

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;

use futures_util::StreamExt;
use lxvirt_api::ImageRecord;
use lxvirt_api::proxy::ImagesProxy;
use serde::Serialize;
use zbus::Variant;

use crate::cli::{Format, ImageCommand};
use crate::commands::{EXIT_FAILURE, Failure, Result, print_json};
use crate::output;

/// Runs an image command.
pub async fn run(
    connection: &zbus::Connection,
    format: Format,
    command: ImageCommand,
) -> Result<()> {
    let images = ImagesProxy::new(connection).await?;
    match command {
        ImageCommand::Import { file, name, parent } => {
            let (input, source) = open_input(&file)?;
            let token = token();
            let mut options = HashMap::from([
                ("source", Variant::from(source.as_str())),
                ("token", Variant::from(token.as_str())),
            ]);
            if let Some(name) = &name {
                options.insert("name", Variant::from(name.as_str()));
            }
            if let Some(parent) = &parent {
                options.insert("parent", Variant::from(parent.as_str()));
            }
            let id = with_progress(&images, &token, async {
                images
                    .import_tarball(zbus::Fd::from(&input), options.clone())
                    .await
            })
            .await?;
            report_id(format, "imported", &id, name.as_deref())?;
        }
        ImageCommand::ImportOci {
            dir,
            reference,
            name,
        } => {
            let layout = std::fs::canonicalize(&dir).map_err(|e| {
                Failure::new(EXIT_FAILURE, format!("cannot open {}: {e}", dir.display()))
            })?;
            let token = token();
            let mut options = HashMap::from([("token", Variant::from(token.as_str()))]);
            if let Some(reference) = &reference {
                options.insert("reference", Variant::from(reference.as_str()));
            }
            if let Some(name) = &name {
                options.insert("name", Variant::from(name.as_str()));
            }
            let layout = layout.to_string_lossy().into_owned();
            let id = with_progress(&images, &token, async {
                images.import_oci(&layout, options.clone()).await
            })
            .await?;
            report_id(format, "imported", &id, name.as_deref())?;
        }
        ImageCommand::List => {
            let list = images.list_images().await?;
            match format {
                Format::Text => print!("{}", list_text(&list)),
                Format::Json => print_json(&list)?,
            }
        }
        ImageCommand::Inspect { image } => {
            let info = images.inspect(&image).await?;
            match format {
                Format::Text => print!("{}", inspect_text(&info)),
                Format::Json => print_json(&info)?,
            }
        }
        ImageCommand::Rm { image } => {
            let removed = images.remove(&image).await?;
            match format {
                Format::Text => {
                    for id in &removed {
                        println!("Removed image {id}");
                    }
                }
                Format::Json => print_json(&removed)?,
            }
        }
        ImageCommand::Tag { image, name } => {
            let id = images.tag(&image, &name).await?;
            report_id(format, "tagged", &id, Some(&name))?;
        }
        ImageCommand::Untag { name } => {
            let id = images.untag(&name).await?;
            report_id(format, "untagged", &id, Some(&name))?;
        }
        ImageCommand::Export {
            image,
            file,
            layer_only,
            compression,
        } => {
            let to_stdout = file == Path::new("-");
            let output = if to_stdout {
                if std::io::stdout().is_terminal() {
                    return Err(Failure::new(
                        EXIT_FAILURE,
                        "refusing to write a tarball to a terminal; give a FILE or redirect stdout",
                    ));
                }
                None
            } else {
                Some(File::create(&file).map_err(|e| {
                    Failure::new(
                        EXIT_FAILURE,
                        format!("cannot create {}: {e}", file.display()),
                    )
                })?)
            };
            let token = token();
            let options = HashMap::from([
                ("token", Variant::from(token.as_str())),
                ("layer_only", Variant::from(layer_only)),
                ("compression", Variant::from(compression.as_str())),
            ]);
            let stdout = std::io::stdout();
            let fd = match &output {
                Some(f) => zbus::Fd::from(f),
                None => zbus::Fd::from(&stdout),
            };
            let result = with_progress(&images, &token, async {
                images.export(&image, fd, options.clone()).await
            })
            .await;
            if result.is_err() && !to_stdout {
                // Nothing half-written is left behind.
                let _ = std::fs::remove_file(&file);
            }
            let bytes = result?;
            if !to_stdout {
                match format {
                    Format::Text => println!(
                        "Exported image '{image}' to {} ({} of tar)",
                        file.display(),
                        human(bytes)
                    ),
                    Format::Json => print_json(&serde_json::json!({"bytes": bytes}))?,
                }
            }
        }
    }
    Ok(())
}

/// The image command's input: a file, or stdin for `-`; and the source
/// recorded with the image.
fn open_input(file: &Path) -> Result<(File, String)> {
    if file == Path::new("-") {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot read stdin: {e}")))?;
        return Ok((File::from(stdin), "(stdin)".to_owned()));
    }
    let opened = File::open(file)
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot open {}: {e}", file.display())))?;
    let source = std::fs::canonicalize(file)
        .unwrap_or_else(|_| file.to_owned())
        .display()
        .to_string();
    Ok((opened, source))
}

/// A token for this command's Progress signals.
fn token() -> String {
    format!(
        "lxvirt-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Runs `call` while drawing the Progress signals tagged `token`.
async fn with_progress<T>(
    images: &ImagesProxy<'_>,
    token: &str,
    call: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T> {
    let mut signals = images.receive_progress().await?;
    let mut bar = Bar::new(std::io::stderr().is_terminal());
    let call = std::pin::pin!(call);
    let mut call = call;
    loop {
        tokio::select! {
            result = &mut call => {
                bar.finish();
                return result.map_err(Failure::from);
            }
            Some(signal) = signals.next() => {
                if let Ok(args) = signal.args()
                    && *args.token() == token
                {
                    bar.update(args.phase(), *args.done(), *args.total());
                }
            }
        }
    }
}

/// Progress on stderr: a redrawn bar on a terminal, otherwise a plain
/// line per phase and per tenth.
struct Bar {
    terminal: bool,
    drawn: bool,
    last: Option<(String, u64)>,
}

impl Bar {
    fn new(terminal: bool) -> Bar {
        Bar {
            terminal,
            drawn: false,
            last: None,
        }
    }

    fn update(&mut self, phase: &str, done: u64, total: u64) {
        let tenth = (done * 10).checked_div(total).unwrap_or(0);
        let mut stderr = std::io::stderr();
        if self.terminal {
            let text = match (done * 100).checked_div(total) {
                Some(pct) => {
                    let filled = usize::try_from(pct / 4).unwrap_or(25).min(25);
                    format!(
                        "\r{phase:<12} [{}{}] {pct:>3}% {} / {}",
                        "#".repeat(filled),
                        " ".repeat(25 - filled),
                        human(done),
                        human(total)
                    )
                }
                None => format!("\r{phase:<12} {}", human(done)),
            };
            let _ = write!(stderr, "{text}\x1b[K");
            let _ = stderr.flush();
            self.drawn = true;
        } else if self.last.as_ref() != Some(&(phase.to_owned(), tenth)) {
            let _ = match total {
                0 => writeln!(stderr, "{phase}: {}", human(done)),
                _ => writeln!(
                    stderr,
                    "{phase}: {}% ({} of {})",
                    tenth * 10,
                    human(done),
                    human(total)
                ),
            };
            self.last = Some((phase.to_owned(), tenth));
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Bytes for people: `512 B`, `1.5 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[derive(Serialize)]
struct IdReport<'a> {
    id: &'a str,
    name: Option<&'a str>,
}

fn report_id(format: Format, what: &str, id: &str, name: Option<&str>) -> Result<()> {
    match format {
        Format::Text => match name {
            Some(name) => println!("Image '{name}' {what}: {id}"),
            None => println!("Image {what}: {id}"),
        },
        Format::Json => print_json(&IdReport { id, name })?,
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn list_text(list: &[ImageRecord]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                short(&i.id).to_owned(),
                if i.names.is_empty() {
                    "-".to_owned()
                } else {
                    i.names.join(",")
                },
                if i.parent.is_empty() {
                    "-".to_owned()
                } else {
                    short(&i.parent).to_owned()
                },
                human(i.size),
                human(i.total_size),
                i.domains.join(","),
            ]
        })
        .collect();
    output::table(
        &["ID", "Names", "Parent", "Size", "Total", "Domains"],
        &rows,
    )
}

fn inspect_text(i: &ImageRecord) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(" ")
        }
    };
    let chain: Vec<String> = i.chain.iter().map(|c| short(c).to_owned()).collect();
    format!(
        "{:<12}{}\n{:<12}{}\n{:<12}{}\n{:<12}{}\n{:<12}{}\n{:<12}{} ({} bytes)\n{:<12}{} ({} bytes)\n{:<12}{}\n{:<12}{}\n{:<12}{}\n",
        "ID:",
        i.id,
        "Names:",
        list(&i.names),
        "Parent:",
        if i.parent.is_empty() { "-" } else { &i.parent },
        "Chain:",
        chain.join(" <- "),
        "Created:",
        i.created,
        "Size:",
        human(i.size),
        i.size,
        "Total:",
        human(i.total_size),
        i.total_size,
        "Children:",
        list(&i.children),
        "Domains:",
        list(&i.domains),
        "Source:",
        i.source,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
