//! Every error of the core and of the inventory as a gRPC status, in one place. The message is
//! the error followed by its causes, so a client reads what the agent's log would say.
//!
//! (`From<core error> for tonic::Status` cannot be written here: both types are foreign. The
//! core's errors convert into [`ApiError`] and that into a status: `.map_err(ApiError::from)?`.)

use autofs_core::selector::{SelectError, SelectErrorKind};
use tonic::Status;

use crate::snapshot::ScanError;

/// An error of the core or the inventory on its way to becoming a status.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    /// A question about mounts the core could not answer (bad input, nothing found, denied).
    #[error(transparent)]
    Select(#[from] SelectError),
    /// No scan can answer now.
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// `error: cause: cause…`
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Select(e) => {
                let message = with_causes(&e);
                match e.kind() {
                    SelectErrorKind::InvalidArgument => Status::invalid_argument(message),
                    SelectErrorKind::NotFound => Status::not_found(message),
                    SelectErrorKind::PermissionDenied => Status::permission_denied(message),
                    SelectErrorKind::Unreadable => Status::internal(message),
                }
            }
            // A scan that could not answer: the agent cannot say anything true right now.
            ApiError::Scan(e @ ScanError::Stalled { .. }) => Status::unavailable(e.to_string()),
            ApiError::Scan(e) => Status::unavailable(format!("scan failed: {}", with_causes(&e))),
        }
    }
}
