//! The [`Scenario`] handle: starting the `autofs-scenario` init, the line protocol it speaks
//! (one command, one reply), and stopping it so that nothing it made outlives the test.
//! The typed commands are in `commands`, the host's views of the scenario in `views`.

mod commands;
mod states;
mod views;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::host::{build_scenario_binary, preflight, remove_stale_work_dirs, scenario_binary};
use crate::line_reader::LineReader;
use crate::proto::{self, Fields};
use crate::{bad, child, num, procfs, wait_until};

/// One scenario: a private mount + pid namespace with its own pid 1.
///
/// Dropping it kills everything in it (see the crate docs).
pub struct Scenario {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: LineReader,
    init_host_pid: i32,
    init_nspid: Vec<i32>,
    mnt_ns: u64,
    pid_ns: u64,
    work_dir: PathBuf,
    timeout: Duration,
    broken: Option<String>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("init_host_pid", &self.init_host_pid)
            .field("mnt_ns", &self.mnt_ns)
            .field("pid_ns", &self.pid_ns)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Starts a scenario, or says clearly why it cannot (not root, no autofs, no binary).
    ///
    /// # Errors
    ///
    /// Those of [`preflight`] (not root, no autofs), of [`scenario_binary`] (the binary cannot be
    /// found or built) and of [`Scenario::start_with`]. A binary found next to the test binary that
    /// speaks another protocol version is rebuilt once before giving up.
    pub fn start() -> io::Result<Scenario> {
        preflight()?;
        let (bin, fresh) = scenario_binary()?;
        match Scenario::start_with(&bin) {
            Err(e) if !fresh && e.to_string().contains("protocol version") => {
                let bin = build_scenario_binary()?;
                Scenario::start_with(&bin)
            }
            r => r,
        }
    }

    /// [`Scenario::start`], panicking with the reason on failure (real-kernel tests must
    /// fail, not skip, when they cannot run).
    ///
    /// # Panics
    ///
    /// When [`Scenario::start`] fails, with its error.
    #[track_caller]
    pub fn start_or_panic() -> Scenario {
        match Scenario::start() {
            Ok(s) => s,
            Err(e) => panic!("cannot start a real-kernel autofs scenario: {e}"),
        }
    }

    /// Starts a scenario with an explicit `autofs-scenario` binary.
    ///
    /// # Errors
    ///
    /// Those of [`preflight`]; an error naming the work dir when it cannot be created, or `bin`
    /// when it cannot be spawned; no `ready` banner within [`crate::HANG_GUARD`] (`TimedOut`)
    /// or the init exited first; the scenario's `error` banner (it could not set itself up,
    /// e.g. unshare its namespaces); a banner in another protocol version ("stale binary?"); a
    /// banner missing a field. The work dir is removed again on any of them.
    pub fn start_with(bin: &Path) -> io::Result<Scenario> {
        preflight()?;
        remove_stale_work_dirs();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let work_dir = std::env::temp_dir().join(format!(
            "autofs-testkit-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&work_dir)
            .map_err(|e| bad(format!("creating {}: {e}", work_dir.display())))?;
        let r = Scenario::spawn(bin, &work_dir);
        if r.is_err() {
            let _ = std::fs::remove_dir(&work_dir);
        }
        r
    }

    fn spawn(bin: &Path, work_dir: &Path) -> io::Result<Scenario> {
        let mut cmd = Command::new(bin);
        cmd.arg("--work-dir")
            .arg(work_dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = child::spawn_detached(cmd)
            .map_err(|e| bad(format!("spawning {}: {e}", bin.display())))?;
        let stdin = child.stdin.take();
        let stdout = LineReader::new(child.stdout.take().expect("piped stdout"))?;
        let mut sc = Scenario {
            child: Some(child),
            stdin,
            stdout,
            init_host_pid: 0,
            init_nspid: Vec::new(),
            mnt_ns: 0,
            pid_ns: 0,
            work_dir: work_dir.to_path_buf(),
            timeout: crate::HANG_GUARD,
            broken: None,
        };
        let line = sc.stdout.read_line(Instant::now() + crate::HANG_GUARD)?;
        let (head, f) = proto::parse_line(&line).map_err(bad)?;
        match head.as_str() {
            "ready" => {}
            "error" => {
                return Err(bad(format!(
                    "the scenario did not start: {}",
                    f.get("message").unwrap_or("")
                )));
            }
            _ => return Err(bad(format!("unexpected banner `{}`", line.trim()))),
        }
        let version: u32 = num(&f, "version")?;
        if version != proto::PROTOCOL_VERSION {
            return Err(bad(format!(
                "{} speaks protocol version {version}, this library {} (stale binary?)",
                bin.display(),
                proto::PROTOCOL_VERSION
            )));
        }
        sc.init_host_pid = num(&f, "host_pid")?;
        sc.init_nspid = f.int_list("nspid").map_err(bad)?;
        sc.mnt_ns = num(&f, "mnt_ns")?;
        sc.pid_ns = num(&f, "pid_ns")?;
        Ok(sc)
    }

    /// Host pid of the scenario's pid 1.
    pub fn init_host_pid(&self) -> i32 {
        self.init_host_pid
    }

    /// `NSpid:` of the scenario's pid 1 (`[host pid, 1]`).
    pub fn init_nspid(&self) -> &[i32] {
        &self.init_nspid
    }

    /// Inode of the scenario's mount namespace (`mnt:[N]`).
    pub fn mnt_ns(&self) -> u64 {
        self.mnt_ns
    }

    /// Inode of the scenario's pid namespace (`pid:[N]`).
    pub fn pid_ns(&self) -> u64 {
        self.pid_ns
    }

    /// The scenario's work dir (a private tmpfs inside the scenario; an empty temp dir on
    /// the host, removed on drop). Mount points live right under it.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Changes the per-command reply timeout (default [`crate::HANG_GUARD`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one command and returns the `ok` fields, or the `error` text as an error.
    /// Low-level: prefer the typed methods.
    ///
    /// # Errors
    ///
    /// An error when an earlier request left the scenario unusable or it was stopped; when writing
    /// the command fails, or no reply comes within the timeout ([`Self::set_timeout`],
    /// [`crate::HANG_GUARD`] by default) or the init exits first (both also make the scenario
    /// unusable);
    /// `scenario: <message>` for the init's `error` reply; an error quoting a reply that is
    /// neither `ok` nor `error` or does not parse.
    pub fn request(&mut self, cmd: &str, fields: &Fields) -> io::Result<Fields> {
        if let Some(b) = &self.broken {
            return Err(bad(format!("the scenario is unusable: {b}")));
        }
        let line = format!("{cmd}{}\n", fields.render());
        let stdin = self.stdin.as_mut().ok_or_else(|| bad("scenario stopped"))?;
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()) {
            self.broken = Some(format!("writing `{cmd}`: {e}"));
            return Err(bad(format!("sending `{cmd}` to the scenario: {e}")));
        }
        let reply = match self.stdout.read_line(Instant::now() + self.timeout) {
            Ok(l) => l,
            Err(e) => {
                self.broken = Some(format!("`{cmd}`: {e}"));
                return Err(bad(format!("waiting for the reply to `{cmd}`: {e}")));
            }
        };
        let (head, f) = proto::parse_line(&reply).map_err(bad)?;
        match head.as_str() {
            "ok" => Ok(f),
            "error" => Err(bad(format!(
                "scenario: {}",
                f.get("message").unwrap_or("(no message)")
            ))),
            _ => Err(bad(format!("unexpected reply `{}`", reply.trim()))),
        }
    }
}

impl Scenario {
    /// Stops the scenario now: everything in it is killed and reaped, the namespaces go
    /// away and the work dir is removed. Drop does the same, ignoring errors.
    ///
    /// # Errors
    ///
    /// An error when the init did not quit within 10 s (it is killed then), when its pid is still
    /// in `/proc` 5 s later, or when the work dir cannot be removed. The first one is returned; the
    /// cleanup goes on past each.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if self.broken.is_none() {
            // A polite quit: the init kills and reaps everything, then exits.
            let quit = self.stdin.as_mut().map(|s| s.write_all(b"quit\n"));
            if matches!(quit, Some(Ok(()))) {
                let _ = self
                    .stdout
                    .read_line(Instant::now() + Duration::from_secs(10));
            }
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut err = None;
        if status.is_none() {
            // Kill pid 1 first so its parent (our child) reaps it, then our child.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init_host_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            std::thread::sleep(Duration::from_millis(50));
            let _ = child.kill();
            let _ = child.wait();
            err = Some(bad("the scenario did not quit; killed it"));
        }
        // The init's parent (our child) reaped it, so it is gone now; double-check.
        let init = self.init_host_pid;
        if init > 0
            && !wait_until(Duration::from_secs(5), || {
                procfs::process_state(init).is_none()
            })
        {
            err.get_or_insert(bad(format!("scenario init {init} is still in /proc")));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work_dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            err.get_or_insert(bad(format!("removing {}: {e}", self.work_dir.display())));
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
