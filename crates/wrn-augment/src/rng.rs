//! Where randomness comes from: a ChaCha8 stream keyed directly by (seed, epoch, sample index) for each
//! sample's random choices, and by (seed, epoch) for the shuffle order. No thread, clock or call order
//! enters a key, so any number of workers produces the same batches.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random stream of one sample.
pub type SampleRng = ChaCha8Rng;

/// Domain tags keep the sample streams and the shuffle stream apart.
const SAMPLE_DOMAIN: u64 = 0x534d_504c_5752_4e31; // "SMPLWRN1"
const SHUFFLE_DOMAIN: u64 = 0x5348_5546_5752_4e31; // "SHUFWRN1"

fn key(a: u64, b: u64, c: u64, d: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, v) in [a, b, c, d].into_iter().enumerate() {
        k[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    k
}

/// The stream every random choice for sample `index` of `epoch` is drawn from.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> SampleRng {
    ChaCha8Rng::from_seed(key(seed, epoch, index, SAMPLE_DOMAIN))
}

/// The order in which the first `n` samples are visited in `epoch`: a uniform permutation that depends only
/// on (seed, epoch), or `0..n` when `shuffle` is off.
pub fn epoch_order(seed: u64, epoch: u64, n: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::from_seed(key(seed, epoch, 0, SHUFFLE_DOMAIN));
        order.shuffle(&mut rng);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn streams_depend_on_every_key_part_and_nothing_else() {
        let draw = |s, e, i| sample_rng(s, e, i).next_u64();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(0, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 0, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
    }

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let a = epoch_order(7, 0, 1000, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(7, 0, 1000, true));
        assert_ne!(a, epoch_order(7, 1, 1000, true));
        assert_ne!(a, epoch_order(8, 0, 1000, true));
        assert_eq!(epoch_order(7, 0, 5, false), vec![0, 1, 2, 3, 4]);
    }
}
