//! rustc's FxHash: a multiply per 8 bytes, for the per-request lookups of the
//! metrics (label sets, series memo). SipHash over a request's 18 labels took
//! 5 % of its instructions (callgrind). Not collision-resistant: every map
//! using it compares its keys on a hit, so a collision costs a comparison,
//! never a wrong answer.

/// The hasher.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

/// [`FxHasher`] for `HashMap`s.
pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(<[u8; 8]>::try_from(w).unwrap_or_default()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
