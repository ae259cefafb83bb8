//! The errors of a scan as a whole. Per-mount problems are verdicts (`MountState::Error`),
//! never `Err`: one bad mount must not hide the others.

use std::path::PathBuf;

/// A scan could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proc root does not exist, is not a directory, or cannot be listed.
    #[error("cannot read proc root {path}")]
    ProcRoot {
        /// The configured proc root.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Writing a CRIU image failed.
    #[error(transparent)]
    Image(#[from] crate::criu_image::ImageError),
    /// A question about some mounts could not be answered (see [`crate::selector`]).
    #[error(transparent)]
    Select(#[from] crate::selector::SelectError),
}

/// Result of the core's fallible entry points.
pub type Result<T, E = Error> = std::result::Result<T, E>;
