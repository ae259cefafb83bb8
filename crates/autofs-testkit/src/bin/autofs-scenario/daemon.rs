//! The fake autofs daemon: mounts autofs with its own pipe, then obeys the init over a
//! private control socket. It never reads the autofs pipe unless told to.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use autofs_testkit::packet::Packet;
use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{Pid, getpgrp, setpgid};

use crate::sys;

/// What the init asked for in a `mount` command.
pub struct Config {
    pub mount_point: PathBuf,
    pub source: String,
    pub mode: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub minproto: Option<u32>,
    pub timeout: Option<u64>,
    pub strictexpire: bool,
    pub close_write: bool,
    pub write_fd: Option<i32>,
}

struct State {
    mount_point: PathBuf,
    read_fd: Option<i32>,
    write_fd: Option<i32>,
    /// Both ends of the pipe of each further mount (`mount-another`), kept open.
    others: Vec<(i32, i32)>,
}

/// Runs the daemon in a freshly forked child. Never returns.
pub fn run(ctl: UnixStream, cfg: Config) -> ! {
    sys::close_all_except(&[ctl.as_raw_fd()]);
    let _ = sys::stdio_to_devnull();
    let mut ctl = BufReader::new(ctl);
    let mut state = match setup(&cfg, ctl.get_ref().as_raw_fd()) {
        Ok((state, fields)) => {
            send(&mut ctl, &format!("ok{}", fields.render()));
            state
        }
        Err(e) => {
            send(&mut ctl, &format!("error {e}"));
            sys::exit_now(1);
        }
    };
    let mut line = String::new();
    loop {
        line.clear();
        match ctl.read_line(&mut line) {
            Ok(0) | Err(_) => sys::exit_now(0), // the init is gone
            Ok(_) => {}
        }
        let reply = match proto::parse_line(&line) {
            Ok((cmd, f)) => handle(&mut state, &mut ctl, &cmd, &f),
            Err(e) => Err(e),
        };
        match reply {
            Ok(f) => send(&mut ctl, &format!("ok{}", f.render())),
            Err(e) => send(&mut ctl, &format!("error {e}")),
        }
    }
}

fn send(ctl: &mut BufReader<UnixStream>, line: &str) {
    let s = ctl.get_mut();
    if writeln!(s, "{line}").and_then(|_| s.flush()).is_err() {
        sys::exit_now(1);
    }
}

fn setup(cfg: &Config, ctl_fd: i32) -> Result<(State, Fields), String> {
    setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(|e| format!("setpgid: {e}"))?;
    std::fs::create_dir_all(&cfg.mount_point)
        .map_err(|e| format!("mkdir {}: {e}", cfg.mount_point.display()))?;
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let read_fd = r.into_raw_fd();
    let mut write_fd = w.into_raw_fd();
    if let Some(n) = cfg.write_fd
        && n != write_fd
    {
        if n == read_fd || n == ctl_fd || n < 3 {
            return Err(format!("write_fd={n} collides with an fd in use"));
        }
        sys::dup2(write_fd, n).map_err(|e| format!("dup2 to {n}: {e}"))?;
        let _ = sys::close(write_fd);
        write_fd = n;
    }
    let pgrp = getpgrp().as_raw();
    let mut opts = format!(
        "fd={write_fd},pgrp={pgrp},minproto={},maxproto=5,{}",
        cfg.minproto.unwrap_or(5),
        cfg.mode
    );
    if let Some(u) = cfg.uid {
        opts.push_str(&format!(",uid={u}"));
    }
    if let Some(g) = cfg.gid {
        opts.push_str(&format!(",gid={g}"));
    }
    if cfg.strictexpire {
        opts.push_str(",strictexpire");
    }
    mount(
        Some(cfg.source.as_str()),
        &cfg.mount_point,
        Some("autofs"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| {
        format!(
            "mount autofs `{opts}` on {}: {e}",
            cfg.mount_point.display()
        )
    })?;

    if let Some(t) = cfg.timeout {
        // Safe: this process is the mount's pgrp, so opening its root is "oz mode".
        let root = open_root(&cfg.mount_point)?;
        sys::autofs_set_timeout(root.as_raw_fd(), t)
            .map_err(|e| format!("AUTOFS_IOC_SETTIMEOUT: {e}"))?;
    }

    let nspid = procfs::nspid_self().map_err(|e| format!("NSpid: {e}"))?;
    let host_pid = nspid[0];
    let host_pgrp = procfs::host_pgrp(host_pid).map_err(|e| format!("stat: {e}"))?;
    let line = procfs::mount_at(host_pid, &cfg.mount_point)
        .map_err(|e| format!("mountinfo: {e}"))?
        .ok_or("the new mount is missing from mountinfo")?;
    let pipe_ino = std::fs::metadata(format!("/proc/self/fd/{write_fd}"))
        .map_err(|e| format!("stat of the write end: {e}"))?
        .ino();
    let mut state = State {
        mount_point: cfg.mount_point.clone(),
        read_fd: Some(read_fd),
        write_fd: Some(write_fd),
        others: Vec::new(),
    };
    if cfg.close_write {
        close_end(&mut state.write_fd)?;
    }
    let mut f = Fields::default();
    f.push("host_pid", host_pid)
        .push("nspid", proto::int_list(&nspid))
        .push("host_pgrp", host_pgrp)
        .push("ns_pgrp", pgrp)
        .push("read_fd", read_fd)
        .push("write_fd", write_fd)
        .push("write_closed", u8::from(cfg.close_write))
        .push("mount_point", cfg.mount_point.display())
        .push("mount_id", line.mount_id)
        .push("pipe_ino", pipe_ino);
    Ok((state, f))
}

fn open_root(path: &std::path::Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

fn close_end(end: &mut Option<i32>) -> Result<(), String> {
    match end.take() {
        Some(fd) => sys::close(fd).map_err(|e| format!("close({fd}): {e}")),
        None => Err("that pipe end is already closed".into()),
    }
}

fn handle(
    st: &mut State,
    ctl: &mut BufReader<UnixStream>,
    cmd: &str,
    f: &Fields,
) -> Result<Fields, String> {
    match cmd {
        "ping" => Ok(Fields::default()),
        "close-write" => close_end(&mut st.write_fd).map(|_| Fields::default()),
        "close-read" => close_end(&mut st.read_fd).map(|_| Fields::default()),
        "read-packet" => read_packet(st, f),
        "bind-subdir" => bind_subdir(st, f),
        "bind-root" => bind_root(st, f),
        "mount-another" => mount_another(st, f),
        "cover" => cover(f),
        "exit" => {
            if let Some(fd) = st.read_fd.take() {
                let _ = sys::close(fd);
            }
            if let Some(fd) = st.write_fd.take() {
                let _ = sys::close(fd);
            }
            send(ctl, "ok");
            sys::exit_now(0);
        }
        "delegate" => {
            let f = delegate(st, f)?;
            send(ctl, &format!("ok{}", f.render()));
            sys::exit_now(0);
        }
        _ => Err(format!("unknown daemon command `{cmd}`")),
    }
}

/// Makes directory `sub` in the mount's root (this process is the mount's process group: "oz
/// mode", so nothing triggers), binds it onto `target` (created first), and with `detach=1`
/// detaches the mount itself: what is left of the superblock is a mount of a directory inside
/// it.
fn bind_subdir(st: &mut State, f: &Fields) -> Result<Fields, String> {
    let sub = st.mount_point.join(f.req("sub")?);
    let target = target_path(f)?;
    std::fs::create_dir(&sub).map_err(|e| format!("mkdir {}: {e}", sub.display()))?;
    std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
    mount(
        Some(&sub),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} onto {}: {e}", sub.display(), target.display()))?;
    if f.parse_opt::<u8>("detach")? == Some(1) {
        umount2(&st.mount_point, MntFlags::MNT_DETACH)
            .map_err(|e| format!("umount {}: {e}", st.mount_point.display()))?;
    }
    Ok(Fields::default())
}

/// Binds the mount's root onto `target` (created first): a second mount of the superblock's
/// root. This process is the mount's process group ("oz mode"), so the walk onto a direct
/// mount's root triggers nothing. Replies with the bind's `mount_id`.
fn bind_root(st: &State, f: &Fields) -> Result<Fields, String> {
    let target = target_path(f)?;
    std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
    mount(
        Some(&st.mount_point),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "bind {} onto {}: {e}",
            st.mount_point.display(),
            target.display()
        )
    })?;
    mounted_at(&target)
}

/// Makes a further indirect autofs mount on `target` (created) with a pipe of its own, both
/// ends kept, as an `automount` serving several maps leads several mounts. Replies its
/// `mount_id`.
fn mount_another(st: &mut State, f: &Fields) -> Result<Fields, String> {
    let target = target_path(f)?;
    std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (read_fd, write_fd) = (r.into_raw_fd(), w.into_raw_fd());
    st.others.push((read_fd, write_fd));
    let opts = format!(
        "fd={write_fd},pgrp={},minproto=5,maxproto=5,indirect",
        getpgrp().as_raw()
    );
    mount(
        Some("another"),
        &target,
        Some("autofs"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount autofs `{opts}` on {}: {e}", target.display()))?;
    mounted_at(&target)
}

/// Mounts a small tmpfs on `target`, an existing directory or mount point (e.g. the mount's
/// root or a bind of it, which this process, in oz mode, walks onto without triggering).
/// Replies with the tmpfs's `mount_id`.
fn cover(f: &Fields) -> Result<Fields, String> {
    let target = target_path(f)?;
    mount(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .map_err(|e| format!("mount tmpfs on {}: {e}", target.display()))?;
    mounted_at(&target)
}

/// The `target_hex` field: an absolute path, as bytes.
fn target_path(f: &Fields) -> Result<PathBuf, String> {
    let target = PathBuf::from(std::ffi::OsString::from_vec(proto::hex_decode(
        f.req("target_hex")?,
    )?));
    if !target.is_absolute() {
        return Err(format!("target {} is not absolute", target.display()));
    }
    Ok(target)
}

/// `mount_id` of the topmost mount on `path`, from this process's mount table.
fn mounted_at(path: &std::path::Path) -> Result<Fields, String> {
    let line = procfs::read_mountinfo_self()
        .map_err(|e| format!("mountinfo: {e}"))?
        .into_iter()
        .rev()
        .find(|l| l.mount_point == path)
        .ok_or_else(|| format!("no mount on {} in mountinfo", path.display()))?;
    let mut out = Fields::default();
    out.push("mount_id", line.mount_id);
    Ok(out)
}

fn read_packet(st: &mut State, f: &Fields) -> Result<Fields, String> {
    let fd = st
        .read_fd
        .ok_or("the daemon no longer holds the read end")?;
    let timeout_ms: i32 = f.parse_opt("timeout_ms")?.unwrap_or(5000);
    let answer = f.get("answer").unwrap_or("fail");
    if !sys::poll_readable(fd, timeout_ms).map_err(|e| format!("poll: {e}"))? {
        return Err(format!("no packet arrived within {timeout_ms} ms"));
    }
    let mut buf = [0u8; 512];
    let n = sys::read(fd, &mut buf).map_err(|e| format!("read: {e}"))?;
    let raw = &buf[..n];
    let mut out = Fields::default();
    out.push("len", n).push("hex", proto::hex_encode(raw));
    let pkt = Packet::decode(raw).ok();
    if let Some(p) = &pkt {
        out.push("proto_version", p.proto_version)
            .push("type", p.packet_type)
            .push("token", p.token)
            .push("dev", p.dev)
            .push("ino", p.ino)
            .push("uid", p.uid)
            .push("gid", p.gid)
            .push("pid", p.pid)
            .push("tgid", p.tgid)
            .push("name_hex", proto::hex_encode(&p.name));
    }
    let cmd = match answer {
        "fail" => Some(sys::AUTOFS_IOC_FAIL),
        "ready" => Some(sys::AUTOFS_IOC_READY),
        "none" => None,
        other => return Err(format!("answer must be fail|ready|none, not `{other}`")),
    };
    if let (Some(cmd), Some(p)) = (cmd, &pkt) {
        let root = open_root(&st.mount_point)?;
        sys::autofs_answer(root.as_raw_fd(), cmd, p.token)
            .map_err(|e| format!("answering token {}: {e}", p.token))?;
    }
    out.push("answered", answer);
    Ok(out)
}

/// Forks a child in its own process group that keeps only the read end; then this
/// daemon closes both of its ends (the caller exits right after replying).
fn delegate(st: &mut State, f: &Fields) -> Result<Fields, String> {
    // `keep=write`: the child stays in this process group and keeps the write end;
    // otherwise it makes a group of its own and keeps the read end.
    let write = match f.get("keep") {
        None | Some("read") => false,
        Some("write") => true,
        Some(other) => return Err(format!("keep={other}: not `read` or `write`")),
    };
    let (kept, field) = if write {
        (
            st.write_fd
                .ok_or("the daemon no longer holds the write end")?,
            "write_fd",
        )
    } else {
        (
            st.read_fd
                .ok_or("the daemon no longer holds the read end")?,
            "read_fd",
        )
    };
    let (rep_r, rep_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut rep_r = File::from(rep_r);
    let mut rep_w = File::from(rep_w);
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Fork::Child => {
            drop(rep_r);
            sys::close_all_except(&[kept, rep_w.as_raw_fd()]);
            if !write {
                let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            }
            let mut f = Fields::default();
            match procfs::nspid_self() {
                Ok(nspid) => {
                    let pgrp = procfs::host_pgrp(nspid[0]).unwrap_or(-1);
                    f.push("host_pid", nspid[0])
                        .push("nspid", proto::int_list(&nspid))
                        .push("host_pgrp", pgrp)
                        .push(field, kept);
                }
                Err(e) => {
                    f.push("failure", e.to_string().replace(' ', "_"));
                }
            }
            let _ = writeln!(rep_w, "{}", f.render().trim_start());
            drop(rep_w);
            sys::pause_forever();
        }
        sys::Fork::Parent(_) => {
            drop(rep_w);
            let mut s = String::new();
            rep_r
                .read_to_string(&mut s)
                .map_err(|e| format!("reading the delegate's report: {e}"))?;
            let (_, f) = proto::parse_line(&format!("ok {}", s.trim()))?;
            if let Some(e) = f.get("failure") {
                return Err(format!("delegate failed: {e}"));
            }
            f.req("host_pid")?;
            if let Some(fd) = st.read_fd.take() {
                let _ = sys::close(fd);
            }
            if let Some(fd) = st.write_fd.take() {
                let _ = sys::close(fd);
            }
            Ok(f)
        }
    }
}
