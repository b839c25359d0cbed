import timeit, numpy as np
rng=np.random.default_rng(0)
x=rng.standard_normal((64,784)).astype(np.float32); W=rng.standard_normal((10,784)).astype(np.float32); e=rng.standard_normal((64,10)).astype(np.float32)
WT=np.ascontiguousarray(W.T); eT=np.ascontiguousarray(e.T); xT=np.ascontiguousarray(x.T)
import torch
xt=torch.tensor(x); Wt=torch.tensor(W); et=torch.tensor(e)
for stmt in ['x@W.T','x@WT','W@x.T','np.dot(x,WT)','e.T@x','eT@x','(x.T@e).T','xT@e','xt@Wt.T','et.T@xt']:
    n=5000; t=min(timeit.repeat(stmt,globals=globals(),number=n,repeat=7))/n*1e6
    print(f'{stmt:30s} {t:.2f} us')
