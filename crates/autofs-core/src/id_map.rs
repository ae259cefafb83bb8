//! The ids CRIU records for `uid=`/`gid=` of a mount dumped with a user namespace
//! (reference §2): its mountinfo parse rewrites them with `userns_uid()`/`userns_gid()`, which
//! map a host id into the user namespace of the root of the dumped tree through that task's
//! `uid_map`/`gid_map`, and give `INVALID_ID` (`~0U`, printed as -1) to an id the map does not
//! cover.
//!
//! Read by a process of the initial user namespace, the maps of a task of that namespace are
//! `0 0 4294967295`, under which every id maps to itself (`~0U` is outside it, but is
//! `INVALID_ID` anyway): applying a task's maps is then the same as CRIU's "no user namespace
//! dumped" shortcut, so the namespaces need not be compared.

/// One line of a `uid_map`/`gid_map`: `first lower_first count` (ids inside the namespace start
/// at `first`, the ids they stand for in the reader's namespace at `lower_first`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    first: u32,
    lower_first: u32,
    count: u32,
}

/// A parsed `uid_map` or `gid_map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    extents: Vec<Extent>,
}

/// CRIU's `INVALID_ID`: what an id outside the map becomes.
pub const INVALID_ID: u32 = u32::MAX;

impl IdMap {
    /// Parses the text of `/proc/<pid>/uid_map` or `gid_map`: lines of three decimal numbers.
    ///
    /// # Errors
    ///
    /// The first line that is not three unsigned 32-bit numbers, quoted.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let mut extents = Vec::new();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let numbers: Vec<u32> = line
                .split(u8::is_ascii_whitespace)
                .filter(|t| !t.is_empty())
                .map(|t| std::str::from_utf8(t).ok()?.parse().ok())
                .collect::<Option<_>>()
                .filter(|n: &Vec<u32>| n.len() == 3)
                .ok_or_else(|| {
                    format!(
                        "'{}' is not three numbers",
                        crate::escape::escape(line.trim_ascii())
                    )
                })?;
            extents.push(Extent {
                first: numbers[0],
                lower_first: numbers[1],
                count: numbers[2],
            });
        }
        Ok(Self { extents })
    }

    /// CRIU's `userns_id()`: `id` (in the reader's namespace) as the namespace sees it, or
    /// [`INVALID_ID`]. The bounds are summed in 32 bits, as CRIU sums them.
    pub fn criu_map(&self, id: u32) -> u32 {
        self.extents
            .iter()
            .find(|e| e.lower_first <= id && e.lower_first.wrapping_add(e.count) > id)
            .map_or(INVALID_ID, |e| e.first.wrapping_add(id - e.lower_first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_maps_every_id_to_itself() {
        let init = IdMap::parse(b"         0          0 4294967295\n").unwrap();
        for id in [0, 1000, 2_147_483_648, u32::MAX - 1, u32::MAX] {
            assert_eq!(init.criu_map(id), id);
        }
    }

    #[test]
    fn a_container_map_shifts_ids_and_invalidates_the_rest() {
        let map = IdMap::parse(b"0 100000 65536\n65536 1000 1\n").unwrap();
        assert_eq!(map.criu_map(100_000), 0);
        assert_eq!(map.criu_map(101_000), 1000);
        assert_eq!(map.criu_map(1000), 65536);
        assert_eq!(map.criu_map(999), INVALID_ID);
        assert_eq!(map.criu_map(165_536), INVALID_ID);
        // An empty map (a namespace whose map was never written) covers nothing.
        assert_eq!(IdMap::parse(b"").unwrap().criu_map(0), INVALID_ID);
    }

    #[test]
    fn bounds_are_summed_in_32_bits_as_criu_does() {
        // lower_first + count wraps to 0: CRIU's test never matches.
        let map = IdMap::parse(b"0 1 4294967295\n").unwrap();
        assert_eq!(map.criu_map(5), INVALID_ID);
    }

    #[test]
    fn lines_that_are_not_three_numbers_are_errors() {
        assert!(IdMap::parse(b"0 0\n").is_err());
        assert!(IdMap::parse(b"0 x 1\n").is_err());
        assert!(IdMap::parse(b"0 0 4294967296\n").is_err());
    }
}
