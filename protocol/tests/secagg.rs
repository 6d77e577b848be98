//! Properties of the SecAgg+ implementation: exact aggregates under random
//! dropouts, clean threshold failures, the double-reveal refusal, and
//! rejection of malformed or tampered messages.

use std::collections::{BTreeMap, BTreeSet};

use modelpub_protocol::secagg::{
    AdvertisedKeys, Client, EncryptedShare, MaskPrg, Params, Quantizer, RevealedShare, SecAggError,
    Server, ShareKind, neighbours,
};
use proptest::prelude::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("inst-{i:02}")).collect()
}

fn params(n: usize, len: usize) -> Params {
    Params::new(3, "fed-a", names(n), [7; 32], len).unwrap()
}

/// When a participant stops taking part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Drop {
    BeforeAdvertise,
    AfterAdvertise,
    AfterShareKeys,
    AfterUpload,
    Never,
}

fn drop_strategy() -> impl Strategy<Value = Drop> {
    prop_oneof![
        1 => Just(Drop::BeforeAdvertise),
        1 => Just(Drop::AfterAdvertise),
        1 => Just(Drop::AfterShareKeys),
        1 => Just(Drop::AfterUpload),
        20 => Just(Drop::Never),
    ]
}

/// Whether the protocol can complete, computed from the graph alone. The
/// holders of i's shares are its neighbours and i itself.
fn feasible(p: &Params, drops: &[Drop]) -> bool {
    let t = p.threshold;
    let nb: Vec<BTreeSet<usize>> = (0..p.n())
        .map(|i| {
            neighbours(p, &p.participants[i])
                .unwrap()
                .iter()
                .map(|n| p.participants.binary_search(n).unwrap())
                .chain(std::iter::once(i))
                .collect()
        })
        .collect();
    let set = |min: Drop| -> BTreeSet<usize> { (0..p.n()).filter(|&i| drops[i] >= min).collect() };
    let (u1, u2, u3, answer) = (
        set(Drop::AfterAdvertise),
        set(Drop::AfterShareKeys),
        set(Drop::AfterUpload),
        set(Drop::Never),
    );
    u2.iter().all(|&i| nb[i].intersection(&u1).count() >= t)
        && u2.len() >= t
        && u3.len() >= t
        && u2.iter().all(|&i| nb[i].intersection(&answer).count() >= t)
}

/// Runs one round; inputs of clients in U3 are uploaded in `chunk`-sized
/// pieces. Returns the aggregate and the U3 members.
fn run_round(
    p: &Params,
    inputs: &[Vec<u32>],
    drops: &[Drop],
    chunk: usize,
) -> Result<(Vec<u32>, Vec<usize>), SecAggError> {
    run_round_on_threads(p, inputs, drops, chunk, None)
}

/// [`run_round`] with every party's mask work capped at `threads`.
fn run_round_on_threads(
    p: &Params,
    inputs: &[Vec<u32>],
    drops: &[Drop],
    chunk: usize,
    threads: Option<usize>,
) -> Result<(Vec<u32>, Vec<usize>), SecAggError> {
    let mut server = Server::new(p.clone())?;
    let mut clients: Vec<Client> = p
        .participants
        .iter()
        .map(|n| Client::new(p.clone(), n).unwrap())
        .collect();
    if let Some(t) = threads {
        server.set_threads(t);
        clients.iter_mut().for_each(|c| c.set_threads(t));
    }
    let at_least = |i: usize, stage: Drop| drops[i] >= stage;
    for (i, c) in clients.iter().enumerate() {
        if at_least(i, Drop::AfterAdvertise) {
            server.receive_keys(
                c.name(),
                AdvertisedKeys::from_bytes(&c.advertise().to_bytes())?,
            )?;
        }
    }
    let keys = server.advertised();
    for (i, c) in clients.iter_mut().enumerate() {
        if at_least(i, Drop::AfterShareKeys) {
            let shares = c.share_keys(&keys)?;
            let wire: Vec<EncryptedShare> = shares
                .iter()
                .map(|s| EncryptedShare::from_bytes(&s.to_bytes()))
                .collect::<Result<_, _>>()?;
            server.receive_shares(c.name(), wire)?;
        }
    }
    let u2 = server.close_shares()?;
    assert_eq!(u2, server.u2());
    let mut u3 = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if !at_least(i, Drop::AfterShareKeys) {
            continue;
        }
        c.receive_shares(&u2, &server.shares_for(c.name()))?;
        if at_least(i, Drop::AfterUpload) {
            let mut y = inputs[i].clone();
            for (k, piece) in y.chunks_mut(chunk).enumerate() {
                c.mask_chunk(piece, k * chunk)?;
            }
            for (k, piece) in y.chunks(chunk).enumerate() {
                server.add_masked_chunk(c.name(), k * chunk, piece)?;
            }
            server.complete_input(c.name())?;
            u3.push(i);
        }
    }
    let (survivors, dropped) = server.unmask_request()?;
    for (i, c) in clients.iter_mut().enumerate() {
        if at_least(i, Drop::Never) {
            let revealed = c.unmask(&survivors, &dropped)?;
            let wire: Vec<RevealedShare> = revealed
                .iter()
                .map(|r| RevealedShare::from_bytes(&r.to_bytes()))
                .collect::<Result<_, _>>()?;
            server.receive_reveal(c.name(), wire)?;
        }
    }
    assert_eq!(server.working_set_len(), p.vector_len);
    Ok((server.finish()?, u3))
}

fn round_params(n: usize, k_pick: usize, t_pick: usize, len: usize) -> Params {
    let mut p = params(n, len);
    // Half the cases keep the defaults (complete graphs for n ≤ 12); the
    // rest draw a sparse even k, and any strict majority of the k + 1
    // holders as threshold.
    if k_pick % 2 == 1 && n >= 5 {
        let evens: Vec<usize> = (2..n - 1).step_by(2).collect();
        p.neighbours = evens[k_pick / 2 % evens.len()];
    }
    let h = p.neighbours + 1;
    p.threshold = h / 2 + 1 + t_pick % (h - h / 2);
    p.validate().unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn aggregate_is_exact_sum_of_survivors(
        n in 3usize..=12,
        k_pick in 0usize..64,
        t_pick in 0usize..64,
        len in 1usize..300,
        chunk in 1usize..128,
        drops in proptest::collection::vec(drop_strategy(), 12),
        values in proptest::collection::vec(-2.0f32..2.0, 12 * 300),
        aes in any::<bool>(),
    ) {
        let mut p = round_params(n, k_pick, t_pick, len);
        p.prg = if aes { MaskPrg::Aes128Ctr } else { MaskPrg::ChaCha20 };
        let q = Quantizer::for_participants(1.0, n).unwrap();
        let inputs: Vec<Vec<u32>> = (0..n)
            .map(|i| q.quantize(&values[i * 300..i * 300 + len]).unwrap())
            .collect();
        let drops = &drops[..n];
        match run_round(&p, &inputs, drops, chunk) {
            Ok((sum, u3)) => {
                prop_assert!(feasible(&p, drops), "succeeded although infeasible");
                let mut expected = vec![0u32; len];
                for &i in &u3 {
                    for (e, x) in expected.iter_mut().zip(&inputs[i]) {
                        *e = e.wrapping_add(*x);
                    }
                }
                prop_assert_eq!(&sum, &expected);
                // The sum never wrapped: dequantising matches the float sum.
                let floats = q.dequantize_sum(&sum);
                for (j, f) in floats.iter().enumerate() {
                    let want: f32 = u3.iter().map(|&i| values[i * 300 + j].clamp(-1.0, 1.0)).sum();
                    prop_assert!((f - want).abs() <= n as f32 / q.scale as f32 + 1e-4);
                }
            }
            Err(SecAggError::BelowThreshold { .. }) => {
                prop_assert!(!feasible(&p, drops), "below threshold although feasible");
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn graph_is_symmetric_and_k_regular(n in 2usize..300, k_pick in 0usize..1000, seed in any::<[u8; 32]>()) {
        let mut p = Params::new(1, "f", names(n), seed, 1).unwrap();
        let evens: Vec<usize> = (2..n.saturating_sub(1).min(255)).step_by(2).collect();
        if !evens.is_empty() && k_pick % 3 != 0 {
            p.neighbours = evens[k_pick % evens.len()];
            p.threshold = Params::default_threshold(p.neighbours);
        }
        let all: BTreeMap<String, Vec<String>> = p
            .participants
            .iter()
            .map(|who| (who.clone(), neighbours(&p, who).unwrap()))
            .collect();
        for (who, nb) in &all {
            prop_assert_eq!(nb.len(), p.neighbours);
            prop_assert!(!nb.contains(who));
            for other in nb {
                prop_assert!(all[other].contains(who));
            }
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = AdvertisedKeys::from_bytes(&bytes);
        let _ = EncryptedShare::from_bytes(&bytes);
        let _ = RevealedShare::from_bytes(&bytes);
    }

    #[test]
    fn quantized_sum_of_extremes_never_wraps(clip in 0.001f32..1000.0, n in 1usize..100_000) {
        let q = Quantizer::for_participants(clip, n).unwrap();
        let top = q.quantize(&[clip * 2.0, -clip * 2.0]).unwrap();
        let hi = (top[0] as i32) as i64 * n as i64;
        let lo = (top[1] as i32) as i64 * n as i64;
        prop_assert!(hi < i64::from(i32::MAX) && lo > i64::from(i32::MIN));
        // Power of two, and doubling it would break the bound.
        prop_assert_eq!(q.scale.log2().fract(), 0.0);
        prop_assert!(n as f64 * (f64::from(clip) * q.scale * 2.0 + 1.0) >= f64::from(i32::MAX));
    }
}

/// Drives a full round up to the point where clients have their masks.
fn ready_round(n: usize, len: usize) -> (Params, Server, Vec<Client>) {
    let p = params(n, len);
    let mut server = Server::new(p.clone()).unwrap();
    let mut clients: Vec<Client> = p
        .participants
        .iter()
        .map(|w| Client::new(p.clone(), w).unwrap())
        .collect();
    for c in &clients {
        server.receive_keys(c.name(), c.advertise()).unwrap();
    }
    let keys = server.advertised();
    for c in &mut clients {
        let s = c.share_keys(&keys).unwrap();
        server.receive_shares(c.name(), s).unwrap();
    }
    let u2 = server.close_shares().unwrap();
    for c in &mut clients {
        c.receive_shares(&u2, &server.shares_for(c.name())).unwrap();
    }
    (p, server, clients)
}

#[test]
fn refuses_to_reveal_both_shares_in_one_request() {
    let (p, _server, mut clients) = ready_round(5, 4);
    let peer = p.participants[2].clone();
    let survivors: Vec<String> = p.participants.clone();
    let err = clients[0]
        .unmask(&survivors, std::slice::from_ref(&peer))
        .unwrap_err();
    assert_eq!(err, SecAggError::BothSharesRequested { peer });
}

#[test]
fn refuses_to_reveal_the_other_share_in_a_later_request() {
    let (p, _server, mut clients) = ready_round(5, 4);
    let all = p.participants.clone();
    let first = clients[0].unmask(&all, &[]).unwrap();
    assert!(first.iter().all(|r| r.kind == ShareKind::SelfMask));
    // Four neighbours' self-mask shares and its own.
    assert_eq!(first.len(), 5);
    assert!(first.iter().any(|r| r.owner == all[0]));
    // A cheating server now claims participant 3 dropped.
    let peer = all[3].clone();
    let survivors: Vec<String> = all.iter().filter(|w| **w != peer).cloned().collect();
    let err = clients[0]
        .unmask(&survivors, std::slice::from_ref(&peer))
        .unwrap_err();
    assert_eq!(err, SecAggError::BothSharesRequested { peer });
    // Asking again for the same kind is harmless and allowed.
    assert_eq!(clients[0].unmask(&all, &[]).unwrap(), first);
}

#[test]
fn tampered_share_names_its_sender() {
    let p = params(4, 8);
    let mut clients: Vec<Client> = p
        .participants
        .iter()
        .map(|w| Client::new(p.clone(), w).unwrap())
        .collect();
    let keys: BTreeMap<String, AdvertisedKeys> = clients
        .iter()
        .map(|c| (c.name().to_owned(), c.advertise()))
        .collect();
    let mut all = Vec::new();
    for c in &mut clients {
        all.extend(c.share_keys(&keys).unwrap());
    }
    let to = p.participants[0].clone();
    let mut mine: Vec<EncryptedShare> = all.into_iter().filter(|s| s.to == to).collect();
    mine[1].ciphertext[5] ^= 1;
    let from = mine[1].from.clone();
    let err = clients[0]
        .receive_shares(&p.participants, &mine)
        .unwrap_err();
    assert_eq!(err, SecAggError::TamperedShare { from, to });
}

#[test]
fn share_replayed_to_another_recipient_fails_authentication() {
    let p = params(4, 8);
    let mut clients: Vec<Client> = p
        .participants
        .iter()
        .map(|w| Client::new(p.clone(), w).unwrap())
        .collect();
    let keys: BTreeMap<String, AdvertisedKeys> = clients
        .iter()
        .map(|c| (c.name().to_owned(), c.advertise()))
        .collect();
    let shares = clients[1].share_keys(&keys).unwrap();
    let mut stolen = shares
        .iter()
        .find(|s| s.to == p.participants[2])
        .unwrap()
        .clone();
    stolen.to = p.participants[0].clone();
    clients[0].share_keys(&keys).unwrap();
    let err = clients[0]
        .receive_shares(&p.participants, &[stolen])
        .unwrap_err();
    assert!(matches!(err, SecAggError::TamperedShare { .. }), "{err}");
}

#[test]
fn malformed_messages_are_rejected() {
    let keys = AdvertisedKeys {
        c_public: [1; 32],
        s_public: [2; 32],
    };
    let bytes = keys.to_bytes();
    assert_eq!(AdvertisedKeys::from_bytes(&bytes).unwrap(), keys);
    for bad in [
        &bytes[..bytes.len() - 1],
        &[bytes.as_slice(), &[0]].concat()[..],
        &bytes[..33],
    ] {
        assert!(matches!(
            AdvertisedKeys::from_bytes(bad),
            Err(SecAggError::Malformed {
                what: "advertised keys",
                ..
            })
        ));
    }
    let share = EncryptedShare {
        from: "a".into(),
        to: "b".into(),
        ciphertext: vec![9; 80],
    };
    let bytes = share.to_bytes();
    assert_eq!(EncryptedShare::from_bytes(&bytes).unwrap(), share);
    assert!(EncryptedShare::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut lying_len = bytes.clone();
    lying_len[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(EncryptedShare::from_bytes(&lying_len).is_err());
    let reveal = RevealedShare {
        owner: "a".into(),
        kind: ShareKind::MaskKey,
        share: [3; 32],
    };
    let mut bytes = reveal.to_bytes();
    assert_eq!(RevealedShare::from_bytes(&bytes).unwrap(), reveal);
    let kind_at = bytes.len() - 33;
    bytes[kind_at] = 7;
    assert!(RevealedShare::from_bytes(&bytes).is_err());
}

#[test]
fn server_rejects_shares_of_the_wrong_length() {
    let p = params(3, 8);
    let mut server = Server::new(p.clone()).unwrap();
    let mut clients: Vec<Client> = p
        .participants
        .iter()
        .map(|w| Client::new(p.clone(), w).unwrap())
        .collect();
    for c in &clients {
        server.receive_keys(c.name(), c.advertise()).unwrap();
    }
    let mut shares = clients[0].share_keys(&server.advertised()).unwrap();
    shares[0].ciphertext.truncate(10);
    let err = server
        .receive_shares(clients[0].name(), shares)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::Malformed {
                what: "encrypted share",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn low_order_public_key_is_refused() {
    let p = params(3, 8);
    let mut clients: Vec<Client> = p
        .participants
        .iter()
        .map(|w| Client::new(p.clone(), w).unwrap())
        .collect();
    let mut keys: BTreeMap<String, AdvertisedKeys> = clients
        .iter()
        .map(|c| (c.name().to_owned(), c.advertise()))
        .collect();
    let evil = p.participants[1].clone();
    keys.insert(
        evil.clone(),
        AdvertisedKeys {
            c_public: [0; 32],
            s_public: [0; 32],
        },
    );
    let err = clients[0].share_keys(&keys).unwrap_err();
    assert_eq!(err, SecAggError::WeakKey { peer: evil });
}

#[test]
fn client_rejects_a_key_list_with_forged_own_keys() {
    let p = params(3, 8);
    let mut c = Client::new(p.clone(), &p.participants[0]).unwrap();
    let mut keys = BTreeMap::new();
    keys.insert(
        p.participants[0].clone(),
        AdvertisedKeys {
            c_public: [9; 32],
            s_public: [9; 32],
        },
    );
    assert!(matches!(
        c.share_keys(&keys),
        Err(SecAggError::KeyMismatch { .. })
    ));
}

#[test]
fn below_threshold_survivors_is_a_clean_error() {
    let (p, mut server, clients) = ready_round(5, 16);
    // Only two of five upload; the default threshold for k = 4 (5 holders)
    // is 3.
    for c in clients.iter().take(2) {
        let mut y = vec![1u32; p.vector_len];
        c.mask_chunk(&mut y, 0).unwrap();
        server.add_masked_chunk(c.name(), 0, &y).unwrap();
        server.complete_input(c.name()).unwrap();
    }
    let err = server.unmask_request().unwrap_err();
    assert_eq!(
        err,
        SecAggError::BelowThreshold {
            subject: "survivors (U3)".into(),
            have: 2,
            need: 3
        }
    );
}

#[test]
fn missing_reveals_are_a_clean_error_naming_the_owner() {
    let (p, mut server, mut clients) = ready_round(5, 16);
    for c in &clients {
        let mut y = vec![1u32; p.vector_len];
        c.mask_chunk(&mut y, 0).unwrap();
        server.add_masked_chunk(c.name(), 0, &y).unwrap();
        server.complete_input(c.name()).unwrap();
    }
    let (u3, d) = server.unmask_request().unwrap();
    // Only two answer: every self-mask seed has 2 shares, 3 needed.
    for c in clients.iter_mut().take(2) {
        let r = c.unmask(&u3, &d).unwrap();
        server.receive_reveal(c.name(), r).unwrap();
    }
    match server.finish().unwrap_err() {
        SecAggError::BelowThreshold {
            subject,
            have,
            need,
        } => {
            assert!(subject.starts_with("self-mask shares of"), "{subject}");
            assert!(have < need);
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn partial_upload_is_reported_not_silently_summed() {
    let (p, mut server, clients) = ready_round(4, 10);
    let mut y = vec![0u32; p.vector_len];
    clients[0].mask_chunk(&mut y, 0).unwrap();
    server
        .add_masked_chunk(clients[0].name(), 0, &y[..4])
        .unwrap();
    assert_eq!(
        server
            .add_masked_chunk(clients[0].name(), 6, &y[6..])
            .unwrap_err(),
        SecAggError::UnexpectedOffset {
            who: clients[0].name().into(),
            offset: 6,
            expected: 4
        }
    );
    assert!(matches!(
        server.complete_input(clients[0].name()),
        Err(SecAggError::IncompleteUpload { received: 4, .. })
    ));
    assert!(matches!(
        server.unmask_request(),
        Err(SecAggError::IncompleteUpload { .. })
    ));
    assert!(matches!(
        clients[1].mask_chunk(&mut y, 1),
        Err(SecAggError::OutOfRange {
            offset: 1,
            len: 10,
            vector_len: 10
        })
    ));
}

#[test]
fn server_working_set_is_one_vector_whatever_n() {
    for n in [3, 40, 200] {
        let server = Server::new(params(n, 1234)).unwrap();
        assert_eq!(server.working_set_len(), 1234);
    }
}

#[test]
fn steps_out_of_order_are_refused() {
    let p = params(3, 4);
    let c = Client::new(p.clone(), &p.participants[0]).unwrap();
    assert!(matches!(
        c.mask_chunk(&mut [0; 4], 0),
        Err(SecAggError::WrongStage { .. })
    ));
    let mut server = Server::new(p.clone()).unwrap();
    assert!(matches!(
        server.add_masked_chunk(&p.participants[0], 0, &[0; 4]),
        Err(SecAggError::WrongStage { .. })
    ));
    assert!(matches!(
        server.receive_keys("stranger", c.advertise()),
        Err(SecAggError::UnknownParticipant { .. })
    ));
}

#[test]
fn invalid_params_are_rejected() {
    let mut p = params(10, 4);
    p.neighbours = 3;
    assert!(p.validate().is_err());
    p.neighbours = 4;
    p.threshold = 2;
    assert!(p.validate().is_err());
    // A strict majority of the k + 1 = 5 holders: 3..=5.
    p.threshold = 6;
    assert!(p.validate().is_err());
    for t in 3..=5 {
        p.threshold = t;
        p.validate().unwrap();
    }
    let mut unsorted = params(4, 4);
    unsorted.participants.swap(0, 1);
    assert!(unsorted.validate().is_err());
    assert!(Params::new(1, "f", names(1), [0; 32], 4).is_err());
    assert!(Params::new(1, "f", vec!["a".into(), "a".into()], [0; 32], 4).is_err());
    assert!(Params::new(1, "f", names(3), [0; 32], 0).is_err());
    assert!(Quantizer::for_participants(f32::NAN, 3).is_err());
    let q = Quantizer::for_participants(1.0, 3).unwrap();
    assert_eq!(
        q.quantize(&[0.0, f32::INFINITY]),
        Err(SecAggError::NonFinite { index: 1 })
    );
}

#[test]
fn default_neighbourhood_is_derived_for_the_default_tolerance() {
    // The values docs/secagg.md tabulates (30 % dropout, 5 % corruption).
    let k = |n| {
        Params::new(1, "f", names(n), [0; 32], 1)
            .unwrap()
            .neighbours
    };
    // n = 3: k = 2, three holders (two neighbours and the dealer), t = 2.
    assert_eq!(k(3), 2);
    assert_eq!(
        Params::new(1, "f", names(3), [0; 32], 1).unwrap().threshold,
        2
    );
    assert_eq!(k(10), 8);
    assert_eq!(k(100), 62);
    assert_eq!(Params::default_threshold(56), 29);
    assert_eq!(Params::default_threshold(2), 2);
    assert_eq!(Params::default_threshold(4), 3);
    assert_eq!(Params::default_threshold(11), 7);
}

#[test]
fn sparse_graph_with_every_kind_of_dropout_sums_exactly() {
    let mut p = params(16, 1000);
    p.neighbours = 10;
    p.threshold = 6;
    p.validate().unwrap();
    let pattern = [
        Drop::BeforeAdvertise,
        Drop::AfterAdvertise,
        Drop::AfterShareKeys,
        Drop::AfterUpload,
    ];
    // The first rotation of the dropouts that leaves every neighbourhood
    // above threshold (the graph is fixed by the seed, so this is stable).
    let drops = (0..16)
        .map(|r| {
            let mut d = vec![Drop::Never; 16];
            for (k, stage) in pattern.iter().enumerate() {
                d[(r + 5 * k) % 16] = *stage;
            }
            d
        })
        .find(|d| feasible(&p, d))
        .expect("some rotation is feasible");
    let inputs: Vec<Vec<u32>> = (0..16u32)
        .map(|i| {
            (0..1000u32)
                .map(|j| i.wrapping_mul(2_654_435_761).wrapping_add(j * 7))
                .collect()
        })
        .collect();
    let (sum, u3) = run_round(&p, &inputs, &drops, 97).unwrap();
    assert_eq!(u3.len(), 13);
    let expected: Vec<u32> = (0..1000)
        .map(|j| {
            u3.iter()
                .fold(0u32, |acc, &i| acc.wrapping_add(inputs[i][j]))
        })
        .collect();
    assert_eq!(sum, expected);
}

#[test]
fn any_thread_count_gives_the_same_exact_sum_with_dropouts_at_every_stage() {
    // Three whole 2048-word tiles and a ragged tail, uploaded in chunks that
    // straddle tiles, so thread ranges start mid-chunk and mid-keystream.
    let len = 3 * 2048 + 5;
    let mut p = params(12, len);
    p.neighbours = 8;
    p.threshold = 5;
    p.validate().unwrap();
    let mut drops = vec![Drop::Never; 12];
    drops[1] = Drop::BeforeAdvertise;
    drops[4] = Drop::AfterAdvertise;
    drops[7] = Drop::AfterShareKeys;
    drops[10] = Drop::AfterUpload;
    assert!(feasible(&p, &drops));
    let inputs = test_inputs(12, len);
    let mut sums = Vec::new();
    for (threads, prg) in [1, 2, 3, 5]
        .into_iter()
        .flat_map(|t| MaskPrg::ALL.map(|prg| (t, prg)))
    {
        p.prg = prg;
        let (sum, u3) = run_round_on_threads(&p, &inputs, &drops, 3001, Some(threads)).unwrap();
        let expected: Vec<u32> = (0..len)
            .map(|j| (u3.iter()).fold(0u32, |acc, &i| acc.wrapping_add(inputs[i][j])))
            .collect();
        assert_eq!(sum, expected, "{threads} threads, {prg}");
        sums.push(sum);
    }
    assert!(sums.windows(2).all(|w| w[0] == w[1]));
}

fn test_inputs(n: usize, len: usize) -> Vec<Vec<u32>> {
    let q = Quantizer::for_participants(1.0, n).unwrap();
    (0..n)
        .map(|i| {
            let x: Vec<f32> = (0..len)
                .map(|j| ((i * 31 + j * 7) % 200) as f32 / 100.0 - 1.0)
                .collect();
            q.quantize(&x).unwrap()
        })
        .collect()
}

#[test]
fn three_participants_survive_one_dropout_at_every_stage() {
    let len = 257;
    let p = params(3, len);
    assert_eq!((p.neighbours, p.threshold), (2, 2));
    let inputs = test_inputs(3, len);
    for stage in [
        Drop::BeforeAdvertise,
        Drop::AfterAdvertise,
        Drop::AfterShareKeys,
        Drop::AfterUpload,
    ] {
        for who in 0..3 {
            let mut drops = vec![Drop::Never; 3];
            drops[who] = stage;
            assert!(feasible(&p, &drops), "{stage:?} of {who}");
            let (sum, u3) = run_round(&p, &inputs, &drops, 64)
                .unwrap_or_else(|e| panic!("{stage:?} of participant {who}: {e}"));
            let want: Vec<usize> = if stage == Drop::AfterUpload {
                vec![0, 1, 2]
            } else {
                (0..3).filter(|&i| i != who).collect()
            };
            assert_eq!(u3, want, "{stage:?} of {who}");
            let expected: Vec<u32> = (0..len)
                .map(|j| {
                    u3.iter()
                        .fold(0u32, |acc, &i| acc.wrapping_add(inputs[i][j]))
                })
                .collect();
            assert_eq!(sum, expected, "{stage:?} of {who}");
        }
    }
}

#[test]
fn three_participants_with_two_dropped_is_below_threshold() {
    let len = 16;
    let p = params(3, len);
    let inputs = test_inputs(3, len);
    for stage in [
        Drop::BeforeAdvertise,
        Drop::AfterAdvertise,
        Drop::AfterShareKeys,
        Drop::AfterUpload,
    ] {
        for alive in 0..3 {
            let mut drops = vec![stage; 3];
            drops[alive] = Drop::Never;
            assert!(!feasible(&p, &drops));
            let err = run_round(&p, &inputs, &drops, 5).unwrap_err();
            assert!(
                matches!(err, SecAggError::BelowThreshold { .. }),
                "{stage:?}, {alive} alive: {err}"
            );
        }
    }
}

#[test]
fn survivor_reveals_its_own_self_mask_share_but_never_its_mask_key_share() {
    let (p, mut server, mut clients) = ready_round(3, 8);
    // Participant 2 drops after sharing keys.
    for c in clients.iter().take(2) {
        let mut y = vec![5u32; p.vector_len];
        c.mask_chunk(&mut y, 0).unwrap();
        server.add_masked_chunk(c.name(), 0, &y).unwrap();
        server.complete_input(c.name()).unwrap();
    }
    let (u3, d) = server.unmask_request().unwrap();
    assert_eq!(d, vec![p.participants[2].clone()]);
    let me = p.participants[0].clone();
    let r = clients[0].unmask(&u3, &d).unwrap();
    let mut kinds: Vec<(String, ShareKind)> = r.iter().map(|s| (s.owner.clone(), s.kind)).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            (me.clone(), ShareKind::SelfMask),
            (p.participants[1].clone(), ShareKind::SelfMask),
            (p.participants[2].clone(), ShareKind::MaskKey),
        ]
    );
    // A server claiming this client dropped gets nothing.
    let others: Vec<String> = p.participants[1..].to_vec();
    assert_eq!(
        clients[0].unmask(&others, std::slice::from_ref(&me)),
        Err(SecAggError::NotInSet {
            who: me.clone(),
            set: "U3"
        })
    );
    server.receive_reveal(&me, r).unwrap();
    let r = clients[1].unmask(&u3, &d).unwrap();
    server.receive_reveal(&p.participants[1], r).unwrap();
    assert_eq!(server.finish().unwrap(), vec![10u32; 8]);
}
