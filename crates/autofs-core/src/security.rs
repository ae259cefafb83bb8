//! The agent's own mandatory-access-control label (AppArmor profile or SELinux context), read
//! from the proc root's `self` entry, and what it means when a scan is denied what the
//! capability set should allow.
//!
//! Capabilities are not the last word on `/proc/<pid>/ns/mnt`, `fd/` and `fdinfo/`: the
//! kernel's ptrace access check also asks the LSM. A container confined by its runtime's
//! default AppArmor profile may read only peers in that same profile, and an SELinux
//! `container_t` process may not read other domains' `/proc/<pid>` entries, whatever
//! capabilities it holds. The label names that cause for the operator.

use std::io;

use crate::proc_root::ProcRoot;

/// The name of the AppArmor profile shipped in `deploy/apparmor/`.
pub const AGENT_APPARMOR_PROFILE: &str = "autofs-inspector-agent";

/// SELinux types that do not confine a process's view of /proc: the super-privileged
/// container type and the usual unconfined domains.
const UNCONFINED_SELINUX_TYPES: [&str; 6] = [
    "spc_t",
    "unconfined_t",
    "unconfined_service_t",
    "kernel_t",
    "initrc_t",
    "super_t",
];

/// A Linux security module that labels processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lsm {
    /// AppArmor: the label is a profile name and a mode, e.g. `cri-containerd.apparmor.d (enforce)`.
    AppArmor,
    /// SELinux: the label is a context `user:role:type:level`.
    SeLinux,
    /// A label in neither form (Smack, or something new).
    Unknown,
}

impl Lsm {
    /// Lower-case name as reported over the API: `apparmor`, `selinux`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AppArmor => "apparmor",
            Self::SeLinux => "selinux",
            Self::Unknown => "unknown",
        }
    }
}

/// The label the agent runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Which module the label belongs to.
    pub lsm: Lsm,
    /// The label as the kernel prints it, without trailing NUL or newline.
    pub label: String,
    /// Whether the label restricts what the agent may read: an AppArmor profile in enforce
    /// (or kill) mode, an SELinux type other than the unconfined ones, any unknown label.
    pub confining: bool,
}

impl Confinement {
    /// Reads the agent's label through the proc root's `self` entry: the AppArmor-specific
    /// `self/attr/apparmor/current` (kernels with LSM stacking) and `self/attr/current` (the
    /// first major LSM). A confining label wins; `None` when no LSM labels the agent (the
    /// files are missing, or the kernel answers EINVAL because no such LSM is active).
    pub fn read(root: &ProcRoot) -> Option<Self> {
        let read = |rel: &str| -> Option<String> {
            match std::fs::read(root.path().join("self").join(rel)) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                // EINVAL: the LSM is not active; anything else: unknowable, so say nothing.
                Err(_) => None,
            }
        };
        let apparmor = read("attr/apparmor/current").and_then(|t| Self::parse_apparmor(&t));
        let current = read("attr/current").and_then(|t| Self::parse(&t));
        match (apparmor, current) {
            (Some(a), _) if a.confining => Some(a),
            (_, Some(c)) if c.confining => Some(c),
            (a, c) => a.or(c),
        }
    }

    /// Parses the contents of `attr/apparmor/current`: always an AppArmor label.
    pub fn parse_apparmor(text: &str) -> Option<Self> {
        let label = clean(text)?;
        let confining = match apparmor_mode(label) {
            // "unconfined", or a profile whose mode is "unconfined" (AppArmor 4).
            None => label != "unconfined",
            Some(mode) => matches!(mode, "enforce" | "kill"),
        };
        Some(Self {
            lsm: Lsm::AppArmor,
            label: label.to_owned(),
            confining,
        })
    }

    /// Parses the contents of `attr/current`, whose format depends on the first major LSM:
    /// `name (mode)` or `unconfined` for AppArmor, `user:role:type[:level]` for SELinux.
    pub fn parse(text: &str) -> Option<Self> {
        let label = clean(text)?;
        if label == "unconfined" || apparmor_mode(label).is_some() {
            return Self::parse_apparmor(label);
        }
        if let Some(ty) = selinux_type(label) {
            return Some(Self {
                lsm: Lsm::SeLinux,
                label: label.to_owned(),
                confining: !UNCONFINED_SELINUX_TYPES.contains(&ty),
            });
        }
        Some(Self {
            lsm: Lsm::Unknown,
            label: label.to_owned(),
            confining: true,
        })
    }

    /// The SELinux type of the label (`container_t` in `system_u:system_r:container_t:s0`).
    pub fn selinux_type(&self) -> Option<&str> {
        (self.lsm == Lsm::SeLinux)
            .then(|| selinux_type(&self.label))
            .flatten()
    }
}

/// Why a scan was denied access to `denied` processes although the agent holds the
/// capabilities that should grant it, and what to set, given the agent's label.
pub fn explain_denial(confinement: Option<&Confinement>, denied: usize) -> String {
    let head = format!(
        "{denied} process(es) could not be read although the agent holds CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
    );
    let Some(c) = confinement.filter(|c| c.confining) else {
        let label = confinement.map_or_else(
            || "no AppArmor or SELinux label".to_owned(),
            |c| {
                format!(
                    "its {} label \"{}\" does not confine it",
                    c.lsm.as_str(),
                    c.label
                )
            },
        );
        return format!(
            "{head}; {label}: look for hidepid on the host's /proc, a user namespace, or a policy not visible in /proc/self/attr (README.md, \"Hardened nodes\")"
        );
    };
    let what = match c.lsm {
        Lsm::AppArmor if c.label.split(" (").next() == Some(AGENT_APPARMOR_PROFILE) => format!(
            "likely cause: AppArmor checks both sides, and the processes' own profiles (e.g. the runtime's default profile of other containers) deny \"readby\" to the agent's profile \"{}\"; set appArmor.type=Unconfined to read them",
            c.label
        ),
        Lsm::AppArmor => format!(
            "likely cause: AppArmor profile \"{}\" confines the agent (a runtime default profile allows ptrace only towards its own peers); set appArmor.type=Localhost (profile {AGENT_APPARMOR_PROFILE}) or Unconfined",
            c.label
        ),
        Lsm::SeLinux => format!(
            "likely cause: SELinux type {} confines the agent (if SELinux is enforcing); set seLinux.enabled=true and seLinux.type=spc_t (super_t on Bottlerocket)",
            c.selinux_type().unwrap_or("?")
        ),
        Lsm::Unknown => format!(
            "likely cause: security label \"{}\" confines the agent",
            c.label
        ),
    };
    format!("{head}; {what} (README.md, \"Hardened nodes\")")
}

/// Trims the trailing NUL (SELinux) and newline (AppArmor); `None` when nothing is left.
fn clean(text: &str) -> Option<&str> {
    let label = text.trim_end_matches(['\0', '\n']).trim();
    (!label.is_empty()).then_some(label)
}

/// The mode of an AppArmor label `name (mode)`.
fn apparmor_mode(label: &str) -> Option<&str> {
    let (_, rest) = label.rsplit_once(" (")?;
    rest.strip_suffix(')')
}

/// The type field of an SELinux context `user:role:type[:level]`.
fn selinux_type(label: &str) -> Option<&str> {
    let mut fields = label.splitn(4, ':');
    let (user, role, ty) = (fields.next()?, fields.next()?, fields.next()?);
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (word(user) && word(role) && word(ty)).then_some(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the label of a fixture tree under `tests/fixtures/security/`.
    fn fixture(name: &str) -> Option<Confinement> {
        let root = ProcRoot::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/security")
                .join(name),
        )
        .unwrap();
        Confinement::read(&root)
    }

    #[test]
    fn runtime_default_apparmor_profile_is_confining_and_named_in_the_explanation() {
        let c = fixture("apparmor_runtime_default").unwrap();
        assert_eq!(c.lsm, Lsm::AppArmor);
        assert_eq!(c.label, "cri-containerd.apparmor.d (enforce)");
        assert!(c.confining);
        let why = explain_denial(Some(&c), 3);
        assert!(why.starts_with("3 process(es) could not be read"), "{why}");
        assert!(
            why.contains("\"cri-containerd.apparmor.d (enforce)\""),
            "{why}"
        );
        assert!(why.contains("appArmor.type=Localhost"), "{why}");
    }

    #[test]
    fn our_own_profile_explains_the_peers_readby_check() {
        let c = fixture("apparmor_agent_profile").unwrap();
        assert!(c.confining);
        let why = explain_denial(Some(&c), 1);
        assert!(why.contains("readby"), "{why}");
        assert!(why.contains("appArmor.type=Unconfined"), "{why}");
    }

    #[test]
    fn unconfined_and_complain_mode_apparmor_labels_do_not_confine() {
        let c = fixture("apparmor_unconfined").unwrap();
        assert_eq!(
            (c.lsm, c.label.as_str(), c.confining),
            (Lsm::AppArmor, "unconfined", false)
        );
        let c = fixture("apparmor_complain").unwrap();
        assert_eq!(c.lsm, Lsm::AppArmor);
        assert!(!c.confining, "complain mode only logs");
        let why = explain_denial(Some(&c), 2);
        assert!(why.contains("does not confine it"), "{why}");
        assert!(why.contains("hidepid"), "{why}");
    }

    #[test]
    fn selinux_container_t_confines_and_spc_t_does_not() {
        let c = fixture("selinux_container_t").unwrap();
        assert_eq!(c.lsm, Lsm::SeLinux);
        assert_eq!(c.label, "system_u:system_r:container_t:s0:c123,c456");
        assert_eq!(c.selinux_type(), Some("container_t"));
        assert!(c.confining);
        let why = explain_denial(Some(&c), 5);
        assert!(why.contains("SELinux type container_t"), "{why}");
        assert!(why.contains("seLinux.type=spc_t"), "{why}");

        let c = fixture("selinux_spc_t").unwrap();
        assert_eq!(c.selinux_type(), Some("spc_t"));
        assert!(!c.confining);
    }

    #[test]
    fn a_confining_label_wins_over_an_unconfined_one_when_modules_are_stacked() {
        let c = fixture("stacked_selinux_first").unwrap();
        assert_eq!(c.lsm, Lsm::AppArmor, "{c:?}");
        assert_eq!(c.label, "crio-default (enforce)");
    }

    #[test]
    fn no_label_files_mean_no_confinement_and_a_generic_explanation() {
        assert_eq!(fixture("none"), None);
        let why = explain_denial(None, 4);
        assert!(why.contains("no AppArmor or SELinux label"), "{why}");
    }

    #[test]
    fn labels_in_neither_form_are_unknown_and_assumed_confining() {
        let c = Confinement::parse("_\n").unwrap();
        assert_eq!((c.lsm, c.confining), (Lsm::Unknown, true));
        assert_eq!(Confinement::parse("\0"), None);
        assert_eq!(Confinement::parse("a:b"), Confinement::parse("a:b"));
        assert_eq!(Confinement::parse("a:b").unwrap().lsm, Lsm::Unknown);
    }
}
