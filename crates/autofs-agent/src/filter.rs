//! Validation and matching of the request filters shared by ListMounts, WatchMounts and
//! CheckMigratable. Everything a client sends is checked here, so nothing it sends can make
//! the agent read a path outside its proc root: a pid only ever becomes `<proc_root>/<n>`.

use autofs_api::v1;
use autofs_core::MountState;
use tonic::Status;

use crate::convert;
use crate::snapshot::Inventory;

/// A validated filter; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Mount namespace of the requested pid, or the requested mount namespace.
    pub mnt_ns: Option<u64>,
    /// Container id prefix.
    pub container_id: Option<String>,
    /// Pod UID.
    pub pod_uid: Option<String>,
    /// Accepted states (empty: all).
    pub states: Vec<MountState>,
}

impl Filter {
    /// Validates `req`; resolves a pid to its mount namespace.
    pub fn from_request(
        req: &v1::ListMountsRequest,
        inventory: &Inventory,
    ) -> Result<Self, Status> {
        let mut filter = Filter {
            container_id: container_id(&req.container_id)?,
            pod_uid: pod_uid(&req.pod_uid)?,
            mnt_ns: req.mnt_ns,
            states: Vec::with_capacity(req.states.len()),
        };
        for (i, &raw) in req.states.iter().enumerate() {
            let state = v1::MountState::try_from(raw)
                .ok()
                .and_then(convert::core_state)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("states[{i}]: unknown mount state {raw}"))
                })?;
            filter.states.push(state);
        }
        if let Some(pid) = req.pid {
            let ns = mount_namespace_of(pid, inventory)?;
            if filter.mnt_ns.is_some_and(|wanted| wanted != ns) {
                return Err(Status::invalid_argument(format!(
                    "pid {pid} is in mount namespace {ns}, not in the requested mnt_ns"
                )));
            }
            filter.mnt_ns = Some(ns);
        }
        Ok(filter)
    }

    /// Whether a report passes the filter.
    pub fn matches(&self, r: &v1::MountReport) -> bool {
        self.mnt_ns.is_none_or(|ns| r.mnt_ns == ns)
            && self
                .container_id
                .as_deref()
                .is_none_or(|id| !r.container_id.is_empty() && r.container_id.starts_with(id))
            && self.pod_uid.as_deref().is_none_or(|uid| r.pod_uid == uid)
            && (self.states.is_empty()
                || self
                    .states
                    .iter()
                    .any(|s| convert::state(*s) as i32 == r.state))
    }
}

/// The mount namespace of host pid `pid`: INVALID_ARGUMENT for pid ≤ 0, NOT_FOUND when no
/// such process exists.
pub fn mount_namespace_of(pid: i32, inventory: &Inventory) -> Result<u64, Status> {
    if pid <= 0 {
        return Err(Status::invalid_argument(format!(
            "pid: must be a positive process id, got {pid}"
        )));
    }
    let root = inventory.proc_root().ok_or_else(|| {
        Status::not_found(format!(
            "pid {pid}: this agent serves a synthetic report set"
        ))
    })?;
    let path = root.pid_path(pid, "ns/mnt");
    root.mount_namespace(pid).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(format!("pid {pid}: no such process")),
        std::io::ErrorKind::PermissionDenied => Status::permission_denied(format!(
            "pid {pid}: the agent may not read {}: {e} (reading another process's namespaces takes CAP_SYS_PTRACE; a confining AppArmor/SELinux profile can deny it too)",
            path.display()
        )),
        _ => Status::internal(format!(
            "pid {pid}: cannot read {}: {e}",
            path.display()
        )),
    })
}

/// A container id filter: 1–64 lowercase hex digits (a unique prefix is enough).
pub fn container_id(raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > 64
        || !raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Status::invalid_argument(format!(
            "container_id: expected up to 64 lowercase hex digits, got {:?}",
            truncate(raw)
        )));
    }
    Ok(Some(raw.to_owned()))
}

/// A pod UID filter: the dashed 8-4-4-4-12 hex form.
pub fn pod_uid(raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let groups: Vec<&str> = raw.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(Status::invalid_argument(format!(
            "pod_uid: expected a UUID like 7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a, got {:?}",
            truncate(raw)
        )));
    }
    Ok(Some(raw.to_ascii_lowercase()))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_must_be_lowercase_hex_prefixes() {
        assert_eq!(container_id("").unwrap(), None);
        assert_eq!(container_id("4f1c").unwrap().as_deref(), Some("4f1c"));
        for bad in ["../../etc", "4F1C", &"a".repeat(65), "xyz"] {
            let err = container_id(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().starts_with("container_id:"),
                "{}",
                err.message()
            );
        }
    }

    #[test]
    fn pod_uids_must_be_uuids() {
        assert!(
            pod_uid("7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a")
                .unwrap()
                .is_some()
        );
        for bad in ["7c0a1e2f", "7c0a1e2f_3b4d_4c5e_8f9a_0b1c2d3e4f5a", "../x"] {
            assert_eq!(
                pod_uid(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
    }
}
