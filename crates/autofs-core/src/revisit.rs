//! CRIU's re-read of the mount table after its probe (`autofs_revisit_options`, reference
//! §3.6 step 6 and §3.10 #5): once the probe has turned a mount catatonic, CRIU reads
//! `mountinfo` again with `fgets` into a 1024-byte buffer, line by line, takes the first
//! space-separated token of each piece as a mount id (`xatoi`), and from the mount's own line
//! the token that contains `pipe_ino=` as its new options. A line longer than the buffer is
//! read in pieces, and a piece whose first token is no number ends the re-read with an error:
//! the probe fails and so does the dump, although the mount did turn catatonic. Long lines are
//! ordinary (overlayfs `lowerdir=` lists of many-layered images), and they come first in a
//! container's table.

use memchr::memchr;

use crate::escape::escape;

/// `fgets(buf, 1024, f)` returns at most 1023 bytes.
const FGETS_MAX: usize = 1023;

/// The options token CRIU's re-read finds for mount `mount_id` in `table` (the namespace's
/// complete `mountinfo`, read before the probe) once the probe has made the mount catatonic
/// (the kernel then shows `fd=-1` and `pipe_ino=-1` in its line).
///
/// # Errors
///
/// CRIU's failure, as a sentence: a piece of a line whose first token `xatoi` refuses, or no
/// line of the mount.
pub fn revisit(table: &[u8], mount_id: u32) -> Result<Vec<u8>, String> {
    let table = after_probe(table, mount_id);
    let mut rest = &table[..];
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(FGETS_MAX)];
        let end = memchr(b'\n', window).map_or(window.len(), |i| i + 1);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        // `str[strlen(str) - 1] = '\0'`: the newline, or the last byte of a piece that has
        // none (`strlen` would stop at a NUL byte, which mountinfo never holds).
        let piece = &piece[..piece.len() - 1];
        // `mnt_id` starts at -1 and a token is taken as the mount id while it is -1: a piece
        // that starts with `-1` has its next token read as the mount id too.
        let mut id = -1;
        for token in piece.split(|&b| b == b' ') {
            if id == -1 {
                id = xatoi(token).ok_or_else(|| {
                    format!(
                        "a line longer than its 1023-byte buffer is read in pieces, and CRIU's xatoi refuses `{}` as a mount id",
                        escape(token)
                    )
                })?;
                if i64::from(id) != i64::from(mount_id) && id != -1 {
                    break;
                }
            } else if memchr::memmem::find(token, b"pipe_ino=").is_some() {
                return Ok(token.to_vec());
            }
        }
    }
    Err(format!(
        "failed to find autofs mount with mnt_id {mount_id}"
    ))
}

/// `table` with the lines of `mount_id`'s superblock (the mount and its binds, same
/// `major:minor`) as the kernel shows them once the mount is catatonic: `fd=-1` and
/// `pipe_ino=-1` (`autofs_show_options` without a pipe). Their lengths change, and with them
/// where a long line is cut.
fn after_probe(table: &[u8], mount_id: u32) -> Vec<u8> {
    fn field(line: &[u8], n: usize) -> Option<&[u8]> {
        line.split(|&b| b == b' ').nth(n)
    }
    let id = mount_id.to_string();
    let device = table
        .split(|&b| b == b'\n')
        .find(|line| field(line, 0) == Some(id.as_bytes()))
        .and_then(|line| field(line, 2));
    let mut out = Vec::with_capacity(table.len());
    for line in table.split_inclusive(|&b| b == b'\n') {
        let same_superblock = device.is_some() && field(line, 2) == device;
        let Some(dash) = memchr::memmem::find(line, b" - ").filter(|_| same_superblock) else {
            out.extend_from_slice(line);
            continue;
        };
        // The super options are the last field after the separator.
        let options_at = line.iter().rposition(|&b| b == b' ').unwrap_or(dash) + 1;
        out.extend_from_slice(&line[..options_at]);
        let (options, newline) = match line[options_at..].strip_suffix(b"\n") {
            Some(options) => (options, &b"\n"[..]),
            None => (&line[options_at..], &b""[..]),
        };
        let tokens: Vec<Vec<u8>> = options
            .split(|&b| b == b',')
            .map(|t| {
                if t.starts_with(b"fd=") {
                    b"fd=-1".to_vec()
                } else if t.starts_with(b"pipe_ino=") {
                    b"pipe_ino=-1".to_vec()
                } else {
                    t.to_vec()
                }
            })
            .collect();
        out.extend_from_slice(&tokens.join(&b","[..]));
        out.extend_from_slice(newline);
    }
    out
}

/// CRIU's `xatoi`: `strtol` base 10 over the whole token (an optional sign, at least one
/// digit, nothing after), within `int` range.
fn xatoi(token: &[u8]) -> Option<i32> {
    let digits = token
        .strip_prefix(b"-")
        .or(token.strip_prefix(b"+"))
        .unwrap_or(token);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse::<i32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTOFS: &str = "41 22 0:52 / /srv/direct rw,relatime - autofs /etc/auto.direct rw,fd=7,pgrp=1234,timeout=300,minproto=5,maxproto=5,direct,pipe_ino=55555\n";

    fn long_line(id: u32, len: usize) -> String {
        let head = format!("{id} 22 0:60 / /var/lib/x rw - overlay overlay rw,lowerdir=");
        let mut line = head.clone();
        while line.len() < len {
            line.push_str("/var/lib/layers/l:");
        }
        line.truncate(len);
        line.push('\n');
        line
    }

    #[test]
    fn the_mounts_own_line_gives_its_catatonic_options() {
        let table = format!("22 1 259:2 / / rw - ext4 /dev/sda1 rw\n{AUTOFS}");
        assert_eq!(
            revisit(table.as_bytes(), 41).unwrap(),
            b"rw,fd=-1,pgrp=1234,timeout=300,minproto=5,maxproto=5,direct,pipe_ino=-1"
        );
    }

    #[test]
    fn a_line_longer_than_the_buffer_before_the_mount_fails_the_re_read() {
        // 1022 bytes and a newline fit one read; 1023 leave the newline to the next read,
        // whose empty first token xatoi refuses; longer ones leave a piece of the line.
        let fits = format!("{}{AUTOFS}", long_line(30, 1022));
        assert!(revisit(fits.as_bytes(), 41).is_ok());
        let newline_alone = format!("{}{AUTOFS}", long_line(30, 1023));
        let err = revisit(newline_alone.as_bytes(), 41).unwrap_err();
        assert!(err.contains("refuses ``"), "{err}");
        let split = format!("{}{AUTOFS}", long_line(30, 3000));
        let err = revisit(split.as_bytes(), 41).unwrap_err();
        assert!(err.contains("1023-byte buffer"), "{err}");
        // After the mount's line, long lines are never read.
        let after = format!("{AUTOFS}{}", long_line(30, 3000));
        assert!(revisit(after.as_bytes(), 41).is_ok());
    }

    #[test]
    fn a_piece_that_starts_with_a_number_is_read_as_a_mount_id() {
        // The piece after 1023 bytes is `77 …`: a number, another mount, read on.
        let mut line = long_line(30, 1023);
        line.truncate(1023);
        line.push_str("77 rest\n");
        let table = format!("{line}{AUTOFS}");
        assert!(revisit(table.as_bytes(), 41).is_ok());
    }

    #[test]
    fn the_binds_of_the_mounts_superblock_change_length_too() {
        // A bind of the same superblock before the mount, 1022 bytes long with `fd=7` and
        // `pipe_ino=55555`: catatonic, it shrinks, and so still fits one read.
        let head = "30 22 0:52 /sub /srv/b";
        let tail = " rw - autofs /etc/auto.direct rw,fd=7,pgrp=1234,timeout=300,minproto=5,maxproto=5,direct,pipe_ino=55555\n";
        let pad = 1023 - head.len() - tail.len() + 1;
        let bind = format!("{head}{}{tail}", "x".repeat(pad));
        assert_eq!(
            bind.len(),
            1024,
            "1023 bytes and a newline: two reads as it is"
        );
        let table = format!("{bind}{AUTOFS}");
        assert!(revisit(table.as_bytes(), 41).is_ok());
    }

    #[test]
    fn a_piece_starting_with_minus_one_has_its_next_token_read_as_the_mount_id() {
        let mut line = long_line(30, 1023);
        line.truncate(1023);
        line.push_str("-1 rest\n");
        let table = format!("{line}{AUTOFS}");
        let err = revisit(table.as_bytes(), 41).unwrap_err();
        assert!(err.contains("refuses `rest`"), "{err}");
    }

    #[test]
    fn a_table_without_the_mount_is_criu_s_own_error() {
        let err = revisit(b"22 1 259:2 / / rw - ext4 /dev/sda1 rw\n", 41).unwrap_err();
        assert_eq!(err, "failed to find autofs mount with mnt_id 41");
    }

    #[test]
    fn xatoi_takes_a_whole_signed_int() {
        assert_eq!(xatoi(b"41"), Some(41));
        assert_eq!(xatoi(b"-1"), Some(-1));
        assert_eq!(xatoi(b"+7"), Some(7));
        for bad in [&b""[..], b"-", b"4a", b"2147483648", b"lowerdir=/x"] {
            assert_eq!(xatoi(bad), None, "{bad:?}");
        }
    }
}
