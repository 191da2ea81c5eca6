#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::selinux::SelinuxDriver;
use super::*;

const PROCESS: &str = "system_u:system_r:svirt_lxc_net_t:s0";
const FILE: &str = "system_u:object_r:svirt_sandbox_file_t:s0";

fn domain(seclabel: &str) -> DomainDef {
    DomainDef::from_xml(&format!(
        "<domain type='lxc'><name>web</name><memory>65536</memory>\
         <os><type>exe</type><init>/sbin/init</init></os>{seclabel}\
         <devices><console type='pty'/></devices></domain>"
    ))
    .unwrap()
}

fn named(name: &str, seclabel: &str) -> DomainDef {
    let mut def = domain(seclabel);
    def.name = crate::domain::DomainName::new(name).unwrap();
    def
}

/// An SELinux host whose selinuxfs is a temporary directory.
fn selinux_host(dir: &std::path::Path, range: &str) -> SelinuxHost {
    SelinuxHost {
        mount: dir.to_owned(),
        mode: Mode::Enforcing,
        policy_type: Some("default".into()),
        context: format!("system_u:system_r:lxvirtd_t:{range}"),
        range: CategoryRange::from_context(&format!("u:r:t:{range}")).unwrap(),
        lxc_contexts: None,
        base: BaseLabels::default(),
        vm_base: BaseLabels::vm_defaults(),
        vm_tcg_process: detect::DEFAULT_VM_TCG_PROCESS_LABEL.into(),
    }
}

fn selinux(dir: &std::path::Path, default_confinement: bool) -> Security {
    let driver = SelinuxDriver::with_rng(
        selinux_host(dir, "s0-s0:c0.c1023"),
        StdRng::seed_from_u64(7),
    );
    Security::with_driver(Box::new(driver), HostSelinux::Ready, default_confinement)
}

fn no_selinux() -> Security {
    Security::with_driver(
        Box::new(NoneDriver),
        HostSelinux::Absent("selinuxfs is not mounted".into()),
        true,
    )
}

fn level(label: &str) -> &str {
    mcs::level_of_context(label).unwrap()
}

#[test]
fn seclabel_semantics_table() {
    let ready = HostSelinux::Ready;
    let absent = HostSelinux::Absent("selinuxfs is not mounted".into());
    let unusable = HostSelinux::Unusable("bad range".into());
    let sec = |xml: &str| domain(xml).seclabel;
    use Plan::*;
    let cases: Vec<(&str, &HostSelinux, bool, Result<Plan, &str>)> = vec![
        // No <seclabel>: confined on SELinux hosts unless turned off.
        ("", &ready, true, Ok(Dynamic { baselabel: None })),
        (
            "",
            &ready,
            false,
            Ok(Unconfined {
                model: Some(SecModel::Selinux),
            }),
        ),
        ("", &absent, true, Ok(Unconfined { model: None })),
        ("", &unusable, true, Err("confinement by default")),
        ("", &unusable, false, Ok(Unconfined { model: None })),
        // Dynamic (the default type).
        ("<seclabel/>", &ready, true, Ok(Dynamic { baselabel: None })),
        (
            "<seclabel model='selinux'/>",
            &ready,
            false,
            Ok(Dynamic { baselabel: None }),
        ),
        (
            "<seclabel><baselabel>u:r:mine_t:s0</baselabel></seclabel>",
            &ready,
            true,
            Ok(Dynamic {
                baselabel: Some("u:r:mine_t:s0".into()),
            }),
        ),
        (
            "<seclabel/>",
            &absent,
            true,
            Err("<seclabel type='dynamic'>"),
        ),
        (
            "<seclabel type='dynamic' model='selinux'/>",
            &absent,
            true,
            Err("<seclabel type='dynamic' model='selinux'>"),
        ),
        // Static.
        (
            "<seclabel type='static'><label>u:r:t:s0:c1,c2</label></seclabel>",
            &ready,
            true,
            Ok(Static {
                label: "u:r:t:s0:c1,c2".into(),
                relabel: false,
            }),
        ),
        (
            "<seclabel type='static' relabel='yes'><label>u:r:t:s0:c1,c2</label></seclabel>",
            &ready,
            true,
            Ok(Static {
                label: "u:r:t:s0:c1,c2".into(),
                relabel: true,
            }),
        ),
        (
            "<seclabel type='static'><label>u:r:t:s0:c1,c2</label></seclabel>",
            &absent,
            true,
            Err("<seclabel type='static'>"),
        ),
        // None.
        (
            "<seclabel type='none'/>",
            &ready,
            true,
            Ok(Unconfined {
                model: Some(SecModel::Selinux),
            }),
        ),
        (
            "<seclabel type='none'/>",
            &absent,
            true,
            Ok(Unconfined { model: None }),
        ),
        (
            "<seclabel type='none' model='none'/>",
            &ready,
            true,
            Ok(Unconfined {
                model: Some(SecModel::None),
            }),
        ),
        (
            "<seclabel type='none' model='none'/>",
            &absent,
            true,
            Ok(Unconfined {
                model: Some(SecModel::None),
            }),
        ),
        (
            "<seclabel type='none' model='selinux'/>",
            &absent,
            true,
            Err("model='selinux'"),
        ),
    ];
    for (xml, host, default_confinement, expected) in cases {
        let got = plan("web", sec(xml).as_ref(), host, default_confinement);
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{xml} on {host:?}"),
            (Err(err), Err(want)) => {
                assert!(err.is_unavailable(), "{xml}: {err}");
                let message = err.to_string();
                assert!(message.contains(want), "{xml}: {message}");
                assert!(message.contains("domain 'web'"), "{message}");
                assert!(message.contains("use <seclabel type='none'/>"), "{message}");
            }
            (got, want) => panic!("{xml} on {host:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn dynamic_labels_use_the_base_contexts_and_one_pair() {
    let dir = tempfile::tempdir().unwrap();
    let mut security = selinux(dir.path(), true);
    let prepared = security.prepare(&domain("")).unwrap();
    let spec = prepared.spec.unwrap();
    let pair = level(&spec.process_label).to_owned();
    assert_eq!(spec.process_label, mcs::with_level(PROCESS, &pair));
    assert_eq!(spec.image_label, mcs::with_level(FILE, &pair));
    assert!(spec.relabel_root);
    // The live seclabel: model filled in, labels shown.
    let sec = &prepared.seclabel;
    assert_eq!(sec.label_type, SecLabelType::Dynamic);
    assert_eq!(sec.model, Some(SecModel::Selinux));
    assert!(sec.relabel);
    assert_eq!(sec.live.label.as_deref(), Some(spec.process_label.as_str()));
    assert_eq!(
        sec.live.imagelabel.as_deref(),
        Some(spec.image_label.as_str())
    );

    // A baselabel replaces the process context, not the file context.
    let def = named(
        "db",
        "<seclabel type='dynamic'><baselabel>staff_u:staff_r:mine_t:s0</baselabel></seclabel>",
    );
    let spec = security.prepare(&def).unwrap().spec.unwrap();
    assert!(
        spec.process_label
            .starts_with("staff_u:staff_r:mine_t:s0:c")
    );
    assert!(
        spec.image_label
            .starts_with("system_u:object_r:svirt_sandbox_file_t:s0:c")
    );
    assert_ne!(level(&spec.process_label), pair);
}

#[test]
fn static_labels_are_exact_and_reserve_their_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut security = selinux(dir.path(), true);
    let def = domain(
        "<seclabel type='static' model='selinux'><label>system_u:system_r:svirt_lxc_net_t:s0:c10,c20</label></seclabel>",
    );
    let prepared = security.prepare(&def).unwrap();
    let spec = prepared.spec.unwrap();
    assert_eq!(
        spec.process_label,
        "system_u:system_r:svirt_lxc_net_t:s0:c10,c20"
    );
    assert_eq!(
        spec.image_label,
        "system_u:object_r:svirt_sandbox_file_t:s0:c10,c20"
    );
    assert!(!spec.relabel_root);
    assert_eq!(
        prepared.seclabel.label.as_deref(),
        Some(spec.process_label.as_str())
    );
    assert_eq!(prepared.seclabel.live.label, None);
    // A dynamic domain cannot be restored onto a static level.
    let mut running = named("dyn", "<seclabel/>");
    running.seclabel.as_mut().unwrap().live = LiveLabels {
        label: Some(mcs::with_level(PROCESS, "s0:c10,c20")),
        imagelabel: None,
    };
    let err = security.reserve_running(&running).unwrap_err();
    assert!(err.to_string().contains("'web'"), "{err}");
}

#[test]
fn unconfined_domains_show_type_none() {
    let mut security = no_selinux();
    let prepared = security.prepare(&domain("")).unwrap();
    assert_eq!(prepared.spec, None);
    let mut def = domain("");
    def.seclabel = Some(prepared.seclabel);
    let live = def.to_live_xml();
    assert!(live.contains("<seclabel type='none'/>"), "{live}");
    // The live XML reads back to the same definition.
    assert_eq!(DomainDef::from_xml(&live).unwrap(), def);
    assert_eq!(process_label(&def), None);

    let err = security
        .prepare(&domain("<seclabel type='dynamic' model='selinux'/>"))
        .unwrap_err();
    assert!(err.is_unavailable());
    assert!(
        err.to_string().contains("use <seclabel type='none'/>"),
        "{err}"
    );

    // Default confinement off on an SELinux host: type none, model selinux.
    let dir = tempfile::tempdir().unwrap();
    let mut security = selinux(dir.path(), false);
    let prepared = security.prepare(&domain("")).unwrap();
    assert_eq!(prepared.spec, None);
    let mut def = domain("");
    def.seclabel = Some(prepared.seclabel);
    assert!(
        def.to_live_xml()
            .contains("<seclabel type='none' model='selinux'/>")
    );
}

#[test]
fn live_xml_shows_labels_and_restores_them_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut security = selinux(dir.path(), true);
    let mut def = domain("");
    let prepared = security.prepare(&def).unwrap();
    let spec = prepared.spec.clone().unwrap();
    def.seclabel = Some(prepared.seclabel);
    let live = def.to_live_xml();
    assert!(
        live.contains(&format!("<label>{}</label>", spec.process_label)),
        "{live}"
    );
    assert!(live.contains(&format!("<imagelabel>{}</imagelabel>", spec.image_label)));
    assert!(live.contains("<seclabel type='dynamic' model='selinux' relabel='yes'>"));
    // The persistent XML keeps no generated label.
    assert!(!def.to_xml().contains("<label>"));
    assert_eq!(process_label(&def), Some(spec.process_label.as_str()));

    // A new daemon reads the live XML back and reserves the pair again.
    let restored = DomainDef::from_xml(&live).unwrap();
    let mut fresh = selinux(dir.path(), true);
    fresh.reserve_running(&restored).unwrap();
    // Reserving the same domain twice is harmless; another name is not.
    fresh.reserve_running(&restored).unwrap();
    let mut twin = restored.clone();
    twin.name = crate::domain::DomainName::new("twin").unwrap();
    let err = fresh.reserve_running(&twin).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("'twin'") && message.contains("'web'"),
        "{message}"
    );
    assert!(message.contains(level(&spec.process_label)), "{message}");
    // Released at stop, the pair is free again.
    fresh.release("web");
    fresh.reserve_running(&twin).unwrap();
}

#[test]
fn labels_invalid_in_the_policy_are_refused_and_released() {
    // Without a selinuxfs `context` file the check cannot answer: allowed.
    let dir = tempfile::tempdir().unwrap();
    let mut security = selinux(dir.path(), true);
    security.prepare(&domain("")).unwrap();
    security.release("web");
    // /dev/full answers writes with ENOSPC: not a definite "invalid".
    std::os::unix::fs::symlink("/dev/full", dir.path().join("context")).unwrap();
    security.prepare(&domain("")).unwrap();
    security.release("web");

    // Without an active LSM the kernel answers writes to attr files with
    // EINVAL, as selinuxfs does for a context the policy does not know.
    let no_lsm = std::fs::read("/proc/thread-self/attr/current")
        .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL));
    if no_lsm {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/proc/thread-self/attr/exec", dir.path().join("context"))
            .unwrap();
        let mut driver = SelinuxDriver::with_rng(
            selinux_host(dir.path(), "s0-s0:c0.c1023"),
            StdRng::seed_from_u64(1),
        );
        let err = driver
            .generate(
                "web",
                Workload::Container,
                &LabelRequest::Dynamic { baselabel: None },
            )
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("not valid in the loaded SELinux policy"),
            "{message}"
        );
        assert!(message.contains("svirt_lxc_net_t"), "{message}");
        // Nothing stays reserved.
        assert!(driver.allocator().is_empty());
    } else {
        eprintln!("skipped the EINVAL case: an LSM is active");
    }

    // Exhaustion of a narrow range is an error naming the range.
    let dir = tempfile::tempdir().unwrap();
    let mut driver = SelinuxDriver::with_rng(
        selinux_host(dir.path(), "s0-s0:c0.c7"),
        StdRng::seed_from_u64(1),
    );
    // Containers and VMs draw from one allocator.
    for i in 0..28 {
        let workload = if i % 2 == 0 {
            Workload::Container
        } else {
            Workload::Vm
        };
        driver
            .generate(
                &format!("d{i}"),
                workload,
                &LabelRequest::Dynamic { baselabel: None },
            )
            .unwrap();
    }
    let err = driver
        .generate(
            "late",
            Workload::Vm,
            &LabelRequest::Dynamic { baselabel: None },
        )
        .unwrap_err();
    assert!(err.to_string().contains("c0.c7"), "{err}");
    assert_eq!(driver.allocator().len(), 28);
    driver.release("d0");
    assert_eq!(driver.allocator().len(), 27);
}

#[test]
fn detect_on_this_kind_of_host_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("proc")).unwrap();
    std::fs::write(dir.path().join("proc/mountinfo"), "").unwrap();
    let security = Security::detect(&SecurityConfig {
        paths: SelinuxPaths {
            proc_self: dir.path().join("proc"),
            etc_selinux: PathBuf::from("/nonexistent"),
        },
        ..SecurityConfig::default()
    });
    assert_eq!(security.model(), SecModel::None);
    assert_eq!(
        security.report().selinux,
        HostSelinux::Absent("selinuxfs is not mounted".into())
    );
    assert!(security.file_labeler().is_none());

    // Enabled with a range too narrow: unusable, confined domains refused.
    let f = dir.path();
    std::fs::create_dir_all(f.join("fs/class/file")).unwrap();
    std::fs::write(f.join("fs/enforce"), "1").unwrap();
    std::fs::create_dir_all(f.join("proc/attr")).unwrap();
    std::fs::write(f.join("proc/attr/current"), "u:r:lxvirtd_t:s0-s0:c0.c3").unwrap();
    std::fs::write(
        f.join("proc/mountinfo"),
        format!(
            "1 1 0:1 / {} rw - selinuxfs selinuxfs rw\n",
            f.join("fs").display()
        ),
    )
    .unwrap();
    let mut security = Security::detect(&SecurityConfig {
        paths: SelinuxPaths {
            proc_self: f.join("proc"),
            etc_selinux: PathBuf::from("/nonexistent"),
        },
        ..SecurityConfig::default()
    });
    assert!(matches!(
        security.report().selinux,
        HostSelinux::Unusable(_)
    ));
    let err = security.prepare(&domain("")).unwrap_err();
    assert!(err.to_string().contains("4 categories"), "{err}");

    std::fs::write(f.join("proc/attr/current"), "u:r:lxvirtd_t:s0-s0:c0.c1023").unwrap();
    let security = Security::detect(&SecurityConfig {
        paths: SelinuxPaths {
            proc_self: f.join("proc"),
            etc_selinux: PathBuf::from("/nonexistent"),
        },
        ..SecurityConfig::default()
    });
    assert_eq!(security.model(), SecModel::Selinux);
    assert_eq!(security.report().mode, Some(Mode::Enforcing));
    assert!(security.file_labeler().is_some());

    // A malformed default label makes SELinux unusable rather than
    // producing broken labels.
    let security = Security::detect(&SecurityConfig {
        paths: SelinuxPaths {
            proc_self: f.join("proc"),
            etc_selinux: PathBuf::from("/nonexistent"),
        },
        defaults: BaseLabels {
            process: "svirt_lxc_net_t".into(),
            ..BaseLabels::default()
        },
        ..SecurityConfig::default()
    });
    match &security.report().selinux {
        HostSelinux::Unusable(reason) => {
            assert!(reason.contains("--default-process-label"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A VM's qemu and images get the VM base labels (qemu under TCG its own
/// domain), with a pair no running container or VM has; a static VM
/// label keeps its level for the image.
#[test]
fn vms_get_svirt_t_and_svirt_image_t_with_pairs_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut security = selinux(dir.path(), true);
    let vm = |name: &str, seclabel: &str| {
        let domain_type = if name == "vm2" { "qemu" } else { "kvm" };
        DomainDef::from_xml(&format!(
            "<domain type='{domain_type}'><name>{name}</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type></os>{seclabel}</domain>"
        ))
        .unwrap()
    };
    let container = security.prepare(&named("c1", "")).unwrap().spec.unwrap();
    let first = security.prepare(&vm("vm1", "")).unwrap().spec.unwrap();
    let second = security.prepare(&vm("vm2", "")).unwrap().spec.unwrap();
    assert!(
        first
            .process_label
            .starts_with("system_u:system_r:svirt_t:s0:c"),
        "{first:?}"
    );
    assert!(
        first
            .image_label
            .starts_with("system_u:object_r:svirt_image_t:s0:c"),
        "{first:?}"
    );
    assert_eq!(level(&first.process_label), level(&first.image_label));
    assert!(
        second
            .process_label
            .starts_with("system_u:system_r:svirt_tcg_t:s0:c"),
        "{second:?}"
    );
    assert!(second.image_label.contains(":svirt_image_t:"));
    let levels = [&container, &first, &second].map(|s| level(&s.process_label).to_owned());
    assert_ne!(levels[0], levels[1]);
    assert_ne!(levels[0], levels[2]);
    assert_ne!(levels[1], levels[2]);
    assert!(container.process_label.contains(":svirt_lxc_net_t:"));

    let fixed = security
        .prepare(&vm(
            "vm3",
            "<seclabel type='static' model='selinux'><label>system_u:system_r:svirt_t:s0:c5,c6</label></seclabel>",
        ))
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        fixed.image_label,
        "system_u:object_r:svirt_image_t:s0:c5,c6"
    );
}
