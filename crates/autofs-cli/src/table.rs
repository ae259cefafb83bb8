//! The aligned tables both binaries print for people: left-aligned columns two spaces apart
//! (elastic tabstops, [`tabwriter`]), widths by display width, no trailing spaces.

use std::io::Write as _;

/// Renders `header` and `rows` as aligned lines, each ending in `\n`. A cell's control
/// characters (a tab or newline in a path) are written `\xHH` so that they cannot break the
/// layout; the exact text is in the JSON output.
///
/// # Panics
///
/// Never: [`tabwriter`] writes into a `Vec`, which cannot fail.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(0).padding(2);
    let mut line = String::new();
    for cells in std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned())
    {
        line.clear();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push('\t');
            }
            for c in cell.chars() {
                if c.is_control() {
                    line.push_str(&format!("\\x{:02x}", u32::from(c)));
                } else {
                    line.push(c);
                }
            }
        }
        line.push('\n');
        tw.write_all(line.as_bytes())
            .expect("writing into a Vec cannot fail");
    }
    let bytes = tw.into_inner().expect("flushing into a Vec cannot fail");
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_two_spaces_apart_without_trailing_spaces() {
        let rows = vec![
            vec!["1".to_string(), "/mnt/a".into(), "ACTIVE".into()],
            vec!["22".to_string(), "/b".into(), "-".into()],
        ];
        assert_eq!(
            render(&["ID", "MOUNT_POINT", "STATE"], &rows),
            "ID  MOUNT_POINT  STATE\n1   /mnt/a       ACTIVE\n22  /b           -\n"
        );
    }

    #[test]
    fn a_tab_or_newline_in_a_cell_keeps_the_columns() {
        let rows = vec![vec!["/a\tb\nc".to_string(), "x".into()]];
        assert_eq!(
            render(&["P", "S"], &rows),
            "P             S\n/a\\x09b\\x0ac  x\n"
        );
    }

    #[test]
    fn wide_characters_take_their_display_width() {
        let rows = vec![vec!["/日本".to_string(), "x".into()]];
        assert_eq!(render(&["MOUNT", "S"], &rows), "MOUNT  S\n/日本  x\n");
    }
}
