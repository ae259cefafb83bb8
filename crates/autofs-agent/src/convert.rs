//! Core reports → `autofs.v1` messages. The conversions themselves live with the core types
//! (`autofs_core::report`), next to the names they take from the proto; these are the agent's
//! entry points to them.

use autofs_api::v1;
use autofs_core::{MountReport, MountState};

/// The API enum value of a core state.
pub fn state(s: MountState) -> v1::MountState {
    s.into()
}

/// The core state of an API enum value (`None` for UNSPECIFIED).
pub fn core_state(s: v1::MountState) -> Option<MountState> {
    MountState::try_from(s).ok()
}

/// One core report as an API message.
pub fn report(r: &MountReport) -> v1::MountReport {
    r.into()
}
