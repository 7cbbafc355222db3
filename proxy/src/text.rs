//! Digits without `core::fmt` or `from_str_radix`, for what runs once per
//! request: the trace context's hex IDs (written and read), the request ID, the
//! metric labels' status codes and the access log's numbers. One place, so each
//! has one tested writer (and reader).

/// Lower-case hex digits.
pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `n`'s low `out.len()` nibbles (at most 32), zero-padded, into `out`.
/// Two digits per byte of `n`: a shift of a `u128` per digit costs several times more.
pub(crate) fn hex_into(out: &mut [u8], n: u128) {
    let mut all = [0u8; 32];
    for (pair, byte) in all.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    let len = out.len().min(32);
    out[..len].copy_from_slice(&all[32 - len..]);
}

/// `n` in decimal, written into the end of `buf`: two digits at a time from a table,
/// as `itoa` does.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// The number `s` spells in hex (either case), when it is 1 to 32 hex digits and nothing
/// else. Sixteen digits at a time into a `u64`: `u128::from_str_radix` costs several
/// times more (a trace context's two IDs took 1.1k instructions per request).
pub(crate) fn parse_hex(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let (high, low) = s.split_at(s.len().saturating_sub(16));
    Some(u128::from(hex_word(high)?) << 64 | u128::from(hex_word(low)?))
}

/// Up to 16 hex digits (none is zero).
fn hex_word(digits: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        n = n << 4 | u64::from(d);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read as the standard library reads hex, for every length and for every byte that
    /// is not a digit (and `+`, which `from_str_radix` alone would take) in every place.
    #[test]
    fn hex_reads_as_the_standard_library_reads_it() {
        let std = |s: &str| {
            (!s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u128::from_str_radix(s, 16).ok())
                .flatten()
        };
        let digits = "4bF92f3577b34da6A3ce929d0e0e4736";
        for len in 0..=33 {
            let s: String = digits.chars().cycle().take(len).collect();
            assert_eq!(parse_hex(s.as_bytes()), std(&s), "{s:?}");
            for at in 0..len {
                for bad in (0u8..=255).filter(|b| !b.is_ascii_hexdigit()) {
                    let mut b = s.clone().into_bytes();
                    b[at] = bad;
                    assert_eq!(parse_hex(&b), None, "{b:?}");
                }
            }
        }
        assert_eq!(parse_hex(b"ffffffffffffffffffffffffffffffff"), Some(u128::MAX));
        assert_eq!(parse_hex(b"0000000000000001"), Some(1));
    }

    #[test]
    fn decimals_read_as_the_formatter_writes_them() {
        let mut buf = [0u8; 20];
        for n in (0..100_000).step_by(7).chain([9, 10, 99, 100, 101, 999, 1000, u64::MAX]) {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }

    #[test]
    fn hex_is_the_low_nibbles_zero_padded() {
        for n in [0u128, 1, 0x1f, 0xab << 120 | 0x1f, u128::MAX, 0x0102_0304_0506_0708] {
            for len in [1usize, 2, 15, 16, 31, 32] {
                let mut out = vec![0u8; len];
                hex_into(&mut out, n);
                let full = format!("{n:032x}");
                assert_eq!(std::str::from_utf8(&out).unwrap(), &full[32 - len..], "{n:#x} in {len}");
            }
        }
    }
}
