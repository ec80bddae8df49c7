//! Bytes as text and compared: lowercase hex (keys, MACs, ids) and equality in
//! constant time (secrets, tokens), one definition for every caller.

/// Lowercase hex, two digits a byte.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes of hex text (either case); `None` for an odd length or a
/// character that is not a hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a sign (`+1`).
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Whether two byte strings are equal, taking the same time whichever byte
/// differs (a length difference is not hidden: the lengths here are public).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_back_what_it_writes() {
        let bytes = [0x00, 0x0f, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "000fabff");
        assert_eq!(from_hex("000fabff").unwrap(), bytes);
        assert_eq!(from_hex("000FABFF").unwrap(), bytes);
        for bad in ["0", "zz", "0g", "+1", "é1"] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
