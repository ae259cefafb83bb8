//! Per-process facts the verdicts need, each read from the proc root on demand and cached for
//! the scan: process group (`stat`), pid-namespace chain (`status` NSpid/PPid), namespace inodes
//! (`ns/mnt`, `ns/pid`) and cgroup paths.

use std::collections::HashMap;
use std::io;

use std::os::unix::ffi::OsStrExt;

use crate::attribution::Attribution;
use crate::id_map::IdMap;
use crate::proc_root::{ProcRoot, ReadFailure, parse_ns_link};

/// Fields of `/proc/<pid>/stat` and `/proc/<pid>/status` the inspector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host pid (as named in the proc root).
    pub pid: i32,
    /// Parent pid (`PPid:`; 0 for pid 1, kernel threads' parent 2 is kthreadd).
    pub ppid: i32,
    /// Thread-group id (`Tgid:`): `pid` itself for a process, its process for a thread named
    /// by thread id; `pid` when `status` has no such line.
    pub tgid: i32,
    /// Process group (`stat` field 5).
    pub pgrp: i32,
    /// Start time in clock ticks after boot (`stat` field 22): tells a process from a later
    /// one that reused its pid.
    pub starttime: u64,
    /// The pid at each pid-namespace level, outermost first (`NSpid:`; `[pid]` when `status`
    /// has no such line).
    pub nspid: Vec<i32>,
    /// Whether `nspid` was read from an `NSpid:` line (Linux 4.1) rather than assumed.
    pub nspid_listed: bool,
    /// Command name (`stat` field 2), exact bytes: the kernel cuts it at 15 bytes, possibly in
    /// the middle of a UTF-8 character.
    pub comm: Vec<u8>,
}

/// Malformed `stat` or `status` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed /proc/{pid}/{file}: {what}")]
pub struct ProcessParseError {
    /// The process.
    pub pid: i32,
    /// `stat` or `status`.
    pub file: &'static str,
    /// What is wrong.
    pub what: String,
}

impl ProcessInfo {
    /// Parses `stat` (after the last `)`, since `comm` may contain anything, any byte
    /// included) and `status`, both as bytes.
    ///
    /// # Errors
    ///
    /// [`ProcessParseError`] naming the file and the field that is missing or malformed.
    pub fn parse(pid: i32, stat: &[u8], status: &[u8]) -> Result<Self, ProcessParseError> {
        let line = StatLine::parse(stat).map_err(|what| ProcessParseError {
            pid,
            file: "stat",
            what: what.to_owned(),
        })?;
        Self::with_status(pid, &line, status)
    }

    /// Completes a parsed `stat` line with `status` (`Tgid:`, `PPid:`, `NSpid:`).
    fn with_status(pid: i32, line: &StatLine, status: &[u8]) -> Result<Self, ProcessParseError> {
        let mut ppid = None;
        let mut nspid = None;
        let mut tgid = None;
        // `Tgid:` and `PPid:` come before `NSpid:` (fs/proc/array.c): the rest of the file is
        // not needed.
        for line in status.split(|&b| b == b'\n') {
            if let Some(v) = line.strip_prefix(b"Tgid:") {
                tgid = number(v.trim_ascii());
            } else if let Some(v) = line.strip_prefix(b"PPid:") {
                ppid = number(v.trim_ascii());
            } else if let Some(v) = line.strip_prefix(b"NSpid:") {
                nspid = v
                    .split(u8::is_ascii_whitespace)
                    .filter(|t| !t.is_empty())
                    .map(number::<i32>)
                    .collect::<Option<Vec<i32>>>();
                if ppid.is_some() {
                    break;
                }
            }
        }
        let ppid = ppid.ok_or_else(|| ProcessParseError {
            pid,
            file: "status",
            what: "no valid PPid: line".to_owned(),
        })?;
        // Kernels before 4.1 have no NSpid: everything is in one pid namespace.
        let listed = nspid.filter(|v| !v.is_empty());
        Ok(Self {
            pid,
            ppid,
            tgid: tgid.unwrap_or(pid),
            pgrp: line.pgrp,
            starttime: line.starttime,
            nspid_listed: listed.is_some(),
            nspid: listed.unwrap_or_else(|| vec![pid]),
            comm: line.comm.clone(),
        })
    }

    /// The command name, escaped for messages (see [`crate::escape`]).
    pub fn comm(&self) -> String {
        crate::escape::escape(&self.comm)
    }

    /// Whether the process is the init (pid 1) of its pid namespace.
    pub fn is_pidns_init(&self) -> bool {
        self.nspid.last() == Some(&1)
    }

    /// Nesting depth of the process's pid namespace, counted from the proc root's (1 = same).
    pub fn pidns_depth(&self) -> usize {
        self.nspid.len()
    }
}

/// Why a process fact is unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The process is gone.
    Vanished,
    /// The read failed for another reason; the message names the file.
    Failed(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vanished => f.write_str("the process exited"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// Lazily filled, per-scan cache of process facts.
#[derive(Debug)]
pub struct ProcessTable<'a> {
    root: &'a ProcRoot,
    info: HashMap<i32, Result<ProcessInfo, Unavailable>>,
    pid_ns: HashMap<i32, Result<u64, Unavailable>>,
    attribution: HashMap<i32, Attribution>,
    stat: HashMap<i32, Result<StatLine, Unavailable>>,
    id_maps: HashMap<(i32, &'static str), Result<IdMap, String>>,
    files_read: usize,
    /// The proc root's listing (sorted pids), when it is procfs: the processes, by which a
    /// thread is told from a process without reading `status`.
    listed: &'a [i32],
}

/// The fields of one `stat` line the inspector uses: the process forest needs fields 3, 4, 9
/// and 22, [`ProcessInfo`] fields 2, 5 and 22.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatLine {
    /// Field 2, exact bytes.
    comm: Vec<u8>,
    /// Field 3: one letter (`Z` zombie, `X` dead...).
    state: u8,
    /// Field 4.
    ppid: i32,
    /// Field 5.
    pgrp: i32,
    /// Field 9: the kernel's `task->flags` of the thread-group leader.
    flags: u64,
    /// Field 22, clock ticks after boot.
    starttime: u64,
}

/// `PF_EXITING` in `task->flags` (include/linux/sched.h): set when a task enters `do_exit()`,
/// never cleared.
const PF_EXITING: u64 = 0x4;

impl<'a> ProcessTable<'a> {
    /// A cache over one proc root.
    pub fn new(root: &'a ProcRoot) -> Self {
        Self {
            root,
            info: HashMap::new(),
            pid_ns: HashMap::new(),
            attribution: HashMap::new(),
            stat: HashMap::new(),
            id_maps: HashMap::new(),
            files_read: 0,
            listed: &[],
        }
    }

    /// A cache over one proc root whose directory listing (`pids`, sorted ascending, as
    /// [`ProcRoot::pids`] gives them) was just taken: on procfs, [`Self::tgid`] answers from
    /// it without reading `status`.
    pub fn with_listing(root: &'a ProcRoot, pids: &'a [i32]) -> Self {
        // [`Self::tgid`] searches it by bisection.
        debug_assert!(pids.is_sorted(), "the listing is sorted by pid");
        let mut table = Self::new(root);
        if root.is_procfs() {
            table.listed = pids;
        }
        table
    }

    /// `pid`'s `uid_map` or `gid_map` (`file`), read and parsed once per table: every mount
    /// of a namespace that shows `uid=`/`gid=` maps through its owner's.
    ///
    /// # Errors
    ///
    /// Why the map could not be read (naming the file and the error) or parsed.
    pub fn id_map(&mut self, pid: i32, file: &'static str) -> Result<&IdMap, String> {
        let root = self.root;
        self.id_maps
            .entry((pid, file))
            .or_insert_with(|| {
                let path = root.pid_path(pid, file);
                root.read(pid, file)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|text| {
                        IdMap::parse(&text)
                            .map_err(|why| format!("malformed {}: {why}", path.display()))
                    })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The root this table reads from.
    pub fn root(&self) -> &'a ProcRoot {
        self.root
    }

    /// How many `stat` and `status` files this table has read.
    pub fn files_read(&self) -> usize {
        self.files_read
    }

    /// `stat` + `status` facts of `pid`, read once per table.
    ///
    /// # Errors
    ///
    /// [`Unavailable::Vanished`] when the process is gone; [`Unavailable::Failed`] when `stat`
    /// or `status` cannot be read (the message names the file and the missing capability) or
    /// does not parse.
    pub fn info(&mut self, pid: i32) -> Result<&ProcessInfo, Unavailable> {
        if !self.info.contains_key(&pid) {
            let info = self.read_info(pid);
            self.info.insert(pid, info);
        }
        self.info[&pid].as_ref().map_err(Clone::clone)
    }

    /// `status` of `pid` on top of its `stat` (read once per table, shared with the forest).
    fn read_info(&mut self, pid: i32) -> Result<ProcessInfo, Unavailable> {
        let root = self.root;
        self.stat_line(pid)?;
        self.files_read += 1;
        let status = root
            .read_record(pid, "status")
            .map_err(|e| unavailable(root, pid, "status", &e))?;
        // The line cached above: no second read.
        ProcessInfo::with_status(pid, self.stat_line(pid)?, &status)
            .map_err(|e| Unavailable::Failed(e.to_string()))
    }

    /// The thread-group id of `pid`: `pid` itself for a process, its process's pid for a
    /// thread. On procfs a pid of the listing given to [`Self::with_listing`] is a process
    /// (`/proc` lists thread-group leaders only: `next_tgid()` in fs/proc/base.c), known from
    /// its `stat` alone; any other pid, and every pid of a fixture tree, is looked up in
    /// `status` (`Tgid:`).
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or `stat` or `status` could not be read or parsed.
    pub fn tgid(&mut self, pid: i32) -> Result<i32, Unavailable> {
        if self.listed.binary_search(&pid).is_ok() {
            return self.stat_line(pid).map(|_| pid);
        }
        self.info(pid).map(|info| info.tgid)
    }

    /// Whether `pid` exists: its `stat` could be read (once per table, shared with
    /// [`Self::parent`]). CRIU uses a `pgrp=` number as a pid, whatever process has it.
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or `stat` could not be read or parsed.
    pub fn check_exists(&mut self, pid: i32) -> Result<(), Unavailable> {
        self.stat_line(pid).map(|_| ())
    }

    /// The parent pid of `pid` from `stat` alone (half the reads of [`Self::info`]): what
    /// finding the roots of a namespace's process forest needs of every member.
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or `stat` could not be read or parsed.
    pub fn parent(&mut self, pid: i32) -> Result<i32, Unavailable> {
        self.stat_line(pid).map(|s| s.ppid)
    }

    /// The scheduler state of `pid` (`stat` field 3: `R`, `S`, `D`, `Z`...) and its command
    /// name (escaped), read once per table with the rest of its `stat`.
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or `stat` could not be read or parsed.
    pub fn state(&mut self, pid: i32) -> Result<(u8, String), Unavailable> {
        self.stat_line(pid)
            .map(|s| (s.state, crate::escape::escape(&s.comm)))
    }

    /// The scheduler state of thread `tid` of process `pid` (`task/<tid>/stat` field 3), read
    /// each time (threads are not cached).
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the thread is gone, or its `stat` could not be read or parsed.
    pub fn thread_state(&mut self, pid: i32, tid: i32) -> Result<u8, Unavailable> {
        self.thread_exit_state(pid, tid).map(|(state, _)| state)
    }

    /// The scheduler state of thread `tid` of process `pid` (`task/<tid>/stat` field 3; `tid`
    /// = `pid` for the leader) and whether it has begun to exit (`PF_EXITING` in field 9: set
    /// by `do_exit()`, on every thread of a process being torn down), read each time.
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the thread is gone, or its `stat` could not be read or parsed.
    pub fn thread_exit_state(&mut self, pid: i32, tid: i32) -> Result<(u8, bool), Unavailable> {
        let rel = format!("task/{tid}/stat");
        self.files_read += 1;
        let stat = self
            .root
            .read_record(pid, &rel)
            .map_err(|e| unavailable(self.root, pid, &rel, &e))?;
        StatLine::parse(&stat)
            .map(|s| (s.state, s.flags & PF_EXITING != 0))
            .map_err(|what| Unavailable::Failed(format!("malformed /proc/{pid}/{rel}: {what}")))
    }

    /// The process group of `pid` (`stat` field 5), read once per table with the rest of its
    /// `stat`.
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or `stat` could not be read or parsed.
    pub fn pgrp(&mut self, pid: i32) -> Result<i32, Unavailable> {
        self.stat_line(pid).map(|s| s.pgrp)
    }

    /// The start time of `pid` (`stat` field 22) if its thread-group leader has not begun to
    /// exit (`stat` field 9 without `PF_EXITING`, state neither `Z` nor `X`); `None` when it
    /// has. While the leader has not, the process's children keep it as their parent: the
    /// kernel hands a dying thread's children to a live thread of the same process first
    /// (`find_alive_thread()`), and the leader is one until `PF_EXITING` is set.
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or `stat` could not be read or parsed.
    pub fn unexited_starttime(&mut self, pid: i32) -> Result<Option<u64>, Unavailable> {
        let s = self.stat_line(pid)?;
        let exiting = s.flags & PF_EXITING != 0 || matches!(s.state, b'Z' | b'X' | b'x');
        Ok((!exiting).then_some(s.starttime))
    }

    /// `stat` of `pid`, read once per table (borrowed: the forest asks for every member's).
    fn stat_line(&mut self, pid: i32) -> Result<&StatLine, Unavailable> {
        let root = self.root;
        let files_read = &mut self.files_read;
        self.stat
            .entry(pid)
            .or_insert_with(|| {
                *files_read += 1;
                let stat = root
                    .read_record(pid, "stat")
                    .map_err(|e| unavailable(root, pid, "stat", &e))?;
                StatLine::parse(&stat).map_err(|what| {
                    Unavailable::Failed(format!("malformed /proc/{pid}/stat: {what}"))
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Inode of the pid namespace `pid` lives in (`ns/pid`).
    ///
    /// # Errors
    ///
    /// [`Unavailable`]: the process is gone, or the link could not be read (the message names
    /// the path).
    pub fn pid_ns(&mut self, pid: i32) -> Result<u64, Unavailable> {
        let root = self.root;
        self.pid_ns
            .entry(pid)
            .or_insert_with(|| {
                let target = root
                    .read_link(pid, "ns/pid")
                    .map_err(|e| unavailable(root, pid, "ns/pid", &e))?;
                parse_ns_link(target.as_bytes(), "pid").ok_or_else(|| {
                    Unavailable::Failed(format!(
                        "{}: not a pid namespace link",
                        root.pid_path(pid, "ns/pid").display()
                    ))
                })
            })
            .clone()
    }

    /// Container and pod of `pid`, from its `cgroup` (empty when unreadable or not in a
    /// container: attribution is a label, never a verdict).
    pub fn attribution(&mut self, pid: i32) -> &Attribution {
        let root = self.root;
        self.attribution
            .entry(pid)
            .or_insert_with(|| Attribution::read(root, pid).unwrap_or_default())
    }

    /// Translates host pid `pid` into the pid namespace of `owner`: the value CRIU would store
    /// when dumping the container whose init is `owner`. `Ok(None)` when `pid` is not a member
    /// of that namespace (or of a namespace nested in it).
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when a fact the answer rests on (`stat`, `status` or `ns/pid` of `pid`,
    /// `owner` or an ancestor of `pid`) could not be read: never taken for "not a member".
    pub fn translate(&mut self, pid: i32, owner: i32) -> Result<Option<i32>, Unavailable> {
        let owner = self.info(owner)?;
        let (owner_depth, owner_pid) = (owner.pidns_depth(), owner.pid);
        if owner_depth == 1 && owner.nspid_listed {
            // The owner lives in the proc root's own pid namespace (its `NSpid:` says so), and
            // every process the root shows is a member of it or of a namespace nested in it,
            // under the pid the root names it by (the first `NSpid:` field). Without an
            // `NSpid:` line the depth is assumed, and the `ns/pid` links below decide.
            self.stat_line(pid)?;
            return Ok(Some(pid));
        }
        let owner_ns = self.pid_ns(owner_pid)?;
        let target = self.info(pid)?.clone();
        if target.pidns_depth() < owner_depth {
            return Ok(None);
        }
        // Walk up the parents to the first ancestor at the owner's depth: a process is in a
        // descendant of the owner's namespace iff that ancestor is in the owner's namespace.
        let mut probe = target.clone();
        for _ in 0..MAX_DEPTH {
            if probe.pidns_depth() == owner_depth {
                return Ok(
                    (self.pid_ns(probe.pid)? == owner_ns).then(|| target.nspid[owner_depth - 1])
                );
            }
            if probe.pidns_depth() < owner_depth || probe.ppid <= 0 {
                return Ok(None);
            }
            probe = self.info(probe.ppid)?.clone();
        }
        Err(Unavailable::Failed(format!(
            "the parent chain of pid {pid} is longer than {MAX_DEPTH}"
        )))
    }

    /// Whether `pid` is `root` or one of its descendants, by the parent links (`stat` field 4): CRIU dumps the
    /// process tree rooted at the task it is given, and `pid_to_virt()` finds only those tasks.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when a link of the chain could not be read (a process that vanished
    /// mid-walk included: its children were reparented and the chain is no longer known).
    pub fn descends_from(&mut self, pid: i32, root: i32) -> Result<bool, Unavailable> {
        let mut at = pid;
        for _ in 0..MAX_DEPTH {
            if at == root {
                return Ok(true);
            }
            if at <= 1 {
                return Ok(false);
            }
            at = match self.parent(at) {
                Ok(ppid) => ppid,
                Err(Unavailable::Vanished) if at != pid => {
                    return Err(Unavailable::Failed(format!(
                        "pid {at}, an ancestor of pid {pid}, exited while its parent chain was read"
                    )));
                }
                Err(e) => return Err(e),
            };
        }
        Err(Unavailable::Failed(format!(
            "the parent chain of pid {pid} is longer than {MAX_DEPTH}"
        )))
    }
}

/// Longest parent chain followed (pid namespaces nest at most 32 deep; process trees are
/// rarely more than a few dozen deep).
const MAX_DEPTH: usize = 4096;

impl StatLine {
    /// Parses a `stat` line: comm between the first `(` and the last `)` (comm may contain
    /// anything, any byte included), the numbered fields after it.
    ///
    /// # Errors
    ///
    /// What is missing or malformed, naming the field.
    fn parse(stat: &[u8]) -> Result<Self, &'static str> {
        let open = memchr::memchr(b'(', stat).ok_or("no '(' before comm")?;
        let close = memchr::memrchr(b')', stat)
            .filter(|&close| close > open)
            .ok_or("no ')' after comm")?;
        // After ") ": field 3 state, 4 ppid, 5 pgrp, ..., 9 flags, ..., 22 starttime.
        let mut fields = stat[close + 1..]
            .split(u8::is_ascii_whitespace)
            .filter(|t| !t.is_empty());
        let state = match fields.next() {
            Some([letter]) => *letter,
            _ => return Err("field 3 (state) missing or not one letter"),
        };
        let ppid = fields
            .next()
            .and_then(number)
            .ok_or("field 4 (ppid) missing or not a number")?;
        let pgrp = fields
            .next()
            .and_then(number)
            .ok_or("field 5 (pgrp) missing or not a number")?;
        let flags = fields
            .nth(3)
            .and_then(number)
            .ok_or("field 9 (flags) missing or not a number")?;
        let starttime = fields
            .nth(12)
            .and_then(number)
            .ok_or("field 22 (starttime) missing or not a number")?;
        Ok(Self {
            comm: stat[open + 1..close].to_vec(),
            state,
            ppid,
            pgrp,
            flags,
            starttime,
        })
    }
}

fn number<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

fn unavailable(root: &ProcRoot, pid: i32, file: &str, err: &io::Error) -> Unavailable {
    match ReadFailure::of(err) {
        ReadFailure::Vanished => Unavailable::Vanished,
        _ => Unavailable::Failed(format!(
            "cannot read {}: {err}",
            root.pid_path(pid, file).display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Name:\tautomount\nPPid:\t1\nNSpid:\t4242\t17\t1\n";

    /// A stat line: `head` (pid, comm, state, ppid, pgrp...) then filler up to starttime 777.
    fn stat(head: &str) -> Vec<u8> {
        let fields = head.rsplit(')').next().unwrap().split_whitespace().count();
        let filler = " 0".repeat(19 - fields);
        format!("{head}{filler} 777 1189277696").into_bytes()
    }

    #[test]
    fn parses_pgrp_after_a_comm_with_spaces_and_parentheses() {
        let p =
            ProcessInfo::parse(4242, &stat("4242 (we (ird) name) S 1 4240 4240"), STATUS).unwrap();
        assert_eq!(p.comm, b"we (ird) name");
        assert_eq!(p.pgrp, 4240);
        assert_eq!(p.ppid, 1);
        assert_eq!(p.starttime, 777);
        assert_eq!(p.nspid, [4242, 17, 1]);
        assert!(p.nspid_listed);
        assert_eq!(p.pidns_depth(), 3);
    }

    #[test]
    fn a_comm_cut_in_a_utf8_character_keeps_its_bytes() {
        let mut line = b"4242 (d\xc3\xa9mon-\xc3) S 1 4240 4240".to_vec();
        line.extend_from_slice(&b" 0".repeat(15));
        line.extend_from_slice(b" 777 1189277696");
        let p = ProcessInfo::parse(4242, &line, STATUS).unwrap();
        assert_eq!(p.comm, b"d\xc3\xa9mon-\xc3");
        assert_eq!(p.comm(), "démon-\\xc3");
        assert_eq!(p.pgrp, 4240);
    }

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        let mut line = b"4242 (a) b) S 17 4240 4240 0 -1 4194624".to_vec();
        line.extend_from_slice(&b" 0".repeat(12));
        line.extend_from_slice(b" 777 1189277696");
        let s = StatLine::parse(&line).unwrap();
        assert_eq!(
            (
                s.comm.as_slice(),
                s.state,
                s.ppid,
                s.pgrp,
                s.flags,
                s.starttime
            ),
            (&b"a) b"[..], b'S', 17, 4240, 4194624, 777)
        );
        // A shorter line (no starttime) is no answer.
        assert_eq!(
            StatLine::parse(b"4242 (a) S 17 4240 4240 0 -1 4"),
            Err("field 22 (starttime) missing or not a number")
        );
    }

    #[test]
    fn missing_nspid_means_a_single_pid_namespace() {
        let p = ProcessInfo::parse(9, &stat("9 (x) S 1 9 9"), b"PPid:\t1\n").unwrap();
        assert_eq!(p.nspid, [9]);
        assert!(!p.nspid_listed);
    }

    #[test]
    fn malformed_stat_and_status_are_errors_naming_the_file() {
        let err = ProcessInfo::parse(9, b"9 (x S 1", STATUS).unwrap_err();
        assert_eq!(err.to_string(), "malformed /proc/9/stat: no ')' after comm");
        let err = ProcessInfo::parse(9, &stat("9 (x) S 1 zz"), STATUS).unwrap_err();
        assert!(err.to_string().contains("pgrp"), "{err}");
        let err = ProcessInfo::parse(9, b"9 (x) S 1 9 9", STATUS).unwrap_err();
        assert!(err.to_string().contains("field 9 (flags)"), "{err}");
        let err = ProcessInfo::parse(9, b"9 (x) S 1 9 9 0 0 0 4", STATUS).unwrap_err();
        assert!(err.to_string().contains("starttime"), "{err}");
        let err = ProcessInfo::parse(9, &stat("9 (x) S 1 9"), b"Name: x\n").unwrap_err();
        assert!(err.to_string().contains("status"), "{err}");
    }

    #[test]
    fn a_listed_pid_is_a_process_without_status_and_a_thread_is_looked_up() {
        let root = ProcRoot::open("/proc").unwrap();
        let own = i32::try_from(std::process::id()).unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let listing = root.pids().unwrap();
        assert!(
            listing.contains(&own) && !listing.contains(&tid),
            "{listing:?}"
        );
        let mut table = ProcessTable::with_listing(&root, &listing);
        assert_eq!(table.tgid(own), Ok(own));
        assert_eq!(table.files_read(), 1, "stat alone tells a listed process");
        assert_eq!(table.tgid(tid), Ok(own));
        assert_eq!(table.files_read(), 3, "a thread's stat and status");
        // Without a listing every pid is looked up.
        let mut unlisted = ProcessTable::new(&root);
        assert_eq!(unlisted.tgid(own), Ok(own));
        assert_eq!(unlisted.files_read(), 2);
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }
}
