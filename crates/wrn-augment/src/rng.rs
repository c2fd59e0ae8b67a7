//! Where randomness comes from: a ChaCha8 stream keyed directly by (seed, epoch, sample index) for each
//! sample's random choices, by (seed, epoch) for the shuffle order, and by (seed, epoch, batch) for what
//! a batch shares when a pipeline draws per batch. No thread, clock or call order enters a key, so any
//! number of workers produces the same batches.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random stream of one sample.
pub type SampleRng = ChaCha8Rng;

/// Domain tags keep the sample streams and the shuffle stream apart.
const SAMPLE_DOMAIN: u64 = 0x534d_504c_5752_4e31; // "SMPLWRN1"
const SHUFFLE_DOMAIN: u64 = 0x5348_5546_5752_4e31; // "SHUFWRN1"
const BATCH_DOMAIN: u64 = 0x4254_4348_5752_4e31; // "BTCHWRN1"
const HALF_DOMAIN: u64 = 0x4841_4c46_5752_4e31; // "HALFWRN1"

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

/// What the samples of one batch share when a pipeline draws per batch
/// ([`crate::Draws::PerBatch`]).
#[derive(Debug, Clone)]
pub struct BatchDraw {
    /// The batch's stream: each sample draws its crop offset from a copy of it, so all draw the same.
    pub shared: SampleRng,
    /// Whether this sample is in the flipped half of the batch.
    pub flip: bool,
}

/// The draws of batch `step` of `epoch`, which holds `n` samples, by position in the batch: one shared
/// stream, and exactly ⌊n/2⌋ positions flipped, a uniformly random subset (Torch's
/// `randperm(n):le(n/2)` in the official code's `BatchFlip`).
pub fn batch_draws(seed: u64, epoch: u64, step: u64, n: usize) -> Vec<BatchDraw> {
    let shared = ChaCha8Rng::from_seed(key(seed, epoch, step, BATCH_DOMAIN));
    let mut rank: Vec<usize> = (0..n).collect();
    rank.shuffle(&mut ChaCha8Rng::from_seed(key(seed, epoch, step, HALF_DOMAIN)));
    rank.into_iter().map(|r| BatchDraw { shared: shared.clone(), flip: r < n / 2 }).collect()
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
    fn a_batch_shares_one_stream_and_flips_exactly_half() {
        for n in [1, 2, 7, 128] {
            let draws = batch_draws(3, 1, 5, n);
            assert_eq!(draws.len(), n);
            assert_eq!(draws.iter().filter(|d| d.flip).count(), n / 2, "n = {n}");
            let first = draws[0].shared.clone().next_u64();
            assert!(draws.iter().all(|d| d.shared.clone().next_u64() == first));
        }
        let flips = |s, e, b| batch_draws(s, e, b, 64).iter().map(|d| d.flip).collect::<Vec<_>>();
        assert_eq!(flips(3, 1, 5), flips(3, 1, 5));
        assert_ne!(flips(3, 1, 5), flips(3, 1, 6));
        assert_ne!(flips(3, 1, 5), flips(3, 2, 5));
        assert_ne!(flips(3, 1, 5), flips(4, 1, 5));
        let shared = |b| batch_draws(3, 1, b, 1)[0].shared.clone().next_u64();
        assert_ne!(shared(5), shared(6));
        // Each position is flipped about half the time over many batches.
        let flipped = (0..2000).filter(|&b| batch_draws(9, 0, b, 8)[3].flip).count();
        assert!((850..1150).contains(&flipped), "{flipped}");
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
