//! Gloo collectives between ranks on this machine (threads of one test process, each with its own store
//! connection and process group, over 127.0.0.1), and the store's values.

use std::time::{Duration, Instant};

use tch::{Kind, Tensor};
use wrn_torch_ext::dist::{Group, Reducer, Store};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `f(rank, store, group)` on `world` ranks and returns their results in rank order.
fn ranks<T: Send + 'static>(world: usize, f: fn(usize, &Store, &Group) -> T) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            std::thread::spawn(move || {
                let store = Store::tcp("127.0.0.1", port, rank == 0, world, Duration::from_secs(30)).unwrap();
                let group = Group::gloo(&store, rank, world, Duration::from_secs(30), Some("127.0.0.1")).unwrap();
                assert_eq!((group.rank(), group.size()), (rank, world));
                f(rank, &store, &group)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_sums_and_broadcast_copies_over_three_ranks() {
    let out = ranks(3, |rank, _, group| {
        // 1,000,003 values: more than one of Gloo's chunks, and not a multiple of the rank count.
        let n = 1_000_003;
        let mut t = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) * (rank as f64 + 1.0);
        group.all_reduce_sum(&mut t).unwrap();
        let mut b = Tensor::from_slice(&[rank as f64, 10.0 * rank as f64]);
        group.broadcast(&mut b, 2).unwrap();
        group.barrier().unwrap();
        (Vec::<f32>::try_from(t.narrow(0, n - 3, 3)).unwrap(), Vec::<f64>::try_from(b).unwrap())
    });
    for (sum, broadcast) in out {
        // (1 + 2 + 3) · i for the last three indices.
        assert_eq!(sum, [6.0 * 1_000_000.0, 6.0 * 1_000_001.0, 6.0 * 1_000_002.0]);
        assert_eq!(broadcast, [2.0, 20.0]);
    }
}

#[test]
fn the_store_shares_values_and_counters() {
    let out = ranks(2, |rank, store, group| {
        store.set(&format!("hello/{rank}"), format!("from {rank}").as_bytes()).unwrap();
        let other = store.get(&format!("hello/{}", 1 - rank)).unwrap();
        let count = store.add("count", 5).unwrap();
        group.barrier().unwrap();
        (String::from_utf8(other).unwrap(), count, store.contains("count").unwrap(), store.contains("nothing").unwrap())
    });
    assert_eq!(out[0].0, "from 1");
    assert_eq!(out[1].0, "from 0");
    let mut counts = [out[0].1, out[1].1];
    counts.sort();
    assert_eq!(counts, [5, 10]);
    assert!(out.iter().all(|o| o.2 && !o.3));
}

#[test]
fn a_collective_rank_that_never_comes_fails_within_the_timeout() {
    let port = free_port();
    let other = std::thread::spawn(move || {
        let store = Store::tcp("127.0.0.1", port, false, 2, Duration::from_secs(30)).unwrap();
        let group = Group::gloo(&store, 1, 2, Duration::from_secs(2), Some("127.0.0.1")).unwrap();
        // Rank 1 joins the group but never the all-reduce; it leaves once rank 0 has failed.
        store.get("done").unwrap();
        drop(group);
    });
    let store = Store::tcp("127.0.0.1", port, true, 2, Duration::from_secs(30)).unwrap();
    let group = Group::gloo(&store, 0, 2, Duration::from_secs(2), Some("127.0.0.1")).unwrap();
    let started = Instant::now();
    let mut t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
    let err = group.all_reduce_sum(&mut t).unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(20), "{waited:?}: {err}");
    assert!(err.to_string().to_lowercase().contains("timed out"), "{err}");
    store.set("done", b"1").unwrap();
    other.join().unwrap();
}

#[test]
fn collectives_refuse_tensors_they_cannot_take() {
    let out = ranks(1, |_, _, group| {
        let mut strided = Tensor::ones([4, 4], (Kind::Float, tch::Device::Cpu)).transpose(0, 1);
        let sum = group.all_reduce_sum(&mut strided).unwrap_err().to_string();
        let broadcast = group.broadcast(&mut strided, 0).unwrap_err().to_string();
        format!("{sum} | {broadcast}")
    });
    // The sum goes through the group's dispatcher (Gloo for the CPU, NCCL for a GPU once attached); the
    // broadcast is Gloo's alone.
    assert!(out[0].starts_with("collectives take contiguous tensors (got [1, 4] strides) | "), "{}", out[0]);
    assert!(out[0].contains("Gloo collectives here take contiguous CPU tensors"), "{}", out[0]);
}

/// A rank's parameters for the reducer tests: four tensors of 3, 40, 5 and 200 values, the same on every
/// rank, and its loss on its own data: sum over tensors of (rank + 1 + step)·Σ p·index, weighted by `share`.
fn params() -> Vec<Tensor> {
    [3i64, 40, 5, 200]
        .iter()
        .map(|&n| (Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) / 7.0).set_requires_grad(true))
        .collect()
}

fn loss(params: &[Tensor], rank: usize, step: usize, share: f64) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
    for p in params {
        let index = Tensor::arange(p.size()[0], (Kind::Float, tch::Device::Cpu));
        total += (p * &index * (rank + 1 + step) as f64).sum(Kind::Float);
    }
    total * share
}

#[test]
fn the_reducer_sums_weighted_gradients_over_three_ranks_in_several_buckets() {
    let out = ranks(3, |rank, _, group| {
        let params = params();
        // Tiny buckets (bytes): 16 for the first to fill, 200 after, so the four tensors make several.
        let mut reducer = Reducer::new(group, &params, 16, 200).unwrap();
        let shares = [0.5, 0.25, 0.25];
        let mut grads = Vec::new();
        for step in 0..3 {
            for p in &params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            reducer.backward(&loss(&params, rank, step, shares[rank])).unwrap();
            grads.push(params.iter().map(|p| Vec::<f32>::try_from(p.grad()).unwrap()).collect::<Vec<_>>());
        }
        (grads, reducer.bucket_bytes().unwrap())
    });
    for (grads, buckets) in &out {
        for (step, per_param) in grads.iter().enumerate() {
            // d/dp_i of Σ_r share_r (r + 1 + step) p_i i = i · Σ_r share_r (r + 1 + step).
            let factor: f64 = [0.5, 0.25, 0.25].iter().enumerate().map(|(r, s)| s * (r + 1 + step) as f64).sum();
            for g in per_param {
                let want: Vec<f32> = (0..g.len()).map(|i| (i as f64 * factor) as f32).collect();
                assert_eq!(g, &want, "step {step}");
            }
        }
        // 800 + 20 + 160 + 12 bytes of f32 gradients in more than one bucket, none lost.
        assert!(buckets.len() > 1, "{buckets:?}");
        assert_eq!(buckets.iter().sum::<i64>(), 4 * (3 + 40 + 5 + 200));
    }
}

#[test]
fn a_reducer_rank_that_never_comes_is_an_error_not_a_panic() {
    let port = free_port();
    let other = std::thread::spawn(move || {
        let store = Store::tcp("127.0.0.1", port, false, 2, Duration::from_secs(30)).unwrap();
        let group = Group::gloo(&store, 1, 2, Duration::from_secs(2), Some("127.0.0.1")).unwrap();
        store.get("done").unwrap();
        drop(group);
    });
    let store = Store::tcp("127.0.0.1", port, true, 2, Duration::from_secs(30)).unwrap();
    let group = Group::gloo(&store, 0, 2, Duration::from_secs(2), Some("127.0.0.1")).unwrap();
    let params = params();
    let mut reducer = Reducer::new(&group, &params, 1 << 20, 25 << 20).unwrap();
    let started = Instant::now();
    let err = reducer.backward(&loss(&params, 0, 0, 1.0)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30), "failed after {:?}", started.elapsed());
    assert!(!err.0.is_empty());
    assert!(err.0.contains("Timed out"), "{}", err.0);
    store.set("done", b"1").unwrap();
    drop(reducer);
    drop(group);
    other.join().unwrap();
}
