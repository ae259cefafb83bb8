//! `scripts/install-criu`'s chain of trust, against a mirror of our own on disk (`file://`)
//! signed by a key of our own (`DEBIAN_KEYRING`): only what the `InRelease` signature covers
//! may vouch for the `Sources.xz` index, and through it for the tarball that is built and run
//! as root. Needs `gpg`, `gpgv`, `xz`, `tar`, `curl` and root (the script's own checks).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throw-away GnuPG home whose agent is stopped however the test ends.
struct Gnupg {
    home: PathBuf,
}

impl Gnupg {
    fn new(dir: &Path) -> Gnupg {
        let home = dir.join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gnupg = Gnupg { home };
        gnupg.run(&[
            "--quick-gen-key",
            "install-criu test <install-criu@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        gnupg
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("run gpg");
        assert!(out.status.success(), "gpg {args:?}: {}", text(&out.stderr));
        out.stdout
    }
}

impl Drop for Gnupg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "all"])
            .status();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// A `criu-<version>` source tarball whose `make criu` leaves `marker` (proof that it ran).
fn tarball(dir: &Path, version: &str, marker: &Path) -> PathBuf {
    let src = dir.join(format!("src-{version}"));
    let top = src.join(format!("criu-{version}"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(
        top.join("Makefile"),
        format!("criu:\n\ttouch {}\n\tfalse\n", marker.display()),
    )
    .unwrap();
    let file = dir.join(format!("criu_{version}.orig.tar.gz"));
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&file)
        .arg("-C")
        .arg(&src)
        .arg(format!("criu-{version}"))
        .status()
        .unwrap();
    assert!(ok.success());
    file
}

/// A `Sources.xz` naming `tarball` (under `directory`) as criu's upstream tarball.
fn sources_index(path: &Path, version: &str, directory: &str, tarball: &Path) {
    let plain = path.with_extension("");
    let name = tarball.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        &plain,
        format!(
            "Package: criu\nBinary: criu\nVersion: {version}-1\nDirectory: {directory}\nChecksums-Sha256:\n {} {} {name}\n\n",
            sha256(tarball),
            size(tarball)
        ),
    )
    .unwrap();
    let ok = Command::new("xz").arg("-kf").arg(&plain).status().unwrap();
    assert!(ok.success());
    assert!(path.is_file());
}

/// A `Release` listing `sources` (the `Sources.xz` file), clear-signed into `InRelease`.
fn signed_release(gnupg: &Gnupg, dir: &Path, sources: &Path) -> PathBuf {
    let release = dir.join("Release");
    std::fs::write(
        &release,
        format!(
            "Origin: install-criu test\nSuite: test\nSHA256:\n {} {} main/source/Sources.xz\n",
            sha256(sources),
            size(sources)
        ),
    )
    .unwrap();
    let inrelease = dir.join("InRelease");
    gnupg.run(&[
        "--clearsign",
        "-o",
        inrelease.to_str().unwrap(),
        release.to_str().unwrap(),
    ]);
    inrelease
}

/// The mirror: `dists/test/{InRelease,main/source/Sources.xz}` and the pool.
struct Mirror {
    dir: tempfile::TempDir,
    keyring: PathBuf,
    _gnupg: Gnupg,
    /// Left by the honest tarball's build.
    honest_marker: PathBuf,
    /// Left by the attacker's tarball's build.
    evil_marker: PathBuf,
    honest_index: PathBuf,
    evil_index: PathBuf,
    inrelease: PathBuf,
}

impl Mirror {
    fn new() -> Mirror {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let gnupg = Gnupg::new(root);
        let keyring = root.join("keyring.gpg");
        std::fs::write(&keyring, gnupg.run(&["--export"])).unwrap();
        let suite = root.join("mirror/dists/test");
        std::fs::create_dir_all(suite.join("main/source")).unwrap();
        for pool in ["honest", "evil"] {
            std::fs::create_dir_all(root.join("mirror/pool").join(pool)).unwrap();
        }
        let honest_marker = root.join("honest-built");
        let evil_marker = root.join("evil-built");
        let honest = tarball(&root.join("mirror/pool/honest"), "9.9", &honest_marker);
        let evil = tarball(&root.join("mirror/pool/evil"), "6.6", &evil_marker);
        let honest_index = root.join("honest-Sources.xz");
        sources_index(&honest_index, "9.9", "pool/honest", &honest);
        let evil_index = root.join("evil-Sources.xz");
        sources_index(&evil_index, "6.6", "pool/evil", &evil);
        let inrelease = signed_release(&gnupg, root, &honest_index);
        Mirror {
            dir,
            keyring,
            _gnupg: gnupg,
            honest_marker,
            evil_marker,
            honest_index,
            evil_index,
            inrelease,
        }
    }

    /// Serves `inrelease` (text) and the index `sources`.
    fn serve(&self, inrelease: &str, sources: &Path) {
        let suite = self.dir.path().join("mirror/dists/test");
        std::fs::write(suite.join("InRelease"), inrelease).unwrap();
        std::fs::copy(sources, suite.join("main/source/Sources.xz")).unwrap();
    }

    fn install_criu(&self) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-criu");
        Command::new(script)
            .env("CRIU_PREFIX", self.dir.path().join("prefix"))
            .env(
                "DEBIAN_MIRROR",
                format!("file://{}", self.dir.path().join("mirror").display()),
            )
            .env("CRIU_SUITES", "test")
            .env("DEBIAN_KEYRING", &self.keyring)
            .env_remove("CRIU_SOURCES_INDEX")
            .output()
            .expect("run scripts/install-criu")
    }
}

#[test]
fn the_tarball_a_signed_index_names_is_built() {
    // The control: what the signature covers leads to the honest tarball, which is built.
    let m = Mirror::new();
    let signed = std::fs::read_to_string(&m.inrelease).unwrap();
    m.serve(&signed, &m.honest_index);
    let out = m.install_criu();
    assert!(!out.status.success());
    assert!(m.honest_marker.exists(), "{}", text(&out.stderr));
    assert!(!m.evil_marker.exists());
}

#[test]
fn an_index_hash_outside_the_signed_part_of_inrelease_is_not_trusted() {
    // gpgv accepts an InRelease with text after its signature; a SHA256 section there must
    // not vouch for another Sources.xz (whose tarball would be built and run as root).
    let m = Mirror::new();
    let mut forged = std::fs::read_to_string(&m.inrelease).unwrap();
    forged.push_str(&format!(
        "SHA256:\n {} {} main/source/Sources.xz\n",
        sha256(&m.evil_index),
        size(&m.evil_index)
    ));
    m.serve(&forged, &m.evil_index);
    let out = m.install_criu();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !m.evil_marker.exists(),
        "the unsigned index was trusted: {stderr}"
    );
    assert!(
        stderr.contains("Sources.xz does not match its InRelease"),
        "{stderr}"
    );
}

#[test]
fn an_index_hash_before_the_signed_part_of_inrelease_is_not_trusted() {
    let m = Mirror::new();
    let signed = std::fs::read_to_string(&m.inrelease).unwrap();
    let forged = format!(
        "SHA256:\n {} {} main/source/Sources.xz\n\n{signed}",
        sha256(&m.evil_index),
        size(&m.evil_index)
    );
    m.serve(&forged, &m.evil_index);
    let out = m.install_criu();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !m.evil_marker.exists(),
        "the unsigned index was trusted: {stderr}"
    );
}
