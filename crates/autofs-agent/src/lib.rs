//! The autofs-inspector node agent as a library: the one-shot scan command (`scan`), its
//! output formats and exit codes. `main.rs` only parses flags and calls in here.

pub mod scan_cmd;
pub mod table;
