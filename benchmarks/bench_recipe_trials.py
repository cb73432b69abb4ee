"""Recipe trials: one switch at a time on the default model, on a real set, with the bag-of-words beside it.

    .venv/bin/python benchmarks/bench_recipe_trials.py --wheels WHEELS --dataset tweets [switches] [--seed 42]

The sets are bench_quality's (same wheels, same seed-0 80/10/10 splits). This script re-implements the
encoder with switches the trainer does not have (pre-LN, mean/max pooling, a jointly trained bag-of-words
"wide" path, masked-language-model pre-training, label smoothing) so that each can be tried in isolation;
docs/model.md's "Recipe choices" table comes from it. Per epoch it prints the encoder's validation and test
accuracy and those of the encoder and bag-of-words log-probabilities added with weight 0.5, 1 and 2 (`ens`);
the last line (RESULT) is JSON: the best epoch by validation accuracy and its test accuracy.
"""
import argparse, csv, math, sys, tempfile, time, json
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kbert_tui.blas as blas
print(blas.ensure_fast_blas(), flush=True)
import mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim
from kbert_tui.training.tokenizer import train_wordpiece, encode, PAD_ID

p = argparse.ArgumentParser()
p.add_argument("--wheels", type=Path, required=True); p.add_argument("--dataset", default="tweets")
p.add_argument("--seed", type=int, default=42)
p.add_argument("--epochs", type=int, default=3); p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--bs", type=int, default=32); p.add_argument("--maxlen", type=int, default=64)
p.add_argument("--hidden", type=int, default=64); p.add_argument("--layers", type=int, default=2)
p.add_argument("--heads", type=int, default=4); p.add_argument("--inter", type=int, default=128)
p.add_argument("--dropout", type=float, default=0.1); p.add_argument("--vocab", type=int, default=2000)
p.add_argument("--act", default="gelu"); p.add_argument("--preln", action="store_true")
p.add_argument("--pool", default="cls"); p.add_argument("--bucket", action="store_true")
p.add_argument("--wd", type=float, default=0.01); p.add_argument("--warmup", type=float, default=0.1)
p.add_argument("--mlm", type=int, default=0, help="MLM epochs before fine-tuning")
p.add_argument("--mlm-lr", type=float, default=1e-3)
p.add_argument("--emb-dropout", type=float, default=None)
p.add_argument("--label-smooth", type=float, default=0.0)
p.add_argument("--word-drop", type=float, default=0.0, help="share of training tokens replaced by [MASK]")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--wide", action="store_true")
p.add_argument("--budget", type=float, default=0, help="stop after this many seconds of training")
a = p.parse_args()
print(blas.set_threads(a.threads), flush=True)

def read(path):
    with open(path, encoding="utf-8") as h:
        rows = list(csv.DictReader(h))
    return [r["text"] for r in rows], [r["label"] for r in rows]
from bench_quality import DATASETS, write_splits
a.data = tempfile.mkdtemp(prefix="kbert-trials-")
write_splits(DATASETS[a.dataset](a.wheels), Path(a.data))
t0 = time.perf_counter()
tr_x, tr_y = read(f"{a.data}/train.csv"); va_x, va_y = read(f"{a.data}/validation.csv"); te_x, te_y = read(f"{a.data}/test.csv")
names = sorted(set(tr_y)); lab = {n: i for i, n in enumerate(names)}
tok = train_wordpiece(tr_x, a.vocab)
V = tok.get_vocab_size()
enc = lambda xs: encode(tok, xs, a.maxlen)
tr, va, te = enc(tr_x), enc(va_x), enc(te_x)
ytr, yva, yte = (np.array([lab[y] for y in ys]) for ys in (tr_y, va_y, te_y))
t_tok = time.perf_counter() - t0
from kbert_tui.training.baseline import Vectorizer, fit_logistic
vec = Vectorizer(tr_x); Xtr, Xva, Xte = vec.transform(tr_x), vec.transform(va_x), vec.transform(te_x)
bw, bb = fit_logistic(Xtr, ytr, len(names))
blog = lambda X: X.dot(bw) + bb
def lsm(z): z = z - z.max(1, keepdims=True); return z - np.log(np.exp(z).sum(1, keepdims=True))
Bva, Bte = lsm(blog(Xva)), lsm(blog(Xte))
print("baseline val", (Bva.argmax(1) == yva).mean(), "test", (Bte.argmax(1) == yte).mean(), flush=True)
def sparse_rows(X):
    n = X.shape[0]; counts = np.bincount(X.rows, minlength=n); K = max(1, counts.max())
    idx = np.zeros((n, K), np.int32); val = np.zeros((n, K), np.float32)
    order = np.argsort(X.rows, kind="stable"); pos = np.arange(len(X.rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    idx[X.rows[order], pos] = X.cols[order]; val[X.rows[order], pos] = X.values[order]
    return idx, val, counts
SPtr, SPva, SPte = sparse_rows(Xtr), sparse_rows(Xva), sparse_rows(Xte)
F = Xtr.shape[1]
mx.random.seed(a.seed)

def act(x):
    return {"gelu": nn.gelu, "gelu_approx": nn.gelu_approx, "gelu_fast": nn.gelu_fast_approx, "relu": nn.relu,
            "silu": nn.silu}[a.act](x)

class Layer(nn.Module):
    def __init__(s, h):
        super().__init__()
        s.att = nn.MultiHeadAttention(h, a.heads, bias=True); s.n1 = nn.LayerNorm(h)
        s.up = nn.Linear(h, a.inter); s.down = nn.Linear(a.inter, h); s.n2 = nn.LayerNorm(h); s.do = nn.Dropout(a.dropout)
    def __call__(s, x, m):
        if a.preln:
            y = s.n1(x); x = x + s.do(s.att(y, y, y, m))
            return x + s.do(s.down(act(s.up(s.n2(x)))))
        x = s.n1(x + s.do(s.att(x, x, x, m)))
        return s.n2(x + s.do(s.down(act(s.up(x)))))

class Model(nn.Module):
    def __init__(s, h):
        super().__init__()
        s.tok = nn.Embedding(V, h); s.pos = nn.Embedding(128, h); s.en = nn.LayerNorm(h)
        s.edo = nn.Dropout(a.dropout if a.emb_dropout is None else a.emb_dropout)
        s.layers = [Layer(h) for _ in range(a.layers)]
        s.fn = nn.LayerNorm(h) if a.preln else None
        s.pooler = nn.Linear(h, h); s.do = nn.Dropout(a.dropout); s.cls = nn.Linear(h, len(names))
        s.mlm_head = nn.Linear(h, V)
        if a.wide:
            s.wide = nn.Embedding(F, len(names)); s.wide.weight = mx.zeros((F, len(names)))
    def encode(s, ids, am):
        m = ((1.0 - am.astype(mx.float32)) * -1e9)[:, None, None, :]
        x = s.edo(s.en(s.tok(ids) + s.pos(mx.arange(ids.shape[1]))))
        for l in s.layers: x = l(x, m)
        if s.fn is not None: x = s.fn(x)
        return x
    def __call__(s, ids, am, sp=None):
        x = s.encode(ids, am)
        if a.pool == "mean":
            w = am.astype(mx.float32)[..., None]; v = (x * w).sum(1) / w.sum(1)
        elif a.pool == "max":
            v = mx.where(am[..., None] > 0, x, -1e9).max(1)
        else:
            v = x[:, 0]
        out = s.cls(s.do(mx.tanh(s.pooler(v))))
        if a.wide:
            out = out + (s.wide(sp[0]) * sp[1][..., None]).sum(1)
        return out

model = Model(a.hidden)
mx.eval(model.parameters())

def spb(SP, rows):
    K = max(1, SP[2][rows].max()); return mx.array(SP[0][rows, :K]), mx.array(SP[1][rows, :K])
def batch(seqs, rows, ys=None):
    L = max(len(seqs[i]) for i in rows)
    ids = np.full((len(rows), L), PAD_ID, np.int32)
    for r, i in enumerate(rows): ids[r, :len(seqs[i])] = seqs[i]
    return mx.array(ids), mx.array((ids != PAD_ID).astype(np.int32)), (mx.array(ys[rows]) if ys is not None else None)

def batches(n, rng, lengths):
    order = rng.permutation(n)
    if not a.bucket:
        return [order[i:i+a.bs] for i in range(0, n, a.bs)]
    chunk = a.bs * 50
    out = []
    for c in range(0, n, chunk):
        part = order[c:c+chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[i:i+a.bs] for i in range(0, len(part), a.bs)]
    return [out[i] for i in rng.permutation(len(out))]

def evaluate(seqs, ys, SP):
    model.eval(); outs = []
    for s in range(0, len(seqs), 256):
        rows = np.arange(s, min(len(seqs), s + 256))
        ids, am, y = batch(seqs, rows, ys)
        outs.append(np.array(model(ids, am, spb(SP, rows))))
    model.train(); z = lsm(np.concatenate(outs).astype(np.float64))
    return (z.argmax(1) == ys).mean(), -z[np.arange(len(ys)), ys].mean(), z

lengths = np.array([len(s) for s in tr])
rng = np.random.default_rng(a.seed)
log = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}, "vocab": V, "tok_s": round(t_tok, 2), "epochs": []}
t_start = time.perf_counter()

# optional MLM pre-training on the training texts
if a.mlm:
    MASK = tok.token_to_id("[MASK]")
    def mlm_loss(m, ids, am, tgt, sel):
        x = m.encode(ids, am)
        lg = m.mlm_head(x)
        l = nn.losses.cross_entropy(lg, tgt, reduction="none")
        return (l * sel).sum() / mx.maximum(sel.sum(), 1)
    lg_mlm = nn.value_and_grad(model, mlm_loss)
    steps = a.mlm * math.ceil(len(tr) / a.bs)
    opt = optim.AdamW(learning_rate=optim.join_schedules([optim.linear_schedule(1e-5, a.mlm_lr, max(1, steps//10)), optim.linear_schedule(a.mlm_lr, a.mlm_lr*0.01, steps)], [max(1, steps//10)]), weight_decay=a.wd)
    for e in range(a.mlm):
        te0 = time.perf_counter(); tot = 0; nb = 0
        for rows in batches(len(tr), rng, lengths):
            ids, am, _ = batch(tr, rows)
            idn = np.array(ids); amn = np.array(am)
            r = rng.random(idn.shape)
            special = (idn <= 4)
            sel = (r < 0.15) & (amn > 0) & ~special
            tgt = idn.copy()
            r2 = rng.random(idn.shape)
            inp = idn.copy()
            inp[sel & (r2 < 0.8)] = MASK
            rnd = sel & (r2 >= 0.8) & (r2 < 0.9)
            inp[rnd] = rng.integers(5, V, rnd.sum())
            loss, g = lg_mlm(model, mx.array(inp), am, mx.array(tgt), mx.array(sel.astype(np.float32)))
            g, _ = optim.clip_grad_norm(g, 1.0)
            opt.update(model, g); mx.eval(model.parameters(), opt.state)
            tot += loss.item(); nb += 1
        log.setdefault("mlm", []).append({"loss": round(tot/nb, 4), "s": round(time.perf_counter()-te0, 1)})
        print("mlm", e+1, log["mlm"][-1], flush=True)

def loss_fn(m, ids, am, y, sp=None):
    lg = m(ids, am, sp)
    if a.label_smooth:
        return nn.losses.cross_entropy(lg, y, label_smoothing=a.label_smooth, reduction="mean")
    return nn.losses.cross_entropy(lg, y, reduction="mean")
lg_fn = nn.value_and_grad(model, loss_fn)
nb = math.ceil(len(tr) / a.bs); total = a.epochs * nb; warm = max(1, int(total * a.warmup))
sched = optim.join_schedules([optim.linear_schedule(a.lr*0.01, a.lr, warm), optim.linear_schedule(a.lr, a.lr*0.01, max(1, total-warm))], [warm])
opt = optim.AdamW(learning_rate=sched, weight_decay=a.wd)
best = (-1, None, None)
t_ft = time.perf_counter()
for e in range(a.epochs):
    te0 = time.perf_counter(); tot = 0
    for rows in batches(len(tr), rng, lengths):
        ids, am, y = batch(tr, rows, ytr)
        if a.word_drop:
            idn = np.array(ids)
            idn[(idn > 4) & (rng.random(idn.shape) < a.word_drop)] = tok.token_to_id("[MASK]")
            ids = mx.array(idn)
        loss, g = lg_fn(model, ids, am, y, spb(SPtr, rows))
        g, _ = optim.clip_grad_norm(g, 1.0)
        opt.update(model, g); mx.eval(model.parameters(), opt.state); tot += loss.item()
    ep_s = time.perf_counter() - te0
    vacc, vloss, Zva = evaluate(va, yva, SPva); tacc, _, Zte = evaluate(te, yte, SPte)
    ens = {}
    for lam in (0.5, 1.0, 2.0):
        ens[lam] = (round(((Zva + lam * Bva).argmax(1) == yva).mean(), 4), round(((Zte + lam * Bte).argmax(1) == yte).mean(), 4))
    # a mixture (mean of probabilities), and the product after a temperature fitted on validation
    mix_va, mix_te = np.exp(Zva) + np.exp(Bva), np.exp(Zte) + np.exp(Bte)
    ens["mix"] = (round((mix_va.argmax(1) == yva).mean(), 4), round((mix_te.argmax(1) == yte).mean(), 4))
    temps = np.exp(np.linspace(np.log(0.25), np.log(8), 41))
    nll = [-(lsm(Zva / t)[np.arange(len(yva)), yva]).mean() for t in temps]
    T = float(temps[int(np.argmin(nll))])
    ens["cal"] = (round(((lsm(Zva / T) + Bva).argmax(1) == yva).mean(), 4), round(((lsm(Zte / T) + Bte).argmax(1) == yte).mean(), 4), round(T, 2))
    rec = {"ens": ens, "epoch": e+1, "loss": round(tot/nb, 4), "val_acc": round(vacc, 4), "val_loss": round(vloss, 4), "test_acc": round(tacc, 4), "s": round(ep_s, 1), "elapsed": round(time.perf_counter()-t_start, 1)}
    log["epochs"].append(rec); print(rec, flush=True)
    if vacc > best[0]: best = (vacc, tacc, e+1, ens)
    if a.budget and time.perf_counter() - t_start > a.budget: break
log["best"] = {"val_acc": best[0], "test_acc": best[1], "epoch": best[2], "ens": {str(k): v for k, v in best[3].items()}}
log["baseline"] = [float((Bva.argmax(1) == yva).mean()), float((Bte.argmax(1) == yte).mean())]
log["total_s"] = round(time.perf_counter() - t_start + t_tok, 1)
print("RESULT", json.dumps(log), flush=True)
