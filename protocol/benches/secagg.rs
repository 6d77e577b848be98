//! Criterion benchmarks of SecAgg+ masking and unmasking.
//!
//! `cargo bench -p modelpub-protocol --bench secagg`. Client masking does not
//! depend on dropout after ShareKeys, so it is measured at 0 % only; server
//! unmasking at 0, 10 and 30 % dropout. Each configuration's round is set up
//! once (real keys, shares and masked inputs) and only the timed step repeats.

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use modelpub_protocol::secagg::{
    AdvertisedKeys, Client, Params, Server,
    bench::{BenchRound, bench_round, server_ready_to_finish},
};

const SIZES: [usize; 2] = [100_000, 1_000_000];
const ROSTERS: [usize; 2] = [10, 100];

fn masking_client(n: usize, len: usize) -> Client {
    let names: Vec<String> = (0..n).map(|i| format!("p{i:03}")).collect();
    let params = Params::new(1, "bench", names, [3; 32], len).unwrap();
    let mut server = Server::new(params.clone()).unwrap();
    let mut clients: Vec<Client> = params
        .participants
        .iter()
        .map(|w| Client::new(params.clone(), w).unwrap())
        .collect();
    for c in &clients {
        server.receive_keys(c.name(), c.advertise()).unwrap();
    }
    let keys: std::collections::BTreeMap<String, AdvertisedKeys> = server.advertised();
    for c in &mut clients {
        let shares = c.share_keys(&keys).unwrap();
        server.receive_shares(c.name(), shares).unwrap();
    }
    let u2 = server.close_shares().unwrap();
    let mut first = clients.swap_remove(0);
    first
        .receive_shares(&u2, &server.shares_for(first.name()))
        .unwrap();
    first
}

fn client_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("secagg_client_mask");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for n in ROSTERS {
        for len in SIZES {
            let client = masking_client(n, len);
            let mut input = vec![0u32; len];
            group.throughput(Throughput::Elements(len as u64));
            group.bench_function(BenchmarkId::new(format!("n{n}"), len), |b| {
                b.iter(|| client.mask_chunk(&mut input, 0).unwrap())
            });
        }
    }
    group.finish();
}

fn server_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("secagg_server_unmask");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for n in ROSTERS {
        for len in SIZES {
            for dropout in [0.0, 0.1, 0.3] {
                let server = server_ready_to_finish(&BenchRound::new(n, len, dropout)).unwrap();
                group.throughput(Throughput::Elements(len as u64));
                let id = BenchmarkId::new(format!("n{n}_drop{}", (dropout * 100.0) as u32), len);
                group.bench_function(id, |b| {
                    b.iter_batched(
                        || server.clone(),
                        |s| s.finish().unwrap(),
                        BatchSize::PerIteration,
                    )
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, client_mask, server_unmask);

/// `SECAGG_BENCH_ROUND=n:len:dropout[,…]` prints one `bench_round` report
/// per configuration as JSON instead of running criterion.
fn main() {
    if let Ok(spec) = std::env::var("SECAGG_BENCH_ROUND") {
        for config in spec.split(',') {
            let parts: Vec<&str> = config.split(':').collect();
            let [n, len, dropout] = parts.as_slice() else {
                panic!("expected n:len:dropout, got {config:?}");
            };
            let report = bench_round(&BenchRound::new(
                n.parse().unwrap(),
                len.parse().unwrap(),
                dropout.parse().unwrap(),
            ))
            .unwrap();
            println!("{}", serde_json::to_string(&report).unwrap());
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
