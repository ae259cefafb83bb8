//! `autofs-controller check --external PATH`, end to end: the real CLI, a real agent in its own
//! network namespace, and a container (new mount and pid namespaces) holding a copy of a host
//! autofs mount whose daemon lives outside it, as a pod holds a hostPath volume.

mod common;

use autofs_testkit::container::Container;
use autofs_testkit::{MountSpec, Scenario};
use common::*;

#[test]
fn check_with_external_skips_the_hostpath_bind_and_names_it() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let c = Container::start(&sc).unwrap();
    let node = Node::start("external", &[]);
    let whole = d.mount_point.to_str().unwrap();
    let pid = c.pid.to_string();
    let check = |rest: &[&str]| {
        controller(
            &[
                &[
                    "check",
                    "--nodes",
                    &node.endpoint(),
                    "--node",
                    node.name(),
                    "--pid",
                    &pid,
                ][..],
                rest,
            ]
            .concat(),
        )
    };

    // A bare dump: the copy is ORPHANED (its master is outside the container): blocked.
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is NOT migratable now"), "{text}");
    assert!(text.contains(&format!("{whole}  ORPHANED")), "{text}");
    assert!(!text.contains("skipped as external"), "{text}");

    // Checkpointed as runc does, the hostPath bind external: dumpable, and the skipped mount
    // is named with the verdict a bare dump would meet.
    let out = check(&["--external", whole, "--external", "/no/such/mount"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is migratable now"), "{text}");
    assert!(
        text.contains(
            "skipped as external by CRIU (--external mnt[PATH]), not blocking: 1 autofs mount(s):"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  {whole}  (root /; a bare dump would meet ORPHANED)"
        )),
        "{text}"
    );
    let out = check(&["--external", whole, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc["dumpable"], true);
    assert_eq!(doc["external"][0]["mount_point"], whole);
    assert_eq!(doc["external"][0]["state"], "ORPHANED");
    assert_eq!(doc["blocking"].as_array().map(Vec::len), Some(0));

    // The wait takes the same paths: nothing else blocks, so it ends at once.
    let out = check(&["--external", whole, "--wait", "30s"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("checkpoint it"), "{text}");
    assert!(text.contains(&format!("  {whole}  (root /")), "{text}");

    // A path CRIU could never match is refused by the agent, naming it: exit 2.
    let out = check(&["--external", "relative/path"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("external_mounts[0]: not an absolute path"),
        "{err}"
    );
    drop(c);
}
