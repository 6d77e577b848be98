//! One full in-memory round with real cryptography, timed against the
//! keystream lower bound measured in the same run (`modelpub bench secagg`).

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::client::Client;
use super::error::SecAggError;
use super::graph::Graph;
use super::params::Params;
use super::prg::{self, MaskPrg};
use super::server::Server;

/// Chunk size used to stream a masked input to the server.
const UPLOAD_CHUNK: usize = 1 << 16;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub participants: usize,
    pub vector_len: usize,
    pub dropout: f64,
    pub neighbours: usize,
    pub threshold: usize,
    pub survivors: usize,
    pub dropped: usize,
    /// The PRG every mask was expanded with (and the bounds measured with).
    pub prg: MaskPrg,
    /// Threads masking and unmasking used; the bounds are measured with as
    /// many threads generating keystream side by side.
    pub threads: usize,
    /// Mean per client: advertising, dealing and receiving shares.
    pub client_setup_seconds: f64,
    /// Mean per surviving client: masking its whole vector.
    pub client_mask_seconds: f64,
    /// Mean masks (self + pairwise) per surviving client.
    pub client_masks: f64,
    /// Time to generate the mean client's mask keystream (masks × vector
    /// length words) + one summing pass.
    pub client_keystream_bound_seconds: f64,
    /// Server time to add every survivor's chunks into the running sum.
    pub server_ingest_seconds: f64,
    /// `Server::finish`: reconstruction plus mask removal (best of two).
    pub server_unmask_seconds: f64,
    pub server_masks: usize,
    /// Time to generate the server's mask keystream (masks × vector length
    /// words, best of two) + one summing pass.
    pub server_keystream_bound_seconds: f64,
    pub client_ratio: f64,
    pub server_ratio: f64,
    /// This machine's single-core keystream speed of `prg` (best of three).
    pub keystream_gib_per_second: f64,
    /// Mean protocol payload a surviving client sends and receives (message
    /// encodings, without envelopes or transport framing).
    pub bytes_per_participant: f64,
    pub server_working_set_words: usize,
    /// The unmasked sum equalled the survivors' inputs bit for bit.
    pub correct: bool,
}

fn derive(seed: u64, label: &str, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"modelpub/secagg/bench");
    h.update(seed.to_be_bytes());
    h.update(label.as_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// Picks `count` participants to drop after ShareKeys such that every
/// participant keeps at least t surviving share holders (neighbours, plus
/// itself if it survives); tries a few draws.
fn choose_dropped(
    params: &Params,
    graph: &Graph,
    count: usize,
    seed: u64,
) -> Option<BTreeSet<usize>> {
    (0..64u32).find_map(|attempt| {
        let mut ranked: Vec<([u8; 32], usize)> = (params.participants.iter().enumerate())
            .map(|(i, name)| (derive(seed, &format!("drop{attempt}"), name), i))
            .collect();
        ranked.sort();
        let dropped: BTreeSet<usize> = ranked.iter().take(count).map(|&(_, i)| i).collect();
        let ok = (0..params.n()).all(|i| {
            let alive = graph
                .holders_of(i)
                .iter()
                .filter(|j| !dropped.contains(j))
                .count();
            alive >= params.threshold
        });
        ok.then_some(dropped)
    })
}

fn best_of(
    runs: usize,
    mut f: impl FnMut() -> Result<(), SecAggError>,
) -> Result<f64, SecAggError> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Generates (and discards) `streams` keystreams of `words` words each from
/// distinct seeds: exactly the keystream a party's masks need.
fn keystream(prg: MaskPrg, seed: u64, streams: usize, words: usize) -> Result<(), SecAggError> {
    for s in 0..streams {
        std::hint::black_box(prg::burn_keystream(
            prg,
            &derive(seed, "keystream", &s.to_string()),
            words,
        )?);
    }
    Ok(())
}

/// The same keystream on `threads` threads, each generating its share of
/// every stream's words (as the masking does), side by side.
fn keystream_parallel(
    prg: MaskPrg,
    seed: u64,
    streams: usize,
    words: usize,
    threads: usize,
) -> Result<(), SecAggError> {
    if threads <= 1 {
        return keystream(prg, seed, streams, words);
    }
    let per = words.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(move || keystream(prg, seed, streams, per)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Err(SecAggError::WorkerPanicked)))
    })
}

/// A round driven up to `Server::finish`, with what was measured so far.
struct Prepared {
    params: Params,
    server: Server,
    expected: Vec<u32>,
    survivors: usize,
    dropped: usize,
    client_setup_seconds: f64,
    client_mask_seconds: f64,
    client_masks: f64,
    server_ingest_seconds: f64,
    bytes_per_participant: f64,
}

fn prepare(config: &BenchRound, threads: usize) -> Result<Prepared, SecAggError> {
    let BenchRound {
        participants,
        vector_len: params_len,
        dropout,
        neighbours,
        seed,
        ..
    } = *config;
    if !(0.0..1.0).contains(&dropout) {
        return Err(SecAggError::InvalidParams(format!(
            "dropout {dropout} outside [0, 1)"
        )));
    }
    let names: Vec<String> = (0..participants)
        .map(|i| format!("participant-{i:05}"))
        .collect();
    let mut params = Params::new(7, "bench", names, derive(seed, "graph", ""), params_len)?;
    if let Some(prg) = config.prg {
        params.prg = prg;
    }
    if let Some(k) = neighbours {
        // The same work at any k (e.g. another implementation's), with the
        // default majority threshold for that k.
        params.neighbours = k;
        params.threshold = Params::default_threshold(k);
        params.validate()?;
    }
    let graph = Graph::new(&params);
    let n = params.n();
    let drop_count = ((dropout * n as f64).round() as usize).min(n);
    let dropped = choose_dropped(&params, &graph, drop_count, seed).ok_or_else(|| {
        SecAggError::BelowThreshold {
            subject: format!("surviving share holders at {drop_count} dropouts"),
            have: 0,
            need: params.threshold,
        }
    })?;

    let mut server = Server::new(params.clone())?;
    server.set_threads(threads);
    let mut clients = Vec::with_capacity(n);
    let mut bytes = vec![0usize; n];
    let setup = Instant::now();
    for name in &params.participants {
        let mut client = Client::new(params.clone(), name)?;
        client.set_threads(threads);
        let keys = client.advertise();
        bytes[clients.len()] += keys.to_bytes().len();
        server.receive_keys(name, keys)?;
        clients.push(client);
    }
    let advertised = server.advertised();
    let broadcast: usize = advertised
        .iter()
        .map(|(k, v)| k.len() + v.to_bytes().len())
        .sum();
    for (i, client) in clients.iter_mut().enumerate() {
        let shares = client.share_keys(&advertised)?;
        bytes[i] += broadcast + shares.iter().map(|s| s.to_bytes().len()).sum::<usize>();
        server.receive_shares(client.name(), shares)?;
    }
    let u2 = server.close_shares()?;
    for (i, client) in clients.iter_mut().enumerate() {
        let mine = server.shares_for(client.name());
        bytes[i] += mine.iter().map(|s| s.to_bytes().len()).sum::<usize>();
        client.receive_shares(&u2, &mine)?;
    }
    let client_setup_seconds = setup.elapsed().as_secs_f64() / n as f64;

    let mut expected = vec![0u32; params_len];
    let mut input = vec![0u32; params_len];
    let (mut mask_time, mut ingest_time, mut mask_count) = (0.0, 0.0, 0usize);
    for (i, client) in clients.iter().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        prg::expand_words(
            MaskPrg::ChaCha20,
            &derive(seed, "input", client.name()),
            &mut input,
            0,
        )?;
        for (e, x) in expected.iter_mut().zip(&input) {
            *e = e.wrapping_add(*x);
        }
        let start = Instant::now();
        client.mask_chunk(&mut input, 0)?;
        mask_time += start.elapsed().as_secs_f64();
        mask_count += client.mask_count();
        let start = Instant::now();
        for (c, chunk) in input.chunks(UPLOAD_CHUNK).enumerate() {
            server.add_masked_chunk(client.name(), c * UPLOAD_CHUNK, chunk)?;
        }
        server.complete_input(client.name())?;
        ingest_time += start.elapsed().as_secs_f64();
        bytes[i] += params_len * 4;
    }

    let (survivors, gone) = server.unmask_request()?;
    let request: usize = survivors.iter().chain(&gone).map(|s| s.len() + 4).sum();
    for (i, client) in clients.iter_mut().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        let revealed = client.unmask(&survivors, &gone)?;
        bytes[i] += request + revealed.iter().map(|r| r.to_bytes().len()).sum::<usize>();
        server.receive_reveal(client.name(), revealed)?;
    }
    let live = survivors.len();
    let survivor_bytes: usize = (0..n)
        .filter(|i| !dropped.contains(i))
        .map(|i| bytes[i])
        .sum();
    Ok(Prepared {
        params,
        server,
        expected,
        survivors: live,
        dropped: gone.len(),
        client_setup_seconds,
        client_mask_seconds: mask_time / live as f64,
        client_masks: mask_count as f64 / live as f64,
        server_ingest_seconds: ingest_time,
        bytes_per_participant: survivor_bytes as f64 / live as f64,
    })
}

/// A server holding a complete round (all reveals in) of this shape, ready
/// for `Server::finish`: lets a benchmark time unmasking alone.
pub fn server_ready_to_finish(config: &BenchRound) -> Result<Server, SecAggError> {
    Ok(prepare(config, prg::default_threads())?.server)
}

/// The shape of a benchmarked round: `participants` clients over
/// `vector_len` coordinates, with a `dropout` fraction vanishing after
/// ShareKeys (the case that costs the server most). `None` means the
/// default: k and t from `neighbourhood::choose`, every thread this process
/// may use, the fastest PRG of this machine.
#[derive(Debug, Clone)]
pub struct BenchRound {
    pub participants: usize,
    pub vector_len: usize,
    pub dropout: f64,
    pub neighbours: Option<usize>,
    pub threads: Option<usize>,
    pub prg: Option<MaskPrg>,
    /// Seed of the inputs, keys and dropouts.
    pub seed: u64,
}

impl BenchRound {
    pub fn new(participants: usize, vector_len: usize, dropout: f64) -> Self {
        BenchRound {
            participants,
            vector_len,
            dropout,
            neighbours: None,
            threads: None,
            prg: None,
            seed: 1,
        }
    }
}

/// Runs one round of this shape and reports the timings.
pub fn bench_round(config: &BenchRound) -> Result<BenchReport, SecAggError> {
    let params_len = config.vector_len;
    let seed = config.seed;
    let threads = config.threads.unwrap_or_else(prg::default_threads).max(1);
    // Bring the core to its sustained clock before anything is timed, so
    // the first configuration in a process is not penalised.
    let warm = derive(seed, "warm-up", "");
    let prg = config
        .prg
        .unwrap_or_else(|| MaskPrg::fastest_for(std::iter::empty()));
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 0.2 {
        prg::burn_keystream(prg, &warm, 1 << 16)?;
    }
    let p = prepare(
        &BenchRound {
            prg: Some(prg),
            ..config.clone()
        },
        threads,
    )?;
    let server_masks = p.server.masks_to_remove();
    let server_working_set_words = p.server.working_set_len();
    // Best of two on clones: a long run on a shared machine is more likely
    // to be preempted, and the bound below is measured the same way.
    let mut server_unmask_seconds = f64::INFINITY;
    let mut sum = Vec::new();
    for _ in 0..2 {
        let server = p.server.clone();
        let start = Instant::now();
        sum = server.finish()?;
        server_unmask_seconds = server_unmask_seconds.min(start.elapsed().as_secs_f64());
    }

    let one_stream = best_of(3, || keystream(prg, seed, 1, params_len))?;
    let mut acc = vec![0u32; params_len];
    let summing = best_of(3, || {
        for (a, x) in acc.iter_mut().zip(&p.expected) {
            *a = a.wrapping_add(*x);
        }
        Ok(())
    })?;
    std::hint::black_box(&acc);
    let client_streams = p.client_masks.round() as usize;
    let client_bound = best_of(3, || {
        keystream_parallel(prg, seed, client_streams, params_len, threads)
    })? + summing / threads as f64;
    let server_bound = best_of(2, || {
        keystream_parallel(prg, seed, server_masks, params_len, threads)
    })? + summing / threads as f64;

    Ok(BenchReport {
        participants: p.params.n(),
        vector_len: params_len,
        dropout: config.dropout,
        neighbours: p.params.neighbours,
        threshold: p.params.threshold,
        survivors: p.survivors,
        dropped: p.dropped,
        prg,
        threads,
        client_setup_seconds: p.client_setup_seconds,
        client_mask_seconds: p.client_mask_seconds,
        client_masks: p.client_masks,
        client_keystream_bound_seconds: client_bound,
        server_ingest_seconds: p.server_ingest_seconds,
        server_unmask_seconds,
        server_masks,
        server_keystream_bound_seconds: server_bound,
        client_ratio: p.client_mask_seconds / client_bound,
        server_ratio: server_unmask_seconds / server_bound,
        keystream_gib_per_second: (params_len * 4) as f64 / one_stream / f64::from(1u32 << 30),
        bytes_per_participant: p.bytes_per_participant,
        server_working_set_words,
        correct: sum == p.expected,
    })
}
