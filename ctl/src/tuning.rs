//! `lxvirt memtune` and `schedinfo`: a domain's memory limits and CPU
//! scheduler parameters, shown or set (live, in the definition, or both),
//! as virsh's verbs of those names.

use std::collections::{BTreeMap, HashMap};

use lxvirt_api::proxy::DomainProxy;
use zbus::Variant;

use crate::cli::{Affect, Format};
use crate::commands::{EXIT_USAGE, Failure, Result, print_json};

/// The memory parameters, in the order virsh prints them.
const MEMORY: [&str; 3] = ["hard_limit", "soft_limit", "swap_hard_limit"];
const SCHEDULER: [&str; 3] = ["cpu_shares", "vcpu_period", "vcpu_quota"];

/// Sets the given values, or shows them all when none is given.
pub async fn memtune(
    proxy: &DomainProxy<'_>,
    values: [Option<u64>; 3],
    affect: Affect,
    format: Format,
) -> Result<()> {
    let set: HashMap<&str, Variant<'_>> = MEMORY
        .iter()
        .zip(values)
        .filter_map(|(key, value)| Some((*key, Variant::from(value?))))
        .collect();
    if !set.is_empty() {
        return Ok(proxy.set_memory_parameters(set, affect.flags()).await?);
    }
    let got = proxy.get_memory_parameters(affect.flags()).await?;
    let rows: BTreeMap<&str, Option<u64>> = MEMORY
        .iter()
        .map(|key| (*key, got.get(*key).and_then(|v| u64::try_from(v).ok())))
        .collect();
    match format {
        Format::Json => print_json(&rows)?,
        Format::Text => {
            for key in MEMORY {
                match rows[key] {
                    Some(kib) => println!("{key:<15}: {kib}"),
                    None => println!("{key:<15}: unlimited"),
                }
            }
        }
    }
    Ok(())
}

/// Sets `PARAM=VALUE`s, or shows every parameter when none is given.
pub async fn schedinfo(
    proxy: &DomainProxy<'_>,
    set: &[String],
    affect: Affect,
    format: Format,
) -> Result<()> {
    if !set.is_empty() {
        let mut params: HashMap<&str, Variant<'_>> = HashMap::new();
        for assignment in set {
            let (key, value) = parse_assignment(assignment)?;
            params.insert(key, value);
        }
        return Ok(proxy
            .set_scheduler_parameters(params, affect.flags())
            .await?);
    }
    let got = proxy.get_scheduler_parameters(affect.flags()).await?;
    let value = |key: &str| -> Option<i64> {
        let v = got.get(key)?;
        i64::try_from(v)
            .ok()
            .or_else(|| u64::try_from(v).ok().and_then(|u| i64::try_from(u).ok()))
    };
    let rows: BTreeMap<&str, Option<i64>> = SCHEDULER.iter().map(|k| (*k, value(k))).collect();
    match format {
        Format::Json => print_json(&rows)?,
        Format::Text => {
            println!("{:<15}: posix", "Scheduler");
            for key in SCHEDULER {
                match rows[key] {
                    Some(v) => println!("{key:<15}: {v}"),
                    None => println!("{key:<15}: default"),
                }
            }
        }
    }
    Ok(())
}

/// The block I/O parameters, in the order virsh prints them.
const BLKIO_DEVICES: [&str; 5] = [
    "device_weight",
    "device_read_bytes_sec",
    "device_write_bytes_sec",
    "device_read_iops_sec",
    "device_write_iops_sec",
];

/// Sets the given values, or shows them all when none is given.
pub async fn blkiotune(
    proxy: &DomainProxy<'_>,
    weight: Option<u32>,
    devices: [(&'static str, Option<String>); 5],
    affect: Affect,
    format: Format,
) -> Result<()> {
    let mut set: HashMap<&str, Variant<'_>> = devices
        .into_iter()
        .filter_map(|(key, value)| Some((key, Variant::from(value?))))
        .collect();
    if let Some(weight) = weight {
        set.insert("weight", Variant::from(weight));
    }
    if !set.is_empty() {
        return Ok(proxy.set_blkio_parameters(set, affect.flags()).await?);
    }
    let got = proxy.get_blkio_parameters(affect.flags()).await?;
    let weight = got.get("weight").and_then(|v| u32::try_from(v).ok());
    let text = |key: &str| got.get(key).and_then(|v| String::try_from(v.clone()).ok());
    match format {
        Format::Json => {
            let rows: BTreeMap<&str, serde_json::Value> = std::iter::once((
                "weight",
                weight.map_or(serde_json::Value::Null, serde_json::Value::from),
            ))
            .chain(BLKIO_DEVICES.iter().map(|key| {
                (
                    *key,
                    text(key).map_or(serde_json::Value::Null, serde_json::Value::from),
                )
            }))
            .collect();
            print_json(&rows)?;
        }
        Format::Text => {
            match weight {
                Some(w) => println!("{:<22}: {w}", "weight"),
                None => println!("{:<22}: default", "weight"),
            }
            for key in BLKIO_DEVICES {
                println!("{key:<22}: {}", text(key).unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// Sets the given values, or shows them when none is given.
pub async fn numatune(
    proxy: &DomainProxy<'_>,
    nodeset: Option<String>,
    mode: Option<String>,
    affect: Affect,
    format: Format,
) -> Result<()> {
    let set: HashMap<&str, Variant<'_>> = [("numa_nodeset", nodeset), ("numa_mode", mode)]
        .into_iter()
        .filter_map(|(key, value)| Some((key, Variant::from(value?))))
        .collect();
    if !set.is_empty() {
        return Ok(proxy.set_numa_parameters(set, affect.flags()).await?);
    }
    let got = proxy.get_numa_parameters(affect.flags()).await?;
    let rows: BTreeMap<&str, Option<String>> = ["numa_mode", "numa_nodeset"]
        .into_iter()
        .map(|key| {
            (
                key,
                got.get(key).and_then(|v| String::try_from(v.clone()).ok()),
            )
        })
        .collect();
    match format {
        Format::Json => print_json(&rows)?,
        Format::Text => {
            for (key, value) in &rows {
                println!("{key:<15}: {}", value.as_deref().unwrap_or(""));
            }
        }
    }
    Ok(())
}

/// `setmem` (`<currentMemory>`) or `setmaxmem` (`<memory>`, `maximum`).
pub async fn set_memory(
    proxy: &DomainProxy<'_>,
    size: &str,
    affect: Affect,
    maximum: bool,
) -> Result<()> {
    let kib = parse_kib(size)?;
    if maximum {
        proxy.set_max_memory(kib, affect.flags()).await?;
    } else {
        proxy.set_memory(kib, affect.flags()).await?;
    }
    Ok(())
}

/// `pids-limit`: sets the limit (`default`: the daemon's), or shows it.
pub async fn pids_limit(
    proxy: &DomainProxy<'_>,
    max: Option<&str>,
    affect: Affect,
    format: Format,
) -> Result<()> {
    let Some(max) = max else {
        let limit = proxy.get_pids_limit(affect.flags()).await?;
        match format {
            Format::Json => print_json(&serde_json::json!({ "pids_max": limit }))?,
            Format::Text if limit == 0 => println!("pids_max: (lxvirtd's setting)"),
            Format::Text => println!("pids_max: {limit}"),
        }
        return Ok(());
    };
    let value = match max {
        "default" => 0,
        n => n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                format!("pids-limit '{max}': give a number of tasks (1 or more) or 'default'"),
            )
        })?,
    };
    Ok(proxy.set_pids_limit(value, affect.flags()).await?)
}

/// A size as virsh takes it: KiB, or a number with a suffix (K, M, G, T;
/// powers of 1024, an optional trailing `iB`/`B`).
fn parse_kib(text: &str) -> Result<u64> {
    let bad = || {
        Failure::new(
            EXIT_USAGE,
            format!("size '{text}': write KiB, or a number with K, M, G or T (512M)"),
        )
    };
    let trimmed = text.trim();
    let unit_at = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_at);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_end_matches("iB").trim_end_matches('B');
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "K" => 0,
        "M" => 10,
        "G" => 20,
        "T" => 30,
        _ => return Err(bad()),
    };
    number.checked_mul(1 << shift).ok_or_else(bad)
}

/// `cpu_shares=512` → the parameter and its value as the bus wants it.
fn parse_assignment(text: &str) -> Result<(&'static str, Variant<'static>)> {
    let usage = |why: String| Failure::new(EXIT_USAGE, why);
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| usage(format!("--set {text}: write PARAM=VALUE")))?;
    let key = SCHEDULER
        .iter()
        .find(|k| **k == key.trim())
        .ok_or_else(|| {
            usage(format!(
                "--set {text}: unknown parameter; known: {}",
                SCHEDULER.join(", ")
            ))
        })?;
    let bad = || usage(format!("--set {text}: '{value}' is not a number"));
    let value = if *key == "vcpu_quota" {
        Variant::from(value.trim().parse::<i64>().map_err(|_| bad())?)
    } else {
        Variant::from(value.trim().parse::<u64>().map_err(|_| bad())?)
    };
    Ok((key, value))
}

#[cfg(test)]
mod size_tests {
    use super::parse_kib;

    #[test]
    fn sizes_are_kib_or_suffixed() {
        assert_eq!(parse_kib("65536").unwrap(), 65536);
        assert_eq!(parse_kib("512M").unwrap(), 512 * 1024);
        assert_eq!(parse_kib("2GiB").unwrap(), 2 * 1024 * 1024);
        assert_eq!(parse_kib("1g").unwrap(), 1024 * 1024);
        assert_eq!(parse_kib("64K").unwrap(), 64);
        for bad in ["", "M", "12Q", "-5", "1.5G"] {
            assert!(parse_kib(bad).is_err(), "{bad}");
        }
    }
}
