"""Same-process A/B: main's contextual.py against the worktree's, same state, same inputs."""
import importlib.util, random, sys, time, statistics
sys.path.insert(0, "bench")
import decide_learning
from decide import REQUEST, parse_args as decide_args
from decide_setup import bench_catalog, build_engine_with_profiles
from nextbest.learn import learner as L
spec = importlib.util.spec_from_file_location("contextual_old", "/tmp/prof/contextual_old.py")
old = importlib.util.module_from_spec(spec); sys.modules["contextual_old"] = old; spec.loader.exec_module(old)
args = decide_args(["--name", "ab", "--profiles", "5000", "--learning", "contextual_thompson"])
catalog, _ = bench_catalog(args)
built = build_engine_with_profiles(catalog, args)
engine, ids = built.engine, built.ids
decide_learning.train(engine, built.clock, ids, args)
cap = []
orig = L.Learner._score
def score(self, model, explore, ctx, pool):
    cap.append((self, model, explore, ctx, list(pool))); return orig(self, model, explore, ctx, pool)
L.Learner._score = score
rng = random.Random(3)
for _ in range(3000):
    engine.decide(REQUEST, user_id=ids[rng.randrange(len(ids))])
L.Learner._score = orig
cap = [c for c in cap if len(c[4]) >= 1][:1000]
new_m = cap[0][1]
old_m = old.ContextualLogistic.from_state(new_m.to_state())
pre = []
for s, m, e, ctx, pool in cap:
    x = L.customer_features(ctx.profile, s.catalog.topics, ctx.now, ctx.context, ctx.segments, page_topics=s._page_topics(ctx.context))
    refs = [s._ref(p.offer, ctx.placement) for p in pool]
    offsets = [L._offset(p.p_click) for p in pool]
    extras = s._histories(x, ctx, pool)
    pre.append((x, refs, offsets, extras))
diff = max(abs(a - b) for x, r, o, e in pre for a, b in zip(new_m.posterior_many(x, r, 1, o, e)[0], old_m.posterior_many(x, r, 1, o, e)[0]))
print("max |z new - z old|", diff, "mean pool", statistics.mean(len(p[1]) for p in pre))
res = {"old": [], "new": []}
for rnd in range(10):
    for name, m in (("old", old_m), ("new", new_m)) if rnd % 2 == 0 else (("new", new_m), ("old", old_m)):
        t = time.perf_counter_ns()
        for x, r, o, e in pre: m.posterior_many(x, r, 1, o, e)
        res[name].append((time.perf_counter_ns() - t) / len(pre) / 1000)
for k, v in res.items(): print(k, "posterior_many us per decision: median", round(statistics.median(v), 1), "min", round(min(v), 1))
# by pool size
for lo, hi in ((1, 10), (10, 20), (20, 30), (30, 99)):
    sel = [p for p in pre if lo <= len(p[1]) < hi]
    out = {}
    for name, m in (("old", old_m), ("new", new_m)):
        best = 1e9
        for _ in range(5):
            t = time.perf_counter_ns()
            for x, r, o, e in sel: m.posterior_many(x, r, 1, o, e)
            best = min(best, (time.perf_counter_ns() - t) / max(len(sel), 1) / 1000)
        out[name] = round(best, 1)
    print(f"pool {lo}-{hi}: n={len(sel)} {out}")
# learning: same events on copies
import copy
evs = []
for x, r, o, e in pre[:500]:
    evs.append((x, r[0], 1, 1.0 if random.Random(len(evs)).random() < 0.1 else 0.0, o[0], e[0]))
for name, cls in (("old", old.ContextualLogistic), ("new", type(new_m))):
    best = 1e9
    for _ in range(5):
        m = cls.from_state(new_m.to_state())
        t = time.perf_counter_ns()
        for x, ref, pos, rew, off, ex in evs: m.learn_one(x, ref, pos, rew, off, ex)
        best = min(best, (time.perf_counter_ns() - t) / len(evs) / 1000)
    print(name, "learn_one us (best of 5)", round(best, 1))
