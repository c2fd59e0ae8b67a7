//! One run over several processes (ranks), as PyTorch's `DistributedDataParallel` runs it: who this
//! process is ([`World`], from `wrn train --nproc`, torchrun's or Slurm's environment) and what the ranks
//! share ([`Dist`]: c10d's TCP store, served by rank 0, and a Gloo process group for the collectives).
//!
//! Every rank beats a counter in the store each second; when a collective fails (a peer's connection
//! closed, or the group's timeout passed), [`Dist::explain`] names the ranks whose counters stopped, or rank
//! 0 when the store itself is gone, so that the surviving ranks exit saying which rank failed. Rank 0,
//! having explained a failure, closes its process group (so ranks still waiting on it in a collective fail
//! too) and keeps serving the store, beating, until the other ranks have stopped beating: their own
//! readings then never lose the store halfway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::environment::Ranks;
use tch::Tensor;
use wrn_torch_ext::dist::{DistError, Group, Reducer, Store, BUCKET_BYTES, FIRST_BUCKET_BYTES};

/// A failure of the ranks' connection or collectives, explained.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("{0}")]
    Env(String),
    #[error(
        "rank {rank} of {size}: cannot reach the other ranks through {addr}:{port} ({detail}); check that rank 0 \
         runs and that MASTER_ADDR/MASTER_PORT name a reachable address of its machine"
    )]
    Connect { rank: usize, size: usize, addr: String, port: u16, detail: String },
    #[error("rank {rank} of {size}: {what} failed: {culprit} ({detail})")]
    Collective { rank: usize, size: usize, what: String, culprit: String, detail: String },
    /// The ranks were started differently ([`crate::agree`]).
    #[error("rank {rank} of {size}: {what}")]
    Disagreement { rank: usize, size: usize, what: String },
    #[error("rank {rank} of {size}: NCCL, for gradients on the GPU: {detail}")]
    Nccl { rank: usize, size: usize, detail: String },
}

/// This process's place among the ranks of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank among those of its machine (its GPU there).
    pub local_rank: usize,
    /// Where rank 0 serves the store.
    pub master_addr: String,
    pub master_port: u16,
}

/// The default port of the store under Slurm without `MASTER_PORT`: 20000 + the job id modulo 20000, so
/// that two jobs sharing a node rarely collide.
fn slurm_port(job: Option<&str>) -> u16 {
    let id: u64 = job.and_then(|j| j.parse().ok()).unwrap_or(0);
    20_000 + (id % 20_000) as u16
}

/// The first host of a Slurm host list (`node[03-05,9],gpu1` is `node03`).
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find(',').unwrap_or(list.len());
    let bracket = list.find('[');
    match bracket {
        Some(open) if open < end => {
            let close = list[open..].find(']')? + open;
            let first = list[open + 1..close].split([',', '-']).next()?;
            // What follows the brackets up to the next host is part of every name (`gpu[01-02]-ib`).
            let rest = &list[close + 1..];
            let suffix = &rest[..rest.find(',').unwrap_or(rest.len())];
            Some(format!("{}{}{}", &list[..open], first, suffix))
        }
        _ => (end > 0).then(|| list[..end].to_string()),
    }
}

impl World {
    /// The world this process was started in: torchrun's `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/
    /// `MASTER_PORT` (as `wrn train --nproc` sets them), else the task of an `srun` step of several tasks
    /// (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, the step's first host, `MASTER_PORT` or a
    /// port from the job id). `None` for a single process.
    pub fn from_env() -> Result<Option<World>, WorldError> {
        World::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<World>, WorldError> {
        let number = |name: &str| -> Result<Option<usize>, WorldError> {
            var(name)
                .map(|v| v.trim().parse::<usize>().map_err(|_| WorldError::Env(format!("{name}={v} is not a number"))))
                .transpose()
        };
        let port = |default: Option<u16>| -> Result<u16, WorldError> {
            match var("MASTER_PORT") {
                Some(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&p: &u16| p > 0)
                    .ok_or_else(|| WorldError::Env(format!("MASTER_PORT={v} is not a port (1 to 65535)"))),
                None => default.ok_or_else(|| WorldError::Env("WORLD_SIZE is set, MASTER_PORT is not".into())),
            }
        };
        let world = if let Some(size) = number("WORLD_SIZE")? {
            let rank = number("RANK")?.ok_or_else(|| WorldError::Env("WORLD_SIZE is set, RANK is not".into()))?;
            let local_rank = number("LOCAL_RANK")?.unwrap_or(rank);
            let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
            // A world of one is a single process, which needs no store.
            World { rank, size, local_rank, master_addr, master_port: if size > 1 { port(None)? } else { 0 } }
        } else if var("RANK").is_some() {
            return Err(WorldError::Env(
                "RANK is set, WORLD_SIZE is not: set both for a rank of a distributed run (torchrun does), or neither"
                    .into(),
            ));
        } else if let Some(size) = number("SLURM_STEP_NUM_TASKS")? {
            if size <= 1 {
                return Ok(None);
            }
            let rank = number("SLURM_PROCID")?.unwrap_or(0);
            let local_rank = number("SLURM_LOCALID")?.unwrap_or(0);
            let hosts = var("SLURM_STEP_NODELIST").or_else(|| var("SLURM_JOB_NODELIST"));
            let master_addr = match var("MASTER_ADDR") {
                Some(addr) => addr,
                None => hosts.as_deref().and_then(first_host).ok_or_else(|| {
                    WorldError::Env("an srun step of several tasks without SLURM_STEP_NODELIST or MASTER_ADDR".into())
                })?,
            };
            let master_port = port(Some(slurm_port(var("SLURM_JOB_ID").as_deref())))?;
            World { rank, size, local_rank, master_addr, master_port }
        } else {
            return Ok(None);
        };
        if world.size == 0 || world.rank >= world.size {
            return Err(WorldError::Env(format!(
                "rank {} of a world of {} ranks does not exist",
                world.rank, world.size
            )));
        }
        Ok((world.size > 1).then_some(world))
    }

    /// Whether every rank runs on this machine's loopback (the store's address is local).
    fn loopback(&self) -> bool {
        self.master_addr == "localhost" || self.master_addr.starts_with("127.") || self.master_addr == "::1"
    }
}

/// The GPU of the rank with `local_rank` among those of its machine, which sees `count` GPUs: its own
/// when it sees several (one rank per GPU, as `wrn train --nproc` and torchrun start them), the only one
/// when it sees one (a Slurm task or a user giving each rank its GPU through `CUDA_VISIBLE_DEVICES`).
pub fn rank_gpu(local_rank: usize, count: usize) -> Result<usize, WorldError> {
    match count {
        0 => Err(WorldError::Env("a rank on CUDA sees no GPU".into())),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(WorldError::Env(format!(
            "local rank {local_rank} sees {n} GPUs (0 to {}): start at most one rank per GPU on a machine, or give \
             each rank one GPU through CUDA_VISIBLE_DEVICES",
            n - 1
        ))),
    }
}

/// How long a collective may wait for the other ranks: `WRN_DIST_TIMEOUT` seconds, else 10 minutes
/// (rank 0 writing a large checkpoint keeps the others waiting at the next collective).
pub fn timeout() -> Result<Duration, WorldError> {
    match std::env::var("WRN_DIST_TIMEOUT") {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| WorldError::Env(format!("WRN_DIST_TIMEOUT={v} is not a number of seconds"))),
        Err(_) => Ok(Duration::from_secs(600)),
    }
}

/// The ranks' connection: the store, the process group and this rank's heartbeat.
pub struct Dist {
    world: World,
    store: Store,
    /// `None` once dropped, before rank 0 lingers (see [`Drop`]).
    group: Option<Group>,
    /// The group's collective backends: `gloo`, or `gloo+nccl` when CUDA tensors go over NCCL.
    backend: &'static str,
    beating: Arc<AtomicBool>,
    heart: Option<std::thread::JoinHandle<()>>,
    /// Whether a collective failed ([`Dist::explain`] ran).
    failed: AtomicBool,
}

const BEAT: Duration = Duration::from_secs(1);

/// The store key of `rank`'s heartbeat counter.
fn beat_key(rank: usize) -> String {
    format!("wrn/beat/{rank}")
}

impl Dist {
    /// Connects to the other ranks (rank 0 serves the store and waits for them all), waiting at most
    /// `timeout` for them and in every later collective. With `nccl`, collectives on CUDA tensors run over
    /// NCCL (from the CUDA part of the extension, [`crate::runtime::cuda_extension`]), those on CPU tensors
    /// over Gloo.
    pub fn connect(world: World, timeout: Duration, nccl: bool) -> Result<Dist, WorldError> {
        let connect = |detail: DistError| WorldError::Connect {
            rank: world.rank,
            size: world.size,
            addr: world.master_addr.clone(),
            port: world.master_port,
            detail: detail.0,
        };
        let (addr, port) = (world.master_addr.as_str(), world.master_port);
        // Under torchrun (its default rendezvous) the launcher's agent already serves the store on
        // MASTER_PORT and says so: rank 0 joins it as every other rank does, as PyTorch's workers do.
        let agent_store = std::env::var("TORCHELASTIC_USE_AGENT_STORE").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let store = Store::tcp(addr, port, world.rank == 0 && !agent_store, world.size, timeout).map_err(connect)?;
        let bind = world.loopback().then_some("127.0.0.1");
        let group = Group::gloo(&store, world.rank, world.size, timeout, bind).map_err(connect)?;
        let nccl_error = |detail: String| WorldError::Nccl { rank: world.rank, size: world.size, detail };
        let backend = if nccl {
            let ext = crate::runtime::cuda_extension().map_err(nccl_error)?;
            ext.attach_nccl(&group, &store, timeout).map_err(|e| nccl_error(e.0))?;
            "gloo+nccl"
        } else {
            "gloo"
        };
        let beats = Store::tcp(addr, port, false, world.size, timeout).map_err(connect)?;
        let beating = Arc::new(AtomicBool::new(true));
        let (alive, key) = (beating.clone(), beat_key(world.rank));
        let heart = std::thread::Builder::new()
            .name("wrn-heartbeat".into())
            .spawn(move || {
                while alive.load(Ordering::SeqCst) && beats.add(&key, 1).is_ok() {
                    std::thread::sleep(BEAT);
                }
            })
            .expect("spawning the heartbeat thread");
        let host = crate::environment::host_name().unwrap_or_else(|| "unknown".into());
        store.set(&format!("wrn/host/{}", world.rank), host.as_bytes()).map_err(connect)?;
        Ok(Dist {
            world,
            store,
            group: Some(group),
            backend,
            beating,
            heart: Some(heart),
            failed: AtomicBool::new(false),
        })
    }

    /// The processes of this run, for its `environment.json`: their number, backend and hosts (each
    /// rank's, which every rank posts to the store on connecting).
    pub fn ranks(&self) -> Result<Ranks, WorldError> {
        let hosts = (0..self.world.size)
            .map(|r| {
                let host = self
                    .store
                    .get(&format!("wrn/host/{r}"))
                    .map_err(|e| self.explain("reading the ranks' hosts", e))?;
                Ok(String::from_utf8_lossy(&host).into_owned())
            })
            .collect::<Result<Vec<_>, WorldError>>()?;
        Ok(Ranks { size: self.world.size, backend: self.backend.into(), hosts })
    }

    fn group(&self) -> &Group {
        self.group.as_ref().expect("the process group lives as long as the connection")
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn rank(&self) -> usize {
        self.world.rank
    }

    pub fn size(&self) -> usize {
        self.world.size
    }

    /// Every rank's `value` under `key`, in rank order: this rank's is posted to the store (under
    /// `wrn/gather/`, apart from the connection's own keys), and the others' read as they post theirs (each
    /// waited for up to the ranks' timeout).
    pub fn gather(&self, key: &str, value: &[u8]) -> Result<Vec<Vec<u8>>, WorldError> {
        let at = |rank: usize| format!("wrn/gather/{key}/{rank}");
        let what = format!("posting {key} to the other ranks");
        self.store.set(&at(self.world.rank), value).map_err(|e| self.explain(&what, e))?;
        (0..self.world.size)
            .map(|r| self.store.get(&at(r)).map_err(|e| self.explain(&format!("reading rank {r}'s {key}"), e)))
            .collect()
    }

    /// Sums a contiguous tensor over the ranks, in place: over Gloo on the CPU, over NCCL on a GPU (the
    /// GPU's current stream then waits for the sum; the host does not).
    pub fn all_reduce_sum(&self, tensor: &mut Tensor, what: &str) -> Result<(), WorldError> {
        self.group().all_reduce_sum(tensor).map_err(|e| self.explain(what, e))
    }

    /// Copies rank 0's contiguous CPU tensor to every rank.
    pub fn broadcast(&self, tensor: &mut Tensor, what: &str) -> Result<(), WorldError> {
        self.group().broadcast(tensor, 0).map_err(|e| self.explain(what, e))
    }

    pub fn barrier(&self, what: &str) -> Result<(), WorldError> {
        self.group().barrier().map_err(|e| self.explain(what, e))
    }

    /// DDP's gradient all-reduce over `params` (the same tensors in the same order on every rank), in
    /// DDP's bucket sizes.
    pub fn reducer(&self, params: &[Tensor]) -> Result<Reducer, WorldError> {
        Reducer::new(self.group(), params, FIRST_BUCKET_BYTES, BUCKET_BYTES)
            .map_err(|e| self.explain("setting up the gradient all-reduce", e))
    }

    /// The backward pass from `loss` with `reducer`: every parameter's gradient summed over the ranks.
    pub fn backward(&self, reducer: &mut Reducer, loss: &Tensor) -> Result<(), WorldError> {
        reducer.backward(loss).map_err(|e| self.explain("the gradients' all-reduce", e))
    }

    /// The error of a failed collective, naming the ranks whose heartbeat stopped (watched for three
    /// beats), or rank 0 when the store it serves is gone.
    pub fn explain(&self, what: &str, error: DistError) -> WorldError {
        self.failed.store(true, Ordering::SeqCst);
        // Two readings of every rank's counter, three beats apart; the store not answering either time
        // means rank 0, which serves it, is gone.
        let readings = self.beats().and_then(|before| {
            std::thread::sleep(3 * BEAT);
            self.beats().map(|after| (before, after))
        });
        let culprit = match readings {
            Err(_) => format!(
                "rank 0 is gone (its store at {}:{} does not answer)",
                self.world.master_addr, self.world.master_port
            ),
            Ok((before, after)) => {
                let stopped: Vec<String> = (0..self.world.size)
                    .filter(|&r| r != self.world.rank && after[r] == before[r])
                    .map(|r| format!("rank {r}"))
                    .collect();
                if stopped.is_empty() {
                    "every rank still runs: one of them is stuck or took another path".into()
                } else {
                    format!("{} stopped (no heartbeat for {} s)", stopped.join(", "), 3 * BEAT.as_secs())
                }
            }
        };
        WorldError::Collective {
            rank: self.world.rank,
            size: self.world.size,
            what: what.into(),
            culprit,
            detail: error.0,
        }
    }

    /// Every rank's heartbeat counter, read from the store.
    fn beats(&self) -> Result<Vec<i64>, DistError> {
        (0..self.world.size).map(|r| self.store.add(&beat_key(r), 0)).collect()
    }

    /// Rank 0 after a failure: serves the store until every other rank's heartbeat has stood still for two
    /// beats (they have finished explaining and left), for at most twelve beats.
    fn serve_until_the_others_leave(&self) {
        let read = || self.beats().ok().map(|counts| counts[1..].to_vec());
        let (mut last, mut still) = (read(), 0);
        for _ in 0..12 {
            std::thread::sleep(BEAT);
            let now = read();
            still = if now == last { still + 1 } else { 0 };
            if still >= 2 {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        // Closing the group first ends the collectives other ranks may still wait in on this one.
        drop(self.group.take());
        if self.world.rank == 0 && self.failed.load(Ordering::SeqCst) {
            self.serve_until_the_others_leave();
        }
        self.beating.store(false, Ordering::SeqCst);
        if let Some(heart) = self.heart.take() {
            let _ = heart.join();
        }
    }
}

/// The gradient all-reduce of a network, timed over Gloo ([`time_all_reduce`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllReduceTiming {
    pub ranks: usize,
    /// The bytes each rank all-reduces per step: every trainable parameter's gradient in f32.
    pub bytes_per_step: u64,
    /// The median and fastest of the timed all-reduces, in milliseconds.
    pub median_ms: f64,
    pub min_ms: f64,
    /// The ring all-reduce's bus bandwidth at the median: 2(n − 1)/n × bytes / time, in GB/s (NCCL's
    /// `busbw`, comparable across rank counts).
    pub bus_gb_per_second: f64,
    pub rounds: usize,
}

/// Times `rounds` all-reduces of `elements` f32 values (after one warm-up) over `ranks` Gloo ranks of this
/// machine over 127.0.0.1 (threads of this process, each with its own store connection and group: the
/// collective is the one training runs; its ranks only share the cores here).
pub fn time_all_reduce(elements: i64, ranks: usize, rounds: usize) -> Result<AllReduceTiming, WorldError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| WorldError::Env(format!("no free port on 127.0.0.1: {e}")))?
        .port();
    let rounds = rounds.max(1);
    let timeout = Duration::from_secs(120);
    let handles: Vec<_> = (0..ranks)
        .map(|rank| {
            std::thread::spawn(move || -> Result<Vec<f64>, WorldError> {
                let world =
                    World { rank, size: ranks, local_rank: rank, master_addr: "127.0.0.1".into(), master_port: port };
                let dist = Dist::connect(world, timeout, false)?;
                let mut grads = Tensor::ones([elements], (tch::Kind::Float, tch::Device::Cpu));
                let mut times = Vec::with_capacity(rounds);
                for round in 0..=rounds {
                    dist.barrier("the benchmark's barrier")?;
                    let started = std::time::Instant::now();
                    dist.all_reduce_sum(&mut grads, "the benchmark's all-reduce")?;
                    if round > 0 {
                        times.push(started.elapsed().as_secs_f64() * 1e3);
                    }
                }
                Ok(times)
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().map_err(|_| WorldError::Env("a benchmark rank panicked".into()))??);
    }
    // A collective ends when its slowest rank does: each round's time is the longest over the ranks.
    let mut times: Vec<f64> = (0..rounds).map(|i| results.iter().map(|r| r[i]).fold(0.0, f64::max)).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let bytes = elements as u64 * 4;
    let bus = 2.0 * (ranks as f64 - 1.0) / ranks as f64 * bytes as f64 / (median / 1e3) / 1e9;
    Ok(AllReduceTiming {
        ranks,
        bytes_per_step: bytes,
        median_ms: median,
        min_ms: times[0],
        bus_gb_per_second: bus,
        rounds,
    })
}

/// How `wrn train --nproc N` starts its ranks on this machine.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program each rank runs (this `wrn`) and its arguments (the same `wrn train` without `--nproc`).
    pub program: std::path::PathBuf,
    pub args: Vec<std::ffi::OsString>,
    pub ranks: usize,
}

/// How the ranks of a [`Launch`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// Each rank's exit code (`None`: ended by a signal), in rank order.
    pub codes: Vec<Option<i32>>,
    /// The first rank that failed, if any.
    pub first_failure: Option<usize>,
}

/// After the first rank fails, how long the others get to notice and exit by themselves (naming it)
/// before they are killed.
const GRACE: Duration = Duration::from_secs(60);

/// Starts `launch.ranks` processes on this machine as torchrun would (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT` unless one is set), each of which takes
/// its share of the cores by `LOCAL_WORLD_SIZE` (`runtime::rank_share`), and waits for them.
/// While `stop` is set (SIGINT/SIGTERM to the launcher) every rank is sent SIGTERM once, so they
/// checkpoint and stop together. When a rank fails, the others get [`GRACE`] to exit by themselves.
pub fn launch_local(launch: &Launch, stop: &AtomicBool) -> Result<Launched, WorldError> {
    let n = launch.ranks;
    let port = match std::env::var("MASTER_PORT") {
        Ok(p) => p,
        Err(_) => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| WorldError::Env(format!("no free port on 127.0.0.1 for the ranks' store: {e}")))?
            .port()
            .to_string(),
    };
    let mut children = Vec::with_capacity(n);
    for rank in 0..n {
        let mut command = std::process::Command::new(&launch.program);
        // Each rank in its own process group, so a terminal's Ctrl-C reaches the launcher alone, which
        // passes one SIGTERM on; a rank whose launcher dies is sent SIGTERM.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // SAFETY: prctl is async-signal-safe; the closure touches nothing else between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .args(&launch.args)
            .env("WORLD_SIZE", n.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env(crate::runtime::LOCAL_WORLD_SIZE_ENV, n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(WorldError::Env(format!("cannot start rank {rank} ({}): {e}", launch.program.display())));
            }
        }
    }
    let mut codes: Vec<Option<Option<i32>>> = vec![None; n];
    let (mut first_failure, mut failed_at, mut signalled) = (None, None::<std::time::Instant>, false);
    while codes.iter().any(Option::is_none) {
        if stop.load(Ordering::SeqCst) && !signalled {
            signalled = true;
            for (child, code) in children.iter().zip(&codes) {
                if code.is_none() {
                    // SAFETY: kill(2) on a child process we started and have not reaped.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                }
            }
        }
        for (rank, child) in children.iter_mut().enumerate() {
            if codes[rank].is_some() {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                codes[rank] = Some(status.code());
                if !status.success() && first_failure.is_none() {
                    first_failure = Some(rank);
                    failed_at = Some(std::time::Instant::now());
                }
            }
        }
        if failed_at.is_some_and(|at| at.elapsed() > GRACE) {
            for (child, code) in children.iter_mut().zip(&mut codes) {
                if code.is_none() {
                    let _ = child.kill();
                    *code = Some(child.wait().ok().and_then(|s| s.code()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Launched { codes: codes.into_iter().map(Option::flatten).collect(), first_failure })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(vars: &[(&str, &str)]) -> Result<Option<World>, WorldError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        World::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn each_rank_takes_its_own_gpu_or_the_only_one_it_sees() {
        assert_eq!(rank_gpu(0, 8).unwrap(), 0);
        assert_eq!(rank_gpu(5, 8).unwrap(), 5);
        // A Slurm task bound to one GPU sees that one as GPU 0.
        assert_eq!(rank_gpu(3, 1).unwrap(), 0);
        let err = rank_gpu(2, 2).unwrap_err().to_string();
        assert!(err.contains("local rank 2 sees 2 GPUs") && err.contains("CUDA_VISIBLE_DEVICES"), "{err}");
        assert!(rank_gpu(0, 0).is_err());
    }

    #[test]
    fn torchrun_and_slurm_environments_name_the_rank_and_rank_0() {
        assert_eq!(world(&[]).unwrap(), None);
        assert_eq!(world(&[("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_PORT", "1")]).unwrap(), None);
        assert_eq!(world(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None, "one process needs no port");
        let w = world(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "29500"),
        ]);
        assert_eq!(
            w.unwrap().unwrap(),
            World { rank: 3, size: 4, local_rank: 1, master_addr: "n1".into(), master_port: 29500 }
        );
        let s = world(&[
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NODELIST", "gpu[07-10]"),
            ("SLURM_JOB_ID", "123456"),
        ]);
        assert_eq!(
            s.unwrap().unwrap(),
            World { rank: 5, size: 8, local_rank: 1, master_addr: "gpu07".into(), master_port: 20_000 + 3456 }
        );
        // A batch script (no srun step) or a step of one task is a single process.
        assert_eq!(world(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")]).unwrap(), None);
        assert_eq!(world(&[("SLURM_STEP_NUM_TASKS", "1"), ("SLURM_PROCID", "0")]).unwrap(), None);
        for (vars, says) in [
            (&[("WORLD_SIZE", "2"), ("MASTER_PORT", "1")][..], "RANK is not"),
            (&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_PORT", "1")][..], "rank 2 of a world of 2"),
            (&[("WORLD_SIZE", "two")][..], "WORLD_SIZE=two"),
            (&[("WORLD_SIZE", "2"), ("RANK", "0")][..], "MASTER_PORT is not"),
            (&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "0")][..], "MASTER_PORT=0 is not a port"),
            (&[("RANK", "1"), ("MASTER_PORT", "29500")][..], "RANK is set, WORLD_SIZE is not"),
        ] {
            let err = world(vars).unwrap_err().to_string();
            assert!(err.contains(says), "{vars:?}: {err}");
        }
    }

    #[test]
    fn the_all_reduce_is_timed_over_real_ranks() {
        let t = time_all_reduce(250_000, 2, 3).unwrap();
        assert_eq!((t.ranks, t.bytes_per_step, t.rounds), (2, 1_000_000, 3));
        assert!(t.min_ms > 0.0 && t.min_ms <= t.median_ms && t.bus_gb_per_second > 0.0, "{t:?}");
    }

    #[test]
    fn a_world_of_one_records_its_backend_and_nccl_says_what_it_lacks() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let world = || World { rank: 0, size: 1, local_rank: 0, master_addr: "127.0.0.1".into(), master_port: port };
        let dist = Dist::connect(world(), Duration::from_secs(30), false).unwrap();
        let ranks = dist.ranks().unwrap();
        assert_eq!((ranks.size, ranks.backend.as_str(), ranks.hosts.len()), (1, "gloo", 1));
        drop(dist);
        if !wrn_torch_ext::cuda::embedded() {
            // A binary built against the CPU libtorch has no NCCL, and says how to get it.
            let err = Dist::connect(world(), Duration::from_secs(30), true).err().unwrap().to_string();
            assert!(err.contains("NCCL") && err.contains("WRN_CUDA=1"), "{err}");
        }
    }

    #[test]
    fn the_first_host_of_a_slurm_host_list() {
        assert_eq!(first_host("node[03-05,9],gpu1").as_deref(), Some("node03"));
        assert_eq!(first_host("a1,a2").as_deref(), Some("a1"));
        assert_eq!(first_host("solo").as_deref(), Some("solo"));
        assert_eq!(first_host("gpu-[1-4]").as_deref(), Some("gpu-1"));
        assert_eq!(first_host("gpu[01-02]-ib").as_deref(), Some("gpu01-ib"));
        assert_eq!(first_host("gpu[01-02]-ib,cpu1").as_deref(), Some("gpu01-ib"));
        assert_eq!(first_host("").as_deref(), None);
    }
}
