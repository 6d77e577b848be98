#!/usr/bin/env python3
"""Flower 1.42's SecAgg+ arithmetic, timed on the same work as
`modelpub bench secagg` (bench/secagg_vs_flower.sh runs both in one go).

Everything here is Flower's own code, called as its SecAgg+ client mod
(flwr/client/mod/secure_aggregation/secaggplus_mod.py, stage "collect
masked vectors") and server workflow (flwr/server/workflow/
secure_aggregation/secaggplus_workflow.py, stage "unmask") call it:

client: quantize -> factor_combine -> + pseudo_rand_gen(self seed)
        -> for each neighbour: generate_shared_key (ECDH + HKDF),
           +/- pseudo_rand_gen(shared key) -> parameters_mod(2^32)
server: for each survivor: - pseudo_rand_gen(seed); for each dropped client,
        for each surviving neighbour: generate_shared_key, +/- pseudo_rand_gen
        -> parameters_mod (combine_shares, which recovers the seeds and keys,
        is timed apart as server_reconstruct_seconds)

The mask counts come from our run (`client_masks`, `server_masks`,
`survivors`, `dropped`), so both sides generate exactly as many masks of
`--params` words. Prints one JSON object.
"""

import argparse
import json
import os
import time

import numpy as np

import flwr
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

# Flower's SecAggPlusWorkflow defaults.
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 4194304
MODULUS_RANGE = 4294967296


def key_pair():
    sk, pk = generate_key_pairs()
    return private_key_to_bytes(sk), public_key_to_bytes(pk)


def client_mask(params, rd_seed, shared_keys, me):
    """One client's "collect masked vectors" stage, as secaggplus_mod does it.

    The pairwise keys are agreed beforehand: our client derives its mask
    seeds when it receives its shares, so its masking time excludes them too.
    """
    quantized = quantize(params, CLIPPING_RANGE, QUANTIZATION_RANGE)
    quantized = factor_combine(1, quantized)
    dims = [a.shape for a in quantized]
    quantized = parameters_addition(quantized, pseudo_rand_gen(rd_seed, MODULUS_RANGE, dims))
    for node_id, shared in shared_keys:
        mask = pseudo_rand_gen(shared, MODULUS_RANGE, dims)
        if me > node_id:
            quantized = parameters_addition(quantized, mask)
        else:
            quantized = parameters_subtraction(quantized, mask)
    return parameters_mod(quantized, MODULUS_RANGE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, required=True, help="words per vector (m)")
    ap.add_argument("--client-masks", type=int, required=True,
                    help="masks per client, self mask included (ours: client_masks)")
    ap.add_argument("--survivors", type=int, required=True)
    ap.add_argument("--dropped", type=int, required=True)
    ap.add_argument("--server-masks", type=int, required=True,
                    help="self masks of survivors + pairwise masks of dropped clients (ours: server_masks)")
    ap.add_argument("--threshold", type=int, required=True)
    ap.add_argument("--clients-timed", type=int, default=3,
                    help="clients whose masking is timed (the mean is reported)")
    args = ap.parse_args()
    if args.server_masks < args.survivors:
        ap.error("--server-masks counts the survivors' self masks, so it is at least --survivors")

    rng = np.random.default_rng(7)
    params = [rng.uniform(-1.0, 1.0, args.params).astype(np.float32)]
    holders = args.threshold

    # --- client: the masking stage, timed for a few clients.
    pairwise = args.client_masks - 1
    times = []
    for c in range(args.clients_timed):
        sk1, _ = key_pair()
        neighbours = [(node, key_pair()[1]) for node in range(pairwise + 1) if node != c][:pairwise]
        shared_keys = [
            (node, generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(pk)))
            for node, pk in neighbours
        ]
        rd_seed = os.urandom(32)
        start = time.perf_counter()
        client_mask(params, rd_seed, shared_keys, c)
        times.append(time.perf_counter() - start)

    # --- server: the unmask stage on an aggregate of the right shape.
    aggregate = factor_combine(1, [rng.integers(0, MODULUS_RANGE, args.params, dtype=np.int64)])
    dims = get_parameters_shape(aggregate)
    survivor_shares = []
    for _ in range(args.survivors):
        shares = create_shares(os.urandom(32), args.threshold, holders)
        survivor_shares.append(shares[: args.threshold])
    per_dropped = []
    left = args.server_masks - args.survivors
    for d in range(args.dropped):
        count = left // (args.dropped - d)
        left -= count
        sk1, _ = key_pair()
        shares = create_shares(sk1, args.threshold, holders)
        peers = [(node, key_pair()[1]) for node in range(count)]
        per_dropped.append((shares[: args.threshold], peers, args.survivors + d))

    # Shamir reconstruction is timed apart: Flower's runs in pure Python
    # (pycryptodome's GF(2^128) arithmetic) and would dominate, while the
    # comparison is about the masks. Ours is inside server_unmask_seconds,
    # which makes this comparison conservative.
    start = time.perf_counter()
    survivor_seeds = [combine_shares(shares) for shares in survivor_shares]
    dropped_keys = [(combine_shares(shares), peers, nid) for shares, peers, nid in per_dropped]
    reconstruct = time.perf_counter() - start

    start = time.perf_counter()
    masked = aggregate
    for secret in survivor_seeds:
        masked = parameters_subtraction(masked, pseudo_rand_gen(secret, MODULUS_RANGE, dims))
    for secret, peers, nid in dropped_keys:
        for node_id, pk in peers:
            shared = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(pk))
            mask = pseudo_rand_gen(shared, MODULUS_RANGE, dims)
            if nid > node_id:
                masked = parameters_addition(masked, mask)
            else:
                masked = parameters_subtraction(masked, mask)
    parameters_mod(masked, MODULUS_RANGE)
    server = time.perf_counter() - start

    print(json.dumps({
        "flwr_version": flwr.__version__,
        "vector_len": args.params,
        "client_masks": args.client_masks,
        "server_masks": args.server_masks,
        "survivors": args.survivors,
        "dropped": args.dropped,
        "client_mask_seconds": sum(times) / len(times),
        "server_unmask_seconds": server,
        "server_reconstruct_seconds": reconstruct,
    }))


if __name__ == "__main__":
    main()
