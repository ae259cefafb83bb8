//! A generated report set for benchmarks (`--synthetic-mounts N`): realistic reports without
//! needing N real mounts, so the gRPC path can be measured on its own.

use autofs_core::{
    AutofsEntry, MountReport, MountState, OpenTables, ProcRoot, Reason, Scan, ScanStats,
};

use crate::source::ScanSource;

/// The same generated scan every time; no proc root behind it, so no pid lookups, host
/// facts or change signs.
#[derive(Debug, Clone)]
pub struct Synthetic(Scan);

impl Synthetic {
    /// `n` ACTIVE indirect mounts spread over 10 mount namespaces, reported as `node`.
    pub fn new(n: usize, node: &str) -> Self {
        Self(scan(n, node))
    }
}

impl ScanSource for Synthetic {
    fn scan(&self, _keep_tables: usize) -> Result<(Scan, OpenTables), autofs_core::Error> {
        Ok((self.0.clone(), OpenTables::default()))
    }

    fn proc_root(&self) -> Option<&ProcRoot> {
        None
    }
}

/// `n` ACTIVE indirect mounts spread over 10 mount namespaces.
pub(crate) fn scan(n: usize, node: &str) -> Scan {
    let reports = (0..n)
        .map(|i| {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            MountReport {
                node: node.to_owned(),
                mount_id: 1000 + id,
                parent_id: 25,
                mount_point: format!("/synthetic/auto/mount-{i:06}"),
                mount_point_bytes: format!("/synthetic/auto/mount-{i:06}").into_bytes(),
                source: "/etc/auto.synthetic".into(),
                source_bytes: b"/etc/auto.synthetic".to_vec(),
                root: "/".into(),
                root_bytes: b"/".to_vec(),
                major: 0,
                minor: 100 + id,
                criu_s_dev: 100 + id,
                mnt_ns: 4026532000 + (i % 10) as u64,
                state: MountState::Active,
                reason: Reason::MasterHoldsPipe,
                message: format!(
                    "Master 4242 holds the read end fd 3 of pipe {} and its write end fd 4; the pipe is empty",
                    900_000 + i
                ),
                entry: Some(AutofsEntry {
                    fd: 4,
                    pgrp: 1,
                    timeout: 300,
                    minproto: 5,
                    maxproto: 5,
                    mode: 1,
                    uid: None,
                    gid: None,
                    read_fd: None,
                }),
                pipe_ino: 900_000 + i as u64,
                host_pgrp: 4242,
                pending_bytes: 0,
                pending_packets: 0,
                read_end_pid: 4242,
                read_end_fd: 3,
                write_end_held: true,
                strictexpire: false,
                ignore: false,
                container_id: String::new(),
                pod_uid: String::new(),
                owner_pid: 4242,
                criu_notes: Vec::new(),
                options: format!(
                    "rw,fd=4,pgrp=4242,timeout=300,minproto=5,maxproto=5,indirect,pipe_ino={}",
                    900_000 + i
                ),
                proto_version: 5,
                timeout: 300,
                dumpable: true,
                blocks_when_external: false,
            }
        })
        .collect();
    Scan {
        reports,
        namespaces: Vec::new(),
        view: Default::default(),
        stats: ScanStats::default(),
        tree_paths: Vec::new(),
        gone_leaders: Vec::new(),
        unknown_processes: Vec::new(),
    }
}
