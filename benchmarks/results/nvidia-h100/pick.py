import time, numpy as np
rng=np.random.default_rng(0)
lp=rng.standard_normal((64,10)).astype(np.float32); y=rng.integers(0,10,64); ar=np.arange(64); off=np.arange(0,640,10)
fns={
"arange": lambda: np.arange(64),
"fancy": lambda: lp[np.arange(64), y],
"fancy_ar": lambda: lp[ar, y],
"flat": lambda: lp.reshape(-1)[y+np.arange(0,640,10)],
"take": lambda: np.take(lp, y+np.arange(0,640,10)),
"tal": lambda: np.take_along_axis(lp, y[:,None], 1),
"neg_sum": lambda: -lp[0].sum(),
"exp": lambda: np.exp(lp),
"fancy_isub": lambda: lp.__setitem__((ar,y), lp[ar,y]-1.0),
"flat_isub": lambda: np.subtract.at(lp.reshape(-1), y+off, 1.0),
"view_max": lambda: y.view(np.uint64).max(),
"y.max": lambda: y.max(),
"minmax": lambda: (y.min(), y.max()),
"asarray_float": lambda: np.asarray(1.0),
"isinstance": lambda: isinstance(1.0,(int,float)),
}
best={k:1e9 for k in fns}
for r in range(7):
    for k,f in fns.items():
        n=5000; t=time.perf_counter()
        for _ in range(n): f()
        best[k]=min(best[k],(time.perf_counter()-t)/n*1e6)
for k,v in best.items(): print(f"{k:12s} {v:6.2f} us")
