//! Per-process facts the verdicts need, each read from the proc root on demand and cached for
//! the scan: process group (`stat`), pid-namespace chain (`status` NSpid/PPid), namespace inodes
//! (`ns/mnt`, `ns/pid`) and cgroup paths.

use std::collections::HashMap;
use std::io;

use crate::proc_root::{ProcRoot, ReadFailure, parse_ns_link};

/// Fields of `/proc/<pid>/stat` and `/proc/<pid>/status` the inspector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host pid (as named in the proc root).
    pub pid: i32,
    /// Parent pid (`PPid:`).
    pub ppid: i32,
    /// Process group (`stat` field 5).
    pub pgrp: i32,
    /// The pid at each pid-namespace level, outermost first (`NSpid:`).
    pub nspid: Vec<i32>,
    /// Command name (`stat` field 2).
    pub comm: String,
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
    /// Parses `stat` (after the last `)`, since `comm` may contain anything) and `status`.
    pub fn parse(pid: i32, stat: &str, status: &str) -> Result<Self, ProcessParseError> {
        let bad = |file, what: &str| ProcessParseError {
            pid,
            file,
            what: what.to_owned(),
        };
        let open = stat
            .find('(')
            .ok_or_else(|| bad("stat", "no '(' before comm"))?;
        let close = stat
            .rfind(')')
            .ok_or_else(|| bad("stat", "no ')' after comm"))?;
        let comm = stat.get(open + 1..close).unwrap_or_default().to_owned();
        // After ") ": state ppid pgrp ...
        let mut rest = stat[close + 1..].split_ascii_whitespace();
        let _state = rest.next();
        let _ppid = rest.next();
        let pgrp = rest
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("stat", "field 5 (pgrp) missing or not a number"))?;

        let mut ppid = None;
        let mut nspid = None;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("PPid:") {
                ppid = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("NSpid:") {
                nspid = v
                    .split_ascii_whitespace()
                    .map(str::parse)
                    .collect::<Result<Vec<i32>, _>>()
                    .ok();
            }
        }
        let ppid = ppid.ok_or_else(|| bad("status", "no valid PPid: line"))?;
        // Kernels before 4.1 have no NSpid: everything is in one pid namespace.
        let nspid = nspid.filter(|v| !v.is_empty()).unwrap_or_else(|| vec![pid]);
        Ok(Self {
            pid,
            ppid,
            pgrp,
            nspid,
            comm,
        })
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

/// Lazily filled, per-scan cache of process facts.
#[derive(Debug)]
pub struct ProcessTable<'a> {
    root: &'a ProcRoot,
    info: HashMap<i32, Result<ProcessInfo, Unavailable>>,
    pid_ns: HashMap<i32, Option<u64>>,
}

impl<'a> ProcessTable<'a> {
    /// A cache over one proc root.
    pub fn new(root: &'a ProcRoot) -> Self {
        Self {
            root,
            info: HashMap::new(),
            pid_ns: HashMap::new(),
        }
    }

    /// The root this table reads from.
    pub fn root(&self) -> &'a ProcRoot {
        self.root
    }

    /// `stat` + `status` facts of `pid`.
    pub fn info(&mut self, pid: i32) -> Result<&ProcessInfo, Unavailable> {
        let root = self.root;
        self.info
            .entry(pid)
            .or_insert_with(|| {
                let read = |file: &str| {
                    root.read_to_string(pid, file)
                        .map_err(|e| unavailable(root, pid, file, &e))
                };
                let stat = read("stat")?;
                let status = read("status")?;
                ProcessInfo::parse(pid, &stat, &status)
                    .map_err(|e| Unavailable::Failed(e.to_string()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Inode of the pid namespace `pid` lives in (`ns/pid`), if readable.
    pub fn pid_ns(&mut self, pid: i32) -> Option<u64> {
        let root = self.root;
        *self.pid_ns.entry(pid).or_insert_with(|| {
            let target = root.read_link(pid, "ns/pid").ok()?;
            parse_ns_link(
                std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()),
                "pid",
            )
        })
    }

    /// Translates host pid `pid` into the pid namespace of `owner`: the value CRIU would store
    /// when dumping the container whose init is `owner`. `None` when `pid` is not a member of
    /// that namespace (or of a namespace nested in it).
    pub fn translate(&mut self, pid: i32, owner: i32) -> Option<i32> {
        let owner_depth = self.info(owner).ok()?.pidns_depth();
        let owner_ns = self.pid_ns(owner)?;
        let target = self.info(pid).ok()?.clone();
        if target.pidns_depth() < owner_depth {
            return None;
        }
        // Walk up the parents to the first ancestor at the owner's depth: a process is in a
        // descendant of the owner's namespace iff that ancestor is in the owner's namespace.
        let mut probe = target.clone();
        for _ in 0..4096 {
            if probe.pidns_depth() == owner_depth {
                return (self.pid_ns(probe.pid)? == owner_ns)
                    .then(|| target.nspid[owner_depth - 1]);
            }
            if probe.pidns_depth() < owner_depth || probe.ppid <= 0 {
                return None;
            }
            probe = self.info(probe.ppid).ok()?.clone();
        }
        None
    }
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

    const STATUS: &str = "Name:\tautomount\nPPid:\t1\nNSpid:\t4242\t17\t1\n";

    #[test]
    fn parses_pgrp_after_a_comm_with_spaces_and_parentheses() {
        let stat = "4242 (we (ird) name) S 1 4240 4240 0 -1 4194560";
        let p = ProcessInfo::parse(4242, stat, STATUS).unwrap();
        assert_eq!(p.comm, "we (ird) name");
        assert_eq!(p.pgrp, 4240);
        assert_eq!(p.ppid, 1);
        assert_eq!(p.nspid, [4242, 17, 1]);
        assert_eq!(p.pidns_depth(), 3);
    }

    #[test]
    fn missing_nspid_means_a_single_pid_namespace() {
        let p = ProcessInfo::parse(9, "9 (x) S 1 9 9", "PPid:\t1\n").unwrap();
        assert_eq!(p.nspid, [9]);
    }

    #[test]
    fn malformed_stat_and_status_are_errors_naming_the_file() {
        let err = ProcessInfo::parse(9, "9 (x S 1", STATUS).unwrap_err();
        assert_eq!(err.to_string(), "malformed /proc/9/stat: no ')' after comm");
        let err = ProcessInfo::parse(9, "9 (x) S 1 zz", STATUS).unwrap_err();
        assert!(err.to_string().contains("pgrp"), "{err}");
        let err = ProcessInfo::parse(9, "9 (x) S 1 9", "Name: x\n").unwrap_err();
        assert!(err.to_string().contains("status"), "{err}");
    }
}
