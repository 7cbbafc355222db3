//! Digits written without `core::fmt`, for what runs once per request: the
//! trace context's hex IDs, the request ID, the metric labels' status codes and
//! the access log's numbers. One place, so each has one tested writer.

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

#[cfg(test)]
mod tests {
    use super::*;

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
