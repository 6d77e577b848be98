#!/usr/bin/env python3
"""PyTorch eager reference for node-agent's `train_epoch` benchmark.

Times the same work as `node-agent/examples/train_epoch_timing.rs`:

- digits: the default MLP (64 -> 64 ReLU -> 10), inputs standardised per
  feature (mean/std of the whole file), the 80 % stratified train split,
  batch size 32, a fresh SGD optimiser (lr 0.05, momentum 0.9) per epoch,
  a new random permutation per epoch, batches cut with index_select;
- char transformer: the default byte-level GPT (context 64, embed 64,
  4 heads, 2 pre-LN layers), 10 batches of 32 random windows per epoch,
  a fresh Adam (lr 0.01) per epoch.

Threads come from MODELPUB_BENCH_THREADS (default 1), repetitions from
MODELPUB_BENCH_REPEATS (default 30). Prints one JSON line with the median
seconds per epoch. Needs only torch (no numpy).
"""

import gzip
import json
import math
import os
import random
import statistics
import time
import warnings
from pathlib import Path

# torch warns at import when numpy is absent; this script does not use it.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
BATCH = 32
CHAR_BATCHES = 10


def load_digits():
    rows = []
    with gzip.open(DATA / "digits.csv.gz", "rt") as f:
        for line in f:
            if line.strip():
                rows.append([float(v) for v in line.split(",")])
    x = torch.tensor([r[:-1] for r in rows], dtype=torch.float32)
    y = torch.tensor([int(r[-1]) for r in rows], dtype=torch.int64)
    mean = x.double().mean(0)
    std = x.double().std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    x = ((x - mean.float()) / std.float()).contiguous()
    # Stratified 80/20 split with the same per-class counts as the Rust side
    # (round half away from zero).
    rng = random.Random(42)
    train_idx = []
    for c in sorted(set(y.tolist())):
        members = [i for i, l in enumerate(y.tolist()) if l == c]
        rng.shuffle(members)
        take = math.floor(len(members) * 0.2 + 0.5)
        train_idx.extend(members[take:])
    train_idx.sort()
    idx = torch.tensor(train_idx)
    return x.index_select(0, idx), y.index_select(0, idx)


class Mlp(nn.Module):
    def __init__(self, inputs, hidden, classes):
        super().__init__()
        self.hidden = nn.Linear(inputs, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


class Block(nn.Module):
    def __init__(self, embed, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(embed)
        self.qkv = nn.Linear(embed, 3 * embed)
        self.proj = nn.Linear(embed, embed)
        self.ln2 = nn.LayerNorm(embed)
        self.fc = nn.Linear(embed, 4 * embed)
        self.mlp_proj = nn.Linear(4 * embed, embed)

    def forward(self, x):
        b, t, e = x.shape
        hd = e // self.heads
        qkv = self.qkv(self.ln1(x))
        q, k, v = (
            qkv.narrow(2, i * e, e).view(b, t, self.heads, hd).transpose(1, 2)
            for i in range(3)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, e)
        x = x + self.proj(y)
        return x + self.mlp_proj(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    def __init__(self, vocab=256, context=64, embed=64, heads=4, layers=2):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, embed)
        self.pos_emb = nn.Parameter(torch.randn(context, embed) * 0.02)
        self.blocks = nn.ModuleList(Block(embed, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, vocab)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        t = idx.shape[-1]
        x = self.tok_emb(idx) + self.pos_emb.narrow(0, 0, t)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def digits_epoch(model, x, y, seed):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n = x.shape[0]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    order = torch.tensor(order, dtype=torch.int64)
    for start in range(0, n, BATCH):
        idx = order.narrow(0, start, min(BATCH, n - start))
        logits = model(x.index_select(0, idx))
        loss = F.cross_entropy(logits, y.index_select(0, idx))
        opt.zero_grad()
        loss.backward()
        opt.step()


def char_epoch(model, data, seed, context=64):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = random.Random(seed)
    last = data.shape[0] - context - 1
    starts = torch.tensor(
        [rng.randint(0, last) for _ in range(CHAR_BATCHES * BATCH)], dtype=torch.int64
    )
    offsets = torch.arange(context + 1)
    for b in range(CHAR_BATCHES):
        idx = starts.narrow(0, b * BATCH, BATCH)
        chunk = data.index_select(0, (idx.unsqueeze(1) + offsets).view(-1)).view(
            BATCH, context + 1
        )
        xs, ys = chunk.narrow(1, 0, context), chunk.narrow(1, 1, context)
        logits = model(xs)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), ys.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def median_seconds(epoch, repeats):
    for seed in range(3):
        epoch(seed)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        epoch(100 + i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    threads = int(os.environ.get("MODELPUB_BENCH_THREADS", "1") or 1)
    repeats = int(os.environ.get("MODELPUB_BENCH_REPEATS", "30") or 30)
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    x, y = load_digits()
    mlp = Mlp(64, 64, 10)
    digits = median_seconds(lambda s: digits_epoch(mlp, x, y, s), repeats)

    text = (DATA / "tinyshakespeare.txt").read_bytes()
    data = torch.tensor(list(text), dtype=torch.int64)
    gpt = CharTransformer()
    chars = median_seconds(lambda s: char_epoch(gpt, data, s), repeats)

    print(
        json.dumps(
            {
                "impl": "pytorch-eager",
                "torch": torch.__version__,
                "threads": threads,
                "digits_mlp_epoch_s": round(digits, 6),
                "char_transformer_epoch_s": round(chars, 6),
            }
        )
    )


if __name__ == "__main__":
    main()
