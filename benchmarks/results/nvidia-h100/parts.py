import timeit, numpy as np
rng=np.random.default_rng(0)
x=rng.standard_normal((64,784)).astype(np.float32); W=rng.standard_normal((10,784)).astype(np.float32)*0.03; b=np.zeros(10,np.float32)
e=rng.standard_normal((64,10)).astype(np.float32); y=rng.integers(0,10,64)
for stmt in ["x@W.T","np.matmul(x,W.T)","e.T@x","np.dot(e.T,x)","x@W.T.copy()","e.sum(0)","np.exp(e)","e.max(1,keepdims=True)","e[np.arange(64),y]","np.arange(64)","y.view(np.uint64).max()","W-=0.001*W","e@W"]:
    n=20000; t=min(timeit.repeat(stmt,globals=globals(),number=n,repeat=5))/n*1e6
    print(f"{stmt:30s} {t:.2f} us")
