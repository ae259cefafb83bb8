//! CheckMigratable and WaitMigratable with `external_mounts` (CRIU's `--external mnt[PATH]`,
//! as runc passes every bind mount): the real `autofs-agent` binary, a container (new mount and
//! pid namespaces) holding copies of a host autofs mount and of a bind of a directory inside
//! it, served by a daemon outside the container, and a real tonic client. Needs root and
//! autofs; fails, never skips, without them.

mod common;

use autofs_api::v1::{self, check_migratable_request::Target};
use autofs_testkit::container::Container;
use autofs_testkit::{MountSpec, Scenario};
use common::{Agent, HANG_GUARD, assert_status, state};
use tonic::Code;

fn check(pid: i32, external: &[&str]) -> v1::CheckMigratableRequest {
    v1::CheckMigratableRequest {
        target: Some(Target::Pid(pid)),
        external_mounts: external.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn points(reports: &[v1::MountReport]) -> Vec<&str> {
    let mut points: Vec<&str> = reports.iter().map(|r| r.mount_point.as_str()).collect();
    points.sort_unstable();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mounts_skip_the_external_binds_of_a_container_and_only_them() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let sub = sc.work_dir().join("sub-bind");
    sc.bind_subdir(&d, "sub", &sub, false).unwrap();
    let c = Container::start(&sc).unwrap();
    let (whole, part) = (d.mount_point.to_str().unwrap(), sub.to_str().unwrap());
    let agent = Agent::start(&[]);
    agent.wait_serving().await;
    let mut client = agent.client().await;

    // A bare dump (or paths naming no mount): both copies are ORPHANED, the master is outside.
    for external in [&[][..], &["/no/such/mount"][..]] {
        let a = client
            .check_migratable(check(c.pid, external))
            .await
            .unwrap()
            .into_inner();
        assert!(!a.dumpable, "{external:?}: {a:#?}");
        assert_eq!(points(&a.blocking), [whole, part], "{a:#?}");
        assert!(a.external.is_empty(), "{a:#?}");
        assert!(
            a.blocking
                .iter()
                .all(|r| state(r) == v1::MountState::Orphaned),
            "{a:#?}"
        );
    }

    // The whole mount external: CRIU skips it and the bind of a directory inside it.
    let a = client
        .check_migratable(check(c.pid, &[whole]))
        .await
        .unwrap()
        .into_inner();
    assert!(a.dumpable, "{a:#?}");
    assert!(a.blocking.is_empty(), "{a:#?}");
    assert_eq!((a.mounts_checked, a.retry_after_ms), (2, 0));
    assert_eq!(points(&a.external), [whole, part], "{a:#?}");
    for r in &a.external {
        let root = if r.mount_point == whole { "/" } else { "/sub" };
        assert_eq!(
            (r.root.as_str(), r.root_bytes.as_slice()),
            (root, root.as_bytes())
        );
        assert_eq!(
            state(r),
            v1::MountState::Orphaned,
            "the verdict is kept: {r:#?}"
        );
        assert!(!r.blocks_when_external, "{r:#?}");
    }

    // Only the bind of the directory external: the mount of the root still blocks.
    let a = client
        .check_migratable(check(c.pid, &[part]))
        .await
        .unwrap()
        .into_inner();
    assert!(!a.dumpable, "{a:#?}");
    assert_eq!(points(&a.blocking), [whole]);
    assert_eq!(points(&a.external), [part]);

    // WaitMigratable takes the same paths and ends at once: nothing else blocks.
    let mut request = tonic::Request::new(v1::WaitMigratableRequest {
        target: Some(v1::wait_migratable_request::Target::Pid(c.pid)),
        external_mounts: vec![whole.to_owned()],
    });
    request.set_timeout(HANG_GUARD);
    let mut stream = client.wait_migratable(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("one verdict");
    assert_eq!(
        (first.outcome(), first.dumpable, first.blocking.len()),
        (v1::wait_migratable_response::Outcome::Dumpable, true, 0),
        "{first:#?}"
    );
    assert_eq!(points(&first.external), [whole, part]);
    assert!(
        first.message.contains("skips 2 as external bind(s)"),
        "{}",
        first.message
    );
    assert!(stream.message().await.unwrap().is_none(), "the stream ends");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mounts_that_criu_could_never_match_are_invalid_arguments() {
    let agent = Agent::start(&[]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    let own = i32::try_from(std::process::id()).unwrap();
    for (external, names) in [
        (
            vec!["home".to_owned()],
            "external_mounts[0]: not an absolute path",
        ),
        (
            vec!["/ok".to_owned(), "/home/".to_owned()],
            "external_mounts[1]: not a normalized path",
        ),
        (
            vec!["/a\0b".to_owned()],
            "external_mounts[0]: holds a NUL byte",
        ),
        (
            vec![format!("/{}", "a".repeat(5000))],
            "longer than 4095 bytes",
        ),
        (vec!["/x".to_owned(); 1025], "1025 paths, at most 1024"),
    ] {
        let request = v1::CheckMigratableRequest {
            target: Some(Target::Pid(own)),
            external_mounts: external.clone(),
        };
        assert_status(
            client.check_migratable(request).await,
            Code::InvalidArgument,
            names,
        );
        let request = v1::WaitMigratableRequest {
            target: Some(v1::wait_migratable_request::Target::Pid(own)),
            external_mounts: external,
        };
        assert_status(
            client.wait_migratable(request).await,
            Code::InvalidArgument,
            names,
        );
    }
}
