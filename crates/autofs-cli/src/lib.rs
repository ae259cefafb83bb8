//! What the two command lines of autofs-inspector, `autofs-agent` and `autofs-controller`,
//! share, so that both read and write the same way: duration flags ([`duration`]), the aligned
//! tables they print for people ([`table`]), and their logs ([`logging`]).

pub mod duration;
pub mod logging;
pub mod table;
