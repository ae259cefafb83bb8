//! Human-readable output of `scan`: one aligned row per mount (the table layout both binaries
//! share, [`autofs_cli::table`]), then a summary per state.

use std::fmt::Write as _;

use autofs_core::{MountReport, MountState};

const HEADERS: [&str; 8] = [
    "MNT_NS",
    "ID",
    "MOUNT_POINT",
    "STATE",
    "REASON",
    "PGRP",
    "PENDING",
    "CONTAINER",
];

/// Renders reports as a table followed by the verdict message of every mount that blocks.
pub fn render(reports: &[MountReport]) -> String {
    if reports.is_empty() {
        return "no autofs mounts\n".into();
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.mnt_ns.to_string(),
                r.mount_id.to_string(),
                r.mount_point.clone(),
                r.state.to_string(),
                r.reason.to_string(),
                r.host_pgrp.to_string(),
                r.pending_packets.to_string(),
                short_id(&r.container_id),
            ]
        })
        .collect();
    let mut out = autofs_cli::table::render(&HEADERS, &rows);
    out.push('\n');
    for state in MountState::ALL {
        let n = reports.iter().filter(|r| r.state == state).count();
        if n > 0 {
            let _ = writeln!(out, "{state}: {n}");
        }
    }
    for r in reports.iter().filter(|r| r.blocks_dump()) {
        let _ = writeln!(out, "{} {}: {}", r.state, r.mount_point, r.message);
    }
    out
}

fn short_id(id: &str) -> String {
    if id.is_empty() {
        "-".into()
    } else {
        id.chars().take(12).collect()
    }
}
