//! What a test asks a [`Scenario`](crate::Scenario) to build: autofs mounts of the fake
//! daemon ([`MountSpec`]), the real `automount` daemon ([`AutomountSpec`]) and how a daemon
//! answers a packet ([`Answer`]).

use std::io;

#[cfg(doc)]
use crate::Scenario;
use crate::bad;

/// Type of an autofs mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `indirect`: lookups of missing names in the root trigger (type 3 packets).
    Indirect,
    /// `direct`: a walk onto the root triggers (type 5 packets).
    Direct,
    /// `offset`: like direct (used by automount for multi-mount offsets).
    Offset,
}

impl Mode {
    /// The mount option / mountinfo flag.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Indirect => "indirect",
            Mode::Direct => "direct",
            Mode::Offset => "offset",
        }
    }

    pub(crate) fn parse(s: &str) -> io::Result<Mode> {
        match s {
            "indirect" => Ok(Mode::Indirect),
            "direct" => Ok(Mode::Direct),
            "offset" => Ok(Mode::Offset),
            _ => Err(bad(format!("unknown mode `{s}`"))),
        }
    }
}

/// What [`Scenario::mount`] should build. Start from [`MountSpec::indirect`],
/// [`MountSpec::direct`] or [`MountSpec::offset`] and chain the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Name of the mount and its daemon; the mount point is `<work_dir>/<name>`.
    /// `None`: the scenario picks `m1`, `m2`, ...
    pub name: Option<String>,
    /// Mount type.
    pub mode: Mode,
    /// `uid=` mount option (root inode owner).
    pub uid: Option<u32>,
    /// `gid=` mount option.
    pub gid: Option<u32>,
    /// `minproto=` mount option (default 5). The kernel keeps it in an `int`, so a value of
    /// 2^31 or more shows negative in mountinfo.
    pub minproto: Option<u32>,
    /// Timeout in seconds set with `AUTOFS_IOC_SETTIMEOUT` after mounting (mountinfo
    /// shows `timeout=0` without it).
    pub timeout: Option<u64>,
    /// `strictexpire` mount option.
    pub strictexpire: bool,
    /// The daemon closes its write end right after mounting (systemd-like).
    pub close_write: bool,
    /// The daemon runs in a further nested pid namespace (as pid 2 there, under a
    /// reaper that is pid 1), so its pids differ at every level.
    pub nested_pidns: bool,
    /// The daemon mounts in a mount namespace of its own (a private copy of the scenario's,
    /// no new pid namespace) two levels below that namespace's first process: owner → middle →
    /// daemon, all in the scenario's pid namespace (a namespace made inside a container, which
    /// the scenario's init owns: see `autofs_core::tree`). Killing the middle process ([`Scenario::kill`] of `<name>.middle`)
    /// makes the kernel re-parent the daemon to the scenario's pid 1, out of the owner's
    /// subtree but still in the init's, which CRIU dumps with the container (for the same shape
    /// in the host's pid namespace, see [`crate::host_aside`]). Not with
    /// [`MountSpec::nested_pidns`].
    pub aside: bool,
    /// Renumber the write end to this fd before mounting (so `fd=` shows it).
    pub write_fd: Option<i32>,
    /// Mount source (mountinfo field after the fs type); default `autofs-testkit`.
    pub source: Option<String>,
    /// The mount point's directory name as bytes (below the work dir), instead of the
    /// name: Linux paths need not be UTF-8.
    pub dir: Option<Vec<u8>>,
}

impl MountSpec {
    /// A spec of the given mode with every option off.
    pub fn new(mode: Mode) -> MountSpec {
        MountSpec {
            name: None,
            mode,
            uid: None,
            gid: None,
            minproto: None,
            timeout: None,
            strictexpire: false,
            close_write: false,
            nested_pidns: false,
            aside: false,
            write_fd: None,
            source: None,
            dir: None,
        }
    }
    /// An indirect mount.
    pub fn indirect() -> MountSpec {
        MountSpec::new(Mode::Indirect)
    }
    /// A direct mount.
    pub fn direct() -> MountSpec {
        MountSpec::new(Mode::Direct)
    }
    /// An offset mount.
    pub fn offset() -> MountSpec {
        MountSpec::new(Mode::Offset)
    }
    /// Sets [`MountSpec::name`].
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// Sets [`MountSpec::uid`].
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }
    /// Sets [`MountSpec::gid`].
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }
    /// Sets [`MountSpec::minproto`].
    pub fn minproto(mut self, minproto: u32) -> Self {
        self.minproto = Some(minproto);
        self
    }
    /// Sets [`MountSpec::timeout`].
    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout = Some(secs);
        self
    }
    /// Sets [`MountSpec::strictexpire`].
    pub fn strictexpire(mut self) -> Self {
        self.strictexpire = true;
        self
    }
    /// Sets [`MountSpec::close_write`].
    pub fn close_write(mut self) -> Self {
        self.close_write = true;
        self
    }
    /// Sets [`MountSpec::nested_pidns`].
    pub fn nested_pidns(mut self) -> Self {
        self.nested_pidns = true;
        self
    }
    /// Sets [`MountSpec::aside`].
    pub fn aside(mut self) -> Self {
        self.aside = true;
        self
    }
    /// Sets [`MountSpec::write_fd`].
    pub fn write_fd(mut self, fd: i32) -> Self {
        self.write_fd = Some(fd);
        self
    }
    /// Sets [`MountSpec::source`].
    pub fn source(mut self, source: &str) -> Self {
        self.source = Some(source.to_string());
        self
    }
    /// Sets [`MountSpec::dir`].
    pub fn dir(mut self, dir: &[u8]) -> Self {
        self.dir = Some(dir.to_vec());
        self
    }
}

/// How the daemon answers a packet it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `AUTOFS_IOC_FAIL` (the requester gets ENOENT).
    Fail,
    /// `AUTOFS_IOC_READY`.
    Ready,
    /// No answer: the requester stays blocked.
    None,
}

/// What [`Scenario::start_automount`] should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomountSpec {
    /// Name; the indirect mount point is `<work_dir>/<name>`. `None`: `auto1`, ...
    pub name: Option<String>,
    /// `--timeout=` in the master map.
    pub timeout: u64,
    /// Map file content (one entry a line).
    pub map: String,
}

impl Default for AutomountSpec {
    fn default() -> Self {
        AutomountSpec {
            name: None,
            timeout: 60,
            map: "foo -fstype=tmpfs,size=1m :tmpfs\n".to_string(),
        }
    }
}
