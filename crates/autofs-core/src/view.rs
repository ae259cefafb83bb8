//! How much of the node the inspector can see. A process the inspector may not see looks
//! exactly like one that exited (with `hidepid=invisible` its `/proc/<pid>` is ENOENT), so a
//! restricted view must be known before any verdict rests on something being absent.
//!
//! The view is restricted when the proc mount hides processes from us (`hidepid=` without
//! `CAP_SYS_PTRACE` or membership of its `gid=`, or options that cannot be read without
//! `CAP_SYS_PTRACE`), when pid 1 is missing, when the proc root shows a pid namespace other
//! than the host's whose init is the inspector (its own container: processes outside it do
//! not exist there; under another init it is only a warning, [`ProcPidNamespace::Nested`]) or
//! other than the inspector's (the `pgrp=` numbers the kernel prints are the reader's), or when
//! the scan met processes whose mount namespace or fds it was refused.

use std::os::unix::ffi::OsStrExt;

use serde::Serialize;

use crate::mountinfo::MountLine;
use crate::proc_root::ProcRoot;

/// `CAP_SYS_PTRACE`: reading other processes' fds and namespaces, and seeing through hidepid.
pub const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_DAC_READ_SEARCH`: reading `/proc/<pid>/fd` directories of other users.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// `CAP_DAC_OVERRIDE`: also grants reading those directories (and writing, which is not needed).
pub const CAP_DAC_OVERRIDE: u32 = 1;
/// `PROC_PID_INIT_INO` (include/linux/proc_ns.h): the inode of the initial (host) pid
/// namespace, fixed by the kernel.
pub const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// Which pid namespace a proc root shows, relative to the inspector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProcPidNamespace {
    /// Not a proc filesystem (a fixture tree): no pid namespace to speak of.
    #[default]
    NotProcfs,
    /// The inspector's own pid namespace, which is the host's.
    Host,
    /// The inspector's own pid namespace, nested below the host's (inode given), with the
    /// inspector as its init (pid 1): the namespace of the inspector's own container (a pod
    /// without `hostPID`, `unshare --pid --fork`), so the processes outside it, the node's
    /// workloads among them, are not in the proc root at all.
    OwnContainer(u64),
    /// The inspector's own pid namespace, nested below the host's (inode given), with another
    /// process as its init: the namespace of a node that itself runs in a container (kind,
    /// k3d, a nested container host), where nothing of the node is missing, or of a pod
    /// without `hostPID` whose init is another process (a shared process namespace, an init
    /// such as tini), where the node's workloads are missing. `/proc` does not tell which.
    Nested(u64),
    /// The inspector's own pid namespace, whose inode could not be read (why given).
    Unknown,
    /// Another pid namespace than the inspector's (its `self` does not name the inspector):
    /// the kernel prints an autofs mount's `pgrp=` in the pid namespace of the process that
    /// reads `mountinfo` (`pid_vnr()` in `autofs_show_options()`), so those numbers do not
    /// name the proc root's processes.
    Foreign,
}

/// What the inspector can see of the node, judged once per scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct View {
    /// Whether anything may be hidden from the inspector. When true, no verdict rests on a
    /// process or fd being absent.
    pub restricted: bool,
    /// Why, one sentence each (empty when not restricted).
    pub reasons: Vec<String>,
    /// What could not be read without restricting the view (refusals despite
    /// `CAP_SYS_PTRACE`): the mount namespaces of those processes are unknown.
    pub warnings: Vec<String>,
    /// Processes whose mount namespace could not be read (`ns/mnt` refused): the namespaces
    /// they are in may be missing from the scan altogether.
    pub unknown_namespaces: usize,
    /// The proc mount's `hidepid=` value as the kernel prints it (`invisible`, `2`, …), if any.
    pub hidepid: Option<String>,
    /// The inspector's effective capabilities (`CapEff:` of its own status), if readable.
    pub cap_eff: Option<u64>,
    /// Whether the proc root shows a pid namespace other than the inspector's: then no
    /// `pgrp=` names a process of the proc root, and no live mount can be judged.
    pub foreign_pid_namespace: bool,
}

/// Facts about the inspector itself, read once per scan through the proc root's `self` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfFacts {
    /// `hidepid=` and `gid=` of the proc mount the proc root is, if it is one.
    pub hidepid: Option<(String, Option<u32>)>,
    /// Effective capabilities.
    pub cap_eff: Option<u64>,
    /// The fs gid and the supplementary groups: the groups the kernel's hidepid exemption
    /// tests (`in_group_p()` in `has_pid_permissions()`).
    pub groups: Vec<u32>,
    /// Which pid namespace the proc root shows.
    pub pid_namespace: ProcPidNamespace,
    /// Why the options of the proc mount the proc root is could not be read, when it is
    /// procfs and they could not: whether `hidepid=` hides processes is then unknown.
    pub proc_mount_unknown: Option<String>,
}

impl SelfFacts {
    /// Reads the facts from `<root>/self/mountinfo` and `<root>/self/status`. Unreadable
    /// facts stay unknown (a fixture tree is no proc mount and may have no `self`).
    pub fn read(root: &ProcRoot) -> Self {
        let mut facts = Self::default();
        if let Ok(status) = root.read_file("self/status") {
            for line in status.split(|&b| b == b'\n') {
                if let Some(caps) = cap_eff_line(line) {
                    facts.cap_eff = caps;
                } else if let Some(v) = line.strip_prefix(b"Gid:") {
                    // Real, effective, saved, fs: the kernel's group test (`in_group_p()`)
                    // looks at the fs gid alone, besides the supplementary groups.
                    facts.groups.extend(numbers(v).nth(3));
                } else if let Some(v) = line.strip_prefix(b"Groups:") {
                    facts.groups.extend(numbers(v));
                }
            }
        }
        match proc_mount_options(root) {
            Ok(options) => facts.hidepid = hidepid(&options),
            Err(why) if root.is_procfs() => facts.proc_mount_unknown = Some(why),
            // A fixture tree: no proc mount, nothing hidden by one.
            Err(_) => {}
        }
        facts.pid_namespace = pid_namespace(root);
        facts
    }

    /// Whether the inspector has capability `cap` (unknown counts as no).
    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff.is_some_and(|caps| caps & (1 << cap) != 0)
    }
}

impl View {
    /// Judges the view from the inspector's own facts and what the scan met.
    ///
    /// `pid1_visible`: whether the proc root lists pid 1. `denied`: a few of the reads the
    /// scan was refused (path and error), and how many there were in all.
    ///
    /// Refused reads restrict the view only when the inspector lacks `CAP_SYS_PTRACE` (then
    /// every more privileged process is out of reach). With it, a refusal comes from a
    /// confining security module or a specially protected process: it is listed in
    /// `warnings`, and the verdicts that depend on that process say so themselves.
    pub fn judge(facts: &SelfFacts, pid1_visible: bool, denied: (&[String], usize)) -> Self {
        let mut reasons = Vec::new();
        let mut warnings = Vec::new();
        if let Some((value, gid)) = &facts.hidepid {
            // The kernel prints no `gid=` for gid 0. With `ptraceable` only ptrace access
            // counts (`has_pid_permissions()`); otherwise members of the group see everything.
            let in_group = !matches!(value.as_str(), "4" | "ptraceable")
                && facts.groups.contains(&gid.unwrap_or(0));
            let exempt = facts.has_cap(CAP_SYS_PTRACE) || in_group;
            if !exempt {
                reasons.push(format!(
                    "the proc root is mounted hidepid={value}{} and the agent has neither CAP_SYS_PTRACE nor that group: processes it may not trace are invisible, exactly as if they had exited",
                    gid.map(|g| format!(",gid={g}")).unwrap_or_default()
                ));
            }
        }
        if let Some(why) = &facts.proc_mount_unknown
            && !facts.has_cap(CAP_SYS_PTRACE)
        {
            // CAP_SYS_PTRACE sees through every hidepid=; without it, an unknown hidepid= may
            // hide every process of another user, exactly as if it had exited.
            reasons.push(format!(
                "the options of the proc root's mount could not be read ({why}), so whether hidepid= hides processes from the agent, which lacks CAP_SYS_PTRACE, is unknown"
            ));
        }
        if !pid1_visible {
            reasons.push("pid 1 is not listed in the proc root: processes are hidden".into());
        }
        match facts.pid_namespace {
            ProcPidNamespace::NotProcfs | ProcPidNamespace::Host => {}
            ProcPidNamespace::OwnContainer(ino) => reasons.push(format!(
                "the agent's pid namespace (pid:[{ino}]), which its proc root shows, is not the host's: processes outside it are invisible, and so are their mount namespaces (run the agent in the host's pid namespace: hostPID)"
            )),
            ProcPidNamespace::Nested(ino) => warnings.push(format!(
                "the agent's pid namespace (pid:[{ino}]), which its proc root shows, is not the kernel's initial one: on a node that runs in a container (kind, k3d) that is the node's own and nothing is missing; in a pod without hostPID (a shared process namespace, an init process of its own) processes outside the pod are invisible (run the agent with hostPID)"
            )),
            ProcPidNamespace::Unknown => reasons.push(
                "the agent's own pid namespace could not be read: whether processes outside it are invisible is unknown".into(),
            ),
            ProcPidNamespace::Foreign => reasons.push(
                "the proc root shows another pid namespace than the agent's: the kernel prints each autofs mount's pgrp= in the agent's pid namespace, so no pgrp= names a process of the proc root, and processes outside the proc root's namespace are invisible (run the agent in the pid namespace of its proc root)".into(),
            ),
        }
        let (examples, count) = denied;
        if count > 0 {
            let e = examples.first().map(String::as_str).unwrap_or("?");
            if facts.cap_eff.is_some() && !facts.has_cap(CAP_SYS_PTRACE) {
                reasons.push(format!(
                    "{count} read(s) of other processes' /proc entries were refused and the agent lacks CAP_SYS_PTRACE, e.g. {e}"
                ));
            } else {
                // `/proc/<pid>/fd` and `fdinfo` are mode 0500, owned by the process's user.
                let cause = if facts.cap_eff.is_some()
                    && !facts.has_cap(CAP_DAC_READ_SEARCH)
                    && !facts.has_cap(CAP_DAC_OVERRIDE)
                {
                    "the agent lacks CAP_DAC_READ_SEARCH, so the fd tables of other users' processes (mode 0500) are refused; or a confining security module, or a protected process"
                } else {
                    "a confining security module, or a protected process"
                };
                warnings.push(format!(
                    "{count} read(s) of other processes' /proc entries were refused although the agent has CAP_SYS_PTRACE ({cause}), e.g. {e}"
                ));
            }
        }
        Self {
            restricted: !reasons.is_empty(),
            reasons,
            warnings,
            hidepid: facts.hidepid.as_ref().map(|(v, _)| v.clone()),
            cap_eff: facts.cap_eff,
            foreign_pid_namespace: facts.pid_namespace == ProcPidNamespace::Foreign,
            unknown_namespaces: 0,
        }
    }

    /// One sentence for messages: why absences cannot be trusted.
    pub fn summary(&self) -> String {
        format!(
            "the agent's view of /proc is restricted: {}",
            self.reasons.join("; ")
        )
    }

    /// Everything the operator should know about the view: reasons, then warnings.
    pub fn problems(&self) -> impl Iterator<Item = &String> {
        self.reasons.iter().chain(&self.warnings)
    }
}

/// The super options of the proc mount the proc root is, from the inspector's own mountinfo:
/// the line of the mount the root directory lies on ([`ProcRoot::mount_id`]), when it is a
/// proc mount. A proc root reached through another mount namespace (`/proc/<pid>/root/…`) is
/// on no mount of that table: its options stay unknown rather than another proc mount's
/// (one at the path the root resolves to in the inspector's own namespace) being read.
///
/// # Errors
///
/// Why the options are unknown: the mount id or the table could not be read, or the table
/// has no proc mount of that id.
fn proc_mount_options(root: &ProcRoot) -> Result<Vec<u8>, String> {
    let id = root
        .mount_id()
        .map_err(|e| format!("the mount id of the proc root could not be read: {e}"))?;
    let table = root
        .read_file("self/mountinfo")
        .map_err(|e| format!("the agent's own mountinfo could not be read: {e}"))?;
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| MountLine::parse(line).ok())
        .find(|m| u64::from(m.mount_id) == id && m.fstype == b"proc")
        .map(|m| m.super_options.to_vec())
        .ok_or_else(|| {
            format!("its mount ({id}) is not in the agent's own mount table (a proc root reached through another mount namespace)")
        })
}

/// The effective capabilities a `status` line gives if it is the `CapEff:` line (`None` inside
/// when its hexadecimal value does not parse); `None` for any other line.
pub(crate) fn cap_eff_line(line: &[u8]) -> Option<Option<u64>> {
    let value = line.strip_prefix(b"CapEff:")?;
    Some(
        std::str::from_utf8(value.trim_ascii())
            .ok()
            .and_then(|v| u64::from_str_radix(v, 16).ok()),
    )
}

/// The decimal numbers of a `status` line's value, in order (what does not parse is skipped).
fn numbers(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
    value
        .split(u8::is_ascii_whitespace)
        .filter(|t| !t.is_empty())
        .filter_map(|t| std::str::from_utf8(t).ok()?.parse().ok())
}

/// Which pid namespace the proc root shows: `self` names the inspector only in a proc of its
/// own pid namespace, whose inode its own `self/ns/pid` gives (always readable: a process may
/// read its own links).
fn pid_namespace(root: &ProcRoot) -> ProcPidNamespace {
    if !root.is_procfs() {
        return ProcPidNamespace::NotProcfs;
    }
    if !root.is_own_pid_namespace() {
        return ProcPidNamespace::Foreign;
    }
    match root
        .read_link_file("self/ns/pid")
        .ok()
        .and_then(|t| crate::proc_root::parse_ns_link(t.as_os_str().as_bytes(), "pid"))
    {
        Some(INIT_PID_NS_INO) => ProcPidNamespace::Host,
        // `self` names the inspector, so its pid is the proc root's numbering of it.
        Some(ino) if std::process::id() == 1 => ProcPidNamespace::OwnContainer(ino),
        Some(ino) => ProcPidNamespace::Nested(ino),
        None => ProcPidNamespace::Unknown,
    }
}

/// `hidepid=` (when it hides anything) and `gid=` from proc's super options.
fn hidepid(options: &[u8]) -> Option<(String, Option<u32>)> {
    let options = std::str::from_utf8(options).ok()?;
    let mut value = None;
    let mut gid = None;
    for token in options.split(',') {
        if let Some(v) = token.strip_prefix("hidepid=") {
            value = Some(v.to_owned());
        } else if let Some(v) = token.strip_prefix("gid=") {
            gid = v.parse().ok();
        }
    }
    // 0/off shows everything; 1/noaccess, 2/invisible and 4/ptraceable restrict.
    value
        .filter(|v| !matches!(v.as_str(), "0" | "off"))
        .map(|v| (v, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(hidepid: Option<(&str, Option<u32>)>, caps: u64, groups: &[u32]) -> SelfFacts {
        SelfFacts {
            hidepid: hidepid.map(|(v, g)| (v.to_owned(), g)),
            cap_eff: Some(caps),
            groups: groups.to_vec(),
            pid_namespace: ProcPidNamespace::NotProcfs,
            proc_mount_unknown: None,
        }
    }

    const ALL: u64 = 0x1ff_ffff_ffff;
    const NO_PTRACE: u64 = ALL & !(1 << CAP_SYS_PTRACE);

    #[test]
    fn only_the_fs_gid_and_the_supplementary_groups_count() {
        let dir = std::env::temp_dir().join(format!("autofs-core-self-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("self")).unwrap();
        // Real 4242, effective 0, saved 4242, fs 7; supplementary 8 and 9.
        std::fs::write(
            dir.join("self/status"),
            "Name:\tx\nGid:\t4242\t0\t4242\t7\nGroups:\t8 9 \nCapEff:\t0000000000080000\n",
        )
        .unwrap();
        let facts = SelfFacts::read(&ProcRoot::open(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(facts.groups, [7, 8, 9]);
        assert!(facts.has_cap(CAP_SYS_PTRACE));
    }

    #[test]
    fn the_proc_mount_is_found_by_the_mount_the_root_lies_on_not_by_its_path() {
        let dir = std::env::temp_dir().join(format!("autofs-core-mnt-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("self")).unwrap();
        let root = ProcRoot::open(&dir).unwrap();
        let id = root.mount_id().unwrap();
        let path = std::fs::canonicalize(&dir).unwrap();
        // The root's own mount, shown at another path (reached through another namespace's
        // root), and another proc mount at the root's path.
        std::fs::write(
            dir.join("self/mountinfo"),
            format!(
                "{id} 1 0:5 / /elsewhere rw - proc proc rw,hidepid=invisible,gid=4242\n{} 1 0:6 / {} rw - proc proc rw,hidepid=2\n",
                id + 1000,
                path.display()
            ),
        )
        .unwrap();
        let facts = SelfFacts::read(&root);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(facts.hidepid, Some(("invisible".into(), Some(4242))));
        // On procfs: the id of the /proc line of the inspector's own table.
        let proc = ProcRoot::open("/proc").unwrap();
        let table = std::fs::read("/proc/self/mountinfo").unwrap();
        let line = table
            .split(|&b| b == b'\n')
            .filter_map(|l| MountLine::parse(l).ok())
            .rfind(|m| m.mount_point == b"/proc")
            .unwrap();
        assert_eq!(proc.mount_id().unwrap(), u64::from(line.mount_id));
    }

    #[test]
    fn hidepid_restricts_unless_ptrace_or_its_group_exempts() {
        let v = View::judge(
            &facts(Some(("invisible", Some(4242))), NO_PTRACE, &[0]),
            true,
            (&[], 0),
        );
        assert!(v.restricted);
        assert!(v.reasons[0].contains("hidepid=invisible,gid=4242"), "{v:?}");
        let v = View::judge(
            &facts(Some(("invisible", Some(4242))), ALL, &[0]),
            true,
            (&[], 0),
        );
        assert!(!v.restricted, "{v:?}");
        let v = View::judge(
            &facts(Some(("2", Some(4242))), NO_PTRACE, &[0, 4242]),
            true,
            (&[], 0),
        );
        assert!(!v.restricted, "{v:?}");
        let v = View::judge(&facts(None, NO_PTRACE, &[0]), true, (&[], 0));
        assert!(!v.restricted, "{v:?}");
        // No `gid=` printed means gid 0: root's group sees everything...
        let v = View::judge(
            &facts(Some(("invisible", None)), NO_PTRACE, &[0]),
            true,
            (&[], 0),
        );
        assert!(!v.restricted, "{v:?}");
        // ...except with `ptraceable`, where only ptrace access counts.
        let v = View::judge(
            &facts(Some(("ptraceable", None)), NO_PTRACE, &[0]),
            true,
            (&[], 0),
        );
        assert!(v.restricted, "{v:?}");
    }

    #[test]
    fn missing_pid1_and_refused_reads_restrict() {
        let v = View::judge(&facts(None, ALL, &[0]), false, (&[], 0));
        assert!(v.restricted && v.reasons[0].contains("pid 1"), "{v:?}");
        let denied = ["/proc/77/ns/mnt: Permission denied (os error 13)".to_owned()];
        let v = View::judge(&facts(None, NO_PTRACE, &[0]), true, (&denied, 3));
        assert!(v.restricted);
        assert!(v.reasons[0].starts_with("3 read(s)"), "{v:?}");
        assert!(v.reasons[0].contains("lacks CAP_SYS_PTRACE"), "{v:?}");
        assert!(v.summary().contains("/proc/77/ns/mnt"), "{v:?}");
        // With CAP_SYS_PTRACE a refusal is a warning about that process, not a blind view.
        let v = View::judge(&facts(None, ALL, &[0]), true, (&denied, 1));
        assert!(!v.restricted, "{v:?}");
        assert!(v.warnings[0].contains("/proc/77/ns/mnt"), "{v:?}");
        assert!(!v.warnings[0].contains("CAP_DAC_READ_SEARCH"), "{v:?}");
        // Without a DAC capability, other users' fd tables are the likely refusals.
        let no_dac = ALL & !(1 << CAP_DAC_READ_SEARCH) & !(1 << CAP_DAC_OVERRIDE);
        let v = View::judge(&facts(None, no_dac, &[0]), true, (&denied, 1));
        assert!(!v.restricted, "{v:?}");
        assert!(
            v.warnings[0].contains("the agent lacks CAP_DAC_READ_SEARCH"),
            "{v:?}"
        );
        assert_eq!(v.problems().count(), 1);
    }

    #[test]
    fn a_proc_root_on_a_mount_of_another_namespace_has_unknown_options() {
        // A proc mount made in a mount namespace of its own, reached through its holder's
        // `root`: procfs of this pid namespace, on a mount the inspector's table lacks.
        let dir = tempfile::tempdir().unwrap();
        let mut holder = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t proc -o hidepid=invisible proc {} && echo ready && exec sleep 600",
                dir.path().display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        let holder = Kill(holder);
        assert_eq!(ready, "ready\n", "the proc mount was not made");
        let path = format!("/proc/{}/root{}", holder.0.id(), dir.path().display());
        let root = ProcRoot::open(&path).unwrap();
        assert!(root.is_procfs() && root.is_own_pid_namespace(), "{path}");
        let facts = SelfFacts::read(&root);
        drop(holder);
        let why = facts.proc_mount_unknown.expect("options unknown");
        assert!(
            why.contains("is not in the agent's own mount table"),
            "{why}"
        );
        assert_eq!(facts.hidepid, None);
        // The inspector's own /proc is found in its table.
        assert_eq!(
            SelfFacts::read(&ProcRoot::open("/proc").unwrap()).proc_mount_unknown,
            None
        );
    }

    #[test]
    fn an_unknown_hidepid_restricts_unless_ptrace_sees_through_it() {
        let mut f = facts(None, NO_PTRACE, &[0]);
        f.proc_mount_unknown = Some("its mount (99) is not in the agent's own mount table".into());
        let v = View::judge(&f, true, (&[], 0));
        assert!(v.restricted, "{v:?}");
        assert!(
            v.reasons[0].contains("whether hidepid= hides processes")
                && v.reasons[0].contains("its mount (99)"),
            "{v:?}"
        );
        f.cap_eff = Some(ALL);
        assert!(!View::judge(&f, true, (&[], 0)).restricted);
    }

    #[test]
    fn a_proc_root_of_a_nested_or_foreign_pid_namespace_restricts() {
        let mut f = facts(None, ALL, &[0]);
        f.pid_namespace = ProcPidNamespace::Host;
        let v = View::judge(&f, true, (&[], 0));
        assert!(!v.restricted && !v.foreign_pid_namespace, "{v:?}");
        f.pid_namespace = ProcPidNamespace::OwnContainer(4026532999);
        let v = View::judge(&f, true, (&[], 0));
        assert!(v.restricted && !v.foreign_pid_namespace, "{v:?}");
        assert!(v.reasons[0].contains("pid:[4026532999]"), "{v:?}");
        assert!(v.reasons[0].contains("hostPID"), "{v:?}");
        // Another init: a node in a container (kind) sees all of itself; only a warning.
        f.pid_namespace = ProcPidNamespace::Nested(4026532999);
        let v = View::judge(&f, true, (&[], 0));
        assert!(!v.restricted && !v.foreign_pid_namespace, "{v:?}");
        assert!(v.warnings[0].contains("pid:[4026532999]"), "{v:?}");
        assert!(v.warnings[0].contains("kind"), "{v:?}");
        f.pid_namespace = ProcPidNamespace::Foreign;
        let v = View::judge(&f, true, (&[], 0));
        assert!(v.restricted && v.foreign_pid_namespace, "{v:?}");
        assert!(v.reasons[0].contains("pgrp="), "{v:?}");
        f.pid_namespace = ProcPidNamespace::Unknown;
        assert!(View::judge(&f, true, (&[], 0)).restricted);
    }

    #[test]
    fn hidepid_options_are_read_as_the_kernel_prints_them() {
        assert_eq!(
            hidepid(b"rw,gid=4242,hidepid=invisible"),
            Some(("invisible".into(), Some(4242)))
        );
        assert_eq!(hidepid(b"rw,hidepid=2"), Some(("2".into(), None)));
        assert_eq!(hidepid(b"rw,hidepid=off"), None);
        assert_eq!(hidepid(b"rw"), None);
    }
}
