import time, numpy as np, torch, torch.nn.functional as F
import tinynn.nn as nn
torch.set_num_threads(1) if False else None
rng=np.random.default_rng(0)
x=rng.standard_normal((64,784)).astype(np.float32); y=rng.integers(0,10,64)
model=nn.Linear(784,10); lossf=nn.CrossEntropyLoss()
def tn_step():
    out=model(x); loss=lossf(out,y); g=lossf.backward(); model.backward(g, needs_input_grad=False)
    for p in model.parameters(): p.data -= 0.5*p.grad; p.grad=None
W=model.weight.data.copy(); b=model.bias.data.copy()
def np_step():
    global W,b
    out=x@W.T; out+=b
    m=out.max(1,keepdims=True); e=np.exp(out-m); s=e.sum(1,keepdims=True); e/=s
    loss=-np.log(e[np.arange(64),y]).mean()
    e[np.arange(64),y]-=1; e*=1/64
    gW=e.T@x; gb=e.sum(0); W-=0.5*gW; b-=0.5*gb
tm=torch.nn.Linear(784,10); xt=torch.tensor(x); yt=torch.tensor(y); opt=torch.optim.SGD(tm.parameters(), lr=0.5)
def torch_step():
    loss=F.cross_entropy(tm(xt),yt); loss.backward(); opt.step(); opt.zero_grad()
def bench(f,n=3000):
    for _ in range(200): f()
    best=1e9
    for r in range(5):
        t=time.perf_counter()
        for _ in range(n): f()
        best=min(best,(time.perf_counter()-t)/n)
    return best*1e6
for name,f in [("torch",torch_step),("tinynn",tn_step),("numpy",np_step),("torch",torch_step),("tinynn",tn_step)]:
    print(name, f"{bench(f):.1f} us")
