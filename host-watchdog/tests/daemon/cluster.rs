//! The cluster hand-off against Pacemaker's own tools: vigild publishes the
//! host's health through `attrd_updater` (a recording stand-in, the cluster
//! daemons are not running here) and the recorded updates are replayed on
//! a two-node CIB with `crm_attribute` and `crm_simulate` (Pacemaker's
//! scheduler, no daemons): red moves the VM off the node, yellow does
//! nothing, green after red moves nothing back. And `vigilctl health`, the
//! monitor hook, with its exit codes; a cluster-managed VM refused to an
//! operator's `vigilctl action`.

use super::host::append;
use super::*;

/// A stand-in for a cluster tool: records its arguments, one line a call.
fn recorder(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let (bin, log) = (dir.join(name), dir.join(format!("{name}.log")));
    std::fs::write(
        &bin,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&bin)
        .status()
        .unwrap();
    std::fs::write(&log, "").unwrap();
    (bin, log)
}

fn pacemaker_tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/sbin").join(name);
    assert!(
        p.exists(),
        "{} missing: install pacemaker-cli-utils (bash scripts/setup.sh)",
        p.display()
    );
    p
}

/// Set `#health-vigil` on a CIB file and let the scheduler act; the
/// transitions it decided, and the CIB after them.
fn apply(
    cib: &std::path::Path,
    node: &str,
    name: &str,
    value: &str,
    out: &std::path::Path,
) -> Vec<String> {
    let st = Command::new(pacemaker_tool("crm_attribute"))
        .env("CIB_file", cib)
        .args([
            "--node",
            node,
            "--name",
            name,
            "--update",
            value,
            "--lifetime",
            "reboot",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "crm_attribute on {}", cib.display());
    let sim = Command::new(pacemaker_tool("crm_simulate"))
        .arg("-x")
        .arg(cib)
        .arg("-S")
        .arg("-O")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    String::from_utf8_lossy(&sim.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Transition Summary"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn host_health_reaches_pacemaker_and_moves_vms_only_on_red() {
    let tools = tempfile::tempdir().unwrap();
    let (attrd, attrd_log) = recorder(tools.path(), "attrd_updater");
    let (crm, _) = recorder(tools.path(), "crm_resource");
    let kmsg = tools.path().join("kmsg");
    std::fs::write(&kmsg, "").unwrap();
    let rig = Rig::with_top(
        &format!("host_kmsg = \"{}\"\n", kmsg.display()),
        &format!(
            "cluster_resource = \"vm-db\"\n[cluster]\nkind = \"pacemaker\"\nnode = \"hv1\"\ndampen_s = 0\n\
             attrd_updater = \"{}\"\ncrm_resource = \"{}\"\n",
            attrd.display(),
            crm.display()
        ),
    );
    let published = || -> Vec<String> {
        std::fs::read_to_string(&attrd_log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let wait_for = |n: usize| {
        wait_until(
            Duration::from_secs(10),
            &format!("{n} health updates"),
            || published().len() >= n,
        )
    };
    wait_for(1); // at start: the health as it is
    append(
        &kmsg,
        "3,2,2000,-;I/O error, dev sdb, sector 1953525000 op 0x1:(WRITE) flags 0x800 phys_seg 8 prio class 0",
    );
    wait_for(2);
    append(
        &kmsg,
        "0,3,3000,-;EDAC MC1: 1 UE memory read error on DIMM_B2 (channel:0 slot:1 page:0x1234 offset:0x0 grain:32)",
    );
    wait_for(3);
    assert!(rig.ctl(&["host", "--clear"]).status.success());
    wait_for(4);
    let calls = published();
    assert_eq!(
        calls,
        [
            "--name #health-vigil --update green --node hv1",
            "--name #health-vigil --update yellow --node hv1",
            "--name #health-vigil --update red --node hv1",
            "--name #health-vigil --update green --node hv1",
        ],
        "{}",
        rig.log()
    );

    // Replayed on a two-node cluster's CIB, in order.
    let work = tempfile::tempdir().unwrap();
    let mut cib = work.path().join("cib-0.xml");
    let start = Command::new(pacemaker_tool("crm_simulate"))
        .arg("-x")
        .arg(workspace().join("tests/fixtures/cluster/cib.xml"))
        .args(["-S", "-O"])
        .arg(&cib)
        .output()
        .unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let mut decided = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        let w: Vec<&str> = call.split(' ').collect();
        let arg = |flag: &str| w[w.iter().position(|x| *x == flag).unwrap() + 1];
        let next = work.path().join(format!("cib-{}.xml", i + 1));
        let t = apply(&cib, arg("--node"), arg("--name"), arg("--update"), &next);
        decided.push((arg("--update").to_string(), t));
        cib = next;
    }
    let expect: Vec<(String, Vec<String>)> = vec![
        ("green".into(), vec![]),
        ("yellow".into(), vec![]),
        ("red".into(), vec!["* Migrate vm1 ( hv1 -> hv2 )".into()]),
        ("green".into(), vec![]),
    ];
    assert_eq!(decided, expect, "what Pacemaker's scheduler decided");
}

#[test]
fn the_monitor_hook_answers_fast_and_cluster_vms_are_the_clusters() {
    let tools = tempfile::tempdir().unwrap();
    let (attrd, _) = recorder(tools.path(), "attrd_updater");
    let (crm, _) = recorder(tools.path(), "crm_resource");
    let mut rig = Rig::new(&format!(
        "cluster_resource = \"vm-db\"\n[cluster]\nkind = \"pacemaker\"\nnode = \"hv1\"\n\
         attrd_updater = \"{}\"\ncrm_resource = \"{}\"\n",
        attrd.display(),
        crm.display()
    ));
    let code = |args: &[&str]| rig.ctl(args).status.code();
    // Listed by the hypervisor: all right (discovering, within its grace).
    wait_until(Duration::from_secs(10), "web known", || {
        code(&["health", "web"]) == Some(0)
    });
    let t = Instant::now();
    let out = rig.ctl(&["health", "--resource", "vm-db"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("db: ok"),
        "{out:?}"
    );
    eprintln!("vigilctl health answered in {took:?}");
    assert_eq!(code(&["health", "nosuch"]), Some(3));
    assert_eq!(code(&["health", "--resource", "vm-nosuch"]), Some(3));
    assert_eq!(code(&["health"]), Some(2), "a domain or a resource");
    // The cluster starts, stops and moves its VMs, not an operator
    // through vigild.
    let refused = rig.ctl(&["action", "db", "reset"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cluster resource vm-db"),
        "{refused:?}"
    );
    // vigild down: exit 4, or 0 with --unreachable-ok (a watchdog that is
    // down is not a failed guest).
    rig.kill_vigild();
    assert_eq!(rig.ctl(&["health", "web"]).status.code(), Some(4));
    let ok = rig.ctl(&["health", "web", "--unreachable-ok"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stderr).contains("not a guest failure"));
}
