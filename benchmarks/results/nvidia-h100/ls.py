import time, numpy as np
from tinynn.nn import activation as A
rng=np.random.default_rng(0)
out=rng.standard_normal((64,10)).astype(np.float32)
def raw():
    s=out-out.max(axis=1,keepdims=True); s-=np.log(np.exp(s).sum(axis=1,keepdims=True)); return s
def raw2():
    m=np.maximum.reduce(out,axis=1,keepdims=True); s=out-m; e=np.exp(s); t=np.add.reduce(e,axis=1,keepdims=True); np.log(t,out=t); s-=t; return s
def fn(): A.log_softmax(out,1)
def mx(): out.max(axis=1,keepdims=True)
def sm(): out.sum(axis=1,keepdims=True)
def chk(): A._float_input("log_softmax", out, None); A._softmax_dim("log_softmax", 2, 1)
fns=dict(raw=raw,raw2=raw2,fn=fn,mx=mx,sm=sm,chk=chk)
best={k:1e9 for k in fns}
for r in range(10):
    for k,f in fns.items():
        n=3000; t=time.perf_counter()
        for _ in range(n): f()
        best[k]=min(best[k],(time.perf_counter()-t)/n*1e6)
for k,v in best.items(): print(f"{k:12s} {v:6.2f} us")
