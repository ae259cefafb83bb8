//! Which container and pod own a mount namespace, read from the owner's `/proc/<pid>/cgroup`.
//! Understands the containerd, CRI-O, Docker and podman layouts, under both the systemd
//! (`kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`) and the
//! cgroupfs (`/kubepods/besteffort/pod<uid>/<id>`) drivers, cgroup v1 and v2.

use crate::proc_root::ProcRoot;

/// Container and pod of a process; empty strings when not in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Attribution {
    /// 64-hex container id.
    pub container_id: String,
    /// Kubernetes pod UID (dashed form).
    pub pod_uid: String,
}

/// Prefixes runtimes put before the container id in a cgroup path segment.
const ID_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-", "libpod-", ""];

impl Attribution {
    /// Reads and parses `<root>/<pid>/cgroup` ([`Self::from_cgroup`]); any reader may read it
    /// (`proc_cgroup_show` checks no ptrace access).
    ///
    /// # Errors
    ///
    /// The failed read (the process is gone, or the file is unreadable).
    pub fn read(root: &ProcRoot, pid: i32) -> std::io::Result<Self> {
        root.read_record(pid, "cgroup")
            .map(|text| Self::from_cgroup(&text))
    }

    /// Parses `/proc/<pid>/cgroup` as bytes. The v2 line (`0::`) is preferred. Cgroup paths
    /// are bytes like any path: a segment that is not UTF-8 is skipped, never fatal.
    pub fn from_cgroup(text: &[u8]) -> Self {
        let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        lines.sort_by_key(|l| !l.starts_with(b"0::"));
        for line in lines {
            let path = line.splitn(3, |&b| b == b':').nth(2).unwrap_or_default();
            let found = Self::from_path(path);
            if !found.container_id.is_empty() || !found.pod_uid.is_empty() {
                return found;
            }
        }
        Self::default()
    }

    fn from_path(path: &[u8]) -> Self {
        let mut out = Self::default();
        for segment in path
            .split(|&b| b == b'/')
            .filter_map(|s| std::str::from_utf8(s).ok())
        {
            if let Some(uid) = pod_uid(segment) {
                out.pod_uid = uid;
            }
            if let Some(id) = container_id(segment) {
                out.container_id = id;
            }
        }
        out
    }
}

fn container_id(segment: &str) -> Option<String> {
    let segment = segment.strip_suffix(".scope").unwrap_or(segment);
    if segment.contains("conmon") {
        return None;
    }
    ID_PREFIXES.iter().find_map(|prefix| {
        let id = segment.strip_prefix(prefix)?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

fn pod_uid(segment: &str) -> Option<String> {
    // "kubepods-besteffort-pod<uid>.slice": "pod" also occurs inside "kubepods".
    segment.match_indices("pod").find_map(|(at, _)| {
        let candidate = segment.get(at + 3..at + 3 + 36)?;
        let uid = candidate.replace('_', "-");
        let groups: Vec<&str> = uid.split('-').collect();
        let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        shape_ok.then_some(uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2a9be0d3c7f8a6b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3";
    const UID: &str = "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a";

    #[test]
    fn containerd_with_the_systemd_driver() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        let a = Attribution::from_cgroup(text.as_bytes());
        assert_eq!(a.container_id, ID);
        assert_eq!(a.pod_uid, UID);
    }

    #[test]
    fn cgroupfs_driver_v1_lines() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n11:cpu:/kubepods/burstable/pod{UID}/{ID}\n"
        );
        let a = Attribution::from_cgroup(text.as_bytes());
        assert_eq!((a.container_id.as_str(), a.pod_uid.as_str()), (ID, UID));
    }

    #[test]
    fn crio_docker_and_podman_scopes() {
        for prefix in ["crio-", "docker-", "libpod-"] {
            let a = Attribution::from_cgroup(
                format!("0::/machine.slice/{prefix}{ID}.scope\n").as_bytes(),
            );
            assert_eq!(a.container_id, ID, "{prefix}");
            assert_eq!(a.pod_uid, "");
        }
        let a = Attribution::from_cgroup(format!("0::/docker/{ID}\n").as_bytes());
        assert_eq!(a.container_id, ID);
    }

    #[test]
    fn conmon_and_host_processes_are_not_containers() {
        let a = Attribution::from_cgroup(
            format!("0::/system.slice/crio-conmon-{ID}.scope\n").as_bytes(),
        );
        assert_eq!(a, Attribution::default());
        let a = Attribution::from_cgroup(b"0::/system.slice/autofs.service\n");
        assert_eq!(a, Attribution::default());
        assert_eq!(Attribution::from_cgroup(b""), Attribution::default());
    }

    #[test]
    fn a_segment_that_is_not_utf8_does_not_hide_the_container() {
        let mut text = format!("0::/kubepods/besteffort/pod{UID}/").into_bytes();
        text.extend_from_slice(b"caf\xe9/");
        text.extend_from_slice(ID.as_bytes());
        let a = Attribution::from_cgroup(&text);
        assert_eq!((a.container_id.as_str(), a.pod_uid.as_str()), (ID, UID));
    }
}
